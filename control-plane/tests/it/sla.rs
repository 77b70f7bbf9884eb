//! SLOs against a real database: the `slo` field of the domain API, the tenant's time zone (API
//! and CLI), `GET /v1/domains/{id}/sla` from known transitions and incidents, the
//! `sla_budget_low` and `sla_breach` notices sent once each per period (the monitor driven step
//! by step with a `ManualClock`, two replicas at once), and the monthly report: built once after
//! the month ends in the tenant's zone, delivered to a local webhook receiver and readable from
//! `GET /v1/reports/sla` as JSON, text and HTML. The rows consensus writes (transitions,
//! incidents) are inserted directly: the schema is the contract.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use chrono::{DateTime, Utc};
use control_plane::clock::ManualClock;
use control_plane::metrics::Metrics;
use control_plane::sla::Monitor;
use control_plane::{tenants, Config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::{eventually, random_prefix};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp, WAIT};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

async fn tenant(pool: &PgPool) -> Uuid {
    tenants::create_tenant(pool, &format!("tenant-{}", Uuid::new_v4())).await.unwrap().tenant_id
}

async fn tenant_of(app: &TestApp) -> Uuid {
    tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap().tenant_id
}

/// A domain row with `slo`, created long before the months the tests look at.
async fn domain(pool: &PgPool, tenant_id: Uuid, url: &str, slo: Option<Value>) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO domains (id, tenant_id, url, method, status_min, status_max, interval_s, timeout_ms, version, slo, created_at)
         VALUES ($1, $2, $3, 'GET', 200, 299, 60, 10000, 1, $4, '2026-01-01T00:00:00Z')",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(url)
    .bind(slo)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// A confirmed change of consensus state.
async fn transition(pool: &PgPool, tenant_id: Uuid, domain_id: Uuid, when: &str, from: &str, to: &str) {
    sqlx::query(
        "INSERT INTO domain_transitions (tenant_id, domain_id, at, from_state, to_state, notified)
         VALUES ($1, $2, $3, $4, $5, true)",
    )
    .bind(tenant_id)
    .bind(domain_id)
    .bind(at(when))
    .bind(from)
    .bind(to)
    .execute(pool)
    .await
    .unwrap();
}

