//! The provider channels end to end: PagerDuty Events API v2, Microsoft Teams, Discord,
//! Telegram and ntfy, each against a local receiver standing in for the provider that checks
//! the payload shape the provider documents and answers as the provider would (success,
//! 429 with a wait, 5xx, a refusal); and per-channel subscriptions by kind and by tag.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use axum::response::{IntoResponse, Response};
use control_plane::notify::{self, Notification};
use control_plane::tenants;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::eventually;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, WAIT};
use crate::notify::notify_config;

const ROUTING_KEY: &str = "R0UTINGKEY0123456789abcdefABCDEF";
const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// One scripted answer: status, headers, body.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>, String);

/// A request the provider stand-in received.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    at: Instant,
}

/// A local stand-in for a provider's API: records every request and answers from a script,
/// then with `fallback`.
#[derive(Clone)]
pub(crate) struct Provider {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    fallback: Answer,
    addr: SocketAddr,
}

impl Provider {
    pub(crate) async fn start(fallback: Answer, script: Vec<Answer>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider = Provider {
            hits: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
            fallback,
            addr: listener.local_addr().unwrap(),
        };
        async fn any(State(p): State<Provider>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            p.hits.lock().unwrap().push(Hit {
                path: uri.path().to_owned(),
                headers,
                body,
                at: Instant::now(),
            });
            let (status, headers, body) =
                p.script.lock().unwrap().pop_front().unwrap_or_else(|| p.fallback.clone());
            let mut response = (AxumStatus::from_u16(status).unwrap(), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        let app = axum::Router::new().fallback(any).with_state(provider.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        provider
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Hit> {
        eventually(WAIT, &format!("{n} requests"), || async {
            let hits = self.hits();
            (hits.len() >= n).then_some(hits)
        })
        .await
    }
}

pub(crate) fn ok(status: u16, body: &str) -> Answer {
    (status, Vec::new(), body.to_owned())
}

async fn tenant_of(app: &TestApp) -> Uuid {
    tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap().tenant_id
}

fn incident(tenant_id: Uuid, kind: &str, domain: Uuid, incident: Uuid, details: Value) -> Notification {
    Notification {
        kind: kind.into(),
        tenant_id,
        domain_id: Some(domain),
        url: Some("https://shop.example.com/health".into()),
        incident_id: Some(incident),
        summary: format!("https://shop.example.com/health {kind}"),
        details,
        occurred_at: chrono::Utc::now(),
    }
}

async fn enqueue(pool: &PgPool, notification: &Notification, dedup_key: &str) -> u64 {
    let mut tx = pool.begin().await.unwrap();
    let added = notify::enqueue(&mut tx, notification, dedup_key).await.unwrap();
    tx.commit().await.unwrap();
    added
}

async fn create_channel(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/channels", &app.token, &body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Waits for the notification with `dedup_key` to reach `state`; returns its attempts and error.
async fn wait_state(pool: &PgPool, dedup_key: &str, state: &str) -> (i32, Option<String>) {
    eventually(WAIT, &format!("{dedup_key} {state}"), || async {
        let row: Option<(String, i32, Option<String>)> =
            sqlx::query_as("SELECT state, attempts, last_error FROM notifications WHERE dedup_key = $1")
                .bind(dedup_key)
                .fetch_optional(pool)
                .await
                .unwrap();
        row.filter(|r| r.0 == state).map(|r| (r.1, r.2))
    })
    .await
}

fn is_rfc3339(value: &Value) -> bool {
    value.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

/// The Events API v2 shape (developer.pagerduty.com, "Send an Alert Event"): a 32-character
/// `routing_key`, `event_action` of trigger/acknowledge/resolve, a `dedup_key` of at most 255
/// characters, and for a trigger a `payload` with `summary` (≤ 1024), `source`, `severity`
/// (critical, error, warning or info) and optional RFC 3339 `timestamp`, `component`, `group`,
/// `class` and an object `custom_details`.
fn check_pagerduty_event(event: &Value) {
    assert_eq!(event["routing_key"].as_str().map(str::len), Some(32), "{event}");
    let action = event["event_action"].as_str().unwrap();
    assert!(["trigger", "acknowledge", "resolve"].contains(&action), "{event}");
    let dedup = event["dedup_key"].as_str().unwrap();
    assert!(!dedup.is_empty() && dedup.chars().count() <= 255, "{event}");
    if action == "trigger" {
        let payload = &event["payload"];
        let summary = payload["summary"].as_str().unwrap();
        assert!(!summary.is_empty() && summary.chars().count() <= 1024, "{event}");
        assert!(!payload["source"].as_str().unwrap().is_empty(), "{event}");
        assert!(["critical", "error", "warning", "info"].contains(&payload["severity"].as_str().unwrap()));
        assert!(is_rfc3339(&payload["timestamp"]), "{event}");
        assert!(
            payload["component"].is_string() && payload["group"].is_string() && payload["class"].is_string()
        );
        assert!(payload["custom_details"].is_object(), "{event}");
    }
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn pagerduty_triggers_and_resolves_one_alert_per_incident(pool: PgPool) {
    let accepted = r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#;
    let pd = Provider::start(ok(202, accepted), Vec::new()).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created = create_channel(
        &app,
        json!({"name": "on-call", "kind": "pagerduty", "routing_key": ROUTING_KEY, "url": pd.url("/v2/enqueue")}),
    )
    .await;
    assert!(created.get("routing_key").is_none() && created.get("secret").is_none(), "write-only: {created}");
    let id = created["id"].as_str().unwrap();
    let shown: Value = app.get(&format!("/v1/channels/{id}"), &app.token).await.json().await.unwrap();
    assert!(!shown.to_string().contains(ROUTING_KEY), "{shown}");

    let tenant = tenant_of(&app).await;
    let (domain, down, degraded) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    enqueue(&app.pool, &incident(tenant, "incident_opened", domain, down, json!({"regions": ["ams"]})), "o1")
        .await;
    wait_state(&app.pool, "o1", "delivered").await;
    enqueue(&app.pool, &incident(tenant, "incident_resolved", domain, down, json!({})), "r1").await;
    wait_state(&app.pool, "r1", "delivered").await;
    let warn =
        incident(tenant, "incident_opened", domain, degraded, json!({"incident": {"kind": "degraded"}}));
    enqueue(&app.pool, &warn, "o2").await;
    wait_state(&app.pool, "o2", "delivered").await;

    let hits = pd.wait_for(3).await;
    for hit in &hits {
        assert_eq!(hit.path, "/v2/enqueue");
        assert_eq!(hit.headers["content-type"], "application/json");
        check_pagerduty_event(&hit.body);
        assert_eq!(hit.body["routing_key"], ROUTING_KEY);
    }
    assert_eq!(hits[0].body["event_action"], "trigger");
    assert_eq!(hits[0].body["payload"]["severity"], "critical");
    assert_eq!(hits[1].body["event_action"], "resolve");
    assert_eq!(hits[1].body["dedup_key"], hits[0].body["dedup_key"], "the resolve closes the same alert");
    assert_eq!(hits[2].body["payload"]["severity"], "warning", "a degraded incident");
    assert_ne!(hits[2].body["dedup_key"], hits[0].body["dedup_key"]);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn provider_answers_map_to_retry_or_dead(pool: PgPool) {
    // 429 with Retry-After: 1, then 503, then accepted.
    let pd = Provider::start(
        ok(202, r#"{"status":"success"}"#),
        vec![(429, vec![("retry-after", "1".into())], "{}".into()), ok(503, "unavailable")],
    )
    .await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    create_channel(
        &app,
        json!({"name": "pd", "kind": "pagerduty", "routing_key": ROUTING_KEY, "url": pd.url("/v2/enqueue"),
            "storm_window_s": 0}),
    )
    .await;
    let tenant = tenant_of(&app).await;
    enqueue(&app.pool, &incident(tenant, "incident_opened", Uuid::new_v4(), Uuid::new_v4(), json!({})), "a")
        .await;
    let (attempts, _) = wait_state(&app.pool, "a", "delivered").await;
    assert_eq!(attempts, 3);
    let hits = pd.hits();
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(990),
        "Retry-After honoured: {:?}",
        hits[1].at - hits[0].at
    );

    // A refusal (400: an invalid event or routing key) is dead at once.
    pd.script
        .lock()
        .unwrap()
        .push_back(ok(400, r#"{"status":"invalid event","message":"Event object is invalid"}"#));
    enqueue(&app.pool, &incident(tenant, "incident_opened", Uuid::new_v4(), Uuid::new_v4(), json!({})), "b")
        .await;
    let (attempts, error) = wait_state(&app.pool, "b", "dead").await;
    assert_eq!(attempts, 1, "no retry of a refusal");
    assert!(error.unwrap().contains("400"));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"control_plane_notify_deliveries_total{kind="pagerduty",outcome="dead"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn teams_gets_an_adaptive_card(pool: PgPool) {
    let teams = Provider::start(ok(202, ""), vec![ok(502, "bad gateway")]).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    create_channel(&app, json!({"name": "teams", "kind": "teams", "url": teams.url("/webhookb2/x")})).await;
    let tenant = tenant_of(&app).await;
    let n = incident(
        tenant,
        "incident_opened",
        Uuid::new_v4(),
        Uuid::new_v4(),
        json!({"regions": ["ams", "iad"]}),
    );
    enqueue(&app.pool, &n, "t").await;
    let (attempts, _) = wait_state(&app.pool, "t", "delivered").await;
    assert_eq!(attempts, 2, "a 502 is retried");
    let body = &teams.hits()[1].body;
    // learn.microsoft.com, "Send Adaptive Cards using an Incoming Webhook": a message whose
    // attachments hold one card of contentType application/vnd.microsoft.card.adaptive.
    assert_eq!(body["type"], "message");
    let attachments = body["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &attachments[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(card["version"].as_str().unwrap().starts_with("1."));
    assert_eq!(card["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json");
    let blocks = card["body"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "TextBlock");
    assert_eq!(blocks[0]["text"], n.summary.as_str());
    let facts = blocks.iter().find(|b| b["type"] == "FactSet").unwrap()["facts"].as_array().unwrap().clone();
    assert!(facts.iter().all(|f| f["title"].is_string() && f["value"].is_string()));
    assert!(facts.iter().any(|f| f["value"] == "incident_opened"));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn discord_gets_an_embed_within_its_limits(pool: PgPool) {
    // Discord's 429 carries retry_after (seconds) in its JSON body.
    let discord = Provider::start(
        ok(204, ""),
        vec![(
            429,
            Vec::new(),
            r#"{"message":"You are being rate limited.","retry_after":0.5,"global":false}"#.into(),
        )],
    )
    .await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    create_channel(
        &app,
        json!({"name": "discord", "kind": "discord", "url": discord.url("/api/webhooks/1/x")}),
    )
    .await;
    let tenant = tenant_of(&app).await;
    let mut n = incident(
        tenant,
        "incident_opened",
        Uuid::new_v4(),
        Uuid::new_v4(),
        json!({"error": "e".repeat(3000)}),
    );
    n.summary = format!("@everyone {}", "s".repeat(2500));
    enqueue(&app.pool, &n, "d").await;
    let (attempts, _) = wait_state(&app.pool, "d", "delivered").await;
    assert_eq!(attempts, 2);
    let hits = discord.hits();
    assert!(hits[1].at - hits[0].at >= Duration::from_millis(490), "retry_after honoured");
    // discord.com/developers/docs/resources/webhook#execute-webhook and the embed limits.
    let body = &hits[1].body;
    assert!(body["content"].as_str().unwrap().chars().count() <= 2000);
    assert_eq!(body["allowed_mentions"]["parse"], json!([]), "no @everyone ping");
    let embeds = body["embeds"].as_array().unwrap();
    assert!(!embeds.is_empty() && embeds.len() <= 10);
    let embed = &embeds[0];
    let title = embed["title"].as_str().unwrap().chars().count();
    assert!(title <= 256);
    assert!(embed["color"].as_u64().unwrap() <= 0xFFFFFF);
    assert!(is_rfc3339(&embed["timestamp"]));
    let fields = embed["fields"].as_array().unwrap();
    assert!(fields.len() <= 25);
    let mut total = title + embed["footer"]["text"].as_str().unwrap().chars().count();
    for field in fields {
        let (name, value) = (field["name"].as_str().unwrap(), field["value"].as_str().unwrap());
        assert!(!name.is_empty() && name.chars().count() <= 256);
        assert!(!value.is_empty() && value.chars().count() <= 1024);
        total += name.chars().count() + value.chars().count();
    }
    assert!(total <= 6000, "{total}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn telegram_sends_a_message_and_keeps_the_token_out_of_errors(pool: PgPool) {
    let ok_answer = r#"{"ok":true,"result":{"message_id":1}}"#;
    let telegram = Provider::start(ok(200, ok_answer), Vec::new()).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created = create_channel(
        &app,
        json!({"name": "tg", "kind": "telegram", "bot_token": BOT_TOKEN, "chat_id": -1001234567890i64,
            "url": telegram.url("")}),
    )
    .await;
    assert!(!created.to_string().contains(BOT_TOKEN));
    let tenant = tenant_of(&app).await;
    let mut n = incident(tenant, "incident_opened", Uuid::new_v4(), Uuid::new_v4(), json!({}));
    n.summary = "😀".repeat(3000);
    enqueue(&app.pool, &n, "m").await;
    wait_state(&app.pool, "m", "delivered").await;
    let hit = &telegram.hits()[0];
    // core.telegram.org/bots/api#sendmessage: POST /bot<token>/sendMessage, chat_id an integer
    // or "@username", text 1-4096 characters.
    assert_eq!(hit.path, format!("/bot{BOT_TOKEN}/sendMessage"));
    assert_eq!(hit.body["chat_id"], -1001234567890i64);
    let text = hit.body["text"].as_str().unwrap();
    assert!(!text.is_empty() && text.encode_utf16().count() <= 4096);
    assert!(hit.body.get("parse_mode").is_none(), "plain text: nothing to escape");

    // "Bad Request: chat not found" is a refusal: dead at once, the token not in last_error.
    telegram
        .script
        .lock()
        .unwrap()
        .push_back(ok(400, r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#));
    enqueue(&app.pool, &incident(tenant, "incident_opened", Uuid::new_v4(), Uuid::new_v4(), json!({})), "n")
        .await;
    let (attempts, error) = wait_state(&app.pool, "n", "dead").await;
    assert_eq!(attempts, 1);
    let error = error.unwrap();
    assert!(error.contains("chat not found") && !error.contains(BOT_TOKEN), "{error}");
    // Telegram's 429 names its wait in parameters.retry_after.
    telegram.script.lock().unwrap().push_back(ok(
        429,
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#,
    ));
    enqueue(&app.pool, &incident(tenant, "incident_opened", Uuid::new_v4(), Uuid::new_v4(), json!({})), "p")
        .await;
    let (attempts, _) = wait_state(&app.pool, "p", "delivered").await;
    assert_eq!(attempts, 2);
    let hits = telegram.hits();
    let n = hits.len();
    assert!(hits[n - 1].at - hits[n - 2].at >= Duration::from_millis(990));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn ntfy_publishes_json_with_priority_and_token(pool: PgPool) {
    let ntfy = Provider::start(ok(200, r#"{"id":"x","event":"message"}"#), vec![ok(500, "oops")]).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created = create_channel(
        &app,
        json!({"name": "phones", "kind": "ntfy", "url": ntfy.url("/"), "topic": "crosscheck-ops", "token": "tk_secret123"}),
    )
    .await;
    assert!(!created.to_string().contains("tk_secret123"));
    let tenant = tenant_of(&app).await;
    let (domain, id) = (Uuid::new_v4(), Uuid::new_v4());
    enqueue(&app.pool, &incident(tenant, "incident_opened", domain, id, json!({})), "up").await;
    let (attempts, _) = wait_state(&app.pool, "up", "delivered").await;
    assert_eq!(attempts, 2, "a 500 is retried");
    enqueue(&app.pool, &incident(tenant, "incident_resolved", domain, id, json!({})), "down").await;
    wait_state(&app.pool, "down", "delivered").await;
    let hits = ntfy.hits();
    // docs.ntfy.sh/publish/#publish-as-json: POST to the root with topic, message, title,
    // priority 1-5, tags; access tokens as "Authorization: Bearer".
    for hit in &hits {
        assert_eq!(hit.path, "/");
        assert_eq!(hit.headers["authorization"], "Bearer tk_secret123");
        assert_eq!(hit.body["topic"], "crosscheck-ops");
        assert!(hit.body["message"].as_str().unwrap().len() <= 4096);
        assert!(hit.body["title"].is_string());
        assert!((1..=5).contains(&hit.body["priority"].as_u64().unwrap()));
        assert!(hit.body["tags"].as_array().unwrap().iter().all(Value::is_string));
    }
    assert_eq!(hits[1].body["priority"], 5, "an outage is urgent");
    assert_eq!(hits[2].body["priority"], 3);

    // A PATCH without the token keeps it; one with a new token replaces it.
    let id = created["id"].as_str().unwrap();
    let patched = app.patch(&format!("/v1/channels/{id}"), &app.token, &json!({"name": "phones 2"})).await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched = app.patch(&format!("/v1/channels/{id}"), &app.token, &json!({"token": "tk_rotated"})).await;
    assert_eq!(patched.status(), StatusCode::OK);
    enqueue(&app.pool, &incident(tenant, "incident_opened", domain, Uuid::new_v4(), json!({})), "again")
        .await;
    wait_state(&app.pool, "again", "delivered").await;
    assert_eq!(ntfy.hits()[3].headers["authorization"], "Bearer tk_rotated");
    let bad = app.patch(&format!("/v1/channels/{id}"), &app.token, &json!({"topic": "no/slash"})).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad: Value = bad.json().await.unwrap();
    assert!(bad.to_string().contains("topic"), "{bad}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn subscriptions_filter_by_kind_and_tag_at_enqueue(pool: PgPool) {
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let receiver = Provider::start(ok(204, ""), Vec::new()).await;
    let channel = |name: &str, extra: Value| {
        let mut body = json!({"name": name, "kind": "discord", "url": receiver.url("/x"), "enabled": false});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let everything = create_channel(&app, channel("all", json!({}))).await;
    let resolved =
        create_channel(&app, channel("resolved", json!({"events": ["incident_resolved", "sla_report"]})))
            .await;
    let prod = create_channel(&app, channel("prod", json!({"tags": ["prod", "edge"]}))).await;
    assert_eq!(resolved["events"], json!(["incident_resolved", "sla_report"]));
    assert_eq!(everything["events"], Value::Null);
    // Disabled channels get nothing; enable them now.
    for c in [&everything, &resolved, &prod] {
        let id = c["id"].as_str().unwrap();
        assert_eq!(
            app.patch(&format!("/v1/channels/{id}"), &app.token, &json!({"enabled": true})).await.status(),
            StatusCode::OK
        );
    }
    let tagged =
        Uuid::parse_str(&app.create_domain(json!({"url": "https://prod.example.com"})).await).unwrap();
    let untagged =
        Uuid::parse_str(&app.create_domain(json!({"url": "https://staging.example.com"})).await).unwrap();
    sqlx::query("UPDATE domains SET tags = '{eu,edge}' WHERE id = $1")
        .bind(tagged)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE domains SET tags = '{staging}' WHERE id = $1")
        .bind(untagged)
        .execute(&app.pool)
        .await
        .unwrap();
    let tenant = tenant_of(&app).await;
    let n = |kind: &str, domain: Option<Uuid>| Notification {
        domain_id: domain,
        ..incident(tenant, kind, Uuid::nil(), Uuid::new_v4(), json!({}))
    };
    // One set-based statement for the whole batch.
    let batch = [
        (n("incident_opened", Some(tagged)), "opened-tagged"),
        (n("incident_opened", Some(untagged)), "opened-untagged"),
        (n("incident_resolved", Some(untagged)), "resolved-untagged"),
        (n("sla_report", None), "report"),
    ];
    let refs: Vec<(&Notification, &str)> = batch.iter().map(|(n, k)| (n, *k)).collect();
    let mut tx = app.pool.begin().await.unwrap();
    assert_eq!(notify::enqueue_many(&mut tx, &refs).await.unwrap(), 4 + 2 + 2);
    tx.commit().await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.name, n.dedup_key FROM notifications n JOIN channels c ON c.id = n.channel_id ORDER BY c.name, n.seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let got: Vec<(&str, &str)> = rows.iter().map(|(c, k)| (c.as_str(), k.as_str())).collect();
    assert_eq!(
        got,
        [
            ("all", "opened-tagged"),
            ("all", "opened-untagged"),
            ("all", "resolved-untagged"),
            ("all", "report"),
            ("prod", "opened-tagged"),
            ("prod", "report"),
            ("resolved", "resolved-untagged"),
            ("resolved", "report"),
        ]
    );
    // A channel test reaches a channel whatever it subscribes to.
    let id = resolved["id"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/v1/channels/{id}/test"), &app.token, &json!({})).await.status(),
        StatusCode::ACCEPTED
    );
    // Bad subscriptions are named.
    let bad = app
        .post("/v1/channels", &app.token, &channel("x", json!({"events": ["incident_open"], "tags": []})))
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad: Value = bad.json().await.unwrap();
    assert!(bad.to_string().contains("events") && bad.to_string().contains("tags"), "{bad}");
    // Clearing a subscription with null means everything again.
    let cleared: Value = app
        .patch(&format!("/v1/channels/{id}"), &app.token, &json!({"events": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["events"], Value::Null);
    app.stop().await;
}
