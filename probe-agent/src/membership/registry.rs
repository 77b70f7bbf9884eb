//! The Redis side of sharing a region: registering, renewing, watching the member set and
//! leaving.
//!
//! Every agent of a region is a member of the sorted set `<prefix>:agents:<region>`
//! ([`shared::RedisKeys::agents`]) whose score is when its registration expires, in
//! milliseconds of Redis's own clock (so agents' clocks never matter). One script per heartbeat
//! renews this agent (score = now + `membership_ttl_ms`), drops expired members, reads the set
//! and keeps the key alive as long as its last member, in one round trip.
//!
//! - Heartbeats run every `heartbeat_interval_ms`; when another member's registration expires
//!   before the next heartbeat, the agent reads again just after that instant, so a member
//!   that stopped renewing (killed, cut off) is dropped at most `membership_ttl_ms` after its
//!   last heartbeat. A newcomer is seen at the others' next heartbeat.
//! - A clean stop removes this agent's member (bounded by the Redis command timeout), so the
//!   others take its domains at their next heartbeat.
//! - A failed heartbeat keeps the last member set (logged when it starts failing and when it
//!   recovers, counted every time); an agent that has never read one keeps probing everything.
//!
//! Each new member set is published through a `watch` channel to the scheduler, which moves
//! the domains that changed hands. A member that left is published with its last renewal (its
//! score in the previous read, less `membership_ttl_ms`, mapped to this process's clock), so the
//! taker knows from when its slots may have gone unprobed. This assumes the agents of a region
//! share `membership_ttl_ms`, as they should (it bounds how long a dead agent's share waits).

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use shared::RedisKeys;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Membership;
use crate::metrics::Metrics;

/// Renews (`beat`) or removes (`leave`) one member, drops expired ones, returns Redis's time
/// and the members with their expiry. KEYS[1]: the region's set; ARGV: agent id, TTL in
/// milliseconds, `beat` or `leave`.
const SCRIPT: &str = r"
redis.replicate_commands() -- Redis 6 replicates the effects after TIME (7 always does)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == 'beat' then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if #members > 0 then
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', tonumber(members[#members]) - now + 1))
end
return {now, members}
";

/// Shortest wait between two reads of the member set (when a member is about to expire).
const MIN_WAIT: Duration = Duration::from_millis(10);
/// Read this long after a member's registration was due to expire.
const EXPIRY_MARGIN: Duration = Duration::from_millis(5);

/// Why the registry failed (`probe_agent_membership_errors_total{reason}`).
pub mod errors {
    /// A heartbeat failed (Redis unreachable, timed out or refused): the last view is kept.
    pub const HEARTBEAT: &str = "heartbeat";
    /// The script's answer was not the expected shape.
    pub const REPLY: &str = "reply";
    /// Removing this agent's member at shutdown failed: the others drop it when it expires.
    pub const LEAVE: &str = "leave";
    pub const ALL: [&str; 3] = [HEARTBEAT, REPLY, LEAVE];
}

/// What the registry needs besides its client.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    pub region: String,
    /// This agent's id (the certificate's when delivering); unique within the region.
    pub agent_id: String,
    pub keys: RedisKeys,
    /// How often this agent renews its registration and reads the member set.
    pub heartbeat: Duration,
    /// How long a registration lives without renewal.
    pub ttl: Duration,
}

/// The member set as one heartbeat read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Redis's clock when it was read, in milliseconds since the epoch.
    pub now_ms: u64,
    /// Every live member and when its registration expires (Redis's clock, milliseconds).
    pub members: Vec<(String, u64)>,
}

