//! Consensus across regions end to end: batches over real mutual TLS, observations and states
//! in PostgreSQL, incidents and their outbox rows, confirmation probes on Redis, two replicas
//! on one database, acknowledgements and certificate expiry notices.

use std::collections::HashMap;
use std::time::Instant;

use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::proto::v1::ingest_client::IngestClient;
use shared::proto::{AgentHealth, Certificate, ChainCertificate, ErrorKind, ProbeResult};
use shared::testing::{eventually, random_prefix, RedisServer};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp, WAIT};
use crate::ingest::{batch, client, result, spawn_with_ingest, Pki};

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];

/// One connected agent client per region.
async fn agents(app: &TestApp, pki: &Pki) -> HashMap<&'static str, IngestClient<Channel>> {
    let mut clients = HashMap::new();
    for region in REGIONS {
        let (cert, key) = pki.agent(region, &format!("{region}-1"));
        clients.insert(region, client(app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap());
    }
    clients
}

fn probe(domain: &str, ok: bool) -> ProbeResult {
    let mut r = result(domain.parse().unwrap(), ok);
    if !ok {
        r.error = ErrorKind::Status as i32;
    }
    r
}

/// Sends one result for `domain` from `region`, with the agent's health when given.
async fn send(
    clients: &mut HashMap<&'static str, IngestClient<Channel>>,
    region: &'static str,
    results: Vec<ProbeResult>,
    healthy: Option<bool>,
) {
    let mut b = batch(region, results);
    b.health = healthy.map(|healthy| AgentHealth {
        healthy,
        canaries_ok: u32::from(healthy),
        canaries_total: 1,
        checked_at_unix_us: chrono::Utc::now().timestamp_micros(),
        ..Default::default()
    });
    let ack = clients.get_mut(region).unwrap().send_batch(b).await.unwrap().into_inner();
    assert!(!ack.duplicate);
}

async fn report(
    clients: &mut HashMap<&'static str, IngestClient<Channel>>,
    region: &'static str,
    domain: &str,
    ok: bool,
) {
    send(clients, region, vec![probe(domain, ok)], None).await;
}

