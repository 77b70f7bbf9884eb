//! The audit log: a row for every write route of the API (one table of cases) and of the
//! console, secrets redacted, failed writes with their status, the filters and paging of
//! `GET /v1/audit`, admins only, client addresses through trusted proxies, and retention.

use std::collections::{BTreeSet, HashMap};

use chrono::{Duration, Utc};
use control_plane::tenants::{self, Role};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::console::{csrf, observe, Client};
use crate::helpers::{agents_config, TestApp};

async fn spawn(pool: PgPool) -> TestApp {
    spawn_with(pool, |c| c).await
}

async fn spawn_with(
    pool: PgPool,
    change: impl FnOnce(control_plane::Config) -> control_plane::Config,
) -> TestApp {
    let prefix = shared::testing::random_prefix("audit");
    // No dispatcher: test notifications stay in the outbox; nothing leaves the machine.
    let config =
        control_plane::Config { notify_dispatch: false, ..agents_config(&prefix, "redis://127.0.0.1:6379") };
    TestApp::spawn_with(pool, change(config)).await
}

async fn tenant_of(app: &TestApp, token: &str) -> Uuid {
    let tenant: Value = app.get("/v1/tenant", token).await.json().await.unwrap();
    tenant["id"].as_str().unwrap().parse().unwrap()
}

/// Every audit row of the tenant, oldest first, as the API shows them (paged through).
async fn all_rows(app: &TestApp, query: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let sep = if query.is_empty() { "" } else { "&" };
        let page = app.get(&format!("/v1/audit?limit=7&cursor={cursor}{sep}{query}"), &app.token).await;
        assert_eq!(page.status(), StatusCode::OK);
        let page: Value = page.json().await.unwrap();
        rows.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    rows.reverse();
    rows
}

