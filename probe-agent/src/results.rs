//! Probe results: the record every probe produces, the bounded in-process queue that carries
//! them away from the scheduler, and the latest result per domain (served on
//! `/debug/results` and summarised in metrics).
//!
//! The queue never blocks the scheduler: when it is full the result is dropped and counted in
//! `probe_agent_results_dropped_total{reason="queue_full"}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shared::DomainId;
use tokio::sync::mpsc;

use crate::catalog::sync::CatalogHandle;
use crate::delivery::Batching;
use crate::metrics::{dropped, Metrics};
use crate::probe::{AttemptOutcome, ErrorKind, ProbeReport};

/// Why a probe ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Scheduled,
    /// Requested through [`crate::scheduler::ProbeNow`] (confirmation probes).
    OnDemand,
}

/// One probe of one domain from this agent.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub domain_id: DomainId,
    /// The configuration version the probe used.
    pub config_version: u64,
    pub region: String,
    pub trigger: Trigger,
    /// The operator's test this probe answers (`POST /v1/checks/test`); such a result is
    /// delivered at once and kept out of the latest results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<uuid::Uuid>,
    /// When the probe was planned to start (wall clock).
    pub planned_at: chrono::DateTime<chrono::Utc>,
    /// Actual start minus planned start.
    pub lag_ms: f64,
    pub report: ProbeReport,
}

impl ProbeResult {
    /// The label used for `probe_agent_probes_total{outcome}`: `ok` or the error kind.
    pub fn outcome(&self) -> &'static str {
        self.report.error.map_or("ok", ErrorKind::as_str)
    }
}

/// The sending side of the result queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ResultSink {
    tx: mpsc::Sender<ProbeResult>,
    metrics: Metrics,
    /// Unix second of the last "dropped" warning, so a saturated queue logs once per interval.
    last_warning: Arc<AtomicU64>,
}

const DROP_WARNING_EVERY_S: u64 = 10;

