-- A domain's check type and its settings (the agent-facing `check` object: tcp, dns or tls);
-- NULL is the http check of `url`, as every existing domain is. `json_check` is an http
-- check's assertion on a JSON body (JSONPath, operator, value); NULL when none.
ALTER TABLE domains ADD COLUMN check_config jsonb
    CHECK (check_config IS NULL OR check_config->>'type' IN ('tcp', 'dns', 'tls'));
ALTER TABLE domains ADD COLUMN json_check jsonb;
