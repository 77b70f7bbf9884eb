-- Public status pages and operators' incident updates.
--
-- A page belongs to a tenant and shows only the domains put on it (components), each under a
-- display name, optionally in a group, revealing nothing else unless the component opts in
-- (`reveal`). Its slug is its public address (`/status/<slug>`) and is unique across tenants;
-- so is each custom hostname. Deleting a domain removes it from every page (its incidents stay
-- as history in `incidents`, which have no foreign key to domains).

CREATE TABLE status_pages (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description text CHECK (length(description) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_pages_tenant ON status_pages (tenant_id, created_at);

CREATE TABLE status_page_hostnames (
    hostname text PRIMARY KEY CHECK (hostname = lower(hostname) AND length(hostname) BETWEEN 1 AND 253),
    page_id  uuid NOT NULL REFERENCES status_pages (id) ON DELETE CASCADE
);
CREATE INDEX status_page_hostnames_page ON status_page_hostnames (page_id);

CREATE TABLE status_page_components (
    -- Public: the component's id on the page, in its JSON and its live events.
    id          uuid PRIMARY KEY,
    page_id     uuid NOT NULL REFERENCES status_pages (id) ON DELETE CASCADE,
    domain_id   uuid NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    group_name  text CHECK (length(group_name) BETWEEN 1 AND 200),
    -- What the component shows beyond its name and state: any of 'url', 'regions', 'errors'.
    reveal      text[] NOT NULL DEFAULT '{}' CHECK (reveal <@ ARRAY['url', 'regions', 'errors']::text[]),
    UNIQUE (page_id, domain_id)
);
CREATE INDEX status_page_components_domain ON status_page_components (domain_id);

-- Operators' updates on an incident, shown on the status pages of its domain.
CREATE TABLE incident_updates (
    id          bigserial PRIMARY KEY,
    incident_id uuid NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    status      text NOT NULL CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    message     text NOT NULL CHECK (length(message) BETWEEN 1 AND 5000),
    posted_at   timestamptz NOT NULL DEFAULT now(),
    -- The token that posted it (never shown on a page).
    posted_by   text NOT NULL
);
CREATE INDEX incident_updates_incident ON incident_updates (incident_id, id);
CREATE INDEX incidents_domain_opened ON incidents (domain_id, opened_at DESC);
