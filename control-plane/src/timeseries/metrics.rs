//! Metrics of the time-series storage, registered under `control_plane_timeseries_*`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::metrics::ReasonLabels;

#[derive(Clone, Debug)]
pub struct TimeseriesMetrics {
    /// Batches stored (first time seen).
    pub batches_stored: Counter,
    /// Results stored.
    pub rows_stored: Counter,
    /// Batches acknowledged as already stored.
    pub duplicates: Counter,
    /// Failures by kind: `invalid`, `queue_full`, `unavailable`, `connect`, `write`, `timeout`,
    /// `refresh`, `maintenance`.
    pub errors: Family<ReasonLabels, Counter>,
    /// Batches waiting for a writer.
    pub queue_depth: Gauge,
    /// Seconds from BEGIN to COMMIT of one group-commit transaction.
    pub commit_seconds: Histogram,
    /// Open writer connections to the time-series database.
    pub write_connections: Gauge,
    /// Hours re-rolled by the plain-mode refresher.
    pub hours_rolled_up: Counter,
    /// Raw partitions dropped by retention (plain mode).
    pub partitions_dropped: Counter,
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
            partitions_dropped: Counter::default(),
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
            "partitions_dropped",
            "Raw partitions dropped by retention",
            self.partitions_dropped.clone(),
        );
    }

    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}