/// An outage: down at `from`, up at `to`, with its incident (acknowledged after `ack_s`).
async fn outage(
    pool: &PgPool,
    tenant_id: Uuid,
    domain_id: Uuid,
    from: &str,
    to: &str,
    ack_s: Option<i64>,
) -> Uuid {
    transition(pool, tenant_id, domain_id, from, "up", "down").await;
    transition(pool, tenant_id, domain_id, to, "down", "up").await;
    let id = Uuid::new_v4();
    let opened = at(from);
    sqlx::query(
        "INSERT INTO incidents (id, tenant_id, domain_id, state, opened_at, acknowledged_at, resolved_at, duration_s)
         VALUES ($1, $2, $3, 'resolved', $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(domain_id)
    .bind(opened)
    .bind(ack_s.map(|s| opened + chrono::Duration::seconds(s)))
    .bind(at(to))
    .bind((at(to) - opened).num_seconds())
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn webhook_channel(pool: &PgPool, tenant_id: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO channels (id, tenant_id, name, kind, config, secret) VALUES ($1, $2, 'hook', 'webhook', $3, 'whsec_test')",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(json!({"url": format!("https://hooks.example.com/{id}")}))
    .execute(pool)
    .await
    .unwrap();
    id
}

/// The outbox: (kind, dedup key, payload), oldest first.
async fn outbox(pool: &PgPool) -> Vec<(String, String, Value)> {
    sqlx::query_as("SELECT kind, dedup_key, payload FROM notifications ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn monitor(pool: &PgPool, clock: &ManualClock, metrics: &Metrics) -> Monitor {
    Monitor::new(pool.clone(), &Config::default(), Arc::new(clock.clone()), metrics.clone())
}

async fn body(response: reqwest::Response, status: StatusCode) -> Value {
    let got = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn the_slo_field_and_the_time_zone_are_validated_by_name(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let created = app
        .post("/v1/domains", &app.token, &json!({"url": "https://example.com/", "slo": {"target": 99.9}}))
        .await;
    let created = body(created, StatusCode::CREATED).await;
    assert_eq!(created["slo"], json!({"target": 99.9, "period": "month", "budget_alert_fraction": 0.25}));
    let id = created["id"].as_str().unwrap().to_owned();
    let version = created["config_version"].clone();

    let bad = app
        .patch(&format!("/v1/domains/{id}"), &app.token, &json!({"slo": {"target": 100, "budget": 1}}))
        .await;
    let bad = body(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(bad["error"]["fields"]["slo.target"].as_str().unwrap().contains("below 100"), "{bad}");
    assert_eq!(bad["error"]["fields"]["slo.budget"], "unknown field");

    // An SLO is the control plane's own: changing it publishes no new configuration version.
    let changed = app
        .patch(
            &format!("/v1/domains/{id}"),
            &app.token,
            &json!({"slo": {"target": 99.5, "budget_alert_fraction": 0.1}}),
        )
        .await;
    let changed = body(changed, StatusCode::OK).await;
    assert_eq!(changed["slo"]["target"], 99.5);
    assert_eq!(changed["config_version"], version);
    let cleared = body(
        app.patch(&format!("/v1/domains/{id}"), &app.token, &json!({"slo": null})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["slo"], Value::Null);
    let none = app.get(&format!("/v1/domains/{id}/sla"), &app.token).await;
    assert_eq!(body(none, StatusCode::NOT_FOUND).await["error"]["code"], "not_recorded");

    let tenant = body(app.get("/v1/tenant", &app.token).await, StatusCode::OK).await;
    assert_eq!(tenant["time_zone"], "UTC");
    let set = app.patch("/v1/tenant", &app.token, &json!({"time_zone": "Europe/Berlin"})).await;
    assert_eq!(body(set, StatusCode::OK).await["time_zone"], "Europe/Berlin");
    for (patch, field) in [
        (json!({"time_zone": "Mars/Olympus"}), "time_zone"),
        (json!({"time_zone": 1}), "time_zone"),
        (json!({}), "time_zone"),
        (json!({"time_zone": "UTC", "name": "x"}), "name"),
    ] {
        let refused =
            body(app.patch("/v1/tenant", &app.token, &patch).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(refused["error"]["fields"][field].is_string(), "{patch}: {refused}");
    }
    let tenant_id = tenant_of(&app).await;
    let reader =
        tenants::create_token(&app.pool, tenant_id, "reader", tenants::Role::ReadOnly).await.unwrap();
    let read_only = app.patch("/v1/tenant", &reader.token, &json!({"time_zone": "UTC"})).await;
    assert_eq!(read_only.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body(app.get("/v1/tenant", &reader.token).await, StatusCode::OK).await["time_zone"],
        "Europe/Berlin"
    );
    app.shutdown().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn the_sla_route_answers_from_known_transitions_in_the_tenants_zone(pool: PgPool) {
    let clock = ManualClock::new(at("2026-11-20T12:00:00Z"));
    let config = test_config(&random_prefix("cp"), "redis://127.0.0.1:6379");
    let app = TestApp::spawn_with_clock(pool, config, Arc::new(clock.clone())).await;
    let tenant_id = tenant_of(&app).await;
    sqlx::query("UPDATE tenants SET time_zone = 'Europe/Berlin' WHERE id = $1")
        .bind(tenant_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let slo = json!({"target": 99.9, "period": "month", "budget_alert_fraction": 0.25});
    let id = domain(&app.pool, tenant_id, "https://shop.example/", Some(slo.clone())).await;
    transition(&app.pool, tenant_id, id, "2026-09-01T00:00:00Z", "unknown", "up").await;
    // Down across Berlin's October/November boundary (00:00 on 1 November is 23:00 UTC on
    // 31 October): 20 minutes in October, 40 in November.
    let spanning =
        outage(&app.pool, tenant_id, id, "2026-10-31T22:40:00Z", "2026-10-31T23:40:00Z", Some(120)).await;
    let later = outage(&app.pool, tenant_id, id, "2026-11-10T10:00:00Z", "2026-11-10T10:05:00Z", None).await;

    let now = body(app.get(&format!("/v1/domains/{id}/sla"), &app.token).await, StatusCode::OK).await;
    assert_eq!(now["period"], "2026-11");
    assert_eq!(now["time_zone"], "Europe/Berlin");
    assert_eq!(now["period_start"], "2026-11-01T00:00:00+01:00");
    assert_eq!(now["period_end"], "2026-12-01T00:00:00+01:00");
    assert_eq!(now["slo"], slo);
    assert_eq!(now["down_s"], 45.0 * 60.0);
    assert_eq!(now["budget_used_s"], 45.0 * 60.0);
    // A 30-day month at 99.9 %: 43.2 minutes, already overspent.
    assert_eq!(now["allowed_downtime_s"], 2592.0);
    assert_eq!(now["budget_left_s"], -108.0);
    assert_eq!(now["breached"], true);
    // Monitored from the start of the month (23:00 UTC) to now.
    assert_eq!(now["monitored_s"], (19.0 * 24.0 + 13.0) * 3600.0);
    let incidents: Vec<&str> =
        now["incidents"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(incidents, [spanning.to_string(), later.to_string()]);

    let october =
        body(app.get(&format!("/v1/domains/{id}/sla?period=2026-10"), &app.token).await, StatusCode::OK)
            .await;
    assert_eq!(october["period_start"], "2026-10-01T00:00:00+02:00", "summer time");
    assert_eq!(october["down_s"], 20.0 * 60.0);
    assert_eq!(october["remaining_s"], 0.0);
    // October in Berlin has 745 hours (the clocks went back an hour on the 25th).
    assert_eq!(october["monitored_s"], 745.0 * 3600.0);
    assert_eq!(october["breached"], false);
    assert_eq!(october["incidents"].as_array().unwrap().len(), 1);

    for (query, message) in
        [("period=2026-13", "YYYY-MM"), ("period=2026-12", "not begun"), ("window=1d", "unknown")]
    {
        let refused = app.get(&format!("/v1/domains/{id}/sla?{query}"), &app.token).await;
        let refused = body(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        let fields = refused["error"]["fields"].as_object().unwrap();
        assert!(fields.values().any(|m| m.as_str().unwrap().contains(message)), "{query}: {refused}");
    }
    let other = app.other_tenant().await;
    assert_eq!(app.get(&format!("/v1/domains/{id}/sla"), &other).await.status(), StatusCode::NOT_FOUND);
    app.shutdown().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn budget_low_and_breach_are_sent_once_each_per_period(pool: PgPool) {
    let tenant_id = tenant(&pool).await;
    webhook_channel(&pool, tenant_id).await;
    let id = domain(&pool, tenant_id, "https://api.example/", Some(json!({"target": 99.9}))).await;
    // Another tenant's domain without an SLO: never looked at.
    let other = tenant(&pool).await;
    webhook_channel(&pool, other).await;
    let quiet = domain(&pool, other, "https://quiet.example/", None).await;
    transition(&pool, other, quiet, "2026-11-02T00:00:00Z", "up", "down").await;

    let clock = ManualClock::new(at("2026-11-05T00:00:00Z"));
    let metrics = Metrics::default();
    let first = monitor(&pool, &clock, &metrics);
    let second = monitor(&pool, &clock, &metrics);
    let step = |m: &Monitor| {
        let m = m.clone();
        async move { m.run_due(m.clock().now()).await.unwrap().notices }
    };
    transition(&pool, tenant_id, id, "2026-10-15T00:00:00Z", "unknown", "up").await;
    outage(&pool, tenant_id, id, "2026-11-03T10:00:00Z", "2026-11-03T10:20:00Z", None).await;
    assert_eq!(step(&first).await, 0, "20 of 43.2 minutes used: more than a quarter left");

    outage(&pool, tenant_id, id, "2026-11-06T10:00:00Z", "2026-11-06T10:15:00Z", None).await;
    clock.set(at("2026-11-07T00:00:00Z"));
    let (a, b) = tokio::join!(step(&first), step(&second));
    assert_eq!(a + b, 1, "35 minutes used: the budget is low, said once by two replicas");
    assert_eq!(step(&first).await, 0);

    outage(&pool, tenant_id, id, "2026-11-08T10:00:00Z", "2026-11-08T10:10:00Z", None).await;
    clock.set(at("2026-11-09T00:00:00Z"));
    let (a, b) = tokio::join!(step(&first), step(&second));
    assert_eq!(a + b, 1, "45 minutes used: breached, said once");
    clock.set(at("2026-11-29T00:00:00Z"));
    assert_eq!(step(&second).await, 0, "nothing more this month");

    // December starts with a whole budget; an outage of the same length says it again.
    clock.set(at("2026-12-02T00:00:00Z"));
    assert_eq!(step(&first).await, 0);
    outage(&pool, tenant_id, id, "2026-12-03T10:00:00Z", "2026-12-03T11:00:00Z", None).await;
    clock.set(at("2026-12-04T00:00:00Z"));
    assert_eq!(step(&first).await, 2, "an hour down at once: low and breached together, in that order");

    let sent = outbox(&pool).await;
    let kinds: Vec<(&str, &str)> = sent.iter().map(|(k, key, _)| (k.as_str(), key.as_str())).collect();
    let nov = at("2026-11-01T00:00:00Z").timestamp();
    let dec = at("2026-12-01T00:00:00Z").timestamp();
    assert_eq!(
        kinds,
        [
            ("sla_budget_low", format!("sla:{id}:{nov}:sla_budget_low").as_str()),
            ("sla_breach", format!("sla:{id}:{nov}:sla_breach").as_str()),
            ("sla_budget_low", format!("sla:{id}:{dec}:sla_budget_low").as_str()),
            ("sla_breach", format!("sla:{id}:{dec}:sla_breach").as_str()),
        ]
    );
    let (_, _, low) = &sent[0];
    assert_eq!(low["domain_id"], id.to_string());
    assert_eq!(
        low["summary"],
        "https://api.example/ has 8m 12s of its 43m 12s error budget left for 2026-11 (SLO 99.9 %)"
    );
    assert_eq!(low["details"]["period"], "2026-11");
    assert_eq!(low["details"]["period_start"], "2026-11-01T00:00:00+00:00");
    assert_eq!(low["details"]["budget_used_s"], 35.0 * 60.0);
    let (_, _, breach) = &sent[1];
    assert_eq!(
        breach["summary"],
        "https://api.example/ breached its SLO of 99.9 % for 2026-11: down 45m, 43m 12s allowed"
    );
    assert_eq!(breach["details"]["breached"], true);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sla_notices").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 4);
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"control_plane_sla_notices_total{kind="sla_breach"} 2"#), "{text}");
    assert!(text.contains(r#"control_plane_sla_notices_total{kind="sla_budget_low"} 2"#), "{text}");
}

/// A webhook receiver standing in for the tenant's endpoint: the bodies it got.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        async fn hook(State(r): State<Receiver>, body: Bytes) -> StatusCode {
            r.bodies.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
            StatusCode::OK
        }
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn reports(&self) -> Vec<Value> {
        // November's: the app's own monitor could only ever have found October's to build.
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .filter(|b| b["kind"] == "sla_report" && b["details"]["month"] == "2026-11")
            .cloned()
            .collect()
    }
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn the_monthly_report_is_sent_once_after_the_month_and_read_from_the_api(pool: PgPool) {
    // Before November ends in Berlin (23:00 UTC): the app's own monitor finds nothing to report.
    let clock = ManualClock::new(at("2026-11-30T22:00:00Z"));
    let config = Config { sla_check_interval_ms: 3_600_000, ..crate::notify::notify_config() };
    let app = TestApp::spawn_with_clock(pool, config.clone(), Arc::new(clock.clone())).await;
    let tenant_id = tenant_of(&app).await;
    sqlx::query(
        "UPDATE tenants SET time_zone = 'Europe/Berlin', created_at = '2026-01-01T00:00:00Z' WHERE id = $1",
    )
    .bind(tenant_id)
    .execute(&app.pool)
    .await
    .unwrap();
    let (receiver, addr) = Receiver::start().await;
    let channel = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "hook", "kind": "webhook", "url": format!("http://{addr}/hook")}),
        )
        .await;
    body(channel, StatusCode::CREATED).await;
    let shop = domain(&app.pool, tenant_id, "https://shop.example/", Some(json!({"target": 99.9}))).await;
    sqlx::query("UPDATE domains SET name = 'Shop <main>' WHERE id = $1")
        .bind(shop)
        .execute(&app.pool)
        .await
        .unwrap();
    let api = domain(&app.pool, tenant_id, "https://api.example/", Some(json!({"target": 99.0}))).await;
    let blog = domain(&app.pool, tenant_id, "https://blog.example/", None).await;
    for d in [shop, api, blog] {
        transition(&app.pool, tenant_id, d, "2026-10-01T00:00:00Z", "unknown", "up").await;
    }
    // Shop: an hour down (acknowledged after 4 minutes) and 10 minutes (after 2): SLO missed.
    outage(&app.pool, tenant_id, shop, "2026-11-03T10:00:00Z", "2026-11-03T11:00:00Z", Some(240)).await;
    outage(&app.pool, tenant_id, shop, "2026-11-20T10:00:00Z", "2026-11-20T10:10:00Z", Some(120)).await;
    // API: the same hour, within 99 %. An incident opened in October is not November's.
    outage(&app.pool, tenant_id, api, "2026-11-03T10:00:00Z", "2026-11-03T11:00:00Z", None).await;
    outage(&app.pool, tenant_id, api, "2026-10-20T10:00:00Z", "2026-10-20T10:30:00Z", None).await;

    let metrics = Metrics::default();
    let monitor = monitor(&app.pool, &clock, &metrics);
    let reports = |m: &Monitor| {
        let m = m.clone();
        async move { m.run_due(m.clock().now()).await.unwrap().reports }
    };
    clock.set(at("2026-11-30T23:02:00Z"));
    assert_eq!(reports(&monitor).await, 0, "the month has ended, the grace has not");
    clock.set(at("2026-11-30T23:06:00Z"));
    let other_replica = Monitor::new(app.pool.clone(), &config, Arc::new(clock.clone()), Metrics::default());
    let (a, b) = tokio::join!(reports(&monitor), reports(&other_replica));
    assert_eq!(a + b, 1, "one report, whichever replica builds it");
    clock.set(at("2026-12-15T00:00:00Z"));
    assert_eq!(reports(&monitor).await, 0);

    eventually(WAIT, "the report delivered", || async { (!receiver.reports().is_empty()).then_some(()) })
        .await;
    let sent = receiver.reports();
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(
        sent["summary"],
        "SLA report 2026-11 (Europe/Berlin): 3 domains, 1 of 2 SLOs met, 3 incidents"
    );
    let details = &sent["details"];
    assert_eq!(details["month"], "2026-11");
    assert_eq!(details["period_start"], "2026-10-31T23:00:00Z");
    assert_eq!(details["complete"], true);
    let lines = details["domains"].as_array().unwrap();
    let names: Vec<&str> = lines.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Shop <main>", "https://api.example/", "https://blog.example/"]);
    let shop_line = &lines[0];
    assert_eq!(shop_line["slo_met"], false);
    assert_eq!(shop_line["incidents"], 2);
    assert_eq!(shop_line["down_s"], 70.0 * 60.0);
    assert_eq!(shop_line["mtta_s"], 180.0);
    assert_eq!(shop_line["mttr_s"], 35.0 * 60.0);
    assert_eq!((lines[1]["slo_met"].clone(), lines[1]["incidents"].clone()), (json!(true), json!(1)));
    assert_eq!((lines[1]["mtta_s"].clone(), lines[1]["mttr_s"].clone()), (Value::Null, json!(3600.0)));
    assert_eq!(lines[2]["slo_met"], Value::Null);
    let text = details["text"].as_str().unwrap();
    assert!(text.starts_with(sent["summary"].as_str().unwrap()), "{text}");
    assert!(
        text.contains("SLO 99.9 % missed") && text.contains("MTTA 3m") && text.contains("MTTR 35m"),
        "{text}"
    );
    assert!(
        details["html"].as_str().unwrap().contains("Shop &#60;main&#62;")
            || details["html"].as_str().unwrap().contains("Shop &lt;main&gt;")
    );

    // The API reads the report as it was sent; the default month is the last one that ended.
    let json_report = body(app.get("/v1/reports/sla", &app.token).await, StatusCode::OK).await;
    assert_eq!(json_report["domains"], details["domains"]);
    assert_eq!(json_report["generated_at"], details["generated_at"]);
    let as_text = app.get("/v1/reports/sla?month=2026-11&format=text", &app.token).await;
    assert_eq!(as_text.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(as_text.text().await.unwrap(), text);
    let as_html = app.get("/v1/reports/sla?month=2026-11&format=html", &app.token).await;
    assert_eq!(as_html.headers()["content-type"], "text/html; charset=utf-8");
    assert!(as_html.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
    assert_eq!(as_html.text().await.unwrap(), details["html"].as_str().unwrap());
    // The running month is built on demand, so far.
    let running = body(app.get("/v1/reports/sla?month=2026-12", &app.token).await, StatusCode::OK).await;
    assert_eq!(running["complete"], false);
    assert_eq!(running["incidents"], 0);

    for (query, field) in [("month=2026-1", "month"), ("month=2027-01", "month"), ("format=pdf", "format")] {
        let refused = body(
            app.get(&format!("/v1/reports/sla?{query}"), &app.token).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(refused["error"]["fields"][field].is_string(), "{query}: {refused}");
    }
    // Another tenant's report holds its own domains only.
    let other = app.other_tenant().await;
    let theirs = body(app.get("/v1/reports/sla?month=2026-11", &other).await, StatusCode::OK).await;
    assert_eq!(theirs["domains"], json!([]));
    app.shutdown().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn the_cli_sets_a_tenants_time_zone(pool: PgPool) {
    let tenant_id = tenant(&pool).await;
    let database: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let run = |zone: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args(["set-time-zone", "--tenant", &tenant_id.to_string(), "--time-zone", zone])
            .env("CROSSCHECK_DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{database}"))
            .env("CROSSCHECK_LOG_FORMAT", "text")
            .env_remove("CROSSCHECK_CONFIG")
            .kill_on_drop(true)
            .output()
    };
    let output = run("America/New_York").await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.trim(), format!("tenant_id={tenant_id} time_zone=America/New_York"));
    let stored: String = sqlx::query_scalar("SELECT time_zone FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, "America/New_York");
    let refused = run("Mars/Olympus").await.unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown time zone \"Mars/Olympus\""));
}
