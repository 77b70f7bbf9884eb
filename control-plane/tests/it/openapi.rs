//! The OpenAPI description: served without a token, equal to the router (every described
//! operation is served, no other method is served on a described path, and no route enters
//! `/v1` except with its description), and schemathesis' fuzzing of a live control plane
//! finds no 5xx and no answer that does not match its schema.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::TestApp;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn description(app: &TestApp) -> Value {
    let response = app.http.get(app.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "served without a token");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn the_description_equals_the_router(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc = description(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    assert_eq!(doc, serde_json::to_value(control_plane::api::openapi::description()).unwrap());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 35, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        assert!(path.starts_with("/v1/"), "{path}");
        let concrete = path.replace("{id}", &Uuid::new_v4().to_string());
        for method in METHODS {
            let request = app
                .http
                .request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), app.url(&concrete))
                .bearer_auth(&app.token);
            let request =
                if matches!(method, "post" | "patch" | "put") { request.json(&json!({})) } else { request };
            let status = request.send().await.unwrap().status();
            match item.get(method) {
                Some(operation) => {
                    operations += 1;
                    assert_ne!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is described but not served"
                    );
                    assert!(!status.is_server_error(), "{method} {path}: {status}");
                    let documented = operation["responses"].as_object().unwrap();
                    assert!(
                        documented.contains_key(status.as_str()),
                        "{method} {path} answered {status}, not among {:?}",
                        documented.keys().collect::<Vec<_>>()
                    );
                    if path != "/v1/openapi.json" {
                        assert!(operation["security"][0]["bearer"].is_array(), "{method} {path}");
                        assert!(documented.contains_key("401"), "{method} {path}");
                    }
                }
                // The path is routed (an unknown path is the JSON 404), this method is not.
                None => assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not described"
                ),
            }
        }
    }
    assert!(operations >= 45, "{operations} operations");
    // Routes enter `/v1` only through `routes!` (a route and its description together).
    let api = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api");
    for entry in std::fs::read_dir(&api).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap().replace("OpenApiRouter::new()", "");
        // `mod.rs` composes the whole surface (`/v1`, the web pages, `/metrics`) with one
        // `Router::new()`.
        let composes = path.ends_with("mod.rs");
        for forbidden in [".route(", "axum::routing", "Router::new()"]
            .into_iter()
            .filter(|f| !composes || !f.starts_with("Router"))
        {
            assert!(
                !source.contains(forbidden),
                "{} registers a route without its description ({forbidden})",
                path.display()
            );
        }
    }
    app.stop().await;
}

/// The places where the description allows any value or any object, and why the API truly
/// takes or gives arbitrary JSON there. Every other request and answer has a real schema.
const FREE_FORM: [(&str, &str); 5] = [
    (
        "/components/schemas/AuditDiff/properties/before",
        "the changed top-level fields of whichever resource was written (a domain, a channel, …)",
    ),
    ("/components/schemas/AuditDiff/properties/after", "as `before`"),
    (
        "/components/schemas/JsonAssertion/properties/value",
        "any JSON value the nodes a JSONPath selects are compared with",
    ),
    (
        "/components/schemas/Notification/properties/details",
        "kind-specific (a digest, a report, a DNS change, …): the webhook body's `details`, described \
         per notification kind in the README",
    ),
    (
        "/paths/~1v1~1openapi.json/get/responses/200/content/application~1json/schema",
        "this description itself, an OpenAPI 3.1 document",
    ),
];

/// Every schema in `doc` that is free-form (no type, or an object with no properties and no
/// typed additional properties), as a JSON pointer.
fn free_form_schemas(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
        walk_schema(schema, &format!("/components/schemas/{}", escape(name)), &mut found);
    }
    for (name, response) in doc["components"]["responses"].as_object().into_iter().flatten() {
        walk_content(response, &format!("/components/responses/{}", escape(name)), &mut found);
    }
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let at = format!("/paths/{}/{method}", escape(path));
            for (i, parameter) in operation["parameters"].as_array().into_iter().flatten().enumerate() {
                walk_schema(&parameter["schema"], &format!("{at}/parameters/{i}/schema"), &mut found);
            }
            walk_content(&operation["requestBody"], &format!("{at}/requestBody"), &mut found);
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                walk_content(response, &format!("{at}/responses/{status}"), &mut found);
            }
        }
    }
    found
}