impl Seen {
    /// How long until the next read: the heartbeat, or just after the first other member's
    /// registration expires if that comes sooner.
    pub fn next_read(&self, me: &str, heartbeat: Duration) -> Duration {
        let first_expiry = self.members.iter().filter(|(id, _)| id != me).map(|(_, at)| *at).min();
        match first_expiry {
            Some(at) => {
                let until = Duration::from_millis(at.saturating_sub(self.now_ms)) + EXPIRY_MARGIN;
                until.clamp(MIN_WAIT, heartbeat.max(MIN_WAIT))
            }
            None => heartbeat,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("redis unavailable")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected reply from the membership script")]
    Reply,
}

/// Owns the registration of this agent and the sending side of the membership view.
pub struct Registry {
    settings: MembershipSettings,
    client: Client,
    view: watch::Sender<Arc<Membership>>,
    metrics: Metrics,
}

impl Registry {
    /// A registry and the view it publishes (everything until the first member set is read).
    pub fn new(
        settings: MembershipSettings,
        client: Client,
        metrics: Metrics,
    ) -> (Self, watch::Receiver<Arc<Membership>>) {
        let (view, rx) = watch::channel(Arc::new(Membership::everything(&settings.agent_id)));
        metrics.membership_members.set(1);
        (Self { settings, client, view, metrics }, rx)
    }

    /// Renews this agent's registration and reads the member set.
    pub async fn beat(&self) -> Result<Seen, RegistryError> {
        self.call("beat").await
    }

    /// Removes this agent's registration; returns the members left.
    pub async fn leave(&self) -> Result<Seen, RegistryError> {
        self.call("leave").await
    }

    async fn call(&self, op: &str) -> Result<Seen, RegistryError> {
        let reply: Value = self
            .client
            .eval(
                SCRIPT,
                vec![self.settings.keys.agents(&self.settings.region)],
                vec![
                    self.settings.agent_id.clone(),
                    self.settings.ttl.as_millis().to_string(),
                    op.to_owned(),
                ],
            )
            .await?;
        parse_reply(reply).ok_or(RegistryError::Reply)
    }

    /// Publishes the view of `seen` (read at `at`) when its member set differs from the
    /// current one; `previous` is the read before it, which gives each member that left its
    /// last renewal.
    fn apply(&self, seen: &Seen, at: Instant, previous: Option<&(Seen, Instant)>) {
        let me = self.settings.agent_id.as_str();
        let next = Membership::seen(me, seen.members.iter().map(|(id, _)| id.as_str()));
        let current = self.view.borrow().clone();
        if current.same_members(&next) {
            return;
        }
        let before: Vec<&str> = current.members();
        let after: Vec<&str> = next.members();
        let joined: Vec<&str> = after.iter().copied().filter(|id| !before.contains(id)).collect();
        let left: Vec<&str> = before.iter().copied().filter(|id| !after.contains(id)).collect();
        tracing::info!(
            region = %self.settings.region,
            members = ?after,
            joined = ?joined,
            left = ?left,
            first_view = !current.is_known(),
            "region membership changed"
        );
        // A member missing from the previous read cannot have left (the current view came from
        // a read): say it was alive at most a TTL ago.
        let fallback = at.checked_sub(self.settings.ttl).unwrap_or(at);
        let departed: Vec<(String, Instant)> = left
            .iter()
            .map(|id| ((*id).to_owned(), last_renewal(id, previous, self.settings.ttl).unwrap_or(fallback)))
            .collect();
        let next = next.clone().with_departed(departed);
        self.metrics.membership_members.set(next.len() as i64);
        self.metrics.membership_changes.inc();
        self.view.send_replace(Arc::new(next));
    }

    /// Heartbeats until `cancel`, then leaves.
    pub async fn run(self, cancel: CancellationToken) {
        let _connection = self.client.connect();
        let heartbeat = self.settings.heartbeat;
        let mut failing = false;
        let mut previous: Option<(Seen, Instant)> = None;
        loop {
            let wait = match self.beat().await {
                Ok(seen) => {
                    let at = Instant::now();
                    if failing {
                        tracing::info!(region = %self.settings.region, "membership heartbeat recovered");
                        failing = false;
                    }
                    self.apply(&seen, at, previous.as_ref());
                    let wait = seen.next_read(&self.settings.agent_id, heartbeat);
                    previous = Some((seen, at));
                    wait
                }
                Err(error) => {
                    let reason = match error {
                        RegistryError::Redis(_) => errors::HEARTBEAT,
                        RegistryError::Reply => errors::REPLY,
                    };
                    self.metrics.membership_error(reason);
                    if !failing {
                        let view = self.view.borrow().clone();
                        tracing::warn!(
                            error = %shared::error::Chain(&error),
                            region = %self.settings.region,
                            members_kept = ?view.members(),
                            probing_everything = !view.is_known(),
                            "membership heartbeat failed; keeping the last member set"
                        );
                        failing = true;
                    }
                    heartbeat
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        match self.leave().await {
            Ok(seen) => tracing::info!(
                region = %self.settings.region,
                agent_id = %self.settings.agent_id,
                remaining = seen.members.len(),
                "left the region's members"
            ),
            Err(error) => {
                self.metrics.membership_error(errors::LEAVE);
                tracing::warn!(
                    error = %shared::error::Chain(&error),
                    ttl_ms = self.settings.ttl.as_millis() as u64,
                    "could not leave the region's members; the others drop this agent when its registration expires"
                );
            }
        }
        let _ = self.client.quit().await;
        tracing::info!("membership stopped");
    }
}

/// The last renewal of member `id` as the read `previous` (taken at the local instant it
/// holds) shows it: its expiry less `ttl`, mapped from Redis's clock to this process's.
/// `None` when that read does not list it.
fn last_renewal(id: &str, previous: Option<&(Seen, Instant)>, ttl: Duration) -> Option<Instant> {
    let (seen, at) = previous?;
    let expiry = seen.members.iter().find(|(member, _)| member == id)?.1;
    let renewed_ms = expiry.saturating_sub(ttl.as_millis() as u64);
    let ago = Duration::from_millis(seen.now_ms.saturating_sub(renewed_ms));
    Some(at.checked_sub(ago).unwrap_or(*at))
}

/// `{now, {member, score, member, score, …}}` as the script returns it.
fn parse_reply(reply: Value) -> Option<Seen> {
    let Value::Array(mut parts) = reply else { return None };
    if parts.len() != 2 {
        return None;
    }
    let members = parts.pop()?;
    let now_ms = parts.pop()?.as_u64()?;
    let flat = match members {
        Value::Array(flat) => flat,
        Value::Null => Vec::new(),
        _ => return None,
    };
    if flat.len() % 2 != 0 {
        return None;
    }
    let members = flat
        .chunks_exact(2)
        .map(|pair| {
            let id = pair[0].as_string()?;
            let score = pair[1].as_f64()?;
            (score.is_finite() && score >= 0.0).then_some((id, score as u64))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Seen { now_ms, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_read_comes_just_after_another_members_expiry_when_sooner_than_the_heartbeat() {
        let hb = Duration::from_millis(5_000);
        let seen = |members: &[(&str, u64)]| Seen {
            now_ms: 1_000_000,
            members: members.iter().map(|(id, at)| (id.to_string(), *at)).collect(),
        };
        assert_eq!(seen(&[("me", 1_015_000)]).next_read("me", hb), hb, "alone: the heartbeat");
        assert_eq!(seen(&[("me", 1_015_000), ("b", 1_012_000)]).next_read("me", hb), hb);
        assert_eq!(
            seen(&[("me", 1_015_000), ("b", 1_002_000)]).next_read("me", hb),
            Duration::from_millis(2_005),
            "b lapses in 2 s unless renewed"
        );
        assert_eq!(seen(&[("me", 1_015_000), ("b", 1_000_001)]).next_read("me", hb), MIN_WAIT);
    }

    #[test]
    fn a_departed_members_last_renewal_is_its_expiry_less_the_ttl_on_the_local_clock() {
        let at = Instant::now() + Duration::from_secs(100);
        let seen =
            Seen { now_ms: 1_000_000, members: vec![("me".into(), 1_015_000), ("b".into(), 1_012_000)] };
        let previous = (seen, at);
        let ttl = Duration::from_millis(15_000);
        // b expires 12 s after the read: it renewed 3 s before it.
        assert_eq!(last_renewal("b", Some(&previous), ttl), Some(at - Duration::from_secs(3)));
        assert_eq!(last_renewal("me", Some(&previous), ttl), Some(at));
        assert_eq!(last_renewal("c", Some(&previous), ttl), None, "not in that read");
        assert_eq!(last_renewal("b", None, ttl), None);
    }

    #[test]
    fn replies_parse_and_bad_ones_are_refused() {
        let reply = Value::Array(vec![
            Value::Integer(1_700_000_000_000),
            Value::Array(vec![
                Value::from("ams-1"),
                Value::from("1700000012000"),
                Value::from("ams-2"),
                Value::from("1700000015000"),
            ]),
        ]);
        let seen = parse_reply(reply).unwrap();
        assert_eq!(seen.now_ms, 1_700_000_000_000);
        assert_eq!(
            seen.members,
            vec![("ams-1".to_owned(), 1_700_000_012_000), ("ams-2".to_owned(), 1_700_000_015_000)]
        );
        let empty = Value::Array(vec![Value::Integer(5), Value::Array(Vec::new())]);
        assert_eq!(parse_reply(empty).unwrap().members, Vec::new());
        assert!(parse_reply(Value::Integer(1)).is_none());
        let odd = Value::Array(vec![Value::Integer(5), Value::Array(vec![Value::from("ams-1")])]);
        assert!(parse_reply(odd).is_none());
    }
}
