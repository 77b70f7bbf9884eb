//! End to end: real agents deliver probe results over mutual TLS into the time-series
//! database through control-plane restarts (the real binary, killed with SIGKILL) and through
//! a time-series database that refuses connections for a while. What is stored must equal
//! what the agents produced: nothing lost, nothing twice.

use std::time::Duration;

use serde_json::json;
use shared::testing::{eventually, free_port};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{test_config, TestApp, WAIT};
use crate::ingest::Pki;

/// A local HTTP target answering 200 "ok" on every path.
async fn target() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub struct RunningAgent {
    pub metrics: probe_agent::metrics::Metrics,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningAgent {
    pub async fn start(pki: &Pki, region: &str, prefix: &str, ingest_port: u16) -> Self {
        Self::start_with(pki, region, prefix, ingest_port, |_| {}).await
    }

    /// Like [`RunningAgent::start`], with the configuration changed by `adjust` first.
    pub async fn start_with(
        pki: &Pki,
        region: &str,
        prefix: &str,
        ingest_port: u16,
        adjust: impl FnOnce(&mut probe_agent::Config),
    ) -> Self {
        let (cert, key) = pki.agent(region, &format!("{region}-1"));
        let mut config = probe_agent::Config {
            region: region.into(),
            agent_id: format!("{region}-1"),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: prefix.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            version_check_interval_s: 1,
            allow_private: vec!["127.0.0.0/8".parse().unwrap()],
            control_plane_url: Some(format!("https://localhost:{ingest_port}")),
            tls_ca: Some(pki.ca_pem()),
            tls_cert: Some(cert),
            tls_key: Some(key),
            batch_max_age_ms: 200,
            resend_min_backoff_ms: 20,
            resend_max_backoff_ms: 500,
            shutdown_flush_timeout_ms: 20_000,
            ..probe_agent::Config::default()
        };
        adjust(&mut config);
        let agent = probe_agent::Agent::build(config).await.unwrap();
        let metrics = agent.metrics.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(agent.run_until(stop.clone()));
        Self { metrics, stop, task }
    }

    /// Probes produced so far, all outcomes.
    pub fn produced(&self) -> u64 {
        Self::count(&self.metrics)
    }

    fn count(metrics: &probe_agent::metrics::Metrics) -> u64 {
        std::iter::once("ok")
            .chain(probe_agent::probe::ErrorKind::ALL.iter().map(|k| k.as_str()))
            .map(|outcome| {
                metrics
                    .probes
                    .get_or_create(&probe_agent::metrics::OutcomeLabels { outcome: outcome.into() })
                    .get()
            })
            .sum()
    }

    /// Stops probing, flushes, and returns how many results were produced in all.
    pub async fn stop(self) -> u64 {
        let produced = {
            let metrics = self.metrics.clone();
            move || RunningAgent::count(&metrics)
        };
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        assert_eq!(self.metrics.dropped_total(), 0, "the agent dropped results");
        produced()
    }
}

async fn stored(ts_url: &str, agent_id: &str) -> (i64, i64) {
    let pool = PgPool::connect(ts_url).await.unwrap();
    let counts = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (domain_id, time)) FROM probe_results WHERE agent_id = $1",
    )
    .bind(agent_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    counts
}

