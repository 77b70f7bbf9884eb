-- Probe agents, as seen through their client certificates, and certificates revoked through
-- the API (on top of the CA's revocation list file).

CREATE TABLE agents (
    region          text NOT NULL REFERENCES regions (name) ON DELETE RESTRICT,
    agent_id        text NOT NULL CHECK (agent_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    -- The serial (lowercase hex) of the certificate the agent last connected with.
    cert_serial     text NOT NULL,
    cert_not_after  timestamptz NOT NULL,
    version         text NOT NULL DEFAULT '',
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region, agent_id)
);

CREATE TABLE revoked_certificates (
    serial      text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]+$'),
    region      text,
    agent_id    text,
    reason      text NOT NULL DEFAULT '',
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
