//! The probe engine against real servers on 127.0.0.1 started by each test: timings, status and
//! keyword checks, body limits, timeouts, refused connections, certificates (valid, expired,
//! self-signed, unknown issuer, wrong host), the SSRF guard (literal addresses, resolved names,
//! redirects) and redirect handling. Nothing here reaches the internet.

use std::convert::Infallible;
use std::io::ErrorKind as IoErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{ACCEPT, CONNECTION, HOST, LOCATION, USER_AGENT};
use http::{Method, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use probe_agent::probe::{
    Answer, DnsErrorReason, DnsFailure, ErrorKind, ProbeReport, ProbeSettings, Prober, Resolve,
    StaticResolver,
};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shared::netguard::TargetPolicy;
use shared::{DomainConfig, DomainId, HttpMethod, KeywordCheck, StatusRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const USER_AGENT_TEXT: &str = "crosscheck-test/1";
const HELLO: &str = "hello from the test server";

// ---------------------------------------------------------------------------------------------
// Probers and configurations

pub(crate) fn loopback_allowed() -> TargetPolicy {
    TargetPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
}

pub(crate) fn settings(policy: TargetPolicy) -> ProbeSettings {
    ProbeSettings { policy, user_agent: USER_AGENT_TEXT.to_owned(), ..ProbeSettings::default() }
}

fn loopback(ip: &str) -> Vec<IpAddr> {
    vec![ip.parse().unwrap()]
}

/// Names the tests use: `app.test` and `localhost` are the local servers; the others are
/// private addresses the guard must refuse.
fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with("app.test", loopback("127.0.0.1"))
        .with("localhost", loopback("127.0.0.1"))
        .with("internal.test", loopback("10.0.0.1"))
        .with("loopback.test", loopback("127.0.0.1"))
        .with("metadata.test", loopback("169.254.169.254"))
        .with(
            "mixed.test",
            ["10.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        )
        .with("empty.test", Vec::new())
}

fn prober_with(settings: ProbeSettings) -> Prober {
    Prober::with_resolver(settings, Arc::new(resolver())).unwrap()
}

fn prober() -> Prober {
    prober_with(settings(loopback_allowed()))
}

pub(crate) fn config(url: impl Into<String>) -> DomainConfig {
    DomainConfig {
        id: DomainId::new(),
        url: url.into(),
        request: shared::RequestConfig::default(),
        check: shared::CheckConfig::Http,
        json_check: None,
        expected_status: StatusRange::SUCCESS,
        keyword: None,
        interval_s: 60,
        timeout_ms: 5000,
        regions: Vec::new(),
        paused: false,
        tls_verify: true,
        http_version: shared::HttpVersion::Auto,
        agents_per_region: shared::domain::DEFAULT_AGENTS_PER_REGION,
        version: 1,
    }
}

fn with_keyword(url: impl Into<String>, keyword: &str) -> DomainConfig {
    DomainConfig { keyword: Some(KeywordCheck::contains(keyword)), ..config(url) }
}

/// Probes and checks what must hold for every report.
pub(crate) async fn probe(prober: &Prober, config: &DomainConfig) -> ProbeReport {
    let report = prober.probe(config).await;
    check_invariants(&report);
    report
}

pub(crate) fn check_invariants(report: &ProbeReport) {
    assert_eq!(report.ok, report.error.is_none(), "{report:#?}");
    assert_eq!(report.error.is_some(), report.error_detail.is_some(), "{report:#?}");
    if let Some(detail) = &report.error_detail {
        assert!(!detail.starts_with(char::is_uppercase), "details start lowercase: {detail}");
        assert!(!detail.contains("Connection") && !detail.contains("URL"), "{detail}");
    }
    let t = &report.timings;
    let phases = [t.dns_ms, t.connect_ms, t.tls_ms, t.ttfb_ms];
    for phase in phases.iter().flatten() {
        assert!(*phase >= 0.0 && *phase <= t.total_ms, "{t:?}");
    }
    let sum: f64 = phases.iter().flatten().sum();
    assert!(sum <= t.total_ms, "phases {sum} > total {}", t.total_ms);
    let mut sorted = report.resolved_addrs.clone();
    sorted.sort();
    assert_eq!(sorted, report.resolved_addrs, "resolved addresses are sorted");
    if let Some(ip) = report.resolved_ip {
        assert!(report.resolved_addrs.contains(&ip));
    }
}

pub(crate) fn assert_failed(report: &ProbeReport, kind: ErrorKind, detail_contains: &str) {
    assert_eq!(report.error, Some(kind), "{report:#?}");
    assert!(!report.ok);
    let detail = report.error_detail.as_deref().unwrap_or_default();
    assert!(detail.contains(detail_contains), "detail {detail:?} lacks {detail_contains:?}");
}

// ---------------------------------------------------------------------------------------------
// Servers

fn text(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(body.into())).unwrap()
}

fn redirect(status: u16, location: &str) -> Response<Full<Bytes>> {
    Response::builder().status(status).header(LOCATION, location).body(Full::default()).unwrap()
}

/// The test application every HTTP(S) server runs.
fn app(request: &http::request::Parts) -> Response<Full<Bytes>> {
    let header =
        |name| request.headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok()).unwrap_or("");
    let path = request.uri.path();
    match path {
        "/" => text(200, HELLO),
        "/echo" => text(
            200,
            format!(
                "method={} host={} ua={} accept={} connection={}",
                request.method,
                header(HOST),
                header(USER_AGENT),
                header(ACCEPT),
                header(CONNECTION)
            ),
        ),
        "/big" => text(200, "a".repeat(64 * 1024)),
        "/loop" => redirect(302, "/loop"),
        "/absolute" => redirect(301, &format!("http://{}/", header(HOST))),
        "/to" => redirect(307, request.uri.query().unwrap_or_default()),
        "/no-location" => text(302, ""),
        "/only-head" if request.method == Method::HEAD => text(200, HELLO),
        "/only-head" => text(405, ""),
        _ => {
            if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse().ok()) {
                text(code, "status page")
            } else if let Some(n) = path.strip_prefix("/redirect/").and_then(|n| n.parse::<u32>().ok()) {
                // Relative locations: "2" from /redirect/3 is /redirect/2.
                if n == 0 {
                    redirect(303, "/")
                } else {
                    redirect(302, &(n - 1).to_string())
                }
            } else {
                text(404, "not found")
            }
        }
    }
}

