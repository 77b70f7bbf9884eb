//! The control plane's configuration: defaults, then `crosscheck.toml` (or `--config`), then
//! `CROSSCHECK_*` environment variables. Parsed and validated completely before anything binds.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
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
    /// Redis, where the agent-facing configuration is published: `redis://host:port`, `rediss://`
    /// for TLS, or `redis-sentinel://sentinel1:26379,sentinel2:26379/0?sentinelServiceName=<name>`
    /// to follow the primary through Redis Sentinel (forms in `shared::redis::normalize_url`).
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

    /// Address of the gRPC ingest listener (mutual TLS). Ingest runs only when `tls_ca`,
    /// `tls_cert` and `tls_key` are all set.
    pub ingest_listen: SocketAddr,
    /// The CA agents' client certificates must chain to: a PEM file path or the PEM text.
    pub tls_ca: Option<String>,
    /// The ingest server's certificate chain: a PEM file path or the PEM text.
    pub tls_cert: Option<String>,
    /// The ingest server's private key: a PEM file path or the PEM text.
    pub tls_key: Option<String>,
    /// Optional certificate revocation list(s) of the CA: a PEM file path or the PEM text. A
    /// path is re-read every `tls_crl_poll_s` seconds and a changed list applies without a
    /// restart.
    pub tls_crl: Option<String>,
    /// How often the `tls_crl` file is checked for a new list and its `nextUpdate` against
    /// the clock, in seconds (at least 1).
    pub tls_crl_poll_s: u64,
    /// Batches waiting for a time-series writer before new ones wait (back-pressure).
    pub ingest_queue_capacity: usize,
    /// How long a batch may wait for room in the ingest queue before the agent is told
    /// `UNAVAILABLE` (it keeps the batch and resends), in milliseconds.
    pub ingest_wait_ms: u64,
    /// How often an agent's `last_seen` is written to the agents table at most, in seconds.
    pub last_seen_interval_s: u64,

    /// The time-series database (TimescaleDB, or plain PostgreSQL as a fallback); separate from
    /// the transactional one.
    pub timeseries_url: String,
    /// Connections that write results (one COPY writer each). The ingest path never opens more.
    pub timeseries_write_connections: u32,
    /// Connections that serve reads, roll-up refreshes and maintenance.
    pub timeseries_read_connections: u32,
    /// Days raw results are kept.
    pub retention_raw_days: u32,
    /// Days hourly and daily roll-ups are kept.
    pub retention_rollup_days: u32,
    /// Plain-PostgreSQL mode: daily partitions created ahead of time.
    pub partitions_ahead_days: u32,
    /// Plain-PostgreSQL mode: how often hours marked for a refresh by an older control plane
    /// (this one adds each batch to its roll-ups as it stores it) are re-aggregated from the raw
    /// rows, in seconds; TimescaleDB mode: how often the continuous aggregates are refreshed
    /// over late results. Reads never wait for it.
    pub rollup_refresh_interval_s: u64,
    /// How often partitions and retention are maintained and (TimescaleDB mode) the background
    /// jobs' health is read, in seconds.
    pub maintenance_interval_s: u64,

    /// A region's latest observation of a domain votes while it is younger than this factor
    /// times the domain's interval (plus a few seconds of slack).
    pub consensus_freshness_factor: f64,
    /// How often every observed domain is re-evaluated (staleness can change the outcome), in
    /// milliseconds.
    pub consensus_sweep_interval_ms: u64,
    /// Connections of consensus's own pool to the transactional database (observation rounds,
    /// evaluations, the sweep, certificate notices), apart from `database_max_connections`.
    pub consensus_db_connections: u32,
    /// Smallest time between two confirmation probe requests for one domain, in milliseconds.
    pub confirmation_min_interval_ms: u64,
    /// Check tests (`POST /v1/checks/test`) a tenant may start per minute, on average.
    pub check_test_per_minute: u32,
    /// Check tests a tenant may start at once before the per-minute rate applies.
    pub check_test_burst: u32,
    /// Days before a certificate's expiry at which a `certificate_expiring` notification is
    /// sent, once per threshold and certificate.
    pub cert_expiry_thresholds_days: Vec<u32>,
    /// Failed observations in a row after which a region failing while its domain is up is
    /// reported as a persistent regional failure (status and uptime answers).
    pub regional_failure_observations: u32,
    /// Whether this replica runs a notification dispatcher (any number of replicas may).
    pub notify_dispatch: bool,
    /// Networks webhook and Slack deliveries may reach although they are private, loopback, …
    /// (CIDRs; empty by default). Cloud metadata addresses are refused regardless.
    pub notify_allow_private: Vec<IpNet>,
    /// Limit of one delivery attempt (connect, TLS, request and response), in milliseconds.
    pub notify_timeout_ms: u64,
    /// Backoff before the first retry; doubles per attempt, with full jitter, in milliseconds.
    pub notify_min_backoff_ms: u64,
    /// Largest backoff between attempts, in milliseconds.
    pub notify_max_backoff_ms: u64,
    /// Attempts after which a failing notification is moved to `dead`; 0 (the default): no
    /// limit by count, only `notify_max_age_s`.
    pub notify_max_attempts: u32,
    /// How long a failing notification is retried, counted from its first attempt, in seconds
    /// (default 6 hours: a realistic outage of a receiver); the first failure after that makes
    /// it `dead`.
    pub notify_max_age_s: u64,
    /// Deliveries in flight at once per replica.
    pub notify_concurrency: usize,
    /// Fallback interval at which the dispatcher looks for due notifications without a wake-up,
    /// in milliseconds.
    pub notify_poll_ms: u64,
    /// SMTP server for email channels; email channels are refused while it is unset.
    pub smtp_host: Option<String>,
    /// SMTP port (587: submission with STARTTLS).
    pub smtp_port: u16,
    /// `required`, `opportunistic` or `off`.
    pub smtp_starttls: StartTls,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    /// The sender address of notification emails (`Crosscheck <alerts@example.com>`).
    pub smtp_from: Option<String>,

    /// Flap detection on or off for every domain (a domain's own `flap` settings override it).
    pub flap_enabled: bool,
    /// The rolling window over which a domain's confirmed transitions are counted, in seconds.
    pub flap_window_s: u64,
    /// A domain enters flap mode when at least this many transitions fall in the window.
    pub flap_enter_transitions: u32,
    /// A flapping domain leaves flap mode when at most this many transitions remain in the
    /// window and none happened for `flap_quiet_s` (hysteresis: below the entry threshold).
    pub flap_leave_transitions: u32,
    /// The quiet period before a flapping domain may leave flap mode, in seconds.
    pub flap_quiet_s: u64,
    /// How often flapping domains are checked for having stabilized, in milliseconds.
    pub flap_check_interval_ms: u64,

    /// Latency anomaly detection on or off for every domain (a domain's `degraded.anomaly`
    /// overrides it).
    pub degraded_anomaly: bool,
    /// The successful probes per region the moving latency baseline holds (N).
    pub degraded_window: u32,
    /// A probe is anomalous when its latency is more than this many robust standard deviations
    /// (1.4826 × MAD) above the baseline's median.
    pub degraded_z: f64,
    /// A region is degraded after this many anomalous probes in a row (K).
    pub degraded_consecutive: u32,
    /// The baseline samples needed before anomalies are judged (capped at the window).
    pub degraded_min_samples: u32,
    /// The least time between two rounds of confirmation probes a latency anomaly asks every
    /// region of its domain for, per domain, in milliseconds.
    pub degraded_confirmation_interval_ms: u64,
    /// The digest period in seconds (3600: hourly, at the top of each hour). Periods are
    /// aligned to multiples of it since the Unix epoch.
    pub digest_period_s: u64,
    /// How long after a period's end its digests are built, in seconds. A transition is stamped
    /// before its transaction commits, so one stamped just before the end can commit just after
    /// it; the grace lets it land first. Below `digest_period_s`.
    pub digest_grace_s: u64,
    /// How often the digest scheduler looks for a finished period, in milliseconds.
    pub digest_check_interval_ms: u64,
    /// How often maintenance windows are checked for having ended (incidents they withheld
    /// announced) and recurring ones extended, in milliseconds.
    pub maintenance_check_interval_ms: u64,
    /// How often the SLA monitor evaluates the domains' error budgets (and looks for a finished
    /// month to report), in milliseconds.
    pub sla_check_interval_ms: u64,
    /// How long after a month's end (in the tenant's time zone) its SLA report is built, in
    /// seconds: a transition stamped just before the end may commit just after it.
    pub sla_report_grace_s: u64,
    /// Audit log rows older than this many days are deleted (every hour, by one replica at a
    /// time). At least 1.
    pub audit_retention_days: u32,

    /// How long a console session lives at most from sign-in, in seconds.
    pub console_session_ttl_s: u64,
    /// A console session unused this long ends, in seconds (at most `console_session_ttl_s`).
    pub console_session_idle_s: u64,
    /// The console cookies' `Secure` attribute: `auto` (set when the request reached a trusted
    /// proxy over HTTPS, as its `X-Forwarded-Proto` says), `always` or `never`.
    pub console_cookie_secure: CookieSecure,
    /// Sign-in attempts one client address may make per minute, on average.
    pub console_sign_in_per_minute: u32,
    /// Sign-in attempts one client address may make at once before the per-minute rate applies.
    pub console_sign_in_burst: u32,
    /// Failed API authentications one client address (or one token prefix) may make per
    /// minute, on average, per replica; beyond it `429` with `Retry-After`.
    pub api_auth_failures_per_minute: u32,
    /// Failed API authentications one client address (or token prefix) may make at once
    /// before the per-minute rate applies.
    pub api_auth_failure_burst: u32,
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For` and `X-Forwarded-Proto` headers are
    /// believed; a request from any other peer is taken at its socket address, over plain HTTP.
    pub trusted_proxies: Vec<IpNet>,
    /// A tenant id whose console anyone may look at without a token, read-only and marked as a
    /// demo (every write refused). Unset (the default): the console needs a sign-in.
    pub public_demo: Option<uuid::Uuid>,
    /// Live events kept in the Redis stream for resuming browsers' streams (approximate).
    pub live_stream_max_len: u64,
    /// Server-Sent Event streams one replica serves at once; beyond it `503`.
    pub live_max_clients: usize,
    /// Events a stream may fall behind the live broadcast before it is dropped (its browser
    /// reconnects and resumes).
    pub live_client_buffer: usize,
    /// Interval of heartbeats on a quiet stream, in milliseconds.
    pub live_heartbeat_ms: u64,
    /// Events waiting to be written to Redis before new ones are dropped (and counted).
    pub live_publish_queue: usize,
    /// Whether new probe results are published as live events (the console's live results).
    pub live_results: bool,
    /// How long a rendered status page (HTML, JSON and feed) is served from memory before it
    /// is rendered again, in milliseconds; 0 renders every request.
    pub status_page_cache_ms: u64,
}

/// When console cookies carry `Secure`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CookieSecure {
    /// When a trusted proxy says the request came over HTTPS (`X-Forwarded-Proto: https`).
    Auto,
    Always,
    Never,
}

/// Whether SMTP connections are upgraded with STARTTLS.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartTls {
    /// Refuse to send unless the server offers STARTTLS.
    Required,
    /// Upgrade when offered, else send in clear text.
    Opportunistic,
    /// Never upgrade (local relays and tests).
    Off,
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
            ingest_listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_crl: None,
            tls_crl_poll_s: 5,
            ingest_queue_capacity: 64,
            ingest_wait_ms: 5_000,
            last_seen_interval_s: 30,
            timeseries_url: "postgres://postgres@127.0.0.1:5432/crosscheck_ts".into(),
            timeseries_write_connections: 4,
            timeseries_read_connections: 4,
            retention_raw_days: 90,
            retention_rollup_days: 730,
            partitions_ahead_days: 7,
            rollup_refresh_interval_s: 300,
            maintenance_interval_s: 3_600,
            consensus_freshness_factor: 2.5,
            consensus_sweep_interval_ms: 5_000,
            consensus_db_connections: 4,
            confirmation_min_interval_ms: 10_000,
            check_test_per_minute: 6,
            check_test_burst: 3,
            cert_expiry_thresholds_days: vec![30, 14, 7, 1],
            regional_failure_observations: 3,
            notify_dispatch: true,
            notify_allow_private: Vec::new(),
            notify_timeout_ms: 10_000,
            notify_min_backoff_ms: 1_000,
            notify_max_backoff_ms: 300_000,
            notify_max_attempts: 0,
            notify_max_age_s: 21_600,
            notify_concurrency: 16,
            notify_poll_ms: 5_000,
            smtp_host: None,
            smtp_port: 587,
            smtp_starttls: StartTls::Required,
            smtp_username: None,
            smtp_password: None,
            smtp_from: None,
            flap_enabled: true,
            flap_window_s: 3_600,
            flap_enter_transitions: 6,
            flap_leave_transitions: 2,
            flap_quiet_s: 900,
            flap_check_interval_ms: 5_000,
            degraded_anomaly: true,
            degraded_window: 50,
            degraded_z: 3.0,
            degraded_consecutive: 3,
            degraded_min_samples: 10,
            degraded_confirmation_interval_ms: 300,
            digest_period_s: 3_600,
            digest_grace_s: 60,
            digest_check_interval_ms: 5_000,
            maintenance_check_interval_ms: 10_000,
            sla_check_interval_ms: 60_000,
            sla_report_grace_s: 300,
            audit_retention_days: 400,
            console_session_ttl_s: 43_200,
            console_session_idle_s: 3_600,
            console_cookie_secure: CookieSecure::Auto,
            console_sign_in_per_minute: 10,
            console_sign_in_burst: 5,
            api_auth_failures_per_minute: 10,
            api_auth_failure_burst: 20,
            trusted_proxies: Vec::new(),
            public_demo: None,
            live_stream_max_len: 10_000,
            live_max_clients: 10_000,
            live_client_buffer: 1_024,
            live_heartbeat_ms: 15_000,
            live_publish_queue: 10_000,
            live_results: true,
            status_page_cache_ms: 5_000,
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
        let tls_set = [&self.tls_ca, &self.tls_cert, &self.tls_key].iter().filter(|v| v.is_some()).count();
        if tls_set != 0 && tls_set != 3 {
            return Err(
                "tls_ca, tls_cert and tls_key must be set together (or none, to run without ingest)".into()
            );
        }
        if self.tls_crl.is_some() && tls_set == 0 {
            return Err("tls_crl needs tls_ca, tls_cert and tls_key".into());
        }
        if self.tls_crl_poll_s == 0 {
            return Err("tls_crl_poll_s must be at least 1".into());
        }
        if self.ingest_queue_capacity == 0 || self.ingest_wait_ms == 0 || self.last_seen_interval_s == 0 {
            return Err(
                "ingest_queue_capacity, ingest_wait_ms and last_seen_interval_s must be positive".into()
            );
        }
        if self.timeseries_write_connections == 0 || self.timeseries_read_connections == 0 {
            return Err(
                "timeseries_write_connections and timeseries_read_connections must be positive".into()
            );
        }
        if self.retention_raw_days == 0 || self.retention_rollup_days < self.retention_raw_days {
            return Err(
                "retention_raw_days must be positive and retention_rollup_days at least as long".into()
            );
        }
        if self.partitions_ahead_days == 0
            || self.rollup_refresh_interval_s == 0
            || self.maintenance_interval_s == 0
        {
            return Err(
                "partitions_ahead_days, rollup_refresh_interval_s and maintenance_interval_s must be positive".into()
            );
        }
        if !(self.consensus_freshness_factor.is_finite() && self.consensus_freshness_factor >= 1.0) {
            return Err("consensus_freshness_factor must be a number of at least 1".into());
        }
        if self.consensus_sweep_interval_ms == 0 || self.confirmation_min_interval_ms == 0 {
            return Err(
                "consensus_sweep_interval_ms and confirmation_min_interval_ms must be positive".into()
            );
        }
        if self.consensus_db_connections < 2 {
            return Err("consensus_db_connections must be at least 2".into());
        }
        if self.check_test_per_minute == 0 || self.check_test_burst == 0 {
            return Err("check_test_per_minute and check_test_burst must be positive".into());
        }
        if self.cert_expiry_thresholds_days.iter().any(|d| *d == 0 || *d > 365) {
            return Err("cert_expiry_thresholds_days must be between 1 and 365".into());
        }
        if self.regional_failure_observations == 0 {
            return Err("regional_failure_observations must be at least 1".into());
        }
        if self.notify_timeout_ms < 100 {
            return Err("notify_timeout_ms must be at least 100".into());
        }
        if self.notify_min_backoff_ms == 0 || self.notify_min_backoff_ms > self.notify_max_backoff_ms {
            return Err("notify_min_backoff_ms must be positive and at most notify_max_backoff_ms".into());
        }
        if self.notify_max_age_s == 0 || self.notify_concurrency == 0 || self.notify_poll_ms == 0 {
            return Err("notify_max_age_s, notify_concurrency and notify_poll_ms must be positive".into());
        }
        if self.smtp_host.as_deref().is_some_and(|h| h.trim().is_empty()) {
            return Err("smtp_host must not be empty (leave it unset to disable email)".into());
        }
        if self.smtp_host.is_some() {
            let from = self.smtp_from.as_deref().ok_or("smtp_from is required with smtp_host")?;
            from.parse::<lettre::message::Mailbox>().map_err(|e| format!("smtp_from: {e}"))?;
        }
        if self.smtp_password.is_some() && self.smtp_username.is_none() {
            return Err("smtp_password needs smtp_username".into());
        }
        if self.flap_window_s == 0 || self.flap_window_s > 7 * 86_400 {
            return Err("flap_window_s must be between 1 and 604800 (7 days)".into());
        }
        if self.flap_enter_transitions < 2 || self.flap_leave_transitions >= self.flap_enter_transitions {
            return Err(
                "flap_enter_transitions must be at least 2 and flap_leave_transitions below it".into()
            );
        }
        if self.flap_quiet_s > self.flap_window_s {
            return Err("flap_quiet_s must not exceed flap_window_s".into());
        }
        if let Err((key, why)) = crate::degraded::Settings::from_config(self).check() {
            return Err(format!("degraded_{key} {why}"));
        }
        if !(100..=60_000).contains(&self.degraded_confirmation_interval_ms) {
            return Err("degraded_confirmation_interval_ms must be between 100 and 60000".into());
        }
        if self.digest_period_s == 0 || self.digest_period_s > 86_400 {
            return Err("digest_period_s must be between 1 and 86400".into());
        }
        if self.digest_grace_s >= self.digest_period_s {
            return Err("digest_grace_s must be below digest_period_s".into());
        }
        if self.sla_check_interval_ms == 0 {
            return Err("sla_check_interval_ms must be positive".into());
        }
        if self.sla_report_grace_s > 86_400 {
            return Err("sla_report_grace_s must be at most 86400".into());
        }
        if self.flap_check_interval_ms == 0 || self.digest_check_interval_ms == 0 {
            return Err("flap_check_interval_ms and digest_check_interval_ms must be positive".into());
        }
        if self.maintenance_check_interval_ms == 0 {
            return Err("maintenance_check_interval_ms must be positive".into());
        }
        if self.audit_retention_days == 0 {
            return Err("audit_retention_days must be at least 1".into());
        }
        if self.console_session_ttl_s == 0
            || self.console_session_idle_s == 0
            || self.console_session_idle_s > self.console_session_ttl_s
        {
            return Err(
                "console_session_ttl_s and console_session_idle_s must be positive, the idle time at most the lifetime"
                    .into(),
            );
        }
        if self.api_auth_failures_per_minute == 0 || self.api_auth_failure_burst == 0 {
            return Err("api_auth_failures_per_minute and api_auth_failure_burst must be positive".into());
        }
        if self.console_sign_in_per_minute == 0 || self.console_sign_in_burst == 0 {
            return Err("console_sign_in_per_minute and console_sign_in_burst must be positive".into());
        }
        if self.live_stream_max_len < 100 {
            return Err("live_stream_max_len must be at least 100".into());
        }
        if self.live_max_clients == 0 || self.live_publish_queue == 0 {
            return Err("live_max_clients and live_publish_queue must be positive".into());
        }
        if self.live_client_buffer < 16 {
            return Err("live_client_buffer must be at least 16".into());
        }
        if self.live_heartbeat_ms < 100 {
            return Err("live_heartbeat_ms must be at least 100".into());
        }
        if self.status_page_cache_ms > 3_600_000 {
            return Err("status_page_cache_ms must be at most 3600000 (an hour)".into());
        }
        Ok(())
    }

    /// [`Config::validate`], then what the configuration names outside itself that can be checked
    /// without touching a server: the database and Redis URLs parse, and the ingest TLS files
    /// (`tls_ca`, `tls_cert`, `tls_key`, `tls_crl`) read and parse. The binary runs it before
    /// connecting to anything, so a configuration error leaves databases and Redis untouched.
    /// The error starts with the key at fault.
    pub fn preflight(&self) -> Result<(), String> {
        self.validate()?;
        for (key, url) in [("database_url", &self.database_url), ("timeseries_url", &self.timeseries_url)] {
            url.parse::<sqlx::postgres::PgConnectOptions>().map_err(|e| format!("{key}: {e}"))?;
        }
        shared::redis::check_url(&self.redis_url).map_err(|e| format!("redis_url: {e}"))?;
        if self.ingest_enabled() {
            crate::ingest::revocation::check(self).map_err(|e| shared::error::Chain(&*e).to_string())?;
        }
        Ok(())
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile_interval_s)
    }

    pub fn publish_poll(&self) -> Duration {
        Duration::from_millis(self.publish_poll_ms)
    }

    /// Whether the gRPC ingest listener runs (all of `tls_ca`, `tls_cert`, `tls_key` set).
    pub fn ingest_enabled(&self) -> bool {
        self.tls_ca.is_some() && self.tls_cert.is_some() && self.tls_key.is_some()
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
    fn tls_settings_come_together() {
        let cfg = Config { tls_ca: Some("ca.pem".into()), ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("tls_ca"));
        let all = Config {
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("server.pem".into()),
            tls_key: Some("server.key".into()),
            ..Config::default()
        };
        all.validate().unwrap();
        assert!(all.ingest_enabled());
        assert!(!Config::default().ingest_enabled());
    }

    #[test]
    fn consensus_settings_are_checked() {
        let cfg = Config { consensus_freshness_factor: 0.5, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("consensus_freshness_factor"));
        let cfg = Config { cert_expiry_thresholds_days: vec![30, 0], ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("cert_expiry_thresholds_days"));
        let cfg = Config { consensus_db_connections: 1, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("consensus_db_connections"));
    }

    #[test]
    fn smtp_needs_a_valid_sender() {
        let cfg = Config { smtp_host: Some("smtp.example.com".into()), ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("smtp_from"));
        let cfg = Config { smtp_from: Some("not an address".into()), ..cfg };
        assert!(cfg.validate().unwrap_err().contains("smtp_from"));
        let cfg = Config { smtp_from: Some("Crosscheck <alerts@example.com>".into()), ..cfg };
        cfg.validate().unwrap();
    }

    #[test]
    fn notify_backoff_bounds_are_ordered() {
        let cfg = Config { notify_min_backoff_ms: 10, notify_max_backoff_ms: 5, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("notify_min_backoff_ms"));
    }

    #[test]
    fn the_digest_grace_is_below_the_period() {
        let cfg = Config { digest_period_s: 30, digest_grace_s: 2, ..Config::default() };
        cfg.validate().unwrap();
        let cfg = Config { digest_period_s: 30, digest_grace_s: 30, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("digest_grace_s"));
        let cfg = Config { digest_period_s: 1, digest_grace_s: 0, ..Config::default() };
        cfg.validate().unwrap();
    }

    #[test]
    fn live_settings_are_bounded() {
        let cfg = Config { live_client_buffer: 4, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("live_client_buffer"));
        let cfg = Config { live_heartbeat_ms: 10, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("live_heartbeat_ms"));
        let cfg = Config { live_max_clients: 0, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("live_max_clients"));
        let cfg = Config { live_stream_max_len: 10, ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("live_stream_max_len"));
    }

    #[test]
    fn bad_region_name_is_refused() {
        let cfg = Config { regions: vec!["Not A Region".into()], ..Config::default() };
        assert!(cfg.validate().unwrap_err().contains("regions"));
    }
}
