//! Notifications end to end: channels API, the outbox dispatcher (retries, dead letters,
//! restarts, several replicas) and delivery to local receivers (an axum webhook receiver and a
//! minimal SMTP server written here).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use control_plane::config::StartTls;
use control_plane::notify::{self, Notification};
use control_plane::{tenants, Config};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use shared::testing::{eventually, random_prefix};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

use crate::helpers::{test_config, TestApp, WAIT};

pub(crate) fn notify_config() -> Config {
    Config {
        notify_allow_private: vec!["127.0.0.0/8".parse().unwrap()],
        notify_min_backoff_ms: 5,
        notify_max_backoff_ms: 50,
        notify_max_attempts: 3,
        notify_poll_ms: 100,
        notify_timeout_ms: 3_000,
        ..test_config(&random_prefix("cp"), "redis://127.0.0.1:6379")
    }
}

/// What a receiver got: headers and body of each request.
#[derive(Clone)]
struct Receiver {
    hits: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    status: Arc<AtomicU16>,
    addr: SocketAddr,
}

impl Receiver {
    async fn start(status: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            hits: Arc::default(),
            status: Arc::new(AtomicU16::new(status)),
            addr: listener.local_addr().unwrap(),
        };
        async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxumStatus {
            r.hits.lock().unwrap().push((headers, body));
            AxumStatus::from_u16(r.status.load(Ordering::SeqCst)).unwrap()
        }
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    fn bodies(&self) -> Vec<Value> {
        self.hits.lock().unwrap().iter().map(|(_, body)| serde_json::from_slice(body).unwrap()).collect()
    }

    async fn wait_for(&self, n: usize) {
        eventually(WAIT, &format!("{n} deliveries"), || async { (self.count() >= n).then_some(()) }).await;
    }
}

async fn tenant_of(app: &TestApp) -> Uuid {
    tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap().tenant_id
}

fn notification(tenant_id: Uuid) -> Notification {
    Notification {
        kind: "incident_opened".into(),
        tenant_id,
        domain_id: Some(Uuid::new_v4()),
        url: Some("https://example.com/health".into()),
        incident_id: Some(Uuid::new_v4()),
        summary: "example.com is down (ams, iad: connect)".into(),
        details: json!({"regions": ["ams", "iad"], "error": "connect"}),
        occurred_at: chrono::Utc::now(),
    }
}

/// Enqueues in a transaction of its own, as a cause's transaction would; returns rows added.
async fn enqueue(pool: &PgPool, tenant_id: Uuid, dedup_key: &str) -> u64 {
    let mut tx = pool.begin().await.unwrap();
    let added = notify::enqueue(&mut tx, &notification(tenant_id), dedup_key).await.unwrap();
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

async fn state_of(pool: &PgPool, id: &str) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT state, attempts, last_error FROM notifications WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_state(pool: &PgPool, id: &str, state: &str) -> (String, i32, Option<String>) {
    eventually(WAIT, &format!("notification {state}"), || async {
        let row = state_of(pool, id).await;
        (row.0 == state).then_some(row)
    })
    .await
}

async fn only_notification(pool: &PgPool) -> String {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM notifications").fetch_one(pool).await.unwrap();
    id.to_string()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_webhook_delivery_is_signed_as_documented(pool: PgPool) {
    let receiver = Receiver::start(200).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created =
        create_channel(&app, json!({"name": "ops hook", "kind": "webhook", "url": receiver.url()})).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    let channel_id = created["id"].as_str().unwrap();
    let got: Value = app.get(&format!("/v1/channels/{channel_id}"), &app.token).await.json().await.unwrap();
    assert_eq!(got["url"], receiver.url().as_str());
    assert!(got.get("secret").is_none(), "the secret is shown once: {got}");
    let listed: Value = app.get("/v1/channels", &app.token).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(listed["items"][0].get("secret").is_none());

    let tenant = tenant_of(&app).await;
    assert_eq!(enqueue(&app.pool, tenant, "incident:1:opened").await, 1);
    receiver.wait_for(1).await;
    let id = only_notification(&app.pool).await;
    wait_state(&app.pool, &id, "delivered").await;

    let (headers, body) = receiver.hits.lock().unwrap()[0].clone();
    assert_eq!(headers["x-crosscheck-id"], id.as_str());
    let timestamp = headers["x-crosscheck-timestamp"].to_str().unwrap().to_owned();
    assert!((chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap()).abs() < 60);
    // The README's recipe: hex HMAC-SHA256 keyed with the secret over "<timestamp>.<body>".
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-crosscheck-signature"], expected.as_str());
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["dedup_key"], "incident:1:opened");
    assert_eq!(body["kind"], "incident_opened");
    assert_eq!(body["summary"], "example.com is down (ams, iad: connect)");
    assert_eq!(body["tenant_id"], tenant.to_string());

    let delivered: Value =
        app.get("/v1/notifications?state=delivered", &app.token).await.json().await.unwrap();
    assert_eq!(delivered["items"][0]["id"], id.as_str());
    assert_eq!(delivered["items"][0]["attempts"], 1);
    assert!(delivered["items"][0]["delivered_at"].is_string());
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"control_plane_notify_deliveries_total{kind="webhook",outcome="delivered"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("control_plane_notify_delivery_seconds_count{kind=\"webhook\"} 1"), "{metrics}");
    app.stop().await;
}

