//! The config publisher and reconciler: applies the Postgres change log to Redis, in version
//! order, exactly once per version, and rebuilds Redis from Postgres when it was flushed, fell
//! too far behind, or drifted.
//!
//! Each change is applied by one Lua script that checks Redis's version is exactly one below
//! the change's, then writes the hash field, the version key and the Pub/Sub notice together.
//! Because the check and the writes are one atomic step, several replicas can publish the same
//! log concurrently: each version is applied once, in order, and the losers just skip it.
//!
//! Redis without a version key is treated as unknown, never as empty: incremental changes are
//! not applied on top of it (that would look like a complete catalog with most domains
//! missing). Instead the hash is rebuilt from a consistent Postgres snapshot into a scratch key
//! and renamed into place together with the version and a `resync` notice — but only if Redis's
//! version is still the one that made the rebuild necessary (compare-and-swap), so concurrent
//! rebuilds by several replicas, or a rebuild racing an incremental apply, cannot undo each other.
//! The swap also checks that the scratch hash holds every domain the snapshot had: its fields
//! are written by separate commands, and a Sentinel failover in between can leave the new
//! primary with only some of them.
//!
//! # Failover
//!
//! Replication to a Redis replica is asynchronous, so the primary a Sentinel failover promotes
//! may lack the last versions the publisher applied (and the old primary keeps taking writes
//! until Sentinel demotes it, all of them lost). Nothing here trusts the publisher's memory of
//! what it applied: every pass starts from the version Redis holds *now*, so a primary that is
//! behind simply gets the missing versions again from the change log (their notices re-sent
//! to agents; an agent ignores a version it already has, and the content of a version never
//! changes), or a rebuild when the log no longer reaches back that far. The client reconnects
//! through the sentinels, and [`Publisher::run`] catches up as soon as it has.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use shared::{ChangeNotice, ChangeOp, DomainId, RedisKeys};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domains::store::{self, NOTIFY_CHANNEL};
use crate::metrics::Metrics;

const APPLY_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[2])
if not cur then return -1 end
cur = tonumber(cur)
local v = tonumber(ARGV[1])
if cur >= v then return 0 end
if cur ~= v - 1 then return -2 end
if ARGV[2] == 'upsert' then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[3])
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"#;

const FINISH_REBUILD_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[3]) or ''
if cur ~= ARGV[4] then
  redis.call('DEL', KEYS[1])
  return 0
end
if redis.call('HLEN', KEYS[1]) ~= tonumber(ARGV[5]) then
  redis.call('DEL', KEYS[1])
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PERSIST', KEYS[1])
  redis.call('RENAME', KEYS[1], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

const STATE_SCRIPT: &str = r#"
return {redis.call('GET', KEYS[1]), redis.call('HLEN', KEYS[2])}
"#;

/// Change-log rows read per round trip.
const PAGE: i64 = 256;
/// Fields written per HSET while rebuilding.
const REBUILD_CHUNK: usize = 1000;
/// A crashed rebuild's scratch hash expires after this long.
const SCRATCH_TTL_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("redis")]
    Redis(#[from] fred::error::Error),
    #[error("postgres")]
    Postgres(#[from] sqlx::Error),
    /// The scratch hash lost fields between their writes and the swap (a failover in between,
    /// or eviction): nothing was swapped in; the next pass rebuilds again.
    #[error("rebuild scratch hash lost some of its {expected} domains before the swap; discarded")]
    ScratchIncomplete { expected: usize },
}

impl PublishError {
    fn reason(&self) -> &'static str {
        match self {
            PublishError::Redis(_) => "redis",
            PublishError::Postgres(_) => "postgres",
            PublishError::ScratchIncomplete { .. } => "rebuild_incomplete",
        }
    }
}

/// Why a full rebuild ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildReason {
    /// Redis has no version key (first start, flushed, or evicted).
    Missing,
    /// Redis is behind the oldest change still in the log.
    LogPruned,
    /// Redis claims a version Postgres never reached (e.g. Postgres restored from a backup).
    Ahead,
    /// Same version but a different number of domains.
    Drift,
}

impl RebuildReason {
    fn as_str(self) -> &'static str {
        match self {
            RebuildReason::Missing => "missing",
            RebuildReason::LogPruned => "log_pruned",
            RebuildReason::Ahead => "ahead",
            RebuildReason::Drift => "drift",
        }
    }
}

/// What one catch-up pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    pub applied: u64,
    pub skipped: u64,
    pub rebuilt: bool,
}

/// Applies the change log to Redis. Cheap to clone: a pool, a Redis client and metric handles.
#[derive(Clone)]
pub struct Publisher {
    pool: PgPool,
    redis: Client,
    keys: RedisKeys,
    metrics: Metrics,
    wake: Arc<Notify>,
    keep_log: u64,
}