async fn send(app: &TestApp, method: &Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let mut request = app.http.request(method.clone(), app.url(path)).bearer_auth(&app.token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One write route: its method, path (with `{name}` placeholders for ids captured earlier),
/// body, the route template and resource type its row must name, and the name to capture the
/// answer's `id` under.
struct Case {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    route: &'static str,
    resource: &'static str,
    capture: Option<&'static str>,
}

fn case(
    method: Method,
    path: &'static str,
    body: Option<Value>,
    route: &'static str,
    resource: &'static str,
) -> Case {
    Case { method, path, body, route, resource, capture: None }
}

fn fill(text: &str, ids: &HashMap<&str, String>) -> String {
    ids.iter().fold(text.to_owned(), |acc, (name, id)| acc.replace(&format!("{{{name}}}"), id))
}

async fn run(
    app: &TestApp,
    cases: Vec<Case>,
    ids: &mut HashMap<&'static str, String>,
    seen: &mut Vec<String>,
) {
    for case in cases {
        let path = fill(case.path, ids);
        let body =
            case.body.as_ref().map(|b| serde_json::from_str::<Value>(&fill(&b.to_string(), ids)).unwrap());
        let (status, answer) = send(app, &case.method, &path, body.as_ref()).await;
        assert!(status.is_success(), "{} {path}: {status} {answer}", case.method);
        if let Some(name) = case.capture {
            ids.insert(name, answer["id"].as_str().unwrap().to_owned());
        }
        // Secrets shown once, to look for in the log later.
        for (key, name) in [("token", "issued"), ("secret", "signing")] {
            if let Some(secret) = answer.get(key).and_then(Value::as_str) {
                ids.insert(name, secret.to_owned());
            }
        }
        let newest: Value = app.get("/v1/audit?limit=1", &app.token).await.json().await.unwrap();
        let row = &newest["items"][0];
        assert!(row.is_object(), "no audit row for {} {path}", case.method);
        assert_eq!(row["method"], case.method.as_str(), "{row}");
        assert_eq!(row["route"], case.route, "{row}");
        assert_eq!(row["resource_type"], case.resource, "{row}");
        assert_eq!(row["status"], status.as_u16(), "{row}");
        assert_eq!(row["via"], "api");
        assert_eq!(row["token_name"], "initial admin token");
        assert_eq!(row["client_address"], "127.0.0.1");
        assert!(row["diff"].is_object(), "a successful write has a diff: {row}");
        if case.resource != "check_test" {
            let id = row["resource_id"].as_str().unwrap_or_else(|| panic!("no resource id: {row}"));
            if let Some(name) = case.capture {
                assert_eq!(id, ids[name], "{row}");
            } else if path.contains(id) || case.resource == "tenant" {
                // The id in the path, or the tenant's own.
            } else {
                panic!("{path}: resource id {id} not in the path");
            }
        }
        seen.push(format!("{} {}", case.method, case.route));
    }
}

/// Every write route of the API appends exactly one row naming its route, resource and status,
/// with a diff of what changed; secrets never appear in any row.
#[sqlx::test]
async fn every_write_route_appends_a_row(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant = tenant_of(&app, &app.token).await;
    let slug = format!("audit-{}", Uuid::new_v4().simple());
    let mut ids: HashMap<&'static str, String> = HashMap::from([("slug", slug)]);
    let mut seen = Vec::new();
    let (post, patch, delete) = (Method::POST, Method::PATCH, Method::DELETE);
    let first = vec![
        Case {
            capture: Some("domain"),
            ..case(
                post.clone(),
                "/v1/domains",
                Some(json!({"url": "http://192.0.2.10/", "interval": 10, "regions": ["ams"],
                            "auth": {"kind": "basic", "username": "probe", "password": "hunter2-password"}})),
                "/v1/domains",
                "domain",
            )
        },
        case(
            patch.clone(),
            "/v1/domains/{domain}",
            Some(json!({"name": "renamed"})),
            "/v1/domains/{id}",
            "domain",
        ),
        case(post.clone(), "/v1/domains/{domain}/pause", None, "/v1/domains/{id}/pause", "domain"),
        case(post.clone(), "/v1/domains/{domain}/resume", None, "/v1/domains/{id}/resume", "domain"),
        case(
            post.clone(),
            "/v1/checks/test",
            Some(json!({"domain_id": "{domain}", "wait_ms": 100})),
            "/v1/checks/test",
            "check_test",
        ),
        Case {
            capture: Some("token_id"),
            ..case(post.clone(), "/v1/tokens", Some(json!({"name": "ci"})), "/v1/tokens", "token")
        },
        case(delete.clone(), "/v1/tokens/{token_id}", None, "/v1/tokens/{id}", "token"),
        case(
            patch.clone(),
            "/v1/tenant",
            Some(json!({"time_zone": "Europe/Berlin"})),
            "/v1/tenant",
            "tenant",
        ),
        Case {
            capture: Some("channel"),
            ..case(
                post.clone(),
                "/v1/channels",
                Some(
                    json!({"name": "ops", "kind": "webhook", "url": "https://hooks.example.com/first-secret-path"}),
                ),
                "/v1/channels",
                "channel",
            )
        },
        case(
            patch.clone(),
            "/v1/channels/{channel}",
            Some(json!({"url": "https://hooks.example.com/second-secret-path"})),
            "/v1/channels/{id}",
            "channel",
        ),
        case(post.clone(), "/v1/channels/{channel}/test", None, "/v1/channels/{id}/test", "channel"),
    ];
    run(&app, first, &mut ids, &mut seen).await;
    // The test notification, dead, to be retried.
    let notification: Uuid =
        sqlx::query_scalar("UPDATE notifications SET state = 'dead' WHERE channel_id = $1 RETURNING id")
            .bind(ids["channel"].parse::<Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    ids.insert("notification", notification.to_string());
    // An open incident of the domain.
    observe(&app, &ids["domain"], &["ams"], false).await;
    let incident: Uuid = sqlx::query_scalar("SELECT id FROM incidents WHERE domain_id = $1")
        .bind(ids["domain"].parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    ids.insert("incident", incident.to_string());
    let second = vec![
        case(
            post.clone(),
            "/v1/notifications/{notification}/retry",
            None,
            "/v1/notifications/{id}/retry",
            "notification",
        ),
        case(delete.clone(), "/v1/channels/{channel}", None, "/v1/channels/{id}", "channel"),
        case(
            post.clone(),
            "/v1/incidents/{incident}/ack",
            Some(json!({"note": "on it"})),
            "/v1/incidents/{id}/ack",
            "incident",
        ),
        case(
            post.clone(),
            "/v1/incidents/{incident}/updates",
            Some(json!({"status": "identified", "message": "a bad deploy"})),
            "/v1/incidents/{id}/updates",
            "incident",
        ),
        Case {
            capture: Some("window"),
            ..case(
                post.clone(),
                "/v1/maintenance",
                Some(json!({"title": "patching", "scope": {"domain_ids": ["{domain}"]},
                            "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T01:00:00Z"})),
                "/v1/maintenance",
                "maintenance_window",
            )
        },
        case(
            patch.clone(),
            "/v1/maintenance/{window}",
            Some(json!({"title": "kernel"})),
            "/v1/maintenance/{id}",
            "maintenance_window",
        ),
        case(delete.clone(), "/v1/maintenance/{window}", None, "/v1/maintenance/{id}", "maintenance_window"),
        Case {
            capture: Some("page"),
            ..case(
                post.clone(),
                "/v1/status-pages",
                Some(
                    json!({"slug": "{slug}", "title": "Acme", "components": [{"domain": "{domain}", "name": "API"}]}),
                ),
                "/v1/status-pages",
                "status_page",
            )
        },
        case(
            patch.clone(),
            "/v1/status-pages/{page}",
            Some(json!({"title": "Acme 2"})),
            "/v1/status-pages/{id}",
            "status_page",
        ),
        case(delete.clone(), "/v1/status-pages/{page}", None, "/v1/status-pages/{id}", "status_page"),
        case(delete.clone(), "/v1/domains/{domain}", None, "/v1/domains/{id}", "domain"),
    ];
    run(&app, second, &mut ids, &mut seen).await;

    // One row per write, every write route once.
    let rows = all_rows(&app, "").await;
    assert_eq!(rows.len(), seen.len(), "{rows:#?}");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 22, "every API write route once: {seen:?}");
    let shown: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["route"].as_str().unwrap()))
        .collect();
    assert_eq!(shown, seen);

    // What the diffs say.
    let row = |route: &str, method: &str| -> Value {
        rows.iter().find(|r| r["route"] == route && r["method"] == method).unwrap().clone()
    };
    let created = row("/v1/domains", "POST");
    assert_eq!(created["diff"]["before"], Value::Null);
    assert_eq!(created["diff"]["after"]["id"], ids["domain"].as_str());
    assert_eq!(created["diff"]["after"]["interval_s"], 10);
    let renamed = row("/v1/domains/{id}", "PATCH");
    assert_ne!(renamed["diff"]["before"]["name"], "renamed");
    assert_eq!(renamed["diff"]["after"]["name"], "renamed");
    assert!(renamed["diff"]["after"].get("url").is_none(), "unchanged fields are left out: {renamed}");
    let paused = row("/v1/domains/{id}/pause", "POST");
    assert_eq!(
        (&paused["diff"]["before"]["paused"], &paused["diff"]["after"]["paused"]),
        (&json!(false), &json!(true))
    );
    let deleted = row("/v1/domains/{id}", "DELETE");
    assert_eq!(deleted["diff"]["before"]["name"], "renamed");
    assert_eq!(deleted["diff"]["after"], Value::Null);
    let zone = row("/v1/tenant", "PATCH");
    assert_eq!(zone["resource_id"], tenant.to_string());
    assert_eq!(
        zone["diff"],
        json!({"before": {"time_zone": "UTC"}, "after": {"time_zone": "Europe/Berlin"}})
    );
    let acked = row("/v1/incidents/{id}/ack", "POST");
    assert_eq!(
        (&acked["diff"]["before"]["state"], &acked["diff"]["after"]["state"]),
        (&json!("open"), &json!("acknowledged"))
    );
    let moved = row("/v1/channels/{id}", "PATCH");
    assert_eq!(moved["diff"], json!({"before": {"url": "<redacted>"}, "after": {"url": "<redacted>"}}));
    let retried = row("/v1/notifications/{id}/retry", "POST");
    assert_eq!(retried["resource_id"], notification.to_string());
    assert_eq!(retried["diff"]["after"]["state"], "pending");

    // No secret in any row: the basic password, the channel URLs, the webhook's signing
    // secret, the issued token.
    let text = serde_json::to_string(&rows).unwrap();
    let (issued, signing) = (ids["issued"].clone(), ids["signing"].clone());
    assert!(issued.starts_with("cc_") && signing.starts_with("whsec_"), "{issued} {signing}");
    for secret in ["hunter2", "first-secret-path", "second-secret-path", &issued, &signing] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
    }
    assert!(text.contains("password_set"), "the domain's redacted view is kept");
    app.stop().await;
}

