//! The security review's cases, each kept as a test: metric labels no client can multiply,
//! failed authentication throttled and counted, the ingest's client-auth EKU and its scope
//! (existing, running domains of the agent's region), email headers that user text cannot
//! break, one host rule for every outbound URL, and a stale revocation list reported.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::ingest::{self, spawn_with_ingest, Pki};

/// The text of `/metrics`.
async fn metrics(app: &TestApp) -> String {
    app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of the sample line `name` (labels included) on `/metrics`, if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?;
    line[name.len()..].trim().parse().ok()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn made_up_methods_do_not_add_metric_series(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.get("/v1/domains", &app.token).await;
    let before = metrics(&app).await;
    const MADE_UP: usize = 1_000;
    // With a token: not allowed. Without one: refused (then throttled, which also refuses this
    // address's good tokens for a while) before the method is looked at. Neither adds a series.
    let made_up = |i: usize| reqwest::Method::from_bytes(format!("X{i}QZ").as_bytes()).unwrap();
    for i in 0..MADE_UP / 2 {
        let answer = app
            .http
            .request(made_up(i), app.url("/v1/domains"))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        if i == 0 {
            // The API's JSON error, like every other `/v1` error.
            let body: Value = answer.json().await.unwrap();
            assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        }
    }
    for i in MADE_UP / 2..MADE_UP {
        let answer = app.http.request(made_up(i), app.url("/v1/domains")).send().await.unwrap();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&answer.status()),
            "{}",
            answer.status()
        );
    }
    // Unmatched paths are not series either.
    for i in 0..50 {
        app.http.get(app.url(&format!("/v1/nothing-{i}"))).send().await.unwrap();
    }
    let after = metrics(&app).await;
    let series =
        |text: &str| text.lines().filter(|l| l.starts_with("control_plane_http_requests_total{")).count();
    // At most `other` × 405, 401, 429 and the unmatched route are new.
    assert!(series(&after) <= series(&before) + 4, "{after}");
    assert!(!after.contains("X1QZ"), "a method taken verbatim");
    assert_eq!(
        sample(
            &after,
            "control_plane_http_requests_total{method=\"other\",route=\"/v1/domains\",status=\"405\"}"
        ),
        Some((MADE_UP / 2) as f64),
        "{after}"
    );
    assert!(
        after.len() < before.len() + 2_000,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn every_outbound_url_takes_the_host_rule_of_domains(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let refused = |body: Value, field: &'static str| {
        let app = &app;
        async move {
            let path = if body.get("kind").is_some() { "/v1/channels" } else { "/v1/domains" };
            let answer = app.post(path, &app.token, &body).await;
            let status = answer.status();
            let answer: Value = answer.json().await.unwrap();
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
            let message = answer["error"]["fields"][field].as_str().unwrap_or_default();
            assert!(message.contains("fully qualified"), "{body}: {answer}");
        }
    };
    refused(json!({"url": "https://intranet/health"}), "url").await;
    refused(json!({"check": {"type": "tcp", "host": "db", "port": 5432}}), "check.host").await;
    for kind in ["webhook", "slack", "teams", "discord"] {
        refused(json!({"name": "n", "kind": kind, "url": "https://hooks/x"}), "url").await;
    }
    refused(
        json!({"name": "n", "kind": "pagerduty", "url": "https://events/", "routing_key": "k".repeat(32)}),
        "url",
    )
    .await;
    refused(
        json!({"name": "n", "kind": "telegram", "url": "https://tg/", "bot_token": "123:abc", "chat_id": 5}),
        "url",
    )
    .await;
    refused(json!({"name": "n", "kind": "ntfy", "url": "http://ntfy:8080/", "topic": "ops"}), "url").await;
    // A fully qualified host is fine for every kind, as for domains.
    let ok = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "n", "kind": "slack", "url": "https://hooks.example.com/x"}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn control_characters_in_a_channel_name_cannot_break_email_headers(pool: PgPool) {
    use crate::notify::{smtp_config, smtp_receiver};
    let (smtp, messages) = smtp_receiver().await;
    let app = TestApp::spawn_with(pool, smtp_config(smtp)).await;
    let created = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "ops", "kind": "email", "to": ["oncall@example.com"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // Stored as an older control plane may have let it in: an ESC sequence and a CR LF followed
    // by a header of the attacker's.
    let name = "ops\u{1b}[2J\r\nBcc: attacker@example.net\r\nX-Injected: yes";
    sqlx::query("UPDATE channels SET name = $1 WHERE id = $2::uuid")
        .bind(name)
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let queued = app.post(&format!("/v1/channels/{id}/test"), &app.token, &json!({})).await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    let message = shared::testing::eventually(crate::helpers::WAIT, "the test email", || async {
        messages.lock().unwrap().first().cloned()
    })
    .await;
    let head = message.split("\r\n\r\n").next().unwrap();
    assert!(!message.contains('\u{1b}'), "a raw ESC reached the message: {message:?}");
    assert!(
        !head.lines().any(|l| l.starts_with("Bcc:") || l.starts_with("X-Injected:")),
        "a header was injected: {head}"
    );
    let subject: String = {
        // The Subject with its folded continuation lines.
        let mut lines = head.split("\r\n").skip_while(|l| !l.starts_with("Subject:"));
        let first = lines.next().expect("a Subject header").to_owned();
        lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')).fold(first, |s, l| s + l)
    };
    assert!(subject.contains("=?utf-8?"), "the subject is RFC 2047 encoded: {subject}");
    assert!(subject.is_ascii() && !subject.chars().any(|c| c.is_control()), "{subject:?}");
    app.stop().await;
}

/// An agent certificate for `region`/`agent_id` signed by `pki`'s CA with exactly `ekus` as its
/// extended key usages (none: no EKU extension at all). Certificate and key PEM.
fn agent_with_ekus(
    pki: &Pki,
    region: &str,
    agent_id: &str,
    ekus: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.store.ca_key()).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&pki.ca_pem(), ca_key).unwrap();
    let identity = shared::identity::AgentIdentity::new(region, agent_id).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.to_uri().try_into().unwrap())];
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("agent {identity}"));
    params.extended_key_usages = ekus;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[sqlx::test]
