//! Building each finished period's digests exactly once across replicas and restarts.
//!
//! The `digest_cursor` row holds the start of the next period to build. A step
//! ([`Scheduler::run_due`]) locks it with `FOR UPDATE SKIP LOCKED` (a replica that finds it
//! locked leaves: another one is building) and, while that period has ended at least
//! `digest_grace_s` ago, builds every tenant's digest of it, stores it, enqueues its notification
//! and advances the cursor, all in the transaction holding the lock, committed once per period.
//! The grace exists because a transition is stamped with its time before its transaction waits
//! for locks and commits: one stamped just before the end may commit just after it, and a period
//! built at once would miss it. A crash before COMMIT leaves the period to be built again, a
//! crash after it leaves nothing to repeat; `UNIQUE (tenant_id, period_start)` and the
//! notification's dedup key back this up. A period that ended while no replica ran is built when
//! one comes back (late, never skipped); on the very first run the cursor starts at the current
//! period, so a fresh install sends nothing about the past.
//!
//! Each tenant's digest is stored and enqueued under its own savepoint, so a data error for one
//! tenant does not roll back the others': see [`Scheduler::catch_up`] for what happens then.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::build::{build, Digest, Input};
use super::{dedup_key, period_start, render, store, KIND};
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::{self, Notification};

/// While catching up, progress is logged every this many periods.
const PROGRESS_EVERY: usize = 24;

/// The digest scheduler of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    period_s: u64,
    grace_s: u64,
    check_interval: StdDuration,
    metrics: Metrics,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("clock", &self.clock)
            .field("period_s", &self.period_s)
            .field("grace_s", &self.grace_s)
            .field("check_interval", &self.check_interval)
            .finish_non_exhaustive()
    }
}

/// A failed step: the metric's reason label and the cause.
struct Failure {
    reason: &'static str,
    error: anyhow::Error,
}

fn failed<E: Into<anyhow::Error>>(reason: &'static str) -> impl FnOnce(E) -> Failure {
    move |error| Failure { reason, error: error.into() }
}

/// What one period produced.
#[derive(Debug, Default, Clone)]
struct Built {
    digests: usize,
    notifications: u64,
    /// Tenants whose digest failed (rolled back to their savepoint).
    failed: Vec<Uuid>,
}

