//! Maintenance windows: the `/v1/maintenance` API (validation by field, tenant scope, roles,
//! occurrences across daylight-saving changes), and what a window does to incidents: recorded,
//! marked, nothing sent inside the window; an outage still going on at the window's end
//! announced exactly once. Observations are recorded and evaluations and sweeper steps driven
//! directly.

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::random_prefix;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp};

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];

/// A control plane whose background sweeps stay out of the way (the test steps them).
async fn spawn(pool: PgPool) -> TestApp {
    let config = control_plane::Config {
        consensus_sweep_interval_ms: 3_600_000,
        flap_check_interval_ms: 3_600_000,
        maintenance_check_interval_ms: 3_600_000,
        ..test_config(&random_prefix("maint"), "redis://127.0.0.1:6379")
    };
    TestApp::spawn_with(pool, config).await
}

/// A domain (with `tags`) in every region.
async fn domain(app: &TestApp, host: &str, tags: &[&str]) -> Uuid {
    app.create_domain(json!({"url": format!("https://{host}/health"), "interval": 60, "tags": tags}))
        .await
        .parse()
        .unwrap()
}

/// A webhook channel of the app's tenant (outbox rows only; nothing is dispatched to it: the host
/// is a documentation name).
async fn channel(app: &TestApp, domain: Uuid) -> Uuid {
    let channel = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO channels (id, tenant_id, name, kind, config)
         SELECT $1, tenant_id, 'hook', 'webhook', '{\"url\": \"https://hooks.example.com/x\"}' FROM domains WHERE id = $2",
    )
    .bind(channel)
    .bind(domain)
    .execute(&app.pool)
    .await
    .unwrap();
    channel
}

/// Every region observes the domain now, then it is evaluated; returns the state.
async fn all(app: &TestApp, domain: Uuid, ok: bool) -> String {
    for region in REGIONS {
        let batch = crate::helpers::observed(region, domain, ok, Utc::now());
        app.consensus.record(&batch).await.unwrap();
    }
    let evaluated = app.consensus.evaluate(domain, Utc::now()).await.unwrap().expect("domain exists");
    evaluated.state.as_str().to_owned()
}

/// (kind, dedup key) of the channel's outbox rows for `domain`, in order.
async fn outbox(pool: &PgPool, channel: Uuid, domain: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT kind, dedup_key FROM notifications WHERE channel_id = $1 AND domain_id = $2 ORDER BY seq",
    )
    .bind(channel)
    .bind(domain)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn kinds(queued: &[(String, String)]) -> Vec<&str> {
    queued.iter().map(|q| q.0.as_str()).collect()
}

async fn incident_of(app: &TestApp, domain: Uuid) -> Value {
    let list: Value =
        app.get(&format!("/v1/incidents?domain={domain}"), &app.token).await.json().await.unwrap();
    let id = list["items"][0]["id"].as_str().unwrap_or_else(|| panic!("no incident: {list}")).to_owned();
    app.get(&format!("/v1/incidents/{id}"), &app.token).await.json().await.unwrap()
}

