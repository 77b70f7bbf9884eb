//! The degraded state end to end: latencies delivered over real mutual TLS feed each region's
//! anomaly detector in PostgreSQL; consensus decides `degraded` by quorum only; the incident's
//! kind and severity, its notifications, the status API, consensus uptime, and the settings'
//! validation.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::proto::v1::ingest_client::IngestClient;
use shared::proto::ProbeResult;
use shared::testing::eventually;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::helpers::{TestApp, WAIT};
use crate::ingest::{batch, client, result, spawn_with_ingest, Pki};

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];

struct Probes {
    clients: HashMap<&'static str, IngestClient<Channel>>,
    domain: Uuid,
    /// Start of the next probe, microseconds: every result is newer than the last.
    next_us: i64,
}

impl Probes {
    async fn new(app: &TestApp, pki: &Pki, domain: &str) -> Self {
        let mut clients = HashMap::new();
        for region in REGIONS {
            let (cert, key) = pki.agent(region, &format!("{region}-1"));
            clients.insert(region, client(app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap());
        }
        Self { clients, domain: domain.parse().unwrap(), next_us: chrono::Utc::now().timestamp_micros() }
    }

    /// One batch from `region` with a successful probe per latency (milliseconds), in order.
    async fn send(&mut self, region: &'static str, latencies_ms: &[f64]) {
        let results: Vec<ProbeResult> = latencies_ms
            .iter()
            .map(|ms| {
                self.next_us += 1_000;
                ProbeResult {
                    started_at_unix_us: self.next_us,
                    total_us: (ms * 1000.0) as u32,
                    ..result(self.domain, true)
                }
            })
            .collect();
        let ack = self.clients.get_mut(region).unwrap().send_batch(batch(region, results)).await.unwrap();
        assert!(!ack.into_inner().duplicate);
    }
}

/// 12 normal latencies around 20 ms.
fn normal() -> Vec<f64> {
    (0..12).map(|i| 19.0 + f64::from(i % 3)).collect()
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

async fn status(app: &TestApp, domain: &str) -> Value {
    app.get(&format!("/v1/domains/{domain}/status"), &app.token).await.json().await.unwrap()
}

/// Waits until the status API shows `region` with `standing`.
async fn wait_standing(app: &TestApp, domain: &str, region: &str, standing: &str) -> Value {
    eventually(WAIT, &format!("{region} {standing}"), || async {
        let status = status(app, domain).await;
        let vote = status["regions"].as_array()?.iter().find(|r| r["region"] == region)?.clone();
        (vote["standing"] == standing).then_some(status)
    })
    .await
}

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

async fn outbox(pool: &PgPool, channel: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT kind, payload FROM notifications WHERE channel_id = $1 ORDER BY seq")
        .bind(channel)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_latency_step_in_a_quorum_of_regions_is_a_degraded_incident_and_one_slow_region_is_not(
    pool: PgPool,
) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app
        .create_domain(json!({
            "url": "https://example.com/health", "interval": 60, "degraded": {"window": 20, "consecutive": 3},
        }))
        .await;
    let channel = channel_for(&app.pool, &domain).await;
    let mut probes = Probes::new(&app, &pki, &domain).await;
    for region in REGIONS {
        probes.send(region, &normal()).await;
    }
    wait_state(&app, &domain, "up").await;

    // ams alone turns slow: ams is degraded, the domain is not (one region's slow path).
    probes.send("ams", &[400.0, 410.0]).await;
    let status_now = eventually(WAIT, "two anomalous probes in ams", || async {
        let status = status(&app, &domain).await;
        (status["regions"][0]["latency"]["anomalous"] == 2).then_some(status)
    })
    .await;
    let ams = &status_now["regions"][0];
    assert_eq!((ams["region"].as_str(), ams["standing"].as_str()), (Some("ams"), Some("ok")), "{status_now}");
    assert_eq!(ams["latency"]["degraded"], false);
    probes.send("ams", &[405.0]).await;
    let status_now = wait_standing(&app, &domain, "ams", "degraded").await;
    assert_eq!(status_now["regions"][0]["latency"]["degraded"], true, "{status_now}");
    let median = status_now["regions"][0]["latency"]["baseline_median_ms"].as_f64().unwrap();
    assert!((19.0..=21.0).contains(&median), "spikes stay out of the baseline: {status_now}");
    app.consensus.evaluate(probes.domain, chrono::Utc::now()).await.unwrap();
    assert_eq!(state_of(&app.pool, &domain).await.as_deref(), Some("up"), "one slow region does not count");
    assert_eq!(status_now["degraded"], 1);
    assert!(outbox(&app.pool, channel).await.is_empty());

    // iad too: a quorum of two degraded regions.
    probes.send("iad", &[390.0, 400.0, 420.0]).await;
    wait_state(&app, &domain, "degraded").await;
    let status_now = status(&app, &domain).await;
    assert_eq!(status_now["state"], "degraded", "{status_now}");
    assert_eq!(status_now["degraded"], 2);
    assert!(status_now["reason"].as_str().unwrap().contains("abnormally slowly"), "{status_now}");
    let incident = status_now["open_incident_id"].as_str().unwrap().to_owned();
    let body: Value = app.get(&format!("/v1/incidents/{incident}"), &app.token).await.json().await.unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["severity"].as_str()),
        (Some("degraded"), Some("warning")),
        "{body}"
    );
    let regions: Vec<&str> =
        body["opened_regions"].as_array().unwrap().iter().map(|r| r["region"].as_str().unwrap()).collect();
    assert_eq!(regions, ["ams", "iad"]);
    let queued = outbox(&app.pool, channel).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, "incident_opened");
    assert_eq!(queued[0].1["details"]["incident"]["kind"], "degraded");
    assert_eq!(queued[0].1["details"]["incident"]["severity"], "warning");
    assert!(queued[0].1["summary"].as_str().unwrap().contains("degraded"), "{:?}", queued[0]);

    // Back to normal in ams: one degraded region is below the quorum, the domain is up.
    probes.send("ams", &[20.0]).await;
    wait_state(&app, &domain, "up").await;
    let body: Value = app.get(&format!("/v1/incidents/{incident}"), &app.token).await.json().await.unwrap();
    assert_eq!(body["state"], "resolved", "{body}");
    let queued = outbox(&app.pool, channel).await;
    assert_eq!(
        queued.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
        ["incident_opened", "incident_resolved"]
    );
    assert_eq!(queued[1].1["details"]["incident"]["kind"], "degraded");

    // Degraded time is up time, reported apart.
    let uptime: Value =
        app.get(&format!("/v1/domains/{domain}/uptime"), &app.token).await.json().await.unwrap();
    assert_eq!(uptime["consensus"]["uptime_percent"], 100.0, "{uptime}");
    assert_eq!(uptime["consensus"]["down_s"], 0.0);
    let degraded_s = uptime["consensus"]["degraded_s"].as_f64().unwrap();
    assert!(degraded_s > 0.0 && degraded_s < uptime["consensus"]["up_s"].as_f64().unwrap(), "{uptime}");
    app.stop().await;
}