/// A refused write is recorded with its status and the token that tried, without a diff; an
/// unauthenticated one has no tenant and leaves no row.
#[sqlx::test]
async fn refused_writes_are_recorded_with_their_status(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant = tenant_of(&app, &app.token).await;
    let viewer = tenants::create_token(&app.pool, tenant, "dashboard", Role::ReadOnly).await.unwrap();
    let refused = app.post("/v1/domains", &viewer.token, &json!({"url": "http://192.0.2.10/"})).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let invalid = app.post("/v1/domains", &app.token, &json!({"url": "ftp://x", "interval": 0})).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let missing = app.delete(&format!("/v1/domains/{}", Uuid::now_v7()), &app.token).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let anonymous = app.post("/v1/domains", "cc_not-a-token", &json!({})).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let rows = all_rows(&app, "").await;
    let summary: Vec<(String, i64, bool)> = rows
        .iter()
        .map(|r| {
            (r["token_name"].as_str().unwrap().to_owned(), r["status"].as_i64().unwrap(), r["diff"].is_null())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("dashboard".to_owned(), 403, true),
            ("initial admin token".to_owned(), 422, true),
            ("initial admin token".to_owned(), 404, true),
        ]
    );
    assert_eq!(rows[0]["token_id"], viewer.id.to_string());
    assert_eq!(rows[0]["resource_id"], Value::Null, "a refused create has no resource");
    app.stop().await;
}

