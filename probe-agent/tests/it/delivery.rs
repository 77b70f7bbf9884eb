//! Result delivery against an in-test ingest server (the generated `Ingest` service over real
//! mutual TLS, certificates from `certs::Store` in a temporary directory): results arrive with
//! the agent's certificate identity; an unavailable control plane is ridden out without loss or
//! duplicates; a lost acknowledgement is answered by a resend of the same batch id; invalid
//! batches are dropped and counted; buffer bounds drop the oldest; shutdown flushes or counts
//! what is left; a certificate for another region stops the agent from starting; a spool
//! directory keeps what a hard stop would lose and holds off a second user. Probe targets
//! are local servers; nothing here reaches the internet. The in-test control plane is shared
//! with `spool` (an agent killed with SIGKILL).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use probe_agent::delivery::{self, Batching, DeliverySettings, Sender};
use probe_agent::metrics::{CodeLabels, Metrics, OutcomeLabels};
use probe_agent::probe::{ProbeReport, Timings};
use probe_agent::results::{ProbeResult, Trigger};
use shared::identity::AgentIdentity;
use shared::proto::v1::ingest_server::{Ingest, IngestServer};
use shared::proto::{self, Ack, Batch};
use shared::testing::eventually;
use shared::DomainId;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// The deadline of every "eventually" wait: generous, since a busy two-core machine can stretch
/// seconds of background work many times over, and it only matters when a test is failing.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The in-test control plane

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    #[default]
    Store,
    /// Answer UNAVAILABLE without storing.
    Unavailable,
    /// Store the next batch, then answer UNAVAILABLE as if the acknowledgement were lost.
    LoseAckOnce,
    /// Store and acknowledge this many more calls; after them store every batch but lose
    /// every acknowledgement (UNAVAILABLE).
    AckFirst(usize),
    /// Answer INVALID_ARGUMENT.
    Invalid,
    /// Answer PERMISSION_DENIED (a revoked certificate).
    Denied,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    mode: Mode,
    /// Stored batches by id.
    pub(crate) stored: HashMap<Uuid, Vec<proto::ProbeResult>>,
    /// The batch id of every call, in arrival order.
    pub(crate) calls: Vec<Uuid>,
    /// The region of the client certificate of every call.
    regions: HashSet<String>,
    /// The agent health carried by every call, in arrival order.
    health: Vec<Option<proto::AgentHealth>>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Ingested(Arc<Mutex<Inner>>);

impl Ingested {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap()
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Every stored result's `config_version` (the tests use it as a sequence number).
    fn stored_sequence(&self) -> Vec<u64> {
        let mut seq: Vec<u64> = self.lock().stored.values().flatten().map(|r| r.config_version).collect();
        seq.sort_unstable();
        seq
    }

    fn stored_results(&self) -> usize {
        self.lock().stored.values().map(Vec::len).sum()
    }

    pub(crate) fn calls(&self) -> Vec<Uuid> {
        self.lock().calls.clone()
    }
}

#[tonic::async_trait]
impl Ingest for Ingested {
    async fn send_batch(&self, request: Request<Batch>) -> Result<Response<Ack>, Status> {
        let region = request
            .peer_certs()
            .and_then(|certs| shared::tls::agent_certificate(&certs[0]).ok())
            .map(|cert| cert.identity.region);
        let batch = request.into_inner();
        let id = proto::uuid_from_bytes(&batch.batch_id)
            .ok_or_else(|| Status::invalid_argument("batch_id must be 16 bytes"))?;
        let mut inner = self.lock();
        inner.calls.push(id);
        inner.regions.extend(region);
        inner.health.push(batch.health);
        match inner.mode {
            Mode::Unavailable => Err(Status::unavailable("storage is down")),
            Mode::Invalid => Err(Status::invalid_argument("results[0]: started_at_unix_us out of range")),
            Mode::Denied => Err(Status::permission_denied("certificate revoked")),
            Mode::Store | Mode::LoseAckOnce | Mode::AckFirst(_) => {
                let duplicate = inner.stored.contains_key(&id);
                let stored = if duplicate { 0 } else { batch.results.len() as u32 };
                if !duplicate {
                    inner.stored.insert(id, batch.results);
                }
                let mode = inner.mode;
                match mode {
                    Mode::LoseAckOnce => {
                        inner.mode = Mode::Store;
                        return Err(Status::unavailable("stored, but the acknowledgement was lost"));
                    }
                    Mode::AckFirst(0) => {
                        return Err(Status::unavailable("stored, but the acknowledgement was lost"));
                    }
                    Mode::AckFirst(n) => inner.mode = Mode::AckFirst(n - 1),
                    _ => {}
                }
                Ok(Response::new(Ack { batch_id: batch.batch_id, stored, duplicate }))
            }
        }
    }
}

