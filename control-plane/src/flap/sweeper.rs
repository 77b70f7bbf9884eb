//! The periodic exit check: leaving flap mode needs no transition, only time, so every
//! `flap_check_interval_ms` each open flap period is looked at and the stable ones are closed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    decide, leave, open_period, score, settings_for, Decision, Kind, Settings, COUNTS_SQL,
    TRANSITION_KIND_SQL,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::incidents::Subject;
use crate::metrics::Metrics;

/// Closes flap periods of domains that became stable. Cheap to clone; any number of replicas
/// may run one (each period is handled under its domain's state row lock, `SKIP LOCKED`).
#[derive(Clone)]
pub struct Sweeper {
    pool: PgPool,
    metrics: Metrics,
    settings: Settings,
    interval: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper").field("settings", &self.settings).field("interval", &self.interval).finish()
    }
}

/// What [`Sweeper::check_one`] did with a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    Left,
    Stayed,
    /// Its domain's state row was locked (an evaluation or another replica): next time.
    Busy,
    /// Closed meanwhile, or its domain is gone.
    Gone,
}

impl Sweeper {
    /// A sweeper with the global flap settings and check interval of `config`, reading "now"
    /// from `clock` (the system clock in production, a `ManualClock` in tests and benchmarks).
    pub fn new(pool: PgPool, metrics: Metrics, config: &Config, clock: Arc<dyn Clock>) -> Self {
        Self {
            pool,
            metrics,
            settings: Settings::from_config(config),
            interval: Duration::from_millis(config.flap_check_interval_ms.max(1)),
            clock,
        }
    }

