//! `TestApp`: a control plane on port 0 with its own database and Redis prefix, typed request
//! helpers, and probe agents attached to the same prefix.

use std::time::Duration;

use control_plane::publisher::Publisher;
use control_plane::{tenants, Application, Config};
use fred::prelude::*;
use probe_agent::catalog::sync::CatalogHandle;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use shared::testing::{delete_prefix, eventually, random_prefix};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The deadline of every "eventually" wait: generous, since a busy two-core machine can stretch
/// seconds of background work many times over, and it only matters when a test is failing.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The gRPC ingest address, when the config enables ingest.
    pub ingest_addr: Option<std::net::SocketAddr>,
    pub agents: control_plane::agents::AgentRegistry,
    /// The consensus engine of this replica (tests evaluate and sweep directly).
    pub consensus: control_plane::consensus::Consensus,
    /// The flap exit check of this replica (tests call `check(now)` directly).
    pub flap: control_plane::flap::Sweeper,
    /// The maintenance sweeper of this replica (tests call `step(now)` directly).
    pub maintenance: control_plane::maintenance::Sweeper,
    pub pool: PgPool,
    /// `timeseries_url` points at `timeseries_db`, created for this app and dropped with it.
    pub config: Config,
    pub timeseries_db: Option<ScratchDb>,
    pub publisher: Publisher,
    /// This replica's live event hub.
    pub live: control_plane::live::Hub,
    pub redis: Client,
    pub token: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(prefix: &str, redis_url: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: redis_url.to_owned(),
        redis_prefix: prefix.to_owned(),
        regions: vec!["ams".into(), "iad".into(), "sin".into()],
        min_interval_s: 1,
        publish_poll_ms: 200,
        reconcile_interval_s: 1,
        // Tests run side by side on one server: consensus's own pool at its smallest.
        consensus_db_connections: 2,
        ..Config::default()
    }
}

/// For tests with running agents: domains point at documentation addresses (192.0.2.0/24),
/// which the API accepts here and the agents' SSRF guard refuses before any packet is sent, so
/// agents that happen to probe during a test never reach the network.
pub fn agents_config(prefix: &str, redis_url: &str) -> Config {
    Config { allow_private_targets: true, ..test_config(prefix, redis_url) }
}

impl TestApp {
    pub async fn spawn_with_agents(pool: PgPool) -> Self {
        let prefix = random_prefix("cp");
        Self::spawn_with(pool, agents_config(&prefix, "redis://127.0.0.1:6379")).await
    }

    pub async fn spawn(pool: PgPool) -> Self {
        let prefix = random_prefix("cp");
        Self::spawn_with(pool, test_config(&prefix, "redis://127.0.0.1:6379")).await
    }

    pub async fn spawn_with(pool: PgPool, config: Config) -> Self {
        Self::spawn_with_clock(pool, config, control_plane::clock::system()).await
    }

    /// With the clock the flap check and the digest scheduler read (a `ManualClock` the test
    /// moves).
    pub async fn spawn_with_clock(
        pool: PgPool,
        mut config: Config,
        clock: std::sync::Arc<dyn control_plane::clock::Clock>,
    ) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            shared::telemetry::init(Default::default());
        }
        let timeseries_db = ScratchDb::create("ts").await;
        config.timeseries_url = timeseries_db.url.clone();
        let app = Application::build_with_clock(config.clone(), pool.clone(), clock)
            .await
            .expect("control plane builds");
        let addr = app.local_addr();
        let ingest_addr = app.ingest_addr();
        let agents = app.agents();
        let consensus = app.consensus();
        let flap = app.flap();
        let maintenance = app.maintenance();
        let publisher = app.publisher();
        let live = app.live();
        let issued = tenants::create_tenant(&pool, &format!("tenant-{}", Uuid::new_v4())).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until(shutdown.clone()));
        let redis = shared::redis::builder(&config.redis_url, Default::default()).unwrap().build().unwrap();
        redis.init().await.unwrap();
        Self {
            addr,
            ingest_addr,
            agents,
            consensus,
            flap,
            maintenance,
            pool,
            config,
            timeseries_db: Some(timeseries_db),
            publisher,
            live,
            redis,
            token: issued.token,
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.config.redis_prefix
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http.post(self.url(path)).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http.patch(self.url(path)).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.http.delete(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    /// Creates a domain with the tenant's admin token; panics unless 201. Returns its id.
    pub async fn create_domain(&self, body: Value) -> String {
        let response = self.post("/v1/domains", &self.token, &body).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Another tenant with its own admin token.
    pub async fn other_tenant(&self) -> String {
        tenants::create_tenant(&self.pool, &format!("other-{}", Uuid::new_v4())).await.unwrap().token
    }

    /// The config version Postgres has reached.
    pub async fn pg_version(&self) -> u64 {
        let v: i64 =
            sqlx::query_scalar("SELECT version FROM config_state").fetch_one(&self.pool).await.unwrap();
        v as u64
    }

    /// The config version Redis holds.
    pub async fn redis_version(&self) -> Option<u64> {
        self.redis.get(format!("{}:domains:version", self.prefix())).await.unwrap()
    }

    /// Waits until Redis holds config `version`.
    pub async fn wait_published(&self, version: u64) {
        eventually(WAIT, "publication", || async { self.redis_version().await.filter(|v| *v == version) })
            .await;
    }

    pub async fn agent(&self, region: &str) -> TestAgent {
        TestAgent::spawn(&self.config.redis_url, self.prefix(), region).await
    }

    /// Stops the control plane and waits until it has; Redis keeps what it published.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        if let Some(db) = self.timeseries_db.take() {
            db.drop_now().await;
        }
    }

    /// Stops the control plane and deletes this test's Redis keys.
    pub async fn stop(self) {
        let redis = self.redis.clone();
        let prefix = self.config.redis_prefix.clone();
        self.shutdown().await;
        let _ = delete_prefix(&redis, &prefix).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(db) = self.timeseries_db.take() {
            db.drop_blocking();
        }
    }
}

