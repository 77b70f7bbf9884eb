//! Storm control end to end: real incidents opened by consensus, the outbox, one or two
//! dispatchers and a local webhook receiver. A burst reaches the receiver as the first
//! notification at once and the rest of the window in one grouped document; an isolated
//! notification is not delayed; `storm_window_s: 0` sends each alone; order per domain survives
//! retries; two dispatchers never send a notification twice.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use control_plane::notify::{self, Notification};
use control_plane::tenants;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::eventually;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, WAIT};
use crate::notify::notify_config;

/// A webhook receiver recording each request's arrival, id header and body; answers `status`.
#[derive(Clone)]
struct Hook {
    hits: Arc<Mutex<Vec<(Instant, String, Value)>>>,
    status: Arc<AtomicU16>,
    addr: SocketAddr,
}

impl Hook {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = Hook {
            hits: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            addr: listener.local_addr().unwrap(),
        };
        async fn receive(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> AxumStatus {
            let id = headers.get("x-crosscheck-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            h.hits.lock().unwrap().push((Instant::now(), id, serde_json::from_slice(&body).unwrap()));
            AxumStatus::from_u16(h.status.load(Ordering::SeqCst)).unwrap()
        }
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(hook.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        hook
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hits(&self) -> Vec<(Instant, String, Value)> {
        self.hits.lock().unwrap().clone()
    }

    /// The requests answered 200, in order of arrival.
    fn accepted(&self, from: usize) -> Vec<(Instant, String, Value)> {
        self.hits()[from..].to_vec()
    }
}

/// The notifications a webhook body carries: itself, or a group's `transitions`.
fn carried(body: &Value) -> Vec<Value> {
    match body["transitions"].as_array() {
        Some(transitions) => transitions.clone(),
        None => vec![body.clone()],
    }
}

async fn channel(app: &TestApp, url: &str, window_s: u32) -> Uuid {
    let response = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "hook", "kind": "webhook", "url": url, "storm_window_s": window_s}),
        )
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["storm_window_s"], window_s);
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn tenant_of(app: &TestApp) -> Uuid {
    tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap().tenant_id
}

/// Every region observes `domain` as `ok`; then it is evaluated.
async fn observe_all(app: &TestApp, domain: Uuid, ok: bool) {
    for region in ["ams", "iad", "sin"] {
        let batch = crate::helpers::observed(region, domain, ok, chrono::Utc::now());
        app.consensus.record(&batch).await.unwrap();
    }
    app.consensus.evaluate(domain, chrono::Utc::now()).await.unwrap();
}

fn synthetic(tenant_id: Uuid, domain: Uuid, kind: &str) -> Notification {
    Notification {
        kind: kind.into(),
        tenant_id,
        domain_id: Some(domain),
        url: Some(format!("https://{domain}.example/")),
        incident_id: Some(Uuid::new_v4()),
        summary: format!("https://{domain}.example/ {kind}"),
        details: json!({"regions": [{"region": "ams"}, {"region": "iad"}]}),
        occurred_at: chrono::Utc::now(),
    }
}

async fn enqueue(pool: &PgPool, notifications: &[(Notification, String)]) {
    let mut tx = pool.begin().await.unwrap();
    for (n, key) in notifications {
        assert_eq!(notify::enqueue(&mut tx, n, key).await.unwrap(), 1);
    }
    tx.commit().await.unwrap();
}

