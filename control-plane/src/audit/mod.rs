//! The audit log: who changed what, when and from where.
//!
//! - `diff.rs`: the changed fields of a resource's view, before and after, secrets redacted
//!   (pure).
//! - `store.rs`: appending rows, the filtered read of `GET /v1/audit`, pruning by age.
//! - this file: [`Retention`], the periodic deletion of rows older than
//!   `audit_retention_days`, and the metrics of both.
//!
//! The rows are written by the API's route layers (`api/audit.rs`), after each write's handler.

pub mod diff;
pub mod store;

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use store::Via;

/// Label of [`AuditMetrics::rows`] and [`AuditMetrics::failures`]: `api` or `console`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabels {
    pub via: &'static str,
}

/// Label of [`AuditMetrics::quota_refusals`]: `max_domains`, `min_interval_s`, `max_channels`,
/// `requests_per_minute`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub quota: &'static str,
}

/// The audit log's and the tenant quotas' counters. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AuditMetrics {
    /// Audit rows appended, by where the write came in.
    pub rows: Family<ViaLabels, Counter>,
    /// Writes whose audit row could not be appended (the write itself stands).
    pub failures: Family<ViaLabels, Counter>,
    /// Rows deleted past retention.
    pub pruned: Counter,
    /// Retention runs that failed.
    pub prune_failures: Counter,
    /// Requests refused by a tenant quota, by quota.
    pub quota_refusals: Family<QuotaLabels, Counter>,
}

impl AuditMetrics {
    /// Registers under the control plane's prefix (`control_plane_audit_rows_total`, …).
    pub fn register(&self, r: &mut Registry) {
        r.register("audit_rows", "Audit log rows appended, by where the write came in", self.rows.clone());
        r.register(
            "audit_failures",
            "Writes whose audit row could not be appended (the write stands)",
            self.failures.clone(),
        );
        r.register("audit_pruned", "Audit log rows deleted past audit_retention_days", self.pruned.clone());
        r.register("audit_prune_failures", "Audit retention runs that failed", self.prune_failures.clone());
        r.register(
            "quota_refusals",
            "Requests refused by a tenant quota, by quota",
            self.quota_refusals.clone(),
        );
    }

    pub fn appended(&self, via: Via) {
        self.rows.get_or_create(&ViaLabels { via: via.as_str() }).inc();
    }

    pub fn append_failed(&self, via: Via) {
        self.failures.get_or_create(&ViaLabels { via: via.as_str() }).inc();
    }

    /// `quota` is one of the four quota names (a closed set: the callers pass constants).
    pub fn quota_refused(&self, quota: &'static str) {
        self.quota_refusals.get_or_create(&QuotaLabels { quota }).inc();
    }
}

/// How often each replica deletes expired rows.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// Deletes audit rows older than the retention, every hour on every replica (an advisory lock
/// lets one replica at a time do it; the others find nothing or skip). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Retention {
    pool: PgPool,
    days: u32,
    metrics: AuditMetrics,
}

impl Retention {
    pub fn new(pool: PgPool, days: u32, metrics: AuditMetrics) -> Self {
        Self { pool, days, metrics }
    }

    /// Deletes the rows written more than `audit_retention_days` before `now`; how many.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let cutoff = now - chrono::Duration::days(i64::from(self.days));
        let deleted = store::prune(&self.pool, cutoff).await.inspect_err(|_| {
            self.metrics.prune_failures.inc();
        })?;
        self.metrics.pruned.inc_by(deleted);
        if deleted > 0 {
            tracing::info!(deleted, %cutoff, "audit rows past retention deleted");
        }
        Ok(deleted)
    }

    /// Runs [`Retention::step`] now and every hour until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {
                    if let Err(error) = self.step(Utc::now()).await {
                        tracing::error!(error = %shared::error::Chain(&error), "audit retention failed");
                    }
                }
            }
        }
    }
}