async fn state_of(pool: &PgPool, domain: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM domain_state WHERE domain_id = $1")
        .bind(domain.parse::<Uuid>().unwrap())
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn wait_state(app: &TestApp, domain: &str, want: &str) {
    eventually(WAIT, &format!("domain {want}"), || async {
        (state_of(&app.pool, domain).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

async fn incidents_of(pool: &PgPool, domain: &str) -> Vec<(Uuid, String)> {
    sqlx::query_as("SELECT id, state FROM incidents WHERE domain_id = $1 ORDER BY opened_at")
        .bind(domain.parse::<Uuid>().unwrap())
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A webhook channel for the domain's tenant, so notifications land in the outbox.
async fn channel_for(pool: &PgPool, domain: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO channels (id, tenant_id, name, kind, config)
         SELECT $1, tenant_id, 'hook', 'webhook', '{\"url\": \"https://hooks.example.com/x\"}' FROM domains WHERE id = $2",
    )
    .bind(id)
    .bind(domain.parse::<Uuid>().unwrap())
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn outbox(pool: &PgPool, channel: Uuid) -> Vec<(String, String, Value)> {
    sqlx::query_as("SELECT dedup_key, kind, payload FROM notifications WHERE channel_id = $1 ORDER BY created_at, dedup_key")
        .bind(channel)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn all_up(app: &TestApp, clients: &mut HashMap<&'static str, IngestClient<Channel>>, domain: &str) {
    for region in REGIONS {
        report(clients, region, domain, true).await;
    }
    wait_state(app, domain, "up").await;
}

#[sqlx::test]
async fn failure_in_two_of_three_regions_opens_one_incident_and_recovery_resolves_it(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let channel = channel_for(&app.pool, &domain).await;
    let mut clients = agents(&app, &pki).await;
    all_up(&app, &mut clients, &domain).await;

    report(&mut clients, "ams", &domain, false).await;
    report(&mut clients, "iad", &domain, false).await;
    wait_state(&app, &domain, "down").await;
    // Evaluating again (as the sweep and other replicas do) opens nothing more.
    app.consensus.evaluate(domain.parse().unwrap(), chrono::Utc::now()).await.unwrap();
    app.consensus.sweep().await.unwrap();
    let incidents = incidents_of(&app.pool, &domain).await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let (id, state) = &incidents[0];
    assert_eq!(state, "open");

    let body: Value = app.get(&format!("/v1/incidents/{id}"), &app.token).await.json().await.unwrap();
    let regions: Vec<&str> =
        body["opened_regions"].as_array().unwrap().iter().map(|r| r["region"].as_str().unwrap()).collect();
    assert_eq!(regions, ["ams", "iad"], "{body}");
    assert_eq!(body["opened_regions"][0]["error_kind"], "status");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["events"][0]["kind"], "opened");
    assert_eq!(body["events"][0]["actor"], "system");
    assert_eq!(body["events"][0]["details"]["regions"].as_array().unwrap().len(), 2);

    let queued = outbox(&app.pool, channel).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, format!("incident:{id}:opened"));
    assert_eq!(queued[0].1, "incident_opened");
    assert_eq!(queued[0].2["incident_id"], id.to_string());

    let status: Value =
        app.get(&format!("/v1/domains/{domain}/status"), &app.token).await.json().await.unwrap();
    assert_eq!(status["state"], "down");
    assert_eq!(status["open_incident_id"], id.to_string());
    assert_eq!(status["quorum"], 2);
    assert_eq!(status["failing"], 2);

    report(&mut clients, "ams", &domain, true).await;
    report(&mut clients, "iad", &domain, true).await;
    wait_state(&app, &domain, "up").await;
    let body: Value = app.get(&format!("/v1/incidents/{id}"), &app.token).await.json().await.unwrap();
    assert_eq!(body["state"], "resolved");
    assert!(body["duration_s"].as_i64().unwrap() >= 0, "{body}");
    let kinds: Vec<&str> =
        body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["opened", "resolved"]);
    let keys: Vec<String> = outbox(&app.pool, channel).await.into_iter().map(|q| q.0).collect();
    assert!(keys.contains(&format!("incident:{id}:resolved")), "{keys:?}");

    let listed: Value = app
        .get(&format!("/v1/incidents?state=resolved&domain={domain}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let open: Value = app.get("/v1/incidents?state=open", &app.token).await.json().await.unwrap();
    assert!(open["items"].as_array().unwrap().is_empty());
    app.stop().await;
}

/// Confirmation probes only hasten a decision: while Redis is away, a failure in two of three
/// regions still opens the incident at once, not after Redis' command timeout (the first
/// region's failure asks for a confirmation, and the round asking must not wait on Redis).
#[sqlx::test]
async fn a_redis_outage_does_not_hold_up_the_decision(pool: PgPool) {
    let mut redis = RedisServer::start().await;
    let pki = Pki::new();
    let mut config = test_config(&random_prefix("consensus"), &redis.url());
    pki.configure(&mut config);
    let app = TestApp::spawn_with(pool, config).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut clients = agents(&app, &pki).await;
    all_up(&app, &mut clients, &domain).await;

    redis.stop();
    let failed = Instant::now();
    report(&mut clients, "ams", &domain, false).await;
    report(&mut clients, "iad", &domain, false).await;
    wait_state(&app, &domain, "down").await;
    let took = failed.elapsed();
    assert!(
        took < shared::redis::RedisOptions::default().command_timeout / 2,
        "decided {took:?} after the failures, held up by the absent Redis"
    );
    assert_eq!(incidents_of(&app.pool, &domain).await.len(), 1);
    redis.restart().await;
    app.stop().await;
}

/// Agents sharing a region, or both probing a domain that asks for two agents per region, are
/// one vote: the region's row holds the newest observation of either, and their failures alone
/// never make a quorum of regions.
#[sqlx::test]
async fn two_agents_of_one_region_are_one_vote(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app
        .create_domain(json!({"url": "https://example.com/health", "interval": 60, "agents_per_region": 2}))
        .await;
    let shown: Value = app.get(&format!("/v1/domains/{domain}"), &app.token).await.json().await.unwrap();
    assert_eq!(shown["agents_per_region"], 2, "{shown}");
    // It reaches agents: a change of it is a new config version.
    let bad = app.patch(&format!("/v1/domains/{domain}"), &app.token, &json!({"agents_per_region": 3})).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let one: Value = app
        .patch(&format!("/v1/domains/{domain}"), &app.token, &json!({"agents_per_region": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["agents_per_region"], 1);
    assert!(one["config_version"].as_u64() > shown["config_version"].as_u64(), "{one}");
    let two: Value = app
        .patch(&format!("/v1/domains/{domain}"), &app.token, &json!({"agents_per_region": 2}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(two["agents_per_region"], 2);
    let mut clients = agents(&app, &pki).await;
    all_up(&app, &mut clients, &domain).await;
    let (cert, key) = pki.agent("ams", "ams-2");
    let mut second = client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();

    report(&mut clients, "ams", &domain, false).await;
    let ack = second.send_batch(batch("ams", vec![probe(&domain, false)])).await.unwrap().into_inner();
    assert!(!ack.duplicate);
    let id: Uuid = domain.parse().unwrap();
    eventually(WAIT, "the second ams agent's failure recorded", || async {
        let row: Option<(String, bool)> = sqlx::query_as(
            "SELECT agent_id, ok FROM region_observations WHERE domain_id = $1 AND region = 'ams'",
        )
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        (row == Some(("ams-2".to_owned(), false))).then_some(())
    })
    .await;
    let regions: i64 = sqlx::query_scalar("SELECT count(*) FROM region_observations WHERE domain_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(regions, 3, "one row per region, whatever the number of agents");
    app.consensus.evaluate(id, chrono::Utc::now()).await.unwrap();
    assert_eq!(state_of(&app.pool, &domain).await.as_deref(), Some("up"), "two agents of ams are one vote");
    assert!(incidents_of(&app.pool, &domain).await.is_empty());
    let status: Value =
        app.get(&format!("/v1/domains/{domain}/status"), &app.token).await.json().await.unwrap();
    assert_eq!((status["failing"].clone(), status["quorum"].clone()), (json!(1), json!(2)), "{status}");

    // A second region makes the quorum.
    report(&mut clients, "iad", &domain, false).await;
    wait_state(&app, &domain, "down").await;
    assert_eq!(incidents_of(&app.pool, &domain).await.len(), 1);
    app.stop().await;
}

#[sqlx::test]
async fn failure_in_one_region_asks_for_confirmation_once_per_window(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut clients = agents(&app, &pki).await;
    all_up(&app, &mut clients, &domain).await;

    let subscriber = shared::redis::builder(&app.config.redis_url, Default::default())
        .unwrap()
        .build_subscriber_client()
        .unwrap();
    subscriber.init().await.unwrap();
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(format!("{}:probe-requests", app.prefix())).await.unwrap();

    report(&mut clients, "ams", &domain, false).await;
    let message = tokio::time::timeout(WAIT, messages.recv()).await.expect("a probe request").unwrap();
    let request: shared::ProbeRequest = serde_json::from_str(&message.value.as_string().unwrap()).unwrap();
    assert_eq!(request.domain_id.to_string(), domain);
    assert_eq!(request.reason, "confirmation");
    assert_eq!(request.regions, ["iad", "sin"]);

    // A new failure inside the window (ams recovers, then fails again) is rate-limited:
    // counted, nothing published.
    report(&mut clients, "ams", &domain, true).await;
    report(&mut clients, "ams", &domain, false).await;
    eventually(WAIT, "rate-limited confirmation", || async {
        let text = app.http.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| l.starts_with("control_plane_confirmation_requests_total{outcome=\"rate_limited\"} 1"))
            .then_some(())
    })
    .await;
    assert!(messages.try_recv().is_err(), "a second probe request was published");
    assert!(incidents_of(&app.pool, &domain).await.is_empty());
    assert_eq!(state_of(&app.pool, &domain).await.as_deref(), Some("up"));
    let _ = subscriber.quit().await;
    app.stop().await;
}

#[sqlx::test]
async fn two_replicas_open_exactly_one_incident(pool: PgPool) {
    let pki = Pki::new();
    let mut config = test_config(&shared::testing::random_prefix("consensus"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    let first = TestApp::spawn_with(pool.clone(), config.clone()).await;
    let second = TestApp::spawn_with(pool, config).await;
    let domain = first.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut to_first = agents(&first, &pki).await;
    let mut to_second = agents(&second, &pki).await;

    // Every region's failure reaches both replicas at once.
    let mut sends = Vec::new();
    for region in REGIONS {
        for clients in [&to_first, &to_second] {
            let mut c = clients[region].clone();
            let b = batch(region, vec![probe(&domain, false)]);
            sends.push(tokio::spawn(async move { c.send_batch(b).await.unwrap().into_inner() }));
        }
    }
    // And both evaluate concurrently, again and again.
    let id: Uuid = domain.parse().unwrap();
    for _ in 0..5 {
        for consensus in [first.consensus.clone(), second.consensus.clone()] {
            sends.push(tokio::spawn(async move {
                consensus.evaluate(id, chrono::Utc::now()).await.unwrap();
                shared::proto::Ack::default()
            }));
        }
    }
    for send in sends {
        send.await.unwrap();
    }
    wait_state(&first, &domain, "down").await;
    let (a, b) = tokio::join!(first.consensus.sweep(), second.consensus.sweep());
    a.unwrap();
    b.unwrap();
    let incidents = incidents_of(&first.pool, &domain).await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM incident_events WHERE incident_id = $1")
        .bind(incidents[0].0)
        .fetch_one(&first.pool)
        .await
        .unwrap();
    assert_eq!(events, 1);
    to_first.clear();
    to_second.clear();
    second.shutdown().await;
    first.stop().await;
}

/// Every region's results for `domains`, in batches of `per_batch`, sent at once to both
/// replicas (as two agents of each region would, one delivering to each).
async fn storm(
    replicas: [&HashMap<&'static str, IngestClient<Channel>>; 2],
    domains: &[String],
    ok: bool,
    per_batch: usize,
) {
    let mut sends = Vec::new();
    for region in REGIONS {
        for chunk in domains.chunks(per_batch) {
            for clients in replicas {
                let mut c = clients[region].clone();
                let b = batch(region, chunk.iter().map(|d| probe(d, ok)).collect());
                sends.push(tokio::spawn(async move { c.send_batch(b).await.unwrap().into_inner() }));
            }
        }
    }
    for send in sends {
        assert!(!send.await.unwrap().duplicate);
    }
}

#[sqlx::test]
async fn two_replicas_during_a_storm_open_exactly_one_incident_per_domain(pool: PgPool) {
    const DOMAINS: usize = 120;
    let pki = Pki::new();
    let mut config = test_config(&shared::testing::random_prefix("storm"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    let first = TestApp::spawn_with(pool.clone(), config.clone()).await;
    let second = TestApp::spawn_with(pool, config).await;
    let mut domains = Vec::new();
    for i in 0..DOMAINS {
        domains.push(
            first.create_domain(json!({"url": format!("https://d{i}.example.com/"), "interval": 60})).await,
        );
    }
    let channel = channel_for(&first.pool, &domains[0]).await;
    let to_first = agents(&first, &pki).await;
    let to_second = agents(&second, &pki).await;
    let count = |state: &'static str| {
        let pool = first.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM domain_state WHERE state = $1")
                .bind(state)
                .fetch_one(&pool)
                .await
                .unwrap();
            n as usize
        }
    };
    storm([&to_first, &to_second], &domains, true, 7).await;
    eventually(WAIT, "every domain up", || async { (count("up").await == DOMAINS).then_some(()) }).await;

    // Everything fails at once, reported to both replicas, which evaluate in batches while
    // their sweeps run too.
    storm([&to_first, &to_second], &domains, false, 7).await;
    let (a, b) = tokio::join!(first.consensus.sweep(), second.consensus.sweep());
    a.unwrap();
    b.unwrap();
    eventually(WAIT, "every domain down", || async { (count("down").await == DOMAINS).then_some(()) }).await;
    let per_domain: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT domain_id, count(*) FROM incidents GROUP BY domain_id ORDER BY domain_id")
            .fetch_all(&first.pool)
            .await
            .unwrap();
    assert_eq!(per_domain.len(), DOMAINS);
    assert!(per_domain.iter().all(|(_, n)| *n == 1), "{per_domain:?}");
    let opened: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE channel_id = $1 AND kind = 'incident_opened'",
    )
    .bind(channel)
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!(opened, DOMAINS as i64, "one notification per incident");
    let transitions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM domain_transitions WHERE to_state = 'down'")
            .fetch_one(&first.pool)
            .await
            .unwrap();
    assert_eq!(transitions, DOMAINS as i64);

    // And back: each incident resolved once.
    storm([&to_first, &to_second], &domains, true, 7).await;
    eventually(WAIT, "every domain up again", || async { (count("up").await == DOMAINS).then_some(()) })
        .await;
    let (open, resolved): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state <> 'resolved'), count(*) FILTER (WHERE state = 'resolved') FROM incidents",
    )
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!((open, resolved), (0, DOMAINS as i64));
    let notified: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT dedup_key) FROM notifications WHERE channel_id = $1 AND kind = 'incident_resolved'",
    )
    .bind(channel)
    .fetch_one(&first.pool)
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE channel_id = $1 AND kind = 'incident_resolved'",
    )
    .bind(channel)
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!((notified, rows), (DOMAINS as i64, DOMAINS as i64));
    second.shutdown().await;
    first.stop().await;
}

#[sqlx::test]
async fn unhealthy_agents_region_does_not_vote(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut clients = agents(&app, &pki).await;
    all_up(&app, &mut clients, &domain).await;

    send(&mut clients, "iad", vec![probe(&domain, false)], Some(false)).await;
    report(&mut clients, "ams", &domain, false).await;
    eventually(WAIT, "iad unhealthy and ams failing", || async {
        let status: Value =
            app.get(&format!("/v1/domains/{domain}/status"), &app.token).await.json().await.ok()?;
        let regions = status["regions"].as_array()?;
        let standing = |r: &str| regions.iter().find(|v| v["region"] == r).map(|v| v["standing"].clone());
        (standing("iad")? == "unhealthy" && standing("ams")? == "failing").then_some(status)
    })
    .await;
    app.consensus.sweep().await.unwrap();
    assert_eq!(state_of(&app.pool, &domain).await.as_deref(), Some("up"));
    assert!(incidents_of(&app.pool, &domain).await.is_empty());

    // Once iad's agent is healthy again, its failure counts.
    send(&mut clients, "iad", vec![probe(&domain, false)], Some(true)).await;
    wait_state(&app, &domain, "down").await;
    assert_eq!(incidents_of(&app.pool, &domain).await.len(), 1);
    app.stop().await;
}

#[sqlx::test]
async fn each_agent_of_a_region_has_its_own_health_and_the_region_view_aggregates(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut clients = agents(&app, &pki).await;
    let (cert, key) = pki.agent("iad", "iad-2");
    let mut second = client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();
    all_up(&app, &mut clients, &domain).await;

    // Two agents of iad: iad-1's network is fine, iad-2's is broken. Neither overwrites the other.
    send(&mut clients, "iad", vec![probe(&domain, true)], Some(true)).await;
    let mut b = batch("iad", vec![probe(&domain, false)]);
    b.health = Some(AgentHealth {
        healthy: false,
        canaries_ok: 0,
        canaries_total: 1,
        checked_at_unix_us: chrono::Utc::now().timestamp_micros(),
        ..Default::default()
    });
    assert!(!second.send_batch(b).await.unwrap().into_inner().duplicate);
    eventually(WAIT, "both iad agents' verdicts stored", || async {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "SELECT agent_id, healthy FROM agent_health WHERE region = 'iad' ORDER BY agent_id",
        )
        .fetch_all(&app.pool)
        .await
        .ok()?;
        (rows == vec![("iad-1".to_owned(), true), ("iad-2".to_owned(), false)]).then_some(())
    })
    .await;

    // iad's latest observation is iad-2's failure: no vote, so ams failing alone is no quorum.
    report(&mut clients, "ams", &domain, false).await;
    eventually(WAIT, "iad unhealthy (iad-2's observation) and ams failing", || async {
        let status: Value =
            app.get(&format!("/v1/domains/{domain}/status"), &app.token).await.json().await.ok()?;
        let regions = status["regions"].as_array()?;
        let standing = |r: &str| regions.iter().find(|v| v["region"] == r).map(|v| v["standing"].clone());
        (standing("iad")? == "unhealthy" && standing("ams")? == "failing").then_some(())
    })
    .await;
    app.consensus.sweep().await.unwrap();
    assert_eq!(state_of(&app.pool, &domain).await.as_deref(), Some("up"));

    // The region's view: each agent with its own verdict, the region healthy (iad-1 is).
    let regions = eventually(WAIT, "both iad agents listed", || async {
        let body: Value = app.get("/v1/regions", &app.token).await.json().await.ok()?;
        let iad = body["items"].as_array()?.iter().find(|r| r["name"] == "iad")?.clone();
        (iad["agents"].as_array()?.len() == 2).then_some(iad)
    })
    .await;
    let verdicts: Vec<(Value, Value)> = regions["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["agent_id"].clone(), a["healthy"].clone()))
        .collect();
    assert_eq!(verdicts, vec![(json!("iad-1"), json!(true)), (json!("iad-2"), json!(false))]);
    assert_eq!(regions["healthy"], json!(true), "{regions}");

    // The same failure from the healthy agent counts: two of three regions fail.
    send(&mut clients, "iad", vec![probe(&domain, false)], Some(true)).await;
    wait_state(&app, &domain, "down").await;
    assert_eq!(incidents_of(&app.pool, &domain).await.len(), 1);
    app.stop().await;
}

#[sqlx::test]
async fn acknowledgement_records_the_token_and_note_and_other_tenants_see_nothing(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "regions": ["ams"]})).await;
    let channel = channel_for(&app.pool, &domain).await;
    let mut clients = agents(&app, &pki).await;
    report(&mut clients, "ams", &domain, false).await;
    wait_state(&app, &domain, "down").await;
    let id = incidents_of(&app.pool, &domain).await[0].0;

    let other = app.other_tenant().await;
    assert_eq!(app.get(&format!("/v1/incidents/{id}"), &other).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.post(&format!("/v1/incidents/{id}/ack"), &other, &json!({})).await.status(),
        StatusCode::NOT_FOUND
    );
    let listed: Value = app.get("/v1/incidents", &other).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
    assert_eq!(
        app.get(&format!("/v1/domains/{domain}/status"), &other).await.status(),
        StatusCode::NOT_FOUND
    );

    let response = app.post(&format!("/v1/incidents/{id}/ack"), &app.token, &json!({"note": "on it"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let token_id: Uuid = sqlx::query_scalar(
        "SELECT t.id FROM api_tokens t JOIN domains d ON d.tenant_id = t.tenant_id WHERE d.id = $1",
    )
    .bind(domain.parse::<Uuid>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let body: Value = app.get(&format!("/v1/incidents/{id}"), &app.token).await.json().await.unwrap();
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged_by_token"], token_id.to_string());
    assert_eq!(body["ack_note"], "on it");
    assert_eq!(body["events"][1]["kind"], "acknowledged");
    assert_eq!(body["events"][1]["actor"], token_id.to_string());
    let keys: Vec<String> = outbox(&app.pool, channel).await.into_iter().map(|q| q.0).collect();
    assert!(keys.contains(&format!("incident:{id}:acknowledged")), "{keys:?}");

    // Twice is a conflict; so is acknowledging a resolved incident.
    let again = app.post(&format!("/v1/incidents/{id}/ack"), &app.token, &json!({})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    report(&mut clients, "ams", &domain, true).await;
    wait_state(&app, &domain, "up").await;
    let resolved = app.post(&format!("/v1/incidents/{id}/ack"), &app.token, &json!({})).await;
    assert_eq!(resolved.status(), StatusCode::CONFLICT);
    let body: Value = app.get(&format!("/v1/incidents/{id}"), &app.token).await.json().await.unwrap();
    assert_eq!(body["state"], "resolved");
    app.stop().await;
}

#[sqlx::test]
async fn certificate_expiry_is_notified_once_per_threshold(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let channel = channel_for(&app.pool, &domain).await;
    let mut clients = agents(&app, &pki).await;
    let with_cert = |days: i64| {
        let mut r = probe(&domain, true);
        r.certificate = Some(Certificate {
            subject: "CN=example.com".into(),
            serial: "0abc".into(),
            not_after_unix_s: (chrono::Utc::now() + chrono::Duration::days(days)).timestamp() - 60,
            valid: true,
            ..Default::default()
        });
        r
    };
    let expiring = |n: usize| {
        let app = &app;
        async move {
            eventually(WAIT, &format!("{n} certificate notices"), || async {
                let rows = outbox(&app.pool, channel).await;
                let certs: Vec<_> = rows.into_iter().filter(|r| r.1 == "certificate_expiring").collect();
                (certs.len() == n).then_some(certs)
            })
            .await
        }
    };
    send(&mut clients, "ams", vec![with_cert(10)], None).await;
    let first = expiring(1).await;
    assert_eq!(first[0].0, format!("cert:{domain}:0abc:14"));
    // The same certificate seen again, from another region too: nothing new.
    send(&mut clients, "iad", vec![with_cert(10)], None).await;
    send(&mut clients, "ams", vec![with_cert(10)], None).await;
    let fact = control_plane::consensus::CertificateFact {
        domain_id: domain.parse().unwrap(),
        serial: "0abc".into(),
        subject: "CN=example.com".into(),
        not_after: chrono::Utc::now() + chrono::Duration::days(10),
        host: String::new(),
        position: 0,
    };
    assert!(!app.consensus.certificate(&fact, chrono::Utc::now()).await.unwrap());
    // Closer to expiry: the next threshold, once.
    send(&mut clients, "sin", vec![with_cert(5)], None).await;
    let both = expiring(2).await;
    assert_eq!(both[1].0, format!("cert:{domain}:0abc:7"));
    assert_eq!(both[1].2["details"]["threshold_days"], 7);
    app.stop().await;
}

/// A certificate expiring in `days` (a minute short, so whole days read as `days`).
fn expiring_in(days: i64) -> i64 {
    (chrono::Utc::now() + chrono::Duration::days(days)).timestamp() - 60
}

#[sqlx::test]
async fn an_expiring_intermediate_or_redirect_certificate_is_notified_by_name(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let channel = channel_for(&app.pool, &domain).await;
    let mut clients = agents(&app, &pki).await;
    let leaf = |days: i64| Certificate {
        subject: "CN=example.com".into(),
        issuer: "CN=Example Intermediate".into(),
        serial: "0abc".into(),
        not_after_unix_s: expiring_in(days),
        valid: true,
        chain_length: 2,
        chain_verified: true,
        ..Default::default()
    };
    let notices = |n: usize| {
        let app = &app;
        async move {
            eventually(WAIT, &format!("{n} certificate notices"), || async {
                let rows = outbox(&app.pool, channel).await;
                let certs: Vec<_> = rows.into_iter().filter(|r| r.1 == "certificate_expiring").collect();
                (certs.len() == n).then_some(certs)
            })
            .await
        }
    };

    // A 60-day leaf under an intermediate expiring in 10 days (sent as the leaf's issuer). Its
    // expiry is taken once: the same intermediate must carry the same `not_after` below.
    let intermediate = expiring_in(10);
    let mut r = probe(&domain, true);
    r.certificate = Some(Certificate {
        chain_earliest: Some(ChainCertificate {
            position: 1,
            subject: String::new(),
            not_after_unix_s: intermediate,
        }),
        ..leaf(60)
    });
    send(&mut clients, "ams", vec![r], None).await;
    let first = notices(1).await;
    let payload = &first[0].2;
    assert!(first[0].0.starts_with(&format!("cert:{domain}:i1-")), "{}", first[0].0);
    assert!(first[0].0.ends_with(":14"), "{}", first[0].0);
    let summary = payload["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "intermediate 1 (CN=Example Intermediate) of the certificate chain of https://example.com/health \
             expires in 9 days"
        ),
        "{payload}"
    );
    assert_eq!(payload["details"]["subject"], "CN=Example Intermediate");
    assert_eq!(
        (&payload["details"]["position"], &payload["details"]["host"]),
        (&json!(1), &json!("example.com"))
    );

    // The same intermediate under a renewed leaf: the same certificate, nothing new.
    let mut r = probe(&domain, true);
    r.certificate = Some(Certificate {
        serial: "0abd".into(),
        chain_earliest: Some(ChainCertificate {
            position: 1,
            subject: String::new(),
            not_after_unix_s: intermediate,
        }),
        ..leaf(80)
    });
    send(&mut clients, "iad", vec![r], None).await;

    // A redirect target whose own certificate expires in 3 days comes first.
    let mut r = probe(&domain, true);
    r.certificate = Some(leaf(60));
    r.redirect_certificates = vec![Certificate {
        host: "landing.example.net".into(),
        subject: "CN=landing.example.net".into(),
        serial: "77".into(),
        ..leaf(3)
    }];
    send(&mut clients, "sin", vec![r], None).await;
    let both = notices(2).await;
    let redirect = both.iter().find(|n| n.0 == format!("cert:{domain}:77:7")).expect("the redirect's notice");
    let summary = redirect.2["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "the certificate of landing.example.net (redirect target of https://example.com/health), \
             CN=landing.example.net expires in 2 days"
        ),
        "{summary}"
    );
    app.stop().await;
}

#[sqlx::test]
async fn deleting_a_down_domain_closes_its_incident_saying_it_had_not_recovered(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let mut clients = agents(&app, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let channel = channel_for(&app.pool, &domain).await;
    all_up(&app, &mut clients, &domain).await;
    report(&mut clients, "ams", &domain, false).await;
    report(&mut clients, "iad", &domain, false).await;
    wait_state(&app, &domain, "down").await;
    let (id, _) = incidents_of(&app.pool, &domain).await[0];

    let response = app.delete(&format!("/v1/domains/{domain}"), &app.token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(incidents_of(&app.pool, &domain).await, [(id, "resolved".to_owned())]);
    let body: Value = app.get(&format!("/v1/incidents/{id}"), &app.token).await.json().await.unwrap();
    let last = body["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "resolved", "{body}");
    assert_eq!(last["details"]["reason"], "domain deleted");
    assert_eq!(last["details"]["recovered"], false);
    let token_id: Uuid = sqlx::query_scalar("SELECT id FROM api_tokens").fetch_one(&app.pool).await.unwrap();
    assert_eq!(last["actor"], token_id.to_string(), "who deleted it");
    // One closing notice, as incident_resolved so pages close, but not claiming a recovery.
    let queued = outbox(&app.pool, channel).await;
    let closing: Vec<_> = queued.iter().filter(|q| q.1 == "incident_resolved").collect();
    assert_eq!(closing.len(), 1, "{queued:?}");
    assert_eq!(closing[0].0, format!("incident:{id}:resolved"));
    let summary = closing[0].2["summary"].as_str().unwrap();
    assert!(summary.contains("(domain deleted)"), "{summary}");
    assert!(summary.contains("had not recovered"), "{summary}");
    assert!(!summary.contains("up again"), "{summary}");
    assert_eq!(closing[0].2["details"]["recovered"], false);
    assert_eq!(state_of(&app.pool, &domain).await, None);
    app.stop().await;
}

#[sqlx::test]
async fn an_expired_certificate_gets_one_expired_notice_never_expires_in_0_days(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let channel = channel_for(&app.pool, &domain).await;
    let mut clients = agents(&app, &pki).await;
    // Expired an hour ago.
    let not_after = chrono::Utc::now() - chrono::Duration::hours(1);
    let with_cert = |serial: &str, not_after: chrono::DateTime<chrono::Utc>| {
        let mut r = probe(&domain, false);
        r.error = ErrorKind::Tls as i32;
        r.certificate = Some(Certificate {
            subject: "CN=example.com".into(),
            serial: serial.into(),
            not_after_unix_s: not_after.timestamp(),
            valid: false,
            ..Default::default()
        });
        r
    };
    let certs = |n: usize| {
        let app = &app;
        async move {
            eventually(WAIT, &format!("{n} certificate notices"), || async {
                let rows = outbox(&app.pool, channel).await;
                let certs: Vec<_> = rows.into_iter().filter(|r| r.1.starts_with("certificate_")).collect();
                (certs.len() == n).then_some(certs)
            })
            .await
        }
    };
    send(&mut clients, "ams", vec![with_cert("0dead", not_after)], None).await;
    let first = certs(1).await;
    let (key, kind, payload) = &first[0];
    assert_eq!(key, &format!("cert:{domain}:0dead:expired"));
    assert_eq!(kind, "certificate_expired");
    let summary = payload["summary"].as_str().unwrap();
    assert!(summary.contains("expired 1 h ago"), "{summary}");
    assert!(
        summary.contains(&not_after.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%S").to_string()),
        "{summary}"
    );
    assert!(!summary.contains("expires in"), "{summary}");
    assert_eq!(payload["details"]["days_left"], -1, "a floor: expired an hour ago is -1, not 0");
    assert!(payload["details"].get("threshold_days").is_none(), "{payload}");
    // Seen again from every region, and later: still one notice for this certificate.
    send(&mut clients, "iad", vec![with_cert("0dead", not_after)], None).await;
    send(&mut clients, "sin", vec![with_cert("0dead", not_after)], None).await;
    let fact = control_plane::consensus::CertificateFact {
        domain_id: domain.parse().unwrap(),
        serial: "0dead".into(),
        subject: "CN=example.com".into(),
        not_after,
        host: String::new(),
        position: 0,
    };
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    assert!(!app.consensus.certificate(&fact, later).await.unwrap());
    // A second replica (no in-memory memory of it): the dedup key still holds.
    let mut config = app.config.clone();
    config.redis_prefix = shared::testing::random_prefix("cert");
    let pool2 = app.pool.clone();
    let fresh = control_plane::consensus::Consensus::new(
        pool2,
        app.redis.clone(),
        shared::RedisKeys::new(&config.redis_prefix),
        control_plane::metrics::Metrics::default(),
        control_plane::consensus::Settings::from_config(&config),
    );
    assert!(!fresh.certificate(&fact, later).await.unwrap());
    assert_eq!(certs(1).await.len(), 1);
    // The certificate API agrees: -1 days left.
    let body: Value =
        app.get(&format!("/v1/domains/{domain}/certificate"), &app.token).await.json().await.unwrap();
    assert!(body["regions"].as_array().unwrap().iter().all(|r| r["days_left"] == -1), "{body}");
    // A renewed certificate (another serial) expiring in 5 days: its own threshold notice.
    send(&mut clients, "ams", vec![with_cert("0new", chrono::Utc::now() + chrono::Duration::days(5))], None)
        .await;
    let both = certs(2).await;
    assert_eq!(both[1].0, format!("cert:{domain}:0new:7"));
    assert_eq!(both[1].1, "certificate_expiring");
    assert!(both[1].2["summary"].as_str().unwrap().contains("expires in 4 days"), "{}", both[1].2);
    app.stop().await;
}

/// The run of failures consensus recorded for `region`.
async fn failures_in_a_row(pool: &PgPool, domain: &str, region: &str) -> i32 {
    sqlx::query_scalar(
        "SELECT consecutive_failures FROM region_observations WHERE domain_id = $1 AND region = $2",
    )
    .bind(domain.parse::<Uuid>().unwrap())
    .bind(region)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(0)
}

#[sqlx::test]
async fn one_region_failing_every_probe_is_flagged_while_consensus_uptime_stays_at_100(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut clients = agents(&app, &pki).await;
    all_up(&app, &mut clients, &domain).await;
    let status_path = format!("/v1/domains/{domain}/status");
    let uptime_path = format!("/v1/domains/{domain}/uptime");

    // sin fails every probe, ams and iad succeed: no incident, state up.
    let mut first_failure = None;
    for round in 1..=3 {
        report(&mut clients, "ams", &domain, true).await;
        report(&mut clients, "iad", &domain, true).await;
        let before = chrono::Utc::now();
        report(&mut clients, "sin", &domain, false).await;
        first_failure.get_or_insert(before);
        eventually(WAIT, &format!("sin's failure {round} recorded"), || async {
            (failures_in_a_row(&app.pool, &domain, "sin").await == round).then_some(())
        })
        .await;
        let status: Value = app.get(&status_path, &app.token).await.json().await.unwrap();
        let flagged = status["regional_failures"].as_array().unwrap();
        if round < 3 {
            assert!(flagged.is_empty(), "{round} failures are not yet persistent: {status}");
        } else {
            assert_eq!(flagged.len(), 1, "{status}");
            assert_eq!(flagged[0]["region"], "sin");
            assert_eq!(flagged[0]["consecutive_failures"], 3);
            let since: chrono::DateTime<chrono::Utc> = flagged[0]["since"].as_str().unwrap().parse().unwrap();
            let first = first_failure.unwrap();
            assert!(
                since >= first - chrono::Duration::seconds(1) && since < first + chrono::Duration::seconds(5),
                "{status}"
            );
            assert_eq!(flagged[0]["status_code"], 503);
        }
    }
    assert_eq!(state_of(&app.pool, &domain).await.as_deref(), Some("up"));
    assert!(incidents_of(&app.pool, &domain).await.is_empty());

    // Uptime: 100 % by consensus, whatever sin's probes say; the probe ratios show sin's failures.
    let uptime = eventually(WAIT, "every probe counted", || async {
        let uptime: Value = app.get(&uptime_path, &app.token).await.json().await.ok()?;
        (uptime["probes"]["probes"] == 12).then_some(uptime)
    })
    .await;
    assert_eq!(uptime["uptime_percent"], 100.0, "{uptime}");
    assert_eq!(uptime["consensus"]["uptime_percent"], 100.0);
    assert_eq!(uptime["consensus"]["down_s"], 0.0);
    assert!(uptime["consensus"]["monitored_s"].as_f64().unwrap() > 0.0, "{uptime}");
    assert_eq!(uptime["probes"]["successes"], 9);
    assert_eq!(uptime["probes"]["uptime_percent"], 75.0, "the raw ratio, named apart");
    let sin = uptime["regions"].as_array().unwrap().iter().find(|r| r["region"] == "sin").unwrap().clone();
    assert_eq!((sin["probes"].as_u64(), sin["successes"].as_u64()), (Some(4), Some(1)), "{uptime}");
    assert_eq!(sin["uptime_percent"], 25.0);
    assert_eq!(uptime["regional_failures"][0]["region"], "sin", "{uptime}");

    // sin recovers: the flag clears.
    report(&mut clients, "sin", &domain, true).await;
    eventually(WAIT, "sin's run ended", || async {
        (failures_in_a_row(&app.pool, &domain, "sin").await == 0).then_some(())
    })
    .await;
    let status: Value = app.get(&status_path, &app.token).await.json().await.unwrap();
    assert!(status["regional_failures"].as_array().unwrap().is_empty(), "{status}");
    app.stop().await;
}

#[sqlx::test]
async fn a_region_failing_along_with_a_down_domain_is_no_regional_failure(pool: PgPool) {
    let pki = Pki::new();
    let config_threshold = 2;
    let mut config = test_config(&shared::testing::random_prefix("consensus"), "redis://127.0.0.1:6379");
    config.regional_failure_observations = config_threshold;
    pki.configure(&mut config);
    let app = TestApp::spawn_with(pool, config).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut clients = agents(&app, &pki).await;
    all_up(&app, &mut clients, &domain).await;
    for _ in 0..config_threshold {
        for region in REGIONS {
            report(&mut clients, region, &domain, false).await;
        }
    }
    wait_state(&app, &domain, "down").await;
    eventually(WAIT, "every failure recorded", || async {
        for region in REGIONS {
            if failures_in_a_row(&app.pool, &domain, region).await < config_threshold as i32 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let status: Value =
        app.get(&format!("/v1/domains/{domain}/status"), &app.token).await.json().await.unwrap();
    assert!(status["regional_failures"].as_array().unwrap().is_empty(), "the domain is down: {status}");
    let uptime: Value =
        app.get(&format!("/v1/domains/{domain}/uptime"), &app.token).await.json().await.unwrap();
    let percent = uptime["uptime_percent"].as_f64().unwrap();
    assert!(percent < 100.0 && percent > 0.0, "up, then down: {uptime}");
    assert!(uptime["consensus"]["down_s"].as_f64().unwrap() > 0.0, "{uptime}");
    app.stop().await;
}
