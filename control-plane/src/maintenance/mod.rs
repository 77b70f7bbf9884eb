//! Maintenance windows: planned periods, one-off or recurring (RFC 5545), during which the
//! domains they cover (by id or by tag) stay monitored but nobody is paged.
//!
//! - [`spec`]: the request, every bad field named. [`schedule`]: pure occurrence arithmetic
//!   (recurrence rules, time zones, daylight-saving changes). [`store`]: tenant-scoped CRUD,
//!   occurrences expanded ahead into `maintenance_occurrences`, the covering query.
//! - While a window covers a domain, an incident that opens is recorded as usual but marked
//!   (`incidents.maintenance_window_id`, `maintenance_until`) and enqueues nothing
//!   ([`crate::incidents::open_many`]); if it resolves inside the window nothing is sent at all.
//! - [`Sweeper`]: once a window is over, an incident it withheld that is still open is announced
//!   (its `incident_opened`, once: the flag `maintenance_ended_at` is set in the same
//!   transaction, under the incident's row lock, and the outbox dedup key is the opening's).
//!   It also extends recurring windows' occurrences.

pub mod schedule;
pub mod spec;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use spec::WindowSpec;
pub use store::{covering, Window};

use crate::clock::Clock;
use crate::incidents::{self, Subject};
use crate::metrics::Metrics;

/// What the `opened` event of a withheld incident says in its details (`"notification"`).
pub const WITHHELD: &str = "none: maintenance window";
/// What the `resolved` event of an incident that ended inside its window says.
pub const RESOLVED_INSIDE: &str = "none: resolved inside its maintenance window";
/// What the `opened` event says once the incident was announced at the window's end.
pub const SENT_AT_END: &str = "sent: still down when the maintenance window ended";

/// Incidents handled per sweeper transaction.
const BATCH: i64 = 200;

/// The periodic maintenance task: extends recurring windows and announces the incidents whose
/// window ended while they were still open. Cheap to clone; any number of replicas may run it
/// (incidents are claimed `FOR UPDATE SKIP LOCKED`).
#[derive(Clone)]
pub struct Sweeper {
    pool: PgPool,
    metrics: Metrics,
    interval: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper").field("interval", &self.interval).finish()
    }
}

/// What one [`Sweeper::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Recurring windows whose occurrences were extended.
    pub extended: u64,
    /// Incidents announced because their window ended while they were open.
    pub announced: u64,
    /// Incidents whose window ended but another covers them: still withheld.
    pub still_covered: u64,
}

impl Sweeper {
    /// A sweeper stepping every `interval`, reading "now" from `clock`.
    pub fn new(pool: PgPool, metrics: Metrics, interval: Duration, clock: Arc<dyn Clock>) -> Self {
        Self { pool, metrics, interval, clock }
    }

    /// Steps every interval until `shutdown`; failures are logged and counted
    /// (`control_plane_maintenance_errors_total`) and retried next time.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(error) = self.step(self.clock.now()).await {
                        tracing::warn!(error = %shared::error::Chain(&error), "maintenance sweep failed");
                    }
                }
            }
        }
    }

    /// One step at `now`: recurring windows extended, then every incident whose window is over
    /// either announced or, when another occurrence covers it now, withheld until that one ends.
    pub async fn step(&self, now: DateTime<Utc>) -> sqlx::Result<Swept> {
        let mut swept = Swept {
            extended: store::extend_due(&self.pool, now)
                .await
                .inspect_err(|_| self.metrics.maintenance_error("extend"))?,
            ..Swept::default()
        };
        loop {
            let (announced, covered, more) =
                self.ended(now).await.inspect_err(|_| self.metrics.maintenance_error("announce"))?;
            swept.announced += announced;
            swept.still_covered += covered;
            if !more {
                break;
            }
        }
        Ok(swept)
    }

    /// One batch of incidents whose window ended by `now`. Returns (announced, still covered,
    /// whether a full batch was taken).
    async fn ended(&self, now: DateTime<Utc>) -> sqlx::Result<(u64, u64, bool)> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<(Uuid, Uuid, Uuid, String, Option<Uuid>)> = sqlx::query_as(
            "SELECT i.id, i.tenant_id, i.domain_id, COALESCE(d.url, ''), i.maintenance_window_id
             FROM incidents i LEFT JOIN domains d ON d.id = i.domain_id
             WHERE i.maintenance_until <= $1 AND i.maintenance_ended_at IS NULL AND i.state <> 'resolved'
             ORDER BY i.maintenance_until LIMIT $2
             FOR UPDATE OF i SKIP LOCKED",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let more = due.len() as i64 == BATCH;
        let domains: Vec<Uuid> = due.iter().map(|d| d.2).collect();
        let covered = covering(&mut tx, &domains, &vec![now; domains.len()]).await?;
        let (mut announced, mut still) = (0, 0);
        for (id, tenant_id, domain_id, url, window_id) in due {
            if let Some((next_window, until)) = covered.get(&domain_id) {
                sqlx::query(
                    "UPDATE incidents SET maintenance_window_id = $2, maintenance_until = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(next_window)
                .bind(until)
                .execute(&mut *tx)
                .await?;
                still += 1;
                continue;
            }
            sqlx::query("UPDATE incidents SET maintenance_ended_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let subject = Subject { tenant_id, domain_id, url };
            let added = incidents::announce_after_maintenance(&mut tx, &subject, id, now, window_id).await?;
            self.metrics.maintenance_announced.inc();
            tracing::info!(incident_id = %id, %domain_id, ?window_id, added, "incident announced: still down when its maintenance window ended");
            announced += 1;
        }
        tx.commit().await?;
        Ok((announced, still, more))
    }
}

/// The `"maintenance"` object of a withheld incident's event details.
pub fn details(window_id: Uuid, until: DateTime<Utc>) -> serde_json::Value {
    json!({ "window_id": window_id, "until": until })
}
