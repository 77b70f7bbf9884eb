//! The agent's configuration: defaults, then a TOML file (`--config`), then
//! `CROSSCHECK_AGENT_*` environment variables. Parsed and validated before anything starts.
//!
//! The region defaults to `FLY_REGION` when that variable is set (deployments on Fly.io), else
//! `local`; a region set in the file or as `CROSSCHECK_AGENT_REGION` always wins.
//!
//! With `control_plane_url` set, results are delivered over mutual TLS and the agent's
//! certificate decides who it is: [`Config::adopt_certificate_identity`] refuses a region that
//! differs from the certificate's and adopts the certificate's agent id.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use serde::{Deserialize, Serialize};
use shared::telemetry::LogFormat;

/// Environment variables for agent settings (`CROSSCHECK_AGENT_REGION`, …); the credentials of
/// `probe-agent check` (`CROSSCHECK_AGENT_CHECK_BASIC`, `…_BEARER`) share the prefix and are
/// left alone.
pub const ENV: shared::config::EnvSource =
    shared::config::EnvSource { prefix: "CROSSCHECK_AGENT_", exclude: &["check_"] };

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The region this agent probes from. Defaults to `$FLY_REGION` when set, else `local`. With
    /// delivery configured it must equal the region in the agent's certificate.
    pub region: String,
    /// A name for this agent instance, unique within its region (defaults to the host name): the
    /// agents of a region split its domains by it.
    /// With delivery configured the certificate's agent id is used instead (the control plane
    /// identifies the agent by its certificate); a different value here is logged.
    pub agent_id: String,
    /// Redis holding the published configuration: `redis://host:port`, `rediss://` for TLS, or
    /// `redis-sentinel://sentinel1:26379,sentinel2:26379/0?sentinelServiceName=<name>` to follow
    /// the primary through Redis Sentinel (forms in `shared::redis::normalize_url`). The agent
    /// reads it and writes only its registration among its region's agents
    /// (`<prefix>:agents:<region>`).
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
    /// A probe starting this late behind its due time (or a hand-off to the workers blocked
    /// this long, or a probe ending this long past its timeout) means the agent is saturated:
    /// failures of probes started then are reported as the agent's own trouble, in
    /// milliseconds (see [`crate::scheduler::saturation`]).
    pub saturation_lag_ms: u64,
    /// Results waiting to be sent before new ones are dropped (and counted).
    pub result_queue_capacity: usize,
    /// Networks that may be probed although they are private, loopback, link-local, … (the
    /// SSRF guard's allow-list). Empty by default; `["127.0.0.0/8"]` for local tests.
    pub allow_private: Vec<IpNet>,
    /// Per-phase limits of a probe, in milliseconds (each also capped by the domain's timeout).
    /// `dns_timeout_ms` bounds the whole DNS phase, retries included.
    pub dns_timeout_ms: u64,
    /// Name servers the agent resolves monitored names with (`"ip:port"`, e.g.
    /// `"10.0.0.2:53"` or `"[2001:db8::53]:53"`). Empty: the system's, from
    /// `/etc/resolv.conf`, with the hosts file consulted first. Names are always resolved as
    /// absolute names: the system's search list and `ndots` are never used.
    pub dns_servers: Vec<SocketAddr>,
    /// Limit of one lookup (A and AAAA asked at once), in milliseconds.
    pub dns_query_timeout_ms: u64,
    /// Lookups made for a name at most: a SERVFAIL or a timeout is asked again while attempts
    /// and the DNS phase's time remain.
    pub dns_attempts: u32,
    /// How long a connection attempt to one address runs alone before the next address is
    /// tried as well (RFC 8305's connection attempt delay), in milliseconds.
    pub connect_attempt_delay_ms: u64,
    pub connect_timeout_ms: u64,
    pub tls_timeout_ms: u64,
    /// Largest response body read: decoded bytes when a keyword is checked (so a small
    /// compressed body that expands past it is `body_too_large`), wire bytes otherwise.
    pub max_body_bytes: u64,
    /// Most header fields accepted in a response head (hyper's own default is 100; real
    /// sites send 150 `Set-Cookie` headers). More is an `http` failure naming this key.
    pub max_response_headers: usize,
    /// Most bytes accepted in a response head, status line included; at least 8192. More is
    /// an `http` failure naming this key.
    pub max_header_bytes: usize,
    /// Redirects followed before a probe fails with `redirect`.
    pub max_redirects: u32,
    /// A PEM file of extra root certificates to trust besides the web PKI (private CAs).
    pub extra_roots_pem: Option<PathBuf>,
    /// A file of extra DNSSEC trust anchors for `dns` checks with `dnssec`, besides the root's
    /// keys (private zones, split-horizon views): DNSKEY or DS records in zone-file
    /// presentation format (`dig DNSKEY`, `unbound-anchor`'s `root.key`). Each anchor applies
    /// to names at or below its zone. Read at start; a bad line stops the agent.
    pub dnssec_trust_anchors: Option<PathBuf>,
    /// The control plane's ingest endpoint, e.g. `https://ingest.example.net:7443`. Unset:
    /// delivery is disabled and results are only kept locally (a warning is logged at start).
    pub control_plane_url: Option<String>,
    /// The CA that signed the control plane's server certificate: a PEM file path or the PEM
    /// text itself. Required with `control_plane_url`.
    pub tls_ca: Option<String>,
    /// This agent's client certificate (URI SAN `crosscheck://agents/<region>/<agent-id>`): a
    /// PEM file path or the PEM text. Required with `control_plane_url`.
    pub tls_cert: Option<String>,
    /// The private key of `tls_cert`: a PEM file path or the PEM text. Required with
    /// `control_plane_url`.
    pub tls_key: Option<String>,
    /// The name checked against the control plane's certificate (default: the URL's host).
    pub tls_server_name: Option<String>,
    /// Most results in one batch (at most `shared::proto::MAX_BATCH_RESULTS`).
    pub batch_max_results: usize,
    /// Longest a result waits in the open batch before the batch is sent, in milliseconds.
    pub batch_max_age_ms: u64,
    /// Encoded bytes of unacknowledged batches kept for resending; beyond it the oldest are
    /// dropped and counted. See [`crate::delivery::DEFAULT_BUFFER_MAX_BYTES`] for the sizing.
    pub buffer_max_bytes: usize,
    /// Oldest unacknowledged batch kept, in seconds; older ones are dropped and counted.
    pub buffer_max_age_s: u64,
    /// Batches in flight at once.
    pub send_concurrency: usize,
    /// Limit of one `SendBatch` call, in milliseconds.
    pub request_timeout_ms: u64,
    /// Limit of establishing the connection (TCP and TLS), in milliseconds.
    pub delivery_connect_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval on the control-plane connection, in seconds.
    pub keepalive_interval_s: u64,
    /// Backoff bounds between resends after a failure, in milliseconds (full jitter).
    pub resend_min_backoff_ms: u64,
    pub resend_max_backoff_ms: u64,
    /// How long a graceful shutdown keeps trying to deliver buffered results, in milliseconds.
    pub shutdown_flush_timeout_ms: u64,
    /// A directory of this agent's own where results not yet acknowledged are kept on disk
    /// (the open batch as a journal, closed batches as files), so that a kill, SIGKILL
    /// included, loses none of them: they are sent after the next start. Created if missing;
    /// one agent per directory (a second is refused at start). Unset: kept in memory only (a
    /// graceful stop still flushes them). See [`crate::delivery::spool`].
    pub spool_dir: Option<PathBuf>,
    /// How often what the spool wrote is fsynced to disk, in milliseconds; 0: never. A process
    /// kill loses nothing either way (every write has reached the kernel); this bounds what a
    /// machine crash or power loss can take.
    pub spool_fsync_interval_ms: u64,
    /// Most on-demand (confirmation) probes queued or running at once; requests beyond it are
    /// refused and counted (`outcome="overloaded"`). Also capped at half of `max_in_flight`
    /// (at least 1), so scheduled probes always keep the other half of the probe slots.
    pub max_on_demand_in_flight: usize,
    /// URLs this agent probes to check its own connectivity (the canary self-check). Empty:
    /// no self-check, and batches carry no health.
    pub canaries: Vec<String>,
    /// How often the canaries are probed, in seconds.
    pub canary_interval_s: u64,
    /// Limit of one canary probe, in milliseconds.
    pub canary_timeout_ms: u64,
    /// Canaries that must succeed for the agent to count as healthy (default: a majority).
    pub canary_healthy_min: Option<usize>,
    /// How often this agent renews its registration among its region's agents and reads who
    /// else is live, in milliseconds (100 to 60000). Agents of a region split its domains
    /// between the live ones (see [`crate::membership`]); a newcomer is seen by the others
    /// within this time.
    pub heartbeat_interval_ms: u64,
    /// How long a registration lives without renewal, in milliseconds: an agent that stops
    /// without leaving (killed, cut off from Redis) keeps its domains this long before the
    /// others take them over. At least twice `heartbeat_interval_ms` (one late heartbeat does
    /// not drop a member), at most 600000.
    pub membership_ttl_ms: u64,
}

