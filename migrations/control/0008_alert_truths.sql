-- Alerts that tell the truth: pauses kept as history, notifications delivered in order per
-- channel and domain and retried for a time span, persistent regional failures tracked.

-- Every span during which monitoring of a domain was paused (resumed_at NULL while it still is).
-- Pausing keeps the domain's consensus state and its open incident; these spans are excluded
-- from the time a domain was monitored (consensus uptime).
CREATE TABLE monitoring_pauses (
    id          bigserial PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- No foreign key: like transitions, the history outlives the domain.
    domain_id   uuid NOT NULL,
    paused_at   timestamptz NOT NULL,
    -- A token id, or 'system'.
    paused_by   text NOT NULL,
    resumed_at  timestamptz,
    resumed_by  text,
    CHECK ((resumed_at IS NULL) = (resumed_by IS NULL))
);
CREATE UNIQUE INDEX monitoring_pauses_one_open ON monitoring_pauses (domain_id) WHERE resumed_at IS NULL;
CREATE INDEX monitoring_pauses_domain ON monitoring_pauses (domain_id, paused_at);

-- Set when monitoring of a down domain whose incident's opening was held (it was flapping) is
-- resumed: the next evaluation that finds a failure quorum observed after this time announces
-- the incident (the pause ended flap mode, as settling down does); cleared by any transition.
ALTER TABLE domain_state ADD COLUMN announce_after timestamptz;

-- Order of notifications: `seq` is taken at insert, inside the transaction that holds the
-- cause's lock (the domain's state row, the incident row), so per domain it follows the order
-- of the causes. A notification is not attempted while an earlier pending one of the same
-- channel and domain exists.
-- Rows already queued are numbered in the order they were created.
ALTER TABLE notifications ADD COLUMN seq bigint;
CREATE SEQUENCE notifications_seq OWNED BY notifications.seq;
UPDATE notifications n SET seq = o.rn
FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS rn FROM notifications) o
WHERE n.id = o.id;
SELECT setval('notifications_seq', COALESCE((SELECT max(seq) FROM notifications), 0) + 1, false);
ALTER TABLE notifications ALTER COLUMN seq SET DEFAULT nextval('notifications_seq'),
                          ALTER COLUMN seq SET NOT NULL;
ALTER TABLE notifications ADD COLUMN domain_id uuid;
UPDATE notifications SET domain_id = (payload->>'domain_id')::uuid WHERE payload ? 'domain_id';
CREATE INDEX notifications_pending_order ON notifications (channel_id, domain_id, seq) WHERE state = 'pending';
-- When its first attempt was made: retries stop `notify_max_age_s` after it.
ALTER TABLE notifications ADD COLUMN first_attempt_at timestamptz;

-- A region's current run of failed observations of a domain: how many in a row, since when
-- (NULL and 0 after a success).
ALTER TABLE region_observations ADD COLUMN failing_since timestamptz;
ALTER TABLE region_observations ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0;
UPDATE region_observations SET failing_since = observed_at, consecutive_failures = 1 WHERE NOT ok;