async fn create_domains(app_url: &str, token: &str, target: std::net::SocketAddr, n: usize) {
    let http = reqwest::Client::new();
    for i in 0..n {
        let response = http
            .post(format!("{app_url}/v1/domains"))
            .bearer_auth(token)
            .json(&json!({"url": format!("http://{target}/d{i}"), "interval": 1, "regions": ["ams"]}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }
}

#[sqlx::test]
async fn control_plane_killed_mid_stream_loses_and_duplicates_nothing(pool: PgPool) {
    let pki = Pki::new();
    let target = target().await;
    let prefix = shared::testing::random_prefix("kill");
    let ts = crate::helpers::ScratchDb::create("kill").await;
    let db_name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let (api, ingest) = (free_port(), free_port());
    let dir = pki.store.ca_cert().parent().unwrap().to_owned();
    let env = [
        ("CROSSCHECK_DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{db_name}")),
        ("CROSSCHECK_TIMESERIES_URL", ts.url.clone()),
        ("CROSSCHECK_REDIS_PREFIX", prefix.clone()),
        ("CROSSCHECK_LISTEN", format!("127.0.0.1:{api}")),
        ("CROSSCHECK_INGEST_LISTEN", format!("127.0.0.1:{ingest}")),
        ("CROSSCHECK_TLS_CA", pki.store.ca_cert().display().to_string()),
        ("CROSSCHECK_TLS_CERT", dir.join("server.pem").display().to_string()),
        ("CROSSCHECK_TLS_KEY", dir.join("server.key").display().to_string()),
        ("CROSSCHECK_ALLOW_PRIVATE_TARGETS", "true".into()),
        ("CROSSCHECK_MIN_INTERVAL_S", "1".into()),
        ("CROSSCHECK_LOG_FORMAT", "text".into()),
    ];
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .envs(env.iter().cloned())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let ready = format!("http://127.0.0.1:{api}/readyz");
    let wait_ready = || async {
        eventually(WAIT, "control plane ready", || async {
            reqwest::get(&ready).await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await
    };
    let mut control = spawn();
    wait_ready().await;
    let token = control_plane::tenants::create_tenant(&pool, "kill-test").await.unwrap().token;
    create_domains(&format!("http://127.0.0.1:{api}"), &token, target, 20).await;
    let agent = RunningAgent::start(&pki, "ams", &prefix, ingest).await;

    // Let results flow, then kill the control plane while the agent keeps probing.
    eventually(WAIT, "results stored", || async { (stored(&ts.url, "ams-1").await.0 >= 40).then_some(()) })
        .await;
    control.kill().await.unwrap();
    let produced_at_kill = agent.produced();
    eventually(WAIT, "probing goes on while the control plane is down", || async {
        (agent.produced() >= produced_at_kill + 40).then_some(())
    })
    .await;
    let mut control = spawn();
    wait_ready().await;
    let produced_at_restart = agent.produced();
    eventually(WAIT, "the backlog drains after the restart", || async {
        (stored(&ts.url, "ams-1").await.1 >= produced_at_restart as i64).then_some(())
    })
    .await;

    let produced = agent.stop().await;
    let (rows, distinct) = stored(&ts.url, "ams-1").await;
    assert_eq!(distinct, produced as i64, "stored results differ from what the agent produced");
    assert_eq!(rows, distinct, "some results were stored twice");
    control.kill().await.unwrap();
    let redis =
        shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
    fred::prelude::ClientLike::init(&redis).await.unwrap();
    let _ = shared::testing::delete_prefix(&redis, &prefix).await;
    ts.drop_now().await;
}

#[sqlx::test]
async fn unavailable_time_series_database_is_ridden_out(pool: PgPool) {
    let pki = Pki::new();
    let target = target().await;
    let mut config = test_config(&shared::testing::random_prefix("tsdown"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    config.allow_private_targets = true;
    let app = TestApp::spawn_with(pool, config).await;
    let ts_url = app.config.timeseries_url.clone();
    let ts_name = ts_url.rsplit('/').next().unwrap().to_owned();
    create_domains(&app.url(""), &app.token, target, 10).await;
    let agent = RunningAgent::start(&pki, "ams", app.prefix(), app.ingest_addr.unwrap().port()).await;
    eventually(WAIT, "results stored", || async { (stored(&ts_url, "ams-1").await.0 >= 10).then_some(()) })
        .await;

    // The time-series database refuses connections and drops the open ones.
    let admin = PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    sqlx::query(&format!("ALTER DATABASE \"{ts_name}\" ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&ts_name)
        .execute(&admin)
        .await
        .unwrap();
    let buffered = || agent.metrics.delivery_buffered_results.get();
    eventually(WAIT, "the agent buffers", || async { (buffered() >= 20).then_some(()) }).await;

    sqlx::query(&format!("ALTER DATABASE \"{ts_name}\" ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "the buffer drains", || async { (buffered() == 0).then_some(()) })
        .await;

    let produced = agent.stop().await;
    let (rows, distinct) = stored(&ts_url, "ams-1").await;
    assert_eq!(distinct, produced as i64, "stored results differ from what the agent produced");
    assert_eq!(rows, distinct, "some results were stored twice");
    app.stop().await;
}
