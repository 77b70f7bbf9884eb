//! The agent's Prometheus metrics: cheap-to-clone handles registered once at start.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Schedule lag buckets, in seconds: fine below 100 ms where a healthy agent lives.
const LAG_BUCKETS: [f64; 14] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug)]
pub struct Metrics {
    pub catalog_domains: Gauge,
    pub catalog_version: Gauge,
    /// Single-domain updates applied from notifications.
    pub catalog_updates: Counter,
    pub catalog_resyncs: Family<ReasonLabels, Counter>,
    pub catalog_errors: Family<ReasonLabels, Counter>,
    pub redis_reconnects: Counter,
    /// 1 while the agent's Redis connections are up.
    pub redis_up: Gauge,
    /// Probes finished, by outcome (`ok` or the error kind).
    pub probes: Family<OutcomeLabels, Counter>,
    /// Actual start minus planned start of scheduled probes.
    pub schedule_lag: Histogram,
    pub probes_in_flight: Gauge,
    /// Times a due probe found every probe slot busy.
    pub scheduler_saturated: Counter,
    /// Schedule slots skipped because the agent fell more than an interval behind.
    pub schedule_skipped: Counter,
    pub scheduled_domains: Gauge,
    pub on_demand_probes: Counter,
    /// Results dropped because the result queue was full.
    pub results_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            catalog_domains: Gauge::default(),
            catalog_version: Gauge::default(),
            catalog_updates: Counter::default(),
            catalog_resyncs: Family::default(),
            catalog_errors: Family::default(),
            redis_reconnects: Counter::default(),
            redis_up: Gauge::default(),
            probes: Family::default(),
            schedule_lag: Histogram::new(LAG_BUCKETS),
            probes_in_flight: Gauge::default(),
            scheduler_saturated: Counter::default(),
            schedule_skipped: Counter::default(),
            scheduled_domains: Gauge::default(),
            on_demand_probes: Counter::default(),
            results_dropped: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("probe_agent");
        r.register("catalog_domains", "Domains in this agent's catalog", self.catalog_domains.clone());
        r.register("catalog_version", "Config version of this agent's catalog", self.catalog_version.clone());
        r.register("catalog_updates", "Single-domain catalog updates applied", self.catalog_updates.clone());
        r.register("catalog_resyncs", "Full catalog reloads by reason", self.catalog_resyncs.clone());
        r.register("catalog_errors", "Catalog sync failures by reason", self.catalog_errors.clone());
        r.register("redis_reconnects", "Reconnections to Redis", self.redis_reconnects.clone());
        r.register("redis_up", "Whether the Redis connection is up", self.redis_up.clone());
        r.register("probes", "Probes finished by outcome", self.probes.clone());
        r.register(
            "schedule_lag_seconds",
            "Actual minus planned start of scheduled probes",
            self.schedule_lag.clone(),
        );
        r.register("probes_in_flight", "Probes running now", self.probes_in_flight.clone());
        r.register(
            "scheduler_saturated",
            "Due probes that found every slot busy",
            self.scheduler_saturated.clone(),
        );
        r.register(
            "schedule_skipped",
            "Schedule slots skipped after falling behind",
            self.schedule_skipped.clone(),
        );
        r.register("scheduled_domains", "Domains on this agent's schedule", self.scheduled_domains.clone());
        r.register(
            "on_demand_probes",
            "Probes requested outside the schedule",
            self.on_demand_probes.clone(),
        );
        r.register(
            "results_dropped",
            "Results dropped because the queue was full",
            self.results_dropped.clone(),
        );
    }

    pub fn probe(&self, outcome: &str) {
        self.probes.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn resync(&self, reason: &str) {
        self.catalog_resyncs.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn error(&self, reason: &str) {
        self.catalog_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}