/// A minimal SMTP server: enough of RFC 5321 for one client without extensions. Collects the
/// DATA of each message.
/// [`notify_config`] sending email through the test SMTP receiver at `smtp` (no STARTTLS).
pub(crate) fn smtp_config(smtp: SocketAddr) -> Config {
    Config {
        smtp_host: Some(smtp.ip().to_string()),
        smtp_port: smtp.port(),
        smtp_starttls: StartTls::Off,
        smtp_from: Some("Crosscheck <alerts@example.com>".into()),
        ..notify_config()
    }
}

pub(crate) async fn smtp_receiver() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let messages: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = messages.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let command = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match command.as_str() {
                        "EHLO" | "HELO" => b"250 test\r\n",
                        "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                        "DATA" => {
                            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.unwrap();
                            let mut data = String::new();
                            loop {
                                line.clear();
                                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                data.push_str(&line);
                            }
                            store.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not implemented\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, messages)
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn an_email_channel_sends_text_and_html_over_smtp(pool: PgPool) {
    let (smtp, messages) = smtp_receiver().await;
    let config = smtp_config(smtp);
    let app = TestApp::spawn_with(pool, config).await;
    let created = create_channel(
        &app,
        json!({"name": "on call", "kind": "email", "to": ["oncall@example.com", "lead@example.com"]}),
    )
    .await;
    assert!(created.get("secret").is_none());
    assert_eq!(created["to"], json!(["oncall@example.com", "lead@example.com"]));

    let tenant = tenant_of(&app).await;
    enqueue(&app.pool, tenant, "incident:2:opened").await;
    eventually(WAIT, "an email", || async { messages.lock().unwrap().first().cloned() }).await;
    let id = only_notification(&app.pool).await;
    wait_state(&app.pool, &id, "delivered").await;
    let message = messages.lock().unwrap()[0].clone();
    assert!(message.contains("multipart/alternative"), "{message}");
    assert!(message.contains("Content-Type: text/plain"), "{message}");
    assert!(message.contains("Content-Type: text/html"), "{message}");
    assert!(message.contains("To: oncall@example.com, lead@example.com"), "{message}");
    assert!(message.contains(&format!("Message-ID: <{id}@crosscheck>")), "{message}");
    assert!(message.contains("example.com is down"), "{message}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn failures_retry_then_dead_letter_then_a_manual_retry_delivers(pool: PgPool) {
    let receiver = Receiver::start(500).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    create_channel(&app, json!({"name": "flaky", "kind": "webhook", "url": receiver.url()})).await;
    let tenant = tenant_of(&app).await;
    enqueue(&app.pool, tenant, "incident:3:opened").await;
    let id = only_notification(&app.pool).await;
    let (_, attempts, last_error) = wait_state(&app.pool, &id, "dead").await;
    assert_eq!(attempts, 3);
    assert!(last_error.unwrap().contains("500"));
    assert_eq!(receiver.count(), 3, "one request per attempt");

    let dead: Value = app.get("/v1/notifications?state=dead", &app.token).await.json().await.unwrap();
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    assert_eq!(dead["items"][0]["attempts"], 3);
    assert!(dead["items"][0]["last_error"].as_str().unwrap().contains("500"));
    let pending: Value = app.get("/v1/notifications?state=pending", &app.token).await.json().await.unwrap();
    assert!(pending["items"].as_array().unwrap().is_empty());
    let bad = app.get("/v1/notifications?state=lost", &app.token).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    receiver.status.store(200, Ordering::SeqCst);
    let retried = app.post(&format!("/v1/notifications/{id}/retry"), &app.token, &json!({})).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let (_, attempts, _) = wait_state(&app.pool, &id, "delivered").await;
    assert_eq!(attempts, 1, "attempts start again after a manual retry");
    assert_eq!(receiver.count(), 4);
    let again = app.post(&format!("/v1/notifications/{id}/retry"), &app.token, &json!({})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let missing =
        app.post(&format!("/v1/notifications/{}/retry", Uuid::new_v4()), &app.token, &json!({})).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_notification_committed_before_a_crash_is_delivered_once_after_restart(pool: PgPool) {
    let receiver = Receiver::start(200).await;
    let first = TestApp::spawn_with(pool.clone(), Config { notify_dispatch: false, ..notify_config() }).await;
    create_channel(&first, json!({"name": "hook", "kind": "webhook", "url": receiver.url()})).await;
    let tenant = tenant_of(&first).await;
    enqueue(&first.pool, tenant, "incident:4:opened").await;
    let id = only_notification(&first.pool).await;
    first.stop().await;
    assert_eq!(receiver.count(), 0, "nothing dispatches on the first replica");
    assert_eq!(state_of(&pool, &id).await.0, "pending");

    let second = TestApp::spawn_with(pool.clone(), notify_config()).await;
    receiver.wait_for(1).await;
    wait_state(&pool, &id, "delivered").await;
    // The row is no longer pending: another pass of the dispatcher has nothing to send.
    second.stop().await;
    assert_eq!(receiver.count(), 1);
    assert_eq!(receiver.bodies()[0]["id"], id.as_str());
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_claim_left_by_a_dead_replica_is_taken_over_when_its_lease_expires(pool: PgPool) {
    let receiver = Receiver::start(200).await;
    let first = TestApp::spawn_with(pool.clone(), Config { notify_dispatch: false, ..notify_config() }).await;
    create_channel(&first, json!({"name": "hook", "kind": "webhook", "url": receiver.url()})).await;
    enqueue(&first.pool, tenant_of(&first).await, "incident:7:opened").await;
    let id = only_notification(&first.pool).await;
    // What a claim leaves behind: one attempt counted, due again when the lease runs out.
    sqlx::query(
        "UPDATE notifications SET attempts = 1, next_attempt_at = now() + interval '300 milliseconds'",
    )
    .execute(&pool)
    .await
    .unwrap();
    first.stop().await;

    let second = TestApp::spawn_with(pool.clone(), notify_config()).await;
    let (_, attempts, _) = wait_state(&pool, &id, "delivered").await;
    assert_eq!(attempts, 2);
    second.stop().await;
    assert_eq!(receiver.count(), 1);
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn two_dispatchers_deliver_each_notification_once(pool: PgPool) {
    let receiver = Receiver::start(200).await;
    // Two replicas on one database, both dispatching; 40 notifications committed at once.
    let a = TestApp::spawn_with(pool.clone(), notify_config()).await;
    let b = TestApp::spawn_with(pool.clone(), notify_config()).await;
    create_channel(
        &a,
        json!({"name": "hook", "kind": "webhook", "url": receiver.url(), "storm_window_s": 0}),
    )
    .await;
    let tenant = tenant_of(&a).await;
    let mut tx = pool.begin().await.unwrap();
    for n in 0..40 {
        notify::enqueue(&mut tx, &notification(tenant), &format!("incident:{n}:opened")).await.unwrap();
    }
    tx.commit().await.unwrap();
    eventually(WAIT, "all delivered", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE state <> 'delivered'")
            .fetch_one(&pool)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
    let mut ids: Vec<String> =
        receiver.bodies().iter().map(|b| b["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 40);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "no notification was delivered twice");
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn dedup_tenants_test_route_and_channel_crud(pool: PgPool) {
    let receiver = Receiver::start(200).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created =
        create_channel(&app, json!({"name": "hook", "kind": "webhook", "url": receiver.url()})).await;
    let channel_id = created["id"].as_str().unwrap().to_owned();
    let tenant = tenant_of(&app).await;

    // The same dedup key twice: one row, one delivery.
    assert_eq!(enqueue(&app.pool, tenant, "cert:abc:14").await, 1);
    assert_eq!(enqueue(&app.pool, tenant, "cert:abc:14").await, 0);
    receiver.wait_for(1).await;
    let id = only_notification(&app.pool).await;
    wait_state(&app.pool, &id, "delivered").await;
    assert_eq!(receiver.count(), 1);

    // /test: 202 with the id, then delivered to this channel.
    let tested = app.post(&format!("/v1/channels/{channel_id}/test"), &app.token, &json!({})).await;
    assert_eq!(tested.status(), StatusCode::ACCEPTED);
    let tested: Value = tested.json().await.unwrap();
    let test_id = tested["notification_id"].as_str().unwrap().to_owned();
    receiver.wait_for(2).await;
    assert_eq!(receiver.bodies()[1]["id"], test_id.as_str());
    assert_eq!(receiver.bodies()[1]["kind"], "test");
    wait_state(&app.pool, &test_id, "delivered").await;

    // Another tenant sees none of it.
    let other = app.other_tenant().await;
    let listed: Value = app.get("/v1/channels", &other).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
    let path = format!("/v1/channels/{channel_id}");
    assert_eq!(app.get(&path, &other).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.patch(&path, &other, &json!({"enabled": false})).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&path, &other).await.status(), StatusCode::NOT_FOUND);
    let test_path = format!("{path}/test");
    assert_eq!(app.post(&test_path, &other, &json!({})).await.status(), StatusCode::NOT_FOUND);
    let theirs: Value = app.get("/v1/notifications", &other).await.json().await.unwrap();
    assert!(theirs["items"].as_array().unwrap().is_empty());
    let retry_path = format!("/v1/notifications/{id}/retry");
    assert_eq!(app.post(&retry_path, &other, &json!({})).await.status(), StatusCode::NOT_FOUND);
    let mine: Value = app.get("/v1/notifications", &app.token).await.json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);

    // Validation names every bad field; the kind cannot change.
    let bad =
        app.post("/v1/channels", &app.token, &json!({"kind": "pager", "url": 3, "colour": "red"})).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad: Value = bad.json().await.unwrap();
    for field in ["name", "kind", "colour"] {
        assert!(bad["error"]["fields"].get(field).is_some(), "{field}: {bad}");
    }
    let patched = app.patch(&path, &app.token, &json!({"kind": "slack"})).await;
    assert_eq!(patched.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let patched = app.patch(&path, &app.token, &json!({"name": "renamed", "enabled": false})).await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!((patched["name"].as_str(), patched["enabled"].as_bool()), (Some("renamed"), Some(false)));
    assert_eq!(patched["url"], receiver.url().as_str());
    // A disabled channel gets nothing new.
    assert_eq!(enqueue(&app.pool, tenant, "incident:9:opened").await, 0);
    assert_eq!(app.delete(&path, &app.token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &app.token).await.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_slack_channel_gets_a_text_rendering(pool: PgPool) {
    let receiver = Receiver::start(200).await;
    let app = TestApp::spawn_with(pool, notify_config()).await;
    let created =
        create_channel(&app, json!({"name": "#alerts", "kind": "slack", "url": receiver.url()})).await;
    assert!(created.get("secret").is_none(), "only webhooks are signed");
    let path = format!("/v1/channels/{}", created["id"].as_str().unwrap());
    let moved =
        app.patch(&path, &app.token, &json!({"url": "http://10.1.2.3/x", "to": ["a@example.com"]})).await;
    assert_eq!(moved.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let moved: Value = moved.json().await.unwrap();
    assert!(
        moved["error"]["fields"]["url"].is_string() && moved["error"]["fields"]["to"].is_string(),
        "{moved}"
    );

    enqueue(&app.pool, tenant_of(&app).await, "incident:6:opened").await;
    receiver.wait_for(1).await;
    let (headers, body) = receiver.hits.lock().unwrap()[0].clone();
    assert!(headers.get("x-crosscheck-signature").is_none());
    let body: Value = serde_json::from_slice(&body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("example.com is down (ams, iad: connect)\nkind: incident_opened"), "{text}");
    assert!(text.contains("url: https://example.com/health"), "{text}");
    assert!(text.contains("error: connect"), "{text}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn private_webhook_targets_are_refused_without_the_allow_list(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for url in ["http://10.0.0.1/hook", "http://127.0.0.1:9/hook", "http://[::1]/hook"] {
        let response =
            app.post("/v1/channels", &app.token, &json!({"name": "x", "kind": "webhook", "url": url})).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["fields"]["url"].as_str().unwrap().contains("address range"), "{body}");
    }
    let slack = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "x", "kind": "slack", "url": "http://192.168.1.1/x"}),
        )
        .await;
    assert_eq!(slack.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Email needs an SMTP server configured.
    let email = app
        .post("/v1/channels", &app.token, &json!({"name": "x", "kind": "email", "to": ["a@example.com"]}))
        .await;
    assert_eq!(email.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn delivery_refuses_a_name_that_resolves_to_a_blocked_address(pool: PgPool) {
    // `localhost` is refused at creation; a deployment with allow_private_targets accepts it,
    // but without it in notify_allow_private the resolver refuses every address at delivery.
    let config = Config { allow_private_targets: true, notify_allow_private: Vec::new(), ..notify_config() };
    let app = TestApp::spawn_with(pool, config).await;
    let receiver = Receiver::start(200).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    create_channel(&app, json!({"name": "x", "kind": "webhook", "url": url})).await;
    enqueue(&app.pool, tenant_of(&app).await, "incident:5:opened").await;
    let id = only_notification(&app.pool).await;
    let (_, _, last_error) = wait_state(&app.pool, &id, "dead").await;
    assert!(last_error.unwrap().contains("may not reach"));
    assert_eq!(receiver.count(), 0);
    app.stop().await;
}

/// A webhook receiver that answers 503 to every request while `down` is set, to requests
/// whose dedup key is in `refused`, and to every other request while `alternate` is set;
/// records each request's dedup key and its answer, in order of arrival.
#[derive(Clone)]
struct FlakyReceiver {
    seen: Arc<Mutex<Vec<(String, u16)>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    alternate: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl FlakyReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = FlakyReceiver {
            seen: Arc::default(),
            down: Arc::default(),
            alternate: Arc::default(),
            refused: Arc::default(),
            addr: listener.local_addr().unwrap(),
        };
        async fn hook(State(r): State<FlakyReceiver>, body: Bytes) -> AxumStatus {
            let body: Value = serde_json::from_slice(&body).unwrap();
            let key = body["dedup_key"].as_str().unwrap().to_owned();
            let mut seen = r.seen.lock().unwrap();
            let refuse = r.down.load(Ordering::SeqCst)
                || r.refused.lock().unwrap().contains(&key)
                || (r.alternate.load(Ordering::SeqCst) && seen.len() % 2 == 0);
            let status = if refuse { 503 } else { 200 };
            seen.push((key, status));
            drop(seen);
            AxumStatus::from_u16(status).unwrap()
        }
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<(String, u16)> {
        self.seen.lock().unwrap().clone()
    }

    /// The dedup keys accepted (answered 200), in order.
    fn accepted(&self) -> Vec<String> {
        self.seen().into_iter().filter(|(_, s)| *s == 200).map(|(k, _)| k).collect()
    }

    async fn wait_requests(&self, key: &str, n: usize) {
        eventually(WAIT, &format!("{n} requests for {key}"), || async {
            (self.seen().iter().filter(|(k, _)| k == key).count() >= n).then_some(())
        })
        .await;
    }
}

/// Retries spanning far more than the test takes, driven fast: backoff of a few milliseconds.
fn patient_config() -> Config {
    Config { notify_max_attempts: 0, notify_max_age_s: 3_600, ..notify_config() }
}

/// A notification about `domain`, enqueued in a transaction of its own.
async fn enqueue_for(pool: &PgPool, tenant_id: Uuid, domain: Uuid, kind: &str, dedup_key: &str) {
    let mut n = notification(tenant_id);
    n.domain_id = Some(domain);
    n.kind = kind.into();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(notify::enqueue(&mut tx, &n, dedup_key).await.unwrap(), 1);
    tx.commit().await.unwrap();
}

async fn states(pool: &PgPool) -> Vec<(String, String, i32)> {
    sqlx::query_as("SELECT dedup_key, state, attempts FROM notifications ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn wait_all_delivered(pool: &PgPool) -> Vec<(String, String, i32)> {
    eventually(WAIT, "every notification delivered", || async {
        let rows = states(pool).await;
        rows.iter().all(|r| r.1 == "delivered").then_some(rows)
    })
    .await
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_recovery_never_reaches_a_channel_before_its_outage_and_a_long_channel_outage_kills_nothing(
    pool: PgPool,
) {
    // The field case: the receiver answers 503 while the target goes down and comes back; with
    // the old defaults both notices went dead. Here the receiver is down for many more attempts
    // than the old limit (8), the recovery is enqueued in the middle of it, and both arrive, in
    // order, once the receiver is back.
    let receiver = FlakyReceiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let app = TestApp::spawn_with(pool, patient_config()).await;
    create_channel(
        &app,
        json!({"name": "hook", "kind": "webhook", "url": receiver.url(), "storm_window_s": 0}),
    )
    .await;
    let tenant = tenant_of(&app).await;
    let domain = Uuid::now_v7();
    enqueue_for(&app.pool, tenant, domain, "incident_opened", "incident:1:opened").await;
    receiver.wait_requests("incident:1:opened", 3).await;
    enqueue_for(&app.pool, tenant, domain, "incident_resolved", "incident:1:resolved").await;
    receiver.wait_requests("incident:1:opened", 12).await;
    assert!(
        receiver.seen().iter().all(|(k, _)| k == "incident:1:opened"),
        "the recovery was attempted while its outage was undelivered: {:?}",
        receiver.seen()
    );
    assert!(states(&app.pool).await.iter().all(|r| r.1 == "pending"), "nothing is dead");

    receiver.down.store(false, Ordering::SeqCst);
    let rows = wait_all_delivered(&app.pool).await;
    assert!(rows[0].2 > 8, "more attempts than the old limit, none dead: {rows:?}");
    assert_eq!(receiver.accepted(), ["incident:1:opened", "incident:1:resolved"]);
    let first_resolved = receiver.seen().iter().position(|(k, _)| k == "incident:1:resolved").unwrap();
    let last_opened = receiver.seen().iter().rposition(|(k, _)| k == "incident:1:opened").unwrap();
    assert!(last_opened < first_resolved, "{:?}", receiver.seen());
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn one_domains_stuck_notification_does_not_hold_up_other_domains(pool: PgPool) {
    let receiver = FlakyReceiver::start().await;
    receiver.refused.lock().unwrap().push("incident:a:opened".into());
    let app = TestApp::spawn_with(pool, patient_config()).await;
    create_channel(
        &app,
        json!({"name": "hook", "kind": "webhook", "url": receiver.url(), "storm_window_s": 0}),
    )
    .await;
    let tenant = tenant_of(&app).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    enqueue_for(&app.pool, tenant, a, "incident_opened", "incident:a:opened").await;
    enqueue_for(&app.pool, tenant, a, "incident_resolved", "incident:a:resolved").await;
    enqueue_for(&app.pool, tenant, b, "incident_opened", "incident:b:opened").await;
    enqueue_for(&app.pool, tenant, b, "incident_resolved", "incident:b:resolved").await;
    // Domain b's two go out, in order, while a's first keeps failing and its second waits.
    eventually(WAIT, "domain b delivered", || async {
        (receiver.accepted() == ["incident:b:opened", "incident:b:resolved"]).then_some(())
    })
    .await;
    receiver.wait_requests("incident:a:opened", 5).await;
    assert!(!receiver.seen().iter().any(|(k, _)| k == "incident:a:resolved"), "{:?}", receiver.seen());
    receiver.refused.lock().unwrap().clear();
    wait_all_delivered(&app.pool).await;
    let accepted = receiver.accepted();
    assert_eq!(&accepted[2..], ["incident:a:opened", "incident:a:resolved"], "{accepted:?}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn retries_stop_after_notify_max_age_s_and_a_dead_one_no_longer_holds_back_the_next(pool: PgPool) {
    let receiver = FlakyReceiver::start().await;
    receiver.refused.lock().unwrap().push("incident:1:opened".into());
    let config = Config { notify_max_attempts: 0, notify_max_age_s: 1, ..notify_config() };
    let app = TestApp::spawn_with(pool, config).await;
    create_channel(
        &app,
        json!({"name": "hook", "kind": "webhook", "url": receiver.url(), "storm_window_s": 0}),
    )
    .await;
    let tenant = tenant_of(&app).await;
    let domain = Uuid::now_v7();
    let started = std::time::Instant::now();
    enqueue_for(&app.pool, tenant, domain, "incident_opened", "incident:1:opened").await;
    enqueue_for(&app.pool, tenant, domain, "incident_resolved", "incident:1:resolved").await;
    let rows = eventually(WAIT, "the first dead, the second delivered", || async {
        let rows = states(&app.pool).await;
        (rows[0].1 == "dead" && rows[1].1 == "delivered").then_some(rows)
    })
    .await;
    // Dead by time, not by count: retried (many times, with millisecond backoff) for a second.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert!(rows[0].2 > 3, "{rows:?}");
    let first_resolved = receiver.seen().iter().position(|(k, _)| k == "incident:1:resolved").unwrap();
    let last_opened = receiver.seen().iter().rposition(|(k, _)| k == "incident:1:opened").unwrap();
    assert!(last_opened < first_resolved, "the second waited for the first to die: {:?}", receiver.seen());

    // The operator's retry of the dead one still works, with a fresh time span.
    receiver.refused.lock().unwrap().clear();
    let dead_id: Uuid = sqlx::query_scalar("SELECT id FROM notifications WHERE state = 'dead'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let retried = app.post(&format!("/v1/notifications/{dead_id}/retry"), &app.token, &json!({})).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let (_, attempts, _) = wait_state(&app.pool, &dead_id.to_string(), "delivered").await;
    assert_eq!(attempts, 1);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn two_dispatchers_keep_each_domains_order_through_intermittent_failures(pool: PgPool) {
    // Every other request is refused; two replicas dispatch at once; five domains each get four
    // notifications committed in order. Each domain's notifications arrive in that order.
    let receiver = FlakyReceiver::start().await;
    receiver.alternate.store(true, Ordering::SeqCst);
    let a = TestApp::spawn_with(pool.clone(), patient_config()).await;
    let b = TestApp::spawn_with(pool.clone(), patient_config()).await;
    create_channel(
        &a,
        json!({"name": "hook", "kind": "webhook", "url": receiver.url(), "storm_window_s": 0}),
    )
    .await;
    let tenant = tenant_of(&a).await;
    let domains: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for step in 0..4 {
        for (d, domain) in domains.iter().enumerate() {
            enqueue_for(&pool, tenant, *domain, "incident_opened", &format!("d{d}:{step}")).await;
        }
    }
    let rows = wait_all_delivered(&pool).await;
    assert_eq!(rows.len(), 20);
    let accepted = receiver.accepted();
    for d in 0..domains.len() {
        let mine: Vec<&String> = accepted.iter().filter(|k| k.starts_with(&format!("d{d}:"))).collect();
        let want: Vec<String> = (0..4).map(|step| format!("d{d}:{step}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "domain {d}: {accepted:?}");
    }
    a.stop().await;
    b.stop().await;
}