impl Scheduler {
    /// A scheduler with `digest_period_s`, `digest_grace_s` and `digest_check_interval_ms` from
    /// `config`, reading the time from `clock`.
    pub fn new(pool: PgPool, config: &Config, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        let period_s = config.digest_period_s.max(1);
        Self {
            pool,
            clock,
            period_s,
            grace_s: config.digest_grace_s.min(period_s - 1),
            check_interval: StdDuration::from_millis(config.digest_check_interval_ms.max(1)),
            metrics,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn period(&self) -> Duration {
        Duration::seconds(self.period_s as i64)
    }

    fn grace(&self) -> Duration {
        Duration::seconds(self.grace_s as i64)
    }

    /// Builds every period that has ended by `now - digest_grace_s` and not been built yet (by
    /// any replica), and returns the number of digests stored. Returns 0 at once when another replica holds the
    /// cursor. Failures are logged and counted; what committed before one stays.
    pub async fn run_due(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        match self.catch_up(now).await {
            Ok(built) => Ok(built),
            Err(Failure { reason, error }) => {
                self.metrics.digest_error(reason);
                tracing::error!(reason, error = format!("{error:#}"), "building flap digests failed");
                Err(error.context(format!("building flap digests ({reason})")))
            }
        }
    }

    /// Calls [`Scheduler::run_due`] with the clock's time every `digest_check_interval_ms`
    /// (the first time at once) until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // Logged and counted inside; the next tick tries again.
                    let _ = self.run_due(self.clock.now()).await;
                }
            }
        }
    }

    async fn catch_up(&self, now: DateTime<Utc>) -> Result<usize, Failure> {
        let period = self.period();
        // First run ever: start at the current period. Committed on its own, so replicas
        // starting together never wait on each other's build transaction here.
        sqlx::query(
            "INSERT INTO digest_cursor (id, next_period_start) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(period_start(now, self.period_s))
        .execute(&self.pool)
        .await
        .map_err(failed("cursor"))?;
        let mut built = 0;
        let mut periods = 0;
        let mut behind = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(failed("cursor"))?;
            let cursor: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT next_period_start FROM digest_cursor WHERE id = 1 FOR UPDATE SKIP LOCKED",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed("cursor"))?;
            let Some(cursor) = cursor else {
                // Another replica is building; it will carry on until it has caught up.
                tracing::debug!("the digest cursor is locked by another replica");
                tx.rollback().await.map_err(failed("cursor"))?;
                break;
            };
            // The period length may have changed since the cursor was written.
            let start = period_start(cursor, self.period_s);
            let end = start + period;
            // Not before the grace has passed: transitions stamped before `end` may still be
            // committing.
            if end + self.grace() > now {
                // Ended explicitly: a dropped transaction is rolled back by a background task
                // some time later, and until then the next replica's `SKIP LOCKED` passes the
                // cursor over and builds nothing.
                tx.rollback().await.map_err(failed("cursor"))?;
                break;
            }
            if periods == 0 {
                behind = ((now - start).num_seconds() / self.period_s as i64).max(1);
                if behind > 1 {
                    tracing::info!(
                        periods = behind,
                        from = %start,
                        "catching up flap digests of periods that ended while no replica built them"
                    );
                }
                if start != cursor {
                    tracing::warn!(cursor = %cursor, aligned = %start, "digest cursor not aligned to digest_period_s; aligned down");
                }
            }
            let result = match self.build_period(&mut tx, start, end, now).await {
                Ok(result) => result,
                Err(failure) => {
                    // Release the cursor now, not whenever the pool gets to it.
                    if let Err(error) = tx.rollback().await {
                        tracing::warn!(error = %error, "rolling back a failed digest period failed");
                    }
                    return Err(failure);
                }
            };
            // A tenant whose digest failed (a data error: its savepoint was rolled back, the
            // other tenants' digests stand). Advancing the cursor would skip its digest for good,
            // holding it would hold every tenant's next digests. So: the digests that were built
            // are committed and sent, the cursor stays and the period is tried again at the next
            // check (tenants with a stored digest of it are passed over), until the next period
            // is due. Then the failing tenant's digest is given up, logged and counted as
            // `skipped`, and the cursor advances: other tenants are never held back, and no
            // digest is dropped without an error log and a count.
            let retry = !result.failed.is_empty() && now < end + period + self.grace();
            if !result.failed.is_empty() && !retry {
                for tenant_id in &result.failed {
                    self.metrics.digest_error("skipped");
                    tracing::error!(
                        %tenant_id,
                        period_start = %start,
                        "giving up on a tenant's flap digest that kept failing; the period is done"
                    );
                }
            }
            if !retry {
                sqlx::query("UPDATE digest_cursor SET next_period_start = $1 WHERE id = 1")
                    .bind(end)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed("cursor"))?;
            }
            tx.commit().await.map_err(failed("commit"))?;
            self.metrics.digests_built.inc_by(result.digests as u64);
            self.metrics.digest_notifications.inc_by(result.notifications);
            built += result.digests;
            if retry {
                tracing::warn!(
                    period_start = %start,
                    failed = result.failed.len(),
                    digests = result.digests,
                    "some flap digests of this period failed; they are tried again at the next check"
                );
                break;
            }
            self.metrics.digest_periods.inc();
            periods += 1;
            tracing::info!(
                period_start = %start,
                digests = result.digests,
                notifications = result.notifications,
                late_s = (now - end).num_seconds(),
                "flap digests built"
            );
            if behind > 1 && periods % PROGRESS_EVERY == 0 {
                tracing::info!(done = periods, of = behind, "catching up flap digests");
            }
        }
        if behind > 1 {
            tracing::info!(periods, digests = built, "caught up flap digests");
        }
        Ok(built)
    }

    /// Every tenant's digest of `[start, end)` not stored yet: each stored and enqueued in `tx`
    /// under its own savepoint. A tenant whose digest fails is logged, counted (by the failing
    /// step) and listed in [`Built::failed`]; a failure that leaves `tx` unusable (the savepoint
    /// cannot be rolled back) fails the whole period.
    async fn build_period(
        &self,
        tx: &mut PgConnection,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Built, Failure> {
        let tenants = store::load_period(tx, start, end, now).await.map_err(failed("load"))?;
        // Stored by an earlier attempt at this period that failed for another tenant.
        let done: HashSet<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM digests WHERE period_start = $1")
            .bind(start)
            .fetch_all(&mut *tx)
            .await
            .map_err(failed("load"))?
            .into_iter()
            .collect();
        let mut built = Built::default();
        for (tenant_id, rows) in tenants {
            if done.contains(&tenant_id) {
                continue;
            }
            let input = Input {
                tenant_id,
                start,
                end,
                now,
                flaps: &rows.flaps,
                transitions: &rows.transitions,
                facts: &rows.facts,
            };
            let Some(digest) = build(&input) else { continue };
            let mut savepoint = tx.begin().await.map_err(failed("savepoint"))?;
            match store_digest(&mut savepoint, &digest, now).await {
                Ok(Some(notifications)) => {
                    savepoint.commit().await.map_err(failed("savepoint"))?;
                    built.notifications += notifications;
                    built.digests += 1;
                }
                Ok(None) => {
                    // Another transaction stored it since `done` was read: the cursor lock did not
                    // hold, or `digest_period_s` changed. Nothing is sent twice all the same.
                    savepoint.commit().await.map_err(failed("savepoint"))?;
                    self.metrics.digest_error("duplicate");
                    tracing::warn!(%tenant_id, period_start = %start, "a digest of this period is already stored");
                }
                Err(Failure { reason, error }) => {
                    savepoint.rollback().await.map_err(failed("savepoint"))?;
                    self.metrics.digest_error(reason);
                    tracing::error!(
                        %tenant_id,
                        period_start = %start,
                        reason,
                        error = format!("{error:#}"),
                        "building a tenant's flap digest failed"
                    );
                    built.failed.push(tenant_id);
                }
            }
        }
        Ok(built)
    }
}

