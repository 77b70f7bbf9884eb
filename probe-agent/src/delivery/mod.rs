//! Delivery of probe results to the control plane: batching, a bounded buffer of
//! unacknowledged batches, an optional on-disk spool of both, and a gRPC sender over mutual
//! TLS.
//!
//! ```text
//! result consumer ──push──▶ Batching (open batch: count / age / status change)
//!                                │ (spool: each result appended to the journal)
//!                                │ close: UUID v7 id, encoded once (spool: a file per batch)
//!                                ▼
//!                 Buffer of unacknowledged batches (bytes + age bounds, oldest dropped first)
//!                                │ oldest first, up to send_concurrency in flight
//!                                ▼
//!                 Sender ──SendBatch over mTLS──▶ control plane
//!                    OK / duplicate: removed      INVALID_ARGUMENT: dropped (`rejected`)
//!                    UNAVAILABLE, …: kept, jittered backoff
//!                    PERMISSION_DENIED / UNAUTHENTICATED: kept, maximum backoff, logged as errors
//! ```
//!
//! Nothing here waits on the network on the probing side: [`Batching::push`] only converts,
//! appends and (when a batch closes) encodes it and stores it in the buffer; a control plane
//! that is down fills the buffer, and the buffer drops its oldest batches, counted in
//! `probe_agent_results_dropped_total{reason}` and logged at most every few seconds.
//!
//! Without `spool_dir` all of this is in memory: a graceful stop flushes it (within
//! `shutdown_flush_timeout_ms`), a kill loses the open batch and the unacknowledged ones. With
//! it, the [`spool`] keeps both on disk and [`build`] loads them back at the next start.
//!
//! - `convert`: agent result → protobuf; `batcher`: the open batch (pure);
//! - `buffer`: unacknowledged batches (pure); `backoff`: full-jitter exponential backoff;
//! - `spool`: the spool directory (journal, batch files, replay, lock);
//! - `sender`: the channel, the send loop, the outcome of each status code, the shutdown flush.

mod backoff;
mod batcher;
mod buffer;
pub(crate) mod convert;
mod sender;
pub mod spool;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use shared::proto;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use batcher::{Batcher, Closed, Trigger};
pub use buffer::{Buffer, Dropped, EncodedBatch};
pub use convert::to_proto;
pub use sender::{classify, Outcome, Sender};

use crate::canary::{HealthReport, HealthWatch};
use crate::config::Config;
use crate::metrics::{dropped, Metrics, ReasonLabels};
use crate::results::ProbeResult;
use crate::scheduler::{Saturation, SaturationReport};
use spool::{Journal, Spool, SpoolSettings};

/// Upper bound of the encoded size of one realistic result with its server certificate,
/// including its framing inside a batch. Measured by `convert::tests::encoded_sizes_…`: 82 B
/// for a successful result without a certificate, 110 B for a failed one with an error
/// detail, 275 B with a typical certificate (two SANs, a Let's Encrypt issuer, a 36-digit
/// serial); the answer's TTL is included, the answer set and the connection attempts only
/// when there was more than one address or attempt.
pub const RESULT_BYTES_WITH_CERTIFICATE: usize = 320;

/// Default `buffer_max_age_s`: twice the 5-minute outage the buffer is sized for, so results
/// from the start of such an outage are still buffered while the backlog drains afterwards.
pub const DEFAULT_BUFFER_MAX_AGE_S: u64 = 600;

/// Default `buffer_max_bytes`, sized to ride out a 5-minute control-plane outage at 1,000
/// probes/s: 300 s × 1,000 results/s = 300,000 results; at the worst case of every result
/// carrying a certificate, 300,000 × 320 B ([`RESULT_BYTES_WITH_CERTIFICATE`], itself ~18 %
/// above the measured 271 B) = 96 MB. 128 MiB (134 MB) leaves ~40 % on top of that for
/// longer SAN lists and error details: ~8 minutes of results with certificates at the
/// measured size, ~28 minutes of results without. Batch framing (id, version, region) adds under 100 B
/// per batch, negligible at 500 results per batch.
pub const DEFAULT_BUFFER_MAX_BYTES: usize = 128 * 1024 * 1024;