/// Default `heartbeat_interval_ms`.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// Default `membership_ttl_ms`: three heartbeats.
pub const DEFAULT_MEMBERSHIP_TTL_MS: u64 = 15_000;

/// Default `spool_fsync_interval_ms`.
pub const DEFAULT_SPOOL_FSYNC_INTERVAL_MS: u64 = 1_000;

/// Most canaries an agent may be configured with.
pub const MAX_CANARIES: usize = 32;

/// The region used when none is configured: `$FLY_REGION` when set and not empty.
/// The bounds of `max_response_headers`: hyper allocates room for this many fields per response.
const MAX_RESPONSE_HEADERS: usize = 10_000;
/// The bounds of `max_header_bytes`: hyper's read buffer cannot be smaller than 8 KiB, and a
/// head beyond 16 MiB is not a web page.
const MIN_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;

fn default_region(fly_region: Option<String>) -> String {
    fly_region.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).unwrap_or_else(|| "local".into())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            region: default_region(std::env::var("FLY_REGION").ok()),
            agent_id: std::env::var("HOSTNAME").unwrap_or_else(|_| "agent-1".into()),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "crosscheck".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            version_check_interval_s: 10,
            redis_min_backoff_ms: 100,
            redis_max_backoff_ms: 10_000,
            log_format: LogFormat::Text,
            max_in_flight: 256,
            saturation_lag_ms: crate::scheduler::DEFAULT_SATURATION_LAG_MS,
            result_queue_capacity: 10_000,
            allow_private: Vec::new(),
            dns_timeout_ms: 5_000,
            dns_servers: Vec::new(),
            dns_query_timeout_ms: 2_000,
            dns_attempts: 2,
            connect_attempt_delay_ms: 250,
            connect_timeout_ms: 10_000,
            tls_timeout_ms: 10_000,
            max_body_bytes: 1024 * 1024,
            max_response_headers: 256,
            max_header_bytes: 64 * 1024,
            max_redirects: 5,
            extra_roots_pem: None,
            dnssec_trust_anchors: None,
            control_plane_url: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_server_name: None,
            batch_max_results: 500,
            batch_max_age_ms: 1_000,
            buffer_max_bytes: crate::delivery::DEFAULT_BUFFER_MAX_BYTES,
            buffer_max_age_s: crate::delivery::DEFAULT_BUFFER_MAX_AGE_S,
            send_concurrency: 4,
            request_timeout_ms: 10_000,
            delivery_connect_timeout_ms: 5_000,
            keepalive_interval_s: 20,
            resend_min_backoff_ms: 200,
            resend_max_backoff_ms: 30_000,
            shutdown_flush_timeout_ms: 10_000,
            spool_dir: None,
            spool_fsync_interval_ms: DEFAULT_SPOOL_FSYNC_INTERVAL_MS,
            max_on_demand_in_flight: 64,
            canaries: Vec::new(),
            canary_interval_s: 30,
            canary_timeout_ms: 5_000,
            canary_healthy_min: None,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            membership_ttl_ms: DEFAULT_MEMBERSHIP_TTL_MS,
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
        shared::redis::check_url(&self.redis_url).map_err(|e| format!("redis_url: {e}"))?;
        if self.version_check_interval_s == 0 {
            return Err("version_check_interval_s must be positive".into());
        }
        if self.redis_min_backoff_ms == 0 || self.redis_min_backoff_ms > self.redis_max_backoff_ms {
            return Err("redis_min_backoff_ms must be positive and not above redis_max_backoff_ms".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            return Err("max_in_flight must be between 1 and 100000".into());
        }
        if !(100..=600_000).contains(&self.saturation_lag_ms) {
            return Err("saturation_lag_ms must be between 100 and 600000".into());
        }
        if self.result_queue_capacity == 0 {
            return Err("result_queue_capacity must be positive".into());
        }
        if self.dns_timeout_ms == 0 || self.connect_timeout_ms == 0 || self.tls_timeout_ms == 0 {
            return Err("dns_timeout_ms, connect_timeout_ms and tls_timeout_ms must be positive".into());
        }
        if self.dns_query_timeout_ms == 0 {
            return Err("dns_query_timeout_ms must be positive".into());
        }
        if self.dns_attempts == 0 || self.dns_attempts > 5 {
            return Err("dns_attempts must be between 1 and 5".into());
        }
        if let Some(server) = self.dns_servers.iter().find(|s| s.port() == 0 || s.ip().is_unspecified()) {
            return Err(format!("dns_servers: {server} is not a name server address"));
        }
        if self.connect_attempt_delay_ms < 10 || self.connect_attempt_delay_ms > 10_000 {
            return Err("connect_attempt_delay_ms must be between 10 and 10000".into());
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be positive".into());
        }
        if !(1..=MAX_RESPONSE_HEADERS).contains(&self.max_response_headers) {
            return Err(format!("max_response_headers must be between 1 and {MAX_RESPONSE_HEADERS}"));
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err(format!(
                "max_header_bytes must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"
            ));
        }
        if self.max_on_demand_in_flight == 0 {
            return Err("max_on_demand_in_flight must be positive".into());
        }
        if !(100..=60_000).contains(&self.heartbeat_interval_ms) {
            return Err("heartbeat_interval_ms must be between 100 and 60000".into());
        }
        if self.membership_ttl_ms < 2 * self.heartbeat_interval_ms || self.membership_ttl_ms > 600_000 {
            return Err(format!(
                "membership_ttl_ms must be at least twice heartbeat_interval_ms ({}) and at most 600000",
                2 * self.heartbeat_interval_ms
            ));
        }
        self.validate_canaries()?;
        self.validate_delivery()
    }

    fn validate_canaries(&self) -> Result<(), String> {
        if self.canaries.len() > MAX_CANARIES {
            return Err(format!("at most {MAX_CANARIES} canaries"));
        }
        for canary in &self.canaries {
            let parsed = url::Url::parse(canary).map_err(|e| format!("canary {canary:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
                return Err(format!("canary {canary:?} must be an http or https URL with a host"));
            }
        }
        if self.canary_interval_s == 0 || self.canary_timeout_ms == 0 {
            return Err("canary_interval_s and canary_timeout_ms must be positive".into());
        }
        if u32::try_from(self.canary_timeout_ms).is_err() {
            return Err("canary_timeout_ms is too large".into());
        }
        if let Some(min) = self.canary_healthy_min {
            if min == 0 || min > self.canaries.len() {
                return Err(format!(
                    "canary_healthy_min must be between 1 and the number of canaries ({})",
                    self.canaries.len()
                ));
            }
        }
        Ok(())
    }

    /// The on-demand probe limit in force: `max_on_demand_in_flight`, at most half of
    /// `max_in_flight` (at least 1).
    pub fn on_demand_limit(&self) -> usize {
        self.max_on_demand_in_flight.min((self.max_in_flight / 2).max(1))
    }

    /// How many canaries must succeed: `canary_healthy_min`, or a majority.
    pub fn canary_quorum(&self) -> usize {
        self.canary_healthy_min.unwrap_or(self.canaries.len() / 2 + 1)
    }

    fn validate_delivery(&self) -> Result<(), String> {
        if self.batch_max_results == 0 || self.batch_max_results > shared::proto::MAX_BATCH_RESULTS {
            return Err(format!(
                "batch_max_results must be between 1 and {}",
                shared::proto::MAX_BATCH_RESULTS
            ));
        }
        if self.batch_max_age_ms == 0 {
            return Err("batch_max_age_ms must be positive".into());
        }
        if self.buffer_max_bytes < shared::proto::MAX_BATCH_BYTES {
            return Err(format!(
                "buffer_max_bytes must be at least {} (one largest batch)",
                shared::proto::MAX_BATCH_BYTES
            ));
        }
        // The control plane remembers batch ids for two days; a batch resent later than that
        // could be stored twice.
        if self.buffer_max_age_s == 0 || self.buffer_max_age_s > 86_400 {
            return Err("buffer_max_age_s must be between 1 and 86400 (one day)".into());
        }
        if self.send_concurrency == 0 || self.send_concurrency > 64 {
            return Err("send_concurrency must be between 1 and 64".into());
        }
        if self.request_timeout_ms == 0 || self.delivery_connect_timeout_ms == 0 {
            return Err("request_timeout_ms and delivery_connect_timeout_ms must be positive".into());
        }
        if self.keepalive_interval_s == 0 {
            return Err("keepalive_interval_s must be positive".into());
        }
        if self.resend_min_backoff_ms == 0 || self.resend_min_backoff_ms > self.resend_max_backoff_ms {
            return Err("resend_min_backoff_ms must be positive and not above resend_max_backoff_ms".into());
        }
        if self.spool_dir.as_ref().is_some_and(|dir| dir.as_os_str().is_empty()) {
            return Err("spool_dir must not be empty when set".into());
        }
        if self.spool_fsync_interval_ms != 0 && !(10..=3_600_000).contains(&self.spool_fsync_interval_ms) {
            return Err("spool_fsync_interval_ms must be 0 (never) or between 10 and 3600000".into());
        }
        let Some(url) = &self.control_plane_url else {
            return Ok(());
        };
        let parsed = url::Url::parse(url).map_err(|e| format!("control_plane_url {url:?}: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("control_plane_url {url:?} must use https (the channel is mutual TLS)"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("control_plane_url {url:?} has no host"));
        }
        let missing: Vec<&str> =
            [("tls_ca", &self.tls_ca), ("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)]
                .into_iter()
                .filter(|(_, v)| v.as_deref().is_none_or(|v| v.trim().is_empty()))
                .map(|(k, _)| k)
                .collect();
        if !missing.is_empty() {
            return Err(format!(
                "control_plane_url is set but {} missing",
                missing.join(", ") + if missing.len() == 1 { " is" } else { " are" }
            ));
        }
        if self.tls_server_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err("tls_server_name must not be empty when set".into());
        }
        Ok(())
    }

    /// Whether results are delivered to a control plane.
    pub fn delivery_enabled(&self) -> bool {
        self.control_plane_url.is_some()
    }

    /// With delivery configured, reads the agent certificate (`tls_cert`) and checks it against
    /// this configuration: a region that differs from the certificate's is refused (the control
    /// plane files results under the certificate's region, so probing for one region while
    /// reporting as another would mislabel every result); the agent id is taken from the
    /// certificate, and a different configured `agent_id` is replaced (and logged by the
    /// caller). Returns the certificate's identity, or `None` when delivery is disabled.
    pub fn adopt_certificate_identity(&mut self) -> Result<Option<shared::tls::AgentCertificate>, String> {
        if !self.delivery_enabled() {
            return Ok(None);
        }
        let value = self.tls_cert.as_deref().ok_or("control_plane_url is set but tls_cert is missing")?;
        let chain = shared::tls::certificates("tls_cert", value).map_err(|e| e.to_string())?;
        let cert = shared::tls::agent_certificate(&chain[0]).map_err(|e| format!("tls_cert: {e}"))?;
        if cert.identity.region != self.region {
            return Err(format!(
                "region {:?} differs from the region {:?} in the agent certificate (tls_cert, identity {}); \
                 configure region = {:?} or use a certificate issued for {:?}",
                self.region, cert.identity.region, cert.identity, cert.identity.region, self.region
            ));
        }
        check_platform_region(&cert.identity.region, std::env::var("FLY_REGION").ok().as_deref())?;
        if cert.identity.agent_id != self.agent_id {
            self.agent_id = cert.identity.agent_id.clone();
        }
        Ok(Some(cert))
    }

    /// [`Config::validate`], then what the configuration names outside itself: the extra trusted
    /// roots and DNSSEC trust anchors load. Run before anything connects; the error starts with
    /// the key at fault.
    pub fn preflight(&self) -> Result<(), String> {
        self.validate()?;
        self.probe_settings().map(|_| ())
    }

    /// The probe settings this configuration describes; reads `extra_roots_pem` and
    /// `dnssec_trust_anchors` (errors name the key, the file and, for an anchor, the line).
    pub fn probe_settings(&self) -> Result<crate::probe::ProbeSettings, String> {
        let extra_roots = match &self.extra_roots_pem {
            None => Vec::new(),
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let roots = rustls_pki_types::CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("extra_roots_pem: cannot read {}: {e}", path.display()))?;
                if roots.is_empty() {
                    return Err(format!("extra_roots_pem: no certificate found in {}", path.display()));
                }
                roots
            }
        };
        let dnssec_anchors = match &self.dnssec_trust_anchors {
            None => crate::probe::TrustAnchorSet::default(),
            Some(path) => {
                crate::probe::TrustAnchorSet::load(path).map_err(|e| shared::error::Chain(&e).to_string())?
            }
        };
        Ok(crate::probe::ProbeSettings {
            dns_timeout: Duration::from_millis(self.dns_timeout_ms),
            resolver: crate::probe::ResolverSettings {
                servers: self.dns_servers.clone(),
                query_timeout: Duration::from_millis(self.dns_query_timeout_ms),
                attempts: self.dns_attempts,
            },
            connect_attempt_delay: Duration::from_millis(self.connect_attempt_delay_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            tls_timeout: Duration::from_millis(self.tls_timeout_ms),
            max_body_bytes: self.max_body_bytes,
            max_response_headers: self.max_response_headers,
            max_header_bytes: self.max_header_bytes,
            max_redirects: self.max_redirects,
            policy: shared::netguard::TargetPolicy::allowing(self.allow_private.clone()),
            extra_roots,
            dnssec_anchors: std::sync::Arc::new(dnssec_anchors),
            // Site operators can see (and filter) which region a probe came from.
            user_agent: format!("Crosscheck/{} (region {})", env!("CARGO_PKG_VERSION"), self.region),
        })
    }

    /// The membership registry's settings for this configuration (after
    /// [`Config::adopt_certificate_identity`], so the agent id is the certificate's).
    pub fn membership_settings(&self) -> crate::membership::registry::MembershipSettings {
        crate::membership::registry::MembershipSettings {
            region: self.region.clone(),
            agent_id: self.agent_id.clone(),
            keys: shared::RedisKeys::new(self.redis_prefix.clone()),
            heartbeat: Duration::from_millis(self.heartbeat_interval_ms),
            ttl: Duration::from_millis(self.membership_ttl_ms),
        }
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

/// On a platform that names the region a machine runs in (Fly.io's `FLY_REGION`), the
/// certificate must be for that region: an agent deployed to the wrong region would otherwise
/// report, under its certificate's region, what it sees from another place.
fn check_platform_region(certificate_region: &str, platform_region: Option<&str>) -> Result<(), String> {
    match platform_region.map(str::trim).filter(|r| !r.is_empty()) {
        Some(platform) if platform != certificate_region => Err(format!(
            "this machine runs in region {platform:?} (FLY_REGION) but its certificate is for {certificate_region:?}; \
             deploy the {certificate_region:?} certificate only to {certificate_region:?} machines"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_may_name_sentinels_and_errors_name_the_key() {
        let sentinels = Config {
            redis_url: "redis-sentinel://10.0.0.1:26379,10.0.0.2/0?sentinelServiceName=mymaster".into(),
            ..Config::default()
        };
        sentinels.validate().unwrap();
        let missing = Config { redis_url: "redis-sentinel://10.0.0.1:26379".into(), ..Config::default() };
        let error = missing.validate().unwrap_err();
        assert!(error.starts_with("redis_url: ") && error.contains("sentinelServiceName"), "{error}");
        let wrong = Config { redis_url: "10.0.0.1:6379".into(), ..Config::default() };
        assert!(wrong.validate().unwrap_err().starts_with("redis_url: "));
    }

    #[test]
    fn platform_region_must_match_the_certificate() {
        assert!(check_platform_region("ams", None).is_ok());
        assert!(check_platform_region("ams", Some("")).is_ok());
        assert!(check_platform_region("ams", Some("ams")).is_ok());
        let error = check_platform_region("ams", Some("iad")).unwrap_err();
        assert!(error.contains("\"iad\"") && error.contains("\"ams\""), "{error}");
    }

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
    fn header_limits_parse_and_are_bounded() {
        let config = toml_config("max_response_headers = 500\nmax_header_bytes = 131072\n");
        let settings = config.probe_settings().unwrap();
        assert_eq!((settings.max_response_headers, settings.max_header_bytes), (500, 131_072));
        let defaults = Config::default().probe_settings().unwrap();
        assert_eq!((defaults.max_response_headers, defaults.max_header_bytes), (256, 65_536));
        for (key, value) in
            [("max_response_headers", 0), ("max_header_bytes", 4096), ("max_header_bytes", 1 << 30)]
        {
            let error = toml_config(&format!("{key} = {value}\n")).validate().unwrap_err();
            assert!(error.contains(key), "{error}");
        }
    }

    #[test]
    fn resolver_and_connect_settings_parse_and_are_checked() {
        let cfg = toml_config(
            "dns_servers = [\"127.0.0.1:5353\", \"[::1]:53\"]\ndns_query_timeout_ms = 700\n\
             dns_attempts = 3\nconnect_attempt_delay_ms = 100",
        );
        cfg.validate().unwrap();
        let settings = cfg.probe_settings().unwrap();
        assert_eq!(
            settings.resolver.servers,
            vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert_eq!(settings.resolver.query_timeout, Duration::from_millis(700));
        assert_eq!(settings.resolver.attempts, 3);
        assert_eq!(settings.connect_attempt_delay, Duration::from_millis(100));

        let defaults = Config::default().probe_settings().unwrap();
        assert!(defaults.resolver.servers.is_empty());
        assert_eq!(
            (defaults.resolver.attempts, defaults.connect_attempt_delay),
            (2, Duration::from_millis(250))
        );

        for (bad, key) in [
            ("dns_attempts = 0", "dns_attempts"),
            ("dns_query_timeout_ms = 0", "dns_query_timeout_ms"),
            ("dns_servers = [\"0.0.0.0:53\"]", "dns_servers"),
            ("connect_attempt_delay_ms = 0", "connect_attempt_delay_ms"),
        ] {
            let message = toml_config(bad).validate().unwrap_err();
            assert!(message.contains(key), "{bad}: {message}");
        }
    }

    #[test]
    fn missing_extra_roots_file_is_an_error() {
        let cfg = Config { extra_roots_pem: Some("/nonexistent/roots.pem".into()), ..Config::default() };
        assert!(cfg.probe_settings().unwrap_err().contains("extra_roots_pem"));
    }

    #[test]
    fn dnssec_trust_anchors_load_or_name_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("agent-anchors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("anchors.key");
        std::fs::write(
            &path,
            "; corp.internal, exported with dig\ncorp.internal. 3600 IN DS 2371 13 2 \
             1F987CC6583E92DF0890718C42C4D7E5D2A4B4D48D2BF8F5A4D8F7A6D26F7DA3\n",
        )
        .unwrap();
        let cfg = toml_config(&format!("dnssec_trust_anchors = {:?}", path.display().to_string()));
        cfg.preflight().unwrap();
        assert_eq!(cfg.probe_settings().unwrap().dnssec_anchors.anchors().len(), 1);
        assert!(Config::default().probe_settings().unwrap().dnssec_anchors.is_empty());

        std::fs::write(&path, "corp.internal. IN DS 2371 13 2 1F98\ncorp.internal. IN DNSKEY 257 3 13\n")
            .unwrap();
        let error = cfg.preflight().unwrap_err();
        assert_eq!(
            error,
            format!(
                "dnssec_trust_anchors: {}, line 1: the digest has 2 bytes, not the 32 of its digest type",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fly_region_is_the_default_region() {
        assert_eq!(default_region(Some("ams".into())), "ams");
        assert_eq!(default_region(Some(" ".into())), "local");
        assert_eq!(default_region(None), "local");
    }

    #[test]
    fn delivery_needs_certificates_and_https() {
        let url = Some("https://127.0.0.1:7443".to_owned());
        let cfg =
            Config { control_plane_url: url.clone(), tls_ca: Some("ca.pem".into()), ..Config::default() };
        let message = cfg.validate().unwrap_err();
        assert!(message.contains("tls_cert, tls_key are missing"), "{message}");
        let cfg = Config {
            control_plane_url: Some("http://127.0.0.1:7443".into()),
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("agent.pem".into()),
            tls_key: Some("agent.key".into()),
            ..Config::default()
        };
        assert!(cfg.validate().unwrap_err().contains("https"));
        let cfg = Config { control_plane_url: url, ..cfg };
        cfg.validate().unwrap();
        let cfg = Config { batch_max_results: shared::proto::MAX_BATCH_RESULTS + 1, ..cfg };
        assert!(cfg.validate().unwrap_err().contains("batch_max_results"));
    }

    #[test]
    fn spool_settings_parse_and_are_checked() {
        let defaults = Config::default();
        assert_eq!((defaults.spool_dir.clone(), defaults.spool_fsync_interval_ms), (None, 1_000));
        let cfg = toml_config("spool_dir = \"/var/lib/crosscheck/spool\"\nspool_fsync_interval_ms = 0\n");
        cfg.validate().unwrap();
        assert_eq!(cfg.spool_dir, Some(PathBuf::from("/var/lib/crosscheck/spool")));
        for bad in ["spool_dir = \"\"", "spool_fsync_interval_ms = 5", "spool_fsync_interval_ms = 3600001"] {
            let error = toml_config(bad).validate().unwrap_err();
            assert!(error.starts_with(bad.split(' ').next().unwrap()), "{bad}: {error}");
        }
        let url = Some("https://127.0.0.1:7443".to_owned());
        let delivering = Config {
            control_plane_url: url,
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("agent.pem".into()),
            tls_key: Some("agent.key".into()),
            ..cfg
        };
        let settings = crate::delivery::DeliverySettings::from_config(&delivering).unwrap();
        assert_eq!(settings.spool_dir, delivering.spool_dir);
        assert_eq!(settings.spool_fsync_interval, None, "0 is never");
        let every = Config { spool_fsync_interval_ms: 250, ..delivering };
        let settings = crate::delivery::DeliverySettings::from_config(&every).unwrap();
        assert_eq!(settings.spool_fsync_interval, Some(Duration::from_millis(250)));
    }

    #[test]
    fn canaries_are_checked() {
        let cfg = toml_config("canaries = [\"https://a.example/\", \"http://b.example/\"]");
        cfg.validate().unwrap();
        assert_eq!(cfg.canary_quorum(), 2);
        assert_eq!((cfg.canary_interval_s, cfg.canary_timeout_ms), (30, 5000));
        let three = Config { canaries: vec![cfg.canaries[0].clone(); 3], ..cfg.clone() };
        assert_eq!(three.canary_quorum(), 2);
        let one = Config { canary_healthy_min: Some(1), ..cfg.clone() };
        assert_eq!(one.canary_quorum(), 1);
        let too_many = Config { canary_healthy_min: Some(3), ..cfg.clone() };
        assert!(too_many.validate().unwrap_err().contains("canary_healthy_min"));
        let ftp = Config { canaries: vec!["ftp://a.example/".into()], ..cfg };
        assert!(ftp.validate().unwrap_err().contains("http or https"));
    }

    #[test]
    fn on_demand_probes_keep_to_half_the_slots() {
        let cfg = Config::default();
        assert_eq!(cfg.on_demand_limit(), 64);
        assert_eq!(Config { max_in_flight: 10, ..cfg.clone() }.on_demand_limit(), 5);
        assert_eq!(Config { max_in_flight: 1, ..cfg.clone() }.on_demand_limit(), 1);
        assert!(Config { max_on_demand_in_flight: 0, ..cfg }.validate().is_err());
    }

    #[test]
    fn membership_timing_is_bounded_and_the_ttl_outlives_two_heartbeats() {
        let cfg = Config::default();
        assert_eq!((cfg.heartbeat_interval_ms, cfg.membership_ttl_ms), (5_000, 15_000));
        assert!(cfg.validate().is_ok());
        let fast = Config { heartbeat_interval_ms: 200, membership_ttl_ms: 400, ..cfg.clone() };
        assert!(fast.validate().is_ok());
        for (heartbeat_interval_ms, membership_ttl_ms, named) in [
            (99, 1_000, "heartbeat_interval_ms"),
            (60_001, 200_000, "heartbeat_interval_ms"),
            (5_000, 9_999, "membership_ttl_ms"),
            (5_000, 600_001, "membership_ttl_ms"),
        ] {
            let bad = Config { heartbeat_interval_ms, membership_ttl_ms, ..cfg.clone() };
            let error = bad.validate().unwrap_err();
            assert!(error.starts_with(named), "{heartbeat_interval_ms}/{membership_ttl_ms}: {error}");
        }
        let settings = Config { agent_id: "ams-2".into(), region: "ams".into(), ..cfg }.membership_settings();
        assert_eq!(settings.keys.agents(&settings.region), "crosscheck:agents:ams");
        assert_eq!((settings.heartbeat, settings.ttl), (Duration::from_secs(5), Duration::from_secs(15)));
    }

    #[test]
    fn bad_region_is_refused() {
        let cfg = Config { region: "EU West".into(), ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("region"));
    }
}
