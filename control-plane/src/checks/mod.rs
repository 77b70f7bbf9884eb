//! "Try a check now": `POST /v1/checks/test` asks the agents of some regions to probe a domain
//! (unsaved, or one of the tenant's) at once and answers with their results within the request.
//!
//! ```text
//! API handler (replica A) ──register request id──▶ Waiters (this replica's waiting requests)
//!        │ PUBLISH ProbeRequest {request_id, config} on <prefix>:probe-requests
//!        ▼
//! agents of the regions: probe now (not added to their catalog), result with request_id
//!        │ gRPC SendBatch (the batch closes at once)
//!        ▼
//! ingest (any replica B): results with a request id are split off the batch, never stored,
//!        │ never given to consensus; PUBLISH each as JSON on <prefix>:check-results
//!        ▼
//! ResultListener (every replica) ──▶ Waiters::deliver: the replica holding the request id
//!                                    hands it to the handler; the others count it `unclaimed`
//! ```
//!
//! Results of test probes never enter the time-series database, consensus, uptime or
//! incidents, also for a saved domain: a test is the operator's question, not a vote. Pub/Sub
//! is at-most-once, so a result lost on the way shows as a missing region, never as a wrong
//! answer. A request waits until every asked region has answered once or `wait_ms` runs out.

pub mod limit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use shared::proto::{self, ErrorKind};
use shared::RedisKeys;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;

/// One agent's answer to a test, as fanned out on `<prefix>:check-results` and (without
/// `request_id`) shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub request_id: Uuid,
    /// From the agent's certificate, never from its payload.
    pub region: String,
    pub agent_id: String,
    pub ok: bool,
    /// `dns`, `connect`, `tls`, `timeout`, `status`, … (`None` when ok).
    pub error_kind: Option<String>,
    pub error_detail: Option<String>,
    /// Final HTTP status; `None` when no response arrived.
    pub status_code: Option<u16>,
    pub timings: Timings,
    pub resolved_ip: Option<String>,
    /// `HTTP/1.1` or `HTTP/2`, of the last hop; `None` when no exchange started.
    #[serde(default)]
    pub http_version: Option<String>,
    pub certificate: Option<Certificate>,
    /// A dns check with `dnssec`: what validation proved of the answer (`secure`, `insecure`,
    /// `bogus`, `indeterminate`); `None` otherwise.
    #[serde(default)]
    pub dnssec: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
}

/// Phase durations in milliseconds; `None` when the phase did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    pub dns_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    pub tls_ms: Option<f64>,
    pub ttfb_ms: Option<f64>,
    pub total_ms: f64,
}

/// The certificate of the last HTTPS hop, recorded even when invalid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CheckCertificate)]
pub struct Certificate {
    pub subject: String,
    pub issuer: String,
    pub not_after: Option<DateTime<Utc>>,
    /// Whole days until `not_after` at the time of the answer (negative once expired).
    pub days_left: Option<i64>,
    /// The chain validates against the agent's roots and the name matches.
    pub valid: bool,
    pub validation_error: Option<String>,
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

impl CheckResult {
    /// The answer in a test result from the agent `region`/`agent_id`; `None` when it carries
    /// no valid request id.
    pub fn from_proto(
        region: &str,
        agent_id: &str,
        result: &proto::ProbeResult,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        let request_id = proto::uuid_from_bytes(result.request_id.as_deref()?)?;
        let error_kind = ErrorKind::try_from(result.error).ok().and_then(ErrorKind::label).map(str::to_owned);
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let certificate = result.certificate.as_ref().map(|c| {
            let not_after = DateTime::from_timestamp(c.not_after_unix_s, 0);
            Certificate {
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                not_after,
                days_left: not_after.map(|at| (at - now).num_seconds().div_euclid(86_400)),
                valid: c.valid,
                validation_error: non_empty(&c.validation_error),
            }
        });
        Some(Self {
            request_id,
            region: region.to_owned(),
            agent_id: agent_id.to_owned(),
            ok: result.ok,
            error_kind,
            error_detail: non_empty(&result.error_detail),
            status_code: u16::try_from(result.status_code).ok().filter(|c| *c != 0),
            timings: Timings {
                dns_ms: result.dns_us.map(ms),
                connect_ms: result.connect_us.map(ms),
                tls_ms: result.tls_us.map(ms),
                ttfb_ms: result.ttfb_us.map(ms),
                total_ms: ms(result.total_us),
            },
            resolved_ip: non_empty(&result.resolved_ip),
            http_version: proto::HttpVersion::try_from(result.http_version)
                .ok()
                .and_then(proto::HttpVersion::label)
                .map(str::to_owned),
            certificate,
            dnssec: proto::DnssecProof::try_from(result.dnssec)
                .ok()
                .and_then(proto::DnssecProof::label)
                .map(str::to_owned),
            started_at: DateTime::from_timestamp_micros(result.started_at_unix_us),
        })
    }
}

type WaiterMap = HashMap<Uuid, mpsc::UnboundedSender<CheckResult>>;

/// The test requests waiting on this replica, by request id. A plain mutex: it is held only to
/// insert, remove or look up one entry, never across an `.await`.
#[derive(Debug, Clone, Default)]
pub struct Waiters {
    inner: Arc<Mutex<WaiterMap>>,
}

/// A registered request: receives its results until dropped (which unregisters it).
#[derive(Debug)]
pub struct Waiting {
    pub request_id: Uuid,
    pub results: mpsc::UnboundedReceiver<CheckResult>,
    waiters: Waiters,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.request_id);
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaiterMap> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new request id; its results arrive on the returned [`Waiting`].
    pub fn register(&self) -> Waiting {
        let request_id = Uuid::now_v7();
        let (tx, results) = mpsc::unbounded_channel();
        self.lock().insert(request_id, tx);
        Waiting { request_id, results, waiters: self.clone() }
    }