async fn ingest_requires_the_client_auth_eku(pool: PgPool) {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let ca = pki.ca_pem();
    let failures = || async {
        sample(
            &metrics(&app).await,
            "control_plane_ingest_handshake_failures_total{reason=\"wrong_purpose\"}",
        )
        .unwrap_or(0.0)
    };
    let mut refused = 0.0;
    for (what, ekus) in [("no EKU at all", vec![]), ("server auth only", vec![ServerAuth])] {
        let (cert, key) = agent_with_ekus(&pki, "ams", "odd-1", ekus);
        let answer = match ingest::client(&app, &ca, Some((&cert, &key))).await {
            Ok(mut client) => client
                .send_batch(ingest::batch("ams", vec![ingest::result(Uuid::now_v7(), true)]))
                .await
                .err(),
            Err(error) => Some(tonic::Status::unavailable(error.to_string())),
        };
        assert!(answer.is_some(), "a certificate with {what} was let in");
        refused += 1.0;
        shared::testing::eventually(crate::helpers::WAIT, what, || async {
            (failures().await >= refused).then_some(())
        })
        .await;
    }
    // Client auth among other purposes is fine.
    let (cert, key) = agent_with_ekus(&pki, "ams", "dual-1", vec![ServerAuth, ClientAuth]);
    let mut client = ingest::client(&app, &ca, Some((&cert, &key))).await.unwrap();
    client.send_batch(ingest::batch("ams", vec![ingest::result(Uuid::now_v7(), true)])).await.unwrap();
    app.stop().await;
}

/// A revocation list of `pki`'s CA listing `serials` (hex) whose `nextUpdate` was `ago`.
fn lapsed_crl(pki: &Pki, serials: &[&str], ago: std::time::Duration) -> String {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.store.ca_key()).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&pki.ca_pem(), ca_key).unwrap();
    let now = std::time::SystemTime::now();
    let hex = |s: &str| {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
    };
    let params = rcgen::CertificateRevocationListParams {
        this_update: (now - ago - std::time::Duration::from_secs(86_400)).into(),
        next_update: (now - ago).into(),
        crl_number: rcgen::SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&hex(s)),
                revocation_time: (now - ago - std::time::Duration::from_secs(3_600)).into(),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer).unwrap().pem().unwrap()
}

