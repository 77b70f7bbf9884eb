//! The canary self-check: is this agent's own network fit to judge others?
//!
//! Every `canary_interval_s` the agent probes its `canaries` with the regular prober (same SSRF
//! guard and allow-list, each probe limited to `canary_timeout_ms`), all at once. The agent is
//! healthy when at least `canary_healthy_min` of them succeed (default: a majority). The
//! latest verdict is published through a `watch` channel as a [`HealthReport`]; delivery
//! attaches it to every batch it encodes from then on (`AgentHealth`), so the control plane
//! can leave an agent in trouble out of its consensus. It is served at `/debug/health` and
//! summarised in `probe_agent_healthy` and `probe_agent_canaries_ok`.
//!
//! Canary results are not domain results: they never reach the result queue or the control
//! plane as probe results. Without canaries there is no check, the health is `None` (batches
//! carry none) and `probe_agent_healthy` is 1. Before the first check completes the health is
//! also `None`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shared::{proto, DomainConfig, DomainId, RequestConfig, StatusRange};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::probe::{ErrorKind, ProbeReport};
use crate::scheduler::Probe;

/// The latest health, or `None` (no canaries, or no check finished yet).
pub type HealthWatch = watch::Receiver<Option<Arc<HealthReport>>>;

/// A receiver that always holds `None`: no self-check.
pub fn no_health() -> HealthWatch {
    watch::channel(None).1
}

/// The outcome of one self-check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub canaries_ok: u32,
    pub canaries_total: u32,
    /// How many had to succeed.
    pub healthy_min: u32,
    pub checked_at: chrono::DateTime<chrono::Utc>,
    pub canaries: Vec<CanaryOutcome>,
}

impl HealthReport {
    /// The verdict over `canaries` given that `healthy_min` must succeed.
    pub fn new(
        canaries: Vec<CanaryOutcome>,
        healthy_min: usize,
        checked_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let ok = canaries.iter().filter(|c| c.ok).count();
        Self {
            healthy: verdict(ok, healthy_min),
            canaries_ok: ok as u32,
            canaries_total: canaries.len() as u32,
            healthy_min: healthy_min as u32,
            checked_at,
            canaries,
        }
    }

    /// The health as sent in a batch.
    pub fn to_proto(&self) -> proto::AgentHealth {
        proto::AgentHealth {
            healthy: self.healthy,
            canaries_ok: self.canaries_ok,
            canaries_total: self.canaries_total,
            checked_at_unix_us: self.checked_at.timestamp_micros(),
            ..Default::default()
        }
    }
}

/// Healthy when at least `healthy_min` canaries succeeded (pure).
pub fn verdict(ok: usize, healthy_min: usize) -> bool {
    ok >= healthy_min
}

/// The default `healthy_min` for `total` canaries: a strict majority.
pub fn majority(total: usize) -> usize {
    total / 2 + 1
}

/// One canary's probe in a self-check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryOutcome {
    pub url: String,
    pub ok: bool,
    pub error: Option<ErrorKind>,
    pub error_detail: Option<String>,
    pub status: Option<u16>,
    pub total_ms: f64,
}

impl CanaryOutcome {
    fn from_report(url: &str, report: ProbeReport) -> Self {
        Self {
            url: url.to_owned(),
            ok: report.ok,
            error: report.error,
            error_detail: report.error_detail,
            status: report.status,
            total_ms: report.timings.total_ms,
        }
    }
}

/// Settings of the self-check.
#[derive(Debug, Clone)]
pub struct CanarySettings {
    pub urls: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_min: usize,
}

impl CanarySettings {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            urls: config.canaries.clone(),
            interval: Duration::from_secs(config.canary_interval_s),
            timeout: Duration::from_millis(config.canary_timeout_ms),
            healthy_min: config.canary_quorum(),
        }
    }
}

/// The self-check task.
pub struct Canaries {
    settings: CanarySettings,
    /// One configuration per canary: GET, 2xx expected (after redirects), no keyword.
    targets: Vec<Arc<DomainConfig>>,
    prober: Arc<dyn Probe>,
    health: watch::Sender<Option<Arc<HealthReport>>>,
    metrics: Metrics,
}

impl Canaries {
    pub fn new(settings: CanarySettings, prober: Arc<dyn Probe>, metrics: Metrics) -> (Self, HealthWatch) {
        let timeout_ms = u32::try_from(settings.timeout.as_millis()).unwrap_or(u32::MAX);
        let targets = settings
            .urls
            .iter()
            .map(|url| {
                Arc::new(DomainConfig {
                    id: DomainId::new(),
                    url: url.clone(),
                    request: RequestConfig::default(),
                    check: shared::CheckConfig::Http,
                    json_check: None,
                    expected_status: StatusRange::SUCCESS,
                    keyword: None,
                    interval_s: u32::try_from(settings.interval.as_secs()).unwrap_or(u32::MAX).max(1),
                    timeout_ms,
                    regions: Vec::new(),
                    paused: false,
                    tls_verify: true,
                    http_version: shared::HttpVersion::Auto,
                    agents_per_region: shared::domain::DEFAULT_AGENTS_PER_REGION,
                    version: 0,
                })
            })
            .collect();
        let (health, rx) = watch::channel(None);
        metrics.canaries_total.set(settings.urls.len() as i64);
        metrics.healthy.set(1);
        (Self { settings, targets, prober, health, metrics }, rx)
    }

