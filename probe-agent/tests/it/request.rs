//! What the prober sends: the configured method, headers, basic or bearer authentication and
//! body, asserted byte for byte on a recording server on 127.0.0.1; what a redirect keeps
//! (303 and a POST's 301/302 become a GET without body, 307/308 keep both, credentials stay on
//! the monitored URL's origin); and a running agent that sends a domain's secrets from its
//! catalog without showing them in `/debug/catalog`, `/debug/results` or its logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use probe_agent::probe::Prober;
use serde_json::Value;
use shared::testing::{delete_prefix, eventually, random_prefix};
use shared::{Auth, DomainConfig, HttpMethod, RedisKeys, RequestBody, RequestConfig, RequestHeader, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::probe::{config, loopback_allowed, probe, settings};

const PASSWORD: &str = "pa55-w0rd-secret";
const TOKEN: &str = "bearer-token-secret";
const API_KEY: &str = "api-key-secret";
const BODY: &str = "{\"query\":\"status\",\"note\":\"ünïcode\"}";

/// One request as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Names lowercased, in arrival order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// A server on 127.0.0.1 that records every request (head and `Content-Length` body) and
/// answers with `route(request, own address)`: a status and extra header lines.
pub(crate) struct Recorder {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    pub(crate) async fn start(route: fn(&Received, SocketAddr) -> (u16, String)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(received) = read_request(&mut tcp).await else { return };
                    let (status, extra) = route(&received, addr);
                    log.lock().unwrap().push(received);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\n{extra}content-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                    let _ = tcp.write_all(response.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Self { addr, seen }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8(data[..head_end].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap().split(' ');
    let (method, target) = (start.next().unwrap().to_owned(), start.next().unwrap().to_owned());
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    assert!(!headers.iter().any(|(n, _)| n == "transfer-encoding"), "bodies are sent with a length");
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Some(Received { method, target, headers, body })
}

pub(crate) fn ok(_: &Received, _: SocketAddr) -> (u16, String) {
    (200, String::new())
}

fn header(name: &str, value: &str, secret: bool) -> RequestHeader {
    RequestHeader { name: name.into(), value: value.into(), secret }
}

/// A POST with every kind of request option.
fn full_post() -> RequestConfig {
    RequestConfig {
        method: HttpMethod::Post,
        headers: vec![
            header("Content-Type", "application/json; charset=utf-8", false),
            header("X-Api-Key", API_KEY, true),
            header("Cookie", "session=cookie-secret", true),
            header("X-Trace", "trace-visible", false),
            header("User-Agent", "operator-agent/2", false),
            header("Accept", "application/json", false),
        ],
        auth: Some(Auth::Basic { username: "ops".into(), password: Secret::new(PASSWORD) }),
        body: Some(RequestBody { text: BODY.into(), secret: true }),
    }
}

fn prober() -> Prober {
    Prober::new(settings(loopback_allowed())).unwrap()
}

fn basic() -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("ops:{PASSWORD}")))
}

#[tokio::test]
async fn the_configured_request_is_sent_exactly() {
    let server = Recorder::start(ok).await;
    let domain = DomainConfig { request: full_post(), ..config(server.url("/api/health?x=1")) };
    let report = probe(&prober(), &domain).await;
    assert!(report.ok, "{report:#?}");

    let got = &server.requests()[0];
    assert_eq!((got.method.as_str(), got.target.as_str()), ("POST", "/api/health?x=1"));
    assert_eq!(got.header("authorization"), Some(basic().as_str()));
    assert_eq!(got.header("authorization"), Some("Basic b3BzOnBhNTUtdzByZC1zZWNyZXQ="));
    assert_eq!(got.header("x-api-key"), Some(API_KEY));
    assert_eq!(got.header("cookie"), Some("session=cookie-secret"));
    assert_eq!(got.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(got.header("content-length"), Some(BODY.len().to_string().as_str()));
    assert_eq!(got.body, BODY.as_bytes(), "the body as UTF-8 bytes");
    assert_eq!(got.header("user-agent"), Some("operator-agent/2"), "the domain's user agent replaces ours");
    assert_eq!(got.header("accept"), Some("application/json"));
    assert_eq!(got.header("accept-encoding"), Some("gzip, deflate, br, zstd"));
    assert_eq!(got.header("connection"), Some("close"));
    assert_eq!(got.header("host"), Some(server.addr.to_string().as_str()));
    let once: BTreeMap<&str, usize> = got.names().into_iter().fold(BTreeMap::new(), |mut m, n| {
        *m.entry(n).or_default() += 1;
        m
    });
    assert!(once.values().all(|&n| n == 1), "no header twice: {once:?}");
    // The configured headers in their order, after the prober's.
    let names = got.names();
    let position = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(position("host") < position("content-type"));
    assert!(position("content-type") < position("x-api-key") && position("x-api-key") < position("x-trace"));

    let shown = serde_json::to_string(&report).unwrap() + &format!("{report:?}");
    for secret in [PASSWORD, API_KEY, "cookie-secret", BODY, &basic()] {
        assert!(!shown.contains(secret), "{secret} in the report");
    }
}

#[tokio::test]
async fn every_method_and_bearer_authentication() {
    let server = Recorder::start(ok).await;
    let prober = prober();
    for method in HttpMethod::ALL {
        let request = RequestConfig {
            auth: Some(Auth::Bearer { token: Secret::new(TOKEN) }),
            ..RequestConfig::new(method)
        };
        let report = probe(&prober, &DomainConfig { request, ..config(server.url("/m")) }).await;
        assert!(report.ok, "{method:?}: {report:#?}");
    }
    let seen = server.requests();
    let methods: Vec<&str> = seen.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
    for got in &seen {
        assert_eq!(got.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()), "{}", got.method);
        assert!(got.body.is_empty());
        // A method that carries content says its length even when it is empty (RFC 9110 §8.6).
        let takes_body = HttpMethod::parse(&got.method).unwrap().takes_body();
        assert_eq!(got.header("content-length"), takes_body.then_some("0"), "{}", got.method);
        assert_eq!(got.header("accept-encoding").is_some(), got.method != "HEAD");
    }
}

/// Redirects by path: `/303`, `/302`, `/301`, `/307`, `/308` to `/landing` on this server;
/// `/away-<code>?port=<p>` to `/elsewhere?back=<this server's port>` on the server at port
/// `p`; anything else is `200`.
fn redirects(request: &Received, addr: SocketAddr) -> (u16, String) {
    let target = request.target.as_str();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(code) = path.strip_prefix("/away-") {
        let port = query.strip_prefix("port=").unwrap();
        let location = format!("location: http://127.0.0.1:{port}/elsewhere?back={}\r\n", addr.port());
        return (code.parse().unwrap(), location);
    }
    match path.trim_start_matches('/').parse::<u16>() {
        Ok(code) => (code, "location: /landing\r\n".into()),
        Err(_) => (200, String::new()),
    }
}

/// `/elsewhere?back=<p>` answers 307 to `/home` on the server at port `p`.
fn bounce(request: &Received, _: SocketAddr) -> (u16, String) {
    let port = request.target.split_once("?back=").map(|(_, p)| p).unwrap_or_default();
    (307, format!("location: http://127.0.0.1:{port}/home\r\n"))
}

#[tokio::test]
async fn redirects_keep_or_drop_the_method_and_body_like_browsers() {
    let server = Recorder::start(redirects).await;
    let prober = prober();
    for (code, method, with_body) in [
        (303, "GET", false),
        (302, "GET", false),
        (301, "GET", false),
        (307, "POST", true),
        (308, "POST", true),
    ] {
        server.seen.lock().unwrap().clear();
        let domain = DomainConfig { request: full_post(), ..config(server.url(&format!("/{code}"))) };
        let report = probe(&prober, &domain).await;
        assert!(report.ok, "{code}: {report:#?}");
        let seen = server.requests();
        assert_eq!(seen.len(), 2, "{code}");
        let landing = &seen[1];
        assert_eq!((landing.target.as_str(), landing.method.as_str()), ("/landing", method), "{code}");
        if with_body {
            assert_eq!(landing.body, BODY.as_bytes(), "{code}");
            assert_eq!(landing.header("content-type"), Some("application/json; charset=utf-8"));
        } else {
            assert!(landing.body.is_empty(), "{code}");
            for gone in ["content-type", "content-length"] {
                assert_eq!(landing.header(gone), None, "{code}: {gone}");
            }
        }
        // Same origin: the credentials follow.
        assert_eq!(landing.header("authorization"), Some(basic().as_str()), "{code}");
        assert_eq!(landing.header("x-api-key"), Some(API_KEY), "{code}");
        assert_eq!(landing.header("x-trace"), Some("trace-visible"));
    }

    // A PUT keeps its method and body through a 302; a 303 makes it a GET.
    server.seen.lock().unwrap().clear();
    let put = RequestConfig { method: HttpMethod::Put, ..full_post() };
    probe(&prober, &DomainConfig { request: put.clone(), ..config(server.url("/302")) }).await;
    probe(&prober, &DomainConfig { request: put, ..config(server.url("/303")) }).await;
    let seen = server.requests();
    assert_eq!((seen[1].method.as_str(), seen[1].body.as_slice()), ("PUT", BODY.as_bytes()));
    assert_eq!((seen[3].method.as_str(), seen[3].body.len()), ("GET", 0));
}

#[tokio::test]
async fn credentials_stay_on_the_monitored_origin() {
    let home = Recorder::start(redirects).await;
    // Another port is another origin.
    let other = Recorder::start(bounce).await;
    let prober = prober();
    for (code, method, with_body) in [(307, "POST", true), (302, "GET", false)] {
        home.seen.lock().unwrap().clear();
        other.seen.lock().unwrap().clear();
        // home (monitored) → other → home.
        let url = home.url(&format!("/away-{code}?port={}", other.addr.port()));
        let report = probe(&prober, &DomainConfig { request: full_post(), ..config(url) }).await;
        assert!(report.ok, "{code}: {report:#?}");
        assert_eq!(report.redirects.len(), 2);

        let away = &other.requests()[0];
        assert_eq!((away.method.as_str(), away.target.split('?').next()), (method, Some("/elsewhere")));
        for credential in ["authorization", "x-api-key", "cookie"] {
            assert_eq!(away.header(credential), None, "{code}: {credential} must not leave the origin");
        }
        assert_eq!(away.header("x-trace"), Some("trace-visible"), "other headers follow");
        assert_eq!(away.body.as_slice(), if with_body { BODY.as_bytes() } else { b"" }, "{code}");

        let seen = home.requests();
        let (first, back) = (&seen[0], &seen[1]);
        assert_eq!(first.header("authorization"), Some(basic().as_str()));
        assert_eq!((back.target.as_str(), back.method.as_str()), ("/home", method), "{code}");
        assert_eq!(
            back.header("authorization"),
            Some(basic().as_str()),
            "{code}: home again, credentials again"
        );
        assert_eq!(back.header("x-api-key"), Some(API_KEY));
        assert_eq!(back.header("cookie"), Some("session=cookie-secret"));
        assert_eq!(back.body.as_slice(), if with_body { BODY.as_bytes() } else { b"" }, "{code}");
    }
}

/// Every log line of the current thread (all targets, every level) while the guard lives. A
/// current-thread test runtime runs the agent's tasks on this thread, so this sees them all.
struct CapturedLogs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
    /// A second registered dispatcher. With only one, tracing asks the *calling thread's*
    /// subscriber whether a new callsite is of interest, so a callsite first reached by another
    /// test's thread would be cached as uninteresting for this one too.
    _second: tracing::Dispatch,
}

