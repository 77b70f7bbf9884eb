//! Pausing and resuming a domain with an open incident: one outage is one incident, one
//! `incident_opened` and one `incident_resolved`, whatever pauses happen in between. Observations
//! are recorded and evaluations (or the sweep) driven directly, at the real time.

use chrono::{DateTime, Utc};
use control_plane::consensus::Evaluated;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::random_prefix;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp};

/// A control plane whose background sweep stays out of the way.
async fn spawn(pool: PgPool) -> TestApp {
    let config = control_plane::Config {
        consensus_sweep_interval_ms: 3_600_000,
        flap_check_interval_ms: 3_600_000,
        ..test_config(&random_prefix("pause"), "redis://127.0.0.1:6379")
    };
    TestApp::spawn_with(pool, config).await
}

/// A domain in `regions` and a webhook channel of its tenant (outbox rows only; nothing is
/// dispatched to it: the host is a documentation name).
async fn domain_with_channel(app: &TestApp, regions: &[&str]) -> (Uuid, Uuid) {
    let domain: Uuid = app
        .create_domain(json!({"url": "https://example.com/health", "interval": 60, "regions": regions}))
        .await
        .parse()
        .unwrap();
    let channel = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO channels (id, tenant_id, name, kind, config)
         SELECT $1, tenant_id, 'hook', 'webhook', '{\"url\": \"https://hooks.example.com/x\"}' FROM domains WHERE id = $2",
    )
    .bind(channel)
    .bind(domain)
    .execute(&app.pool)
    .await
    .unwrap();
    (domain, channel)
}

/// Records `region`'s observation of the domain now.
async fn observe(app: &TestApp, domain: Uuid, region: &str, ok: bool) -> DateTime<Utc> {
    let at = Utc::now();
    let batch = crate::helpers::observed(region, domain, ok, at);
    app.consensus.record(&batch).await.unwrap();
    at
}

/// Every region of `regions` observes the domain, then it is evaluated.
async fn all(app: &TestApp, domain: Uuid, regions: &[&str], ok: bool) -> Evaluated {
    for region in regions {
        observe(app, domain, region, ok).await;
    }
    app.consensus.evaluate(domain, Utc::now()).await.unwrap().expect("domain exists")
}

/// (kind, dedup key) of the channel's outbox in order.
async fn outbox(pool: &PgPool, channel: Uuid) -> Vec<(String, String)> {
    sqlx::query_as("SELECT kind, dedup_key FROM notifications WHERE channel_id = $1 ORDER BY seq")
        .bind(channel)
        .fetch_all(pool)
        .await
        .unwrap()
}

fn kinds(queued: &[(String, String)]) -> Vec<&str> {
    queued.iter().map(|q| q.0.as_str()).collect()
}