    /// Probes every canary once, at once, and returns the verdict (without publishing it).
    pub async fn check(&self) -> HealthReport {
        let probes = self.targets.iter().map(|target| {
            let probe = self.prober.probe(target.clone());
            async move { CanaryOutcome::from_report(&target.url, probe.await) }
        });
        let outcomes = futures::future::join_all(probes).await;
        HealthReport::new(outcomes, self.settings.healthy_min, chrono::Utc::now())
    }

    /// Publishes a verdict: metrics, the watch channel, and a log line when it changed or
    /// when canaries failed.
    fn publish(&self, report: HealthReport) {
        self.metrics.healthy.set(i64::from(report.healthy));
        self.metrics.canaries_ok.set(i64::from(report.canaries_ok));
        let previous = self.health.borrow().as_ref().map(|h| h.healthy);
        let failed: Vec<String> = report
            .canaries
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{} ({})", c.url, c.error.map_or("failed", ErrorKind::as_str)))
            .collect();
        if !report.healthy {
            tracing::warn!(
                canaries_ok = report.canaries_ok,
                canaries_total = report.canaries_total,
                healthy_min = report.healthy_min,
                failed = %failed.join(", "),
                "canary self-check failed: this agent's own connectivity is in doubt"
            );
        } else if previous != Some(true) {
            tracing::info!(
                canaries_ok = report.canaries_ok,
                canaries_total = report.canaries_total,
                "canary self-check passed"
            );
        } else if !failed.is_empty() {
            tracing::info!(failed = %failed.join(", "), "some canaries failed; still healthy");
        }
        self.health.send_replace(Some(Arc::new(report)));
    }

    /// Checks now, then every `canary_interval_s`, until `cancel`. A check never overlaps the
    /// next: each canary probe is bounded by `canary_timeout_ms`.
    pub async fn run(self, cancel: CancellationToken) {
        if self.targets.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let report = tokio::select! {
                () = cancel.cancelled() => break,
                report = self.check() => report,
            };
            self.publish(report);
        }
        tracing::debug!("canary self-check stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Timings;
    use futures::future::BoxFuture;

    #[test]
    fn the_verdict_needs_the_minimum_or_a_majority() {
        assert_eq!([majority(1), majority(2), majority(3), majority(4), majority(5)], [1, 2, 2, 3, 3]);
        assert!(verdict(2, majority(3)));
        assert!(!verdict(1, majority(3)));
        assert!(!verdict(1, majority(2)));
        assert!(verdict(1, 1));
        assert!(!verdict(0, 1));
    }

    fn report(ok: bool) -> ProbeReport {
        ProbeReport {
            ok,
            error: (!ok).then_some(ErrorKind::Connect),
            error_detail: (!ok).then(|| "connection refused".to_owned()),
            timings: Timings { total_ms: 1.0, ..Timings::default() },
            status: ok.then_some(200),
            status_matched: Some(ok),
            keyword_matched: None,
            resolved_ip: None,
            resolved_addrs: Vec::new(),
            dns: None,
            dns_error: None,
            connect_attempts: Vec::new(),
            http_version: None,
            redirects: Vec::new(),
            body_bytes: 0,
            body_wire_bytes: 0,
            certificate: None,
            redirect_certificates: Vec::new(),
            earliest_expiry: None,
        }
    }

    /// Succeeds for URLs containing "up".
    struct Fake;

    impl Probe for Fake {
        fn probe(&self, config: Arc<DomainConfig>) -> BoxFuture<'static, ProbeReport> {
            let ok = config.url.contains("up");
            Box::pin(async move { report(ok) })
        }
    }

    fn canaries(urls: &[&str], healthy_min: usize) -> (Canaries, HealthWatch, Metrics) {
        let settings = CanarySettings {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_millis(500),
            healthy_min,
        };
        let metrics = Metrics::default();
        let (canaries, rx) = Canaries::new(settings, Arc::new(Fake), metrics.clone());
        (canaries, rx, metrics)
    }

    #[tokio::test]
    async fn a_check_counts_successes_against_the_minimum() {
        let (c, rx, metrics) = canaries(&["http://up.test/", "http://down.test/"], 2);
        assert!(rx.borrow().is_none(), "no health before the first check");
        let first = c.check().await;
        assert_eq!((first.healthy, first.canaries_ok, first.canaries_total), (false, 1, 2));
        assert_eq!(first.canaries[1].error, Some(ErrorKind::Connect));
        assert_eq!(c.targets[0].timeout_ms, 500);
        c.publish(first);
        assert_eq!(
            (metrics.healthy.get(), metrics.canaries_ok.get(), metrics.canaries_total.get()),
            (0, 1, 2)
        );
        let health = rx.borrow().clone().unwrap();
        let sent = health.to_proto();
        assert!(!sent.healthy && sent.canaries_ok == 1 && sent.canaries_total == 2);
        assert_eq!(sent.checked_at_unix_us, health.checked_at.timestamp_micros());

        let (c, rx, metrics) = canaries(&["http://up.test/a", "http://up.test/b", "http://down.test/"], 2);
        let second = c.check().await;
        c.publish(second);
        assert!(rx.borrow().as_ref().unwrap().healthy);
        assert_eq!(metrics.healthy.get(), 1);
    }

    #[tokio::test]
    async fn without_canaries_there_is_no_check() {
        let (c, rx, metrics) = canaries(&[], 1);
        c.run(CancellationToken::new()).await;
        assert!(rx.borrow().is_none());
        assert_eq!(metrics.healthy.get(), 1);
    }
}