    /// Hands `result` to the request waiting for it; `false` when none waits here.
    pub fn deliver(&self, result: CheckResult) -> bool {
        match self.lock().get(&result.request_id) {
            Some(tx) => tx.send(result).is_ok(),
            None => false,
        }
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ingest side: publishes test results on `<prefix>:check-results` for whichever replica
/// waits for them. Cheap to clone.
#[derive(Clone)]
pub struct ResultPublisher {
    pub redis: Client,
    pub keys: RedisKeys,
    pub metrics: Metrics,
}

impl ResultPublisher {
    /// Publishes the test results of one batch from `region`/`agent_id` in the background (the
    /// batch's acknowledgement never waits for Redis). Results without a valid request id are
    /// counted `malformed` and logged; Redis errors are counted `publish_failed` and logged.
    pub fn publish(&self, region: &str, agent_id: &str, results: Vec<proto::ProbeResult>) {
        let now = Utc::now();
        let mut payloads = Vec::with_capacity(results.len());
        for result in &results {
            match CheckResult::from_proto(region, agent_id, result, now) {
                Some(answer) => match serde_json::to_string(&answer) {
                    Ok(json) => payloads.push((answer.request_id, json)),
                    Err(error) => {
                        self.metrics.check_result("malformed", 1);
                        tracing::warn!(%error, "test result not encodable; dropped");
                    }
                },
                None => {
                    self.metrics.check_result("malformed", 1);
                    tracing::warn!(%region, %agent_id, "test result without a valid 16-byte request_id; dropped");
                }
            }
        }
        if payloads.is_empty() {
            return;
        }
        let this = self.clone();
        let (region, agent_id) = (region.to_owned(), agent_id.to_owned());
        tokio::spawn(async move {
            let channel = this.keys.check_results();
            for (request_id, payload) in payloads {
                match this.redis.publish::<i64, _, _>(channel.clone(), payload).await {
                    Ok(_) => this.metrics.check_result("published", 1),
                    Err(error) => {
                        this.metrics.check_result("publish_failed", 1);
                        tracing::warn!(%error, %request_id, %region, %agent_id, "publishing a test result failed; the test will list the region as missing");
                    }
                }
            }
        });
    }
}

/// Every replica's listener on `<prefix>:check-results`: its own subscriber client (subscribed
/// in [`ResultListener::subscribe`] before the API serves, resubscribed after reconnections),
/// handing each result to this replica's [`Waiters`].
pub struct ResultListener {
    subscriber: SubscriberClient,
    messages: broadcast::Receiver<fred::types::Message>,
    channel: String,
    waiters: Waiters,
    metrics: Metrics,
}

impl ResultListener {
    /// Connects `subscriber` and subscribes to the results channel; fails when Redis cannot be
    /// reached (as start-up does anyway).
    pub async fn subscribe(
        subscriber: SubscriberClient,
        keys: &RedisKeys,
        waiters: Waiters,
        metrics: Metrics,
    ) -> Result<Self, fred::error::Error> {
        let messages = subscriber.message_rx();
        subscriber.init().await?;
        let channel = keys.check_results();
        subscriber.subscribe(channel.clone()).await?;
        let _resubscriber = subscriber.manage_subscriptions();
        Ok(Self { subscriber, messages, channel, waiters, metrics })
    }

    /// Hands one payload to its waiting request; returns the outcome counted.
    pub fn handle(&self, payload: &str) -> &'static str {
        let outcome = match serde_json::from_str::<CheckResult>(payload) {
            Ok(result) => {
                if self.waiters.deliver(result) {
                    "delivered"
                } else {
                    "unclaimed"
                }
            }
            Err(error) => {
                tracing::warn!(%error, "malformed check result on the results channel; ignored");
                "malformed"
            }
        };
        self.metrics.check_result(outcome, 1);
        outcome
    }

    /// Runs until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                message = self.messages.recv() => match message {
                    Ok(message) => {
                        if *message.channel != *self.channel {
                            continue;
                        }
                        match message.value.as_str() {
                            Some(payload) => {
                                self.handle(&payload);
                            }
                            None => self.metrics.check_result("malformed", 1),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.metrics.check_result("lost", missed);
                        tracing::warn!(missed, "check results overflowed the subscriber; some tests will list regions as missing");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.messages = self.subscriber.message_rx();
                    }
                },
            }
        }
        let _ = self.subscriber.quit().await;
        tracing::debug!("check result listener stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(request_id: Option<Vec<u8>>) -> proto::ProbeResult {
        proto::ProbeResult {
            ok: false,
            error: ErrorKind::Tls as i32,
            error_detail: "certificate expired".into(),
            status_code: 0,
            dns_us: Some(1_500),
            connect_us: Some(250),
            tls_us: None,
            ttfb_us: None,
            total_us: 4_000,
            resolved_ip: "127.0.0.1".into(),
            certificate: Some(proto::Certificate {
                subject: "CN=example".into(),
                issuer: "CN=ca".into(),
                not_after_unix_s: 1_700_000_000 + 10 * 86_400 + 3_600,
                valid: false,
                validation_error: "expired".into(),
                ..Default::default()
            }),
            request_id,
            ..Default::default()
        }
    }

    #[test]
    fn a_wire_result_reads_as_the_api_shows_it() {
        let id = Uuid::now_v7();
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let result =
            CheckResult::from_proto("ams", "ams-1", &wire(Some(id.as_bytes().to_vec())), now).unwrap();
        assert_eq!(
            (result.request_id, result.region.as_str(), result.agent_id.as_str()),
            (id, "ams", "ams-1")
        );
        assert_eq!(result.error_kind.as_deref(), Some("tls"));
        assert_eq!(result.status_code, None, "no response");
        assert_eq!(result.timings.dns_ms, Some(1.5));
        assert_eq!(result.timings.tls_ms, None);
        assert_eq!(result.timings.total_ms, 4.0);
        assert_eq!(result.dnssec, None, "not a validated dns check");
        let validated = proto::ProbeResult {
            dnssec: proto::DnssecProof::Secure as i32,
            ..wire(Some(id.as_bytes().to_vec()))
        };
        let shown = CheckResult::from_proto("ams", "ams-1", &validated, now).unwrap();
        assert_eq!(shown.dnssec.as_deref(), Some("secure"));
        let cert = result.certificate.unwrap();
        assert_eq!(
            (cert.days_left, cert.valid, cert.validation_error.as_deref()),
            (Some(10), false, Some("expired"))
        );
        assert!(CheckResult::from_proto("ams", "ams-1", &wire(None), now).is_none());
        assert!(CheckResult::from_proto("ams", "ams-1", &wire(Some(vec![1, 2])), now).is_none());
    }

    #[test]
    fn results_reach_only_a_registered_request_until_it_ends() {
        let waiters = Waiters::default();
        let mut waiting = waiters.register();
        let now = Utc::now();
        let result =
            CheckResult::from_proto("ams", "a", &wire(Some(waiting.request_id.as_bytes().to_vec())), now)
                .unwrap();
        assert!(waiters.deliver(result.clone()));
        assert_eq!(waiting.results.try_recv().unwrap(), result);
        let other = CheckResult { request_id: Uuid::now_v7(), ..result.clone() };
        assert!(!waiters.deliver(other), "nobody waits for another id");
        drop(waiting);
        assert!(waiters.is_empty());
        assert!(!waiters.deliver(result), "an ended request receives nothing");
    }
}
