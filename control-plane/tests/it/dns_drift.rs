//! DNS drift through consensus rounds: each region's known answer set, a change confirmed after
//! `stable_probes` probes in a row, a flip back before that staying quiet, rotation inside an
//! allowed network updating the known set quietly, and `dns_changed` notifications only for
//! domains that opted in. Batches are driven into consensus directly (what ingest hands it).

use chrono::{DateTime, Utc};
use control_plane::dns_drift::DnsAnswer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::eventually;
use uuid::Uuid;

use crate::channels::{ok, Provider};
use crate::helpers::{observed, TestApp, WAIT};
use crate::notify::notify_config;

const A: &[&str] = &["192.0.2.10", "192.0.2.11"];
const B: &[&str] = &["192.0.2.10", "198.51.100.20"];

fn at(s: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(30) + chrono::Duration::seconds(s)
}

/// Feeds one batch from `region` holding a probe of `domain` per entry of `sets`, 30 s apart
/// starting at `start` seconds.
async fn probe(app: &TestApp, region: &str, domain: Uuid, start: i64, sets: &[&[&str]]) {
    let mut batch = observed(region, domain, true, at(start + 30 * sets.len() as i64));
    batch.dns = sets
        .iter()
        .enumerate()
        .map(|(i, set)| DnsAnswer {
            domain_id: domain,
            observed_at: at(start + 30 * i as i64),
            addrs: control_plane::dns_drift::fold::normalize(set.iter().map(|a| a.to_string()).collect()),
        })
        .collect();
    app.consensus.process(vec![batch]).await;
}

async fn dns(app: &TestApp, domain: Uuid) -> Value {
    let response = app.get(&format!("/v1/domains/{domain}/dns"), &app.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn create(app: &TestApp, url: &str, drift: Value) -> Uuid {
    app.create_domain(json!({"url": url, "dns_drift": drift})).await.parse().unwrap()
}

async fn outbox(app: &TestApp, domain: Uuid) -> Vec<Value> {
    sqlx::query_scalar("SELECT payload FROM notifications WHERE kind = 'dns_changed' AND domain_id = $1")
        .bind(domain)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_change_is_confirmed_after_stable_probes_and_notified_when_opted_in(pool: sqlx::PgPool) {
    let receiver = Provider::start(ok(204, ""), Vec::new()).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "dns", "kind": "discord",
        "url": receiver.url("/hook"), "events": ["dns_changed"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let domain = create(&app, "https://shop.example.com", json!({"notify": true, "stable_probes": 3})).await;
    let view: Value = app.get(&format!("/v1/domains/{domain}"), &app.token).await.json().await.unwrap();
    assert_eq!(
        view["dns_drift"],
        json!({"notify": true, "stable_probes": 3, "allowed_networks": [], "same_network": false})
    );

    probe(&app, "ams", domain, 0, &[A, A]).await;
    probe(&app, "ams", domain, 60, &[B, B]).await;
    let record = dns(&app, domain).await;
    let ams = &record["regions"][0];
    assert_eq!((ams["region"].as_str(), ams["known"].clone()), (Some("ams"), json!(A)));
    assert_eq!((ams["candidate"].clone(), ams["candidate_probes"].as_u64()), (json!(B), Some(2)));
    assert!(record["changes"].as_array().unwrap().is_empty(), "two probes do not confirm");
    assert!(outbox(&app, domain).await.is_empty());

    probe(&app, "ams", domain, 120, &[B]).await;
    let record = dns(&app, domain).await;
    assert_eq!(record["regions"][0]["known"], json!(B));
    assert_eq!(record["regions"][0]["candidate"], Value::Null);
    let change = &record["changes"][0];
    assert_eq!(change["region"], "ams");
    assert_eq!(change["added"], json!(["198.51.100.20"]));
    assert_eq!(change["removed"], json!(["192.0.2.11"]));
    assert_eq!((change["rotation"].as_bool(), change["notified"].as_bool()), (Some(false), Some(true)));
    let sent = outbox(&app, domain).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["details"]["regions"], json!(["ams"]));
    assert_eq!(sent[0]["details"]["added"], json!(["198.51.100.20"]));
    assert!(sent[0]["summary"].as_str().unwrap().contains("shop.example.com changed in ams"), "{}", sent[0]);
    let hits = eventually(WAIT, "the dns_changed message", || async {
        let hits = receiver.hits();
        (!hits.is_empty()).then_some(hits)
    })
    .await;
    assert!(hits[0].body["content"].as_str().unwrap().contains("DNS answers"));

    // Another region keeps its own state; a late probe changes nothing.
    probe(&app, "sin", domain, 0, &[A]).await;
    let record = dns(&app, domain).await;
    assert_eq!(record["regions"][1]["known"], json!(A));
    assert_eq!(record["changes"].as_array().unwrap().len(), 1);
    // Another tenant sees nothing.
    let other = app.other_tenant().await;
    assert_eq!(app.get(&format!("/v1/domains/{domain}/dns"), &other).await.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn flips_rotation_and_domains_not_opted_in_stay_quiet(pool: sqlx::PgPool) {
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "all", "kind": "discord",
        "url": "http://127.0.0.1:9/hook", "enabled": true}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let flipping = create(&app, "https://a.example.com", json!({"notify": true})).await;
    let rotating = create(
        &app,
        "https://b.example.com",
        json!({"notify": true, "allowed_networks": ["198.51.100.0/24"]}),
    )
    .await;
    let silent = create(&app, "https://c.example.com", json!(null)).await;

    // A flip back before the third probe: no change.
    probe(&app, "ams", flipping, 0, &[A, B, B, A, B, B]).await;
    let record = dns(&app, flipping).await;
    assert!(record["changes"].as_array().unwrap().is_empty(), "{record}");
    assert_eq!(record["regions"][0]["known"], json!(A));

    // CDN rotation inside the allowed network: the known set moves, nothing is notified.
    probe(&app, "ams", rotating, 0, &[A, B, B, B]).await;
    let record = dns(&app, rotating).await;
    assert_eq!(record["regions"][0]["known"], json!(B));
    assert_eq!(
        (record["changes"][0]["rotation"].as_bool(), record["changes"][0]["notified"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(outbox(&app, rotating).await.is_empty());

    // Not opted in: recorded, not notified.
    probe(&app, "ams", silent, 0, &[A, B, B, B]).await;
    let record = dns(&app, silent).await;
    assert_eq!(record["dns_drift"]["notify"], false);
    assert_eq!(
        (record["changes"][0]["rotation"].as_bool(), record["changes"][0]["notified"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(outbox(&app, silent).await.is_empty());

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"control_plane_dns_changes_total{outcome="rotation"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"control_plane_dns_changes_total{outcome="changed"} 1"#), "{metrics}");

    // Bad settings are named by field; a PATCH changes them without a new config version.
    let bad = app
        .post(
            "/v1/domains",
            &app.token,
            &json!({"url": "https://d.example.com",
        "dns_drift": {"stable_probes": 0, "allowed_networks": ["nope"]}}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad: Value = bad.json().await.unwrap();
    let fields = bad["error"]["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("dns_drift.stable_probes") && fields.contains_key("dns_drift.allowed_networks"),
        "{bad}"
    );
    let before: Value = app.get(&format!("/v1/domains/{silent}"), &app.token).await.json().await.unwrap();
    let patched = app
        .patch(&format!("/v1/domains/{silent}"), &app.token, &json!({"dns_drift": {"notify": true}}))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["dns_drift"]["notify"], true);
    assert_eq!(patched["config_version"], before["config_version"]);
    app.stop().await;
}