async fn serve_app<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|request: hyper::Request<Incoming>| async move {
        Ok::<_, Infallible>(app(&request.into_parts().0))
    });
    // Clients closing early (the probe stops at the keyword) are expected.
    let _ = http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
}

/// An HTTP server running [`app`] on 127.0.0.1; with `tls`, HTTPS.
pub(crate) async fn app_server(tls: Option<TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_app(tcp).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_app(stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn read_request_head(tcp: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A server that answers every request with exactly `response` and closes.
async fn raw_server(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request_head(&mut tcp).await;
                let _ = tcp.write_all(response).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// A 200 response head opening a chunked body whose first chunk is `first`.
fn chunked_head(first: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n", first.len())
}

/// A server whose chunked body starts with `first` and then never ends.
async fn endless_server(first: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request_head(&mut tcp).await;
                let head = chunked_head(first);
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let filler = format!("{:x}\r\n{}\r\n", 4096, "z".repeat(4096));
                // Until the client goes away.
                while tcp.write_all(filler.as_bytes()).await.is_ok() {}
            });
        }
    });
    addr
}

/// A server that accepts connections and never writes a byte.
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tcp.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

/// A listener that is never served: used to prove nothing connected to it.
pub(crate) struct Tripwire {
    listener: std::net::TcpListener,
}

impl Tripwire {
    pub(crate) fn bind(addr: &str) -> Option<Tripwire> {
        let listener = std::net::TcpListener::bind(addr).ok()?;
        listener.set_nonblocking(true).unwrap();
        Some(Tripwire { listener })
    }

