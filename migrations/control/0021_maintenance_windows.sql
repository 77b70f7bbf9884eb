-- Maintenance windows: one-off (starts_at, ends_at) or recurring (dtstart local to time_zone,
-- duration, rrule), scoped to domain ids and/or tags.
CREATE TABLE maintenance_windows (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title              text NOT NULL,
    description        text,
    domain_ids         uuid[] NOT NULL DEFAULT '{}',
    tags               text[] NOT NULL DEFAULT '{}',
    time_zone          text NOT NULL,
    starts_at          timestamptz,
    ends_at            timestamptz,
    dtstart            timestamp,
    duration           text,
    rrule              text,
    -- Occurrences starting before this instant are in maintenance_occurrences.
    expanded_until     timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((starts_at IS NOT NULL AND ends_at IS NOT NULL AND rrule IS NULL)
        OR (starts_at IS NULL AND dtstart IS NOT NULL AND duration IS NOT NULL AND rrule IS NOT NULL))
);
CREATE INDEX maintenance_windows_tenant ON maintenance_windows (tenant_id, id);
CREATE INDEX maintenance_windows_domain_ids ON maintenance_windows USING gin (domain_ids);
CREATE INDEX maintenance_windows_tags ON maintenance_windows USING gin (tags);

-- The windows' occurrences, expanded ahead of time so that "is this domain in maintenance at
-- this instant" is one indexed query.
CREATE TABLE maintenance_occurrences (
    window_id  uuid NOT NULL REFERENCES maintenance_windows (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    PRIMARY KEY (window_id, starts_at),
    CHECK (ends_at > starts_at)
);
CREATE INDEX maintenance_occurrences_tenant_span ON maintenance_occurrences (tenant_id, ends_at, starts_at);

-- An incident opened inside a window: which window, until when its notifications are withheld,
-- and when the window's end was handled (announced if still open, or found resolved).
ALTER TABLE incidents
    ADD COLUMN maintenance_window_id uuid,
    ADD COLUMN maintenance_until timestamptz,
    ADD COLUMN maintenance_ended_at timestamptz;
CREATE INDEX incidents_maintenance_due ON incidents (maintenance_until)
    WHERE maintenance_until IS NOT NULL AND maintenance_ended_at IS NULL AND state <> 'resolved';
