//! Time-series storage of probe results in a database of its own (`timeseries_url`):
//! TimescaleDB when the extension is there, partitioned plain PostgreSQL otherwise, with the
//! same tables, roll-ups and read queries in both (see `migrations/timeseries`).
//!
//! - [`Timeseries::ingest`]: validate a batch, queue it (bounded, `ingest_queue_capacity`,
//!   waiting at most `ingest_wait_ms`), store it through one of `timeseries_write_connections`
//!   group-commit writers ([`writer`]; in plain mode its roll-up inputs are queued in the same
//!   transaction), answer after COMMIT. Idempotent per batch id.
//! - [`Timeseries::refresh_rollups`] and [`Timeseries::maintain`] ([`rollup`]): plain mode:
//!   the queued results added to the roll-ups in bulk, hours an older control plane marked
//!   re-aggregated, partitions and retention;
//!   TimescaleDB mode: refreshes of the continuous aggregates over late results ([`late`]);
//!   [`Timeseries::run_maintenance`] runs both periodically, and in TimescaleDB mode also
//!   [`Timeseries::check_jobs`] ([`jobs`]: failed and overdue background jobs).
//! - Start-up ([`migrate_database`], [`Timeseries::connect`]): the migrations (the storage mode
//!   is decided by the first one with checks any role may run), the preload list logged when
//!   readable ([`preload`]), and in TimescaleDB mode the policies reconciled with the
//!   configuration, never recreated ([`policies`]).
//! - [`Timeseries::uptime`], [`Timeseries::latency`], [`Timeseries::recent_results`],
//!   [`Timeseries::certificate`] ([`read`]): through a pool of `timeseries_read_connections`.
//! - [`buckets`]: the fixed log-scale latency buckets and percentiles.

pub mod buckets;
pub mod jobs;
pub mod late;
mod metrics;
mod model;
pub mod policies;
pub mod preload;
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
pub use policies::MIN_TIMESCALE_RAW_DAYS;
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
    /// The last evaluation of TimescaleDB's background jobs, for `/readyz` (written by the
    /// maintenance task, read by readiness checks; held only to copy or replace it).
    job_health: std::sync::Mutex<Option<jobs::JobHealth>>,
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

/// The SHA-384 checksum of `0001_probe_results.sql` as first released, when it decided the
/// storage mode by reading `shared_preload_libraries` (which only privileged roles may read).
/// The schema it built is the same; only its check changed, so a database migrated by it is
/// given the current checksum instead of failing the migration as modified.
const RELEASED_0001_CHECKSUM: &str =
    "284e4615c9f3a0485dcc7379b4254531a5bdd1985db74bff0df586986863a7caa674c6889fb72dead386b98f8e59971a";

/// Gives an applied 0001 migration of the first release the current checksum (see
/// [`RELEASED_0001_CHECKSUM`]); nothing on a new database or one already up to date.
async fn accept_released_checksums(pool: &PgPool) -> anyhow::Result<()> {
    let Some(current) = MIGRATOR.iter().find(|m| m.version == 1) else { return Ok(()) };
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .context("looking for the migration history")?;
    if !exists {
        return Ok(());
    }
    let updated = sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1 AND checksum = decode($2, 'hex')",
    )
    .bind(current.checksum.as_ref())
    .bind(RELEASED_0001_CHECKSUM)
    .execute(pool)
    .await
    .context("updating the checksum of the time-series migration 0001")?;
    if updated.rows_affected() > 0 {
        tracing::info!(
            "time-series migration 0001: recorded the checksum of its any-role storage-mode check"
        );
    }
    Ok(())
}