    pub(crate) fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    pub(crate) fn assert_untouched(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{} was connected to from {peer}", self.listener.local_addr().unwrap()),
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A private CA for the tests, trusted through `extra_roots` where a test says so.
pub(crate) struct TestCa {
    pub(crate) cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        TestCa { cert, issuer: Issuer::new(params, key) }
    }

    /// A server for `names` signed by this CA, valid until `not_after`.
    pub(crate) fn server(&self, names: &[&str], not_after: (i32, u8, u8)) -> TlsAcceptor {
        let (chain, key) = self.chain(names, not_after);
        acceptor(chain, key)
    }

    /// A certificate chain (leaf, this CA) for `names` and the leaf's key.
    pub(crate) fn chain(
        &self,
        names: &[&str],
        not_after: (i32, u8, u8),
    ) -> (Vec<CertificateDer<'static>>, KeyPair) {
        let (params, key) = leaf_params(names, not_after);
        let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        (vec![cert, self.cert.clone()], key)
    }
}

fn leaf_params(names: &[&str], not_after: (i32, u8, u8)) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params, KeyPair::generate().unwrap())
}

fn self_signed_server(names: &[&str]) -> TlsAcceptor {
    let (params, key) = leaf_params(names, (2099, 1, 1));
    let cert = params.self_signed(&key).unwrap().der().clone();
    acceptor(vec![cert], key)
}

fn acceptor(chain: Vec<CertificateDer<'static>>, key: KeyPair) -> TlsAcceptor {
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::from(key))
            .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

fn trusting(ca: &TestCa) -> Prober {
    prober_with(ProbeSettings { extra_roots: vec![ca.cert.clone()], ..settings(loopback_allowed()) })
}

// ---------------------------------------------------------------------------------------------
// Timings, status, keyword, body

#[tokio::test]
async fn http_probe_reports_every_phase() {
    let addr = app_server(None).await;
    let report = probe(&prober(), &config(format!("http://app.test:{}/", addr.port()))).await;

    assert!(report.ok, "{report:#?}");
    assert_eq!(report.status, Some(200));
    assert_eq!(report.status_matched, Some(true));
    assert_eq!(report.keyword_matched, None);
    assert_eq!(report.body_bytes, HELLO.len() as u64);
    assert_eq!(report.resolved_ip, Some(addr.ip()));
    assert_eq!(report.resolved_addrs, vec![addr.ip()]);
    assert!(report.redirects.is_empty() && report.certificate.is_none());
    let t = &report.timings;
    assert!(t.dns_ms.is_some() && t.connect_ms.is_some() && t.ttfb_ms.is_some(), "{t:?}");
    assert_eq!(t.tls_ms, None);
    assert!(t.total_ms > 0.0);
}

