-- Flap detection per kind of change: availability (a change to or from `down`) and latency
-- (between `up` and `degraded`) each have their own flap periods, so a domain whose response
-- time keeps crossing its anomaly threshold holds only its slow-response alerts, never an
-- outage's. Periods open before this migration counted every change; they become availability
-- periods.
ALTER TABLE flap_periods
    ADD COLUMN kind text NOT NULL DEFAULT 'down' CHECK (kind IN ('down', 'degraded'));
DROP INDEX flap_periods_one_open;
CREATE UNIQUE INDEX flap_periods_one_open ON flap_periods (domain_id, kind) WHERE left_at IS NULL;