/// A CA, the control plane's certificate and an ingest server on 127.0.0.1 with mutual TLS.
pub(crate) struct ControlPlane {
    pub(crate) addr: SocketAddr,
    pub(crate) store: certs::Store,
    pub(crate) ingested: Ingested,
    shutdown: CancellationToken,
}

impl ControlPlane {
    pub(crate) async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("crosscheck-delivery-{}", Uuid::new_v4().simple()));
        let store = certs::Store::new(dir);
        store.create_ca("delivery test CA", 2, certs::Overwrite::Refuse).unwrap();
        let server = store.issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 2).unwrap();
        let ca = shared::tls::certificates("ca", &path(&store.ca_cert())).unwrap();
        let chain = shared::tls::certificates("server", &path(&server.cert)).unwrap();
        let key = shared::tls::private_key("server key", &path(&server.key)).unwrap();
        let config = shared::tls::mtls_server_config(&ca, chain, key, Vec::new()).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                // A failed handshake (an untrusted client) is skipped, not the end of the server.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    return Some((Ok::<_, std::io::Error>(tls), (listener, acceptor)));
                }
            }
        });
        let ingested = Ingested::default();
        let shutdown = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(IngestServer::new(ingested.clone()))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        tokio::spawn(server);
        Self { addr, store, ingested, shutdown }
    }

    pub(crate) fn agent_cert(&self, region: &str, agent_id: &str) -> certs::Issued {
        self.store.issue_agent(&AgentIdentity::new(region, agent_id).unwrap(), 2).unwrap()
    }

    /// An agent configuration delivering here with a certificate for `ams/ams-1`.
    fn agent_config(&self) -> probe_agent::Config {
        let cert = self.agent_cert("ams", "ams-1");
        probe_agent::Config {
            region: "ams".into(),
            agent_id: "ams-1".into(),
            control_plane_url: Some(format!("https://127.0.0.1:{}", self.addr.port())),
            tls_ca: Some(path(&self.store.ca_cert())),
            // The certificate inline, as platform secrets arrive; the key as a path.
            tls_cert: Some(std::fs::read_to_string(&cert.cert).unwrap()),
            tls_key: Some(path(&cert.key)),
            batch_max_age_ms: 50,
            request_timeout_ms: 5_000,
            resend_min_backoff_ms: 10,
            resend_max_backoff_ms: 100,
            shutdown_flush_timeout_ms: 5_000,
            ..probe_agent::Config::default()
        }
    }

    fn settings(&self) -> DeliverySettings {
        DeliverySettings::from_config(&self.agent_config()).unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.store.dir);
    }
}