#[tokio::test]
async fn ip_literal_hosts_skip_dns() {
    let addr = app_server(None).await;
    let report = probe(&prober(), &config(format!("http://{addr}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.timings.dns_ms, None);
    assert!(report.timings.connect_ms.is_some());
    assert_eq!(report.resolved_addrs, vec![addr.ip()]);
}

#[tokio::test]
async fn https_probe_reports_every_phase_and_a_valid_certificate() {
    let ca = TestCa::new("Crosscheck Test CA");
    let addr = app_server(Some(ca.server(&["localhost", "127.0.0.1"], (2099, 1, 1)))).await;
    let report = probe(&trusting(&ca), &config(format!("https://localhost:{}/", addr.port()))).await;

    assert!(report.ok, "{report:#?}");
    assert_eq!(report.status, Some(200));
    let t = &report.timings;
    assert!(
        t.dns_ms.is_some() && t.connect_ms.is_some() && t.tls_ms.is_some() && t.ttfb_ms.is_some(),
        "{t:?}"
    );
    let cert = report.certificate.as_ref().expect("certificate recorded");
    assert!(cert.valid && cert.validation_error.is_none(), "{cert:#?}");
    assert_eq!(cert.subject, "CN=localhost");
    assert_eq!(cert.issuer, "CN=Crosscheck Test CA");
    assert_eq!(cert.sans, vec!["localhost".to_owned(), "127.0.0.1".to_owned()]);
    assert!(!cert.serial.is_empty() && cert.serial.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(cert.not_before.to_rfc3339(), "2020-01-01T00:00:00+00:00");
    assert_eq!(cert.not_after.to_rfc3339(), "2099-01-01T00:00:00+00:00");
    let expected_days = (cert.not_after - chrono::Utc::now()).num_days();
    assert!((cert.days_remaining - expected_days).abs() <= 1, "{} vs {expected_days}", cert.days_remaining);

    // An address in the certificate works as the host too (no SNI, IP name check).
    let report = probe(&trusting(&ca), &config(format!("https://127.0.0.1:{}/", addr.port()))).await;
    assert!(report.ok, "{report:#?}");
    assert!(report.certificate.is_some_and(|c| c.valid));
}

#[tokio::test]
async fn request_carries_host_with_port_user_agent_and_close() {
    let addr = app_server(None).await;
    let expected =
        format!("method=GET host=app.test:{} ua={USER_AGENT_TEXT} accept=*/* connection=close", addr.port());
    let report =
        probe(&prober(), &with_keyword(format!("http://app.test:{}/echo", addr.port()), &expected)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.keyword_matched, Some(true));
}

#[tokio::test]
async fn expected_status_passes_and_fails() {
    let addr = app_server(None).await;
    let prober = prober();

    let report = probe(&prober, &config(format!("http://{addr}/status/503"))).await;
    assert_failed(&report, ErrorKind::Status, "503");
    assert_eq!((report.status, report.status_matched), (Some(503), Some(false)));

    let expecting_5xx = DomainConfig {
        expected_status: StatusRange { min: 500, max: 599 },
        ..config(format!("http://{addr}/status/503"))
    };
    let report = probe(&prober, &expecting_5xx).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!((report.status, report.status_matched), (Some(503), Some(true)));

    let report = probe(&prober, &config(format!("http://{addr}/missing"))).await;
    assert_failed(&report, ErrorKind::Status, "404");
}

#[tokio::test]
async fn keyword_found_and_not_found() {
    let addr = app_server(None).await;
    let prober = prober();

    let report = probe(&prober, &with_keyword(format!("http://{addr}/"), "from the test")).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.keyword_matched, Some(true));

    let report = probe(&prober, &with_keyword(format!("http://{addr}/"), "absent")).await;
    assert_failed(&report, ErrorKind::Keyword, "keyword");
    assert_eq!(report.keyword_matched, Some(false));
    assert_eq!(report.body_bytes, HELLO.len() as u64);
    assert_eq!(report.status_matched, Some(true));

    // The keyword is checked only on an expected status.
    let report = probe(&prober, &with_keyword(format!("http://{addr}/status/500"), "status page")).await;
    assert_failed(&report, ErrorKind::Status, "500");
    assert_eq!(report.keyword_matched, None);
}

#[tokio::test]
async fn keyword_found_across_a_chunk_boundary() {
    // Each chunk is decoded as its own frame: the keyword is split between two frames.
    let split = raw_server(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          8\r\nxxxx nee\r\n8\r\ndle yyyy\r\n0\r\n\r\n",
    )
    .await;
    let report = probe(&prober(), &with_keyword(format!("http://{split}/"), "needle")).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.keyword_matched, Some(true));

    // Halves that do not meet are not a match.
    let apart = raw_server(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          8\r\nxxxx nee\r\n1\r\nx\r\n8\r\ndle yyyy\r\n0\r\n\r\n",
    )
    .await;
    let report = probe(&prober(), &with_keyword(format!("http://{apart}/"), "needle")).await;
    assert_failed(&report, ErrorKind::Keyword, "keyword");
    assert_eq!(report.body_bytes, 17);
}

#[tokio::test]
async fn body_too_large_without_the_keyword() {
    let addr = app_server(None).await;
    let small = prober_with(ProbeSettings { max_body_bytes: 1024, ..settings(loopback_allowed()) });

    let report = probe(&small, &with_keyword(format!("http://{addr}/big"), "needle")).await;
    assert_failed(&report, ErrorKind::BodyTooLarge, "1024");
    assert_eq!(report.body_bytes, 1024);
    assert_eq!(report.keyword_matched, Some(false));

    // Without a keyword the limit only stops the read.
    let report = probe(&small, &config(format!("http://{addr}/big"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.body_bytes, 1024);
}

#[tokio::test]
async fn reading_stops_at_the_keyword_and_at_the_limit() {
    // The body never ends: only the read limit lets these probes finish.
    let addr = endless_server("status: healthy").await;
    let limited = prober_with(ProbeSettings { max_body_bytes: 20_000, ..settings(loopback_allowed()) });
    let report = probe(&limited, &with_keyword(format!("http://{addr}/"), "healthy")).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.keyword_matched, Some(true));
    assert!(report.body_bytes < 20_000, "the verdict ends the probe: {}", report.body_bytes);

    let small = prober_with(ProbeSettings { max_body_bytes: 10_000, ..settings(loopback_allowed()) });
    let report = probe(&small, &config(format!("http://{addr}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.body_bytes, 10_000);
}

#[tokio::test]
async fn head_requests_read_no_body() {
    let addr = app_server(None).await;
    let head = DomainConfig {
        request: shared::RequestConfig::new(HttpMethod::Head),
        ..config(format!("http://{addr}/only-head"))
    };
    let report = probe(&prober(), &head).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.status, Some(200));
    assert_eq!(report.body_bytes, 0);
    assert_eq!(report.keyword_matched, None);
}

// ---------------------------------------------------------------------------------------------
// Failures: URL, DNS, connect, timeouts

#[tokio::test]
async fn unusable_urls_are_invalid() {
    let prober = prober();
    for url in ["ftp://example.com/", "not a url", "http://", "file:///etc/passwd"] {
        let report = probe(&prober, &config(url)).await;
        assert_eq!(report.error, Some(ErrorKind::InvalidUrl), "{url}: {report:#?}");
        assert!(report.timings.connect_ms.is_none());
    }
}

#[tokio::test]
async fn unresolvable_names_are_dns_failures() {
    let prober = prober();
    let report = probe(&prober, &config("http://nowhere.test/")).await;
    assert_failed(&report, ErrorKind::Dns, "cannot resolve nowhere.test: nxdomain");
    assert_eq!(report.dns_error, Some(DnsErrorReason::Nxdomain));
    assert!(report.timings.dns_ms.is_some());
    assert_eq!(report.timings.connect_ms, None);

    let report = probe(&prober, &config("http://empty.test/")).await;
    assert_failed(&report, ErrorKind::Dns, "no_records");
    assert_eq!(report.dns_error, Some(DnsErrorReason::NoRecords));
}

/// A resolver that never answers.
struct Stuck;

impl Resolve for Stuck {
    fn lookup<'a>(&'a self, _host: &'a str, _budget: Duration) -> BoxFuture<'a, Result<Answer, DnsFailure>> {
        Box::pin(futures::future::pending())
    }
}

#[tokio::test]
async fn slow_dns_is_bounded_by_its_limit_and_the_total() {
    let dns_limited =
        ProbeSettings { dns_timeout: Duration::from_millis(100), ..settings(loopback_allowed()) };
    let prober = Prober::with_resolver(dns_limited, Arc::new(Stuck)).unwrap();
    let report = probe(&prober, &config("http://app.test/")).await;
    // The resolver failed, not the target: `dns` with reason `timeout`.
    assert_failed(&report, ErrorKind::Dns, "dns resolution timed out after 100 ms");
    assert_eq!(report.dns_error, Some(DnsErrorReason::Timeout));
    assert!(report.timings.dns_ms.is_some_and(|ms| ms >= 100.0));

    let prober = Prober::with_resolver(settings(loopback_allowed()), Arc::new(Stuck)).unwrap();
    let report = probe(&prober, &DomainConfig { timeout_ms: 150, ..config("http://app.test/") }).await;
    assert_failed(&report, ErrorKind::Dns, "total timeout of 150 ms exceeded during dns resolution");
    assert_eq!(report.dns_error, Some(DnsErrorReason::Timeout));
}

#[tokio::test]
async fn refused_connection_is_a_connect_failure() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let report = probe(&prober(), &config(format!("http://127.0.0.1:{port}/"))).await;
    assert_failed(&report, ErrorKind::Connect, "refused");
    assert!(report.timings.connect_ms.is_some());
    assert_eq!(report.resolved_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(report.status, None);
}

#[tokio::test]
async fn silent_server_is_a_timeout() {
    let addr = silent_server().await;
    let report =
        probe(&prober(), &DomainConfig { timeout_ms: 300, ..config(format!("http://{addr}/")) }).await;
    assert_failed(
        &report,
        ErrorKind::Timeout,
        "total timeout of 300 ms exceeded during waiting for the response",
    );
    assert!(report.timings.total_ms >= 300.0, "{:?}", report.timings);
    assert!(report.timings.total_ms < 3000.0, "{:?}", report.timings);
    assert!(report.timings.connect_ms.is_some() && report.timings.ttfb_ms.is_some());
    assert_eq!(report.status, None);
}

#[tokio::test]
async fn stalled_tls_handshake_is_a_timeout() {
    let addr = silent_server().await;
    let url = format!("https://{addr}/");
    let report = probe(&prober(), &DomainConfig { timeout_ms: 300, ..config(url.clone()) }).await;
    assert_failed(&report, ErrorKind::Timeout, "during tls handshake");

    let tls_limited = prober_with(ProbeSettings {
        tls_timeout: Duration::from_millis(200),
        ..settings(loopback_allowed())
    });
    let report = probe(&tls_limited, &config(url)).await;
    assert_failed(&report, ErrorKind::Timeout, "tls handshake timed out after 200 ms");
    assert!(report.certificate.is_none());
}

// ---------------------------------------------------------------------------------------------
// Certificates

#[tokio::test]
async fn invalid_certificates_fail_tls_and_are_still_reported() {
    let ca = TestCa::new("Crosscheck Test CA");
    let stranger = TestCa::new("Somebody Else's CA");
    let cases = [
        ("expired", ca.server(&["localhost"], (2021, 1, 1)), "certificate expired"),
        ("self-signed", self_signed_server(&["localhost"]), "self-signed certificate"),
        ("unknown issuer", stranger.server(&["localhost"], (2099, 1, 1)), "unknown issuer"),
        ("wrong host", ca.server(&["wrong.example"], (2099, 1, 1)), "name mismatch"),
    ];
    let prober = trusting(&ca);
    for (label, acceptor, reason) in cases {
        let addr = app_server(Some(acceptor)).await;
        let report = probe(&prober, &config(format!("https://localhost:{}/", addr.port()))).await;
        assert_failed(&report, ErrorKind::Tls, reason);
        let cert = report.certificate.as_ref().unwrap_or_else(|| panic!("{label}: no certificate"));
        assert!(!cert.valid, "{label}");
        let why = cert.validation_error.as_deref().unwrap_or_default();
        assert!(why.starts_with(reason), "{label}: {why}");
        assert!(report.timings.tls_ms.is_some(), "{label}");
        // The request is never sent over an untrusted connection.
        assert_eq!((report.status, report.timings.ttfb_ms), (None, None), "{label}");
    }
}

#[tokio::test]
async fn expired_certificate_reports_its_dates() {
    let ca = TestCa::new("Crosscheck Test CA");
    let addr = app_server(Some(ca.server(&["localhost"], (2021, 1, 1)))).await;
    let report = probe(&trusting(&ca), &config(format!("https://localhost:{}/", addr.port()))).await;
    let cert = report.certificate.expect("certificate recorded");
    assert_eq!(cert.not_after.to_rfc3339(), "2021-01-01T00:00:00+00:00");
    assert!(cert.days_remaining < -365, "{}", cert.days_remaining);
    assert_eq!(cert.sans, vec!["localhost".to_owned()]);
}

#[tokio::test]
async fn the_test_ca_is_unknown_without_extra_roots() {
    let ca = TestCa::new("Crosscheck Test CA");
    let addr = app_server(Some(ca.server(&["localhost"], (2099, 1, 1)))).await;
    let report = probe(&prober(), &config(format!("https://localhost:{}/", addr.port()))).await;
    assert_failed(&report, ErrorKind::Tls, "unknown issuer");
}

// ---------------------------------------------------------------------------------------------
// SSRF guard

#[tokio::test]
async fn default_policy_refuses_private_targets_without_connecting() {
    let v4 = Tripwire::bind("127.0.0.1:0").unwrap();
    let v6 = Tripwire::bind("[::1]:0");
    let p = v4.port();
    let p6 = v6.as_ref().map_or(p, Tripwire::port);
    let cases = [
        (format!("http://127.0.0.1:{p}/"), "127.0.0.1 is in a loopback range"),
        (format!("https://127.0.0.1:{p}/"), "loopback"),
        (format!("http://[::1]:{p6}/"), "::1 is in a loopback range"),
        (format!("http://[::ffff:127.0.0.1]:{p}/"), "loopback"),
        (format!("http://[::127.0.0.1]:{p}/"), "loopback"),
        (format!("http://[64:ff9b::7f00:1]:{p}/"), "loopback"),
        (format!("http://[2002:7f00:1::1]:{p}/"), "loopback"),
        (format!("http://0.0.0.0:{p}/"), "unspecified"),
        (format!("http://[::]:{p}/"), "unspecified"),
        // Spellings the URL parser normalizes to 127.0.0.1.
        (format!("http://2130706433:{p}/"), "loopback"),
        (format!("http://0x7f.1:{p}/"), "loopback"),
        (format!("http://127.1:{p}/"), "loopback"),
        ("http://10.0.0.1/".to_owned(), "10.0.0.1 is in a private range"),
        ("http://192.168.1.1/".to_owned(), "private"),
        ("http://172.16.0.1/".to_owned(), "private"),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), "cloud_metadata"),
        ("http://[fd00:ec2::254]/".to_owned(), "cloud_metadata"),
        ("http://100.64.0.1/".to_owned(), "100.64.0.1 is in a cgnat range"),
        ("http://[fe80::1]/".to_owned(), "link_local"),
        ("http://[fc00::1]/".to_owned(), "unique_local"),
        ("http://224.0.0.1/".to_owned(), "multicast"),
        // Names resolving to private addresses.
        (format!("http://loopback.test:{p}/"), "127.0.0.1 is in a loopback range"),
        ("http://internal.test/".to_owned(), "10.0.0.1 is in a private range"),
        ("http://metadata.test/".to_owned(), "cloud_metadata"),
        (
            format!("http://mixed.test:{p}/"),
            "10.0.0.1 is in a private range; 127.0.0.1 is in a loopback range",
        ),
    ];
    let prober = prober_with(settings(TargetPolicy::default()));
    for (url, detail) in &cases {
        let report = probe(&prober, &config(url.as_str())).await;
        assert_eq!(report.error, Some(ErrorKind::BlockedTarget), "{url}: {report:#?}");
        assert!(report.error_detail.as_deref().unwrap_or_default().contains(detail), "{url}: {report:#?}");
        assert_eq!(report.resolved_ip, None, "{url}");
        assert_eq!(report.timings.connect_ms, None, "{url}");
        assert!(!report.resolved_addrs.is_empty(), "{url}");
    }
    v4.assert_untouched();
    if let Some(v6) = v6 {
        v6.assert_untouched();
    }
}

#[tokio::test]
async fn system_resolver_localhost_is_refused_by_default() {
    let tripwire = Tripwire::bind("127.0.0.1:0").unwrap();
    let prober = Prober::new(settings(TargetPolicy::default())).unwrap();
    let report = probe(&prober, &config(format!("http://localhost:{}/", tripwire.port()))).await;
    assert_failed(&report, ErrorKind::BlockedTarget, "127.0.0.1 is in a loopback range");
    assert!(report.resolved_addrs.contains(&"127.0.0.1".parse().unwrap()), "{report:#?}");
    tripwire.assert_untouched();
}

#[tokio::test]
async fn system_resolver_reaches_localhost_when_allowed() {
    let addr = app_server(None).await;
    let prober = Prober::new(settings(loopback_allowed())).unwrap();
    let report = probe(&prober, &config(format!("http://localhost:{}/", addr.port()))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.resolved_ip, Some(addr.ip()));
    assert!(report.timings.dns_ms.is_some());
}

#[tokio::test]
async fn redirects_into_blocked_ranges_are_refused() {
    let addr = app_server(None).await;
    let only_one = prober_with(settings(TargetPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()])));

    let tripwire = Tripwire::bind("127.0.0.2:0").expect("127.0.0.2 is a loopback address");
    let inner = format!("http://127.0.0.2:{}/", tripwire.port());
    let report = probe(&only_one, &config(format!("http://{addr}/to?{inner}"))).await;
    assert_failed(&report, ErrorKind::BlockedTarget, "127.0.0.2 is in a loopback range");
    assert_eq!(report.redirects, vec![inner]);
    assert_eq!(report.resolved_ip, None);
    tripwire.assert_untouched();

    let report = probe(&only_one, &config(format!("http://{addr}/to?http://internal.test/admin"))).await;
    assert_failed(&report, ErrorKind::BlockedTarget, "10.0.0.1 is in a private range");
    assert_eq!(report.redirects, vec!["http://internal.test/admin".to_owned()]);
    assert_eq!(report.resolved_addrs, loopback("10.0.0.1"));
}

// ---------------------------------------------------------------------------------------------
// Redirects

#[tokio::test]
async fn redirects_are_followed_and_recorded() {
    let addr = app_server(None).await;
    let report = probe(&prober(), &with_keyword(format!("http://{addr}/redirect/2"), "test server")).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.status, Some(200));
    assert_eq!(
        report.redirects,
        vec![
            format!("http://{addr}/redirect/1"),
            format!("http://{addr}/redirect/0"),
            format!("http://{addr}/")
        ]
    );

    let report = probe(&prober(), &config(format!("http://app.test:{}/absolute", addr.port()))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.redirects, vec![format!("http://app.test:{}/", addr.port())]);
    assert!(report.timings.dns_ms.is_some());
}