async fn incidents(pool: &PgPool, domain: Uuid) -> Vec<(Uuid, String)> {
    sqlx::query_as("SELECT id, state FROM incidents WHERE domain_id = $1 ORDER BY opened_at")
        .bind(domain)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// (kind, actor, details) of the incident's events in order.
async fn events(pool: &PgPool, incident: Uuid) -> Vec<(String, String, Value)> {
    sqlx::query_as("SELECT kind, actor, details FROM incident_events WHERE incident_id = $1 ORDER BY id")
        .bind(incident)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn token_id(app: &TestApp) -> String {
    let principal = control_plane::tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap();
    principal.token_id.to_string()
}

async fn pause(app: &TestApp, domain: Uuid, paused: bool) {
    let path = format!("/v1/domains/{domain}/{}", if paused { "pause" } else { "resume" });
    let response = app.post(&path, &app.token, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["paused"], paused);
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn pausing_a_down_domain_keeps_its_one_incident_and_resuming_during_the_outage_sends_nothing(
    pool: PgPool,
) {
    let app = spawn(pool).await;
    let regions = ["ams", "iad", "sin"];
    let (domain, channel) = domain_with_channel(&app, &regions).await;
    assert_eq!(all(&app, domain, &regions, true).await.state.as_str(), "up");
    assert_eq!(all(&app, domain, &regions, false).await.state.as_str(), "down");
    let (incident, _) = incidents(&app.pool, domain).await[0];
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened"]);

    // Paused while the target still fails: the incident stays open, nothing is sent.
    let before_pause = Utc::now();
    pause(&app, domain, true).await;
    assert_eq!(incidents(&app.pool, domain).await, [(incident, "open".to_owned())]);
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened"], "no all-clear at the pause");
    let token = token_id(&app).await;
    let evs = events(&app.pool, incident).await;
    let (kind, actor, details) = evs.last().unwrap();
    assert_eq!((kind.as_str(), actor.as_str()), ("paused", token.as_str()), "{evs:?}");
    assert_eq!(details["reason"], "monitoring paused");
    let body: Value = app.get(&format!("/v1/incidents/{incident}"), &app.token).await.json().await.unwrap();
    let paused_at: DateTime<Utc> = body["events"][1]["at"].as_str().unwrap().parse().unwrap();
    assert!(paused_at >= before_pause && paused_at <= Utc::now(), "{body}");
    let status: Value =
        app.get(&format!("/v1/domains/{domain}/status"), &app.token).await.json().await.unwrap();
    assert_eq!(status["state"], "down", "{status}");
    assert_eq!(status["open_incident_id"], incident.to_string());
    assert_eq!(status["reason"], "monitoring is paused");
    // Evaluations while paused change nothing.
    assert_eq!(all(&app, domain, &regions, true).await.state.as_str(), "down");
    app.consensus.sweep().await.unwrap();

    // Resumed while the outage continues: same incident, nothing new sent.
    pause(&app, domain, false).await;
    let evs = events(&app.pool, incident).await;
    let (kind, actor, _) = evs.last().unwrap();
    assert_eq!((kind.as_str(), actor.as_str()), ("resumed", token.as_str()), "{evs:?}");
    assert_eq!(all(&app, domain, &regions, false).await.state.as_str(), "down");
    assert_eq!(app.consensus.sweep().await.unwrap(), 0, "failures agreeing with down: nothing to do");
    assert_eq!(incidents(&app.pool, domain).await, [(incident, "open".to_owned())]);
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened"], "no second down");

    // The outage ends: one all-clear, for the one incident, saying it recovered.
    assert_eq!(all(&app, domain, &regions, true).await.state.as_str(), "up");
    let queued = outbox(&app.pool, channel).await;
    assert_eq!(kinds(&queued), ["incident_opened", "incident_resolved"]);
    assert_eq!(queued[1].1, format!("incident:{incident}:resolved"));
    let evs: Vec<String> = events(&app.pool, incident).await.into_iter().map(|e| e.0).collect();
    assert_eq!(evs, ["opened", "paused", "resumed", "resolved"]);
    let resolved: Value = sqlx::query_scalar(
        "SELECT payload FROM notifications WHERE channel_id = $1 AND kind = 'incident_resolved'",
    )
    .bind(channel)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(resolved["details"]["recovered"], true, "{resolved}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_domain_that_recovered_while_paused_resolves_once_on_resume(pool: PgPool) {
    let app = spawn(pool).await;
    let regions = ["ams"];
    let (domain, channel) = domain_with_channel(&app, &regions).await;
    all(&app, domain, &regions, true).await;
    all(&app, domain, &regions, false).await;
    let (incident, _) = incidents(&app.pool, domain).await[0];

    // Paused and resumed through PATCH this time: the same rules.
    let path = format!("/v1/domains/{domain}");
    assert_eq!(app.patch(&path, &app.token, &json!({"paused": true})).await.status(), StatusCode::OK);
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened"]);
    assert_eq!(app.patch(&path, &app.token, &json!({"paused": false})).await.status(), StatusCode::OK);
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened"]);

    // The first probe after the resume succeeds: a changed vote, evaluated at once.
    let evaluated = all(&app, domain, &regions, true).await;
    assert_eq!(evaluated.state.as_str(), "up");
    assert_eq!(evaluated.incident, Some(incident));
    assert_eq!(incidents(&app.pool, domain).await, [(incident, "resolved".to_owned())]);
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened", "incident_resolved"]);
    // Pausing again with nothing open records the pause and sends nothing.
    pause(&app, domain, true).await;
    pause(&app, domain, false).await;
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened", "incident_resolved"]);
    let pauses: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM monitoring_pauses WHERE domain_id = $1 AND resumed_at IS NOT NULL",
    )
    .bind(domain)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(pauses, 2);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_domain_going_down_while_paused_opens_its_incident_only_when_probed_again(pool: PgPool) {
    let app = spawn(pool).await;
    let regions = ["ams", "iad"];
    let (domain, channel) = domain_with_channel(&app, &regions).await;
    all(&app, domain, &regions, true).await;
    pause(&app, domain, true).await;
    // Failures reported while paused (a late batch) decide nothing.
    assert_eq!(all(&app, domain, &regions, false).await.state.as_str(), "up");
    assert!(incidents(&app.pool, domain).await.is_empty());
    pause(&app, domain, false).await;
    assert!(outbox(&app.pool, channel).await.is_empty());
    // After the resume, the failures confirm the outage: one incident, one page.
    app.consensus.sweep().await.unwrap();
    assert_eq!(incidents(&app.pool, domain).await.len(), 1);
    assert_eq!(kinds(&outbox(&app.pool, channel).await), ["incident_opened"]);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn paused_time_is_left_out_of_consensus_uptime(pool: PgPool) {
    let app = spawn(pool).await;
    let regions = ["ams"];
    let (domain, _) = domain_with_channel(&app, &regions).await;
    let decided = Utc::now();
    all(&app, domain, &regions, true).await;
    all(&app, domain, &regions, false).await;
    pause(&app, domain, true).await;
    // Paused for a measurable while (the span is read back, not assumed).
    let pause_started: DateTime<Utc> =
        sqlx::query_scalar("SELECT paused_at FROM monitoring_pauses WHERE domain_id = $1")
            .bind(domain)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    shared::testing::eventually(crate::helpers::WAIT, "some paused time", || async {
        (Utc::now() - pause_started > chrono::Duration::milliseconds(200)).then_some(())
    })
    .await;
    pause(&app, domain, false).await;
    all(&app, domain, &regions, true).await;

    let uptime: Value =
        app.get(&format!("/v1/domains/{domain}/uptime"), &app.token).await.json().await.unwrap();
    let c = &uptime["consensus"];
    let (up, down, monitored, paused) = (
        c["up_s"].as_f64().unwrap(),
        c["down_s"].as_f64().unwrap(),
        c["monitored_s"].as_f64().unwrap(),
        c["paused_s"].as_f64().unwrap(),
    );
    assert!(paused >= 0.2, "{uptime}");
    assert!(up > 0.0 && down > 0.0, "{uptime}");
    assert!((up + down - monitored).abs() < 1e-6, "{uptime}");
    let elapsed = (Utc::now() - decided).num_milliseconds() as f64 / 1000.0;
    assert!(monitored + paused <= elapsed + 0.01, "paused time is not monitored time: {uptime}");
    let percent = uptime["uptime_percent"].as_f64().unwrap();
    assert!((percent - up * 100.0 / monitored).abs() < 1e-9, "{uptime}");
    assert_eq!(uptime["uptime_percent"], c["uptime_percent"]);
    app.stop().await;
}
