//! Redis key and channel names. Every key lives under a configurable prefix so several
//! deployments (and every test) can share one Redis server without seeing each other.

/// The names of the Redis keys and channels of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// Hash of agent-facing domain configurations: field = domain id, value = JSON.
    pub fn domains(&self) -> String {
        format!("{}:domains", self.prefix)
    }

    /// The config version the `domains` hash reflects (the last change-log version applied).
    pub fn version(&self) -> String {
        format!("{}:domains:version", self.prefix)
    }

    /// Pub/Sub channel announcing each applied change (payload: [`crate::ChangeNotice`]).
    pub fn changes(&self) -> String {
        format!("{}:domains:changes", self.prefix)
    }

    /// Pub/Sub channel of on-demand probe requests from the control plane (confirmation
    /// probes; payload: [`crate::domain::ProbeRequest`]).
    pub fn probe_requests(&self) -> String {
        format!("{}:probe-requests", self.prefix)
    }

    /// Pub/Sub channel on which the control-plane replica that ingested a test probe's result
    /// hands it to the replica whose API request waits for it (payload: JSON of
    /// `control_plane::checks::CheckResult`).
    pub fn check_results(&self) -> String {
        format!("{}:check-results", self.prefix)
    }

    /// Stream of live events (`XADD … MAXLEN ~`): state changes, incident updates, page and
    /// domain changes, each entry's field `e` the event's JSON. Every control-plane replica
    /// reads it (`XREAD`) to fan events out to its browsers, and resumes a browser's stream
    /// from it (`Last-Event-ID`).
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Pub/Sub channel of live probe-result events (a JSON array per recorded batch): too
    /// many to keep, useless once a newer one exists.
    pub fn event_results(&self) -> String {
        format!("{}:events:results", self.prefix)
    }

    /// Rate-limit key of confirmation probes for one domain (`SET NX PX`).
    pub fn confirmation_lock(&self, domain: &str) -> String {
        format!("{}:confirm:{domain}", self.prefix)
    }

    /// The live agents of `region` (sorted set): member = agent id, score = when its
    /// registration expires, in milliseconds of Redis's own clock (`TIME`). Each agent renews
    /// its member every `heartbeat_interval_ms` (score = now + `membership_ttl_ms`), drops
    /// expired members and reads the set in one script, and removes itself when it stops; the
    /// key itself expires with its last member. Agents split the region's domains by
    /// rendezvous hashing over these members.
    pub fn agents(&self, region: &str) -> String {
        format!("{}:agents:{region}", self.prefix)
    }

    /// Scratch hash the reconciler fills before atomically renaming it over `domains`.
    pub fn rebuild_scratch(&self) -> String {
        format!("{}:domains:rebuild", self.prefix)
    }

    /// Every key of this deployment matches this pattern (used by tests to clean up).
    pub fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let k = RedisKeys::new("cc");
        assert_eq!(k.domains(), "cc:domains");
        assert_eq!(k.version(), "cc:domains:version");
        assert_eq!(k.changes(), "cc:domains:changes");
        assert_eq!(k.probe_requests(), "cc:probe-requests");
        assert_eq!(k.check_results(), "cc:check-results");
        assert_eq!(k.confirmation_lock("d1"), "cc:confirm:d1");
        assert_eq!(k.events(), "cc:events");
        assert_eq!(k.event_results(), "cc:events:results");
        assert_eq!(k.agents("ams"), "cc:agents:ams");
    }
}