#[sqlx::test]
async fn a_down_domain_that_answers_slowly_again_is_degraded_with_one_incident_each(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let domain = app.create_domain(json!({"url": "https://example.com/health", "interval": 60})).await;
    let mut probes = Probes::new(&app, &pki, &domain).await;
    for region in REGIONS {
        probes.send(region, &normal()).await;
    }
    wait_state(&app, &domain, "up").await;
    // Down everywhere (a failure leaves the detector as it is).
    fail_everywhere(&mut probes).await;
    wait_state(&app, &domain, "down").await;
    wait_standing(&app, &domain, "sin", "failing").await;
    // It answers again, slowly, in two regions: the outage is resolved and a degraded
    // incident opens in the same transition, never two open at once.
    probes.send("ams", &[400.0, 400.0, 400.0]).await;
    probes.send("iad", &[400.0, 400.0, 400.0]).await;
    wait_state(&app, &domain, "degraded").await;
    let to: Vec<(String, String)> = sqlx::query_as(
        "SELECT from_state, to_state FROM domain_transitions WHERE domain_id = $1 ORDER BY at, id",
    )
    .bind(probes.domain)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let last = to.last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str()), ("down", "degraded"), "{to:?}");
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM incidents WHERE domain_id = $1 ORDER BY opened_at")
            .bind(probes.domain)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        kinds,
        [("down".to_owned(), "resolved".to_owned()), ("degraded".to_owned(), "open".to_owned())]
    );
    app.stop().await;
}

