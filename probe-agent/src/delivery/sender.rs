//! The sending side: a tonic channel over mutual TLS to the control plane, and the loop that
//! sends the oldest buffered batches with up to `send_concurrency` in flight, applies each
//! status code's rule, backs off, and on shutdown flushes what it can within the timeout.
//!
//! Batches go out as the bytes encoded when they were closed (a raw codec), so a resend is
//! byte-for-byte the first attempt, with the same batch id. With a spool, a batch's file is
//! deleted with the batch (acknowledged or refused), the spool is fsynced every
//! `spool_fsync_interval_ms` by a task of its own (and once more at the end), and what the
//! shutdown flush could not deliver stays in the spool for the next start instead of being
//! dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures::FutureExt;
use http::uri::PathAndQuery;
use rand::SeedableRng;
use shared::proto;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::client::Grpc;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::backoff::Backoff;
use super::buffer::EncodedBatch;
use super::{DeliverySettings, Shared};
use crate::metrics::dropped;

const SEND_BATCH: &str = "/crosscheck.ingest.v1.Ingest/SendBatch";

/// Retry warnings are logged at most this often; the rest go to debug.
const RETRY_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The lazily connecting channel to the control plane. Fails only on unusable TLS material or
/// URL (checked here, so a bad key is a start-up error rather than a stream of send errors).
pub fn channel(settings: &DeliverySettings) -> Result<Channel, String> {
    shared::tls::certificates("tls_ca", &settings.tls_ca).map_err(|e| e.to_string())?;
    shared::tls::certificates("tls_cert", &settings.tls_cert).map_err(|e| e.to_string())?;
    shared::tls::private_key("tls_key", &settings.tls_key).map_err(|e| e.to_string())?;
    let read = |what, value: &str| shared::tls::read_pem(what, value).map_err(|e| e.to_string());
    let ca = read("tls_ca", &settings.tls_ca)?;
    let cert = read("tls_cert", &settings.tls_cert)?;
    let key = read("tls_key", &settings.tls_key)?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .assume_http2(true);
    if let Some(name) = &settings.server_name {
        tls = tls.domain_name(name.clone());
    }
    let endpoint = Endpoint::from_shared(settings.url.clone())
        .map_err(|e| format!("control_plane_url {:?}: {e}", settings.url))?
        .user_agent(concat!("crosscheck-probe-agent/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| format!("user agent: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("tls configuration: {e}"))?
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .http2_keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_interval.min(Duration::from_secs(20)))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// What to do with a batch after a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (or stored before): remove it.
    Acknowledged,
    /// Refused as invalid: resending it unchanged would fail forever; drop and count it.
    Rejected,
    /// This agent is not allowed (revoked certificate, region not configured): keep the batch
    /// and wait the maximum backoff.
    Denied,
    /// A transient failure: keep the batch and back off.
    Retry,
}

/// The rule for a failed send's status code. Codes the protocol does not name are retried: a
/// result is only given up on when the control plane says it is invalid.
pub fn classify(code: Code) -> Outcome {
    match code {
        Code::Ok => Outcome::Acknowledged,
        Code::InvalidArgument => Outcome::Rejected,
        Code::PermissionDenied | Code::Unauthenticated => Outcome::Denied,
        _ => Outcome::Retry,
    }
}

fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A status with its source chain (transport errors keep the useful part there).
fn describe(status: &Status) -> String {
    let mut text = format!("{}: {}", code_label(status.code()), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        text.push_str(&format!(": {error}"));
        source = error.source();
    }
    text
}

/// Sends pre-encoded `Batch` bytes; decodes the `Ack` with prost.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Default)]
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = proto::Ack;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::Ack>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// The sender task; see the module documentation.
#[derive(Debug)]
pub struct Sender {
    settings: DeliverySettings,
    client: Grpc<Channel>,
    shared: Arc<Shared>,
}

struct Sent {
    batch: Arc<EncodedBatch>,
    result: Result<proto::Ack, Status>,
    latency: Duration,
}

impl Sender {
    pub(super) fn new(settings: DeliverySettings, channel: Channel, shared: Arc<Shared>) -> Self {
        Self { settings, client: Grpc::new(channel), shared }
    }