/// Stores `digest` and enqueues its notification; the number of outbox rows added, or `None`
/// when a digest of this tenant and period is already stored.
async fn store_digest(
    tx: &mut PgConnection,
    digest: &Digest,
    now: DateTime<Utc>,
) -> Result<Option<u64>, Failure> {
    let (tenant_id, start, end) = (digest.tenant_id, digest.period_start, digest.period_end);
    let text = render::text(digest);
    let html = render::html(digest);
    let content = serde_json::to_value(digest).map_err(failed("encode"))?;
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO digests (id, tenant_id, period_start, period_end, created_at, content, text, html)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id, period_start) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(start)
    .bind(end)
    .bind(now)
    .bind(&content)
    .bind(&text)
    .bind(&html)
    .fetch_optional(&mut *tx)
    .await
    .map_err(failed("store"))?;
    let Some(id) = inserted else { return Ok(None) };
    let mut details = content;
    if let Value::Object(map) = &mut details {
        map.insert("digest_id".into(), Value::from(id.to_string()));
        map.insert("text".into(), Value::from(text));
        map.insert("html".into(), Value::from(html));
    }
    let notification = Notification {
        kind: KIND.into(),
        tenant_id,
        domain_id: None,
        url: None,
        incident_id: None,
        summary: digest.summary.clone(),
        details,
        occurred_at: end,
    };
    let added =
        notify::enqueue(tx, &notification, &dedup_key(tenant_id, start)).await.map_err(failed("enqueue"))?;
    Ok(Some(added))
}
