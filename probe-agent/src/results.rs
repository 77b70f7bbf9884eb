//! Probe results: the record every probe produces, the bounded in-process queue that carries
//! them away from the scheduler, and the latest result per domain (served on
//! `/debug/results` and summarised in metrics).
//!
//! The queue never blocks the scheduler: when it is full the result is dropped and counted in
//! `probe_agent_results_dropped_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shared::DomainId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::sync::CatalogHandle;
use crate::metrics::Metrics;
use crate::probe::{ErrorKind, ProbeReport};

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
}

impl ResultSink {
    /// Queues a result; never waits. A full queue drops the result and counts it.
    pub fn push(&self, result: ProbeResult) {
        if let Err(error) = self.tx.try_send(result) {
            self.metrics.results_dropped.inc();
            let result = match &error {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            tracing::warn!(domain_id = %result.domain_id, "result queue full; result dropped");
        }
    }
}

/// A bounded result queue.
pub fn queue(capacity: usize, metrics: Metrics) -> (ResultSink, mpsc::Receiver<ProbeResult>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (ResultSink { tx, metrics }, rx)
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

/// Drains the queue until it closes or `cancel` fires: counts outcomes, logs refusals by the
/// SSRF guard with the domain id, and keeps the latest result per domain. Stands in for the
/// uplink to the control plane.
pub async fn consume(
    mut rx: mpsc::Receiver<ProbeResult>,
    latest: LatestResults,
    catalog: CatalogHandle,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = rx.recv() => {
                let Some(result) = received else { break };
                record(&metrics, &result);
                latest.insert(result);
            }
            _ = prune.tick() => {
                let current = catalog.current();
                latest.retain(|id| current.get(id).is_some());
            }
            () = cancel.cancelled() => {
                // Take what is already queued, then stop.
                while let Ok(result) = rx.try_recv() {
                    record(&metrics, &result);
                    latest.insert(result);
                }
                break;
            }
        }
    }
}

fn record(metrics: &Metrics, result: &ProbeResult) {
    metrics.probe(result.outcome());
    if result.report.error == Some(ErrorKind::BlockedTarget) {
        tracing::warn!(
            domain_id = %result.domain_id,
            detail = result.report.error_detail.as_deref().unwrap_or(""),
            "probe refused by the ssrf guard"
        );
    }
}
