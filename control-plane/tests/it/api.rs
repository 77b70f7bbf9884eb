//! The REST API: validation, authentication, roles, tenant isolation, pagination.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{domain, TestApp};

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn create_get_update_pause_and_delete_a_domain(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app
        .create_domain(json!({
            "url": "https://example.com/health", "expected_status": "2xx", "keyword": "ok",
            "interval": "fast", "regions": ["ams", "sin"], "quorum": 2
        }))
        .await;

    let got: Value = app.get(&format!("/v1/domains/{id}"), &app.token).await.json().await.unwrap();
    assert_eq!(got["url"], "https://example.com/health");
    assert_eq!(got["interval"], "fast");
    assert_eq!(got["interval_s"], 30);
    assert_eq!(got["regions"], json!(["ams", "sin"]));
    assert_eq!(got["expected_status"], "200-299");

    let patched =
        app.patch(&format!("/v1/domains/{id}"), &app.token, &json!({"interval": 45, "keyword": null})).await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["interval"], 45);
    assert_eq!(patched["keyword"], Value::Null);
    assert_eq!(patched["regions"], json!(["ams", "sin"]), "a patch keeps fields it does not name");
    assert!(patched["config_version"].as_u64() > got["config_version"].as_u64());

    let paused: Value =
        app.post(&format!("/v1/domains/{id}/pause"), &app.token, &json!({})).await.json().await.unwrap();
    assert_eq!(paused["paused"], true);
    let resumed: Value =
        app.post(&format!("/v1/domains/{id}/resume"), &app.token, &json!({})).await.json().await.unwrap();
    assert_eq!(resumed["paused"], false);

    assert_eq!(app.delete(&format!("/v1/domains/{id}"), &app.token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/v1/domains/{id}"), &app.token).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/v1/domains/{id}"), &app.token).await.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn keyword_modes_are_stored_published_and_validated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app
        .create_domain(json!({
            "url": "https://example.com/", "keyword": "build v\\d+", "keyword_mode": "regex",
            "keyword_case_insensitive": true
        }))
        .await;
    let got: Value = app.get(&format!("/v1/domains/{id}"), &app.token).await.json().await.unwrap();
    assert_eq!(
        (&got["keyword"], &got["keyword_mode"], &got["keyword_case_insensitive"]),
        (&json!("build v\\d+"), &json!("regex"), &json!(true))
    );
    // Agents get the check as an object; an agent that only knows `keyword` sees no check.
    let config: Value = sqlx::query_scalar("SELECT config FROM config_changes ORDER BY version DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        config["keyword_check"],
        json!({"pattern": "build v\\d+", "mode": "regex", "case_insensitive": true})
    );
    assert!(config.get("keyword").is_none(), "{config}");

    let response =
        app.patch(&format!("/v1/domains/{id}"), &app.token, &json!({"keyword": "(unclosed"})).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["fields"]["keyword"].as_str().unwrap();
    assert!(message.starts_with("not a valid regular expression"), "{body}");

    let plain: Value = app
        .patch(
            &format!("/v1/domains/{id}"),
            &app.token,
            &json!({"keyword": "OK", "keyword_mode": null, "keyword_case_insensitive": null}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&plain["keyword_mode"], &plain["keyword_case_insensitive"]),
        (&json!("contains"), &json!(false))
    );
    let config: Value = sqlx::query_scalar("SELECT config FROM config_changes ORDER BY version DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(config["keyword"], "OK", "a plain check is the string every agent reads");

    let cleared: Value = app
        .patch(&format!("/v1/domains/{id}"), &app.token, &json!({"keyword": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((&cleared["keyword"], &cleared["keyword_mode"]), (&Value::Null, &Value::Null));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn invalid_requests_name_every_bad_field_and_write_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let version_before = app.pg_version().await;
    let response = app
        .post(
            "/v1/domains",
            &app.token,
            &json!({"url": "gopher://x", "method": "TRACE", "interval": 0, "regions": ["mars"], "colour": 1}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields = body["error"]["fields"].as_object().unwrap();
    for field in ["url", "method", "interval", "regions", "colour"] {
        assert!(fields.contains_key(field), "{field} missing from {body}");
    }

    // A literal private address is refused by default.
    let response = app.post("/v1/domains", &app.token, &domain("http://127.0.0.1:8080/")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["fields"]["url"].as_str().unwrap().contains("loopback"), "{body}");

    // Not JSON, not an object, wrong content type, too large.
    let raw = app
        .http
        .post(app.url("/v1/domains"))
        .bearer_auth(&app.token)
        .header("content-type", "application/json");
    assert_eq!(raw.try_clone().unwrap().body("{").send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(raw.try_clone().unwrap().body("[1]").send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    let text = app.http.post(app.url("/v1/domains")).bearer_auth(&app.token).body("{}").send().await.unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({"url": "https://example.com", "keyword": "k".repeat(200 * 1024)}).to_string();
    let response = raw.body(huge).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // A bad patch leaves the domain and the change log untouched.
    let id = app.create_domain(domain("https://example.com")).await;
    let version_after_create = app.pg_version().await;
    assert_eq!(version_after_create, version_before + 1);
    let response = app.patch(&format!("/v1/domains/{id}"), &app.token, &json!({"interval": 5_000_000})).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.pg_version().await, version_after_create);
    // Only keyword and quorum can be cleared; null elsewhere is refused, not a reset.
    let response =
        app.patch(&format!("/v1/domains/{id}"), &app.token, &json!({"paused": null, "regions": null})).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["fields"]["paused"].as_str().unwrap().contains("null"), "{body}");
    assert!(body["error"]["fields"]["regions"].is_string(), "{body}");
    assert_eq!(app.pg_version().await, version_after_create);
    let log: i64 =
        sqlx::query_scalar("SELECT count(*) FROM config_changes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(log, 1);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn every_route_needs_a_valid_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for token in ["", "cc_not-a-real-token", "Basic abc"] {
        let response = app.get("/v1/domains", token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    let no_header = app.http.get(app.url("/v1/regions")).send().await.unwrap();
    assert_eq!(no_header.status(), StatusCode::UNAUTHORIZED);
    let unknown_route = app.get("/v1/nothing-here", &app.token).await;
    assert_eq!(unknown_route.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn read_only_tokens_read_but_cannot_write_and_revoked_tokens_stop_working(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.create_domain(domain("https://example.com")).await;
    let created: Value = app
        .post("/v1/tokens", &app.token, &json!({"name": "dashboard", "role": "read_only"}))
        .await
        .json()
        .await
        .unwrap();
    let reader = created["token"].as_str().unwrap().to_owned();

    assert_eq!(app.get(&format!("/v1/domains/{id}"), &reader).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/domains", &reader).await.status(), StatusCode::OK);
    let write = app.post("/v1/domains", &reader, &domain("https://example.org")).await;
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&format!("/v1/domains/{id}"), &reader).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.get("/v1/tokens", &reader).await.status(), StatusCode::FORBIDDEN);

    let listed: Value = app.get("/v1/tokens", &app.token).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&reader), "token secrets are never listed");

    let token_id = created["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/tokens/{token_id}"), &app.token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get("/v1/domains", &reader).await.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn another_tenants_domains_are_invisible(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.create_domain(domain("https://example.com")).await;
    let other = app.other_tenant().await;

    assert_eq!(app.get(&format!("/v1/domains/{id}"), &other).await.status(), StatusCode::NOT_FOUND);
    let patch = app.patch(&format!("/v1/domains/{id}"), &other, &json!({"paused": true})).await;
    assert_eq!(patch.status(), StatusCode::NOT_FOUND);
    let pause = app.post(&format!("/v1/domains/{id}/pause"), &other, &json!({})).await;
    assert_eq!(pause.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/v1/domains/{id}"), &other).await.status(), StatusCode::NOT_FOUND);
    let listed: Value = app.get("/v1/domains", &other).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));

    let mine: Value = app.get(&format!("/v1/domains/{id}"), &app.token).await.json().await.unwrap();
    assert_eq!(mine["paused"], false, "the other tenant changed nothing");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn listing_pages_through_every_domain_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut created = Vec::new();
    for i in 0..6 {
        created.push(app.create_domain(domain(&format!("https://example.com/{i}"))).await);
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        pages += 1;
        let page: Value =
            app.get(&format!("/v1/domains?limit=3&cursor={cursor}"), &app.token).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, created);
    assert_eq!(pages, 2, "an exactly full last page has no next cursor");
    let zero = app.get("/v1/domains?limit=0", &app.token).await;
    assert_eq!(zero.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(zero.json::<Value>().await.unwrap()["error"]["fields"]["limit"].is_string());
    let bogus = app.get("/v1/domains?limit=10&bogus=1", &app.token).await;
    assert_eq!(bogus.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bogus.json::<Value>().await.unwrap()["error"]["fields"]["bogus"], "unknown query parameter");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn regions_come_from_configuration_and_ops_endpoints_answer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let regions: Value = app.get("/v1/regions", &app.token).await.json().await.unwrap();
    let names: Vec<_> =
        regions["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ams", "iad", "sin"]);

    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    app.get("/v1/regions", &app.token).await;
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("control_plane_http_requests_total{"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/regions\""), "{metrics}");
    assert!(metrics.contains("control_plane_config_published_total"), "{metrics}");
    app.stop().await;
}
