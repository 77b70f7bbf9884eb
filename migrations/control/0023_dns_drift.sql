-- DNS drift: each domain's known answer set per region, the candidate new set being confirmed,
-- and the confirmed changes.

-- A domain's drift settings: {"notify", "stable_probes", "allowed_networks", "same_network"};
-- NULL: the defaults (recorded, not notified, 3 probes).
ALTER TABLE domains ADD COLUMN dns_drift jsonb;

CREATE TABLE dns_answer_sets (
    domain_id         uuid NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    region            text NOT NULL,
    -- The confirmed answer set: a sorted JSON array of address strings.
    known             jsonb NOT NULL,
    known_since       timestamptz NOT NULL,
    -- A different set seen in the latest probes, and how many probes in a row answered it.
    candidate         jsonb,
    candidate_probes  integer NOT NULL DEFAULT 0,
    candidate_since   timestamptz,
    -- The newest probe folded in.
    observed_at       timestamptz NOT NULL,
    PRIMARY KEY (domain_id, region)
);

CREATE TABLE dns_changes (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    domain_id     uuid NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    region        text NOT NULL,
    previous      jsonb NOT NULL,
    current       jsonb NOT NULL,
    added         jsonb NOT NULL,
    removed       jsonb NOT NULL,
    -- The first probe of the new set, and the probe that confirmed it.
    changed_at    timestamptz NOT NULL,
    confirmed_at  timestamptz NOT NULL,
    -- Inside the domain's rotation rules (allowed networks, same network): never notified.
    rotation      boolean NOT NULL,
    -- A `dns_changed` notification was enqueued for it.
    notified      boolean NOT NULL
);
CREATE INDEX dns_changes_domain ON dns_changes (domain_id, confirmed_at DESC);
