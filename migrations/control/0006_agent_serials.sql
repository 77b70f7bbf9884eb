-- Every certificate serial each agent has connected with, so revoking an agent revokes all of
-- them (a renewed certificate does not leave the older one usable).

CREATE TABLE agent_serials (
    serial      text PRIMARY KEY,
    region      text NOT NULL,
    agent_id    text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_serials_agent ON agent_serials (region, agent_id);

INSERT INTO agent_serials (serial, region, agent_id, first_seen, last_seen)
SELECT cert_serial, region, agent_id, first_seen, last_seen FROM agents
ON CONFLICT DO NOTHING;
