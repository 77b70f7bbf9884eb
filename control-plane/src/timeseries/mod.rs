//! Time-series storage of probe results in a database of its own (`timeseries_url`):
//! TimescaleDB when the extension is there, partitioned plain PostgreSQL otherwise, with the
//! same tables, roll-ups and read queries in both (see `migrations/timeseries`).
//!
//! - [`Timeseries::ingest`]: validate a batch, queue it (bounded, `ingest_queue_capacity`,
//!   waiting at most `ingest_wait_ms`), store it through one of `timeseries_write_connections`
//!   group-commit writers ([`writer`]; in plain mode its counts and latency buckets are added to
//!   the roll-ups in the same transaction), answer after COMMIT. Idempotent per batch id.
//! - [`Timeseries::refresh_rollups`] and [`Timeseries::maintain`] ([`rollup`]): plain-mode
//!   re-aggregation of hours an older control plane marked, partitions and retention;
//!   [`Timeseries::run_maintenance`] runs both periodically.
//! - [`Timeseries::uptime`], [`Timeseries::latency`], [`Timeseries::recent_results`],
//!   [`Timeseries::certificate`] ([`read`]): through a pool of `timeseries_read_connections`.
//! - [`buckets`]: the fixed log-scale latency buckets and percentiles.

pub mod buckets;
mod metrics;
mod model;
pub mod read;
pub mod rollup;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use metrics::TimeseriesMetrics;
pub use model::{IngestBatch, IngestError, IngestOutcome};
pub use read::{CertificateFacts, ExpiringCertificate, Latency, PhaseLatency, StoredResult, Uptime, Window};
pub use rollup::{MaintenanceReport, RefreshReport, Retention};
pub use writer::{copy_batch, MAX_ROWS_PER_TX};

use crate::config::Config;
use writer::{Job, Writers};

/// The embedded migrations of the time-series database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/timeseries");

/// How the time-series database was built (recorded in `storage_meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// Hypertable, continuous aggregates, TimescaleDB policies.
    Timescale,
    /// Daily partitions and roll-up tables maintained by the control plane.
    Plain,
}

impl StorageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Timescale => "timescale",
            StorageMode::Plain => "plain",
        }
    }
}

/// The time-series store. Cheap to clone.
#[derive(Clone)]
pub struct Timeseries {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    mode: StorageMode,
    queue: mpsc::Sender<Job>,
    writers: Arc<Writers>,
    metrics: TimeseriesMetrics,
    wait: Duration,
    retention: Retention,
    refresh_every: Duration,
    maintain_every: Duration,
}

impl std::fmt::Debug for Timeseries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeseries").field("mode", &self.inner.mode).finish_non_exhaustive()
    }
}

/// The read pool of the time-series database (`timeseries_url`, `timeseries_read_connections`).
async fn read_pool(config: &Config) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config.timeseries_url.parse().context("invalid timeseries_url")?;
    PgPoolOptions::new()
        .max_connections(config.timeseries_read_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(crate::startup::missing_database_hint)
        .context("cannot connect to the time-series database")
}

fn retention(config: &Config) -> Retention {
    Retention {
        raw_days: config.retention_raw_days,
        rollup_days: config.retention_rollup_days,
        partitions_ahead_days: config.partitions_ahead_days,
    }
}

/// Migrates the time-series database and applies the retention settings (TimescaleDB policies,
/// or plain-mode partitions); the storage mode the migration chose.
async fn prepare(pool: &PgPool, config: &Config) -> anyhow::Result<StorageMode> {
    MIGRATOR.run(pool).await.context("migrating the time-series database")?;
    let mode = match sqlx::query_scalar::<_, String>("SELECT mode FROM storage_meta").fetch_one(pool).await? {
        m if m == "timescale" => StorageMode::Timescale,
        _ => StorageMode::Plain,
    };
    let retention = retention(config);
    match mode {
        StorageMode::Timescale => apply_retention_policies(pool, retention).await?,
        StorageMode::Plain => {
            rollup::maintain(pool, mode, retention, Utc::now()).await.context("creating partitions")?;
        }
    }
    Ok(mode)
}