/// The server scratch databases are created on.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test (the time-series database of a `TestApp`, or of a
/// time-series test), dropped by `drop_now` or, best effort, on drop.
pub struct ScratchDb {
    pub name: String,
    pub url: String,
    dropped: bool,
}

impl ScratchDb {
    pub async fn create(label: &str) -> Self {
        use sqlx::Connection;
        let name = format!("cctest_{label}_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("connect to postgres");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        Self { name, url, dropped: false }
    }

    pub async fn drop_now(mut self) {
        use sqlx::Connection;
        self.dropped = true;
        if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_URL).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
                .execute(&mut admin)
                .await;
        }
    }

    /// Drops the database from a thread of its own (usable in `Drop`, inside or outside a runtime).
    pub fn drop_blocking(mut self) {
        self.dropped = true;
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_URL).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if !self.dropped {
            let db = ScratchDb { name: std::mem::take(&mut self.name), url: String::new(), dropped: false };
            self.dropped = true;
            db.drop_blocking();
        }
    }
}

/// A real probe agent (catalog sync and operational endpoints) on port 0.
pub struct TestAgent {
    pub catalog: CatalogHandle,
    pub metrics: probe_agent::metrics::Metrics,
    pub addr: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl TestAgent {
    pub async fn spawn(redis_url: &str, prefix: &str, region: &str) -> Self {
        let config = probe_agent::Config {
            region: region.to_owned(),
            agent_id: format!("{region}-test"),
            redis_url: redis_url.to_owned(),
            redis_prefix: prefix.to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            version_check_interval_s: 1,
            redis_min_backoff_ms: 50,
            redis_max_backoff_ms: 500,
            ..probe_agent::Config::default()
        };
        let agent = probe_agent::Agent::build(config).await.unwrap();
        let catalog = agent.catalog();
        let metrics = agent.metrics.clone();
        let addr = agent.local_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(agent.run_until(shutdown.clone()));
        Self { catalog, metrics, addr, shutdown }
    }

    /// Waits until the catalog satisfies `check`.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&probe_agent::catalog::Catalog) -> bool) {
        eventually(WAIT, what, || {
            let ok = self.catalog.is_loaded() && check(&self.catalog.current());
            async move { ok.then_some(()) }
        })
        .await;
    }

    pub fn has(&self, id: &str) -> bool {
        self.catalog.current().get(&id.parse().unwrap()).is_some()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn domain(url: &str) -> Value {
    json!({ "url": url })
}

/// One agent's batch holding one observation of `domain` at `at` from `region` (agent
/// `<region>-1`): `200` when `ok`, else `503` (`status`).
pub fn observed(
    region: &str,
    domain: Uuid,
    ok: bool,
    at: chrono::DateTime<chrono::Utc>,
) -> control_plane::consensus::ObservedBatch {
    use control_plane::consensus::{DomainObservation, ObservedBatch, Run};
    ObservedBatch {
        region: region.into(),
        agent_id: format!("{region}-1"),
        health: None,
        received_at: at,
        observations: vec![DomainObservation {
            domain_id: domain,
            ok,
            error_kind: (!ok).then(|| "status".to_owned()),
            status_code: Some(if ok { 200 } else { 503 }),
            observed_at: at,
            run: Run::of(ok, at),
            latencies: Vec::new(),
        }],
        certificates: Vec::new(),
        dns: Vec::new(),
    }
}

/// One Server-Sent Events message as a client sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// A comment-only message (a heartbeat).
    pub comment: bool,
}

impl SseMessage {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{self:?} is not JSON: {e}"))
    }
}

/// A streaming response read as Server-Sent Events.
pub struct SseClient {
    response: Response,
    buffer: String,
    pub status: StatusCode,
}

impl SseClient {
    /// Opens `path` with `headers`; panics unless the answer is an event stream.
    pub async fn open(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Self {
        let client = Self::connect(app, path, headers).await;
        assert_eq!(client.status, StatusCode::OK, "{path}");
        client
    }

    /// Opens `path` whatever the answer.
    pub async fn connect(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = app.http.get(app.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        Self { response, buffer: String::new(), status }
    }

    pub fn response_is_event_stream(&self) -> bool {
        self.response.headers().get("content-type").is_some_and(|v| v == "text/event-stream")
    }

    /// The next message (heartbeats included), or `None` when the stream ended or `wait` passed.
    pub async fn next_raw(&mut self, wait: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = SseMessage::default();
                let mut data = Vec::new();
                let mut fields = 0;
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if line.starts_with(':') {
                        message.comment = true;
                        continue;
                    }
                    fields += 1;
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match name {
                        "id" => message.id = Some(value.to_owned()),
                        "event" => message.event = Some(value.to_owned()),
                        "data" => data.push(value.to_owned()),
                        _ => {}
                    }
                }
                if fields > 0 {
                    message.comment = false;
                }
                message.data = data.join("\n");
                return Some(message);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?;
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next message that dispatches an event (has data), skipping heartbeats and id-only
    /// messages; `None` when the stream ended or `wait` passed.
    pub async fn next_event(&mut self, wait: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next_raw(left).await?;
            if !message.data.is_empty() {
                return Some(message);
            }
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str, wait: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next_event(left).await?;
            if message.event.as_deref() == Some(name) {
                return Some(message);
            }
        }
    }
}
