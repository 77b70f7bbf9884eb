//! Redis behind Redis Sentinel: both binaries reach the primary through the sentinels, and a
//! failover in the middle of configuration changes loses nothing. A manual failover leaves the
//! old primary taking writes until Sentinel demotes it (those writes are then gone, so the new
//! primary is behind the publisher); a crashed primary is replaced after the sentinels agree.
//! Either way the publisher catches up from the version the new primary holds and every agent
//! converges to PostgreSQL's truth.

use std::collections::BTreeMap;
use std::time::Duration;

use control_plane::domains::store;
use fred::prelude::*;
use probe_agent::catalog::Catalog;
use reqwest::StatusCode;
use serde_json::json;
use shared::testing::{eventually, random_prefix, SentinelSet};
use shared::DomainConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{agents_config, TestAgent, TestApp, WAIT};

/// The API as an operator's script uses it, for a task of its own.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn of(app: &TestApp) -> Self {
        Self { http: app.http.clone(), base: app.url(""), token: app.token.clone() }
    }

    async fn send(&self, request: reqwest::RequestBuilder, expected: StatusCode) -> serde_json::Value {
        let response = request.bearer_auth(&self.token).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, expected, "{body}");
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// One change of a repeating cycle: create (every region, one, or two), change an
    /// interval, move a domain between regions, delete the oldest once there are enough.
    async fn change(&self, step: usize, ids: &mut Vec<String>) {
        let domains = format!("{}/v1/domains", self.base);
        match step % 4 {
            0 => {
                let regions = [json!([]), json!(["ams"]), json!(["iad", "sin"])][step / 4 % 3].clone();
                let body = json!({ "url": format!("https://192.0.2.1/{step}"), "regions": regions });
                let created = self.send(self.http.post(&domains).json(&body), StatusCode::CREATED).await;
                ids.push(created["id"].as_str().unwrap().to_owned());
            }
            1 if !ids.is_empty() => {
                let id = &ids[step % ids.len()];
                let body = json!({ "interval": 10 + step % 50 });
                self.send(self.http.patch(format!("{domains}/{id}")).json(&body), StatusCode::OK).await;
            }
            2 if !ids.is_empty() => {
                let id = &ids[(step / 2) % ids.len()];
                let regions = [json!(["sin"]), json!([]), json!(["ams", "iad"])][step % 3].clone();
                let body = json!({ "regions": regions });
                self.send(self.http.patch(format!("{domains}/{id}")).json(&body), StatusCode::OK).await;
            }
            3 if ids.len() > 12 => {
                let id = ids.remove(0);
                self.send(self.http.delete(format!("{domains}/{id}")), StatusCode::NO_CONTENT).await;
            }
            _ => {}
        }
    }
}

/// Keeps changing the configuration, one change every 20 ms (a busy operator, not a wait for
/// anything), until `stop`. Returns the number of steps taken.
fn churn(api: Api, mut step: usize, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        while !stop.is_cancelled() {
            pace.tick().await;
            api.change(step, &mut ids).await;
            step += 1;
        }
        step
    })
}

/// Redis's hash as a map of domain id → config (`None` while Redis does not answer).
async fn redis_domains(redis: &Client, prefix: &str) -> Option<BTreeMap<String, DomainConfig>> {
    let raw: BTreeMap<String, String> = redis.hgetall(format!("{prefix}:domains")).await.ok()?;
    Some(raw.into_iter().map(|(k, v)| (k, serde_json::from_str(&v).unwrap())).collect())
}

