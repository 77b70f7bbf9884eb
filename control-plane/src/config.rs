//! The control plane's configuration: defaults, then `crosscheck.toml` (or `--config`), then
//! `CROSSCHECK_*` environment variables. Parsed and validated completely before anything binds.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::telemetry::LogFormat;

/// Environment variables for control-plane settings (`CROSSCHECK_DATABASE_URL`, …); the
/// agent's and the benchmarks' variables share the prefix and are left alone.
pub const ENV: shared::config::EnvSource =
    shared::config::EnvSource { prefix: "CROSSCHECK_", exclude: &["agent_", "bench_"] };

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP listener (REST API under `/v1`, plus `/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// The transactional PostgreSQL database (source of truth).
    pub database_url: String,
    /// Maximum connections in the transactional database pool.
    pub database_max_connections: u32,
    /// Redis, where the agent-facing configuration is published (`redis://` or `rediss://`).
    pub redis_url: String,
    /// Prefix of every Redis key and channel of this deployment.
    pub redis_prefix: String,
    /// Regions agents run in. Seeded into the database at start (existing ones are kept).
    pub regions: Vec<String>,
    /// Allow domains whose URL host is a literal private, loopback or link-local address.
    pub allow_private_targets: bool,
    /// Smallest accepted probe interval, in seconds.
    pub min_interval_s: u32,
    /// Largest accepted probe interval, in seconds.
    pub max_interval_s: u32,
    /// Largest accepted probe timeout, in milliseconds.
    pub max_timeout_ms: u32,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How often the reconciler compares Redis with Postgres, in seconds.
    pub reconcile_interval_s: u64,
    /// Fallback interval at which the publisher looks for unpublished changes even without a
    /// wake-up, in milliseconds.
    pub publish_poll_ms: u64,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "postgres://postgres@127.0.0.1:5432/crosscheck".into(),
            database_max_connections: 10,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "crosscheck".into(),
            regions: vec!["ams".into(), "iad".into(), "sin".into()],
            allow_private_targets: false,
            min_interval_s: 10,
            max_interval_s: 86_400,
            max_timeout_ms: 60_000,
            max_body_bytes: 64 * 1024,
            reconcile_interval_s: 30,
            publish_poll_ms: 2_000,
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Checks what serde cannot: ranges and relationships between keys.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_interval_s == 0 {
            return Err("min_interval_s must be at least 1".into());
        }
        if self.min_interval_s > self.max_interval_s {
            return Err("min_interval_s must not exceed max_interval_s".into());
        }
        if self.max_timeout_ms < 100 {
            return Err("max_timeout_ms must be at least 100".into());
        }
        if self.database_max_connections < 2 {
            return Err("database_max_connections must be at least 2".into());
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err("redis_prefix must be non-empty without whitespace".into());
        }
        for region in &self.regions {
            crate::regions::RegionName::parse(region).map_err(|e| format!("regions: {e}"))?;
        }
        if self.reconcile_interval_s == 0 || self.publish_poll_ms == 0 {
            return Err("reconcile_interval_s and publish_poll_ms must be positive".into());
        }
        Ok(())
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile_interval_s)
    }

    pub fn publish_poll(&self) -> Duration {
        Duration::from_millis(self.publish_poll_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn inverted_interval_bounds_are_refused() {
        let cfg = Config { min_interval_s: 100, max_interval_s: 10, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("min_interval_s"));
    }

    #[test]
    fn bad_region_name_is_refused() {
        let cfg = Config { regions: vec!["Not A Region".into()], ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("regions"));
    }
}
