-- The audit log: one row per write through the API (`POST`, `PATCH`, `PUT`, `DELETE` under
-- `/v1`) or the console, appended after the handler answered (see ARCHITECTURE.md, "Audit
-- log"). Rows are never updated; the retention loop deletes those older than
-- `audit_retention_days`.
CREATE TABLE audit_log (
    -- UUID v7: time-ordered, the cursor of `GET /v1/audit` (newest first).
    id            uuid PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The API token behind the write (a console session acts with its token); the name as it
    -- was at the time.
    token_id      uuid NOT NULL,
    token_name    text NOT NULL,
    -- Where the write came in: the REST API or the console.
    via           text NOT NULL CHECK (via IN ('api', 'console')),
    -- The client address (behind `trusted_proxies`, the forwarded one).
    client_addr   inet NOT NULL,
    method        text NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
    -- The matched route template, e.g. `/v1/domains/{id}`.
    route         text NOT NULL,
    resource_type text NOT NULL,
    -- The resource's id (NULL when a create failed before there was one).
    resource_id   text,
    -- The HTTP status answered.
    status        smallint NOT NULL,
    -- `{"before": {...} | null, "after": {...} | null}`: the changed fields of the resource's
    -- API view, secrets redacted; NULL when nothing was read (a failed write).
    diff          jsonb
);

CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id DESC);
CREATE INDEX audit_log_resource ON audit_log (tenant_id, resource_type, resource_id, id DESC);
CREATE INDEX audit_log_actor ON audit_log (tenant_id, token_id, id DESC);
-- Retention deletes by age.
CREATE INDEX audit_log_at ON audit_log (at);