/// What `control-plane migrate` does to the time-series database: connect, migrate, apply the
/// retention settings, disconnect. The storage mode in use.
pub async fn migrate_database(config: &Config) -> anyhow::Result<StorageMode> {
    let pool = read_pool(config).await?;
    let mode = prepare(&pool, config).await;
    pool.close().await;
    mode
}

impl Timeseries {
    /// Connects the read pool, migrates, reads the storage mode, applies the retention policy
    /// (TimescaleDB) or creates partitions ahead (plain), and starts the writers.
    pub async fn connect(config: &Config, registry: &mut Registry) -> anyhow::Result<Timeseries> {
        let pg: tokio_postgres::Config =
            config.timeseries_url.parse().context("invalid timeseries_url for the writers")?;
        let pool = read_pool(config).await?;
        let mode = prepare(&pool, config).await?;
        let retention = retention(config);

        let metrics = TimeseriesMetrics::default();
        metrics.register(registry);
        let (writers, queue) = Writers::spawn(
            pg,
            config.timeseries_write_connections as usize,
            config.ingest_queue_capacity,
            mode,
            metrics.clone(),
        );
        tracing::info!(mode = mode.as_str(), "time-series storage ready");
        Ok(Timeseries {
            inner: Arc::new(Inner {
                pool,
                mode,
                queue,
                writers,
                metrics,
                wait: Duration::from_millis(config.ingest_wait_ms),
                retention,
                refresh_every: Duration::from_secs(config.rollup_refresh_interval_s),
                maintain_every: Duration::from_secs(config.maintenance_interval_s),
            }),
        })
    }

    pub fn mode(&self) -> StorageMode {
        self.inner.mode
    }

    pub fn metrics(&self) -> &TimeseriesMetrics {
        &self.inner.metrics
    }