/// What the server says about TimescaleDB, for the log: whether the extension is available and
/// installed, and `shared_preload_libraries` parsed when this role may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimescaleFacts {
    /// `pg_available_extensions` lists it.
    pub available: bool,
    /// Installed in this database.
    pub installed: bool,
    /// The loader's setting is defined (the library is preloaded); any role may see this.
    pub loader_setting: bool,
    /// The parsed preload list; `None` when this role may not read it, `Some(Err)` when it
    /// could not be parsed.
    pub preload: Option<Result<preload::TimescalePreload, preload::PreloadError>>,
}

impl TimescaleFacts {
    /// `available=yes installed=no loader=yes preload=loader`-style summary.
    pub fn describe(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        let preload = match &self.preload {
            None => "unreadable".to_owned(),
            Some(Ok(p)) => p.describe(),
            Some(Err(e)) => e.to_string(),
        };
        format!(
            "available={} installed={} loader_setting={} preload={preload}",
            yn(self.available),
            yn(self.installed),
            yn(self.loader_setting)
        )
    }
}

/// Reads [`TimescaleFacts`] with queries any role may run (the preload list only when the role
/// is a superuser or has the privileges of pg_read_all_settings).
pub async fn timescale_facts(pool: &PgPool) -> Result<TimescaleFacts, sqlx::Error> {
    let (available, installed, loader_setting, list): (bool, bool, bool, Option<String>) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),                 EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),                 EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.max_background_workers'),                 CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE')                      THEN current_setting('shared_preload_libraries') END",
    )
    .fetch_one(pool)
    .await?;
    Ok(TimescaleFacts {
        available,
        installed,
        loader_setting,
        preload: list.map(|l| preload::timescaledb(&l)),
    })
}

/// Migrates the time-series database, logs what the server says about TimescaleDB, and applies
/// the settings: TimescaleDB policies reconciled, or plain-mode partitions created ahead. The
/// storage mode the migration chose.
async fn prepare(pool: &PgPool, config: &Config) -> anyhow::Result<StorageMode> {
    accept_released_checksums(pool).await?;
    MIGRATOR.run(pool).await.context("migrating the time-series database")?;
    let mode = match sqlx::query_scalar::<_, String>("SELECT mode FROM storage_meta").fetch_one(pool).await? {
        m if m == "timescale" => StorageMode::Timescale,
        _ => StorageMode::Plain,
    };
    match timescale_facts(pool).await {
        Ok(facts) => {
            if matches!(facts.preload, Some(Ok(preload::TimescalePreload::Versioned(_)))) {
                tracing::warn!(
                    timescaledb = %facts.describe(),
                    "shared_preload_libraries names a versioned TimescaleDB library, not its loader `timescaledb`"
                );
            }
            tracing::info!(mode = mode.as_str(), timescaledb = %facts.describe(), "time-series storage mode");
        }
        Err(error) => tracing::warn!(%error, "cannot read the TimescaleDB facts for the log"),
    }
    let retention = retention(config);
    match mode {
        StorageMode::Timescale => {
            policies::reconcile(pool, retention).await.context("reconciling the TimescaleDB policies")?;
        }
        StorageMode::Plain => {
            rollup::maintain(pool, mode, retention, Utc::now()).await.context("creating partitions")?;
        }
    }
    Ok(mode)
}

/// What `control-plane migrate` does to the time-series database: connect, migrate, apply the
/// settings (see [`Timeseries::connect`]), disconnect. The storage mode in use.
pub async fn migrate_database(config: &Config) -> anyhow::Result<StorageMode> {
    let pool = read_pool(config).await?;
    let mode = prepare(&pool, config).await;
    pool.close().await;
    mode
}

impl Timeseries {
    /// Connects the read pool, migrates, reads the storage mode, reconciles the policies
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
                job_health: std::sync::Mutex::new(None),
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