async fn all_delivered(pool: &PgPool, n: i64) {
    eventually(WAIT, &format!("{n} notifications delivered"), || async {
        let (total, delivered): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE state = 'delivered') FROM notifications")
                .fetch_one(pool)
                .await
                .unwrap();
        (total == n && delivered == n).then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_burst_is_grouped_and_an_isolated_alert_is_not_delayed(pool: PgPool) {
    const WINDOW_S: u32 = 4;
    let hook = Hook::start().await;
    let app = TestApp::spawn_with(pool.clone(), notify_config()).await;
    channel(&app, &hook.url(), WINDOW_S).await;
    let mut domains = Vec::new();
    for i in 0..13 {
        let id =
            app.create_domain(json!({"url": format!("https://d{i}.example/health"), "interval": 60})).await;
        let id: Uuid = id.parse().unwrap();
        observe_all(&app, id, true).await;
        domains.push(id);
    }

    // An isolated outage goes out at once, alone.
    let isolated = domains[12];
    let started = Instant::now();
    observe_all(&app, isolated, false).await;
    eventually(WAIT, "the isolated alert", || async { (!hook.hits().is_empty()).then_some(()) }).await;
    let (at, _, body) = hook.hits()[0].clone();
    let waited = at.duration_since(started);
    assert!(waited < Duration::from_secs(u64::from(WINDOW_S)) / 2, "an isolated alert waited {waited:?}");
    assert_eq!(body["kind"], "incident_opened");
    assert!(body.get("transitions").is_none());
    // Its window passes with nothing else: the channel is quiet again.
    eventually(WAIT, "the window over", || async {
        let end: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT window_end FROM channel_storms").fetch_one(&pool).await.unwrap();
        (end < chrono::Utc::now()).then_some(())
    })
    .await;

    // Twelve domains go down at once: twelve incidents, each with its event and outbox row.
    let burst = Instant::now();
    for domain in &domains[..12] {
        observe_all(&app, *domain, false).await;
    }
    all_delivered(&pool, 13).await;
    let incidents: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT i.id) FROM incidents i JOIN incident_events e ON e.incident_id = i.id
         WHERE e.kind = 'opened'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(incidents, 13, "each transition is its own incident with its own events");

    let hits = hook.accepted(1);
    assert_eq!(hits.len(), 2, "the first at once and the rest of the window in one message: {hits:?}");
    let (first_at, _, first) = &hits[0];
    assert!(first.get("transitions").is_none(), "{first}");
    assert!(first_at.duration_since(burst) < Duration::from_secs(u64::from(WINDOW_S)));
    let (group_at, group_id, group) = &hits[1];
    assert!(group_at.duration_since(*first_at) >= Duration::from_secs(u64::from(WINDOW_S) - 1));
    assert_eq!(group["kind"], "notification_group");
    assert_eq!(group["id"].as_str(), Some(group_id.as_str()));
    assert_eq!(group["count"], 11);
    let transitions = group["transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 11);
    let summary = group["summary"].as_str().unwrap();
    // The application's own consensus round may evaluate a domain once two of its three regions
    // are recorded (a quorum), so an incident may open with two regions: the three regions stay
    // the facts most of the group shares.
    let common = summary.strip_prefix("11 domains down; in common: ").unwrap_or_else(|| panic!("{summary}"));
    let sharing =
        common.split_once(" in ams, iad, sin").map(|(n, _)| n).unwrap_or_else(|| panic!("{summary}"));
    let sharing = if sharing == "all 11" { 11 } else { sharing.trim_end_matches(" of 11").parse().unwrap() };
    assert!(sharing > 11 / 2, "{summary}");
    // Each element is exactly what the notification alone would have been: its outbox row's
    // payload with its own id and dedup key; the rows are delivered as part of the group.
    type Row = (Uuid, String, Value, Option<Uuid>);
    let rows: Vec<Row> =
        sqlx::query_as("SELECT id, dedup_key, payload, group_id FROM notifications ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut seen = HashSet::new();
    for element in transitions.iter().chain([first]) {
        let id: Uuid = element["id"].as_str().unwrap().parse().unwrap();
        let (_, key, payload, group) = rows.iter().find(|r| r.0 == id).expect("a row per transition");
        let mut alone = payload.clone();
        alone["id"] = json!(id);
        alone["dedup_key"] = json!(key);
        assert_eq!(element, &alone);
        assert!(key.starts_with("incident:") && key.ends_with(":opened"));
        let expected_group = if element == first { None } else { Some(group_id.parse().unwrap()) };
        assert_eq!(*group, expected_group);
        assert!(seen.insert(element["incident_id"].clone()), "one incident per transition");
    }
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn storm_window_0_sends_each_alone(pool: PgPool) {
    let hook = Hook::start().await;
    let app = TestApp::spawn_with(pool.clone(), notify_config()).await;
    channel(&app, &hook.url(), 0).await;
    let tenant = tenant_of(&app).await;
    let burst: Vec<(Notification, String)> = (0..15)
        .map(|i| (synthetic(tenant, Uuid::new_v4(), "incident_opened"), format!("incident:{i}:opened")))
        .collect();
    enqueue(&pool, &burst).await;
    all_delivered(&pool, 15).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 15);
    assert!(hits.iter().all(|(_, _, body)| body.get("transitions").is_none()));
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE storm_held_at IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(held, 0);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_domains_order_survives_retries_of_grouped_messages(pool: PgPool) {
    let hook = Hook::start().await;
    let config = control_plane::Config { notify_max_attempts: 0, notify_max_age_s: 3_600, ..notify_config() };
    let app = TestApp::spawn_with(pool.clone(), config).await;
    channel(&app, &hook.url(), 2).await;
    let tenant = tenant_of(&app).await;
    // The receiver is down: the first notification and the grouped rest fail and are retried.
    hook.status.store(503, Ordering::SeqCst);
    let domains: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let opened: Vec<(Notification, String)> = domains
        .iter()
        .map(|d| (synthetic(tenant, *d, "incident_opened"), format!("incident:{d}:opened")))
        .collect();
    enqueue(&pool, &opened).await;
    eventually(WAIT, "a grouped attempt refused", || async {
        hook.hits().iter().any(|(_, _, b)| b["kind"] == "notification_group").then_some(())
    })
    .await;
    // Meanwhile the domains recover: each recovery must reach the channel after its outage.
    let resolved: Vec<(Notification, String)> = domains
        .iter()
        .map(|d| (synthetic(tenant, *d, "incident_resolved"), format!("incident:{d}:resolved")))
        .collect();
    enqueue(&pool, &resolved).await;
    let before = hook.hits().len();
    // The dispatcher retries (and is refused) at least once more with the recoveries queued
    // behind their outages.
    eventually(WAIT, "another refused attempt after the recoveries were queued", || async {
        (hook.hits().len() > before).then_some(())
    })
    .await;
    let refused = hook.hits().len();
    hook.status.store(200, Ordering::SeqCst);
    all_delivered(&pool, 12).await;
    let mut order: Vec<(String, String)> = Vec::new();
    for (_, _, body) in hook.accepted(refused) {
        for n in carried(&body) {
            order.push((n["domain_id"].as_str().unwrap().to_owned(), n["kind"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(order.len(), 12, "each delivered once after the receiver came back: {order:?}");
    for d in &domains {
        let kinds: Vec<&str> =
            order.iter().filter(|(id, _)| *id == d.to_string()).map(|(_, k)| k.as_str()).collect();
        assert_eq!(kinds, ["incident_opened", "incident_resolved"], "{d}");
    }
    let grouped_retries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE group_id IS NOT NULL AND attempts > 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(grouped_retries > 0, "grouped notifications were retried and delivered in a group");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn two_dispatchers_group_a_storm_without_sending_anything_twice(pool: PgPool) {
    let hook = Hook::start().await;
    let a = TestApp::spawn_with(pool.clone(), notify_config()).await;
    let b = TestApp::spawn_with(pool.clone(), notify_config()).await;
    channel(&a, &hook.url(), 2).await;
    let tenant = tenant_of(&a).await;
    // Three bursts of 40, a little apart, each committed at once.
    let mut total = 0;
    for burst in 0..3 {
        let batch: Vec<(Notification, String)> = (0..40)
            .map(|i| {
                (synthetic(tenant, Uuid::new_v4(), "incident_opened"), format!("incident:{burst}-{i}:opened"))
            })
            .collect();
        enqueue(&pool, &batch).await;
        total += batch.len();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    all_delivered(&pool, total as i64).await;
    let hits = hook.hits();
    let mut ids: Vec<String> = hits
        .iter()
        .flat_map(|(_, _, body)| carried(body))
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), total, "every notification delivered exactly once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no notification was sent twice");
    assert!(hits.len() <= 5, "a storm of {total} in a few messages, not {}", hits.len());
    let groups: HashSet<&str> = hits.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(groups.len(), hits.len(), "each message its own id");
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_grouped_message_names_what_the_domains_results_share(pool: PgPool) {
    use crate::ingest::{batch, client, result, Pki};
    use shared::proto::{Certificate, ErrorKind};
    let pki = Pki::new();
    let mut config = notify_config();
    pki.configure(&mut config);
    let hook = Hook::start().await;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    channel(&app, &hook.url(), 2).await;
    let mut domains = Vec::new();
    for i in 0..8 {
        let id = app.create_domain(json!({"url": format!("https://s{i}.example/"), "interval": 60})).await;
        domains.push(id.parse::<Uuid>().unwrap());
    }
    let mut clients = Vec::new();
    for region in ["ams", "iad", "sin"] {
        let (cert, key) = pki.agent(region, &format!("{region}-1"));
        clients.push((region, client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap()));
    }
    // Behind one provider: one /24, one certificate authority; then all refuse connections.
    let probe = |i: usize, domain: Uuid, ok: bool| {
        let mut r = result(domain, ok);
        r.resolved_ip = format!("203.0.113.{}", 10 + i);
        r.certificate = Some(Certificate {
            subject: format!("CN=s{i}.example"),
            issuer: "CN=Shared Provider CA".into(),
            serial: format!("0{i}"),
            not_after_unix_s: chrono::Utc::now().timestamp() + 365 * 86_400,
            valid: true,
            ..Default::default()
        });
        if !ok {
            r.status_code = 0;
            r.error = ErrorKind::Connect as i32;
            r.error_detail = "connection refused".into();
        }
        r
    };
    for ok in [true, false] {
        for (region, client) in &mut clients {
            let results = domains.iter().enumerate().map(|(i, d)| probe(i, *d, ok)).collect();
            client.send_batch(batch(region, results)).await.unwrap();
        }
        let want = if ok { "up" } else { "down" };
        eventually(WAIT, &format!("every domain {want}"), || async {
            let states: Vec<String> =
                sqlx::query_scalar("SELECT state FROM domain_state WHERE domain_id = ANY($1)")
                    .bind(&domains)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            (states.len() == domains.len() && states.iter().all(|s| s == want)).then_some(())
        })
        .await;
    }
    all_delivered(&pool, 8).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");
    let group = &hits[1].2;
    assert_eq!(group["count"], 7);
    let summary = group["summary"].as_str().unwrap();
    assert!(summary.starts_with("7 domains down; in common: "), "{summary}");
    for shared in [
        "all 7 on network 203.0.113.0/24",
        "all 7 failing with connect (connection refused)",
        "all 7 with certificates issued by CN=Shared Provider CA",
        "all 7 in ams, iad",
    ] {
        assert!(summary.contains(shared), "{shared} in: {summary}");
    }
    let facts: Vec<&str> =
        group["common"].as_array().unwrap().iter().map(|f| f["fact"].as_str().unwrap()).collect();
    assert!(facts.contains(&"network") && facts.contains(&"issuer"), "{facts:?}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_slack_channel_gets_a_grouped_summary_with_a_bounded_list(pool: PgPool) {
    let hook = Hook::start().await;
    let app = TestApp::spawn_with(pool.clone(), notify_config()).await;
    let response = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "#alerts", "kind": "slack", "url": hook.url(), "storm_window_s": 2}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let tenant = tenant_of(&app).await;
    let burst: Vec<(Notification, String)> = (0..25)
        .map(|i| (synthetic(tenant, Uuid::new_v4(), "incident_opened"), format!("incident:{i}:opened")))
        .collect();
    enqueue(&pool, &burst).await;
    all_delivered(&pool, 25).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 2);
    let text = hits[1].2["text"].as_str().unwrap();
    assert!(text.starts_with("24 domains down; in common: all 24 in ams, iad"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("- ")).count(), 20, "{text}");
    assert!(text.contains("… and 4 more"), "{text}");
    app.stop().await;
}
