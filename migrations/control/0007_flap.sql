-- Flap detection and hourly flap digests.
--
-- Every confirmed transition of a domain into `up` or `down` is a row of domain_transitions,
-- written in the transaction that changes domain_state (under its row lock). The flap score is
-- the number of transitions between known states in a rolling window; flap_periods holds the
-- spans a domain spent in flap mode. Digests are built per tenant and period from these two
-- tables; digest_cursor is the next period to build, locked by the replica building it, so
-- each period is built exactly once across replicas and restarts.

CREATE TABLE domain_transitions (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- No foreign key: like incidents, the history outlives the domain.
    domain_id    uuid NOT NULL,
    at           timestamptz NOT NULL,
    from_state   text NOT NULL CHECK (from_state IN ('unknown', 'up', 'down')),
    to_state     text NOT NULL CHECK (to_state IN ('up', 'down')),
    -- The regions whose observations decided it: [{"region", "error_kind", "status_code", "observed_at"}].
    regions      jsonb NOT NULL DEFAULT '[]',
    incident_id  uuid,
    -- False when its notification was held because the domain was flapping.
    notified     boolean NOT NULL
);
CREATE INDEX domain_transitions_domain_at ON domain_transitions (domain_id, at);

-- Per-domain flap settings overriding the global ones (NULL: the global settings).
ALTER TABLE domains ADD COLUMN flap jsonb;

CREATE TABLE flap_periods (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    domain_id      uuid NOT NULL,
    entered_at     timestamptz NOT NULL,
    -- Transitions in the window when it entered.
    entered_score  integer NOT NULL,
    -- NULL while the domain is flapping.
    left_at        timestamptz,
    -- The state it settled in ('up', 'down'), or why it stopped ('paused', 'deleted').
    settled        text,
    CHECK ((left_at IS NULL) = (settled IS NULL))
);
CREATE UNIQUE INDEX flap_periods_one_open ON flap_periods (domain_id) WHERE left_at IS NULL;
CREATE INDEX flap_periods_tenant_span ON flap_periods (tenant_id, entered_at);

CREATE TABLE digests (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The structured digest (per domain: transitions, down time, regions, first and last
    -- transition, current state, timeline), as served by the API and sent to webhooks.
    content       jsonb NOT NULL,
    text          text NOT NULL,
    html          text NOT NULL,
    UNIQUE (tenant_id, period_start)
);
CREATE INDEX digests_tenant_period ON digests (tenant_id, period_start DESC);

-- One row: the start of the next period to build.
CREATE TABLE digest_cursor (
    id                 integer PRIMARY KEY CHECK (id = 1),
    next_period_start  timestamptz NOT NULL
);