#[sqlx::test]
async fn a_stale_revocation_list_is_reported_and_still_enforced(pool: PgPool) {
    let pki = Pki::new();
    let identity = |id: &str| shared::identity::AgentIdentity::new("ams", id).unwrap();
    let revoked = pki.store.issue_agent(&identity("lost-1"), 7).unwrap();
    let kept = pki.store.issue_agent(&identity("kept-1"), 7).unwrap();
    let pem = |issued: &certs::Issued| {
        (std::fs::read_to_string(&issued.cert).unwrap(), std::fs::read_to_string(&issued.key).unwrap())
    };
    let (revoked_pem, kept_pem) = (pem(&revoked), pem(&kept));
    std::fs::write(
        pki.store.crl(),
        lapsed_crl(&pki, &[&revoked.serial], std::time::Duration::from_secs(3_600)),
    )
    .unwrap();
    let mut config =
        crate::helpers::test_config(&shared::testing::random_prefix("ingest"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    config.tls_crl = Some(pki.store.crl().display().to_string());
    config.tls_crl_poll_s = 1;
    let app = TestApp::spawn_with(pool, config).await;
    let ca = pki.ca_pem();

    let text = metrics(&app).await;
    assert_eq!(sample(&text, "control_plane_ingest_crl_stale"), Some(1.0), "{text}");
    let next_update = sample(&text, "control_plane_ingest_crl_next_update_timestamp_seconds").unwrap();
    assert!(next_update < chrono::Utc::now().timestamp() as f64, "nextUpdate {next_update} is in the past");
    // Still in force: the listed agent is refused, the other one let in.
    let sent = |identity: (String, String)| {
        let ca = ca.clone();
        let app = &app;
        async move {
            let mut client = ingest::client(app, &ca, Some((&identity.0, &identity.1))).await.ok()?;
            client.send_batch(ingest::batch("ams", vec![ingest::result(Uuid::now_v7(), true)])).await.ok()
        }
    };
    assert!(sent(revoked_pem.clone()).await.is_none(), "a stale list still revokes");
    assert!(sent(kept_pem.clone()).await.is_some(), "a stale list does not lock the fleet out");

    // A current list clears the alarm.
    pki.store.write_crl(7).unwrap();
    shared::testing::eventually(crate::helpers::WAIT, "the stale alarm cleared", || async {
        (sample(&metrics(&app).await, "control_plane_ingest_crl_stale") == Some(0.0)).then_some(())
    })
    .await;
    app.stop().await;
}

fn throttle_config(burst: u32) -> control_plane::Config {
    control_plane::Config {
        api_auth_failure_burst: burst,
        api_auth_failures_per_minute: 1,
        ..crate::helpers::test_config(&shared::testing::random_prefix("cp"), "redis://127.0.0.1:6379")
    }
}

/// A GET of `/v1/domains` with `token` and, when given, an `X-Forwarded-For` of `client`.
async fn attempt(app: &TestApp, token: &str, client: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(app.url("/v1/domains")).bearer_auth(token);
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.unwrap()
}

/// A wrong token whose prefix (its first 8 characters) is `cc_` and 5 random letters.
fn wrong_token() -> String {
    format!("cc_{}", &Uuid::new_v4().simple().to_string()[..20])
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn failed_authentication_is_throttled_per_client_address(pool: PgPool) {
    // No trusted proxy: X-Forwarded-For is the client's own word, and ignored.
    let app = TestApp::spawn_with(pool, throttle_config(3)).await;
    for i in 0..3 {
        let answer = attempt(&app, &wrong_token(), Some(&format!("203.0.113.{i}"))).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    let answer = attempt(&app, &wrong_token(), Some("203.0.113.200")).await;
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = answer.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "auth_throttled");
    // While it waits, the address is refused before any lookup, even with a valid token.
    assert_eq!(attempt(&app, &app.token.clone(), None).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.http.get(app.url("/v1/regions")).send().await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let text = metrics(&app).await;
    assert_eq!(
        sample(&text, "control_plane_auth_failures_total{reason=\"invalid_token\"}"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(sample(&text, "control_plane_auth_failures_total{reason=\"throttled\"}"), Some(2.0), "{text}");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn behind_a_trusted_proxy_clients_and_token_prefixes_are_throttled_apart(pool: PgPool) {
    let config =
        control_plane::Config { trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()], ..throttle_config(2) };
    let app = TestApp::spawn_with(pool, config).await;
    // One client spends its failures; another behind the same proxy is unaffected.
    for _ in 0..2 {
        assert_eq!(
            attempt(&app, &wrong_token(), Some("203.0.113.7")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt(&app, &wrong_token(), Some("203.0.113.7")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(attempt(&app, &app.token.clone(), Some("198.51.100.8")).await.status(), StatusCode::OK);
    // One stale token tried from many clients: its prefix runs out.
    let stale = wrong_token();
    for i in 0..2 {
        let client = format!("192.0.2.{i}");
        assert_eq!(attempt(&app, &stale, Some(&client)).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(attempt(&app, &stale, Some("192.0.2.99")).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attempt(&app, &stale, Some("192.0.2.100")).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attempt(&app, &app.token.clone(), Some("192.0.2.100")).await.status(), StatusCode::OK);
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_token_records_its_last_use_at_most_once_a_minute(pool: PgPool) {
    let clock = std::sync::Arc::new(control_plane::clock::ManualClock::new(chrono::Utc::now()));
    let config = crate::helpers::test_config(&shared::testing::random_prefix("cp"), "redis://127.0.0.1:6379");
    let app = TestApp::spawn_with_clock(pool, config, clock.clone()).await;
    let last_used = || async {
        let used: Vec<Option<chrono::DateTime<chrono::Utc>>> =
            sqlx::query_scalar("SELECT last_used_at FROM api_tokens").fetch_all(&app.pool).await.unwrap();
        assert_eq!(used.len(), 1);
        used[0]
    };
    assert_eq!(last_used().await, None, "never used yet");
    let listed: Value = app.get("/v1/tokens", &app.token).await.json().await.unwrap();
    let first = last_used().await.expect("written by the first request");
    assert_eq!(
        listed["items"][0]["last_used_at"].as_str().map(|s| s.parse().unwrap()),
        Some(first),
        "{listed}"
    );
    for _ in 0..5 {
        assert_eq!(app.get("/v1/domains", &app.token).await.status(), StatusCode::OK);
    }
    assert_eq!(last_used().await, Some(first), "no write per request");
    // Moved back two minutes: this replica still wrote it within the minute, so nothing yet.
    sqlx::query("UPDATE api_tokens SET last_used_at = last_used_at - interval '2 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    let earlier = last_used().await.unwrap();
    app.get("/v1/domains", &app.token).await;
    assert_eq!(last_used().await, Some(earlier));
    // A minute later it is written again.
    clock.advance(chrono::Duration::seconds(61));
    app.get("/v1/domains", &app.token).await;
    assert!(last_used().await.unwrap() > earlier + chrono::Duration::seconds(60));
    app.stop().await;
}

#[sqlx::test]
async fn ingest_stores_only_what_the_agent_serves(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let id = |raw: String| raw.parse::<Uuid>().unwrap();
    let iad_only =
        id(app.create_domain(json!({"url": "https://iad.example.com/", "regions": ["iad"]})).await);
    let served = id(app.create_domain(json!({"url": "https://every.example.com/"})).await);
    let ams_and_sin =
        id(app.create_domain(json!({"url": "https://two.example.com/", "regions": ["sin", "ams"]})).await);
    let other = app.other_tenant().await;
    let created = app.post("/v1/domains", &other, &json!({"url": "https://paused.example.net/"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let paused = id(created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    assert_eq!(
        app.post(&format!("/v1/domains/{paused}/pause"), &other, &json!({})).await.status(),
        StatusCode::OK
    );
    let random = Uuid::now_v7();

    let (cert, key) = pki.agent("ams", "ams-1");
    let mut client = ingest::client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();
    let results = vec![
        ingest::result(iad_only, false),
        ingest::result(served, true),
        ingest::result(paused, false),
        ingest::result(random, false),
        ingest::result(ams_and_sin, true),
        ingest::result(random, false),
    ];
    let ack = client.send_batch(ingest::batch("ams", results)).await.unwrap().into_inner();
    assert_eq!((ack.stored, ack.duplicate), (2, false), "acknowledged, the rest dropped");
    // A batch of nothing but foreign domains is acknowledged too, storing nothing.
    let ack = client
        .send_batch(ingest::batch(
            "ams",
            vec![ingest::result(iad_only, false), ingest::result(paused, false)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.stored, ack.duplicate), (0, false));

    let ts = PgPool::connect(&app.config.timeseries_url).await.unwrap();
    let mut stored: Vec<Uuid> =
        sqlx::query_scalar("SELECT DISTINCT domain_id FROM probe_results").fetch_all(&ts).await.unwrap();
    stored.sort();
    let mut expected = vec![served, ams_and_sin];
    expected.sort();
    assert_eq!(stored, expected);
    ts.close().await;

    let text = metrics(&app).await;
    for (reason, n) in [("other_region", 2.0), ("paused", 2.0), ("unknown_domain", 2.0)] {
        let name = format!("control_plane_ingest_results_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &name), Some(n), "{reason}: {text}");
    }
    assert_eq!(sample(&text, "control_plane_ingest_batches_total{outcome=\"rejected\"}"), Some(1.0));

    // Consensus hears of the served domains only: once they are observed, the others are not.
    let observed = |domain: Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM region_observations WHERE domain_id = $1")
                .bind(domain)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    shared::testing::eventually(crate::helpers::WAIT, "the served domains observed", || async {
        (observed(served).await == 1 && observed(ams_and_sin).await == 1).then_some(())
    })
    .await;
    assert_eq!(observed(iad_only).await, 0);
    assert_eq!(observed(paused).await, 0);
    let results: Value =
        app.get(&format!("/v1/domains/{paused}/results"), &other).await.json().await.unwrap();
    assert_eq!(results["items"], json!([]), "nothing in the other tenant's results: {results}");
    app.stop().await;
}