    /// The read pool (reads, refreshes, maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Validates and stores one batch; answers once it is committed (or was stored before).
    pub async fn ingest(&self, batch: IngestBatch) -> Result<IngestOutcome, IngestError> {
        let inner = &self.inner;
        let batch = model::validate(batch, Utc::now()).inspect_err(|_| inner.metrics.error("invalid"))?;
        if inner.writers.is_closing() {
            return Err(IngestError::Unavailable("the control plane is shutting down".into()));
        }
        let (reply, answer) = oneshot::channel();
        match inner.queue.send_timeout(Job { batch, reply }, inner.wait).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                inner.metrics.error("queue_full");
                return Err(IngestError::Unavailable(format!(
                    "the ingest queue stayed full for {} ms",
                    inner.wait.as_millis()
                )));
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                return Err(IngestError::Unavailable("the control plane is shutting down".into()));
            }
        }
        inner.metrics.queue_depth.set((inner.queue.max_capacity() - inner.queue.capacity()) as i64);
        answer.await.unwrap_or_else(|_| Err(IngestError::Unavailable("the writer stopped".into())))
    }

    /// Plain mode: recomputes the hours an older control plane marked in `rollup_dirty` (this
    /// one adds to the roll-ups as it stores results), and their days; nothing when none is
    /// marked. TimescaleDB mode: nothing (its refresh policies do it).
    pub async fn refresh_rollups(&self) -> anyhow::Result<RefreshReport> {
        if self.inner.mode == StorageMode::Timescale {
            return Ok(RefreshReport::default());
        }
        let report = rollup::refresh(&self.inner.pool, Utc::now(), self.inner.retention.raw_days)
            .await
            .inspect_err(|_| self.inner.metrics.error("refresh"))
            .context("refreshing roll-ups")?;
        self.inner.metrics.hours_rolled_up.inc_by(report.hours.len() as u64);
        Ok(report)
    }

    /// Partitions ahead of `now`, retention relative to `now` (plain mode), and forgetting old
    /// batch ids (both modes).
    pub async fn maintain(&self, now: DateTime<Utc>) -> anyhow::Result<MaintenanceReport> {
        let report = rollup::maintain(&self.inner.pool, self.inner.mode, self.inner.retention, now)
            .await
            .inspect_err(|_| self.inner.metrics.error("maintenance"))
            .context("time-series maintenance")?;
        self.inner.metrics.partitions_dropped.inc_by(report.partitions_dropped.len() as u64);
        Ok(report)
    }

    /// Refreshes every `rollup_refresh_interval_s` and maintains every `maintenance_interval_s`
    /// until `shutdown`, then stops the writers after they stored what is queued.
    pub async fn run_maintenance(self, shutdown: CancellationToken) {
        let mut refresh = tokio::time::interval(self.inner.refresh_every);
        let mut maintain = tokio::time::interval(self.inner.maintain_every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = refresh.tick() => {
                    if let Err(error) = self.refresh_rollups().await {
                        tracing::error!(error = %shared::error::Chain(&*error), "roll-up refresh failed");
                    }
                }
                _ = maintain.tick() => {
                    if let Err(error) = self.maintain(Utc::now()).await {
                        tracing::error!(error = %shared::error::Chain(&*error), "time-series maintenance failed");
                    }
                }
            }
        }
        self.close().await;
    }

    /// Stops accepting batches, stores those already queued, and waits for the writers.
    pub async fn close(&self) {
        self.inner.writers.close().await;
        self.inner.pool.close().await;
    }

    /// Probe success counts over `window`, every region together and per region (the raw
    /// probe ratio; the domain's uptime is [`crate::uptime`]'s, from consensus).
    pub async fn uptime(&self, domain: Uuid, window: Window) -> Result<Uptime, sqlx::Error> {
        read::uptime(&self.inner.pool, self.inner.mode, domain, window).await
    }

    /// Latency percentiles over `window`, overall and per region, per phase.
    pub async fn latency(&self, domain: Uuid, window: Window) -> Result<Latency, sqlx::Error> {
        read::latency(&self.inner.pool, self.inner.mode, domain, window).await
    }

    /// For each `(domain, failing)`: its latest result since `since` (the latest failing one when
    /// `failing`) and its newest certificate's issuer, as a grouped notification compares them.
    pub async fn result_facts(
        &self,
        domains: &[(Uuid, bool)],
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(Uuid, crate::notify::storm::ResultFacts)>, sqlx::Error> {
        read::result_facts(&self.inner.pool, domains, since).await
    }

    /// The newest raw results, newest first.
    pub async fn recent_results(&self, domain: Uuid, limit: u32) -> Result<Vec<StoredResult>, sqlx::Error> {
        read::recent_results(&self.inner.pool, domain, limit).await
    }

    /// The newest certificate per region, with days left from now, its chain and the later
    /// hops' certificates; `url_host` (the monitored URL's host) names the first hop where the
    /// agent did not.
    pub async fn certificate(
        &self,
        domain: Uuid,
        url_host: &str,
    ) -> Result<Vec<CertificateFacts>, sqlx::Error> {
        read::certificates(&self.inner.pool, domain, url_host).await
    }
}

/// TimescaleDB mode: replaces the retention policies with the configured ones, in one
/// transaction under an advisory lock so replicas starting together do not race.
async fn apply_retention_policies(pool: &PgPool, retention: Retention) -> anyhow::Result<()> {
    // Raw chunks inside the continuous aggregates' refresh windows (up to 4 days back) must not
    // be dropped: a refresh over a dropped range would erase those roll-ups.
    anyhow::ensure!(
        retention.raw_days >= MIN_TIMESCALE_RAW_DAYS,
        "retention_raw_days must be at least {MIN_TIMESCALE_RAW_DAYS} with TimescaleDB (its roll-ups are \
         refreshed over the last 4 days)"
    );
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('crosscheck retention policies'))")
        .execute(&mut *tx)
        .await?;
    for (relation, days) in [
        ("probe_results", retention.raw_days),
        ("rollup_hourly", retention.rollup_days),
        ("rollup_daily", retention.rollup_days),
    ] {
        sqlx::query("SELECT remove_retention_policy($1::regclass, if_exists => true)")
            .bind(relation)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("removing the retention policy of {relation}"))?;
        sqlx::query("SELECT add_retention_policy($1::regclass, drop_after => make_interval(days => $2))")
            .bind(relation)
            .bind(days as i32)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("adding the retention policy of {relation}"))?;
    }
    tx.commit().await?;
    Ok(())
}

/// The shortest raw retention TimescaleDB mode accepts.
pub const MIN_TIMESCALE_RAW_DAYS: u32 = 7;