/// Drop warnings are logged at most this often (each with the totals since the last one).
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Delivery settings, from the agent configuration. `Debug` leaves the key out (it may be the
/// PEM text itself).
#[derive(Clone)]
pub struct DeliverySettings {
    pub url: String,
    /// PEM file paths or PEM text.
    pub tls_ca: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub server_name: Option<String>,
    /// Sent as `claimed_region` (informational; the certificate decides).
    pub region: String,
    pub batch_max_results: usize,
    pub batch_max_age: Duration,
    pub buffer_max_bytes: usize,
    pub buffer_max_age: Duration,
    pub send_concurrency: usize,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub shutdown_flush_timeout: Duration,
    /// The spool directory (`spool_dir`); `None`: batches are kept in memory only.
    pub spool_dir: Option<std::path::PathBuf>,
    /// How often the spool is fsynced (`spool_fsync_interval_ms`); `None`: never.
    pub spool_fsync_interval: Option<Duration>,
}

impl std::fmt::Debug for DeliverySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySettings")
            .field("url", &self.url)
            .field("server_name", &self.server_name)
            .field("region", &self.region)
            .field("batch_max_results", &self.batch_max_results)
            .field("batch_max_age", &self.batch_max_age)
            .field("buffer_max_bytes", &self.buffer_max_bytes)
            .field("buffer_max_age", &self.buffer_max_age)
            .field("send_concurrency", &self.send_concurrency)
            .field("request_timeout", &self.request_timeout)
            .field("spool_dir", &self.spool_dir)
            .field("spool_fsync_interval", &self.spool_fsync_interval)
            .finish_non_exhaustive()
    }
}

impl DeliverySettings {
    /// `None` when `control_plane_url` is not set (delivery disabled).
    pub fn from_config(config: &Config) -> Option<Self> {
        let url = config.control_plane_url.clone()?;
        Some(Self {
            url,
            tls_ca: config.tls_ca.clone().unwrap_or_default(),
            tls_cert: config.tls_cert.clone().unwrap_or_default(),
            tls_key: config.tls_key.clone().unwrap_or_default(),
            server_name: config.tls_server_name.clone(),
            region: config.region.clone(),
            batch_max_results: config.batch_max_results,
            batch_max_age: Duration::from_millis(config.batch_max_age_ms),
            buffer_max_bytes: config.buffer_max_bytes,
            buffer_max_age: Duration::from_secs(config.buffer_max_age_s),
            send_concurrency: config.send_concurrency,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            connect_timeout: Duration::from_millis(config.delivery_connect_timeout_ms),
            keepalive_interval: Duration::from_secs(config.keepalive_interval_s),
            min_backoff: Duration::from_millis(config.resend_min_backoff_ms),
            max_backoff: Duration::from_millis(config.resend_max_backoff_ms),
            shutdown_flush_timeout: Duration::from_millis(config.shutdown_flush_timeout_ms),
            spool_dir: config.spool_dir.clone(),
            spool_fsync_interval: (config.spool_fsync_interval_ms > 0)
                .then(|| Duration::from_millis(config.spool_fsync_interval_ms)),
        })
    }
}

/// Builds both halves of delivery: the batching side for the result consumer and the sender
/// task. `health` is the agent's latest canary verdict and `saturation` its saturation
/// monitor, both attached to every batch when it is encoded. The channel connects lazily, so
/// this works while the control plane is down. With `spool_dir` set the spool is opened (its
/// lock taken) and what a previous run left there is loaded into the buffer before anything
/// else (see [`spool`]). Fails on unusable TLS material or URL (`invalid configuration: …`) and
/// on a spool directory that cannot be created or locked, or that another agent holds
/// ([`spool::OpenError`]). Must run inside a Tokio runtime.
pub fn build(
    settings: DeliverySettings,
    metrics: Metrics,
    health: HealthWatch,
    saturation: Saturation,
) -> anyhow::Result<(Batching, Sender)> {
    let channel = sender::channel(&settings).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let (spool, journal, replay) = match &settings.spool_dir {
        Some(dir) => {
            let spool_settings = SpoolSettings {
                dir: dir.clone(),
                fsync_interval: settings.spool_fsync_interval,
                region: settings.region.clone(),
            };
            let (spool, journal, replay) = Spool::open(&spool_settings, metrics.clone())?;
            (Some(spool), journal, replay)
        }
        None => (None, None, spool::Replay::default()),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Buffer::new(settings.buffer_max_bytes, settings.buffer_max_age),
            drops_since_warning: Dropped::default(),
            last_drop_warning: None,
        }),
        wake: Notify::new(),
        input_closed: CancellationToken::new(),
        metrics: metrics.clone(),
        spool,
    });
    for trigger in [Trigger::Count, Trigger::Age, Trigger::StatusChange, Trigger::Test, Trigger::Shutdown] {
        let _ =
            metrics.delivery_batches_created.get_or_create(&ReasonLabels { reason: trigger.as_str().into() });
    }
    let mut batching = Batching {
        batcher: Batcher::new(settings.batch_max_results, settings.batch_max_age),
        region: settings.region.clone(),
        health,
        saturation,
        journal,
        shared: shared.clone(),
    };
    batching.replay(replay);
    Ok((batching, Sender::new(settings, channel, shared)))
}