pub(crate) fn path(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// The agent side

/// Delivery started on its own, fed by the test instead of the scheduler; a small task closes
/// batches by age on the open batch's deadline, as the agent's result consumer does.
struct Delivering {
    batching: Arc<Mutex<Option<Batching>>>,
    pushed: Arc<tokio::sync::Notify>,
    sender: tokio::task::JoinHandle<()>,
    metrics: Metrics,
}

impl Delivering {
    fn start(settings: DeliverySettings) -> Self {
        let metrics = Metrics::default();
        let (batching, sender): (Batching, Sender) = delivery::build(
            settings,
            metrics.clone(),
            probe_agent::canary::no_health(),
            probe_agent::scheduler::Saturation::new(Duration::from_secs(1)),
        )
        .unwrap();
        let batching = Arc::new(Mutex::new(Some(batching)));
        let pushed = Arc::new(tokio::sync::Notify::new());
        let (ticking, woken) = (Arc::downgrade(&batching), pushed.clone());
        tokio::spawn(async move {
            while let Some(batching) = ticking.upgrade() {
                let deadline = batching.lock().unwrap().as_ref().and_then(Batching::deadline);
                drop(batching);
                match deadline {
                    Some(deadline) => tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = woken.notified() => {}
                    },
                    None => woken.notified().await,
                }
                if let Some(batching) = ticking.upgrade() {
                    if let Some(batching) = batching.lock().unwrap().as_mut() {
                        batching.flush_due();
                    }
                }
            }
        });
        Self { batching, pushed, sender: tokio::spawn(sender.run()), metrics }
    }

    fn push(&mut self, result: &ProbeResult) {
        self.batching.lock().unwrap().as_mut().unwrap().push(result);
        self.pushed.notify_one();
    }

    /// A hard stop: the sender ends without flushing and the open batch is never closed, as
    /// when the process is killed (what is in memory is gone; the spool is not touched).
    async fn kill(self) {
        self.sender.abort();
        let _ = self.sender.await;
        drop(self.batching.lock().unwrap().take());
    }

    /// Closes the input (as the agent does at shutdown) and waits for the sender to stop.
    async fn finish(self) -> Metrics {
        let batching = self.batching.lock().unwrap().take().unwrap();
        batching.finish();
        tokio::time::timeout(WAIT, self.sender).await.expect("sender stops").unwrap();
        self.metrics
    }

    fn sent(&self, outcome: &str) -> u64 {
        self.metrics.delivery_batches_sent.get_or_create(&OutcomeLabels { outcome: outcome.into() }).get()
    }

    fn errors(&self, code: &str) -> u64 {
        self.metrics.delivery_send_errors.get_or_create(&CodeLabels { code: code.into() }).get()
    }

    fn acknowledged(&self) -> u64 {
        self.metrics.delivery_results_acknowledged.get()
    }

    fn buffered(&self) -> i64 {
        self.metrics.delivery_buffered_results.get()
    }
}

fn agent_health_time(health: &proto::AgentHealth) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(health.checked_at_unix_us).unwrap()
}