#[tokio::test]
async fn too_many_redirects_fail() {
    let addr = app_server(None).await;
    let three = prober_with(ProbeSettings { max_redirects: 3, ..settings(loopback_allowed()) });
    let report = probe(&three, &config(format!("http://{addr}/redirect/5"))).await;
    assert_failed(&report, ErrorKind::Redirect, "more than 3 redirects");
    assert_eq!(report.redirects.len(), 3);
    assert_eq!(report.status, Some(302));

    // A loop is one before the limit: at its first repeated request.
    let report = probe(&three, &config(format!("http://{addr}/loop"))).await;
    assert_failed(
        &report,
        ErrorKind::Redirect,
        &format!("redirect loop: http://{addr}/loop redirects to itself"),
    );
    assert_eq!(report.redirects.len(), 1);

    let report = probe(&three, &config(format!("http://{addr}/redirect/2"))).await;
    assert!(report.ok, "exactly the limit is fine: {report:#?}");

    let report = probe(&three, &config(format!("http://{addr}/no-location"))).await;
    assert_failed(&report, ErrorKind::Redirect, "without a location");
}

#[tokio::test]
async fn expected_redirect_status_is_not_followed() {
    let addr = app_server(None).await;
    let expecting_3xx = DomainConfig {
        expected_status: StatusRange { min: 300, max: 399 },
        ..config(format!("http://{addr}/redirect/0"))
    };
    let report = probe(&prober(), &expecting_3xx).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.status, Some(303));
    assert!(report.redirects.is_empty());
}

