//! HTTP versions and redirect chains: ALPN (`h2` and `http/1.1` offered, the server's choice
//! recorded), a per-domain forced version (`http_version`), HTTP/2 with prior knowledge on
//! plain HTTP, HTTP/2's head limits; redirect loops stopped at the first repeated request, and
//! the per-probe cookie jar that lets a "set a cookie, redirect to yourself" page through.
//! Every server is a real hyper server on 127.0.0.1 started by the test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{COOKIE, LOCATION, SET_COOKIE};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use probe_agent::probe::{ErrorKind, HttpProtocol, ProbeSettings, Prober, StaticResolver};
use rustls_pki_types::PrivateKeyDer;
use shared::{DomainConfig, HttpVersion, KeywordCheck};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::probe::{assert_failed, config, loopback_allowed, probe, settings, TestCa};

/// What the test server saw: requests served, by HTTP version.
#[derive(Debug, Default)]
struct Seen {
    http1: AtomicUsize,
    http2: AtomicUsize,
}

/// The test application, the same over every version:
/// - `/` answers `200` with `served over HTTP/x`;
/// - `/redirect` answers `302` to `/`;
/// - `/headers/N` answers `200` with N extra header fields;
/// - `/session` sets cookie `s=1` and redirects to itself until the request carries it;
/// - `/a` ↔ `/b` redirect to each other, `/c` redirects to `/a`; `/self` redirects to itself;
/// - `/grow` redirects to itself with one more query parameter each time.
async fn app(request: Request<Incoming>, seen: Arc<Seen>) -> Result<Response<Full<Bytes>>, Infallible> {
    let version = match request.version() {
        Version::HTTP_2 => {
            seen.http2.fetch_add(1, Ordering::SeqCst);
            "HTTP/2"
        }
        _ => {
            seen.http1.fetch_add(1, Ordering::SeqCst);
            "HTTP/1.1"
        }
    };
    let redirect = |to: String| {
        Response::builder().status(StatusCode::FOUND).header(LOCATION, to).body(Full::default()).unwrap()
    };
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let response = match path.as_str() {
        "/redirect" => redirect("/".into()),
        "/session" => {
            let cookie = request.headers().get(COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("");
            if cookie.split("; ").any(|c| c == "s=1") {
                Response::new(Full::from("welcome"))
            } else {
                let mut response = redirect("/session".into());
                response.headers_mut().insert(SET_COOKIE, "s=1; Path=/".parse().unwrap());
                response
            }
        }
        "/a" => redirect("/b".into()),
        "/b" => redirect("/a".into()),
        "/c" => redirect("/a".into()),
        "/self" => redirect("/self".into()),
        "/grow" if query.is_empty() => redirect("/grow?x=1".into()),
        "/grow" => redirect(format!("/grow?{query}&x=1")),
        _ if path.starts_with("/headers/") => {
            let count: usize = path["/headers/".len()..].parse().unwrap();
            let mut builder = Response::builder();
            for i in 0..count {
                builder = builder.header(format!("x-filler-{i}"), "f".repeat(40));
            }
            builder.body(Full::from(format!("served over {version}"))).unwrap()
        }
        _ => Response::new(Full::from(format!("served over {version}"))),
    };
    Ok(response)
}

/// How a test server speaks.
#[derive(Debug, Clone, Copy)]
enum Speaks {
    /// TLS, selecting by ALPN among `alpn` (empty: no ALPN at all).
    Tls(&'static [&'static [u8]]),
    /// Plain HTTP/1.1.
    Http1,
    /// Plain HTTP/2 with prior knowledge (h2c).
    H2c,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

async fn start(speaks: Speaks, ca: &TestCa) -> Server {
    let acceptor = match speaks {
        Speaks::Tls(alpn) => {
            let (chain, key) = ca.chain(&["app.test"], (2099, 1, 1));
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::from(key))
            .unwrap();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Some(TlsAcceptor::from(Arc::new(config)))
        }
        Speaks::Http1 | Speaks::H2c => None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = counts.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| app(request, seen.clone()));
                match (speaks, acceptor) {
                    (Speaks::Tls(_), Some(acceptor)) => {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        let io = TokioIo::new(tls);
                        if h2 {
                            let _ =
                                http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
                        } else {
                            let _ = http1::Builder::new().serve_connection(io, service).await;
                        }
                    }
                    (Speaks::H2c, _) => {
                        let io = TokioIo::new(tcp);
                        let _ = http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
                    }
                    _ => {
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    Server { addr, seen }
}

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];
const HTTP1_ONLY: &[&[u8]] = &[b"http/1.1"];
const H2_ONLY: &[&[u8]] = &[b"h2"];
const NO_ALPN: &[&[u8]] = &[];

fn prober(ca: &TestCa, tune: impl FnOnce(&mut ProbeSettings)) -> Prober {
    let resolver = StaticResolver::new().with("app.test", vec!["127.0.0.1".parse().unwrap()]);
    let mut settings = ProbeSettings { extra_roots: vec![ca.cert.clone()], ..settings(loopback_allowed()) };
    tune(&mut settings);
    Prober::with_resolver(settings, Arc::new(resolver)).unwrap()
}

fn https(server: &Server, path: &str, version: HttpVersion) -> DomainConfig {
    DomainConfig {
        http_version: version,
        keyword: Some(KeywordCheck::contains("served over")),
        ..config(format!("https://app.test:{}{path}", server.addr.port()))
    }
}

fn plain(server: &Server, path: &str, version: HttpVersion) -> DomainConfig {
    DomainConfig { http_version: version, ..config(format!("http://app.test:{}{path}", server.addr.port())) }
}

// ---------------------------------------------------------------------------------------------
// ALPN and forced versions

#[tokio::test]
async fn auto_speaks_http2_when_the_server_selects_h2_and_http1_otherwise() {
    let ca = TestCa::new("Protocols CA");
    let prober = prober(&ca, |_| {});
    for (alpn, expected) in [
        (BOTH, HttpProtocol::Http2),
        (H2_ONLY, HttpProtocol::Http2),
        (HTTP1_ONLY, HttpProtocol::Http1),
        (NO_ALPN, HttpProtocol::Http1),
    ] {
        let server = start(Speaks::Tls(alpn), &ca).await;
        let report = probe(&prober, &https(&server, "/", HttpVersion::Auto)).await;
        assert!(report.ok, "{alpn:?}: {report:#?}");
        assert_eq!(report.http_version, Some(expected), "{alpn:?}");
        assert_eq!(report.keyword_matched, Some(true));
        let (h1, h2) = (server.seen.http1.load(Ordering::SeqCst), server.seen.http2.load(Ordering::SeqCst));
        let want = if expected == HttpProtocol::Http2 { (0, 1) } else { (1, 0) };
        assert_eq!((h1, h2), want, "{alpn:?}: what the server served");
    }
}

#[tokio::test]
async fn http2_follows_redirects_and_records_the_last_hops_version() {
    let ca = TestCa::new("Protocols CA");
    let server = start(Speaks::Tls(BOTH), &ca).await;
    let report = probe(&prober(&ca, |_| {}), &https(&server, "/redirect", HttpVersion::Auto)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.redirects, [format!("https://app.test:{}/", server.addr.port())]);
    assert_eq!(report.http_version, Some(HttpProtocol::Http2));
    assert_eq!(server.seen.http2.load(Ordering::SeqCst), 2);
    assert!(report.timings.ttfb_ms.is_some() && report.timings.tls_ms.is_some());
}

#[tokio::test]
async fn a_forced_http1_is_all_that_is_offered() {
    let ca = TestCa::new("Protocols CA");
    let server = start(Speaks::Tls(BOTH), &ca).await;
    let report = probe(&prober(&ca, |_| {}), &https(&server, "/", HttpVersion::Http1)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.http_version, Some(HttpProtocol::Http1));
    assert_eq!(server.seen.http2.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_forced_http2_fails_against_a_server_without_h2() {
    let ca = TestCa::new("Protocols CA");
    let prober = prober(&ca, |_| {});
    let server = start(Speaks::Tls(BOTH), &ca).await;
    let report = probe(&prober, &https(&server, "/", HttpVersion::Http2)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.http_version, Some(HttpProtocol::Http2));

    // A server that ignores ALPN completes the handshake without a selection: refused after
    // it. One that speaks only http/1.1 refuses the handshake (RFC 7301 §3.2). Either way
    // nothing is requested.
    let ignores = start(Speaks::Tls(NO_ALPN), &ca).await;
    let report = probe(&prober, &https(&ignores, "/", HttpVersion::Http2)).await;
    assert_failed(
        &report,
        ErrorKind::Http,
        "the server did not select http/2 (alpn h2), which the domain requires",
    );
    let refuses = start(Speaks::Tls(HTTP1_ONLY), &ca).await;
    let report = probe(&prober, &https(&refuses, "/", HttpVersion::Http2)).await;
    assert_failed(
        &report,
        ErrorKind::Tls,
        "the server supports none of the offered application protocols (alpn h2, http_version: http2)",
    );
    for server in [ignores, refuses] {
        assert_eq!(server.seen.http1.load(Ordering::SeqCst) + server.seen.http2.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn plain_http_speaks_http1_unless_http2_is_forced_as_prior_knowledge() {
    let ca = TestCa::new("Protocols CA");
    let prober = prober(&ca, |_| {});
    let h1 = start(Speaks::Http1, &ca).await;
    let report = probe(&prober, &plain(&h1, "/", HttpVersion::Auto)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.http_version, Some(HttpProtocol::Http1));

    let h2c = start(Speaks::H2c, &ca).await;
    let report = probe(&prober, &plain(&h2c, "/redirect", HttpVersion::Http2)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.http_version, Some(HttpProtocol::Http2));
    assert_eq!(h2c.seen.http2.load(Ordering::SeqCst), 2);

    // HTTP/2 prior knowledge against an HTTP/1.1 server: the exchange fails, as HTTP.
    let report = probe(&prober, &plain(&h1, "/", HttpVersion::Http2)).await;
    assert_eq!(report.error, Some(ErrorKind::Http), "{report:#?}");
    assert_eq!(report.http_version, Some(HttpProtocol::Http2));
}

#[tokio::test]
async fn http2_heads_obey_the_header_limits() {
    let ca = TestCa::new("Protocols CA");
    let server = start(Speaks::Tls(BOTH), &ca).await;

    // 150 fields of ~50 bytes pass the defaults, as over HTTP/1.1.
    let report = probe(&prober(&ca, |_| {}), &https(&server, "/headers/150", HttpVersion::Auto)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.http_version, Some(HttpProtocol::Http2));

    // Over the count limit: named.
    let few = prober(&ca, |s| s.max_response_headers = 100);
    let report = probe(&few, &https(&server, "/headers/150", HttpVersion::Auto)).await;
    assert_failed(&report, ErrorKind::Http, "more than the limit of 100 (max_response_headers)");

    // Over the size limit: the head is refused, and the limit is named.
    let small = prober(&ca, |s| s.max_header_bytes = 4096);
    let report = probe(&small, &https(&server, "/headers/150", HttpVersion::Auto)).await;
    assert_failed(&report, ErrorKind::Http, "4096 bytes (max_header_bytes)");
}

// ---------------------------------------------------------------------------------------------
// Redirect chains

#[tokio::test]
async fn a_cookie_set_before_a_redirect_to_the_same_url_is_sent_back() {
    let ca = TestCa::new("Protocols CA");
    let prober = prober(&ca, |_| {});
    // Plain HTTP/1.1, then HTTPS over HTTP/2: the jar works the same on both.
    let h1 = start(Speaks::Http1, &ca).await;
    let report = probe(
        &prober,
        &DomainConfig {
            keyword: Some(KeywordCheck::contains("welcome")),
            ..plain(&h1, "/session", HttpVersion::Auto)
        },
    )
    .await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.redirects, [format!("http://app.test:{}/session", h1.addr.port())]);

    let h2 = start(Speaks::Tls(BOTH), &ca).await;
    let config = DomainConfig {
        keyword: Some(KeywordCheck::contains("welcome")),
        ..https(&h2, "/session", HttpVersion::Auto)
    };
    let report = probe(&prober, &config).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!((report.redirects.len(), report.http_version), (1, Some(HttpProtocol::Http2)));

    // The jar lives for one probe: the next probe starts without the cookie again.
    let report = probe(&prober, &config).await;
    assert!(report.ok && report.redirects.len() == 1, "{report:#?}");
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_first_repeated_request() {
    let ca = TestCa::new("Protocols CA");
    let prober = prober(&ca, |_| {});
    let server = start(Speaks::Http1, &ca).await;
    let base = format!("http://app.test:{}", server.addr.port());

    // /a → /b → /a: two redirects, not max_redirects.
    let report = probe(&prober, &plain(&server, "/a", HttpVersion::Auto)).await;
    assert_failed(
        &report,
        ErrorKind::Redirect,
        &format!("redirect loop: {base}/b redirects back to the monitored url {base}/a"),
    );
    assert_eq!(report.redirects, [format!("{base}/b"), format!("{base}/a")]);
    assert_eq!(server.seen.http1.load(Ordering::SeqCst), 2);

    // Entering the loop one hop later: named between the later hops.
    let report = probe(&prober, &plain(&server, "/c", HttpVersion::Auto)).await;
    assert_failed(
        &report,
        ErrorKind::Redirect,
        &format!("redirect loop: {base}/b redirects back to {base}/a (redirect 1)"),
    );
    assert_eq!(report.redirects.len(), 3);

    // A page redirecting to itself.
    let report = probe(&prober, &plain(&server, "/self", HttpVersion::Auto)).await;
    assert_failed(&report, ErrorKind::Redirect, &format!("redirect loop: {base}/self redirects to itself"));
    assert_eq!(report.redirects.len(), 1);
}

#[tokio::test]
async fn a_url_that_grows_at_every_redirect_stops_at_the_redirect_limit() {
    let ca = TestCa::new("Protocols CA");
    let prober = prober(&ca, |s| s.max_redirects = 5);
    let server = start(Speaks::Http1, &ca).await;
    let report = probe(&prober, &plain(&server, "/grow", HttpVersion::Auto)).await;
    assert_failed(&report, ErrorKind::Redirect, "more than 5 redirects");
    assert_eq!(report.redirects.len(), 5);
    assert_eq!(server.seen.http1.load(Ordering::SeqCst), 6);
}

// ---------------------------------------------------------------------------------------------
// Bodies that break off

/// A server whose every response is `200` declaring `content-length: 1000`, sends `partial`
/// and then fails its body: hyper resets the HTTP/2 stream (`RST_STREAM`) or closes the
/// HTTP/1.1 connection.
async fn start_breaking(speaks: Speaks) -> SocketAddr {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<Incoming>| async {
                    use futures::StreamExt as _;
                    let first: Result<Frame<Bytes>, std::io::Error> =
                        Ok(Frame::data(Bytes::from_static(b"partial")));
                    // The failure comes after the head and the first bytes reached the client.
                    let failure = futures::stream::once(async {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        Err(std::io::Error::other("the origin went away"))
                    });
                    let body = StreamBody::new(futures::stream::iter([first]).chain(failure));
                    Ok::<_, Infallible>(
                        Response::builder().header("content-length", "1000").body(body).unwrap(),
                    )
                });
                let io = TokioIo::new(tcp);
                match speaks {
                    Speaks::H2c => {
                        let _ = http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
                    }
                    _ => {
                        let _ = http1::Builder::new().serve_connection(io, service).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_body_that_breaks_off_is_down_over_either_version() {
    let ca = TestCa::new("Protocols CA");
    let prober = prober(&ca, |_| {});
    for (speaks, version, expected) in [
        (Speaks::H2c, HttpVersion::Http2, "the body broke off after 7 of 1000 bytes"),
        (Speaks::Http1, HttpVersion::Http1, "the body ended after 7 of 1000 bytes"),
    ] {
        let addr = start_breaking(speaks).await;
        let url = format!("http://app.test:{}/", addr.port());
        for keyword in [None, Some(KeywordCheck::contains("absent"))] {
            let config =
                DomainConfig { http_version: version, keyword: keyword.clone(), ..config(url.clone()) };
            let report = probe(&prober, &config).await;
            assert_failed(&report, ErrorKind::Http, expected);
            assert_eq!(report.status, Some(200), "{version:?}");
        }
    }
}
