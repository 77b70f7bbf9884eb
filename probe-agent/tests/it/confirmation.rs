//! Confirmation probes and the canary self-check of a running agent: a probe request published
//! on `<prefix>:probe-requests` gets the domain probed at once (`trigger = on_demand`), while
//! requests for other regions, unknown domains and malformed payloads are counted and ignored;
//! canaries decide the agent's health (`/debug/health`, `probe_agent_healthy`). Targets are
//! local servers on 127.0.0.1; nothing here reaches the internet.

use std::time::Duration;

use fred::prelude::*;
use probe_agent::metrics::{requests as outcome, Metrics};
use serde_json::Value;
use shared::testing::{delete_prefix, eventually, random_prefix};
use shared::{DomainConfig, DomainId, ProbeRequest, RedisKeys};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{local_target, serve};

/// The deadline of every "eventually" wait: generous, since a busy two-core machine can stretch
/// seconds of background work many times over, and it only matters when a test is failing.
const WAIT: Duration = Duration::from_secs(60);

async fn redis() -> Client {
    let redis =
        shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
    redis.init().await.unwrap();
    redis
}

/// A running agent in region `ams` on the shared Redis under `prefix`.
struct Running {
    addr: std::net::SocketAddr,
    metrics: Metrics,
    agent: probe_agent::catalog::sync::CatalogHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(config: probe_agent::Config) -> Self {
        let config = probe_agent::Config {
            region: "ams".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_private: vec!["127.0.0.0/8".parse().unwrap()],
            ..config
        };
        let agent = probe_agent::Agent::build(config).await.unwrap();
        let (addr, metrics, handle) = (agent.local_addr(), agent.metrics.clone(), agent.catalog());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run_until(shutdown.clone()));
        Self { addr, metrics, agent: handle, shutdown, task }
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("http://{}{path}", self.addr)).await.unwrap().json().await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("agent stops").unwrap().unwrap();
    }
}

/// Publishes until a subscriber receives it (Pub/Sub drops messages nobody listens to), so a
/// message published before the agent subscribed is not lost, and none is delivered twice.
async fn publish(redis: &Client, channel: &str, payload: String) {
    eventually(WAIT, "a subscriber on the probe-requests channel", || {
        let payload = payload.clone();
        async move {
            let receivers: i64 = redis.publish(channel, payload).await.unwrap();
            (receivers > 0).then_some(())
        }
    })
    .await;
}

async fn counted(metrics: &Metrics, label: &str, n: u64) {
    eventually(WAIT, &format!("{n} probe request(s) counted as {label}"), || async {
        (metrics.probe_request_count(label) == n).then_some(())
    })
    .await;
}

fn request(domain_id: DomainId, regions: &[&str]) -> String {
    serde_json::to_string(&ProbeRequest {
        domain_id,
        regions: regions.iter().map(|r| r.to_string()).collect(),
        reason: "confirmation".into(),
        request_id: None,
        config: None,
    })
    .unwrap()
}

