-- Consensus across regions: each region's latest observation per domain, the agents' own
-- health per region, each domain's decided state, and incidents with their events.
--
-- A domain's state row is locked (SELECT … FOR UPDATE) for every evaluation, and a transition
-- writes the state, the incident, its event and the notification outbox rows in that one
-- transaction, so replicas evaluating the same domain at once cannot open two incidents. The
-- partial unique index on incidents is the backstop of that rule.

CREATE TABLE region_observations (
    domain_id    uuid NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    region       text NOT NULL,
    ok           boolean NOT NULL,
    error_kind   text,
    status_code  integer,
    -- When the probe started; never moves backwards.
    observed_at  timestamptz NOT NULL,
    agent_id     text NOT NULL,
    PRIMARY KEY (domain_id, region)
);

CREATE TABLE region_health (
    region       text PRIMARY KEY,
    healthy      boolean NOT NULL,
    -- When the agent's self-check ran, and when the control plane received it.
    checked_at   timestamptz NOT NULL,
    reported_at  timestamptz NOT NULL
);

CREATE TABLE incidents (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- No foreign key: an incident outlives its domain as history.
    domain_id              uuid NOT NULL,
    state                  text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at              timestamptz NOT NULL,
    acknowledged_at        timestamptz,
    acknowledged_by_token  uuid,
    ack_note               text,
    resolved_at            timestamptz,
    duration_s             bigint,
    -- The regions whose failures confirmed it: [{"region", "error_kind", "status_code", "observed_at"}].
    opened_regions         jsonb NOT NULL DEFAULT '[]',
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE UNIQUE INDEX incidents_one_open_per_domain ON incidents (domain_id) WHERE state <> 'resolved';
CREATE INDEX incidents_tenant_opened ON incidents (tenant_id, opened_at DESC);

CREATE TABLE incident_events (
    id           bigserial PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    kind         text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    -- A token id, or 'system'.
    actor        text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

CREATE TABLE domain_state (
    domain_id         uuid PRIMARY KEY REFERENCES domains (id) ON DELETE CASCADE,
    state             text NOT NULL CHECK (state IN ('unknown', 'up', 'down')),
    since             timestamptz NOT NULL,
    open_incident_id  uuid REFERENCES incidents (id) ON DELETE SET NULL,
    evaluated_at      timestamptz NOT NULL DEFAULT now()
);
