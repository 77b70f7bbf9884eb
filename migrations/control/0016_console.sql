-- The operator console: domains get an optional display name, and signed-in operators get
-- server-side sessions.
--
-- A session is created by exchanging an API token. Only the SHA-256 of its random id is stored
-- (the id itself lives in the browser's HttpOnly cookie), with the synchronizer token every
-- console form must carry. A session is valid while it is neither expired nor idle and its
-- token is not revoked: the role is read from the token at every request, so revoking a token
-- ends its sessions at once.

ALTER TABLE domains ADD COLUMN name text;

CREATE TABLE console_sessions (
    id_hash       bytea PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_id      uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