/// A result of `domain`; `seq` goes into `config_version` to identify it at the server.
fn result(domain: DomainId, ok: bool, seq: u64) -> ProbeResult {
    ProbeResult {
        domain_id: domain,
        config_version: seq,
        region: "ams".into(),
        trigger: Trigger::Scheduled,
        request_id: None,
        planned_at: chrono::Utc::now(),
        lag_ms: 0.5,
        report: ProbeReport {
            ok,
            error: None,
            error_detail: None,
            timings: Timings {
                dns_ms: Some(1.0),
                connect_ms: Some(0.2),
                total_ms: 3.0,
                ..Timings::default()
            },
            status: Some(200),
            status_matched: Some(true),
            keyword_matched: None,
            resolved_ip: Some("192.0.2.10".parse().unwrap()),
            resolved_addrs: vec!["192.0.2.10".parse().unwrap()],
            dns: None,
            dns_error: None,
            connect_attempts: Vec::new(),
            http_version: None,
            redirects: Vec::new(),
            body_bytes: 2,
            body_wire_bytes: 2,
            certificate: None,
            redirect_certificates: Vec::new(),
            earliest_expiry: None,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn results_arrive_over_mutual_tls_in_batches() {
    let cp = ControlPlane::start().await;
    let settings = DeliverySettings { batch_max_results: 100, ..cp.settings() };
    let mut agent = Delivering::start(settings);
    let domains = [DomainId::new(), DomainId::new(), DomainId::new()];
    for seq in 0..1200u64 {
        agent.push(&result(domains[seq as usize % 3], true, seq));
    }
    eventually(WAIT, "1200 results stored", || async {
        (cp.ingested.stored_results() == 1200).then_some(())
    })
    .await;
    assert_eq!(cp.ingested.stored_sequence(), (0..1200).collect::<Vec<_>>());
    assert_eq!(cp.ingested.lock().regions, HashSet::from(["ams".to_owned()]));
    let sizes: Vec<usize> = cp.ingested.lock().stored.values().map(Vec::len).collect();
    assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
    eventually(WAIT, "acknowledgements counted", || async {
        (agent.acknowledged() == 1200 && agent.buffered() == 0).then_some(())
    })
    .await;
    assert_eq!(agent.sent("stored") as usize, cp.ingested.calls().len());
    assert_eq!(agent.metrics.delivery_buffered_bytes.get(), 0);
    let metrics = agent.finish().await;
    assert_eq!(metrics.dropped_total(), 0);
}

#[tokio::test]
async fn an_unavailable_control_plane_is_ridden_out_without_loss_or_duplicates() {
    let cp = ControlPlane::start().await;
    cp.ingested.set_mode(Mode::Unavailable);
    let settings = DeliverySettings { batch_max_results: 10, ..cp.settings() };
    let mut agent = Delivering::start(settings);
    let domain = DomainId::new();
    for seq in 0..200u64 {
        agent.push(&result(domain, true, seq));
    }
    eventually(WAIT, "failed sends while unavailable", || async {
        (agent.errors("unavailable") >= 3).then_some(())
    })
    .await;
    // Pushing never waited; everything is buffered.
    eventually(WAIT, "all results buffered", || async { (agent.buffered() == 200).then_some(()) }).await;
    assert_eq!(cp.ingested.stored_results(), 0);
    cp.ingested.set_mode(Mode::Store);
    eventually(WAIT, "the backlog drained", || async {
        (cp.ingested.stored_results() == 200 && agent.buffered() == 0).then_some(())
    })
    .await;
    assert_eq!(cp.ingested.stored_sequence(), (0..200).collect::<Vec<_>>());
    assert_eq!(agent.acknowledged(), 200);
    assert!(agent.sent("retry") >= 3);
    assert_eq!(agent.sent("duplicate"), 0);
    let metrics = agent.finish().await;
    assert_eq!(metrics.dropped_total(), 0);
}

#[tokio::test]
async fn a_lost_acknowledgement_is_answered_by_resending_the_same_batch_id() {
    let cp = ControlPlane::start().await;
    cp.ingested.set_mode(Mode::LoseAckOnce);
    let mut agent = Delivering::start(cp.settings());
    // A status change closes its batch at once.
    let domain = DomainId::new();
    agent.push(&result(domain, false, 6));
    agent.push(&result(domain, true, 7));
    eventually(WAIT, "the resend acknowledged", || async { (agent.sent("duplicate") == 1).then_some(()) })
        .await;
    let calls = cp.ingested.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], calls[1]);
    assert_eq!(calls[0].get_version_num(), 7, "batch ids are UUID v7");
    assert_eq!(cp.ingested.stored_sequence(), vec![6, 7]);
    assert_eq!((agent.sent("retry"), agent.acknowledged()), (1, 2));
    let metrics = agent.finish().await;
    assert_eq!(metrics.dropped_total(), 0);
}

#[tokio::test]
async fn an_invalid_batch_is_dropped_and_counted_and_later_batches_still_go() {
    let cp = ControlPlane::start().await;
    cp.ingested.set_mode(Mode::Invalid);
    let mut agent = Delivering::start(cp.settings());
    // Two status changes of one domain close two batches: [1, 2] and [3].
    let domain = DomainId::new();
    agent.push(&result(domain, true, 1));
    agent.push(&result(domain, false, 2));
    agent.push(&result(domain, true, 3));
    eventually(WAIT, "both batches rejected", || async {
        (agent.metrics.dropped_count("rejected") == 3 && agent.buffered() == 0).then_some(())
    })
    .await;
    assert_eq!((agent.sent("rejected"), agent.errors("invalid_argument")), (2, 2));
    // Not resent: exactly one call per batch.
    assert_eq!(cp.ingested.calls().len(), 2);
    cp.ingested.set_mode(Mode::Store);
    agent.push(&result(DomainId::new(), true, 4));
    eventually(WAIT, "the next batch stored", || async { (cp.ingested.stored_results() == 1).then_some(()) })
        .await;
    assert_eq!(cp.ingested.stored_sequence(), vec![4]);
    agent.finish().await;
}

#[tokio::test]
async fn a_denied_agent_keeps_its_results_and_retries_at_the_maximum_backoff() {
    let cp = ControlPlane::start().await;
    cp.ingested.set_mode(Mode::Denied);
    let mut agent = Delivering::start(cp.settings());
    agent.push(&result(DomainId::new(), true, 1));
    eventually(WAIT, "a refusal", || async { (agent.errors("permission_denied") >= 1).then_some(()) }).await;
    assert!(agent.sent("denied") >= 1);
    assert_eq!((agent.buffered(), agent.metrics.dropped_total()), (1, 0));
    // Re-admitted (the test's maximum backoff is 100 ms): the same batch goes through.
    cp.ingested.set_mode(Mode::Store);
    eventually(WAIT, "delivered once re-admitted", || async {
        (cp.ingested.stored_results() == 1 && agent.buffered() == 0).then_some(())
    })
    .await;
    let calls = cp.ingested.calls();
    assert!(calls.iter().all(|id| *id == calls[0]), "{calls:?}");
    agent.finish().await;
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_results_and_counts_them() {
    let cp = ControlPlane::start().await;
    cp.ingested.set_mode(Mode::Unavailable);
    // Room for a few batches of 10 results (~50 B each) only.
    let settings = DeliverySettings {
        batch_max_results: 10,
        buffer_max_bytes: 2_000,
        send_concurrency: 1,
        ..cp.settings()
    };
    let mut agent = Delivering::start(settings);
    let domain = DomainId::new();
    for seq in 0..300u64 {
        agent.push(&result(domain, true, seq));
    }
    let dropped = agent.metrics.dropped_count("buffer_full");
    assert!(dropped > 0);
    assert!(agent.metrics.delivery_buffered_bytes.get() <= 2_000 + 1_000, "bounded (plus one in flight)");
    cp.ingested.set_mode(Mode::Store);
    // Nothing lost silently: every result is either stored or counted as dropped.
    eventually(WAIT, "what is left delivered", || async {
        let accounted = cp.ingested.stored_results() as u64 + agent.metrics.dropped_count("buffer_full");
        (agent.buffered() == 0 && accounted == 300).then_some(())
    })
    .await;
    let stored = cp.ingested.stored_sequence();
    // The newest survived; the oldest went (the first batch may have been in flight).
    assert_eq!(*stored.last().unwrap(), 299);
    assert!(stored.iter().filter(|&&s| s >= 10).all(|&s| s > 150), "{stored:?}");
    agent.finish().await;
}

#[tokio::test]
async fn shutdown_flushes_the_open_batch_or_counts_what_is_left() {
    // A reachable control plane: the open batch is sent at shutdown.
    let cp = ControlPlane::start().await;
    let settings = DeliverySettings { batch_max_age: Duration::from_secs(3600), ..cp.settings() };
    let mut agent = Delivering::start(settings.clone());
    let domain = DomainId::new();
    // A status change closes the first batch at once; the rest stays open until shutdown.
    agent.push(&result(domain, false, 0));
    agent.push(&result(domain, true, 1));
    for seq in 2..5u64 {
        agent.push(&result(domain, true, seq));
    }
    eventually(WAIT, "the first batch", || async { (cp.ingested.stored_results() == 2).then_some(()) }).await;
    let metrics = agent.finish().await;
    assert_eq!(cp.ingested.stored_sequence(), vec![0, 1, 2, 3, 4]);
    assert_eq!(metrics.dropped_total(), 0);

    // An unavailable one: the flush gives up after its timeout and counts the rest.
    cp.ingested.set_mode(Mode::Unavailable);
    let settings = DeliverySettings { shutdown_flush_timeout: Duration::from_millis(300), ..settings };
    let mut agent = Delivering::start(settings);
    for seq in 0..5u64 {
        agent.push(&result(domain, true, seq));
    }
    let started = std::time::Instant::now();
    let metrics = agent.finish().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(metrics.dropped_count("shutdown"), 5);
    assert_eq!(metrics.delivery_buffered_results.get(), 0);
}

#[tokio::test]
async fn a_certificate_for_another_region_stops_the_agent_from_starting() {
    let cp = ControlPlane::start().await;
    let cert = cp.agent_cert("iad", "iad-1");
    let config = probe_agent::Config {
        region: "ams".into(),
        tls_cert: Some(path(&cert.cert)),
        tls_key: Some(path(&cert.key)),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cp.agent_config()
    };
    let error = probe_agent::Agent::build(config.clone()).await.err().expect("refused");
    let message = format!("{error:#}");
    assert!(message.contains("\"ams\"") && message.contains("\"iad\""), "{message}");

    // The binary exits with 64, like any other configuration error.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe-agent"))
        .env("CROSSCHECK_AGENT_REGION", "ams")
        .env("CROSSCHECK_AGENT_CONTROL_PLANE_URL", config.control_plane_url.as_deref().unwrap())
        .env("CROSSCHECK_AGENT_TLS_CA", config.tls_ca.as_deref().unwrap())
        .env("CROSSCHECK_AGENT_TLS_CERT", path(&cert.cert))
        .env("CROSSCHECK_AGENT_TLS_KEY", path(&cert.key))
        .env("CROSSCHECK_AGENT_LISTEN", "127.0.0.1:0")
        .env("CROSSCHECK_AGENT_REDIS_URL", "redis://192.0.2.1:6379")
        .env("CROSSCHECK_AGENT_LOG_FORMAT", "text")
        .env_remove("NO_COLOR")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("region"));
    // Said once, and in plain text: stderr is a pipe here, not a terminal.
    assert_eq!(stderr.matches("invalid configuration").count(), 1, "{stderr}");
    assert!(!output.stderr.contains(&0x1b), "escape codes in a pipe: {stderr:?}");

    // With the matching region it starts, and takes the certificate's agent id.
    let cert = cp.agent_cert("ams", "ams-7");
    let config = probe_agent::Config {
        agent_id: "configured-name".into(),
        tls_cert: Some(path(&cert.cert)),
        tls_key: Some(path(&cert.key)),
        redis_url: "redis://192.0.2.1:6379".into(),
        ..config
    };
    let agent = probe_agent::Agent::build(config).await.unwrap();
    assert_eq!(agent.config().agent_id, "ams-7");
}

#[tokio::test]
async fn a_running_agent_delivers_its_probe_results_and_flushes_at_shutdown() {
    use fred::prelude::*;
    let port = crate::local_target().await;
    // The domain, published the way the control plane's publisher writes it.
    let prefix = shared::testing::random_prefix("delivery");
    let redis =
        shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
    redis.init().await.unwrap();
    let domain = shared::DomainConfig {
        url: format!("http://127.0.0.1:{port}/health"),
        timeout_ms: 5_000,
        ..shared::testing::sample_domain(1, 1)
    };
    let _: () = redis
        .hset(format!("{prefix}:domains"), (domain.id.to_string(), serde_json::to_string(&domain).unwrap()))
        .await
        .unwrap();
    let _: () = redis.set(format!("{prefix}:domains:version"), 1, None, None, false).await.unwrap();

    let cp = ControlPlane::start().await;
    let config = probe_agent::Config {
        redis_prefix: prefix.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_private: vec!["127.0.0.0/8".parse().unwrap()],
        // Batches close by age while it runs; whatever is open at the end goes with the shutdown flush.
        batch_max_age_ms: 200,
        // The target doubles as the agent's canary: its health rides along with the batches.
        canaries: vec![format!("http://127.0.0.1:{port}/canary")],
        canary_interval_s: 1,
        ..cp.agent_config()
    };
    let agent = probe_agent::Agent::build(config).await.unwrap();
    let (addr, latest, metrics) = (agent.local_addr(), agent.latest(), agent.metrics.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(agent.run_until(shutdown.clone()));
    eventually(WAIT, "the first result delivered", || async {
        (cp.ingested.stored_results() >= 1).then_some(())
    })
    .await;
    eventually(WAIT, "a second probe", || async {
        (metrics.probes.get_or_create(&OutcomeLabels { outcome: "ok".into() }).get() >= 2).then_some(())
    })
    .await;
    let stored = cp.ingested.lock().stored.values().flatten().cloned().collect::<Vec<_>>();
    assert_eq!(stored[0].domain_id, domain.id.0.as_bytes());
    let health = eventually(WAIT, "a batch carrying the agent's health", || async {
        cp.ingested.lock().health.iter().flatten().next().cloned()
    })
    .await;
    assert!(health.healthy && health.canaries_ok == 1 && health.canaries_total == 1, "{health:?}");
    let checked = agent_health_time(&health);
    assert!((chrono::Utc::now() - checked).num_seconds().abs() < 60, "{checked}");
    assert!(stored[0].ok && stored[0].status_code == 200 && stored[0].connect_us.is_some());
    // /debug/results still works.
    let body: serde_json::Value =
        reqwest::get(format!("http://{addr}/debug/results")).await.unwrap().json().await.unwrap();
    assert_eq!(body["results"][0]["domain_id"], domain.id.to_string());
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "probe_agent_delivery_batches_sent_total{outcome=\"stored\"}",
        "probe_agent_delivery_buffered_bytes",
        "probe_agent_delivery_ack_latency_seconds_bucket",
        "probe_agent_results_dropped_total{reason=\"buffer_full\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing");
    }

    shutdown.cancel();
    tokio::time::timeout(WAIT, running).await.expect("agent stops").unwrap().unwrap();
    let probed = metrics.probes.get_or_create(&OutcomeLabels { outcome: "ok".into() }).get();
    assert_eq!(cp.ingested.stored_results() as u64, probed, "every result delivered by the shutdown flush");
    let stored = cp.ingested.lock().stored.values().flatten().cloned().collect::<Vec<_>>();
    assert!(
        stored.iter().all(|r| r.domain_id == domain.id.0.as_bytes()),
        "canary probes are not sent as results"
    );
    assert!(latest.get(&domain.id).is_some());
    shared::testing::delete_prefix(&redis, &prefix).await.unwrap();
}

