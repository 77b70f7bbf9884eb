//! The control plane's Prometheus metrics. One struct of cheap-to-clone handles, registered
//! once at start and passed to the components that update them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub http_requests: Family<HttpLabels, Counter>,
    /// Changes from the change log applied to Redis by this replica.
    pub config_published: Counter,
    /// Changes another replica had already applied when this one tried.
    pub config_publish_skipped: Counter,
    pub config_publish_errors: Family<ReasonLabels, Counter>,
    /// Full rebuilds of the Redis hash from Postgres, by reason.
    pub config_rebuilds: Family<ReasonLabels, Counter>,
    /// The config version Redis was last seen to hold.
    pub config_version_published: Gauge,
    /// Change-log rows not yet in Redis, as of the last check.
    pub config_backlog: Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("control_plane");
        r.register("http_requests", "HTTP requests by route and status", self.http_requests.clone());
        r.register("config_published", "Config changes applied to Redis", self.config_published.clone());
        r.register(
            "config_publish_skipped",
            "Config changes already applied by another replica",
            self.config_publish_skipped.clone(),
        );
        r.register(
            "config_publish_errors",
            "Failed publish attempts by reason",
            self.config_publish_errors.clone(),
        );
        r.register(
            "config_rebuilds",
            "Full rebuilds of the Redis config hash by reason",
            self.config_rebuilds.clone(),
        );
        r.register(
            "config_version_published",
            "Config version held by Redis when last checked",
            self.config_version_published.clone(),
        );
        r.register(
            "config_backlog",
            "Change-log entries not yet applied to Redis",
            self.config_backlog.clone(),
        );
    }

    pub fn publish_error(&self, reason: &str) {
        self.config_publish_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn rebuild(&self, reason: &str) {
        self.config_rebuilds.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}
