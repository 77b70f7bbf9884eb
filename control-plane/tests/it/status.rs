//! Public status pages: the tenant's API (validation, isolation), the public HTML / JSON /
//! Atom forms (what they show and never show), incident updates, custom hostnames, and the
//! page's live stream (its components only, resumable from a cached page's position).

use chrono::Utc;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use shared::testing::random_prefix;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{observed, test_config, SseClient, TestApp, WAIT};

async fn spawn(pool: PgPool, cache_ms: u64) -> TestApp {
    let config = control_plane::Config {
        status_page_cache_ms: cache_ms,
        consensus_sweep_interval_ms: 3_600_000,
        ..test_config(&random_prefix("status"), "redis://127.0.0.1:6379")
    };
    TestApp::spawn_with(pool, config).await
}

async fn down(app: &TestApp, domain: &str, ok: bool) {
    let at = Utc::now();
    let id: Uuid = domain.parse().unwrap();
    let batches = ["ams", "iad", "sin"].iter().map(|r| observed(r, id, ok, at)).collect();
    app.consensus.process(batches).await;
}

async fn text(app: &TestApp, path: &str) -> (StatusCode, header::HeaderMap, String) {
    let response = app.http.get(app.url(path)).send().await.unwrap();
    (response.status(), response.headers().clone(), response.text().await.unwrap())
}