#[tokio::test]
async fn the_total_timeout_covers_every_hop() {
    let slow = silent_server().await;
    let addr = app_server(None).await;
    let url = format!("http://{addr}/to?http://{slow}/");
    let report = probe(&prober(), &DomainConfig { timeout_ms: 300, ..config(url) }).await;
    assert_failed(&report, ErrorKind::Timeout, "total timeout of 300 ms");
    assert_eq!(report.redirects, vec![format!("http://{slow}/")]);
    assert!(report.timings.total_ms >= 300.0 && report.timings.total_ms < 3000.0, "{:?}", report.timings);
}

/// A server that sends the head and `first`, then keeps the body open without sending more.
async fn stalled_body_server(first: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request_head(&mut tcp).await;
                let head = chunked_head(first);
                let _ = tcp.write_all(head.as_bytes()).await;
                // Hold the connection open until the client leaves.
                let mut sink = [0u8; 64];
                let _ = tcp.read(&mut sink).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_body_still_streaming_at_the_deadline_fails_only_a_probe_without_a_verdict() {
    let addr = stalled_body_server("event: status healthy").await;
    let url = format!("http://{addr}/events");

    let found = DomainConfig { timeout_ms: 300, ..with_keyword(url.clone(), "healthy") };
    let report = probe(&prober(), &found).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.keyword_matched, Some(true));

    // Without a keyword the body must end: one that stalls is not a healthy page.
    let no_keyword = DomainConfig { timeout_ms: 300, ..config(url.clone()) };
    let report = probe(&prober(), &no_keyword).await;
    assert_failed(&report, ErrorKind::Timeout, "reading the body");
    assert_eq!(report.status, Some(200));

    let missing = DomainConfig { timeout_ms: 300, ..with_keyword(url, "absent") };
    let report = probe(&prober(), &missing).await;
    assert_failed(&report, ErrorKind::Timeout, "timeout");
}
