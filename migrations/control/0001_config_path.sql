-- Tenants, API tokens, regions, domains and the config change log.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role          text NOT NULL CHECK (role IN ('admin', 'read_only')),
    -- SHA-256 of the token. Tokens carry 256 random bits, so a fast hash is enough; the token
    -- itself is shown once at creation and never stored.
    token_hash    bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id);

CREATE TABLE regions (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The single row holding the latest config version. Every domain write increments it while
-- holding the row lock until commit, so versions are dense and commit in version order.
CREATE TABLE config_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL
);
INSERT INTO config_state (singleton, version) VALUES (true, 0);

CREATE TABLE domains (
    id             uuid PRIMARY KEY,
    -- RESTRICT: a tenant's domains must be deleted through the API so the change log sees it.
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    url            text NOT NULL,
    method         text NOT NULL CHECK (method IN ('GET', 'HEAD')),
    status_min     integer NOT NULL CHECK (status_min BETWEEN 100 AND 599),
    status_max     integer NOT NULL CHECK (status_max BETWEEN status_min AND 599),
    keyword        text,
    interval_tier  text,
    interval_s     integer NOT NULL CHECK (interval_s > 0),
    timeout_ms     integer NOT NULL CHECK (timeout_ms > 0),
    regions        text[] NOT NULL DEFAULT '{}',
    quorum         integer CHECK (quorum > 0),
    paused         boolean NOT NULL DEFAULT false,
    version        bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domains_tenant_id ON domains (tenant_id, id);

-- The ordered log the publisher applies to Redis. `config` is the agent-facing JSON for an
-- upsert and NULL for a delete.
CREATE TABLE config_changes (
    version     bigint PRIMARY KEY,
    domain_id   uuid NOT NULL,
    op          text NOT NULL CHECK (op IN ('upsert', 'delete')),
    config      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((op = 'upsert') = (config IS NOT NULL))
);