/// Whether Redis and every agent hold exactly what PostgreSQL holds, version included: the
/// version, or what differs.
async fn compare(app: &TestApp, agents: &[(&str, TestAgent)]) -> Result<u64, String> {
    let (version, configs) = store::snapshot(&app.pool).await.map_err(|e| format!("postgres: {e}"))?;
    let redis_version: Option<u64> = app
        .redis
        .get(format!("{}:domains:version", app.prefix()))
        .await
        .map_err(|e| format!("redis: {e}"))?;
    if redis_version != Some(version) {
        return Err(format!("redis holds version {redis_version:?}, postgres {version}"));
    }
    let want: BTreeMap<String, DomainConfig> =
        configs.iter().map(|c| (c.id.to_string(), c.clone())).collect();
    let held = redis_domains(&app.redis, app.prefix()).await.ok_or("redis does not answer")?;
    if held != want {
        return Err(format!(
            "redis holds {} domains at version {version}, postgres {}",
            held.len(),
            want.len()
        ));
    }
    for (region, agent) in agents {
        let expected = Catalog::from_snapshot(version, configs.iter().cloned(), region);
        let current = agent.catalog.current();
        if !agent.catalog.is_loaded() || *current != expected {
            return Err(format!(
                "{region}: catalog at version {} with {} domains, expected {} at {version}",
                current.version(),
                current.len(),
                expected.len()
            ));
        }
    }
    Ok(version)
}

/// Polls [`compare`] until everything agrees, or panics with what still differs after `WAIT`.
async fn converged(app: &TestApp, agents: &[(&str, TestAgent)], what: &str) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match compare(app, agents).await {
            Ok(version) => return version,
            Err(difference) if std::time::Instant::now() > deadline => {
                panic!("timed out after {WAIT:?} waiting for {what}: {difference}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn failovers_during_configuration_changes_lose_nothing(pool: PgPool) {
    let mut redis = SentinelSet::start().await;
    let url = redis.url();
    let prefix = random_prefix("sentinel");
    // No polling and no periodic reconcile: after the last change, only the publisher's
    // reaction to its reconnection can bring a primary that is behind up to date.
    let config = control_plane::Config {
        publish_poll_ms: 3_600_000,
        reconcile_interval_s: 3_600,
        ..agents_config(&prefix, &url)
    };
    let app = TestApp::spawn_with(pool, config).await;
    let mut agents = Vec::new();
    for region in ["ams", "iad", "sin"] {
        agents.push((region, TestAgent::spawn(&url, &prefix, region).await));
    }
    let api = Api::of(&app);

    // Changes before and after a manual failover. Those made after the promotion go to the old
    // primary until Sentinel demotes it, and are then lost: the new primary is behind, and
    // with no polling and no further change only the publisher's catch-up on reconnecting can
    // bring it up to date.
    let [first, second] = <[u16; 2]>::try_from(redis.node_ports()).unwrap();
    assert_eq!(redis.primary_port().await, Some(first));
    let stop = CancellationToken::new();
    let changes = churn(api.clone(), 0, stop.clone());
    eventually(WAIT, "changes before the failover", || async { (app.pg_version().await > 20).then_some(()) })
        .await;
    let promoted = redis.failover().await;
    assert_eq!(promoted, second);
    let at_promotion = app.pg_version().await;
    eventually(WAIT, "changes after the promotion", || async {
        (app.pg_version().await > at_promotion + 20).then_some(())
    })
    .await;
    stop.cancel();
    let steps = changes.await.unwrap();
    redis.wait_replicating(first, second).await;
    let after_failover = converged(&app, &agents, "convergence after the manual failover").await;
    assert!(after_failover > at_promotion + 20);
    for (region, agent) in &agents {
        let what = format!("{region}: the failover to reach the agent as a reconnection");
        eventually(WAIT, &what, || async { (agent.metrics.redis_reconnects.get() >= 1).then_some(()) }).await;
    }

    // The new primary crashes in the middle of more changes; the sentinels agree on the
    // old one, which replicates it by now.
    redis.wait_known_replica(first).await;
    let stop = CancellationToken::new();
    let changes = churn(api, steps, stop.clone());
    eventually(WAIT, "changes after the first failover", || async {
        let version = app.pg_version().await;
        (version > after_failover + 20).then_some(())
    })
    .await;
    redis.kill_node(second);
    let primary = redis.wait_new_primary(second).await;
    assert_eq!(primary, first);
    let at_promotion = app.pg_version().await;
    eventually(WAIT, "changes after the crash failover", || async {
        (app.pg_version().await > at_promotion + 20).then_some(())
    })
    .await;
    stop.cancel();
    changes.await.unwrap();
    let last = converged(&app, &agents, "convergence after the crash failover").await;
    assert!(last > at_promotion);
    app.stop().await;
}