/// A page with two components (one revealing its URL) and a third domain left off it.
async fn page(app: &TestApp) -> (String, String, String, String) {
    let api =
        app.create_domain(json!({"url": "https://api.internal.example.com/health", "interval": 60})).await;
    let web = app.create_domain(json!({"url": "https://www.example.com/", "interval": 60})).await;
    let hidden = app.create_domain(json!({"url": "https://secret.example.com/", "interval": 60})).await;
    let response = app
        .post(
            "/v1/status-pages",
            &app.token,
            &json!({
                "slug": "acme", "title": "Acme", "hostnames": ["status.acme.test"],
                "components": [
                    {"domain": api, "name": "<script>alert(1)</script>", "group": "Core"},
                    {"domain": web, "name": "Website", "reveal": ["url", "regions", "errors"]},
                ],
            }),
        )
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().unwrap().to_owned(), api, web, hidden)
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn pages_are_validated_and_isolated_between_tenants(pool: PgPool) {
    let app = spawn(pool, 0).await;
    let (id, api, _, _) = page(&app).await;
    let other = app.other_tenant().await;
    for path in [format!("/v1/status-pages/{id}")] {
        assert_eq!(app.get(&path, &other).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.patch(&path, &other, &json!({"title": "x"})).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.delete(&path, &other).await.status(), StatusCode::NOT_FOUND);
    }
    let listed: Value = app.get("/v1/status-pages", &other).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    // Another tenant cannot put this tenant's domain on its page.
    let response = app
        .post(
            "/v1/status-pages",
            &other,
            &json!({"slug": "thief", "title": "T", "components": [{"domain": api, "name": "x"}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["fields"]["components[0].domain"], "not a domain of this tenant");
    // Slugs and hostnames are unique across tenants.
    let response =
        app.post("/v1/status-pages", &other, &json!({"slug": "acme", "title": "T", "components": []})).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let response = app
        .post(
            "/v1/status-pages",
            &other,
            &json!({"slug": "other", "title": "T", "hostnames": ["status.acme.test"], "components": []}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    // A read-only token reads but does not write.
    let issued = control_plane::tenants::create_token(
        &app.pool,
        tenant(&app).await,
        "ro",
        control_plane::tenants::Role::ReadOnly,
    )
    .await
    .unwrap();
    assert_eq!(app.get(&format!("/v1/status-pages/{id}"), &issued.token).await.status(), StatusCode::OK);
    let response = app.patch(&format!("/v1/status-pages/{id}"), &issued.token, &json!({"title": "x"})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A patch keeps component ids of domains that stay.
    let before: Value = app.get(&format!("/v1/status-pages/{id}"), &app.token).await.json().await.unwrap();
    let response = app
        .patch(
            &format!("/v1/status-pages/{id}"),
            &app.token,
            &json!({"components": [{"domain": api, "name": "API"}]}),
        )
        .await;
    let after: Value = response.json().await.unwrap();
    assert_eq!(after["components"][0]["id"], before["components"][0]["id"]);
    assert_eq!(after["components"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn tenant(app: &TestApp) -> Uuid {
    control_plane::tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap().tenant_id
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_page_shows_its_components_and_incidents_and_nothing_private(pool: PgPool) {
    let app = spawn(pool, 0).await;
    let (id, api, web, hidden) = page(&app).await;
    let tenant = tenant(&app).await;
    down(&app, &api, true).await;
    down(&app, &web, false).await;
    down(&app, &hidden, false).await;
    let incident: Value =
        app.get(&format!("/v1/incidents?domain={web}"), &app.token).await.json().await.unwrap();
    let incident = incident["items"][0]["id"].as_str().unwrap().to_owned();
    let response = app
        .post(
            &format!("/v1/incidents/{incident}/updates"),
            &app.token,
            &json!({"status": "identified", "message": "A <b>bad</b> deploy; rolling back"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let bad = app
        .post(
            &format!("/v1/incidents/{incident}/updates"),
            &app.token,
            &json!({"status": "fixed", "message": ""}),
        )
        .await;
    let bad: Value = bad.json().await.unwrap();
    assert!(
        bad["error"]["fields"]["status"].is_string() && bad["error"]["fields"]["message"].is_string(),
        "{bad}"
    );

    let (status, headers, html) = text(&app, "/status/acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], control_plane::web::CSP);
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;") && !html.contains("<script>alert"),
        "names are text"
    );
    assert!(html.contains("Website") && html.contains("Core"));
    assert!(html.contains("Partial outage"), "one of two components down");
    assert!(html.contains("Major outage"));
    assert!(html.contains("rolling back") && html.contains("&#60;b&#62;bad"), "the update, escaped");
    assert!(html.contains("https://www.example.com/"), "revealed URL");
    assert!(
        html.contains("Failing in ams, iad, sin") && html.contains("status 503"),
        "revealed regions and errors"
    );
    assert_eq!(html.matches(" data-tip=\"").count(), 180, "90 days per component");
    for private in [
        api.as_str(),
        web.as_str(),
        hidden.as_str(),
        &tenant.to_string(),
        &id,
        "api.internal.example.com",
        "secret.example.com",
    ] {
        assert!(!html.contains(private), "the page reveals {private}");
    }
    assert!(!html.contains("style="), "no inline style");
    assert!(!html.contains("<script>"), "no inline script");

    let (status, _, body) = text(&app, "/status/acme.json").await;
    assert_eq!(status, StatusCode::OK);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "partial_outage");
    assert_eq!(json["components"].as_array().unwrap().len(), 2);
    assert_eq!(json["components"][1]["state"], "major_outage");
    assert_eq!(json["components"][1]["days"].as_array().unwrap().len(), 90);
    assert!(json["components"][0].get("url").is_none());
    assert_eq!(json["active_incidents"][0]["updates"][0]["status"], "identified");
    for private in
        [api.as_str(), web.as_str(), hidden.as_str(), &tenant.to_string(), &id, "internal", "secret"]
    {
        assert!(!body.contains(private), "the JSON reveals {private}");
    }

    let (status, headers, feed) = text(&app, "/status/acme/feed.atom").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/atom+xml"));
    let parsed: atom_syndication::Feed = feed.parse().expect("a valid Atom feed");
    assert_eq!(parsed.entries().len(), 1);
    assert_eq!(parsed.entries()[0].id(), format!("urn:uuid:{incident}"));
    assert!(feed.contains("rolling back"));

    // The same page at / of its hostname; unknown slugs and hosts are 404.
    let response =
        app.http.get(app.url("/")).header(header::HOST, "Status.Acme.Test:8080").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Website"));
    assert_eq!(text(&app, "/status/nobody").await.0, StatusCode::NOT_FOUND);
    assert_eq!(text(&app, "/status/nobody.json").await.0, StatusCode::NOT_FOUND);
    assert_eq!(text(&app, "/").await.0, StatusCode::NOT_FOUND);

    // Recovered, and the operators close it: it moves to the history.
    down(&app, &web, true).await;
    app.post(
        &format!("/v1/incidents/{incident}/updates"),
        &app.token,
        &json!({"status": "resolved", "message": "Fixed"}),
    )
    .await;
    let json: Value = app.http.get(app.url("/status/acme.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(json["status"], "operational");
    assert_eq!(json["active_incidents"], json!([]));
    assert_eq!(json["incident_history"][0]["id"], json!(incident));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_cached_page_catches_up_through_its_stream_which_shows_only_its_components(pool: PgPool) {
    let app = spawn(pool, 600_000).await;
    let (id, api, web, hidden) = page(&app).await;
    down(&app, &api, true).await;
    down(&app, &web, true).await;
    // Render (and cache) the page, then change things.
    let (_, _, before) = text(&app, "/status/acme").await;
    let events =
        before.split("data-events=\"").nth(1).unwrap().split('"').next().unwrap().replace("&#38;", "&");
    assert!(events.starts_with("/status/acme/events?after="), "{events}");
    down(&app, &hidden, false).await;
    down(&app, &api, false).await;
    // Still the cached content...
    let (_, _, cached) = text(&app, "/status/acme").await;
    assert!(!cached.contains("Major outage"));
    // ...whose stream replays what happened since it was built: the page's component only.
    let mut stream = SseClient::open(&app, &events, &[]).await;
    let message = stream.next_named("component", WAIT).await.expect("the component's change");
    let data = message.json();
    assert_eq!(data["state"], "major_outage");
    assert_eq!(data["overall"], "partial_outage");
    let incident = stream.next_named("incident", WAIT).await.expect("the incident").json();
    assert_eq!(incident["active"], true);
    // Live: an update on it, then nothing of a domain not on the page.
    let id_of: Value =
        app.get(&format!("/v1/incidents?domain={api}"), &app.token).await.json().await.unwrap();
    let incident_id = id_of["items"][0]["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/v1/incidents/{incident_id}/updates"),
        &app.token,
        &json!({"status": "investigating", "message": "Looking"}),
    )
    .await;
    let update = stream.next_event(WAIT).await.expect("the update");
    assert_eq!(update.event.as_deref(), Some("incident_update"));
    assert_eq!(update.json()["message"], "Looking");
    down(&app, &hidden, true).await;
    down(&app, &web, false).await;
    let next = stream.next_event(WAIT).await.expect("the website's change");
    assert_eq!(next.event.as_deref(), Some("component"));
    assert_eq!(next.json()["overall"], "major_outage");
    for private in
        [api.as_str(), web.as_str(), hidden.as_str(), &tenant(&app).await.to_string(), &id, "example.com"]
    {
        for data in [&message.data, &update.data, &next.data] {
            assert!(!data.contains(private), "the stream reveals {private}: {data}");
        }
    }
    // A page edit drops the cache and tells the stream to reload.
    app.patch(&format!("/v1/status-pages/{id}"), &app.token, &json!({"title": "Acme Inc"})).await;
    let reset = stream.next_named("reset", WAIT).await.expect("reset");
    assert_eq!(reset.event.as_deref(), Some("reset"));
    let (_, _, after) = text(&app, "/status/acme").await;
    assert!(after.contains("Acme Inc") && after.contains("Major outage"));
    app.stop().await;
}