/// State shared by the batching side and the sender.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken when a batch is buffered.
    wake: Notify,
    /// Cancelled when no more results will come (the result consumer finished).
    input_closed: CancellationToken,
    metrics: Metrics,
    /// The spool directory, when configured: a batch leaving the buffer leaves it too.
    spool: Option<Spool>,
}

#[derive(Debug)]
struct State {
    buffer: Buffer,
    drops_since_warning: Dropped,
    last_drop_warning: Option<Instant>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts results dropped by a buffer bound, deletes their spool files and logs them, at
    /// most every [`DROP_WARNING_EVERY`].
    fn account_drop(&self, state: &mut State, reason: &'static str, dropped: Dropped, now: Instant) {
        if dropped.is_empty() {
            return;
        }
        if let Some(spool) = &self.spool {
            for id in &dropped.ids {
                spool.remove(*id);
            }
        }
        self.metrics.dropped(reason, dropped.results as u64);
        let pending = &mut state.drops_since_warning;
        pending.batches += dropped.batches;
        pending.results += dropped.results;
        pending.bytes += dropped.bytes;
        if state.last_drop_warning.is_none_or(|last| now >= last + DROP_WARNING_EVERY) {
            let pending = std::mem::take(&mut state.drops_since_warning);
            state.last_drop_warning = Some(now);
            tracing::warn!(
                reason,
                batches = pending.batches,
                results = pending.results,
                bytes = pending.bytes,
                buffered_bytes = state.buffer.bytes(),
                oldest_buffered_s = state.buffer.oldest_age(now).as_secs(),
                "delivery buffer full or expired: dropping the oldest unacknowledged results"
            );
        }
    }

    /// Removes a delivered or refused batch from the buffer and the spool; `None` when it was
    /// no longer buffered.
    fn remove(&self, id: uuid::Uuid, now: Instant) -> Option<Arc<EncodedBatch>> {
        let removed = {
            let mut state = self.lock();
            let removed = state.buffer.remove(id);
            self.update_gauges(&state, now);
            removed
        };
        if let Some(spool) = &self.spool {
            spool.remove(id);
        }
        removed
    }

    fn update_gauges(&self, state: &State, now: Instant) {
        let m = &self.metrics;
        m.delivery_buffered_results.set(state.buffer.results() as i64);
        m.delivery_buffered_bytes.set(state.buffer.bytes() as i64);
        m.delivery_oldest_buffered_age.set(state.buffer.oldest_age(now).as_secs_f64());
    }
}

/// The batching side, driven by the result consumer. Dropping it tells the sender that no
/// more results will come (it then flushes and stops).
#[derive(Debug)]
pub struct Batching {
    batcher: Batcher,
    region: String,
    /// The agent's latest self-check, attached to each batch as it is encoded.
    health: HealthWatch,
    /// The agent's saturation, reported with each batch as it is encoded.
    saturation: Saturation,
    /// The open batch's journal in the spool (`None` without a spool, or when it cannot be
    /// opened).
    journal: Option<Journal>,
    shared: Arc<Shared>,
}

impl Batching {
    /// Adds a result to the open batch (and to the spool's journal); closes and buffers the
    /// batch when this result fills it or changes its domain's status. Never waits on the
    /// network; with a spool, one `write(2)`.
    /// An operator's test result (`request_id` set) closes the batch at once.
    pub fn push(&mut self, result: &ProbeResult) {
        let now = Instant::now();
        let converted = to_proto(result);
        if let (Some(spool), Some(journal)) = (&self.shared.spool, &mut self.journal) {
            spool.append(journal, &converted);
        }
        if result.request_id.is_some() {
            let closed = self.batcher.push_test(converted);
            self.close(closed, now);
        } else if let Some(closed) = self.batcher.push(result.domain_id, converted, now) {
            self.close(closed, now);
        }
        self.shared.metrics.delivery_open_results.set(self.batcher.len() as i64);
    }

