//! The spool through a real kill: the `probe-agent` binary runs as a child process with a spool
//! directory, delivering to the in-test control plane of `delivery`, and is killed with
//! SIGKILL while it holds an acknowledged batch, a stored batch whose acknowledgement was lost,
//! and an open batch. Restarted on the same directory, it must bring every result it had
//! produced before the kill to the receiver exactly once; a second agent on that directory is
//! refused while the first runs.
//!
//! What "produced before the kill" is, is pinned down by the target: it answers a fixed number
//! of requests and holds every later one unanswered, so once the agent reports that many
//! results acknowledged, buffered or open, no other result exists.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fred::prelude::*;
use shared::testing::{eventually, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::delivery::{path, ControlPlane, Mode, WAIT};

/// Results the target answers before it holds every request.
const ANSWERED: usize = 13;
/// The agents' `batch_max_results`: 13 results are two closed batches and three open ones.
const BATCH: usize = 5;

/// An HTTP target answering `200 ok` to its first `budget` requests and holding later ones
/// unanswered until [`GatedTarget::open`].
struct GatedTarget {
    port: u16,
    answered: Arc<AtomicUsize>,
    gate: tokio::sync::watch::Sender<bool>,
}

impl GatedTarget {
    async fn start(budget: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let admitted = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (gate, opened) = tokio::sync::watch::channel(false);
        let counted = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (admitted, answered, mut opened) = (admitted.clone(), counted.clone(), opened.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = tcp.read(&mut buf).await;
                    let within = admitted.fetch_add(1, Ordering::SeqCst) < budget;
                    if !within && opened.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let written = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                    if within && written.is_ok() {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self { port, answered, gate }
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }
}

/// The environment of an agent child delivering to `cp` with the spool in `spool`.
fn agent_env(cp: &ControlPlane, prefix: &str, spool: &Path, listen: u16) -> Vec<(String, String)> {
    let cert = cp.agent_cert("ams", "ams-1");
    [
        ("REGION", "ams".to_owned()),
        ("AGENT_ID", "ams-1".to_owned()),
        ("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
        ("REDIS_PREFIX", prefix.to_owned()),
        ("LISTEN", format!("127.0.0.1:{listen}")),
        ("ALLOW_PRIVATE", "[\"127.0.0.0/8\"]".to_owned()),
        ("CONTROL_PLANE_URL", format!("https://127.0.0.1:{}", cp.addr.port())),
        ("TLS_CA", path(&cp.store.ca_cert())),
        ("TLS_CERT", path(&cert.cert)),
        ("TLS_KEY", path(&cert.key)),
        ("BATCH_MAX_RESULTS", BATCH.to_string()),
        // Batches close by count only.
        ("BATCH_MAX_AGE_MS", "600000".to_owned()),
        ("RESEND_MIN_BACKOFF_MS", "10".to_owned()),
        ("RESEND_MAX_BACKOFF_MS", "100".to_owned()),
        ("SPOOL_DIR", path(spool)),
        ("LOG_FORMAT", "text".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("CROSSCHECK_AGENT_{key}"), value))
    .collect()
}

/// Starts the `probe-agent` binary with `env`, its log (stderr) appended to `log`.
fn spawn_agent(env: &[(String, String)], log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_probe-agent"))
        .envs(env.iter().cloned())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The agent's metrics as name → value (`None` while it does not answer).
async fn metrics(port: u16) -> Option<HashMap<String, f64>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

fn value(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or_else(|| panic!("{name} missing"))
}

/// A result's identity: its domain and start time.
type Identity = (Vec<u8>, i64);

#[tokio::test]
async fn an_agent_killed_with_sigkill_delivers_everything_once_after_its_restart() {
    let target = GatedTarget::start(ANSWERED).await;
    let prefix = shared::testing::random_prefix("spool");
    let redis =
        shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
    redis.init().await.unwrap();
    for n in 0..3 {
        let domain = shared::DomainConfig {
            url: format!("http://127.0.0.1:{}/{n}", target.port),
            // Held requests stay unanswered through the test: no timeout result either.
            timeout_ms: 60_000,
            ..shared::testing::sample_domain(1, 1)
        };
        let _: () = redis
            .hset(
                format!("{prefix}:domains"),
                (domain.id.to_string(), serde_json::to_string(&domain).unwrap()),
            )
            .await
            .unwrap();
    }
    let _: () = redis.set(format!("{prefix}:domains:version"), 1, None, None, false).await.unwrap();

    let cp = ControlPlane::start().await;
    // The first batch is acknowledged; the second is stored but its acknowledgements are lost.
    cp.ingested.set_mode(Mode::AckFirst(1));
    let work = std::env::temp_dir().join(format!("crosscheck-spool-kill-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let spool: PathBuf = work.join("spool");
    let log = work.join("agent.log");
    let port = free_port();
    let env = agent_env(&cp, &prefix, &spool, port);
    let mut agent = spawn_agent(&env, &log);

    // Every answered result is in the agent: 5 acknowledged, 5 stored without acknowledgement,
    // 3 in the open batch.
    let open = ANSWERED - 2 * BATCH;
    let before = eventually(WAIT, "13 results held by the agent, two batches stored", || async {
        let m = metrics(port).await?;
        let settled = target.answered.load(Ordering::SeqCst) == ANSWERED
            && value(&m, "probe_agent_delivery_results_acknowledged_total") == BATCH as f64
            && value(&m, "probe_agent_delivery_buffered_results") == BATCH as f64
            && value(&m, "probe_agent_delivery_open_results") == open as f64
            && cp.ingested.lock().stored.len() == 2;
        settled.then_some(m)
    })
    .await;
    assert_eq!(value(&before, "probe_agent_spool_journal_results"), open as f64);
    assert_eq!(value(&before, "probe_agent_spool_files"), 1.0, "the unacknowledged batch");
    let spooled_names: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".batch"))
        .collect();
    assert_eq!(spooled_names.len(), 1, "{spooled_names:?}");

    agent.start_kill().unwrap();
    let status = agent.wait().await.unwrap();
    assert!(!status.success(), "killed: {status}");
    let killed_at = chrono::Utc::now().timestamp_micros();
    let calls_before = cp.ingested.calls();
    let lost_ack: Uuid = spooled_names[0].trim_end_matches(".batch").parse().unwrap();
    assert!(calls_before.contains(&lost_ack), "the unacknowledged batch was stored before the kill");

    // Restarted on the same directory, with the receiver acknowledging again.
    cp.ingested.set_mode(Mode::Store);
    target.open();
    let mut agent = spawn_agent(&env, &log);
    let produced_before = |stored: &HashMap<Uuid, Vec<shared::proto::ProbeResult>>| -> Vec<(Uuid, Identity)> {
        stored
            .iter()
            .flat_map(|(id, results)| {
                results.iter().map(move |r| (*id, (r.domain_id.clone(), r.started_at_unix_us)))
            })
            .filter(|(_, identity)| identity.1 < killed_at)
            .collect()
    };
    let delivered =
        eventually(WAIT, "every result from before the kill delivered, the lost ack resent", || async {
            let inner = cp.ingested.lock();
            let found = produced_before(&inner.stored);
            // The batch whose acknowledgement was lost is sent again with its own id.
            let resent = inner.calls[calls_before.len()..].contains(&lost_ack);
            let distinct = found.iter().map(|(_, identity)| identity).collect::<HashSet<_>>().len();
            (resent && distinct == ANSWERED).then_some(found)
        })
        .await;
    // Exactly once: no result under two batch ids (a batch resent under its own id counts once).
    assert_eq!(delivered.len(), ANSWERED, "a result stored twice: {delivered:?}");
    let after = eventually(WAIT, "the replay counted", || async {
        let m = metrics(port).await?;
        (value(&m, "probe_agent_spool_replayed_batches_total") > 0.0).then_some(m)
    })
    .await;
    assert_eq!(value(&after, "probe_agent_spool_replayed_batches_total"), 2.0, "the file and the journal");
    assert_eq!(value(&after, "probe_agent_spool_replayed_results_total"), (ANSWERED - BATCH) as f64);
    assert_eq!(value(&after, "probe_agent_spool_corrupt_files_total"), 0.0);

    // A second agent on the same directory is refused at start, naming it.
    let second_env: Vec<(String, String)> = agent_env(&cp, &prefix, &spool, free_port());
    let second_log = work.join("second.log");
    let mut second = spawn_agent(&second_env, &second_log);
    let status = tokio::time::timeout(WAIT, second.wait()).await.expect("the second agent exits").unwrap();
    let said = std::fs::read_to_string(&second_log).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains(&path(&spool)) && said.contains("another agent is using this directory"), "{said}");
    assert!(agent.try_wait().unwrap().is_none(), "the first agent runs on");

    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    shared::testing::delete_prefix(&redis, &prefix).await.unwrap();
    std::fs::remove_dir_all(&work).unwrap();
}