#[tokio::test]
async fn a_spool_keeps_what_a_hard_stop_loses_and_sends_it_once_after_the_restart() {
    let cp = ControlPlane::start().await;
    cp.ingested.set_mode(Mode::Unavailable);
    let dir = std::env::temp_dir().join(format!("crosscheck-spool-{}", Uuid::new_v4().simple()));
    let settings = DeliverySettings {
        batch_max_results: 4,
        batch_max_age: Duration::from_secs(3600),
        spool_dir: Some(dir.clone()),
        // No fsync task: it could still hold the spool for a moment after the hard stop below,
        // which a real kill never leaves behind.
        spool_fsync_interval: None,
        ..cp.settings()
    };
    let mut agent = Delivering::start(settings.clone());
    let domain = DomainId::new();
    // Two closed batches of four, two results in the open one.
    for seq in 0..10u64 {
        agent.push(&result(domain, true, seq));
    }
    assert_eq!((agent.buffered(), agent.metrics.delivery_open_results.get()), (8, 2));
    assert_eq!((agent.metrics.spool_files.get(), agent.metrics.spool_journal_results.get()), (2, 2));
    eventually(WAIT, "a failed send", || async { (agent.errors("unavailable") >= 1).then_some(()) }).await;
    // The directory is this agent's alone.
    let second = delivery::build(
        settings.clone(),
        Metrics::default(),
        probe_agent::canary::no_health(),
        probe_agent::scheduler::Saturation::new(Duration::from_secs(1)),
    );
    let message = format!("{}", shared::error::Chain(&*second.expect_err("a second user is refused")));
    assert!(message.contains(&dir.display().to_string()) && message.contains("another agent"), "{message}");
    agent.kill().await;
    assert_eq!(cp.ingested.stored_results(), 0);

    cp.ingested.set_mode(Mode::Store);
    let agent = Delivering::start(settings);
    eventually(WAIT, "everything from before the stop stored", || async {
        (cp.ingested.stored_results() == 10 && agent.buffered() == 0).then_some(())
    })
    .await;
    assert_eq!(cp.ingested.stored_sequence(), (0..10).collect::<Vec<_>>(), "each result once");
    assert_eq!(agent.metrics.spool_replayed_batches.get(), 3, "two files and the journal's batch");
    assert_eq!(agent.metrics.spool_replayed_results.get(), 10);
    let metrics = agent.finish().await;
    assert_eq!(metrics.dropped_total(), 0);
    assert_eq!(metrics.spool_files.get(), 0);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|name| name == "lock" || name == "open.journal"), "{left:?}");
    assert_eq!(std::fs::metadata(dir.join("open.journal")).unwrap().len(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
