//! Metrics of the time-series storage, registered under `control_plane_timeseries_*`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use prometheus_client::encoding::EncodeLabelSet;

use crate::metrics::ReasonLabels;

/// The `kind` label of the job gauges: one of [`super::jobs::KINDS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobKindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug)]
pub struct TimeseriesMetrics {
    /// Batches stored (first time seen).
    pub batches_stored: Counter,
    /// Results stored.
    pub rows_stored: Counter,
    /// Batches acknowledged as already stored.
    pub duplicates: Counter,
    /// Failures by kind: `invalid`, `queue_full`, `unavailable`, `connect`, `write`, `timeout`,
    /// `refresh`, `maintenance`, `late_refresh`, `job_stats`.
    pub errors: Family<ReasonLabels, Counter>,
    /// Batches waiting for a writer.
    pub queue_depth: Gauge,
    /// Seconds from BEGIN to COMMIT of one group-commit transaction.
    pub commit_seconds: Histogram,
    /// Open writer connections to the time-series database.
    pub write_connections: Gauge,
    /// Hours re-rolled by the plain-mode refresher.
    pub hours_rolled_up: Counter,
    /// Plain mode: queued results added to the roll-ups.
    pub results_rolled_up: Counter,
    /// Plain mode: queued results older than the roll-up retention, discarded.
    pub results_discarded: Counter,
    /// Raw partitions dropped by retention (plain mode).
    pub partitions_dropped: Counter,
    /// TimescaleDB mode: results stored older than the refresh policies reach (noted by the
    /// writers for a refresh).
    pub late_results_noted: Counter,
    /// TimescaleDB mode: `refresh_continuous_aggregate` calls over late results.
    pub late_refreshes: Counter,
    /// TimescaleDB mode: late results whose buckets were refreshed.
    pub late_results_refreshed: Counter,
    /// TimescaleDB mode: late results older than the raw retention, left out of the roll-ups.
    pub late_results_skipped: Counter,
    /// TimescaleDB mode: background jobs whose last run failed, by kind.
    pub jobs_failed: Family<JobKindLabels, Gauge>,
    /// TimescaleDB mode: scheduled background jobs whose start is overdue, by kind.
    pub jobs_overdue: Family<JobKindLabels, Gauge>,
}

impl Default for TimeseriesMetrics {
    fn default() -> Self {
        Self {
            batches_stored: Counter::default(),
            rows_stored: Counter::default(),
            duplicates: Counter::default(),
            errors: Family::default(),
            queue_depth: Gauge::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            write_connections: Gauge::default(),
            hours_rolled_up: Counter::default(),
            results_rolled_up: Counter::default(),
            results_discarded: Counter::default(),
            partitions_dropped: Counter::default(),
            late_results_noted: Counter::default(),
            late_refreshes: Counter::default(),
            late_results_refreshed: Counter::default(),
            late_results_skipped: Counter::default(),
            jobs_failed: Family::default(),
            jobs_overdue: Family::default(),
        }
    }
}

impl TimeseriesMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("control_plane_timeseries");
        r.register("batches_stored", "Result batches stored", self.batches_stored.clone());
        r.register("rows_stored", "Probe results stored", self.rows_stored.clone());
        r.register("duplicate_batches", "Batches acknowledged as already stored", self.duplicates.clone());
        r.register("errors", "Time-series failures by kind", self.errors.clone());
        r.register("queue_depth", "Batches waiting for a time-series writer", self.queue_depth.clone());
        r.register("commit_seconds", "Duration of one group-commit transaction", self.commit_seconds.clone());
        r.register(
            "write_connections",
            "Open writer connections to the time-series database",
            self.write_connections.clone(),
        );
        r.register("hours_rolled_up", "Hours recomputed into the roll-ups", self.hours_rolled_up.clone());
        r.register(
            "results_rolled_up",
            "Queued results added to the roll-ups (plain mode)",
            self.results_rolled_up.clone(),
        );
        r.register(
            "results_discarded",
            "Queued results older than the roll-up retention, discarded (plain mode)",
            self.results_discarded.clone(),
        );
        r.register(
            "partitions_dropped",
            "Raw partitions dropped by retention",
            self.partitions_dropped.clone(),
        );
        r.register(
            "late_results_noted",
            "Results stored older than the continuous aggregates' refresh policies reach",
            self.late_results_noted.clone(),
        );
        r.register(
            "late_refreshes",
            "Continuous-aggregate refreshes over late results",
            self.late_refreshes.clone(),
        );
        r.register(
            "late_results_refreshed",
            "Late results whose roll-up buckets were refreshed",
            self.late_results_refreshed.clone(),
        );
        r.register(
            "late_results_skipped",
            "Late results older than the raw retention, left out of the roll-ups",
            self.late_results_skipped.clone(),
        );
        r.register(
            "jobs_failed",
            "TimescaleDB background jobs whose last run failed",
            self.jobs_failed.clone(),
        );
        r.register(
            "jobs_overdue",
            "Scheduled TimescaleDB background jobs whose start is overdue",
            self.jobs_overdue.clone(),
        );
    }

    /// Sets the job gauges from an evaluation (every kind, zero included).
    pub fn set_job_health(&self, health: &super::jobs::JobHealth) {
        for (kind, h) in &health.kinds {
            self.jobs_failed.get_or_create(&JobKindLabels { kind }).set(i64::from(h.failed));
            self.jobs_overdue.get_or_create(&JobKindLabels { kind }).set(i64::from(h.overdue));
        }
    }

    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}
