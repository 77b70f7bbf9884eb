//! Input validation at the edge: NUL and other control characters, over-long text and arrays,
//! unknown query parameters, undecodable path ids and wrong JSON types are each answered with
//! the JSON error naming what is wrong, before anything reaches PostgreSQL.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::TestApp;

/// Sends `body` and asserts a 422 `validation_failed` whose `fields` name `field` with a
/// message containing `says`.
async fn assert_refused(app: &TestApp, method: Method, path: &str, body: &Value, field: &str, says: &str) {
    let response = app
        .http
        .request(method.clone(), app.url(path))
        .bearer_auth(&app.token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path} {body}: {answer}");
    assert_eq!(answer["error"]["code"], "validation_failed", "{answer}");
    let message = answer["error"]["fields"][field].as_str().unwrap_or_else(|| {
        panic!("{method} {path}: `{field}` not named in {answer}");
    });
    assert!(message.contains(says), "{method} {path}: `{field}`: {message:?} should say {says:?}");
}

/// A domain of the test tenant, for the routes that need one.
async fn a_domain(app: &TestApp) -> String {
    app.create_domain(json!({"url": "https://example.com/", "name": "shop"})).await
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn nul_in_every_text_field_is_a_422_naming_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let domain = a_domain(&app).await;
    let nobody = Uuid::new_v4();
    let nul = "before\u{0}after";
    let page = |over: Value| {
        let mut body =
            json!({"slug": "main", "title": "Main", "components": [{"domain": domain, "name": "Shop"}]});
        body.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
        body
    };
    let window = |over: Value| {
        let mut body = json!({
            "title": "upgrade", "scope": {"tags": ["db"]},
            "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T01:00:00Z"
        });
        body.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
        body
    };
    let channel = json!({"name": nul, "kind": "webhook", "url": "https://hooks.example.com/x"});
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/v1/domains".into(),
            json!({"url": "https://example.com/", "keyword": nul}),
            "keyword",
        ),
        (Method::POST, "/v1/domains".into(), json!({"url": "https://example.com/", "name": nul}), "name"),
        (
            Method::POST,
            "/v1/domains".into(),
            json!({"url": "https://example.com/", "tags": ["ok", nul]}),
            "tags[1]",
        ),
        (
            Method::POST,
            "/v1/domains".into(),
            json!({"url": "https://example.com/", "headers": [{"name": "x-a", "value": nul}]}),
            "headers[0].value",
        ),
        (Method::POST, "/v1/domains".into(), json!({"url": "https://example.com/", "body": nul}), "body"),
        (Method::PATCH, format!("/v1/domains/{domain}"), json!({"name": nul}), "name"),
        (
            Method::POST,
            "/v1/checks/test".into(),
            json!({"url": "https://example.com/", "keyword": nul}),
            "keyword",
        ),
        (Method::POST, "/v1/tokens".into(), json!({"name": nul}), "name"),
        (Method::POST, "/v1/channels".into(), channel, "name"),
        (Method::POST, format!("/v1/incidents/{nobody}/ack"), json!({"note": nul}), "note"),
        (
            Method::POST,
            format!("/v1/incidents/{nobody}/updates"),
            json!({"status": "investigating", "message": nul}),
            "message",
        ),
        (Method::POST, "/v1/status-pages".into(), page(json!({"title": nul})), "title"),
        (Method::POST, "/v1/status-pages".into(), page(json!({"description": nul})), "description"),
        (Method::POST, "/v1/status-pages".into(), page(json!({"slug": nul})), "slug"),
        (Method::POST, "/v1/status-pages".into(), page(json!({"hostnames": [nul]})), "hostnames[0]"),
        (
            Method::POST,
            "/v1/status-pages".into(),
            page(json!({"components": [{"domain": domain, "name": "Shop", "group": nul}]})),
            "components[0].group",
        ),
        (Method::POST, "/v1/maintenance".into(), window(json!({"title": nul})), "title"),
        (Method::POST, "/v1/maintenance".into(), window(json!({"description": nul})), "description"),
        (Method::POST, "/v1/maintenance".into(), window(json!({"scope": {"tags": [nul]}})), "scope.tags[0]"),
        (Method::PATCH, "/v1/tenant".into(), json!({"time_zone": nul}), "time_zone"),
        (
            Method::POST,
            "/v1/domains".into(),
            json!({"url": "https://example.com/", nul: 1}),
            "before\\0after",
        ),
    ];
    for (method, path, body, field) in &cases {
        assert_refused(&app, method.clone(), path, body, field, "NUL").await;
    }
    // Nothing of it was stored.
    let domains: Value = app.get("/v1/domains", &app.token).await.json().await.unwrap();
    assert_eq!(domains["items"].as_array().unwrap().len(), 1);
    let tokens: Value = app.get("/v1/tokens", &app.token).await.json().await.unwrap();
    assert_eq!(tokens["items"].as_array().unwrap().len(), 1, "only the test's own token");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn control_characters_are_refused_in_single_line_fields_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let domain = a_domain(&app).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/channels",
            json!({"name": "ops\u{1b}[2J", "kind": "webhook", "url": "https://h.example.com/"}),
            "name",
        ),
        ("/v1/tokens", json!({"name": "ci\ndeploy"}), "name"),
        ("/v1/tokens", json!({"name": "bell\u{7}"}), "name"),
        ("/v1/domains", json!({"url": "https://example.com/", "tags": ["a\u{85}"]}), "tags[0]"),
        (
            "/v1/maintenance",
            json!({"title": "db\tupgrade", "scope": {"tags": ["db"]},
                   "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T01:00:00Z"}),
            "title",
        ),
        (
            "/v1/maintenance",
            json!({"title": "db", "description": "a\u{7f}b", "scope": {"tags": ["db"]},
                   "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T01:00:00Z"}),
            "description",
        ),
    ];
    for (path, body, field) in &cases {
        assert_refused(&app, Method::POST, path, body, field, "control characters").await;
    }
    // Line breaks and tabs are text in a multi-line field.
    let created = app
        .post(
            "/v1/status-pages",
            &app.token,
            &json!({"slug": "main", "title": "Main", "description": "first line\nsecond line",
                    "components": [{"domain": domain, "name": "Shop"}]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED, "{}", created.text().await.unwrap());
    let note = app
        .post(
            &format!("/v1/incidents/{}/ack", Uuid::new_v4()),
            &app.token,
            &json!({"note": "looking\r\n\tat it"}),
        )
        .await;
    assert_eq!(
        note.status(),
        StatusCode::NOT_FOUND,
        "the note passed the screen; the incident does not exist"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn over_long_strings_and_arrays_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let huge = "x".repeat(control_plane::api::text::MAX_STRING_CHARS + 1);
    assert_refused(&app, Method::POST, "/v1/tokens", &json!({"name": "x".repeat(201)}), "name", "200").await;
    assert_refused(&app, Method::POST, "/v1/tokens", &json!({"name": huge}), "name", "at most").await;
    let channel = json!({"name": "x".repeat(201), "kind": "webhook", "url": "https://h.example.com/"});
    assert_refused(&app, Method::POST, "/v1/channels", &channel, "name", "200").await;
    let keyword = json!({"url": "https://example.com/", "keyword": "k".repeat(257)});
    assert_refused(&app, Method::POST, "/v1/domains", &keyword, "keyword", "256").await;
    let regions = vec!["ams"; control_plane::api::text::MAX_ARRAY_ITEMS + 1];
    let many = json!({"url": "https://example.com/", "regions": regions});
    assert_refused(&app, Method::POST, "/v1/domains", &many, "regions", "items").await;
    let note = json!({"note": "n".repeat(2_001)});
    assert_refused(
        &app,
        Method::POST,
        &format!("/v1/incidents/{}/ack", Uuid::new_v4()),
        &note,
        "note",
        "2000",
    )
    .await;
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn unknown_query_parameters_are_refused_on_every_list_route(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let domain = a_domain(&app).await;
    let window: Value = app
        .post(
            "/v1/maintenance",
            &app.token,
            &json!({"title": "db", "scope": {"domain_ids": [domain]},
                    "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T01:00:00Z"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let window = window["id"].as_str().unwrap();
    let incident = Uuid::new_v4();
    let routes = [
        "/v1/domains".to_owned(),
        "/v1/regions".into(),
        "/v1/tokens".into(),
        "/v1/channels".into(),
        "/v1/notifications".into(),
        "/v1/incidents".into(),
        format!("/v1/incidents/{incident}/updates"),
        "/v1/digests".into(),
        "/v1/status-pages".into(),
        "/v1/maintenance".into(),
        format!("/v1/maintenance/{window}/occurrences"),
        format!("/v1/domains/{domain}/results"),
        format!("/v1/domains/{domain}/uptime"),
        format!("/v1/domains/{domain}/latency"),
        format!("/v1/domains/{domain}/dns"),
        format!("/v1/domains/{domain}/sla"),
        "/v1/reports/sla".into(),
        "/v1/events".into(),
    ];
    for route in &routes {
        let response = app.get(&format!("{route}?zzz=1"), &app.token).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{route}: {answer}");
        assert_eq!(answer["error"]["fields"]["zzz"], "unknown query parameter", "{route}: {answer}");
    }
    // Known parameters' values are screened like body text.
    for (query, field) in [("tag=a%00b", "tag"), ("cursor=%1b", "cursor")] {
        let response = app.get(&format!("/v1/domains?{query}"), &app.token).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"]["fields"][field].as_str().unwrap().contains("characters"), "{answer}");
    }
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn bad_path_ids_are_json_404s(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in [
        "/v1/domains/not-a-uuid",
        "/v1/domains/%FF%FE",
        "/v1/domains/%00",
        "/v1/channels/12",
        "/v1/incidents/%E2%82",
        "/v1/status-pages/x/",
        "/v1/maintenance/%FF/occurrences",
        "/v1/domains/%FF/uptime",
    ] {
        let response = app.get(path, &app.token).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {text}");
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert_eq!(answer["error"]["code"], "not_found", "{path}");
    }
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn wrong_json_types_are_422s_naming_the_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let domain = a_domain(&app).await;
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (Method::POST, "/v1/domains".into(), json!({"url": 5}), "url"),
        (
            Method::POST,
            "/v1/domains".into(),
            json!({"url": "https://example.com/", "interval": [1]}),
            "interval",
        ),
        (Method::POST, "/v1/domains".into(), json!({"url": "https://example.com/", "tags": "db"}), "tags"),
        (Method::PATCH, format!("/v1/domains/{domain}"), json!({"regions": {"ams": true}}), "regions"),
        (Method::POST, "/v1/tokens".into(), json!({"name": 5}), "name"),
        (Method::POST, "/v1/tokens".into(), json!({"name": "ci", "role": true}), "role"),
        (Method::POST, "/v1/channels".into(), json!({"name": [], "kind": "webhook"}), "name"),
        (
            Method::POST,
            "/v1/status-pages".into(),
            json!({"slug": "s", "title": "t", "components": "x"}),
            "components",
        ),
        (Method::POST, "/v1/maintenance".into(), json!({"title": 1}), "title"),
        (Method::POST, format!("/v1/incidents/{}/ack", Uuid::new_v4()), json!({"note": 5}), "note"),
        (Method::PATCH, "/v1/tenant".into(), json!({"time_zone": 5}), "time_zone"),
        (Method::POST, "/v1/checks/test".into(), json!({"domain_id": domain, "wait_ms": "x"}), "wait_ms"),
    ];
    for (method, path, body, field) in &cases {
        assert_refused(&app, method.clone(), path, body, field, "").await;
    }
    app.stop().await;
}