    /// Sends until the input is closed and everything is delivered, or until
    /// `shutdown_flush_timeout` after the input closed; then counts what is left as dropped
    /// (what has a spool file is kept there instead).
    pub async fn run(self) {
        let shared = self.shared.clone();
        let syncing = CancellationToken::new();
        let syncer = shared
            .spool
            .as_ref()
            .and_then(|spool| spool.fsync_interval())
            .map(|every| tokio::spawn(sync_spool(Arc::downgrade(&shared), every, syncing.clone())));
        self.deliver().await;
        syncing.cancel();
        if let Some(syncer) = syncer {
            if let Err(error) = syncer.await {
                tracing::error!(%error, "spool fsync task failed");
            }
        }
    }

    async fn deliver(&self) {
        let shared = self.shared.clone();
        let mut in_flight: JoinSet<Sent> = JoinSet::new();
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut paused_until: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;
        let mut last_retry_warning: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            if paused_until.is_some_and(|until| now >= until) {
                paused_until = None;
            }
            if paused_until.is_none() {
                while in_flight.len() < self.settings.send_concurrency {
                    let Some(batch) = shared.lock().buffer.next_to_send() else { break };
                    in_flight.spawn(send(self.client.clone(), batch, self.settings.request_timeout));
                }
            }
            if drain_deadline.is_some() && in_flight.is_empty() && shared.lock().buffer.is_empty() {
                tracing::info!("delivery flushed: every result was acknowledged");
                return;
            }
            tokio::select! {
                joined = in_flight.join_next(), if !in_flight.is_empty() => {
                    match joined {
                        Some(Ok(sent)) => self.outcome(
                            sent,
                            &mut backoff,
                            &mut rng,
                            &mut paused_until,
                            &mut last_retry_warning,
                        ),
                        Some(Err(error)) => {
                            // Panics are caught inside the task; only an abort ends up here.
                            tracing::error!(%error, "batch send task failed");
                        }
                        None => {}
                    }
                }
                _ = shared.wake.notified() => {}
                _ = sleep_until(paused_until), if paused_until.is_some() => {}
                _ = shared.input_closed.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + self.settings.shutdown_flush_timeout);
                    let state = shared.lock();
                    tracing::info!(
                        batches = state.buffer.len(),
                        results = state.buffer.results(),
                        timeout_ms = self.settings.shutdown_flush_timeout.as_millis() as u64,
                        "shutting down: delivering buffered results"
                    );
                    // Shutting down: retry now rather than wait out a long backoff.
                    paused_until = paused_until.map(|until| until.min(Instant::now() + self.settings.min_backoff));
                }
                _ = sleep_until(drain_deadline), if drain_deadline.is_some() => break,
                _ = tick.tick() => {
                    let now = Instant::now();
                    let mut state = shared.lock();
                    let expired = state.buffer.expire(now);
                    shared.account_drop(&mut state, dropped::EXPIRED, expired, now);
                    shared.update_gauges(&state, now);
                }
            }
        }
        in_flight.abort_all();
        let now = Instant::now();
        let mut state = shared.lock();
        let left = state.buffer.drain();
        shared.update_gauges(&state, now);
        drop(state);
        let (kept, lost): (Vec<_>, Vec<_>) = left
            .iter()
            .partition(|batch| shared.spool.as_ref().is_some_and(|spool| spool.contains(batch.id)));
        let count = |batches: &[&Arc<EncodedBatch>]| batches.iter().map(|b| b.results).sum::<usize>();
        let timeout_ms = self.settings.shutdown_flush_timeout.as_millis() as u64;
        if !lost.is_empty() {
            shared.metrics.dropped(dropped::SHUTDOWN, count(&lost) as u64);
            tracing::warn!(
                batches = lost.len(),
                results = count(&lost),
                timeout_ms,
                "shutdown flush timed out: results remain undelivered"
            );
        }
        if !kept.is_empty() {
            tracing::warn!(
                batches = kept.len(),
                results = count(&kept),
                timeout_ms,
                "shutdown flush timed out: undelivered results stay in the spool and are sent after the next start"
            );
        }
    }

    fn outcome(
        &self,
        sent: Sent,
        backoff: &mut Backoff,
        rng: &mut rand::rngs::StdRng,
        paused_until: &mut Option<Instant>,
        last_retry_warning: &mut Option<Instant>,
    ) {
        let metrics = &self.shared.metrics;
        let batch = &sent.batch;
        let now = Instant::now();
        let status = match sent.result {
            Ok(ack) => {
                metrics.delivery_ack_latency.observe(sent.latency.as_secs_f64());
                if ack.batch_id != batch.id.as_bytes() {
                    tracing::warn!(batch_id = %batch.id, "acknowledgement names another batch id");
                }
                let removed = self.shared.remove(batch.id, now);
                metrics.batch_sent(if ack.duplicate { "duplicate" } else { "stored" });
                if removed.is_some() {
                    metrics.delivery_results_acknowledged.inc_by(batch.results as u64);
                }
                tracing::debug!(batch_id = %batch.id, results = batch.results, stored = ack.stored, duplicate = ack.duplicate, "batch acknowledged");
                if backoff.failures() > 0 {
                    tracing::info!(
                        failures = backoff.failures(),
                        "control plane acknowledging batches again"
                    );
                }
                backoff.reset();
                *paused_until = None;
                return;
            }
            Err(status) => status,
        };
        metrics.send_error(code_label(status.code()));
        match classify(status.code()) {
            Outcome::Acknowledged => unreachable!("an error status is never OK"),
            Outcome::Rejected => {
                metrics.batch_sent("rejected");
                let removed = self.shared.remove(batch.id, now);
                if removed.is_some() {
                    metrics.dropped(dropped::REJECTED, batch.results as u64);
                }
                tracing::error!(
                    batch_id = %batch.id,
                    results = batch.results,
                    bytes = batch.bytes.len(),
                    message = status.message(),
                    "control plane refused a batch as invalid; dropped it (resending would fail again)"
                );
            }
            Outcome::Denied => {
                metrics.batch_sent("denied");
                self.shared.lock().buffer.release(batch.id);
                let wait = backoff.fail_hard();
                *paused_until = Some(now + wait);
                tracing::error!(
                    error = describe(&status),
                    wait_ms = wait.as_millis() as u64,
                    "control plane refused this agent: its certificate may be revoked or its region \
                     not configured; keeping results and retrying at the maximum backoff"
                );
            }
            Outcome::Retry => {
                metrics.batch_sent("retry");
                self.shared.lock().buffer.release(batch.id);
                // Several batches failing together are one outage: escalate once per pause.
                if paused_until.is_none_or(|until| now >= until) {
                    let wait = backoff.fail(rng);
                    *paused_until = Some(now + wait);
                    if last_retry_warning.is_none_or(|last| now >= last + RETRY_WARNING_EVERY) {
                        *last_retry_warning = Some(now);
                        tracing::warn!(
                            error = describe(&status),
                            failures = backoff.failures(),
                            wait_ms = wait.as_millis() as u64,
                            "sending results to the control plane failed; keeping them and retrying"
                        );
                    } else {
                        tracing::debug!(
                            error = describe(&status),
                            wait_ms = wait.as_millis() as u64,
                            "send failed"
                        );
                    }
                }
            }
        }
    }
}

