//! gRPC ingest over mutual TLS: who is let in, who is refused and why, what the agent's
//! certificate decides (region, identity) and what a batch cannot poison.

use std::time::{Duration, SystemTime};

use certs::{Overwrite, Store};
use reqwest::StatusCode;
use serde_json::Value;
use shared::identity::AgentIdentity;
use shared::proto::v1::ingest_client::IngestClient;
use shared::proto::{Batch, ProbeResult};
use shared::testing::eventually;
use sqlx::PgPool;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp, WAIT};

/// A CA with the control plane's server certificate, in a fresh directory.
pub struct Pki {
    pub store: Store,
}

impl Pki {
    pub fn new() -> Self {
        Self::named("it CA")
    }

    pub fn named(ca_name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("crosscheck-it-pki-{}", Uuid::new_v4().simple()));
        let store = Store::new(dir);
        store.create_ca(ca_name, 30, Overwrite::Refuse).unwrap();
        store.issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 30).unwrap();
        Self { store }
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.store.ca_cert()).unwrap()
    }

    /// An agent certificate and key (PEM) for `region`/`agent_id`.
    pub fn agent(&self, region: &str, agent_id: &str) -> (String, String) {
        let issued = self.store.issue_agent(&AgentIdentity::new(region, agent_id).unwrap(), 7).unwrap();
        (std::fs::read_to_string(issued.cert).unwrap(), std::fs::read_to_string(issued.key).unwrap())
    }

    pub fn configure(&self, config: &mut control_plane::Config) {
        let dir = self.store.ca_cert().parent().unwrap().to_owned();
        config.ingest_listen = "127.0.0.1:0".parse().unwrap();
        config.tls_ca = Some(self.store.ca_cert().display().to_string());
        config.tls_cert = Some(dir.join("server.pem").display().to_string());
        config.tls_key = Some(dir.join("server.key").display().to_string());
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if let Some(dir) = self.store.ca_cert().parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub async fn spawn_with_ingest(pool: PgPool, pki: &Pki) -> TestApp {
    let mut config = test_config(&shared::testing::random_prefix("ingest"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    TestApp::spawn_with(pool, config).await
}

/// A gRPC client presenting `identity` (certificate and key PEM), or no certificate.
pub async fn client(
    app: &TestApp,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<IngestClient<Channel>, tonic::transport::Error> {
    Ok(IngestClient::new(channel(app, ca_pem, identity).await?))
}

/// A connected channel presenting `identity`.
pub async fn channel(
    app: &TestApp,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = app.ingest_addr.expect("ingest is enabled");
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

pub fn result(domain: Uuid, ok: bool) -> ProbeResult {
    ProbeResult {
        domain_id: domain.as_bytes().to_vec(),
        started_at_unix_us: chrono::Utc::now().timestamp_micros(),
        ok,
        status_code: if ok { 200 } else { 503 },
        connect_us: Some(800),
        ttfb_us: Some(2_500),
        total_us: 4_000,
        ..Default::default()
    }
}

pub fn batch(claimed_region: &str, results: Vec<ProbeResult>) -> Batch {
    Batch {
        batch_id: Uuid::now_v7().as_bytes().to_vec(),
        agent_version: "test-1".into(),
        claimed_region: claimed_region.into(),
        results,
        health: None,
    }
}

/// Waits until `/metrics` shows the handshake failure `reason` at least once.
async fn handshake_refused(app: &TestApp, reason: &str) {
    let needle = format!("control_plane_ingest_handshake_failures_total{{reason=\"{reason}\"}}");
    eventually(WAIT, &format!("handshake failure {reason}"), || async {
        let text = app.http.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines().any(|l| l.starts_with(&needle)).then_some(())
    })
    .await;
}

/// A call over a refused connection fails (at connect or at the first request).
async fn refused(app: &TestApp, ca_pem: &str, identity: Option<(&str, &str)>) {
    if let Ok(mut client) = client(app, ca_pem, identity).await {
        let answer = client.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await;
        assert!(answer.is_err(), "a refused certificate got an answer: {answer:?}");
    }
}

#[sqlx::test]
async fn connection_without_a_client_certificate_is_refused(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    refused(&app, &pki.ca_pem(), None).await;
    handshake_refused(&app, "no_certificate").await;
    app.stop().await;
}

#[sqlx::test]
async fn certificate_of_another_ca_is_refused(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let other = Pki::named("other CA");
    let (cert, key) = other.agent("ams", "ams-1");
    refused(&app, &pki.ca_pem(), Some((&cert, &key))).await;
    handshake_refused(&app, "unknown_issuer").await;
    // An impostor CA with the same name: the signature does not verify.
    let impostor = Pki::new();
    let (cert, key) = impostor.agent("ams", "ams-1");
    refused(&app, &pki.ca_pem(), Some((&cert, &key))).await;
    handshake_refused(&app, "bad_certificate").await;
    app.stop().await;
}

#[sqlx::test]
async fn expired_certificate_is_refused(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let day = Duration::from_secs(86_400);
    let issued = pki
        .store
        .issue_agent_window(
            &AgentIdentity::new("ams", "old").unwrap(),
            SystemTime::now() - 10 * day,
            SystemTime::now() - day,
        )
        .unwrap();
    let (cert, key) =
        (std::fs::read_to_string(issued.cert).unwrap(), std::fs::read_to_string(issued.key).unwrap());
    refused(&app, &pki.ca_pem(), Some((&cert, &key))).await;
    handshake_refused(&app, "expired").await;
    app.stop().await;
}

#[sqlx::test]
async fn server_certificate_used_as_a_client_is_refused(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let dir = pki.store.ca_cert().parent().unwrap().to_owned();
    let cert = std::fs::read_to_string(dir.join("server.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
    refused(&app, &pki.ca_pem(), Some((&cert, &key))).await;
    handshake_refused(&app, "wrong_purpose").await;
    app.stop().await;
}

#[sqlx::test]
async fn certificate_on_the_revocation_list_is_refused(pool: PgPool) {
    let pki = Pki::new();
    let (cert, key) = pki.agent("ams", "ams-1");
    let serial =
        shared::tls::agent_certificate(&shared::tls::certificates("cert", &cert).unwrap()[0]).unwrap().serial;
    pki.store.revoke(&serial).unwrap();
    let mut config = test_config(&shared::testing::random_prefix("ingest"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    config.tls_crl = Some(pki.store.crl().display().to_string());
    let app = TestApp::spawn_with(pool, config).await;
    refused(&app, &pki.ca_pem(), Some((&cert, &key))).await;
    handshake_refused(&app, "revoked").await;
    // Another agent of the same CA is unaffected.
    let (cert2, key2) = pki.agent("ams", "ams-2");
    let mut client = client(&app, &pki.ca_pem(), Some((&cert2, &key2))).await.unwrap();
    client.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap();
    app.stop().await;
}

/// Whether a new connection presenting `identity` gets a batch accepted.
async fn accepted(app: &TestApp, ca_pem: &str, identity: (&str, &str)) -> bool {
    match client(app, ca_pem, Some(identity)).await {
        Ok(mut client) => client.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.is_ok(),
        Err(_) => false,
    }
}

/// The value of the metric line starting with `name` (labels included) on `/metrics`.
async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.http.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?;
    line[name.len()..].trim().parse().ok()
}

#[sqlx::test]
async fn a_rewritten_revocation_list_applies_without_a_restart(pool: PgPool) {
    let pki = Pki::new();
    pki.store.write_crl(7).unwrap();
    let mut config = test_config(&shared::testing::random_prefix("ingest"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    config.tls_crl = Some(pki.store.crl().display().to_string());
    config.tls_crl_poll_s = 1;
    let app = TestApp::spawn_with(pool, config).await;
    let ca = pki.ca_pem();
    let (cert, key) = pki.agent("ams", "ams-1");
    let (other_cert, other_key) = pki.agent("ams", "ams-2");
    let serial =
        shared::tls::agent_certificate(&shared::tls::certificates("cert", &cert).unwrap()[0]).unwrap().serial;

    // The list's nextUpdate (7 days out) is exposed for alerting.
    let next_update = metric(&app, "control_plane_ingest_crl_next_update_timestamp_seconds").await.unwrap();
    let in_hours = (next_update - chrono::Utc::now().timestamp() as f64) / 3600.0;
    assert!((7.0 * 24.0 - 1.0..=7.0 * 24.0).contains(&in_hours), "nextUpdate in {in_hours} h");

    let mut open = client(&app, &ca, Some((&cert, &key))).await.unwrap();
    open.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap();

    // Revoking rewrites crl.pem; the running ingest picks it up.
    pki.store.revoke(&serial).unwrap();
    eventually(WAIT, "the revoked agent refused without a restart", || async {
        (!accepted(&app, &ca, (&cert, &key)).await).then_some(())
    })
    .await;
    // That refusal may have come per request (the handshake just before the reload); from now
    // on the handshake itself fails.
    refused(&app, &ca, Some((&cert, &key))).await;
    handshake_refused(&app, "revoked").await;
    assert_eq!(metric(&app, "control_plane_ingest_crl_loads_total{outcome=\"applied\"}").await, Some(1.0));
    // The connection it opened before is refused from now on too.
    let status = open.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    assert!(accepted(&app, &ca, (&other_cert, &other_key)).await, "another agent is unaffected");

    // A list that does not parse is refused: the previous one stays in force.
    std::fs::write(pki.store.crl(), "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").unwrap();
    eventually(WAIT, "the unusable list noticed", || async {
        metric(&app, "control_plane_ingest_crl_loads_total{outcome=\"invalid\"}").await.filter(|n| *n >= 1.0)
    })
    .await;
    assert!(!accepted(&app, &ca, (&cert, &key)).await, "the revocation still holds");
    assert!(accepted(&app, &ca, (&other_cert, &other_key)).await, "the other agent is still let in");
    assert_eq!(metric(&app, "control_plane_ingest_crl_loads_total{outcome=\"applied\"}").await, Some(1.0));
    app.stop().await;
}

#[sqlx::test]
async fn agent_revoked_in_the_agents_table_is_refused(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool.clone(), &pki).await;
    let (cert, key) = pki.agent("ams", "ams-1");
    let mut client = client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();
    client.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap();
    app.agents.flush().await.unwrap();
    // A renewed certificate connected too: revoking the agent revokes both.
    let (renewed_cert, renewed_key) = pki.agent("ams", "ams-1");
    let mut renewed = self::client(&app, &pki.ca_pem(), Some((&renewed_cert, &renewed_key))).await.unwrap();
    renewed.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap();
    app.agents.flush().await.unwrap();
    let serials = control_plane::agents::revoke(&pool, "ams", "ams-1", "lost laptop").await.unwrap();
    assert_eq!(serials.len(), 2, "every certificate the agent used is revoked: {serials:?}");
    app.agents.refresh().await.unwrap();
    // The same, still open, connection is refused from now on.
    let status = client.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    let status = renewed.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    app.stop().await;
}

#[sqlx::test]
async fn a_region_claimed_in_the_payload_has_no_effect(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool.clone(), &pki).await;
    let (cert, key) = pki.agent("ams", "ams-1");
    let mut client = client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();
    let domain: Uuid =
        app.create_domain(serde_json::json!({"url": "https://example.com/"})).await.parse().unwrap();
    client.send_batch(batch("iad", vec![result(domain, true), result(domain, false)])).await.unwrap();
    let ts = PgPool::connect(&app.config.timeseries_url).await.unwrap();
    let regions: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT region FROM probe_results WHERE domain_id = $1")
            .bind(domain)
            .fetch_all(&ts)
            .await
            .unwrap();
    assert_eq!(regions, ["ams"], "stored under the certificate's region");
    ts.close().await;
    app.agents.flush().await.unwrap();
    let agents = control_plane::agents::list(&pool).await.unwrap();
    assert_eq!(agents.iter().map(|a| a.region.as_str()).collect::<Vec<_>>(), ["ams"]);
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("control_plane_ingest_region_mismatch_total 1")),
        "the mismatch is counted"
    );
    app.stop().await;
}

#[sqlx::test]
async fn agent_of_an_unconfigured_region_is_refused(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let (cert, key) = pki.agent("mars", "mars-1");
    let mut client = client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();
    let status = client.send_batch(batch("mars", vec![result(Uuid::now_v7(), true)])).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    app.stop().await;
}

#[sqlx::test]
async fn agents_are_listed_per_region_for_admins(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool.clone(), &pki).await;
    let (cert, key) = pki.agent("iad", "iad-7");
    let mut client = client(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();
    client.send_batch(batch("iad", vec![result(Uuid::now_v7(), true)])).await.unwrap();
    let body: Value = eventually(WAIT, "agent listed", || async {
        let body: Value = app.get("/v1/regions", &app.token).await.json().await.ok()?;
        let iad = body["items"].as_array()?.iter().find(|r| r["name"] == "iad")?.clone();
        (!iad["agents"].as_array()?.is_empty()).then_some(iad)
    })
    .await;
    let agent = &body["agents"][0];
    assert_eq!(agent["agent_id"], "iad-7");
    assert_eq!(agent["version"], "test-1");
    assert_eq!(agent["revoked"], false);
    assert!(agent["last_seen"].is_string() && agent["first_seen"].is_string());
    assert!(body["last_seen"].is_string());

    let tenant = control_plane::tenants::create_tenant(&pool, "reader").await.unwrap();
    let reader = control_plane::tenants::create_token(
        &pool,
        tenant.tenant_id,
        "reader",
        control_plane::tenants::Role::ReadOnly,
    )
    .await
    .unwrap();
    let response = app.get("/v1/regions", &reader.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["items"][0].get("agents").is_none(), "agents are for admins: {body}");
    app.stop().await;
}

#[sqlx::test]
async fn invalid_batches_are_refused_without_poisoning_the_connection(pool: PgPool) {
    let pki = Pki::new();
    let app = spawn_with_ingest(pool, &pki).await;
    let (cert, key) = pki.agent("ams", "ams-1");
    let channel = channel(&app, &pki.ca_pem(), Some((&cert, &key))).await.unwrap();
    let mut client = IngestClient::new(channel.clone());

    let mut short_id = batch("ams", vec![result(Uuid::now_v7(), true)]);
    short_id.batch_id = vec![1, 2, 3];
    let status = client.send_batch(short_id).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let status = client.send_batch(batch("ams", Vec::new())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let too_many = vec![result(Uuid::now_v7(), true); shared::proto::MAX_BATCH_RESULTS + 1];
    let status = client.send_batch(batch("ams", too_many)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let mut huge = result(Uuid::now_v7(), false);
    huge.error_detail = "x".repeat(shared::proto::MAX_BATCH_BYTES + 1);
    let status = client.send_batch(batch("ams", vec![huge])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let status = raw::send(channel, vec![0xff, 0xff, 0xff]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The same connection still carries good batches.
    client.send_batch(batch("ams", vec![result(Uuid::now_v7(), true)])).await.unwrap();
    app.stop().await;
}

mod raw {
    //! Sends arbitrary bytes as a `SendBatch` request, to test undecodable messages.

    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::Status;

    use super::*;

    #[derive(Default)]
    struct RawCodec;

    struct RawEncoder;
    struct RawDecoder;

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            Ok(Some(bytes.to_vec()))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    pub async fn send(channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/crosscheck.ingest.v1.Ingest/SendBatch");
        grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
    }
}