    /// When the open batch must be closed for age.
    pub fn deadline(&self) -> Option<Instant> {
        self.batcher.deadline()
    }

    /// Closes the open batch if it is old enough.
    pub fn flush_due(&mut self) {
        let now = Instant::now();
        if let Some(closed) = self.batcher.flush_due(now) {
            self.close(closed, now);
        }
    }

    /// Forgets the last status of domains that are gone.
    pub fn retain(&mut self, keep: impl Fn(&shared::DomainId) -> bool) {
        self.batcher.retain(keep);
    }

    /// Closes the open batch and tells the sender no more results will come.
    pub fn finish(mut self) {
        if let Some(closed) = self.batcher.take(Trigger::Shutdown) {
            self.close(closed, Instant::now());
        }
        // Dropping `self` closes the input.
    }

    fn close(&mut self, closed: Closed, now: Instant) {
        self.shared
            .metrics
            .delivery_batches_created
            .get_or_create(&ReasonLabels { reason: closed.trigger.as_str().into() })
            .inc();
        let batches = encode(closed.results, &self.region, Some(self.current_health()), now);
        self.buffer(batches, now);
    }

    /// The health sent with a batch closed now.
    fn current_health(&self) -> proto::AgentHealth {
        let saturation = self.saturation.report(chrono::Utc::now());
        self.shared.metrics.saturated.set(i64::from(saturation.saturated));
        agent_health(self.health.borrow().as_deref(), &saturation)
    }

    /// Writes closed batches to the spool (when there is one), then buffers them.
    fn buffer(&mut self, batches: Vec<EncodedBatch>, now: Instant) {
        let shared = self.shared.clone();
        if let Some(spool) = &shared.spool {
            spool.store(self.journal.as_mut(), &batches);
        }
        let mut state = shared.lock();
        for batch in batches {
            let dropped = state.buffer.push(batch);
            shared.account_drop(&mut state, dropped::BUFFER_FULL, dropped, now);
        }
        shared.update_gauges(&state, now);
        drop(state);
        shared.metrics.delivery_open_results.set(self.batcher.len() as i64);
        shared.wake.notify_one();
    }

    /// Loads what a previous run left in the spool, oldest first and under the buffer's
    /// bounds (counted as drops like any other): its batch files with their own ids and ages,
    /// then the results of its open batch as a new batch (they were never sent).
    fn replay(&mut self, replay: spool::Replay) {
        if replay.batches.is_empty() && replay.open.is_empty() {
            return;
        }
        let now = Instant::now();
        let shared = self.shared.clone();
        let (mut batches, mut results) = (replay.batches.len(), 0);
        {
            let mut state = shared.lock();
            let max_age = state.buffer.max_age();
            for batch in replay.batches {
                results += batch.results;
                if batch.age > max_age {
                    let expired = Dropped {
                        batches: 1,
                        results: batch.results,
                        bytes: batch.bytes.len(),
                        ids: vec![batch.id],
                    };
                    shared.account_drop(&mut state, dropped::EXPIRED, expired, now);
                    continue;
                }
                // A batch older than the monotonic clock (the machine restarted since) starts
                // its age afresh: it is still within the bound.
                let created = now.checked_sub(batch.age).unwrap_or(now);
                let dropped = state.buffer.push(EncodedBatch {
                    id: batch.id,
                    results: batch.results,
                    bytes: batch.bytes,
                    created,
                });
                shared.account_drop(&mut state, dropped::BUFFER_FULL, dropped, now);
            }
            shared.update_gauges(&state, now);
        }
        let open = replay.open.len();
        if open > 0 {
            let rebuilt = encode(replay.open, &self.region, Some(self.current_health()), now);
            batches += rebuilt.len();
            results += open;
            self.buffer(rebuilt, now);
        }
        let metrics = &shared.metrics;
        metrics.spool_replayed_batches.inc_by(batches as u64);
        metrics.spool_replayed_results.inc_by(results as u64);
        let state = shared.lock();
        tracing::info!(
            dir = %shared.spool.as_ref().map(|s| s.dir().display().to_string()).unwrap_or_default(),
            batches,
            results,
            open_batch_results = open,
            buffered_batches = state.buffer.len(),
            "spool: loaded what the previous run had not had acknowledged; sending it first"
        );
    }
}

