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

-- Storm control per channel: the first notification of a burst goes out at once; those about
-- other domains that follow within `storm_window_s` are held to the window's end and sent as one
-- grouped message. 0 disables it. `storm_threshold`: how many domains go out one by one in a
-- window before the rest are grouped.
ALTER TABLE channels
    ADD COLUMN storm_window_s integer NOT NULL DEFAULT 10 CHECK (storm_window_s BETWEEN 0 AND 3600),
    ADD COLUMN storm_threshold integer NOT NULL DEFAULT 1 CHECK (storm_threshold BETWEEN 1 AND 1000);

-- Each channel's current window. The row is the channel's storm lock: dispatchers decide what
-- to send, hold or group for a channel only while holding it (FOR UPDATE SKIP LOCKED), so two
-- dispatchers never group or send the same rows.
CREATE TABLE channel_storms (
    channel_id   uuid PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    -- Notifications arriving before it may be held to it.
    window_end   timestamptz NOT NULL DEFAULT 'epoch',
    -- The domains whose notifications went out one by one in the window (at most the channel's
    -- threshold); their later notifications in the window go out at once too.
    domains      uuid[] NOT NULL DEFAULT '{}',
    -- A window opened by a grouped message: everything in it is held to its end.
    grouping     boolean NOT NULL DEFAULT false
);

-- When a notification was first held for a grouped message, and the grouped message that
-- delivered it (its id is the message's, sent in X-Crosscheck-Id; the notification keeps its
-- own id inside it).
ALTER TABLE notifications
    ADD COLUMN storm_held_at timestamptz,
    ADD COLUMN group_id uuid;
