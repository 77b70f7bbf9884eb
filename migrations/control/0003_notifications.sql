-- Notification channels per tenant and the transactional outbox of notifications.
--
-- A notification is written to the outbox in the same transaction as the incident transition
-- that causes it, one row per enabled channel of the tenant, with a dedup key per transition:
-- the unique (channel_id, dedup_key) makes it impossible to enqueue the same transition twice.
-- Dispatchers claim due rows with FOR UPDATE SKIP LOCKED, deliver, and mark them delivered, or
-- reschedule them with backoff, or move them to `dead` after the configured attempts.

CREATE TABLE channels (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind        text NOT NULL CHECK (kind IN ('webhook', 'slack', 'email')),
    -- Kind-specific settings: {"url": …} for webhook and slack, {"to": […]} for email.
    config      jsonb NOT NULL,
    -- The webhook's HMAC-SHA256 signing secret (shown once at creation); NULL for other kinds.
    secret      text,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channels_tenant ON channels (tenant_id);

CREATE TABLE notifications (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel_id       uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    -- One per cause: e.g. `incident:<id>:opened`, `cert:<domain>:<serial>:14`.
    dedup_key        text NOT NULL,
    kind             text NOT NULL,
    payload          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (channel_id, dedup_key)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_tenant ON notifications (tenant_id, created_at DESC);