/// The schemas of a request body's or a response's content.
fn walk_content(holder: &Value, at: &str, found: &mut Vec<String>) {
    for (media, content) in holder["content"].as_object().into_iter().flatten() {
        walk_schema(&content["schema"], &format!("{at}/content/{}/schema", escape(media)), found);
    }
}

fn walk_schema(schema: &Value, at: &str, found: &mut Vec<String>) {
    let Some(object) = schema.as_object() else {
        // `true` (any value) is free-form; `false` allows nothing.
        if schema == &Value::Bool(true) {
            found.push(at.to_owned());
        }
        return;
    };
    let composed = ["oneOf", "anyOf", "allOf"].iter().any(|k| object.contains_key(*k));
    let types: Vec<&str> = match &object.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let typed_extra =
        object.get("additionalProperties").is_some_and(|a| a.as_object().is_some_and(|a| !a.is_empty()));
    let pinned = ["$ref", "enum", "const", "not"].iter().any(|k| object.contains_key(*k));
    let any_value = types.is_empty() && !composed && !pinned;
    let any_object =
        types.contains(&"object") && !object.contains_key("properties") && !typed_extra && !composed;
    if any_value || any_object {
        found.push(at.to_owned());
    }
    for (key, child) in object {
        match key.as_str() {
            "properties" => {
                for (name, property) in child.as_object().into_iter().flatten() {
                    walk_schema(property, &format!("{at}/properties/{}", escape(name)), found);
                }
            }
            "oneOf" | "anyOf" | "allOf" | "prefixItems" => {
                for (i, item) in child.as_array().into_iter().flatten().enumerate() {
                    walk_schema(item, &format!("{at}/{key}/{i}"), found);
                }
            }
            "items" | "not" => walk_schema(child, &format!("{at}/{key}"), found),
            "additionalProperties" if child.is_object() => walk_schema(child, &format!("{at}/{key}"), found),
            _ => {}
        }
    }
}

/// A JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[test]
fn every_request_and_answer_has_a_real_schema() {
    let doc = serde_json::to_value(control_plane::api::openapi::description()).unwrap();
    let found = free_form_schemas(&doc);
    let allowed: Vec<&str> = FREE_FORM.iter().map(|(at, _)| *at).collect();
    let unexplained: Vec<&String> = found.iter().filter(|at| !allowed.contains(&at.as_str())).collect();
    assert!(unexplained.is_empty(), "free-form schemas (give each a real schema):\n{unexplained:#?}");
    let stale: Vec<&&str> = allowed.iter().filter(|at| !found.iter().any(|f| f == **at)).collect();
    assert!(stale.is_empty(), "listed as free-form but no longer are: {stale:?}");
    // The walker finds what it is meant to: an object without properties, and any value.
    let probe = json!({"components": {"schemas": {
        "A": {"type": "object"},
        "B": {"type": "object", "properties": {"x": {}, "y": {"type": "integer"}}},
        "C": {"type": "object", "additionalProperties": {"type": "string"}},
        "D": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/C"}]},
    }}, "paths": {}});
    assert_eq!(free_form_schemas(&probe), ["/components/schemas/A", "/components/schemas/B/properties/x"]);
    // Tagged enums carry their discriminator.
    assert_eq!(doc["components"]["schemas"]["CheckConfig"]["discriminator"]["propertyName"], "type");
    assert_eq!(doc["components"]["schemas"]["AuthBody"]["discriminator"]["propertyName"], "kind");
    // A check test's definition is a closed domain body with `wait_ms`, not an `allOf` whose
    // closed part would refuse `wait_ms`.
    let definition = &doc["components"]["schemas"]["CheckDefinition"];
    assert_eq!(definition["additionalProperties"], false, "{definition:#}");
    for field in ["url", "check", "wait_ms"] {
        assert!(definition["properties"][field].is_object(), "{field}: {definition:#}");
    }
}