/// Fsyncs the spool every `every` (on a blocking thread) until `stop`, then once more. Holds
/// the spool only while syncing, so a sender aborted without stopping it (a runtime shutting
/// down) still releases the spool and its lock.
async fn sync_spool(shared: std::sync::Weak<Shared>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        let Some(syncing) = shared.upgrade() else { return };
        let synced = tokio::task::spawn_blocking(move || {
            if let Some(spool) = &syncing.spool {
                spool.sync();
            }
        })
        .await;
        if let Err(error) = synced {
            tracing::error!(%error, "spool fsync panicked");
        }
        if stopping {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn send(mut client: Grpc<Channel>, batch: Arc<EncodedBatch>, timeout: Duration) -> Sent {
    let started = Instant::now();
    let call = async {
        client.ready().await.map_err(|e| Status::unavailable(format!("control plane not reachable: {e}")))?;
        let mut request = tonic::Request::new(batch.bytes.clone());
        request.set_timeout(timeout);
        client
            .unary(request, PathAndQuery::from_static(SEND_BATCH), RawCodec)
            .await
            .map(tonic::Response::into_inner)
    };
    let limited = async {
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!("no acknowledgement within {timeout:?}"))),
        }
    };
    // A panic in the transport must not leave the batch marked in flight forever.
    let result = std::panic::AssertUnwindSafe(limited)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(Status::internal("the send task panicked")));
    Sent { batch, result, latency: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_the_protocol_rules() {
        assert_eq!(classify(Code::InvalidArgument), Outcome::Rejected);
        assert_eq!(classify(Code::PermissionDenied), Outcome::Denied);
        assert_eq!(classify(Code::Unauthenticated), Outcome::Denied);
        for code in [Code::Unavailable, Code::ResourceExhausted, Code::DeadlineExceeded, Code::Internal] {
            assert_eq!(classify(code), Outcome::Retry, "{code:?}");
        }
        assert_eq!(code_label(Code::ResourceExhausted), "resource_exhausted");
    }
}