/// `GET /v1/audit` is for admins, refuses unknown and bad parameters by name, filters by time,
/// actor, resource and route, pages with a cursor, and shows only the tenant's own rows.
#[sqlx::test]
async fn the_log_is_filtered_paged_and_for_admins_only(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant = tenant_of(&app, &app.token).await;
    let start = Utc::now();
    let a = app.create_domain(json!({"url": "http://192.0.2.10/", "interval": 10})).await;
    let b = app.create_domain(json!({"url": "http://192.0.2.11/", "interval": 10})).await;
    let second = tenants::create_token(&app.pool, tenant, "deployer", Role::Admin).await.unwrap();
    for name in ["one", "two", "three"] {
        let done = app.patch(&format!("/v1/domains/{a}"), &second.token, &json!({"name": name})).await;
        assert_eq!(done.status(), StatusCode::OK);
    }
    let channel = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "ops", "kind": "webhook", "url": "https://hooks.example.com/x"}),
        )
        .await;
    assert_eq!(channel.status(), StatusCode::CREATED);

    // Admins only; unknown and bad parameters named.
    let reader = tenants::create_token(&app.pool, tenant, "reader", Role::ReadOnly).await.unwrap();
    assert_eq!(app.get("/v1/audit", &reader.token).await.status(), StatusCode::FORBIDDEN);
    for (query, field) in [
        ("zzz=1", "zzz"),
        ("actor=me", "actor"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=x", "cursor"),
        ("since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", "until"),
    ] {
        let refused = app.get(&format!("/v1/audit?{query}"), &app.token).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let body: Value = refused.json().await.unwrap();
        assert!(body["error"]["fields"].get(field).is_some(), "{query}: {body}");
    }

    let all = all_rows(&app, "").await;
    assert_eq!(all.len(), 6);
    let by_actor = all_rows(&app, &format!("actor={}", second.id)).await;
    assert_eq!(by_actor.len(), 3);
    assert!(by_actor.iter().all(|r| r["token_name"] == "deployer" && r["resource_id"] == a.as_str()));
    let of_b = all_rows(&app, &format!("resource_type=domain&resource_id={b}")).await;
    assert_eq!(of_b.len(), 1);
    assert_eq!(of_b[0]["route"], "/v1/domains");
    let channels = all_rows(&app, "resource_type=channel").await;
    assert_eq!(channels.len(), 1);
    let patches = all_rows(&app, "route=%2Fv1%2Fdomains%2F%7Bid%7D").await;
    assert_eq!(patches.len(), 3);
    assert!(patches.iter().all(|r| r["method"] == "PATCH"));
    let since = (start - Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (Utc::now() + Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(all_rows(&app, &format!("since={since}&until={until}")).await.len(), 6);
    let later = (Utc::now() + Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(all_rows(&app, &format!("since={later}")).await.is_empty());
    assert!(all_rows(&app, &format!("until={since}")).await.is_empty());

    // Newest first, pages of 2 without gaps or repeats.
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value =
            app.get(&format!("/v1/audit?limit=2&cursor={cursor}"), &app.token).await.json().await.unwrap();
        ids.extend(page["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut expected: Vec<String> = all.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    expected.reverse();
    assert_eq!(ids, expected);

    // Another tenant sees none of it.
    let other = app.other_tenant().await;
    let theirs: Value = app.get("/v1/audit", &other).await.json().await.unwrap();
    assert_eq!(theirs["items"], json!([]));
    app.stop().await;
}

/// The console's writes are recorded as the session's token, `via: console`, under the
/// console's route; the client address is the socket's unless a trusted proxy forwarded it.
#[sqlx::test]
async fn console_writes_are_recorded_with_the_session_token(pool: PgPool) {
    let app = spawn(pool).await;
    let domain = app.create_domain(json!({"url": "http://192.0.2.10/", "interval": 10})).await;
    let mut console = Client::new(&app);
    console.headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    console.sign_in(&app.token).await;
    let token = csrf(&console.get("/console/domains").await.body);
    let paused = console.post(&format!("/console/domains/{domain}/pause"), &[("csrf", &token)]).await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.body);
    let forged = console.post(&format!("/console/domains/{domain}/resume"), &[("csrf", "wrong")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let rows = all_rows(&app, "route=%2Fconsole%2Fdomains%2F%7Bid%7D%2Fpause").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["via"], "console");
    assert_eq!(row["method"], "POST");
    assert_eq!(row["resource_type"], "domain");
    assert_eq!(row["resource_id"], domain.as_str());
    assert_eq!(row["status"], 303);
    assert_eq!(row["token_name"], "initial admin token");
    assert_eq!(row["client_address"], "127.0.0.1", "a forwarded address from an untrusted peer is ignored");
    assert_eq!(
        (&row["diff"]["before"]["paused"], &row["diff"]["after"]["paused"]),
        (&json!(false), &json!(true))
    );
    let refused = all_rows(&app, "route=%2Fconsole%2Fdomains%2F%7Bid%7D%2Fresume").await;
    assert_eq!(refused.len(), 1);
    assert_eq!((refused[0]["status"].as_i64(), &refused[0]["diff"]), (Some(403), &Value::Null));
    let pool = app.pool.clone();
    app.stop().await;

    // Behind a trusted proxy, the forwarded client.
    let app = spawn_with(pool, |c| control_plane::Config {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..c
    })
    .await;
    let response = app
        .http
        .post(app.url("/v1/domains"))
        .bearer_auth(&app.token)
        .header("x-forwarded-for", "198.51.100.4, 203.0.113.9")
        .json(&json!({"url": "http://192.0.2.12/", "interval": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let rows = all_rows(&app, "").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["client_address"], "203.0.113.9");
    app.stop().await;
}

/// Retention deletes rows older than `audit_retention_days`, and only those; the counter says
/// how many.
#[sqlx::test]
async fn rows_past_retention_are_deleted(pool: PgPool) {
    let app = spawn_with(pool, |c| control_plane::Config { audit_retention_days: 30, ..c }).await;
    for n in 0..3 {
        app.create_domain(json!({"url": format!("http://192.0.2.{}/", 20 + n), "interval": 10})).await;
    }
    let rows = all_rows(&app, "").await;
    // Two rows aged past the retention, one just inside it.
    for (row, days) in rows.iter().zip([31, 45, 29]) {
        sqlx::query("UPDATE audit_log SET at = now() - make_interval(days => $2) WHERE id = $1")
            .bind(row["id"].as_str().unwrap().parse::<Uuid>().unwrap())
            .bind(days)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let retention = control_plane::audit::Retention::new(
        app.pool.clone(),
        app.config.audit_retention_days,
        Default::default(),
    );
    assert_eq!(retention.step(Utc::now()).await.unwrap(), 2);
    let kept = all_rows(&app, "").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["id"], rows[2]["id"]);
    assert_eq!(retention.step(Utc::now()).await.unwrap(), 0, "nothing more to delete");
    // A day later the third is past it too.
    assert_eq!(retention.step(Utc::now() + Duration::days(2)).await.unwrap(), 1);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("control_plane_audit_rows_total{via=\"api\"} 3"), "{metrics}");
    app.stop().await;
}