async fn create_window(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/maintenance", &app.token, &body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn windows_are_validated_by_field_scoped_to_the_tenant_and_list_their_occurrences(pool: PgPool) {
    let app = spawn(pool).await;
    let mine = domain(&app, "a.example.com", &[]).await;

    // Weekly on Sundays at 02:30 in Berlin for two hours, across the March change.
    let weekly = create_window(
        &app,
        json!({"title": "Kernel patching", "scope": {"domain_ids": [mine], "tags": ["Prod"]},
               "time_zone": "Europe/Berlin", "dtstart": "2026-03-15T02:30:00", "duration": "PT2H",
               "rrule": "FREQ=WEEKLY;BYDAY=SU"}),
    )
    .await;
    assert_eq!(weekly["scope"], json!({"domain_ids": [mine], "tags": ["prod"]}));
    assert_eq!(weekly["duration"], "PT2H");
    assert!(weekly["next"]["starts_at"].is_string(), "{weekly}");
    let id = weekly["id"].as_str().unwrap();
    let found: Value = app
        .get(
            &format!("/v1/maintenance/{id}/occurrences?from=2026-03-20T00:00:00Z&to=2026-04-06T00:00:00Z"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let starts: Vec<(&str, &str)> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["starts_at"].as_str().unwrap(), o["ends_at"].as_str().unwrap()))
        .collect();
    assert_eq!(
        starts,
        [
            ("2026-03-22T01:30:00Z", "2026-03-22T03:30:00Z"),
            ("2026-03-29T01:30:00Z", "2026-03-29T03:30:00Z"),
            ("2026-04-05T00:30:00Z", "2026-04-05T02:30:00Z"),
        ],
        "{found}"
    );
    let bad = app
        .get(
            &format!("/v1/maintenance/{id}/occurrences?from=2026-03-20T00:00:00Z&to=2028-01-01T00:00:00Z"),
            &app.token,
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("\"to\""));

    // A patch switches to a one-off window.
    let patched = app
        .patch(
            &format!("/v1/maintenance/{id}"),
            &app.token,
            &json!({"starts_at": "2026-12-05T22:00:00Z", "ends_at": "2026-12-06T01:00:00Z"}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["rrule"], Value::Null);
    assert_eq!(patched["title"], "Kernel patching");

    // Every bad field named.
    let response = app
        .post(
            "/v1/maintenance",
            &app.token,
            &json!({"title": "", "scope": {"tags": ["bad tag"]}, "time_zone": "Mars/Base",
                    "dtstart": "2026-03-15T02:30:00", "duration": "P1M", "rrule": "FREQ=SECONDLY"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = response.text().await.unwrap();
    for field in ["title", "scope.tags[0]", "time_zone", "duration"] {
        assert!(body.contains(&format!("\"{field}\"")), "{field}: {body}");
    }

    // Another tenant: cannot see the window, nor name this tenant's domain in a scope.
    let other = app.other_tenant().await;
    assert_eq!(app.get(&format!("/v1/maintenance/{id}"), &other).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/v1/maintenance/{id}"), &other).await.status(), StatusCode::NOT_FOUND);
    let listed: Value = app.get("/v1/maintenance", &other).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    let response = app
        .post(
            "/v1/maintenance",
            &other,
            &json!({"title": "x", "scope": {"domain_ids": [mine]},
                    "starts_at": "2026-12-05T22:00:00Z", "ends_at": "2026-12-06T01:00:00Z"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.unwrap().contains("scope.domain_ids[0]"));

    // Readers read, admins write.
    let created: Value = app
        .post("/v1/tokens", &app.token, &json!({"name": "dashboard", "role": "read_only"}))
        .await
        .json()
        .await
        .unwrap();
    let reader = created["token"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/maintenance/{id}"), reader).await.status(), StatusCode::OK);
    let refused = app.patch(&format!("/v1/maintenance/{id}"), reader, &json!({"title": "y"})).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let listed: Value = app.get("/v1/maintenance", &app.token).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.delete(&format!("/v1/maintenance/{id}"), &app.token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get(&format!("/v1/maintenance/{id}"), &app.token).await.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn an_outage_inside_a_tagged_window_is_recorded_silently_and_announced_once_when_it_outlasts_it(
    pool: PgPool,
) {
    let app = spawn(pool).await;
    let covered = domain(&app, "a.example.com", &["prod"]).await;
    let outside = domain(&app, "b.example.com", &["staging"]).await;
    let hook = channel(&app, covered).await;
    let now = Utc::now();
    let ends = now + Duration::hours(1);
    let window = create_window(
        &app,
        json!({"title": "DB upgrade", "scope": {"tags": ["prod"]},
               "starts_at": rfc3339(now - Duration::hours(1)), "ends_at": rfc3339(ends)}),
    )
    .await;
    let window_id = window["id"].as_str().unwrap().to_owned();
    assert!(window["active"].is_object(), "{window}");

    let status: Value =
        app.get(&format!("/v1/domains/{covered}/status"), &app.token).await.json().await.unwrap();
    assert_eq!(status["maintenance"]["active"]["window_id"], window_id.as_str(), "{status}");
    assert_eq!(status["maintenance"]["active"]["title"], "DB upgrade");
    let status: Value =
        app.get(&format!("/v1/domains/{outside}/status"), &app.token).await.json().await.unwrap();
    assert_eq!(status["maintenance"]["active"], Value::Null, "{status}");

    for d in [covered, outside] {
        assert_eq!(all(&app, d, true).await, "up");
        assert_eq!(all(&app, d, false).await, "down");
    }
    // Outside the scope: paged at once. Inside: recorded, marked, nothing sent.
    assert_eq!(kinds(&outbox(&app.pool, hook, outside).await), ["incident_opened"]);
    assert!(outbox(&app.pool, hook, covered).await.is_empty());
    let incident = incident_of(&app, covered).await;
    assert_eq!(incident["state"], "open");
    assert_eq!(incident["maintenance_window_id"], window_id.as_str(), "{incident}");
    assert_eq!(incident["events"][0]["details"]["notification"], control_plane::maintenance::WITHHELD);
    // Acknowledging it during the window sends nothing either.
    let incident_id = incident["id"].as_str().unwrap().to_owned();
    let ack = app.post(&format!("/v1/incidents/{incident_id}/ack"), &app.token, &json!({})).await;
    assert_eq!(ack.status(), StatusCode::OK);
    assert!(outbox(&app.pool, hook, covered).await.is_empty());

    // A step while the window lasts changes nothing.
    let swept = app.maintenance.step(Utc::now()).await.unwrap();
    assert_eq!(swept.announced, 0);
    assert!(outbox(&app.pool, hook, covered).await.is_empty());

    // The window ends with the outage still going on: announced once, however often stepped.
    let after = ends + Duration::seconds(1);
    assert_eq!(app.maintenance.step(after).await.unwrap().announced, 1);
    assert_eq!(app.maintenance.step(after + Duration::seconds(30)).await.unwrap().announced, 0);
    let queued = outbox(&app.pool, hook, covered).await;
    assert_eq!(queued, [("incident_opened".to_owned(), format!("incident:{incident_id}:opened"))]);
    let incident = incident_of(&app, covered).await;
    let events: Vec<&str> =
        incident["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(events, ["opened", "acknowledged", "maintenance_ended"], "{incident}");
    assert_eq!(incident["events"][0]["details"]["notification"], control_plane::maintenance::SENT_AT_END);

    // Its recovery is announced as usual.
    assert_eq!(all(&app, covered, true).await, "up");
    assert_eq!(kinds(&outbox(&app.pool, hook, covered).await), ["incident_opened", "incident_resolved"]);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn an_outage_that_ends_inside_a_window_by_id_sends_nothing_at_all(pool: PgPool) {
    let app = spawn(pool).await;
    let covered = domain(&app, "a.example.com", &[]).await;
    let hook = channel(&app, covered).await;
    let now = Utc::now();
    let ends = now + Duration::hours(1);
    create_window(
        &app,
        json!({"title": "Failover drill", "scope": {"domain_ids": [covered]},
               "starts_at": rfc3339(now - Duration::minutes(5)), "ends_at": rfc3339(ends)}),
    )
    .await;
    assert_eq!(all(&app, covered, true).await, "up");
    assert_eq!(all(&app, covered, false).await, "down");
    assert_eq!(all(&app, covered, true).await, "up");
    let incident = incident_of(&app, covered).await;
    assert_eq!(incident["state"], "resolved");
    let resolved = incident["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        resolved["details"]["notification"],
        control_plane::maintenance::RESOLVED_INSIDE,
        "{incident}"
    );
    // Nor after the window.
    assert_eq!(app.maintenance.step(ends + Duration::minutes(1)).await.unwrap().announced, 0);
    assert!(outbox(&app.pool, hook, covered).await.is_empty());
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_window_cut_short_announces_an_outage_that_then_resolves_before_the_sweeper_ran(pool: PgPool) {
    let app = spawn(pool).await;
    let covered = domain(&app, "a.example.com", &["db"]).await;
    let hook = channel(&app, covered).await;
    let now = Utc::now();
    let window = create_window(
        &app,
        json!({"title": "Migration", "scope": {"tags": ["db"]},
               "starts_at": rfc3339(now - Duration::hours(1)), "ends_at": rfc3339(now + Duration::hours(2))}),
    )
    .await;
    assert_eq!(all(&app, covered, true).await, "up");
    assert_eq!(all(&app, covered, false).await, "down");
    assert!(outbox(&app.pool, hook, covered).await.is_empty());

    // The operator ends the window now (to the second, so it is over at once); the outage
    // resolves before any sweeper step.
    let id = window["id"].as_str().unwrap();
    let cut = app
        .patch(&format!("/v1/maintenance/{id}"), &app.token, &json!({"ends_at": rfc3339(Utc::now())}))
        .await;
    assert_eq!(cut.status(), StatusCode::OK, "{}", cut.text().await.unwrap());
    assert_eq!(all(&app, covered, true).await, "up");
    let incident = incident_of(&app, covered).await;
    let incident_id = incident["id"].as_str().unwrap();
    assert_eq!(
        outbox(&app.pool, hook, covered).await,
        [
            ("incident_opened".to_owned(), format!("incident:{incident_id}:opened")),
            ("incident_resolved".to_owned(), format!("incident:{incident_id}:resolved")),
        ]
    );
    // The sweeper finds nothing left to do.
    assert_eq!(app.maintenance.step(Utc::now()).await.unwrap().announced, 0);
    assert_eq!(outbox(&app.pool, hook, covered).await.len(), 2);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_status_page_shows_a_component_under_maintenance_while_its_window_lasts(pool: PgPool) {
    let config = control_plane::Config {
        status_page_cache_ms: 0,
        consensus_sweep_interval_ms: 3_600_000,
        maintenance_check_interval_ms: 3_600_000,
        ..test_config(&random_prefix("maint"), "redis://127.0.0.1:6379")
    };
    let app = TestApp::spawn_with(pool, config).await;
    let covered = domain(&app, "a.example.com", &["edge"]).await;
    let other = domain(&app, "b.example.com", &[]).await;
    let response = app
        .post(
            "/v1/status-pages",
            &app.token,
            &json!({"slug": "acme", "title": "Acme", "components": [
                {"domain": covered, "name": "Edge"}, {"domain": other, "name": "Website"}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    for d in [covered, other] {
        assert_eq!(all(&app, d, false).await, "down");
    }
    let states = || async {
        let page: Value =
            app.http.get(app.url("/status/acme.json")).send().await.unwrap().json().await.unwrap();
        let states: Vec<String> = page["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["state"].as_str().unwrap().to_owned())
            .collect();
        (states, page["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        states().await,
        (vec!["major_outage".to_owned(), "major_outage".to_owned()], "major_outage".to_owned())
    );

    let now = Utc::now();
    let window = create_window(
        &app,
        json!({"title": "Edge swap", "scope": {"tags": ["edge"]},
               "starts_at": rfc3339(now - Duration::minutes(1)), "ends_at": rfc3339(now + Duration::hours(1))}),
    )
    .await;
    assert_eq!(
        states().await,
        (vec!["maintenance".to_owned(), "major_outage".to_owned()], "major_outage".to_owned())
    );
    // The page announces the window under way and one scheduled within a week, not one later.
    create_window(
        &app,
        json!({"title": "Website move", "description": "internal: rack 12", "scope": {"domain_ids": [other]},
               "starts_at": rfc3339(now + Duration::days(2)), "ends_at": rfc3339(now + Duration::days(2) + Duration::hours(2))}),
    )
    .await;
    create_window(
        &app,
        json!({"title": "Far off", "scope": {"domain_ids": [other]},
               "starts_at": rfc3339(now + Duration::days(20)), "ends_at": rfc3339(now + Duration::days(20) + Duration::hours(1))}),
    )
    .await;
    let page: Value = app.http.get(app.url("/status/acme.json")).send().await.unwrap().json().await.unwrap();
    let listed: Vec<(String, bool, Value)> = page["maintenance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["title"].as_str().unwrap().to_owned(), m["active"].as_bool().unwrap(), m["components"].clone())
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("Edge swap".to_owned(), true, json!(["Edge"])),
            ("Website move".to_owned(), false, json!(["Website"]))
        ]
    );
    let html = app.http.get(app.url("/status/acme")).send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("Scheduled maintenance") && html.contains("Edge swap") && html.contains("Website move")
    );
    assert!(!html.contains("Far off") && !html.contains("rack 12"), "only a week ahead, never a description");

    // Over: the page shows the outage again.
    let id = window["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/maintenance/{id}"), &app.token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(states().await.0, ["major_outage", "major_outage"]);
    app.stop().await;
}