#[tokio::test]
async fn a_probe_request_for_this_region_probes_the_domain_at_once() {
    let port = local_target().await;
    let prefix = random_prefix("confirm");
    let keys = RedisKeys::new(prefix.clone());
    let redis = redis().await;
    // A long interval: the scheduled probe is (almost surely) far away, and the result's
    // trigger tells the two apart anyway.
    let domain = DomainConfig {
        url: format!("http://127.0.0.1:{port}/health"),
        timeout_ms: 5_000,
        ..shared::testing::sample_domain(3600, 1)
    };
    let _: () = redis
        .hset(keys.domains(), (domain.id.to_string(), serde_json::to_string(&domain).unwrap()))
        .await
        .unwrap();
    let _: () = redis.set(keys.version(), 1, None, None, false).await.unwrap();
    let agent = Running::start(probe_agent::Config {
        redis_prefix: prefix.clone(),
        ..probe_agent::Config::default()
    })
    .await;
    eventually(WAIT, "the catalog loaded", || async {
        agent.agent.current().get(&domain.id).is_some().then_some(())
    })
    .await;
    let channel = keys.probe_requests();

    // For another region: counted and ignored.
    publish(&redis, &channel, request(domain.id, &["sin"])).await;
    counted(&agent.metrics, outcome::NOT_MINE, 1).await;
    // Unknown domain, malformed payloads.
    publish(&redis, &channel, request(DomainId::new(), &[])).await;
    counted(&agent.metrics, outcome::UNKNOWN_DOMAIN, 1).await;
    publish(&redis, &channel, "{\"domain_id\":\"not-a-uuid\"}".into()).await;
    publish(&redis, &channel, "not json".into()).await;
    counted(&agent.metrics, outcome::MALFORMED, 2).await;
    assert_eq!(agent.metrics.on_demand_probes.get(), 0, "nothing probed on demand so far");
    assert_eq!(agent.metrics.probe_request_count(outcome::PROBED), 0);

    // For this region (among others): probed now.
    publish(&redis, &channel, request(domain.id, &["iad", "ams"])).await;
    let result = eventually(WAIT, "the on-demand result", || async {
        let body = agent.get("/debug/results").await;
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["domain_id"] == domain.id.to_string() && r["trigger"] == "on_demand")
            .cloned()
    })
    .await;
    assert_eq!(result["report"]["ok"], true, "{result}");
    assert_eq!(result["report"]["status"], 200);
    assert_eq!(agent.metrics.probe_request_count(outcome::PROBED), 1);
    assert_eq!(agent.metrics.on_demand_probes.get(), 1);
    // A request to every region also counts.
    publish(&redis, &channel, request(domain.id, &[])).await;
    eventually(WAIT, "the second request probed or coalesced", || async {
        let handled = agent.metrics.probe_request_count(outcome::PROBED)
            + agent.metrics.probe_request_count(outcome::COALESCED);
        (handled == 2).then_some(())
    })
    .await;

    let text = reqwest::get(format!("http://{}/metrics", agent.addr)).await.unwrap().text().await.unwrap();
    for line in [
        "probe_agent_probe_requests_total{outcome=\"not_mine\"} 1",
        "probe_agent_probe_requests_total{outcome=\"unknown_domain\"} 1",
        "probe_agent_probe_requests_total{outcome=\"malformed\"} 2",
        "probe_agent_probe_requests_total{outcome=\"overloaded\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing");
    }
    agent.stop().await;
    delete_prefix(&redis, &prefix).await.unwrap();
}

#[tokio::test]
async fn canaries_decide_the_agents_health() {
    let up = local_target().await;
    // Closed for now; a server comes up on it later.
    let down = shared::testing::free_port();
    let prefix = random_prefix("canary");
    let agent = Running::start(probe_agent::Config {
        redis_prefix: prefix.clone(),
        canaries: vec![format!("http://127.0.0.1:{up}/"), format!("http://127.0.0.1:{down}/")],
        canary_healthy_min: Some(2),
        canary_interval_s: 1,
        canary_timeout_ms: 2_000,
        ..probe_agent::Config::default()
    })
    .await;

    let health = eventually(WAIT, "an unhealthy verdict", || async {
        let body = agent.get("/debug/health").await;
        (body["health"]["healthy"] == false).then_some(body)
    })
    .await;
    assert_eq!(health["health"]["canaries_ok"], 1, "{health}");
    assert_eq!(health["health"]["canaries_total"], 2);
    assert_eq!(health["healthy_min"], 2);
    assert_eq!(health["health"]["canaries"][1]["error"], "connect", "{health}");
    assert_eq!(agent.metrics.healthy.get(), 0);
    assert_eq!(agent.metrics.canaries_ok.get(), 1);

    // The second canary comes up: healthy at the next check.
    serve(TcpListener::bind(("127.0.0.1", down)).await.unwrap());
    eventually(WAIT, "a healthy verdict", || async {
        let body = agent.get("/debug/health").await;
        (body["health"]["healthy"] == true && body["health"]["canaries_ok"] == 2).then_some(())
    })
    .await;
    let text = reqwest::get(format!("http://{}/metrics", agent.addr)).await.unwrap().text().await.unwrap();
    assert!(text.contains("probe_agent_healthy 1"), "{text}");
    assert!(text.contains("probe_agent_canaries_ok 2"));
    assert!(
        agent.get("/debug/results").await["results"].as_array().unwrap().is_empty(),
        "canaries are not results"
    );
    agent.stop().await;
    delete_prefix(&redis().await, &prefix).await.unwrap();
}

#[tokio::test]
async fn without_canaries_there_is_no_health() {
    let agent = Running::start(probe_agent::Config {
        redis_prefix: random_prefix("canary"),
        ..probe_agent::Config::default()
    })
    .await;
    let body = agent.get("/debug/health").await;
    assert!(body["health"].is_null(), "{body}");
    assert_eq!(agent.metrics.healthy.get(), 1);
    agent.stop().await;
}