    /// Plain mode: adds the queued results to the roll-ups and recomputes the hours an older
    /// control plane marked in `rollup_dirty`, and their days ([`rollup::refresh`]; a pass
    /// another replica is running is skipped). TimescaleDB mode: the refresh policies do the recent buckets, and this refreshes
    /// the continuous aggregates over results stored too late for them ([`late`]).
    pub async fn refresh_rollups(&self) -> anyhow::Result<RefreshReport> {
        if self.inner.mode == StorageMode::Timescale {
            self.refresh_late(Utc::now()).await?;
            return Ok(RefreshReport::default());
        }
        let retention = self.inner.retention;
        let m = &self.inner.metrics;
        let report = rollup::refresh(&self.inner.pool, Utc::now(), retention.raw_days, retention.rollup_days)
            .await
            .inspect_err(|_| m.error("refresh"))
            .context("adding the queued results to the roll-ups")?;
        m.hours_rolled_up.inc_by(report.hours.len() as u64);
        m.results_rolled_up.inc_by(report.results_added);
        m.results_discarded.inc_by(report.results_discarded);
        if report.results_discarded > 0 {
            tracing::warn!(
                results = report.results_discarded,
                "queued results older than the roll-up retention were discarded"
            );
        }
        tracing::debug!(
            results = report.results_added,
            hourly_rows = report.hourly_rows,
            daily_rows = report.daily_rows,
            recomputed_hours = report.hours.len(),
            skipped = report.skipped,
            "roll-up refresh"
        );
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

    /// TimescaleDB mode: one round of [`late::refresh`] at `now`, counted in the metrics.
    pub async fn refresh_late(&self, now: DateTime<Utc>) -> anyhow::Result<late::LateReport> {
        let m = &self.inner.metrics;
        let report = late::refresh(&self.inner.pool, now, self.inner.retention.raw_days)
            .await
            .inspect_err(|_| m.error("late_refresh"))
            .context("refreshing the continuous aggregates over late results")?;
        m.late_refreshes.inc_by(report.plan.windows.len() as u64);
        m.late_results_refreshed.inc_by(report.results);
        m.late_results_skipped.inc_by(report.plan.skipped_results);
        if report.plan.skipped_results > 0 {
            tracing::warn!(
                results = report.plan.skipped_results,
                "late results older than the raw retention were left out of the roll-ups"
            );
        }
        for window in &report.plan.windows {
            tracing::info!(view = window.view, start = %window.start, end = %window.end, "refreshed a continuous aggregate over late results");
        }
        Ok(report)
    }

    /// TimescaleDB mode: reads the background jobs' statistics, publishes their evaluation
    /// (gauges, the `/readyz` detail) and logs each unhealthy job; `None` in plain mode.
    pub async fn check_jobs(&self, now: DateTime<Utc>) -> anyhow::Result<Option<jobs::JobHealth>> {
        if self.inner.mode != StorageMode::Timescale {
            return Ok(None);
        }
        let m = &self.inner.metrics;
        let stats = jobs::read(&self.inner.pool)
            .await
            .inspect_err(|_| m.error("job_stats"))
            .context("reading timescaledb_information.job_stats")?;
        let health = jobs::evaluate(&stats, now);
        m.set_job_health(&health);
        for problem in &health.problems {
            tracing::error!(%problem, "TimescaleDB background job unhealthy");
        }
        if let Ok(mut slot) = self.inner.job_health.lock() {
            *slot = Some(health.clone());
        }
        Ok(Some(health))
    }

    /// The `/readyz` detail line of the last [`Timeseries::check_jobs`]; `None` in plain mode
    /// or before the first check.
    pub fn jobs_detail(&self) -> Option<String> {
        self.inner.job_health.lock().ok()?.as_ref().map(jobs::JobHealth::detail)
    }

    /// Refreshes every `rollup_refresh_interval_s` and maintains (and, in TimescaleDB mode,
    /// checks the background jobs) every `maintenance_interval_s` until `shutdown`, then stops
    /// the writers after they stored what is queued.
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
                    if let Err(error) = self.check_jobs(Utc::now()).await {
                        tracing::error!(error = %shared::error::Chain(&*error), "checking the TimescaleDB jobs failed");
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
