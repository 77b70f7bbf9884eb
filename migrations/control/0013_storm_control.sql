-- Alerting under load: the agents' own saturation, and storm control per channel.

-- Each agent's latest saturation report (sent with every batch): a failure of a probe it started
-- inside [since, until] is not a vote when the agent's own overload can explain it. Per agent,
-- not per region: an observation names the agent that made it, so one saturated agent of a
-- region does not silence the others.
CREATE TABLE agent_saturation (
    region       text NOT NULL,
    agent_id     text NOT NULL,
    -- Saturated when the agent took the report.
    saturated    boolean NOT NULL,
    -- The latest saturation window; NULL when the agent was never saturated since it started.
    since        timestamptz,
    until        timestamptz,
    -- The 95th percentile of the agent's latest probes' start lag, milliseconds.
    lag_p95_ms   double precision NOT NULL,
    -- When the agent took the report, and when the control plane received it.
    checked_at   timestamptz NOT NULL,
    reported_at  timestamptz NOT NULL,
    PRIMARY KEY (region, agent_id)
);
