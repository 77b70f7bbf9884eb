//! The agent's configuration: defaults, then a TOML file (`--config`), then
//! `CROSSCHECK_AGENT_*` environment variables. Parsed and validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::telemetry::LogFormat;

/// Environment variables for agent settings (`CROSSCHECK_AGENT_REGION`, …).
pub const ENV: shared::config::EnvSource =
    shared::config::EnvSource { prefix: "CROSSCHECK_AGENT_", exclude: &[] };

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The region this agent probes from.
    pub region: String,
    /// A name for this agent instance, unique within its region (defaults to the host name).
    pub agent_id: String,
    /// Redis holding the published configuration (`redis://` or `rediss://`); a read-only
    /// user is enough.
    pub redis_url: String,
    /// Prefix of the deployment's Redis keys (must match the control plane's `redis_prefix`).
    pub redis_prefix: String,
    /// Address of the operational HTTP listener (`/metrics`, `/healthz`, `/readyz`, `/debug/*`).
    pub listen: SocketAddr,
    /// How often the agent compares its catalog version with Redis's, in seconds.
    pub version_check_interval_s: u64,
    /// Backoff bounds for reconnecting to Redis, in milliseconds.
    pub redis_min_backoff_ms: u64,
    pub redis_max_backoff_ms: u64,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            region: "local".into(),
            agent_id: std::env::var("HOSTNAME").unwrap_or_else(|_| "agent-1".into()),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "crosscheck".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            version_check_interval_s: 10,
            redis_min_backoff_ms: 100,
            redis_max_backoff_ms: 10_000,
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        let region_ok = !self.region.is_empty()
            && self.region.len() <= 32
            && self.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(format!("region {:?} must be 1-32 lowercase letters, digits or dashes", self.region));
        }
        if self.agent_id.is_empty() {
            return Err("agent_id must not be empty".into());
        }
        if self.version_check_interval_s == 0 {
            return Err("version_check_interval_s must be positive".into());
        }
        if self.redis_min_backoff_ms == 0 || self.redis_min_backoff_ms > self.redis_max_backoff_ms {
            return Err("redis_min_backoff_ms must be positive and not above redis_max_backoff_ms".into());
        }
        Ok(())
    }

    pub fn version_check_interval(&self) -> Duration {
        Duration::from_secs(self.version_check_interval_s)
    }

    pub fn redis_options(&self) -> shared::redis::RedisOptions {
        shared::redis::RedisOptions {
            min_backoff: Duration::from_millis(self.redis_min_backoff_ms),
            max_backoff: Duration::from_millis(self.redis_max_backoff_ms),
            ..Default::default()
        }
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
    fn bad_region_is_refused() {
        let cfg = Config { region: "EU West".into(), ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("region"));
    }
}
