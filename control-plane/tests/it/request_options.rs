//! A domain's request options through the API: methods, headers, basic and bearer
//! authentication and a body. Secrets are write-only (no answer, list, log line or `Debug`
//! output shows them; an update without them keeps them) and reach agents in the published
//! configuration; every bad input is a 422 naming its field.

use std::sync::{Arc, Mutex};

use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::TestApp;

const PASSWORD: &str = "pw-secret-1";
const API_KEY: &str = "key-secret-1";
const COOKIE: &str = "sid=cookie-secret-1";
const BODY: &str = "{\"login\":\"body-secret-1\"}";
const TOKEN: &str = "token-secret-2";

/// Every log line of this thread while the guard lives (`#[sqlx::test]` runs a current-thread
/// runtime, so the control plane spawned by the test logs here).
struct CapturedLogs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
    /// A second registered dispatcher. With only one, tracing asks the *calling thread's*
    /// subscriber whether a new callsite is of interest, so a callsite first reached by another
    /// test's thread would be cached as uninteresting for this one too.
    _second: tracing::Dispatch,
}

impl CapturedLogs {
    fn install() -> Self {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(lines.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        Self { lines, _guard: tracing::subscriber::set_default(subscriber), _second: second }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, API_KEY, "cookie-secret-1", "body-secret-1", TOKEN] {
        assert!(!text.contains(secret), "{secret} in {what}: {text}");
    }
}

async fn published(app: &TestApp, id: &str) -> Value {
    app.wait_published(app.pg_version().await).await;
    let raw: String = app.redis.hget(format!("{}:domains", app.prefix()), id).await.unwrap();
    serde_json::from_str(&raw).unwrap()
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn secrets_are_write_only_and_reach_agents_in_the_published_config(pool: PgPool) {
    let logs = CapturedLogs::install();
    let app = TestApp::spawn(pool).await;
    let (status, created) = json_of(
        app.post(
            "/v1/domains",
            &app.token,
            &json!({
                "url": "https://example.com/login", "method": "post", "keyword": "welcome",
                "headers": [
                    {"name": "Content-Type", "value": "application/json"},
                    {"name": "X-Api-Key", "value": API_KEY},
                    {"name": "Cookie", "value": COOKIE},
                    {"name": "X-Plain-Token-Name", "value": "shown-anyway", "secret": false}
                ],
                "auth": {"kind": "basic", "username": "ops", "password": PASSWORD},
                "body": BODY, "body_secret": true
            }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["method"], "POST");
    assert_eq!(
        created["headers"],
        json!([
            {"name": "Content-Type", "value": "application/json", "secret": false},
            {"name": "X-Api-Key", "secret": true, "value_set": true},
            {"name": "Cookie", "secret": true, "value_set": true},
            {"name": "X-Plain-Token-Name", "value": "shown-anyway", "secret": false}
        ])
    );
    assert_eq!(created["auth"], json!({"kind": "basic", "username": "ops", "password_set": true}));
    assert_eq!((&created["body"], &created["body_secret"]), (&Value::Null, &json!(true)));
    assert_no_secret("the created answer", &created.to_string());

    let got = app.get(&format!("/v1/domains/{id}"), &app.token).await.text().await.unwrap();
    let listed = app.get("/v1/domains", &app.token).await.text().await.unwrap();
    assert!(got.contains("password_set") && listed.contains("password_set"));
    assert_no_secret("GET", &got);
    assert_no_secret("the list", &listed);

    // Agents receive every secret in the published configuration.
    let config = published(&app, &id).await;
    assert!(config.get("method").is_none(), "an older agent skips what it cannot send: {config}");
    let request = &config["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["auth"], json!({"kind": "basic", "username": "ops", "password": PASSWORD}));
    assert_eq!(request["headers"][1], json!({"name": "X-Api-Key", "value": API_KEY, "secret": true}));
    assert_eq!(request["headers"][2]["value"], COOKIE);
    assert_eq!(request["body"], json!({"text": BODY, "secret": true}));

    // An update without the secrets keeps them; the answer still shows none.
    let (status, patched) = json_of(
        app.patch(
            &format!("/v1/domains/{id}"),
            &app.token,
            &json!({
                "headers": [{"name": "x-api-key"}, {"name": "Cookie"}, {"name": "X-Trace", "value": "1"}],
                "auth": {"kind": "basic", "username": "ops2"},
                "timeout_ms": 4000
            }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_no_secret("the patched answer", &patched.to_string());
    assert_eq!(patched["auth"]["username"], "ops2");
    let request = published(&app, &id).await["request"].clone();
    assert_eq!(request["auth"], json!({"kind": "basic", "username": "ops2", "password": PASSWORD}));
    assert_eq!(request["headers"][0], json!({"name": "x-api-key", "value": API_KEY, "secret": true}));
    assert_eq!(request["headers"][1]["value"], COOKIE);
    assert_eq!(request["body"]["text"], BODY, "untouched fields stay");

    // A field the patch does not name keeps its secret; a new token replaces the basic auth.
    let (status, bearer) = json_of(
        app.patch(
            &format!("/v1/domains/{id}"),
            &app.token,
            &json!({"auth": {"kind": "bearer", "token": TOKEN}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{bearer}");
    assert_eq!(bearer["auth"], json!({"kind": "bearer", "token_set": true}));
    assert_eq!(bearer["headers"].as_array().unwrap().len(), 3);
    let request = published(&app, &id).await["request"].clone();
    assert_eq!(request["auth"], json!({"kind": "bearer", "token": TOKEN}));

    // The domain model never prints a secret either.
    let tenant: uuid::Uuid = sqlx::query_scalar("SELECT tenant_id FROM domains WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let stored = control_plane::domains::store::get(&app.pool, tenant, id.parse().unwrap()).await.unwrap();
    assert_no_secret("Debug of the stored domain", &format!("{stored:?} {:?}", stored.agent_config()));

    // Clearing: back to a plain GET, which every agent reads as the `method` string.
    let (status, cleared) = json_of(
        app.patch(
            &format!("/v1/domains/{id}"),
            &app.token,
            &json!({"method": "GET", "headers": null, "auth": null, "body": null}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(
        (&cleared["headers"], &cleared["auth"], &cleared["body"], &cleared["body_secret"]),
        (&json!([]), &Value::Null, &Value::Null, &json!(false))
    );
    let config = published(&app, &id).await;
    assert_eq!(config["method"], "GET");
    assert!(config.get("request").is_none(), "{config}");

    app.stop().await;
    let logged = logs.text();
    assert!(
        logged.contains("domain created"),
        "the capture sees the control plane's logs: {}",
        &logged[..logged.len().min(3000)]
    );
    assert_no_secret("the logs", &logged);
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn bad_request_options_are_refused_naming_each_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let version = app.pg_version().await;
    let bad = |injected: &str, password: String| {
        json!({
            "url": "https://example.com/", "method": "GET", "body": BODY,
            "headers": [
                {"name": "Host", "value": "other.example"},
                {"name": "X-Injected", "value": injected},
                {"name": "Authorization", "value": "Basic x", "secret": false},
                {"name": "Accept-Encoding", "value": "identity"}
            ],
            "auth": {"kind": "basic", "username": "a:b", "password": password},
        })
    };
    // Control characters are refused at the edge, before anything else is looked at.
    let (status, body) = json_of(
        app.post(
            "/v1/domains",
            &app.token,
            &bad(&format!("a\r\nX-Evil: {API_KEY}"), format!("{PASSWORD}\n")),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let names: Vec<&str> = body["error"]["fields"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(names, ["auth.password", "headers[1].value"], "{body}");
    assert_no_secret("the 422", &body.to_string());
    // Without them, every other bad field is named at once.
    let (status, body) =
        json_of(app.post("/v1/domains", &app.token, &bad("a", PASSWORD.to_owned())).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = &body["error"]["fields"];
    let names: Vec<&str> = fields.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["auth.username", "body", "headers[0].name", "headers[2].secret", "headers[3].name"],
        "{body}"
    );
    assert_eq!(fields["body"], "only POST, PUT and PATCH send a body, not GET");
    assert!(fields["headers[3].name"].as_str().unwrap().starts_with("Accept-Encoding cannot be set"));
    assert_no_secret("the 422", &body.to_string());

    for (request, field) in [
        (json!({"method": "TRACE"}), "method"),
        (json!({"auth": {"kind": "bearer"}}), "auth.token"),
        (json!({"auth": {"kind": "ntlm"}}), "auth.kind"),
        (json!({"headers": "X-A: 1"}), "headers"),
        (json!({"method": "PUT", "body": "x".repeat(16 * 1024 + 1)}), "body"),
        (json!({"method": "POST", "body": "x", "body_secret": "yes"}), "body_secret"),
        (
            json!({"auth": {"kind": "bearer", "token": TOKEN}, "headers": [{"name": "authorization", "value": "x"}]}),
            "auth",
        ),
    ] {
        let mut request = request;
        request["url"] = json!("https://example.com/");
        let (status, body) = json_of(app.post("/v1/domains", &app.token, &request).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{request}");
        assert!(body["error"]["fields"].get(field).is_some(), "{field} not named: {body}");
        assert_no_secret("a 422", &body.to_string());
    }
    assert_eq!(app.pg_version().await, version, "nothing was written");

    // An update cannot reveal a kept secret, nor keep one that was never stored.
    let id = app
        .create_domain(
            json!({"url": "https://example.com/", "headers": [{"name": "X-Api-Key", "value": API_KEY}]}),
        )
        .await;
    for (patch, field) in [
        (json!({"headers": [{"name": "X-Api-Key", "secret": false}]}), "headers[0].value"),
        (json!({"headers": [{"name": "X-Other"}]}), "headers[0].value"),
        (json!({"auth": {"kind": "basic", "username": "u"}}), "auth.password"),
        (json!({"method": "DELETE", "body": "x"}), "body"),
    ] {
        let (status, body) = json_of(app.patch(&format!("/v1/domains/{id}"), &app.token, &patch).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}");
        assert!(body["error"]["fields"].get(field).is_some(), "{field} not named: {body}");
    }
    app.stop().await;
}