    /// Checks every `flap_check_interval_ms` (the first check one interval after start) until
    /// `shutdown`. Failures are logged and counted.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(error) = self.check(self.clock.now()).await {
                        self.metrics.flap_sweeper_error("check");
                        tracing::warn!(error = %shared::error::Chain(&*error), "flap check failed");
                    }
                }
            }
        }
    }

    /// One check at `now`: every open flap period whose domain is stable is closed, with its
    /// notices. Returns how many were closed. A period that fails is logged, counted and left
    /// for the next check; only failing to list the periods is an error.
    pub async fn check(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut left = 0;
        for (period_id, domain_id, kind) in self.candidates(now).await? {
            match self.check_one(period_id, domain_id, kind, now).await {
                Ok(Checked::Left) => left += 1,
                Ok(Checked::Busy) => tracing::debug!(%domain_id, "flap check skipped a locked domain"),
                Ok(Checked::Stayed | Checked::Gone) => {}
                Err(error) => {
                    self.metrics.flap_sweeper_error("period");
                    tracing::warn!(%domain_id, %period_id, error = %shared::error::Chain(&*error), "flap check of a domain failed");
                }
            }
        }
        Ok(left)
    }

    /// The open periods whose domains look stable at `now`, by two set-based reads (the open
    /// periods with their domains' settings; every score in one statement) without locks: most
    /// flapping domains stay, and a check of each under its locks cost six round trips per
    /// domain per sweep (0.3 s a sweep for 1,000 flapping domains). [`Sweeper::check_one`]
    /// decides again under the locks, so a stale read only delays an exit to the next sweep.
    async fn candidates(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<(Uuid, Uuid, Kind)>> {
        let open: Vec<(Uuid, Uuid, String, Option<Value>)> = sqlx::query_as(
            "SELECT p.id, p.domain_id, p.kind, d.flap FROM flap_periods p LEFT JOIN domains d ON d.id = p.domain_id
             WHERE p.left_at IS NULL ORDER BY p.domain_id, p.kind",
        )
        .fetch_all(&self.pool)
        .await?;
        if open.is_empty() {
            return Ok(Vec::new());
        }
        // Unreadable settings fall back to the global ones here; `check_one` reports them.
        let settings: Vec<Settings> = open
            .iter()
            .map(|(_, _, _, stored)| {
                self.settings.for_domain(stored.as_ref()).unwrap_or_else(|(fallback, _)| fallback)
            })
            .collect();
        let ids: Vec<Uuid> = open.iter().map(|(_, domain, _, _)| *domain).collect();
        let kinds: Vec<&str> = open.iter().map(|(_, _, kind, _)| kind.as_str()).collect();
        let starts: Vec<DateTime<Utc>> = settings
            .iter()
            .map(|s| now - chrono::Duration::from_std(s.window).unwrap_or(chrono::Duration::MAX))
            .collect();
        let scores: Vec<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
            "SELECT count(t.at) FILTER (WHERE {COUNTS_SQL}), max(t.at)
             FROM unnest($1::uuid[], $2::timestamptz[], $4::text[]) WITH ORDINALITY AS k(domain_id, start, kind, i)
             LEFT JOIN domain_transitions t ON t.domain_id = k.domain_id AND t.at > k.start AND t.at <= $3
                                           AND {TRANSITION_KIND_SQL} = k.kind
             GROUP BY k.i ORDER BY k.i"
        ))
        .bind(&ids)
        .bind(&starts)
        .bind(now)
        .bind(&kinds)
        .fetch_all(&self.pool)
        .await?;
        anyhow::ensure!(scores.len() == open.len(), "one score per open flap period");
        Ok(open
            .iter()
            .zip(&settings)
            .zip(scores)
            .filter(|((_, settings), (count, last))| {
                let score = u32::try_from(*count).unwrap_or(u32::MAX);
                decide(true, score, *last, now, settings) == Decision::Leave
            })
            .map(|(((period, domain, kind, _), _), _)| (*period, *domain, Kind::parse(kind)))
            .collect())
    }

    async fn check_one(
        &self,
        period_id: Uuid,
        domain_id: Uuid,
        kind: Kind,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Checked> {
        let mut tx = self.pool.begin().await?;
        // The lock order of evaluate and of domain writes: domain row, then its state row. A
        // domain being written is skipped (Busy) rather than waited for, so one slow write does
        // not hold up the check of every other flapping domain.
        let domain: Option<(Uuid, String, Option<Value>)> = sqlx::query_as(
            "SELECT tenant_id, url, flap FROM domains WHERE id = $1 FOR KEY SHARE SKIP LOCKED",
        )
        .bind(domain_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((tenant_id, url, stored)) = domain else {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM domains WHERE id = $1)")
                .bind(domain_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return Ok(if exists { Checked::Busy } else { Checked::Gone });
        };
        let state: Option<(String, Option<Uuid>)> = sqlx::query_as(
            "SELECT state, open_incident_id FROM domain_state WHERE domain_id = $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(domain_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((state, open_incident)) = state else {
            // Locked, or gone (pausing deletes it and closes the period in the same commit).
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM domain_state WHERE domain_id = $1)")
                    .bind(domain_id)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Ok(if exists { Checked::Busy } else { Checked::Gone });
        };
        // Read again under the lock: an evaluation or another replica may have closed it.
        let Some(period) = open_period(&mut tx, domain_id, kind).await?.filter(|p| p.id == period_id) else {
            tx.rollback().await?;
            return Ok(Checked::Gone);
        };
        let settings = settings_for(&self.settings, stored.as_ref(), domain_id, &self.metrics);
        let (score, last) = score(&mut tx, domain_id, kind, now, settings.window).await?;
        if decide(true, score, last, now, &settings) != Decision::Leave {
            // Ended now: a dropped transaction keeps its row locks until the pool's background
            // rollback, and meanwhile an evaluation waits and another replica's check skips it.
            tx.rollback().await?;
            return Ok(Checked::Stayed);
        }
        let subject = Subject { tenant_id, domain_id, url };
        let closed = leave(&mut tx, &subject, &period, now, &state, open_incident, score, &settings).await?;
        tx.commit().await?;
        if !closed {
            return Ok(Checked::Gone);
        }
        self.metrics.flap_exits.inc();
        tracing::info!(%domain_id, period_id = %period.id, kind = kind.as_str(), settled = state, score, "domain left flap mode");
        Ok(Checked::Left)
    }
}