impl Publisher {
    pub fn new(pool: PgPool, redis: Client, keys: RedisKeys, metrics: Metrics, keep_log: u64) -> Self {
        Self { pool, redis, keys, metrics, wake: Arc::new(Notify::new()), keep_log }
    }

    /// The handle the API uses to wake the publisher right after a commit.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    async fn redis_version(&self) -> Result<Option<u64>, PublishError> {
        Ok(self.redis.get::<Option<u64>, _>(self.keys.version()).await?)
    }

    /// Applies every change Redis does not have yet; rebuilds when incremental application is
    /// impossible. This is the step the run loop repeats; tests drive it directly.
    pub async fn catch_up(&self) -> Result<CatchUp, PublishError> {
        let mut outcome = CatchUp::default();
        // Bounded: a rebuild or a concurrent replica can each cost one extra round.
        for _ in 0..1000 {
            let Some(current) = self.redis_version().await? else {
                self.rebuild(RebuildReason::Missing, None).await?;
                outcome.rebuilt = true;
                continue;
            };
            self.metrics.config_version_published.set(current as i64);
            let rows: Vec<(i64, Uuid, String, Option<serde_json::Value>)> = sqlx::query_as(
                "SELECT version, domain_id, op, config FROM config_changes WHERE version > $1 ORDER BY version LIMIT $2",
            )
            .bind(current as i64)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await?;
            let Some(first) = rows.first() else {
                let latest: i64 =
                    sqlx::query_scalar("SELECT version FROM config_state").fetch_one(&self.pool).await?;
                self.metrics.config_backlog.set(0);
                if current > latest as u64 {
                    tracing::warn!(
                        redis_version = current,
                        postgres_version = latest,
                        "redis is ahead of postgres"
                    );
                    self.rebuild(RebuildReason::Ahead, Some(current)).await?;
                    outcome.rebuilt = true;
                    continue;
                }
                return Ok(outcome);
            };
            if first.0 as u64 != current + 1 {
                tracing::warn!(
                    redis_version = current,
                    oldest_log = first.0,
                    "change log no longer reaches redis's version"
                );
                self.rebuild(RebuildReason::LogPruned, Some(current)).await?;
                outcome.rebuilt = true;
                continue;
            }
            for (version, id, op, config) in rows {
                let op = if op == "upsert" { ChangeOp::Upsert } else { ChangeOp::Delete };
                let notice = ChangeNotice { version: version as u64, id: Some(DomainId(id)), op };
                let notice = serde_json::to_string(&notice).expect("notice serializes");
                let config = config.map(|c| c.to_string()).unwrap_or_default();
                let op_name = if op == ChangeOp::Upsert { "upsert" } else { "delete" };
                let result: i64 = self
                    .redis
                    .eval(
                        APPLY_SCRIPT,
                        vec![self.keys.domains(), self.keys.version()],
                        vec![
                            version.to_string(),
                            op_name.to_owned(),
                            id.to_string(),
                            config,
                            self.keys.changes(),
                            notice,
                        ],
                    )
                    .await?;
                match result {
                    1 => {
                        outcome.applied += 1;
                        self.metrics.config_published.inc();
                        self.metrics.config_version_published.set(version);
                        tracing::debug!(version, domain_id = %id, op = op_name, "config change published");
                    }
                    0 => {
                        outcome.skipped += 1;
                        self.metrics.config_publish_skipped.inc();
                    }
                    // Flushed (-1) or another replica moved past a gap (-2): re-read the state.
                    _ => break,
                }
            }
        }
        Ok(outcome)
    }

    /// Rebuilds the whole hash from a consistent Postgres snapshot, provided Redis's version is
    /// still `observed` (`None`: no version key) when the new hash is swapped in.
    ///
    /// # Errors
    /// Redis or Postgres failed, or [`PublishError::ScratchIncomplete`]: the scratch hash did not
    /// hold every domain of the snapshot at the swap, so nothing was swapped in.
    pub async fn rebuild(&self, reason: RebuildReason, observed: Option<u64>) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let (version, configs) = store::snapshot(&self.pool).await?;
        let scratch = format!("{}:{}", self.keys.rebuild_scratch(), Uuid::new_v4());
        for chunk in configs.chunks(REBUILD_CHUNK) {
            let fields: Vec<(String, String)> = chunk
                .iter()
                .map(|c| (c.id.to_string(), serde_json::to_string(c).expect("config serializes")))
                .collect();
            let _: () = self.redis.hset(&scratch, fields).await?;
            let _: () = self.redis.pexpire(&scratch, SCRATCH_TTL_MS, None).await?;
        }
        let notice = serde_json::to_string(&ChangeNotice { version, id: None, op: ChangeOp::Resync })
            .expect("notice serializes");
        let done: i64 = self
            .redis
            .eval(
                FINISH_REBUILD_SCRIPT,
                vec![scratch, self.keys.domains(), self.keys.version()],
                vec![
                    version.to_string(),
                    self.keys.changes(),
                    notice,
                    observed.map(|v| v.to_string()).unwrap_or_default(),
                    configs.len().to_string(),
                ],
            )
            .await?;
        if done == -1 {
            // Logged and counted by the caller's loop, like every publish error.
            return Err(PublishError::ScratchIncomplete { expected: configs.len() });
        }
        if done == 1 {
            self.metrics.rebuild(reason.as_str());
            self.metrics.config_version_published.set(version as i64);
            tracing::info!(
                reason = reason.as_str(),
                version,
                domains = configs.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "redis config rebuilt from postgres"
            );
        } else {
            tracing::info!(reason = reason.as_str(), version, "redis changed meanwhile; rebuild discarded");
        }
        Ok(())
    }

    /// Compares Redis with Postgres and repairs what differs; prunes the change log.
    pub async fn reconcile(&self) -> Result<CatchUp, PublishError> {
        let (redis_version, redis_len): (Option<u64>, u64) = self
            .redis
            .eval(STATE_SCRIPT, vec![self.keys.version(), self.keys.domains()], Vec::<String>::new())
            .await?;
        let (pg_version, pg_len): (i64, i64) =
            sqlx::query_as("SELECT version, (SELECT count(*) FROM domains) FROM config_state")
                .fetch_one(&self.pool)
                .await?;
        let mut outcome = CatchUp::default();
        match redis_version {
            Some(v) if v == pg_version as u64 && redis_len != pg_len as u64 => {
                tracing::warn!(
                    version = v,
                    redis_domains = redis_len,
                    postgres_domains = pg_len,
                    "redis config drifted"
                );
                self.rebuild(RebuildReason::Drift, Some(v)).await?;
                outcome.rebuilt = true;
            }
            Some(v) => {
                self.metrics.config_backlog.set((pg_version - v as i64).max(0));
            }
            None => {}
        }
        let caught = self.catch_up().await?;
        outcome.applied += caught.applied;
        outcome.skipped += caught.skipped;
        outcome.rebuilt |= caught.rebuilt;
        if let Some(v) = self.redis_version().await? {
            let floor = v.saturating_sub(self.keep_log) as i64;
            let pruned = sqlx::query("DELETE FROM config_changes WHERE version < $1")
                .bind(floor)
                .execute(&self.pool)
                .await?;
            if pruned.rows_affected() > 0 {
                tracing::debug!(rows = pruned.rows_affected(), "change log pruned");
            }
        }
        Ok(outcome)
    }

    async fn listen(&self) -> Option<PgListener> {
        match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot LISTEN for config changes; relying on polling");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(error = %error, "cannot open a LISTEN connection; relying on polling");
                None
            }
        }
    }

    /// Runs until `cancel`: reconciles at start and every `reconcile_every`, catches up on every
    /// wake-up (in-process after a commit, or a Postgres NOTIFY from any replica), every time
    /// the Redis client has reconnected (after an outage or a Sentinel failover: the primary it
    /// reached may be behind), and every `poll_every` as a safety net.
    pub async fn run(self, poll_every: Duration, reconcile_every: Duration, cancel: CancellationToken) {
        let mut reconnects = self.redis.reconnect_rx();
        let mut listener = self.listen().await;
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval(reconcile_every);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                () = cancel.cancelled() => break,
                () = self.wake.notified() => Step::CatchUp,
                notification = recv(&mut listener) => match notification {
                    Ok(()) => {
                        // One catch-up covers every commit announced so far.
                        if let Some(l) = listener.as_mut() {
                            while l.next_buffered().is_some() {}
                        }
                        Step::CatchUp
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "config LISTEN connection failed; reopening");
                        listener = self.listen().await;
                        Step::CatchUp
                    }
                },
                _ = poll.tick() => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                    Step::CatchUp
                }
                _ = reconcile.tick() => Step::Reconcile,
                event = reconnects.recv() => match event {
                    Ok(server) => {
                        self.metrics.config_redis_reconnects.inc();
                        tracing::info!(%server, "redis connection (re)established; catching up from its version");
                        Step::CatchUp
                    }
                    // Events were missed while a pass ran: one catch-up covers them all.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Step::CatchUp,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        reconnects = self.redis.reconnect_rx();
                        Step::CatchUp
                    }
                },
            };
            let result = match step {
                Step::CatchUp => self.catch_up().await,
                Step::Reconcile => self.reconcile().await,
            };
            if let Err(error) = result {
                self.metrics.publish_error(error.reason());
                let cause = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
                tracing::warn!(error = %error, cause, "config publish failed; will retry");
            }
        }
        tracing::info!("config publisher stopped");
    }
}

enum Step {
    CatchUp,
    Reconcile,
}

async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => l.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
