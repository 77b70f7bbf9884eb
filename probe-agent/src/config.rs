//! The agent's configuration: defaults, then a TOML file (`--config`), then
//! `CROSSCHECK_AGENT_*` environment variables. Parsed and validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

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
    /// Most probes running at once.
    pub max_in_flight: usize,
    /// Results waiting to be sent before new ones are dropped (and counted).
    pub result_queue_capacity: usize,
    /// Networks that may be probed although they are private, loopback, link-local, … (the
    /// SSRF guard's allow-list). Empty by default; `["127.0.0.0/8"]` for local tests.
    pub allow_private: Vec<IpNet>,
    /// Per-phase limits of a probe, in milliseconds (each also capped by the domain's timeout).
    pub dns_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub tls_timeout_ms: u64,
    /// Largest response body read while looking for a keyword.
    pub max_body_bytes: u64,
    /// Redirects followed before a probe fails with `redirect`.
    pub max_redirects: u32,
    /// A PEM file of extra root certificates to trust besides the web PKI (private CAs).
    pub extra_roots_pem: Option<PathBuf>,
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
            max_in_flight: 256,
            result_queue_capacity: 10_000,
            allow_private: Vec::new(),
            dns_timeout_ms: 5_000,
            connect_timeout_ms: 10_000,
            tls_timeout_ms: 10_000,
            max_body_bytes: 1024 * 1024,
            max_redirects: 5,
            extra_roots_pem: None,
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
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            return Err("max_in_flight must be between 1 and 100000".into());
        }
        if self.result_queue_capacity == 0 {
            return Err("result_queue_capacity must be positive".into());
        }
        if self.dns_timeout_ms == 0 || self.connect_timeout_ms == 0 || self.tls_timeout_ms == 0 {
            return Err("dns_timeout_ms, connect_timeout_ms and tls_timeout_ms must be positive".into());
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be positive".into());
        }
        Ok(())
    }

    /// The probe settings this configuration describes; reads `extra_roots_pem`.
    pub fn probe_settings(&self) -> Result<crate::probe::ProbeSettings, String> {
        let extra_roots = match &self.extra_roots_pem {
            None => Vec::new(),
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let roots = rustls_pki_types::CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("extra_roots_pem {}: {e}", path.display()))?;
                if roots.is_empty() {
                    return Err(format!("extra_roots_pem {}: no certificate found", path.display()));
                }
                roots
            }
        };
        Ok(crate::probe::ProbeSettings {
            dns_timeout: Duration::from_millis(self.dns_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            tls_timeout: Duration::from_millis(self.tls_timeout_ms),
            max_body_bytes: self.max_body_bytes,
            max_redirects: self.max_redirects,
            policy: shared::netguard::TargetPolicy::allowing(self.allow_private.clone()),
            extra_roots,
            ..crate::probe::ProbeSettings::default()
        })
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
    fn allow_list_parses_from_toml_and_defaults_to_empty() {
        assert!(Config::default().allow_private.is_empty());
        let cfg: Config = toml_config("allow_private = [\"127.0.0.0/8\", \"::1/128\"]");
        assert_eq!(cfg.allow_private.len(), 2);
        let settings = cfg.probe_settings().unwrap();
        assert!(settings.policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(settings.policy.check("10.0.0.1".parse().unwrap()).is_err());
    }

    fn toml_config(text: &str) -> Config {
        use figment::providers::{Format, Serialized, Toml};
        figment::Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .unwrap()
    }

    #[test]
    fn missing_extra_roots_file_is_an_error() {
        let cfg = Config { extra_roots_pem: Some("/nonexistent/roots.pem".into()), ..Config::default() };
        assert!(cfg.probe_settings().unwrap_err().contains("extra_roots_pem"));
    }

    #[test]
    fn bad_region_is_refused() {
        let cfg = Config { region: "EU West".into(), ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("region"));
    }
}
