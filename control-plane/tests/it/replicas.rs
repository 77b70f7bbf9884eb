//! Two control-plane replicas (the real binary, as child processes) behind one address: a small
//! TCP proxy that sends every new connection to the first replica that accepts it and closes a
//! client's connection when its replica's side ends. Two agents (regions `ams` and `iad`) probe
//! a local target whose answers the test flips between up and down, so incidents open and
//! resolve; a local webhook receiver records every delivery (grouped ones by member).
//!
//! Once the first incident of an outage opened, the receiver stops answering (it keeps what it
//! got) and the proxy holds back what the first replica sends (its acknowledgements); as soon as
//! that replica has stored a batch of each agent, it is killed with SIGKILL, while the other
//! domains' transitions and notifications are in flight. The survivor then decides the rest of
//! the outage, a recovery and a second outage alone.
//!
//! Afterwards: every result each agent produced is stored exactly once (and counted once in the
//! roll-ups) although each agent resent batches the dead replica had stored; every outage is one
//! incident; each opening and resolution is one outbox row, heard by the receiver, and heard
//! again only as often as it was claimed again (the unanswered delivery, same id).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use serde_json::{json, Value};
use shared::testing::{eventually, free_port};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use uuid::Uuid;

use crate::delivery::RunningAgent;
use crate::helpers::{ScratchDb, WAIT};
use crate::ingest::Pki;

/// Domains whose answers the test flips.
const FLIPPING: usize = 4;
/// Domains that stay up throughout (more results in flight at the kill).
const STEADY: usize = 6;
const REGIONS: [&str; 2] = ["ams", "iad"];

/// A TCP proxy to `backends`: each accepted connection goes to the first backend that accepts a
/// connection (in order), and both sides are closed as soon as either ends, so a client whose
/// backend died sees its connection close and reconnects through the proxy to the next one.
/// What the first backend sends can be held back ([`Proxy::hold_first`]): its acknowledgements
/// then never reach the agents, although it keeps storing their batches.
struct Proxy {
    addr: SocketAddr,
    /// Connections made to each backend so far.
    connections: Arc<Vec<AtomicUsize>>,
    hold: watch::Sender<bool>,
}

impl Proxy {
    async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = connections.clone();
        let (hold, held) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let backends = backends.clone();
                let counts = counts.clone();
                let held = held.clone();
                tokio::spawn(async move {
                    for (i, backend) in backends.iter().enumerate() {
                        if let Ok(server) = TcpStream::connect(backend).await {
                            counts[i].fetch_add(1, Ordering::SeqCst);
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            // Whichever direction ends first (a backend that died ends its own),
                            // both connections are dropped, which closes them.
                            tokio::select! {
                                _ = forward(client_read, server_write, never_held()) => {}
                                _ = forward(server_read, client_write, if i == 0 { held } else { never_held() }) => {}
                            }
                            return;
                        }
                    }
                    // No backend alive: the client's connection is closed by the drop.
                });
            }
        });
        Self { addr, connections, hold }
    }

    fn connections_to(&self, backend: usize) -> usize {
        self.connections[backend].load(Ordering::SeqCst)
    }

    /// Stops passing on what the first backend sends (it is kept, not dropped).
    fn hold_first(&self) {
        self.hold.send_replace(true);
    }
}

/// A hold that is never set.
fn never_held() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// Copies `from` to `to` until `from` ends or either fails. While `hold` is true what is read
/// is kept back, but reading goes on, so the end of `from` is noticed at once.
async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut hold: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buffer[..n]),
            },
            released = async { hold.wait_for(|held| !held).await.is_ok() }, if !pending.is_empty() => {
                if !released || to.write_all(&pending).await.is_err() {
                    return;
                }
                pending.clear();
            }
        }
    }
}

