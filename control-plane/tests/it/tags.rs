//! Domain tags: stored normalized, returned, filterable, validated by name, tenant-scoped, and
//! changed without a new agent configuration version.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::TestApp;

async fn ids_tagged(app: &TestApp, token: &str, tag: &str) -> Vec<String> {
    let response = app.get(&format!("/v1/domains?tag={tag}"), token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let mut ids: Vec<String> =
        body["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn tags_are_stored_normalized_filtered_and_scoped(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let a = app.create_domain(json!({"url": "https://a.example.com/", "tags": ["Prod", "eu", "prod"]})).await;
    let b = app.create_domain(json!({"url": "https://b.example.com/", "tags": ["prod"]})).await;
    let c = app.create_domain(json!({"url": "https://c.example.com/"})).await;

    let got: Value = app.get(&format!("/v1/domains/{a}"), &app.token).await.json().await.unwrap();
    assert_eq!(got["tags"], json!(["eu", "prod"]));
    let got: Value = app.get(&format!("/v1/domains/{c}"), &app.token).await.json().await.unwrap();
    assert_eq!(got["tags"], json!([]));

    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(ids_tagged(&app, &app.token, "prod").await, both);
    assert_eq!(ids_tagged(&app, &app.token, "PROD").await, both, "the filter is normalized too");
    assert_eq!(ids_tagged(&app, &app.token, "eu").await, vec![a.clone()]);
    assert!(ids_tagged(&app, &app.token, "staging").await.is_empty());

    let bad = app.get("/v1/domains?tag=not%20a%20tag", &app.token).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = bad.json().await.unwrap();
    assert!(body.to_string().contains("\"tag\""), "{body}");

    // Another tenant's tagged domains are not listed.
    let other = app.other_tenant().await;
    assert!(ids_tagged(&app, &other, "prod").await.is_empty());

    // Changing tags alone publishes nothing new to agents.
    let before: Value = app.get(&format!("/v1/domains/{b}"), &app.token).await.json().await.unwrap();
    let patched = app.patch(&format!("/v1/domains/{b}"), &app.token, &json!({"tags": ["staging"]})).await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["tags"], json!(["staging"]));
    assert_eq!(patched["config_version"], before["config_version"]);
    assert_eq!(ids_tagged(&app, &app.token, "prod").await, vec![a.clone()]);

    let invalid = app.patch(&format!("/v1/domains/{b}"), &app.token, &json!({"tags": ["ok", "-bad"]})).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = invalid.json().await.unwrap();
    assert!(body.to_string().contains("tags[1]"), "{body}");
    app.stop().await;
}
