//! `POST /v1/checks/test` end to end: real agents (mutual TLS to the ingest listener) probe a
//! local target on request, and the control plane answers with their results without storing
//! them or letting them vote.

use std::time::{Duration, Instant};

use control_plane::Config;
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::{eventually, random_prefix};
use sqlx::PgPool;

use crate::delivery::RunningAgent;
use crate::helpers::{agents_config, test_config, TestApp, WAIT};
use crate::ingest::Pki;

/// A local HTTP target answering `status` with the body "ok" on every path.
async fn target(status: u16) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().fallback(move || async move { (status, "ok") });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A local HTTPS target serving the control plane's own server certificate (for localhost and
/// 127.0.0.1, issued by the test CA, which agents do not trust) and answering 200 "ok".
async fn tls_target(pki: &Pki) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = pki.store.ca_cert().parent().unwrap().to_owned();
    let chain = shared::tls::certificates("cert", &dir.join("server.pem").display().to_string()).unwrap();
    let key = shared::tls::private_key("key", &dir.join("server.key").display().to_string()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(shared::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// A control plane with ingest, private targets allowed (the target is on 127.0.0.1).
async fn spawn(pool: PgPool, pki: &Pki) -> TestApp {
    let mut config = agents_config(&random_prefix("checks"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    TestApp::spawn_with(pool, config).await
}

/// Starts one agent per region and waits until each listens for probe requests.
async fn agents(app: &TestApp, pki: &Pki, regions: &[&str]) -> Vec<RunningAgent> {
    let port = app.ingest_addr.unwrap().port();
    let mut agents = Vec::new();
    for region in regions {
        agents.push(RunningAgent::start(pki, region, app.prefix(), port).await);
    }
    let channel = format!("{}:probe-requests", app.prefix());
    let want = regions.len() as i64;
    eventually(WAIT, "every agent subscribed to probe requests", || {
        let (redis, channel) = (app.redis.clone(), channel.clone());
        async move {
            let counts: Vec<fred::types::Value> = redis.pubsub_numsub(channel).await.ok()?;
            (counts.get(1)?.as_i64()? >= want).then_some(())
        }
    })
    .await;
    agents
}

async fn test(app: &TestApp, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = app.post("/v1/checks/test", token, body).await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Waits until the control plane acknowledged each agent's test result (so whatever ingest
/// would store is committed), then counts the stored results.
async fn stored_after_acks(app: &TestApp, agents: &[RunningAgent]) -> i64 {
    for agent in agents {
        eventually(WAIT, "the test result acknowledged", || async {
            (agent.metrics.delivery_results_acknowledged.get() >= 1).then_some(())
        })
        .await;
    }
    timeseries_rows(app).await
}

async fn timeseries_rows(app: &TestApp) -> i64 {
    let ts = PgPool::connect(&app.config.timeseries_url).await.unwrap();
    let rows = sqlx::query_scalar("SELECT count(*) FROM probe_results").fetch_one(&ts).await.unwrap();
    ts.close().await;
    rows
}

async fn consensus_rows(app: &TestApp) -> (i64, i64) {
    let observations =
        sqlx::query_scalar("SELECT count(*) FROM region_observations").fetch_one(&app.pool).await.unwrap();
    let states = sqlx::query_scalar("SELECT count(*) FROM domain_state").fetch_one(&app.pool).await.unwrap();
    (observations, states)
}

fn regions_of(answer: &Value) -> Vec<&str> {
    answer["results"].as_array().unwrap().iter().map(|r| r["region"].as_str().unwrap()).collect()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn an_unsaved_domain_is_probed_by_two_regions_and_nothing_is_stored(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn(pool, &pki).await;
    let target = target(200).await;
    let agents = agents(&app, &pki, &["ams", "iad"]).await;

    let (status, answer) = test(
        &app,
        &app.token,
        &json!({"url": format!("http://127.0.0.1:{}/health", target.port()), "keyword": "ok",
                "regions": ["ams", "iad"], "wait_ms": 30_000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(answer["missing_regions"], json!([]));
    assert_eq!(answer["domain_id"], Value::Null, "an unsaved domain has no id");
    assert_eq!(regions_of(&answer), ["ams", "iad"]);
    for result in answer["results"].as_array().unwrap() {
        let region = result["region"].as_str().unwrap();
        assert_eq!(result["agent_id"], format!("{region}-1"), "from the certificate");
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["error_kind"], Value::Null);
        assert_eq!(result["status_code"], 200);
        assert_eq!(result["resolved_ip"], "127.0.0.1");
        assert_eq!(result["http_version"], "HTTP/1.1", "{result}");
        assert!(result["timings"]["total_ms"].as_f64().unwrap() > 0.0, "{result}");
        assert!(result["timings"]["connect_ms"].as_f64().is_some(), "{result}");
        assert_eq!(result["certificate"], Value::Null, "plain HTTP");
    }
    for agent in &agents {
        assert_eq!(agent.metrics.probe_request_count("tested"), 1);
    }
    // The results went through ingest (they reached this request) and were not stored, and
    // nothing reached consensus.
    assert_eq!(stored_after_acks(&app, &agents).await, 0);
    assert_eq!(consensus_rows(&app).await, (0, 0));
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_saved_domain_is_tested_as_stored_without_voting(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn(pool, &pki).await;
    let target = target(503).await;
    // Paused, so the agents never probe it on their schedule: every result is the test's.
    let id = app
        .create_domain(json!({"url": format!("http://127.0.0.1:{}/", target.port()), "regions": ["ams"],
                              "paused": true}))
        .await;
    let agents = agents(&app, &pki, &["ams", "iad"]).await;

    let (status, answer) = test(&app, &app.token, &json!({"domain_id": id, "wait_ms": 30_000})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["domain_id"], id.as_str());
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(regions_of(&answer), ["ams"], "the domain's regions by default");
    let result = &answer["results"][0];
    assert_eq!(result["ok"], false);
    assert_eq!(result["error_kind"], "status");
    assert_eq!(result["status_code"], 503);
    assert!(result["error_detail"].as_str().unwrap().contains("503"), "{result}");

    // Other regions on request, also those the domain does not run in.
    let (status, answer) =
        test(&app, &app.token, &json!({"domain_id": id, "regions": ["iad"], "wait_ms": 30_000})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(regions_of(&answer), ["iad"]);

    assert_eq!(stored_after_acks(&app, &agents).await, 0);
    assert_eq!(consensus_rows(&app).await, (0, 0), "a failed test opens nothing");
    let incidents: i64 =
        sqlx::query_scalar("SELECT count(*) FROM incidents").fetch_one(&app.pool).await.unwrap();
    assert_eq!(incidents, 0);
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn an_https_target_answers_with_its_certificate_even_when_untrusted(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn(pool, &pki).await;
    let target = tls_target(&pki).await;
    let _agents = agents(&app, &pki, &["ams"]).await;

    let (status, answer) = test(
        &app,
        &app.token,
        &json!({"url": format!("https://127.0.0.1:{}/", target.port()), "regions": ["ams"], "wait_ms": 30_000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let result = &answer["results"][0];
    assert_eq!(result["ok"], false, "the test CA is not among the agent's roots: {result}");
    assert_eq!(result["error_kind"], "tls");
    assert!(result["timings"]["tls_ms"].as_f64().is_some(), "{result}");
    let certificate = &result["certificate"];
    assert!(certificate["issuer"].as_str().unwrap().contains("it CA"), "{certificate}");
    assert!(!certificate["subject"].as_str().unwrap().is_empty(), "{certificate}");
    assert_eq!(certificate["valid"], false);
    assert!(certificate["validation_error"].is_string(), "{certificate}");
    assert!(certificate["not_after"].is_string(), "{certificate}");
    let days_left = certificate["days_left"].as_i64().unwrap();
    assert!((28..=30).contains(&days_left), "issued for 30 days: {days_left}");
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_region_without_an_agent_is_listed_as_missing_after_the_wait(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn(pool, &pki).await;
    let target = target(200).await;
    let _agents = agents(&app, &pki, &["ams"]).await;

    let started = Instant::now();
    let (status, answer) = test(
        &app,
        &app.token,
        &json!({"url": format!("http://127.0.0.1:{}/", target.port()), "regions": ["ams", "sin"],
                "wait_ms": 3_000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "what arrived is answered: {answer}");
    assert!(started.elapsed() >= Duration::from_millis(3_000), "waited for sin until wait_ms");
    assert_eq!(answer["complete"], false);
    assert_eq!(answer["missing_regions"], json!(["sin"]));
    assert_eq!(regions_of(&answer), ["ams"]);
    assert_eq!(answer["results"][0]["ok"], true);
}

fn limited_config(prefix: &str) -> Config {
    Config { check_test_per_minute: 1, check_test_burst: 2, ..test_config(prefix, "redis://127.0.0.1:6379") }
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn refusals_name_the_field_the_role_the_tenant_and_the_rate(pool: PgPool) {
    let app = TestApp::spawn_with(pool, limited_config(&random_prefix("checks"))).await;
    let url = "https://example.com/health";

    for (body, field) in [
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"url": url, "wait_ms": 5}), "wait_ms"),
        (json!({"url": url, "wait_ms": 60_001}), "wait_ms"),
        (json!({"url": url, "regions": ["mars"]}), "regions"),
        (json!({"url": url, "interval": 0}), "interval"),
        (json!({"domain_id": "not-an-id"}), "domain_id"),
        (json!({"domain_id": uuid::Uuid::now_v7(), "keyword": "x"}), "keyword"),
        (json!({"domain_id": uuid::Uuid::now_v7(), "regions": ["mars"]}), "regions"),
    ] {
        let (status, answer) = test(&app, &app.token, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(answer["error"]["fields"][field].is_string(), "{body} names {field}: {answer}");
    }

    let response = app
        .post("/v1/tokens", &app.token, &json!({"name": "dashboard", "role": "read_only"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let read_only = response["token"].as_str().unwrap();
    let (status, _) = test(&app, read_only, &json!({"url": url})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a test makes agents send traffic: admin only");

    let other = app.other_tenant().await;
    let theirs = app.post("/v1/domains", &other, &json!({"url": url})).await.json::<Value>().await.unwrap();
    let (status, answer) = test(&app, &app.token, &json!({"domain_id": theirs["id"]})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    // No agent listens under this prefix: answered at once, every region missing.
    for _ in 0..2 {
        let (status, answer) = test(&app, &app.token, &json!({"url": url, "regions": ["sin"]})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["missing_regions"], json!(["sin"]));
    }
    let response = app.post("/v1/checks/test", &app.token, &json!({"url": url})).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "one test a minute: {retry_after}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "rate_limited");
    // Another tenant has its own budget.
    let (status, answer) = test(&app, &other, &json!({"url": url, "regions": ["sin"]})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn ingest_splits_test_results_off_and_publishes_them(pool: PgPool) {
    use crate::ingest::{batch, client, result};
    let pki = Pki::new();
    let app = spawn(pool, &pki).await;
    let subscriber = shared::redis::builder(&app.config.redis_url, Default::default())
        .unwrap()
        .build_subscriber_client()
        .unwrap();
    subscriber.init().await.unwrap();
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(format!("{}:check-results", app.prefix())).await.unwrap();
    let (cert, key) = pki.agent("ams", "ams-1");
    let mut client = client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();

    let scheduled: uuid::Uuid =
        app.create_domain(json!({"url": "https://example.com/"})).await.parse().unwrap();
    let tested = uuid::Uuid::now_v7();
    let request_id = uuid::Uuid::now_v7();
    let test_result = shared::proto::ProbeResult {
        request_id: Some(request_id.as_bytes().to_vec()),
        ..result(tested, false)
    };
    let ack = client
        .send_batch(batch("ams", vec![result(scheduled, true), test_result.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.stored, ack.duplicate), (1, false), "only the scheduled result is stored");
    let ack = client.send_batch(batch("ams", vec![test_result])).await.unwrap().into_inner();
    assert_eq!((ack.stored, ack.duplicate), (0, false), "a batch of tests only stores nothing");

    for _ in 0..2 {
        let message = tokio::time::timeout(WAIT, messages.recv()).await.expect("a published result").unwrap();
        let published: control_plane::checks::CheckResult =
            serde_json::from_str(&message.value.as_string().unwrap()).unwrap();
        assert_eq!(published.request_id, request_id);
        assert_eq!((published.region.as_str(), published.agent_id.as_str()), ("ams", "ams-1"));
        assert_eq!((published.ok, published.status_code), (false, Some(503)));
    }
    let ts = PgPool::connect(&app.config.timeseries_url).await.unwrap();
    let stored: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT domain_id FROM probe_results").fetch_all(&ts).await.unwrap();
    assert_eq!(stored, [scheduled]);
    ts.close().await;
    let _ = subscriber.quit().await;
}

/// A local target that answers 200 "ok" only to `POST /api` with bearer `token` and the JSON
/// body `{"ping":1}`, and 401 otherwise.
async fn guarded_target(token: &'static str) -> std::net::SocketAddr {
    use axum::http::{HeaderMap, Method, StatusCode as Code};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        axum::Router::new().fallback(move |method: Method, headers: HeaderMap, body: String| async move {
            let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
            let typed = headers.get("content-type").and_then(|v| v.to_str().ok());
            let expected = format!("Bearer {token}");
            let good = method == Method::POST
                && bearer == Some(expected.as_str())
                && typed == Some("application/json")
                && body == "{\"ping\":1}";
            if good {
                (Code::OK, "ok")
            } else {
                (Code::UNAUTHORIZED, "who are you")
            }
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn tests_send_the_request_options_and_a_saved_domains_secrets_without_showing_them(pool: PgPool) {
    const TOKEN: &str = "check-token-secret";
    let pki = Pki::new();
    let app = spawn(pool, &pki).await;
    let target = target_url(guarded_target(TOKEN).await);
    let _agents = agents(&app, &pki, &["ams"]).await;
    let spec = json!({
        "url": target, "method": "POST", "regions": ["ams"], "keyword": "ok",
        "headers": [{"name": "Content-Type", "value": "application/json"}],
        "auth": {"kind": "bearer", "token": TOKEN}, "body": "{\"ping\":1}"
    });

    // An unsaved spec, parsed by the domain rules: the agent sends all of it.
    let mut unsaved = spec.clone();
    unsaved["wait_ms"] = json!(30_000);
    let (status, answer) = test(&app, &app.token, &unsaved).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"][0]["ok"], true, "{answer}");
    assert!(!answer.to_string().contains(TOKEN), "{answer}");
    let (status, answer) = test(&app, &app.token, &json!({"url": target, "body": "x"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer["error"]["fields"]["body"].is_string(), "{answer}");

    // A saved domain (paused, so only the tests probe it) is tested with its stored secrets.
    let mut saved = spec.clone();
    saved["paused"] = json!(true);
    let id = app.create_domain(saved).await;
    let (status, answer) = test(&app, &app.token, &json!({"domain_id": id, "wait_ms": 30_000})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"][0]["ok"], true, "{answer}");
    assert!(!answer.to_string().contains(TOKEN), "{answer}");

    // The wrong token: the agent reports the 401, and nothing of the token.
    let patched = app
        .patch(
            &format!("/v1/domains/{id}"),
            &app.token,
            &json!({"auth": {"kind": "bearer", "token": "wrong-one"}}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let (status, answer) = test(&app, &app.token, &json!({"domain_id": id, "wait_ms": 30_000})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let result = &answer["results"][0];
    assert_eq!((&result["ok"], &result["status_code"]), (&json!(false), &json!(401)), "{answer}");
    assert!(!answer.to_string().contains("wrong-one"), "{answer}");
}

fn target_url(addr: std::net::SocketAddr) -> String {
    format!("http://127.0.0.1:{}/api", addr.port())
}

/// A TCP service writing `banner` to every connection and then closing it.
async fn banner(banner: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(banner).await;
        }
    });
    addr
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn other_check_types_go_from_the_api_through_redis_to_the_agents(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn(pool, &pki).await;
    let smtp = banner(b"220 mail.test ESMTP\r\n").await;
    let agents = agents(&app, &pki, &["ams"]).await;

    // A saved tcp check, read back as stored, then tested as stored.
    let id = app
        .create_domain(
            json!({"check": {"type": "tcp", "host": "127.0.0.1", "port": smtp.port(), "expect": "220 "},
                              "regions": ["ams"], "paused": true}),
        )
        .await;
    let shown = app.get(&format!("/v1/domains/{id}"), &app.token).await.json::<Value>().await.unwrap();
    assert_eq!(shown["check"]["type"], "tcp", "{shown}");
    assert_eq!(shown["url"], format!("tcp://127.0.0.1:{}", smtp.port()));
    assert_eq!(shown["json"], Value::Null);
    let (status, answer) = test(&app, &app.token, &json!({"domain_id": id, "wait_ms": 30_000})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let result = &answer["results"][0];
    assert_eq!(result["ok"], true, "{result}");
    assert!(result["timings"]["ttfb_ms"].as_f64().is_some(), "{result}");

    // An unsaved one whose expectation fails, named by its error kind.
    let (_, answer) = test(
        &app,
        &app.token,
        &json!({"check": {"type": "tcp", "host": "127.0.0.1", "port": smtp.port(), "expect": "+OK"},
                "regions": ["ams"], "wait_ms": 30_000}),
    )
    .await;
    let result = &answer["results"][0];
    assert_eq!(result["error_kind"], "expect_mismatch", "{result}");
    assert!(result["error_detail"].as_str().unwrap().contains("220 mail.test"), "{result}");

    // A JSON assertion on a body that is not JSON.
    let web = target(200).await;
    let (_, answer) = test(
        &app,
        &app.token,
        &json!({"url": format!("http://127.0.0.1:{}/", web.port()), "json": {"path": "$.status", "op": "exists"},
                "regions": ["ams"], "wait_ms": 30_000}),
    )
    .await;
    assert_eq!(answer["results"][0]["error_kind"], "json_invalid", "{answer}");
    assert_eq!(stored_after_acks(&app, &agents).await, 0);

    // Bad input names the field.
    let (status, answer) =
        test(&app, &app.token, &json!({"check": {"type": "tcp", "host": "127.0.0.1"}, "wait_ms": 1000}))
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["fields"]["check.port"], "required", "{answer}");
}