impl Drop for Batching {
    fn drop(&mut self) {
        self.shared.input_closed.cancel();
        self.shared.wake.notify_one();
    }
}

/// The health sent with a batch: the canary verdict (without one, healthy with
/// `canaries_total` 0 and no check time: the control plane then records no verdict) and the
/// saturation report.
pub fn agent_health(canary: Option<&HealthReport>, saturation: &SaturationReport) -> proto::AgentHealth {
    let mut health = canary
        .map(HealthReport::to_proto)
        .unwrap_or(proto::AgentHealth { healthy: true, ..Default::default() });
    saturation.fill(&mut health);
    health
}

/// Encodes results as one batch with a fresh UUID v7, or as several when the encoding would
/// exceed [`proto::MAX_BATCH_BYTES`] (halving until each fits); each carries `health`.
pub fn encode(
    results: Vec<proto::ProbeResult>,
    region: &str,
    health: Option<proto::AgentHealth>,
    now: Instant,
) -> Vec<EncodedBatch> {
    let mut out = Vec::new();
    let mut pending = vec![results];
    while let Some(mut results) = pending.pop() {
        let id = uuid::Uuid::now_v7();
        let batch = proto::Batch {
            batch_id: id.as_bytes().to_vec(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            claimed_region: region.to_owned(),
            results,
            health,
        };
        if batch.encoded_len() > proto::MAX_BATCH_BYTES && batch.results.len() > 1 {
            results = batch.results;
            let second = results.split_off(results.len() / 2);
            // Popped in order: first half first.
            pending.push(second);
            pending.push(results);
            continue;
        }
        let count = batch.results.len();
        out.push(EncodedBatch {
            id,
            results: count,
            bytes: Bytes::from(batch.encode_to_vec()),
            created: now,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_batches_are_split_in_order() {
        let big = "x".repeat(100_000);
        let results: Vec<_> = (0..100u64)
            .map(|i| proto::ProbeResult {
                config_version: i,
                error_detail: big.clone(),
                ..Default::default()
            })
            .collect();
        let health = proto::AgentHealth {
            healthy: false,
            canaries_ok: 1,
            canaries_total: 3,
            checked_at_unix_us: 1_700_000_000_000_000,
            saturated: true,
            saturated_since_unix_us: Some(1_699_999_990_000_000),
            saturated_until_unix_us: Some(1_700_000_000_000_000),
            ..Default::default()
        };
        let batches = encode(results, "ams", Some(health), Instant::now());
        assert!(batches.len() >= 3, "{}", batches.len());
        let mut versions = Vec::new();
        for batch in &batches {
            assert!(batch.bytes.len() <= proto::MAX_BATCH_BYTES);
            let decoded = proto::Batch::decode(batch.bytes.clone()).unwrap();
            assert_eq!(decoded.batch_id, batch.id.as_bytes());
            assert_eq!(decoded.claimed_region, "ams");
            assert_eq!(decoded.results.len(), batch.results);
            assert_eq!(decoded.health, Some(health), "every part carries the health");
            versions.extend(decoded.results.iter().map(|r| r.config_version));
        }
        assert_eq!(versions, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn without_a_self_check_the_health_carries_only_the_saturation() {
        let at = chrono::DateTime::from_timestamp_micros(1_800_000_000_000_000).unwrap();
        let monitor = Saturation::new(Duration::from_secs(1));
        monitor.started(at, at + chrono::Duration::seconds(3), true);
        let report = monitor.report(at + chrono::Duration::seconds(4));
        let health = agent_health(None, &report);
        assert!(health.healthy && health.canaries_total == 0 && health.checked_at_unix_us == 0);
        assert!(health.saturated);
        assert_eq!(health.saturated_since_unix_us, Some(at.timestamp_micros()));
        assert_eq!(health.saturated_until_unix_us, Some(at.timestamp_micros() + 4_000_000));
        assert_eq!(health.lag_p95_us, 3_000_000);
        assert_eq!(health.saturation_checked_at_unix_us, at.timestamp_micros() + 4_000_000);
        let canary = HealthReport::new(Vec::new(), 1, at);
        let health = agent_health(Some(&canary), &report);
        assert!(!health.healthy, "the canary verdict is kept");
        assert_eq!(health.checked_at_unix_us, at.timestamp_micros());
        assert!(health.saturated);
    }
}