/// Where schemathesis is: `CROSSCHECK_SCHEMATHESIS`, else the virtual environment `.ci/run`
/// installs it in.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("CROSSCHECK_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    let path = home.join(".cache/crosscheck/schemathesis/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is not installed at {} (nor named by CROSSCHECK_SCHEMATHESIS); install it with \
         `python3 -m venv ~/.cache/crosscheck/schemathesis && \
         ~/.cache/crosscheck/schemathesis/bin/pip install schemathesis==4.32.5` (what .ci/run does)",
        path.display()
    );
    path
}

/// Resources of every kind, so the answers the fuzzer checks hold real items; returns a
/// schemathesis configuration that sends each kind's `{id}` routes (but `DELETE`) to its
/// resource, so the fuzzer's bodies reach the parsers of updates and the answers of reads.
async fn populate(app: &TestApp) -> String {
    let shop = app
        .create_domain(json!({
            "name": "shop", "url": "https://shop.example.com/health", "keyword": "ok", "interval": "fast",
            "regions": ["ams", "iad"], "quorum": 2, "tags": ["prod", "web"],
            "headers": [{"name": "x-env", "value": "prod"}, {"name": "x-key", "value": "s3cret", "secret": true}],
            "auth": {"kind": "bearer", "token": "t0ken"}, "slo": {"target": 99.9},
        }))
        .await;
    app.create_domain(json!({"name": "db", "check": {"type": "tcp", "host": "db.example.com", "port": 5432}, "tags": ["db"]}))
        .await;
    let created = [
        ("/v1/channels", json!({"name": "ops", "kind": "webhook", "url": "https://hooks.example.com/x"})),
        (
            "/v1/status-pages",
            json!({"slug": "shop", "title": "Shop", "description": "all\nsystems",
                   "components": [{"domain": shop, "name": "Checkout", "group": "web", "reveal": ["url"]}]}),
        ),
        (
            "/v1/maintenance",
            json!({"title": "upgrade", "scope": {"tags": ["db"]},
                   "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T01:00:00Z"}),
        ),
        (
            "/v1/maintenance",
            json!({"title": "weekly", "scope": {"domain_ids": [shop]}, "time_zone": "Europe/Berlin",
                   "dtstart": "2026-01-04T02:00:00", "duration": "PT2H", "rrule": "FREQ=WEEKLY;BYDAY=SU"}),
        ),
        ("/v1/tokens", json!({"name": "reader"})),
    ];
    let mut bound = vec![("domains".to_owned(), shop)];
    for (path, body) in created {
        let response = app.post(path, &app.token, &body).await;
        let text = response.text().await.unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let id = answer["id"].as_str().unwrap_or_else(|| panic!("{path}: {text}")).to_owned();
        let route = path.trim_start_matches("/v1/").to_owned();
        if !bound.iter().any(|(r, _)| *r == route) {
            bound.push((route, id));
        }
    }
    bound
        .iter()
        .map(|(route, id)| {
            format!(
                "[[operations]]\ninclude-path-regex = '^/v1/{route}/\\{{id\\}}'\nexclude-method = 'DELETE'\n\
                 parameters = {{ \"path.id\" = \"{id}\" }}\n\n"
            )
        })
        .collect()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch(pool: PgPool) {
    let binary = schemathesis();
    let app = TestApp::spawn(pool).await;
    let report = tempdir();
    let config = report.join("schemathesis.toml");
    std::fs::write(&config, populate(&app).await).unwrap();
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {}", app.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        // An event stream never ends; its answer is checked by the live tests.
        .args(["--exclude-path", "/v1/events"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--seed", "20260101", "--workers", "2", "--no-shrink"])
        .args(["--request-timeout", "30"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        // Its cache and reports stay out of the source tree.
        .current_dir(&report)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(420), command.output())
        .await
        .expect("schemathesis finishes within its time budget")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "schemathesis found failures ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("passed"), "no test case ran:\n{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&report);
    app.stop().await;
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crosscheck-schemathesis-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
