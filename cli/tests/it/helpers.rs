//! A real control plane for the client to talk to: its own databases (control and time
//! series, created here and dropped with it), its own Redis prefix, port 0; and `crosscheck`
//! run in-process against it with an injected environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use control_plane::{tenants, Application, Config};
use serde_json::Value;
use shared::testing::random_prefix;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database made for one server, dropped (best effort) with it.
struct ScratchDb {
    name: String,
}

impl ScratchDb {
    async fn create(label: &str) -> (Self, String) {
        use sqlx::Connection;
        let name = format!("cctest_cli_{label}_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("connect to postgres");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        (ScratchDb { name }, url)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // A thread of its own: usable inside or outside a runtime.
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

/// A control plane with one tenant and its admin token.
pub struct Server {
    pub url: String,
    pub token: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
    /// A directory for this server's files, removed with it.
    pub dir: PathBuf,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the databases outlive the server.
    _dbs: Vec<ScratchDb>,
}

/// What one run of `crosscheck` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Server {
    pub async fn spawn() -> Server {
        let (control, control_url) = ScratchDb::create("cp").await;
        let (timeseries, timeseries_url) = ScratchDb::create("ts").await;
        let pool = PgPool::connect(&control_url).await.expect("connect to the control database");
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: random_prefix("cli"),
            regions: vec!["ams".into(), "iad".into(), "sin".into()],
            min_interval_s: 1,
            timeseries_url,
            consensus_db_connections: 2,
            // Email channels are accepted only where SMTP is configured; nothing is sent here.
            smtp_host: Some("127.0.0.1".into()),
            smtp_from: Some("crosscheck@example.com".into()),
            ..Config::default()
        };
        let app = Application::build_with_pool(config, pool.clone()).await.expect("control plane builds");
        let url = format!("http://{}", app.local_addr());
        let token = tenants::create_tenant(&pool, &format!("tenant-{}", Uuid::new_v4())).await.unwrap().token;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until(shutdown.clone()));
        let dir = std::env::temp_dir().join(format!("crosscheck-cli-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Server {
            url,
            token,
            pool,
            http: reqwest::Client::new(),
            dir,
            shutdown,
            task: Some(task),
            _dbs: vec![control, timeseries],
        }
    }

    /// Writes `text` to `name` in this server's directory; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `crosscheck` with `args` against this server as its tenant's admin, with `env`
    /// besides `CROSSCHECK_URL` and `CROSSCHECK_TOKEN`. Standard input is empty.
    pub async fn run(&self, args: &[&str], env: &BTreeMap<&str, &str>) -> Run {
        let mut vars: BTreeMap<String, String> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.insert("CROSSCHECK_URL".into(), self.url.clone());
        vars.insert("CROSSCHECK_TOKEN".into(), self.token.clone());
        let lookup = |name: &str| vars.get(name).cloned();
        let mut stdin: &[u8] = b"";
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let argv = std::iter::once("crosscheck").chain(args.iter().copied());
        let io = crosscheck::Io { env: &lookup, stdin: &mut stdin, stdout: &mut stdout, stderr: &mut stderr };
        let code = crosscheck::run(argv, io).await;
        Run { code, stdout: String::from_utf8(stdout).unwrap(), stderr: String::from_utf8(stderr).unwrap() }
    }

    /// `GET path` as the tenant's admin: the JSON body.
    pub async fn get(&self, path: &str) -> Value {
        let response =
            self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// The `field` of every item of the list at `path`, sorted.
    pub async fn names(&self, path: &str, field: &str) -> Vec<String> {
        let body = self.get(path).await;
        let mut names: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                i[field]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| i["url"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        names.sort();
        names
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.pool.close().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The example file of the repository.
pub fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/crosscheck.yaml")
}

/// The environment the example file names.
pub fn example_env() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("API_KEY", "key-123"),
        ("LOGIN_PASSWORD", "pw-456"),
        ("LOGIN_BODY", "{\"user\":\"probe\"}"),
        ("PAGERDUTY_ROUTING_KEY", "0123456789abcdef0123456789abcdef"),
        ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXX"),
    ])
}