/// A local HTTP target: `/flip/<n>` answers 200 while `up` holds, else 503; `/steady/<n>` 200.
async fn target(up: Arc<AtomicBool>) -> SocketAddr {
    async fn flip(State(up): State<Arc<AtomicBool>>) -> AxumStatus {
        if up.load(Ordering::SeqCst) {
            AxumStatus::OK
        } else {
            AxumStatus::SERVICE_UNAVAILABLE
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/flip/{n}", axum::routing::get(flip))
        .route("/steady/{n}", axum::routing::get(|| async { "ok" }))
        .with_state(up);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The webhook receiver: the id and dedup key of every notification delivered, alone or in a
/// grouped message (storm control), in arrival order. While stalled it records what arrives
/// but answers only once released, as a receiver that took a delivery and then went quiet.
#[derive(Clone)]
struct Receiver {
    deliveries: Arc<Mutex<Vec<(String, String)>>>,
    /// Deliveries whose `X-Crosscheck-Id` is not their body's id.
    mislabelled: Arc<AtomicUsize>,
    stall: Arc<watch::Sender<bool>>,
}

impl Receiver {
    fn new() -> Self {
        Self {
            deliveries: Arc::default(),
            mislabelled: Arc::default(),
            stall: Arc::new(watch::channel(false).0),
        }
    }

    async fn start(&self) -> SocketAddr {
        async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> AxumStatus {
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            let notifications = match body["transitions"].as_array() {
                Some(members) => members.clone(),
                None => {
                    let header = headers.get("x-crosscheck-id").and_then(|v| v.to_str().ok());
                    if header != body["id"].as_str() {
                        r.mislabelled.fetch_add(1, Ordering::SeqCst);
                    }
                    vec![body]
                }
            };
            {
                let mut deliveries = r.deliveries.lock().unwrap();
                for n in notifications {
                    let field = |name: &str| n[name].as_str().unwrap_or_default().to_owned();
                    deliveries.push((field("id"), field("dedup_key")));
                }
            }
            let _ = r.stall.subscribe().wait_for(|stalled| !stalled).await.is_ok();
            AxumStatus::OK
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn deliveries(&self) -> Vec<(String, String)> {
        self.deliveries.lock().unwrap().clone()
    }
}

/// One replica: the control-plane binary with its own API and ingest ports.
struct Replica {
    api: u16,
    ingest: u16,
    child: Child,
}

impl Replica {
    async fn start(env: &[(&str, String)]) -> Self {
        let (api, ingest) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .envs(env.iter().map(|(k, v)| (*k, v.clone())))
            .env("CROSSCHECK_LISTEN", format!("127.0.0.1:{api}"))
            .env("CROSSCHECK_INGEST_LISTEN", format!("127.0.0.1:{ingest}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the control-plane binary starts");
        let ready = format!("http://127.0.0.1:{api}/readyz");
        eventually(WAIT, "replica ready", || async {
            reqwest::get(&ready).await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Self { api, ingest, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }
}

/// The decided state of each of `ids`.
async fn states(pool: &PgPool, ids: &[Uuid]) -> Vec<String> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT domain_id, state FROM domain_state WHERE domain_id = ANY ($1)")
            .bind(ids)
            .fetch_all(pool)
            .await
            .unwrap();
    let by_id: BTreeMap<Uuid, String> = rows.into_iter().collect();
    ids.iter().map(|id| by_id.get(id).cloned().unwrap_or_else(|| "none".into())).collect()
}

async fn wait_states(pool: &PgPool, ids: &[Uuid], state: &str) {
    eventually(WAIT, &format!("every flipping domain {state}"), || async {
        states(pool, ids).await.iter().all(|s| s == state).then_some(())
    })
    .await;
}

/// (rows, distinct (domain, time) rows) an agent has in `probe_results`.
async fn stored(ts: &PgPool, agent_id: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT (domain_id, time)) FROM probe_results WHERE agent_id = $1",
    )
    .bind(agent_id)
    .fetch_one(ts)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_replica_killed_mid_run_loses_duplicates_and_repeats_nothing(pool: PgPool) {
    let pki = Pki::new();
    let up = Arc::new(AtomicBool::new(true));
    let web = target(up.clone()).await;
    let receiver = Receiver::new();
    let hook = receiver.start().await;
    let prefix = shared::testing::random_prefix("replicas");
    let ts = ScratchDb::create("replicas").await;
    let db_name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let dir = pki.store.ca_cert().parent().unwrap().to_owned();
    let env = [
        ("CROSSCHECK_DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{db_name}")),
        ("CROSSCHECK_DATABASE_MAX_CONNECTIONS", "5".into()),
        ("CROSSCHECK_CONSENSUS_DB_CONNECTIONS", "2".into()),
        ("CROSSCHECK_TIMESERIES_URL", ts.url.clone()),
        ("CROSSCHECK_TIMESERIES_WRITE_CONNECTIONS", "2".into()),
        ("CROSSCHECK_REDIS_PREFIX", prefix.clone()),
        ("CROSSCHECK_TLS_CA", pki.store.ca_cert().display().to_string()),
        ("CROSSCHECK_TLS_CERT", dir.join("server.pem").display().to_string()),
        ("CROSSCHECK_TLS_KEY", dir.join("server.key").display().to_string()),
        ("CROSSCHECK_ALLOW_PRIVATE_TARGETS", "true".into()),
        ("CROSSCHECK_MIN_INTERVAL_S", "1".into()),
        ("CROSSCHECK_NOTIFY_ALLOW_PRIVATE", "[\"127.0.0.0/8\"]".into()),
        ("CROSSCHECK_NOTIFY_POLL_MS", "200".into()),
        ("CROSSCHECK_NOTIFY_TIMEOUT_MS", "2000".into()),
        ("CROSSCHECK_NOTIFY_MIN_BACKOFF_MS", "50".into()),
        ("CROSSCHECK_NOTIFY_MAX_BACKOFF_MS", "500".into()),
        ("CROSSCHECK_CONSENSUS_SWEEP_INTERVAL_MS", "1000".into()),
        // Both replicas add the queued results to the roll-ups every second, so one may die
        // in the middle of a pass.
        ("CROSSCHECK_ROLLUP_REFRESH_INTERVAL_S", "1".into()),
        // Every change of these domains is an outage or a recovery, each to be announced:
        // neither flap mode nor latency anomalies may hold or add notifications.
        ("CROSSCHECK_FLAP_ENABLED", "false".into()),
        ("CROSSCHECK_DEGRADED_ANOMALY", "false".into()),
        ("CROSSCHECK_LOG_FORMAT", "text".into()),
    ];
    // One after the other: the first applies the migrations.
    let mut doomed = Replica::start(&env).await;
    let survivor = Replica::start(&env).await;
    let proxy = Proxy::start(vec![
        format!("127.0.0.1:{}", doomed.ingest).parse().unwrap(),
        format!("127.0.0.1:{}", survivor.ingest).parse().unwrap(),
    ])
    .await;

    let token = control_plane::tenants::create_tenant(&pool, "replicas").await.unwrap().token;
    let http = reqwest::Client::new();
    let response = http
        .post(survivor.url("/v1/channels"))
        .bearer_auth(&token)
        .json(&json!({
            "name": "ops", "kind": "webhook", "url": format!("http://{hook}/hook"),
            "events": ["incident_opened", "incident_resolved"],
        }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let mut flipping = Vec::new();
    for (kind, n) in [("flip", FLIPPING), ("steady", STEADY)] {
        for i in 0..n {
            let response = http
                .post(survivor.url("/v1/domains"))
                .bearer_auth(&token)
                .json(&json!({"url": format!("http://{web}/{kind}/{i}"), "interval": 1, "regions": REGIONS}))
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            let id: Uuid =
                body["id"].as_str().unwrap_or_else(|| panic!("domain created: {body}")).parse().unwrap();
            if kind == "flip" {
                flipping.push(id);
            }
        }
    }

    let mut agents = Vec::new();
    for region in REGIONS {
        agents.push(RunningAgent::start(&pki, region, &prefix, proxy.addr.port()).await);
    }
    wait_states(&pool, &flipping, "up").await;
    assert!(proxy.connections_to(0) > 0, "the agents deliver through the first replica");
    assert_eq!(proxy.connections_to(1), 0, "nothing reaches the second replica while the first lives");

    // An outage. Once the first incident opened, the first replica's answers stop reaching the
    // agents; it dies (SIGKILL) as soon as it has committed a batch of each agent that the agent
    // then cannot know is stored, with the other domains' transitions and notifications in flight.
    let ts_pool = PgPool::connect(&ts.url).await.unwrap();
    receiver.stall.send_replace(true);
    up.store(false, Ordering::SeqCst);
    eventually(WAIT, "a first incident, its notification received and not answered", || async {
        let down = states(&pool, &flipping).await.iter().any(|s| s == "down");
        (down && !receiver.deliveries().is_empty()).then_some(())
    })
    .await;
    proxy.hold_first();
    let mut at_hold = Vec::new();
    for region in REGIONS {
        at_hold.push(stored(&ts_pool, &format!("{region}-1")).await.0);
    }
    eventually(WAIT, "batches stored whose acknowledgements are held back", || async {
        for (region, before) in REGIONS.iter().zip(&at_hold) {
            if stored(&ts_pool, &format!("{region}-1")).await.0 <= *before {
                return None;
            }
        }
        Some(())
    })
    .await;
    doomed.child.kill().await.unwrap();
    // The unanswered delivery is made again, with the same id: by the survivor once the dead
    // replica's lease ran out, or, if the survivor made it, after its own attempt timed out.
    let killed_at = std::time::Instant::now();
    let unanswered = receiver.deliveries()[0].0.clone();
    eventually(WAIT, "the unanswered notification sent again", || async {
        (receiver.deliveries().iter().filter(|(id, _)| *id == unanswered).count() >= 2).then_some(())
    })
    .await;
    eprintln!(
        "the unanswered notification was sent again {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    receiver.stall.send_replace(false);
    eventually(WAIT, "the agents reconnecting to the second replica", || async {
        (proxy.connections_to(1) >= REGIONS.len()).then_some(())
    })
    .await;
    wait_states(&pool, &flipping, "down").await;

    // The recovery, then a whole second outage, decided by the survivor alone.
    for state in [true, false, true] {
        up.store(state, Ordering::SeqCst);
        wait_states(&pool, &flipping, if state { "up" } else { "down" }).await;
    }

    // Storage: every result each agent produced, exactly once, although each agent resent
    // batches the dead replica had stored.
    let mut produced = BTreeMap::new();
    for (region, agent) in REGIONS.iter().zip(agents) {
        let agent_id = format!("{region}-1");
        let sent = |outcome: &str| {
            let labels = probe_agent::metrics::OutcomeLabels { outcome: outcome.into() };
            agent.metrics.delivery_batches_sent.get_or_create(&labels).get()
        };
        eprintln!(
            "{agent_id}: batches stored {}, resent after a failure {}, answered duplicate {}",
            sent("stored"),
            sent("retry"),
            sent("duplicate")
        );
        assert!(sent("duplicate") > 0, "{agent_id} resent a batch the dead replica had stored");
        produced.insert(agent_id, agent.stop().await);
    }
    for (agent_id, produced) in &produced {
        let (rows, distinct) = stored(&ts_pool, agent_id).await;
        assert_eq!(distinct, *produced as i64, "{agent_id}: stored results differ from those produced");
        assert_eq!(rows, distinct, "{agent_id}: results stored twice");
        let region = &agent_id[..3];
        // The survivor's refresher adds what is still queued within a second.
        let rolled = eventually(WAIT, &format!("{region}: the queue added to the roll-ups"), || async {
            let (queued, rolled): (i64, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM rollup_queue WHERE region = $1), \
                        (SELECT sum(probes)::bigint FROM rollup_hourly WHERE region = $1)",
            )
            .bind(region)
            .fetch_one(&ts_pool)
            .await
            .unwrap();
            (queued == 0).then_some(rolled)
        })
        .await;
        assert_eq!(rolled, Some(rows), "{region}: the roll-ups count each stored result once");
    }

    // Incidents: two outages per flipping domain, each opened and resolved once.
    let incidents: Vec<(Uuid, Uuid, String)> =
        sqlx::query_as("SELECT id, domain_id, state FROM incidents ORDER BY opened_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut per_domain: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (_, domain, state) in &incidents {
        assert_eq!(state, "resolved");
        *per_domain.entry(*domain).or_default() += 1;
    }
    let expected: BTreeMap<Uuid, usize> = flipping.iter().map(|id| (*id, 2)).collect();
    assert_eq!(per_domain, expected, "one incident per flipping domain and outage, none for the steady ones");
    let downs: i64 = sqlx::query_scalar("SELECT count(*) FROM domain_transitions WHERE to_state = 'down'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(downs as usize, incidents.len(), "one transition down per incident");

    // Notifications: one per transition in the outbox, each delivered, and heard once.
    let wanted: BTreeSet<String> = incidents
        .iter()
        .flat_map(|(id, _, _)| [format!("incident:{id}:opened"), format!("incident:{id}:resolved")])
        .collect();
    let rows: Vec<(Uuid, String, String, i32)> = eventually(WAIT, "every notification delivered", || async {
        let rows: Vec<(Uuid, String, String, i32)> =
            sqlx::query_as("SELECT id, dedup_key, state, attempts FROM notifications")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.iter().all(|(_, _, state, _)| state == "delivered").then_some(rows)
    })
    .await;
    let keys: BTreeSet<String> = rows.iter().map(|(_, key, _, _)| key.clone()).collect();
    assert_eq!(keys, wanted, "the outbox holds exactly one notification per transition");
    assert_eq!(rows.len(), wanted.len());
    let deliveries = receiver.deliveries();
    assert_eq!(receiver.mislabelled.load(Ordering::SeqCst), 0, "X-Crosscheck-Id names the notification");
    let mut heard: BTreeMap<String, usize> = BTreeMap::new();
    for (id, key) in &deliveries {
        let row = rows.iter().find(|(row_id, _, _, _)| row_id.to_string() == *id);
        let (_, row_key, _, attempts) =
            row.unwrap_or_else(|| panic!("delivery of an unknown notification {id}"));
        assert_eq!(row_key, key, "a delivery carries its notification's dedup key");
        let times = heard.entry(key.clone()).or_default();
        *times += 1;
        // A notification is sent again only when the outcome of a send was never recorded
        // (its replica died, or the receiver did not answer in time): a new claim each time.
        assert!(*times <= *attempts as usize, "{key} delivered {times} times but claimed {attempts}");
    }

    eprintln!(
        "notifications {}, deliveries {} (repeated after the kill: {})",
        rows.len(),
        deliveries.len(),
        deliveries.len() - heard.len()
    );
    let heard_keys: BTreeSet<String> = heard.keys().cloned().collect();
    assert_eq!(heard_keys, wanted, "the receiver heard every transition");

    drop(survivor);
    ts_pool.close().await;
    let redis =
        shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
    fred::prelude::ClientLike::init(&redis).await.unwrap();
    let _ = shared::testing::delete_prefix(&redis, &prefix).await;
    ts.drop_now().await;
}
