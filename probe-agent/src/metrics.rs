//! The agent's Prometheus metrics: cheap-to-clone handles registered once at start.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
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
    }

    pub fn resync(&self, reason: &str) {
        self.catalog_resyncs.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn error(&self, reason: &str) {
        self.catalog_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}
