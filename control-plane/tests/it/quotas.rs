//! Tenant quotas: unlimited by default; domains, channels and the minimum interval refused with
//! 422 naming the quota (also under concurrent creates); the request rate with 429 and
//! `Retry-After`; set and cleared through `control-plane set-quota`, shown by `GET /v1/tenant`.

use control_plane::quotas::{self, Change};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{agents_config, TestApp};

async fn spawn(pool: PgPool) -> TestApp {
    let prefix = shared::testing::random_prefix("quota");
    TestApp::spawn_with(
        pool,
        control_plane::Config { notify_dispatch: false, ..agents_config(&prefix, "redis://127.0.0.1:6379") },
    )
    .await
}

/// The tenant of the app's token, read without a request (which would take from its rate).
async fn tenant_of(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT tenant_id FROM api_tokens WHERE token_hash = sha256($1)")
        .bind(app.token.as_bytes())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn set(app: &TestApp, change: Change) {
    quotas::set(&app.pool, tenant_of(app).await, change).await.unwrap().expect("the tenant exists");
}

fn domain(n: usize) -> Value {
    json!({"url": format!("http://192.0.2.{}/", n % 250 + 1), "name": format!("d{n}"), "interval": 10})
}

/// The 422 of a quota: code `quota_exceeded`, the quota as the field, the rule as the message.
async fn assert_quota(response: reqwest::Response, field: &str, message: &str) {
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(body["error"]["message"], message, "{body}");
    assert_eq!(body["error"]["fields"], json!({ field: message }), "{body}");
}

#[sqlx::test]
async fn quotas_are_unlimited_by_default_and_shown_by_the_tenant(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant: Value = app.get("/v1/tenant", &app.token).await.json().await.unwrap();
    assert_eq!(
        tenant["quotas"],
        json!({"max_domains": null, "min_interval_s": null, "max_channels": null, "requests_per_minute": null})
    );
    for n in 0..30 {
        app.create_domain(domain(n)).await;
    }
    set(&app, Change { max_domains: Some(Some(100)), min_interval_s: Some(Some(5)), ..Change::default() })
        .await;
    let tenant: Value = app.get("/v1/tenant", &app.token).await.json().await.unwrap();
    assert_eq!(
        tenant["quotas"],
        json!({"max_domains": 100, "min_interval_s": 5, "max_channels": null, "requests_per_minute": null})
    );
    app.stop().await;
}

/// At most `max_domains`: the next create is refused naming the quota, a deletion makes room,
/// and 20 creates at once leave exactly the quota's number (the tenant row is locked while
/// counting).
#[sqlx::test]
async fn the_domain_quota_holds_under_concurrent_creates(pool: PgPool) {
    let app = spawn(pool).await;
    set(&app, Change { max_domains: Some(Some(2)), ..Change::default() }).await;
    let first = app.create_domain(domain(1)).await;
    app.create_domain(domain(2)).await;
    let refused = app.post("/v1/domains", &app.token, &domain(3)).await;
    assert_quota(refused, "quota.max_domains", "tenant quota: at most 2 domains").await;
    assert_eq!(
        app.delete(&format!("/v1/domains/{first}"), &app.token).await.status(),
        StatusCode::NO_CONTENT
    );
    app.create_domain(domain(3)).await;

    // Another tenant is not limited by this one's quota.
    let other = app.other_tenant().await;
    assert_eq!(app.post("/v1/domains", &other, &domain(4)).await.status(), StatusCode::CREATED);

    set(&app, Change { max_domains: Some(Some(7)), ..Change::default() }).await;
    let shared = &app;
    let answers = join_all((10..30).map(|n| {
        let body = domain(n);
        async move { shared.post("/v1/domains", &shared.token, &body).await.status() }
    }))
    .await;
    let created = answers.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = answers.iter().filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY).count();
    assert_eq!((created, refused), (5, 15), "{answers:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM domains WHERE tenant_id = $1")
        .bind(tenant_of(&app).await)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 7);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("control_plane_quota_refusals_total{quota=\"max_domains\"} 16"), "{metrics}");
    app.stop().await;
}

