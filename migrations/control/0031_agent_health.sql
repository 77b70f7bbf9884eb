-- Each agent's latest canary self-check (sent with its batches), per agent rather than per
-- region: when a region runs several agents they each report their own connectivity, and one
-- agent's broken network must neither hide nor stand for the others'. Keyed like
-- `agent_saturation`, by the region and agent id of the agent's certificate.
--
-- Consensus asks the verdict of the agent that made an observation; a region's view
-- aggregates its agents (unhealthy only when every agent with a verdict reports itself
-- unhealthy). The per-region rows it replaces carry no agent and are only the latest report
-- of whichever agent wrote last: they are dropped, and every agent's next batch reports again.
CREATE TABLE agent_health (
    region       text NOT NULL,
    agent_id     text NOT NULL,
    healthy      boolean NOT NULL,
    -- When the agent's self-check ran, and when the control plane received it.
    checked_at   timestamptz NOT NULL,
    reported_at  timestamptz NOT NULL,
    PRIMARY KEY (region, agent_id)
);

DROP TABLE region_health;
