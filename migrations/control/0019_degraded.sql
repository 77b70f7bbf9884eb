-- The degraded state: a domain that answers, but abnormally slowly, in a quorum of regions.
--
-- latency_baselines holds each (domain, region)'s latency anomaly detector: the moving
-- baseline of recent normal latencies and the current run of anomalous ones. Consensus
-- updates it in bulk as it records a batch's observations (rows locked in domain order), so
-- it survives restarts and any replica can evaluate; `degraded` is the detector's verdict by
-- the domain's settings at that moment.

CREATE TABLE latency_baselines (
    domain_id        uuid NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    region           text NOT NULL,
    -- Normal latencies, milliseconds, oldest first (at most the window).
    samples          real[] NOT NULL DEFAULT '{}',
    -- The current run of anomalous latencies, milliseconds, oldest first.
    anomalies        real[] NOT NULL DEFAULT '{}',
    anomalous_since  timestamptz,
    degraded         boolean NOT NULL DEFAULT false,
    -- When the latest latency taken started.
    observed_at      timestamptz NOT NULL,
    PRIMARY KEY (domain_id, region)
);

-- Per-domain degraded settings overriding the global ones (NULL: the global settings).
ALTER TABLE domains ADD COLUMN degraded jsonb;

ALTER TABLE domain_state DROP CONSTRAINT domain_state_state_check;
ALTER TABLE domain_state ADD CONSTRAINT domain_state_state_check
    CHECK (state IN ('unknown', 'up', 'down', 'degraded'));
ALTER TABLE domain_transitions DROP CONSTRAINT domain_transitions_from_state_check;
ALTER TABLE domain_transitions ADD CONSTRAINT domain_transitions_from_state_check
    CHECK (from_state IN ('unknown', 'up', 'down', 'degraded'));
ALTER TABLE domain_transitions DROP CONSTRAINT domain_transitions_to_state_check;
ALTER TABLE domain_transitions ADD CONSTRAINT domain_transitions_to_state_check
    CHECK (to_state IN ('up', 'down', 'degraded'));

-- What an incident is about: `down` (critical) or `degraded` (warning).
ALTER TABLE incidents ADD COLUMN kind text NOT NULL DEFAULT 'down' CHECK (kind IN ('down', 'degraded'));
ALTER TABLE incidents ADD COLUMN severity text NOT NULL DEFAULT 'critical'
    CHECK (severity IN ('critical', 'warning'));