impl ResultSink {
    /// Queues a result; never waits. A full queue drops the result and counts it.
    pub fn push(&self, result: ProbeResult) {
        match self.tx.try_send(result) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(result)) => {
                self.metrics.dropped(dropped::QUEUE_FULL, 1);
                let now = unix_seconds();
                let last = self.last_warning.load(Ordering::Relaxed);
                if now >= last + DROP_WARNING_EVERY_S
                    && self
                        .last_warning
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        domain_id = %result.domain_id,
                        dropped_total = self.metrics.dropped_count(dropped::QUEUE_FULL),
                        "result queue full; results are being dropped"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(result)) => {
                self.metrics.dropped(dropped::QUEUE_FULL, 1);
                tracing::debug!(domain_id = %result.domain_id, "result after the consumer stopped; dropped");
            }
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A bounded result queue.
pub fn queue(capacity: usize, metrics: Metrics) -> (ResultSink, mpsc::Receiver<ProbeResult>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (ResultSink { tx, metrics, last_warning: Arc::new(AtomicU64::new(0)) }, rx)
}

/// The latest result of each domain. A plain mutex: it is only held to swap one entry, never
/// across an `.await`.
#[derive(Debug, Clone, Default)]
pub struct LatestResults {
    inner: Arc<Mutex<HashMap<DomainId, Arc<ProbeResult>>>>,
}

impl LatestResults {
    pub fn get(&self, id: &DomainId) -> Option<Arc<ProbeResult>> {
        self.inner.lock().expect("latest results lock").get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<ProbeResult>> {
        self.inner.lock().expect("latest results lock").values().cloned().collect()
    }

    fn insert(&self, result: ProbeResult) {
        self.inner.lock().expect("latest results lock").insert(result.domain_id, Arc::new(result));
    }

    /// Forgets domains no longer in the catalog.
    fn retain(&self, keep: impl Fn(&DomainId) -> bool) {
        self.inner.lock().expect("latest results lock").retain(|id, _| keep(id));
    }
}

/// Drains the queue until every sender is gone (the scheduler and its workers stopped, so the
/// last results are kept): counts outcomes, logs refusals by the SSRF guard with the domain id,
/// keeps the latest result per domain, and feeds the batcher when delivery is configured
/// (closing batches by age on its deadline). At the end the open batch is closed and the
/// sender told that no more results will come.
pub async fn consume(
    mut rx: mpsc::Receiver<ProbeResult>,
    latest: LatestResults,
    catalog: CatalogHandle,
    metrics: Metrics,
    mut batching: Option<Batching>,
) {
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = batching.as_ref().and_then(Batching::deadline);
        tokio::select! {
            received = rx.recv() => {
                let Some(result) = received else { break };
                record(&metrics, &result);
                if let Some(batching) = &mut batching {
                    batching.push(&result);
                }
                if let Some(request_id) = result.request_id {
                    // A test is not the domain's state: the latest result stays the schedule's.
                    tracing::info!(
                        domain_id = %result.domain_id, %request_id, outcome = result.outcome(),
                        delivered = batching.is_some(), "test probe done"
                    );
                } else {
                    latest.insert(result);
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                if let Some(batching) = &mut batching {
                    batching.flush_due();
                }
            }
            _ = prune.tick() => {
                let current = catalog.current();
                latest.retain(|id| current.get(id).is_some());
                if let Some(batching) = &mut batching {
                    batching.retain(|id| current.get(id).is_some());
                }
            }
        }
    }
    if let Some(batching) = batching {
        batching.finish();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn record(metrics: &Metrics, result: &ProbeResult) {
    metrics.probe(result.outcome());
    if let Some(reason) = result.report.dns_error {
        metrics.dns_failure(reason.as_str());
    }
    if let Some(proof) = result.report.dns.as_ref().and_then(|dns| dns.dnssec) {
        metrics
            .dnssec_proofs
            .get_or_create(&crate::metrics::ProofLabels { proof: proof.as_str().into() })
            .inc();
    }
    let attempted = result.report.connect_attempts.iter().filter(|a| a.started_ms.is_some());
    if attempted.clone().any(|a| a.outcome == AttemptOutcome::Connected)
        && attempted.clone().next().is_some_and(|first| first.outcome != AttemptOutcome::Connected)
    {
        metrics.connect_fallbacks.inc();
    }
    if result.report.error == Some(ErrorKind::BlockedTarget) {
        tracing::warn!(
            domain_id = %result.domain_id,
            detail = result.report.error_detail.as_deref().unwrap_or(""),
            "probe refused by the ssrf guard"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{ConnectAttempt, DnsErrorReason};

    fn attempt(ip: &str, outcome: AttemptOutcome, started: Option<f64>) -> ConnectAttempt {
        ConnectAttempt { ip: ip.parse().unwrap(), outcome, started_ms: started, took_ms: None, detail: None }
    }

    #[test]
    fn dns_reasons_and_connect_fallbacks_are_counted() {
        let metrics = Metrics::default();
        let mut result = crate::delivery::convert::tests::realistic(DomainId::new(), false, false);
        result.report.error = Some(ErrorKind::Dns);
        result.report.dns_error = Some(DnsErrorReason::Servfail);
        result.report.connect_attempts.clear();
        record(&metrics, &result);
        assert_eq!(metrics.dns_failure_count("servfail"), 1);
        assert_eq!(metrics.dns_failure_count("nxdomain"), 0);
        assert_eq!(metrics.dnssec_proof_count(crate::probe::DnssecProof::Bogus), 0, "not validated");
        result.report.dns.as_mut().unwrap().dnssec = Some(crate::probe::DnssecProof::Bogus);
        record(&metrics, &result);
        assert_eq!(metrics.dnssec_proof_count(crate::probe::DnssecProof::Bogus), 1);
        assert_eq!(metrics.dnssec_proof_count(crate::probe::DnssecProof::Secure), 0);

        let mut result = crate::delivery::convert::tests::realistic(DomainId::new(), true, false);
        record(&metrics, &result);
        assert_eq!(metrics.connect_fallbacks.get(), 0, "the first address connected");
        // A blocked address is not an attempt: connecting to the first one tried is no fallback.
        result.report.connect_attempts = vec![
            attempt("::1", AttemptOutcome::Blocked, None),
            attempt("127.0.0.1", AttemptOutcome::Connected, Some(0.0)),
        ];
        record(&metrics, &result);
        assert_eq!(metrics.connect_fallbacks.get(), 0);
        result.report.connect_attempts = vec![
            attempt("::1", AttemptOutcome::Refused, Some(0.0)),
            attempt("127.0.0.1", AttemptOutcome::Connected, Some(0.3)),
        ];
        record(&metrics, &result);
        assert_eq!(metrics.connect_fallbacks.get(), 1);
    }
}