/// A domain's interval may not be below the tenant's minimum, on create or update.
#[sqlx::test]
async fn the_minimum_interval_applies_to_creates_and_updates(pool: PgPool) {
    let app = spawn(pool).await;
    let fast = app.create_domain(json!({"url": "http://192.0.2.1/", "interval": 10})).await;
    set(&app, Change { min_interval_s: Some(Some(60)), ..Change::default() }).await;
    let message = "tenant quota: a domain's interval must be at least 60 s";
    let refused =
        app.post("/v1/domains", &app.token, &json!({"url": "http://192.0.2.2/", "interval": 30})).await;
    assert_quota(refused, "quota.min_interval_s", message).await;
    app.create_domain(json!({"url": "http://192.0.2.2/", "interval": 60})).await;
    // An existing faster domain must slow down with its next update, like any other rule.
    let refused = app.patch(&format!("/v1/domains/{fast}"), &app.token, &json!({"name": "x"})).await;
    assert_quota(refused, "quota.min_interval_s", message).await;
    let slowed = app.patch(&format!("/v1/domains/{fast}"), &app.token, &json!({"interval": 120})).await;
    assert_eq!(slowed.status(), StatusCode::OK);
    // Pausing is not refused.
    let paused = app.post(&format!("/v1/domains/{fast}/pause"), &app.token, &json!({})).await;
    assert_eq!(paused.status(), StatusCode::OK);
    app.stop().await;
}

/// At most `max_channels`, also when created at once.
#[sqlx::test]
async fn the_channel_quota_holds_under_concurrent_creates(pool: PgPool) {
    let app = spawn(pool).await;
    set(&app, Change { max_channels: Some(Some(3)), ..Change::default() }).await;
    let channel = |n: usize| json!({"name": format!("c{n}"), "kind": "webhook", "url": format!("https://hooks.example.com/{n}")});
    let shared = &app;
    let answers = join_all(
        (0..10)
            .map(|n| async move { shared.post("/v1/channels", &shared.token, &channel(n)).await.status() }),
    )
    .await;
    assert_eq!(answers.iter().filter(|s| **s == StatusCode::CREATED).count(), 3, "{answers:?}");
    let refused = app.post("/v1/channels", &app.token, &channel(99)).await;
    assert_quota(refused, "quota.max_channels", "tenant quota: at most 3 channels").await;
    set(&app, Change { max_channels: Some(None), ..Change::default() }).await;
    assert_eq!(app.post("/v1/channels", &app.token, &channel(100)).await.status(), StatusCode::CREATED);
    app.stop().await;
}

/// Over `requests_per_minute`: 429, `rate_limited`, `Retry-After`, the quota in the message;
/// every `/v1` request counts, each tenant has its own bucket.
#[sqlx::test]
async fn the_request_rate_is_limited_per_tenant(pool: PgPool) {
    let app = spawn(pool).await;
    set(&app, Change { requests_per_minute: Some(Some(5)), ..Change::default() }).await;
    for path in ["/v1/domains", "/v1/tenant", "/v1/channels", "/v1/domains", "/v1/regions"] {
        assert_eq!(app.get(path, &app.token).await.status(), StatusCode::OK, "{path}");
    }
    let refused = app.post("/v1/domains", &app.token, &domain(1)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&wait), "one request every 12 s: {wait}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tenant quota: at most 5 API requests per minute"),
        "{body}"
    );
    let other = app.other_tenant().await;
    assert_eq!(app.get("/v1/domains", &other).await.status(), StatusCode::OK);
    // A bad token is refused as before, not counted against anyone.
    assert_eq!(app.get("/v1/domains", "cc_nope").await.status(), StatusCode::UNAUTHORIZED);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("control_plane_quota_refusals_total{quota=\"requests_per_minute\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// `control-plane set-quota` sets, keeps what is not given, clears with `none`, and refuses a
/// bad value or an unknown tenant.
#[sqlx::test]
async fn set_quota_on_the_command_line(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant = tenant_of(&app).await;
    let database = app.pool.connect_options().get_database().unwrap().to_owned();
    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"));
        command
            .env("CROSSCHECK_DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{database}"))
            .env("CROSSCHECK_LOG_FORMAT", "text")
            .env_remove("CROSSCHECK_CONFIG")
            .arg("set-quota")
            .args(args);
        command.output().unwrap()
    };
    let id = tenant.to_string();
    let done =
        cli(&["--tenant", &id, "--max-domains", "100", "--min-interval-s", "30", "--max-channels", "5"]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).trim(),
        format!("tenant_id={id} max_domains=100 min_interval_s=30 max_channels=5 requests_per_minute=none")
    );
    let done = cli(&["--tenant", &id, "--max-domains", "none", "--requests-per-minute", "600"]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let tenant: Value = app.get("/v1/tenant", &app.token).await.json().await.unwrap();
    assert_eq!(
        tenant["quotas"],
        json!({"max_domains": null, "min_interval_s": 30, "max_channels": 5, "requests_per_minute": 600})
    );
    let bad = cli(&["--tenant", &id, "--min-interval-s", "0"]);
    assert_eq!(bad.status.code(), Some(64), "a usage error");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--min-interval-s") && stderr.contains("must be `none` or an integer from 1"),
        "{stderr}"
    );
    let unknown = cli(&["--tenant", &Uuid::now_v7().to_string(), "--max-domains", "1"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no tenant"));
    app.stop().await;
}
