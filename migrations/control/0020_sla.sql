-- Service level objectives: each tenant's time zone (calendar periods are its own), a domain's
-- SLO, the SLA notices sent once per domain, period and kind, and the monthly reports.

-- An IANA time zone name; every calendar period of the tenant (SLO periods, monthly reports)
-- starts at midnight there.
ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

-- {"target": 99.9, "period": "month", "budget_alert_fraction": 0.25}; NULL: no SLO.
ALTER TABLE domains ADD COLUMN slo jsonb;

-- One row per domain, period and notice: the row is inserted in the transaction that enqueues
-- the notice, so each is sent once across replicas and restarts.
CREATE TABLE sla_notices (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- No foreign key: like incidents, the history outlives the domain.
    domain_id     uuid NOT NULL,
    period_start  timestamptz NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('sla_breach', 'sla_budget_low')),
    sent_at       timestamptz NOT NULL,
    -- The budget figures when it was sent.
    details       jsonb NOT NULL,
    PRIMARY KEY (domain_id, period_start, kind)
);

-- One report per tenant and calendar month (in the tenant's time zone), stored when sent.
CREATE TABLE sla_reports (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The first day of the month.
    month         date NOT NULL,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    content       jsonb NOT NULL,
    text          text NOT NULL,
    html          text NOT NULL,
    UNIQUE (tenant_id, month)
);