#[sqlx::test]
async fn degraded_settings_are_validated_by_field_and_shown(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let response = app
        .post(
            "/v1/domains",
            &app.token,
            &json!({"url": "https://example.com", "degraded": {"z": 0.2, "window": 8, "consecutive": 9, "x": 1}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    let fields = &body["error"]["fields"];
    assert_eq!(fields["degraded.z"], "must be a number from 1 to 20", "{body}");
    assert_eq!(fields["degraded.x"], "unknown field", "{body}");
    let response = app
        .post(
            "/v1/domains",
            &app.token,
            &json!({"url": "https://example.com", "degraded": {"window": 8, "consecutive": 9}}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["fields"]["degraded.consecutive"], "must not exceed window (8)", "{body}");

    let domain = app
        .create_domain(
            json!({"url": "https://example.com", "degraded": {"latency_ms": 750, "anomaly": false}}),
        )
        .await;
    let path = format!("/v1/domains/{domain}");
    let shown: Value = app.get(&path, &app.token).await.json().await.unwrap();
    assert_eq!(shown["degraded"], json!({"latency_ms": 750, "anomaly": false}), "{shown}");
    let patched: Value = app.patch(&path, &app.token, &json!({"degraded": null})).await.json().await.unwrap();
    assert_eq!(patched["degraded"], Value::Null, "{patched}");
    app.stop().await;
}

/// Fails the domain in every region (one failed probe each).
async fn fail_everywhere(probes: &mut Probes) {
    for region in REGIONS {
        let mut failed = result(probes.domain, false);
        probes.next_us += 1_000;
        failed.started_at_unix_us = probes.next_us;
        let ack =
            probes.clients.get_mut(region).unwrap().send_batch(batch(region, vec![failed])).await.unwrap();
        assert!(!ack.into_inner().duplicate);
    }
}

#[sqlx::test]
async fn latency_flapping_holds_slow_response_alerts_but_never_an_outage(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    // Threshold only, one slow probe makes a region degraded; flap mode at 3 changes.
    let domain = app
        .create_domain(json!({"url": "https://example.com/health", "interval": 60,
            "degraded": {"anomaly": false, "latency_ms": 300, "consecutive": 1},
            "flap": {"enter_transitions": 3, "leave_transitions": 1}}))
        .await;
    let hook = channel_for(&app.pool, &domain).await;
    let mut probes = Probes::new(&app, &pki, &domain).await;
    for region in REGIONS {
        probes.send(region, &[20.0]).await;
    }
    wait_state(&app, &domain, "up").await;
    // up → degraded → up → degraded: the third latency change enters latency flap mode.
    for (latency, state) in [(400.0, "degraded"), (20.0, "up"), (400.0, "degraded")] {
        for region in ["ams", "iad"] {
            probes.send(region, &[latency]).await;
        }
        wait_state(&app, &domain, state).await;
    }
    let flap = status(&app, &domain).await["flap"].clone();
    assert_eq!(flap["degraded"]["flapping"], true, "{flap}");
    assert_eq!(flap["degraded"]["score"], 3, "{flap}");
    assert_eq!(flap["flapping"], false, "availability is not flapping: {flap}");
    // Then it goes down: an availability change, announced although latency is flapping.
    fail_everywhere(&mut probes).await;
    wait_state(&app, &domain, "down").await;
    let down_incident: Uuid =
        sqlx::query_scalar("SELECT id FROM incidents WHERE domain_id = $1 AND kind = 'down'")
            .bind(probes.domain)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let sent = outbox(&app.pool, hook).await;
    let kinds: Vec<&str> = sent.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["incident_opened", "incident_resolved", "domain_flapping", "incident_opened"],
        "{sent:?}"
    );
    let flapping = &sent[2].1;
    assert_eq!(flapping["details"]["flap_kind"], "degraded", "{flapping}");
    assert!(flapping["summary"].as_str().unwrap().contains("response time is flapping"), "{flapping}");
    assert_eq!(sent[3].1["incident_id"], json!(down_incident), "the outage is announced: {sent:?}");
    let periods: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT kind, settled FROM flap_periods WHERE domain_id = $1 ORDER BY entered_at")
            .bind(probes.domain)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(periods, [("degraded".to_owned(), None)]);
    app.stop().await;
}
