-- Tenant quotas, set by `control-plane set-quota`; NULL is unlimited (the default).
ALTER TABLE tenants
    -- At most this many domains (0: none).
    ADD COLUMN quota_max_domains integer CHECK (quota_max_domains >= 0),
    -- A domain's interval may not be shorter (seconds).
    ADD COLUMN quota_min_interval_s integer CHECK (quota_min_interval_s >= 1),
    -- At most this many notification channels (0: none).
    ADD COLUMN quota_max_channels integer CHECK (quota_max_channels >= 0),
    -- API requests a minute, per replica (a token bucket holding a minute's worth).
    ADD COLUMN quota_requests_per_minute integer CHECK (quota_requests_per_minute >= 1);