impl CapturedLogs {
    fn install() -> Self {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(lines.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        Self { lines, _guard: tracing::subscriber::set_default(subscriber), _second: second }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_running_agent_sends_the_secrets_it_never_shows() {
    let logs = CapturedLogs::install();
    let server = Recorder::start(ok).await;
    let prefix = random_prefix("request");
    let keys = RedisKeys::new(prefix.clone());
    let redis =
        shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
    redis.init().await.unwrap();
    // As the publisher writes it: the secrets in plain text, which is what agents must send.
    let domain = DomainConfig {
        url: server.url("/secured"),
        request: full_post(),
        timeout_ms: 2_000,
        ..shared::testing::sample_domain(2, 1)
    };
    let published = serde_json::to_string(&domain).unwrap();
    assert!(published.contains(PASSWORD) && published.contains(API_KEY));
    let _: () = redis.hset(keys.domains(), (domain.id.to_string(), published)).await.unwrap();
    let _: () = redis.set(keys.version(), 1, None, None, false).await.unwrap();

    let agent = probe_agent::Agent::build(probe_agent::Config {
        region: "ams".into(),
        redis_prefix: prefix.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_private: vec!["127.0.0.0/8".parse().unwrap()],
        ..probe_agent::Config::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", agent.local_addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(agent.run_until(shutdown.clone()));
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };

    let wait = Duration::from_secs(60);
    let got = eventually(wait, "the scheduled probe at the server", || async {
        server.requests().into_iter().next()
    })
    .await;
    assert_eq!((got.method.as_str(), got.target.as_str()), ("POST", "/secured"));
    assert_eq!(got.header("authorization"), Some(basic().as_str()));
    assert_eq!(got.header("x-api-key"), Some(API_KEY));
    assert_eq!(got.body, BODY.as_bytes());
    let results = eventually(wait, "the result at /debug/results", || async {
        let text = get("/debug/results").await;
        text.contains(&domain.id.to_string()).then_some(text)
    })
    .await;

    let catalog = get("/debug/catalog").await;
    let shown: Value = serde_json::from_str(&catalog).unwrap();
    let request = &shown["domains"][0]["request"];
    assert_eq!(
        request["auth"],
        serde_json::json!({"kind": "basic", "username": "ops", "password_set": true})
    );
    assert_eq!(
        request["headers"][1],
        serde_json::json!({"name": "X-Api-Key", "secret": true, "value_set": true})
    );
    assert_eq!(request["headers"][3]["value"], "trace-visible");
    assert_eq!((&request["body"], &request["body_secret"]), (&Value::Null, &Value::Bool(true)));
    shutdown.cancel();
    task.await.unwrap().unwrap();
    delete_prefix(&redis, &prefix).await.unwrap();

    let logged = logs.text();
    assert!(logged.contains("catalog loaded"), "the capture sees the agent's logs: {logged}");
    for (what, text) in [("/debug/catalog", &catalog), ("/debug/results", &results), ("the logs", &logged)] {
        for secret in [PASSWORD, API_KEY, "cookie-secret", BODY, &basic()] {
            assert!(!text.contains(secret), "{secret} in {what}");
        }
    }
}

/// A POST answers 303 to its own URL (post/redirect/get); at `/cookie` it also sets a cookie,
/// and `/again` answers 307 (keep the method) to itself with the cookie; a GET answers 200.
fn post_redirect_get(request: &Received, _: SocketAddr) -> (u16, String) {
    let cookie = "set-cookie: jar=from-chain; Path=/\r\n";
    match (request.method.as_str(), request.target.as_str()) {
        ("POST", "/again") => (307, format!("location: /again\r\n{cookie}")),
        ("POST", "/cookie") => (303, format!("location: /cookie\r\n{cookie}")),
        ("POST", target) => (303, format!("location: {target}\r\n")),
        _ => (200, String::new()),
    }
}

#[tokio::test]
async fn post_redirect_get_to_the_same_url_is_not_a_loop_and_cookies_join_the_domains() {
    let server = Recorder::start(post_redirect_get).await;
    let domain = DomainConfig { request: full_post(), ..config(server.url("/form")) };
    let report = probe(&prober(), &domain).await;
    assert!(report.ok, "the GET after a 303 is another request than the POST: {report:#?}");
    let seen = server.requests();
    assert_eq!(seen.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["POST", "GET"]);
    assert_eq!(seen[1].target, "/form");

    let with_cookie = DomainConfig { request: full_post(), ..config(server.url("/cookie")) };
    assert!(probe(&prober(), &with_cookie).await.ok);
    let seen = &server.requests()[2..];
    assert_eq!(seen[0].header("cookie"), Some("session=cookie-secret"));
    assert_eq!(
        seen[1].header("cookie"),
        Some("session=cookie-secret; jar=from-chain"),
        "the chain's cookies follow the domain's own, in one header"
    );
    // Without a method change it is a loop, found at its first repeated request (the second
    // POST already carried the chain's cookie).
    let again = DomainConfig { request: full_post(), ..config(server.url("/again")) };
    let report = probe(&prober(), &again).await;
    crate::probe::assert_failed(&report, probe_agent::probe::ErrorKind::Redirect, "redirect loop");
    assert_eq!(report.redirects.len(), 2, "{report:#?}");
}
