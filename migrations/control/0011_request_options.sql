-- What a probe sends besides the URL: more methods, request headers, basic or bearer
-- authentication and a body (POST, PUT and PATCH only). `request_headers` holds
-- [{"name", "value", "secret"}] and `request_auth` {"kind": "basic", "username", "password"} or
-- {"kind": "bearer", "token"}. Secrets (a password, a token, a secret header's value, a secret
-- body) are stored in plain text because agents must send them; the API never returns them.
-- Existing domains send what they sent: no headers, no authentication, no body.

ALTER TABLE domains DROP CONSTRAINT domains_method_check;
ALTER TABLE domains
    ADD CONSTRAINT domains_method_check
        CHECK (method IN ('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS')),
    ADD COLUMN request_headers jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(request_headers) = 'array'),
    ADD COLUMN request_auth jsonb CHECK (request_auth IS NULL OR jsonb_typeof(request_auth) = 'object'),
    ADD COLUMN request_body text,
    ADD COLUMN request_body_secret boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT domains_request_body_method
        CHECK (request_body IS NULL OR method IN ('POST', 'PUT', 'PATCH'));
