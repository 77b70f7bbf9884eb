-- More channel kinds (PagerDuty Events API v2, Microsoft Teams, Discord, Telegram, ntfy) and
-- per-channel subscriptions.
--
-- `secret` now also holds a PagerDuty routing key, a Telegram bot token or an ntfy access token
-- (write-only in the API, like a webhook's signing secret).
ALTER TABLE channels DROP CONSTRAINT channels_kind_check;
ALTER TABLE channels ADD CONSTRAINT channels_kind_check
    CHECK (kind IN ('webhook', 'slack', 'email', 'pagerduty', 'teams', 'discord', 'telegram', 'ntfy'));

-- Subscriptions: the notification kinds a channel wants (NULL: every kind) and the domain tags
-- it wants (NULL: every domain; otherwise a notification about a domain is written only when the
-- domain has at least one of them). Filtered where notifications are enqueued, so no outbox row
-- exists for a channel that does not want it.
ALTER TABLE channels
    ADD COLUMN events text[] CHECK (events IS NULL OR cardinality(events) > 0),
    ADD COLUMN tags text[] CHECK (tags IS NULL OR cardinality(tags) > 0);
