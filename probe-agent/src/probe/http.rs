//! HTTP/1.1 or HTTP/2 over an established connection (plain or TLS): the request a probe
//! sends (and what of it a redirect keeps), the connection driver task (aborted when the hop
//! ends), and what counts as a redirect.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, LOCATION, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use shared::{Auth, HttpMethod, RequestConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::body;
use super::decode::ACCEPT_ENCODING as CODINGS;
use super::head::{HeadLimits, Recorder, Recording};
use super::target::Target;

/// The task driving the connection. Dropped, it aborts the task, which closes the connection
/// at once — what a failed or abandoned hop needs. After a complete response, [`Driver::finish`]
/// instead lets the server close first (it was asked to: `Connection: close`), which spares
/// both sides a torn-down connection; a server that does not close is cut off after
/// [`LINGER`].
#[derive(Debug)]
pub struct Driver {
    task: Option<JoinHandle<()>>,
    finished: Option<tokio::sync::oneshot::Sender<()>>,
}

/// How long a finished exchange waits for the server to close the connection.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

impl Driver {
    /// After a verdict reached before the body ended: reads and discards the rest of `body`
    /// (at most `limit` more bytes, for at most [`LINGER`]) in the background so a server
    /// that finishes its response closes first, then [`Driver::finish`]es; a body that does
    /// not end in time closes the connection. The probe's result does not wait for this.
    pub fn finish_draining(self, mut body: hyper::body::Incoming, limit: u64) {
        tokio::spawn(async move {
            let mut read = 0;
            match tokio::time::timeout(LINGER, body::read_to_end(&mut body, limit, &mut read)).await {
                Ok(Ok(body::ReadEnd::Ended)) => self.finish(),
                outcome => {
                    tracing::debug!(read, ?outcome, "rest of the body not drained; connection closed");
                }
            }
        });
    }

    pub fn finish(mut self) {
        if let Some(finished) = self.finished.take() {
            let _ = finished.send(());
        }
        self.task.take();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// hyper's smallest read buffer; the buffer must hold a whole head.
const MIN_BUF_SIZE: usize = 8192;

/// The HTTP version spoken on a connection (JSON `"HTTP/1.1"` or `"HTTP/2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    #[serde(rename = "HTTP/1.1")]
    Http1,
    #[serde(rename = "HTTP/2")]
    Http2,
}

impl Protocol {
    /// The name in results: `"HTTP/1.1"` or `"HTTP/2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

/// Sends the probe's one request, over whichever version the connection speaks.
pub enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub async fn send_request(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(request).await,
        }
    }
}

/// Starts `protocol` on `io` with the head `limits`: the request sender, the task driving the
/// connection, and (HTTP/1.1 only: an HTTP/2 head is compressed) the recording of the response
/// head for [`super::head::diagnose`].
///
/// HTTP/2 decodes a head of up to [`http2_head_cap`] (`SETTINGS_MAX_HEADER_LIST_SIZE`), past
/// which the stream is refused with a bare protocol error; the caller checks the head against
/// `limits` itself, so that a head over them is named as such.
pub async fn start<IO>(
    io: IO,
    limits: HeadLimits,
    protocol: Protocol,
) -> Result<(Sender, Driver, Option<Recording>), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (finished, finished_rx) = tokio::sync::oneshot::channel::<()>();
    let (sender, driver, recording) = match protocol {
        Protocol::Http1 => {
            // One byte past the limit shows that it was exceeded.
            let (io, recording) = Recorder::new(io, limits.max_bytes.saturating_add(1));
            let (sender, connection) = http1::Builder::new()
                .max_headers(limits.max_headers)
                .max_header_size(limits.max_bytes)
                // What browsers accept (RFC 9112 §5.2: a user agent replaces an obs-fold with a
                // space; whitespace before a field's colon is dropped), so a site that users
                // reach is not down by a parser's strictness.
                .allow_obsolete_multiline_headers_in_responses(true)
                .allow_spaces_after_header_name_in_responses(true)
                // The read buffer must be able to hold a head of the limit and the start of the body.
                .max_buf_size(limits.max_bytes.saturating_add(MIN_BUF_SIZE).max(MIN_BUF_SIZE))
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("http handshake failed: {e}"))?;
            (Sender::Http1(sender), drive(connection, finished_rx), Some(recording))
        }
        Protocol::Http2 => {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(http2_head_cap(limits))
                // One request per connection: no stream concurrency to negotiate.
                .initial_max_send_streams(1)
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("http/2 handshake failed: {e}"))?;
            (Sender::Http2(sender), drive(connection, finished_rx), None)
        }
    };
    Ok((sender, Driver { task: Some(driver), finished: Some(finished) }, recording))
}

/// The largest HTTP/2 head decoded: four times `max_header_bytes`, at least 1 MiB.
pub fn http2_head_cap(limits: HeadLimits) -> u32 {
    u32::try_from(limits.max_bytes.saturating_mul(4).max(1 << 20)).unwrap_or(u32::MAX)
}

/// Spawns the task driving `connection`, which ends with it, or [`LINGER`] after the exchange
/// is reported finished.
fn drive<C, E>(connection: C, finished_rx: tokio::sync::oneshot::Receiver<()>) -> JoinHandle<()>
where
    C: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send,
{
    tokio::spawn(async move {
        // Until the exchange is over the probe's own deadlines bound this task (it is aborted
        // with the hop); after it, the server gets `LINGER` to close.
        let linger = async {
            if finished_rx.await.is_ok() {
                tokio::time::sleep(LINGER).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "probe connection ended with an error");
                }
            }
            () = linger => tracing::debug!("server kept the connection open after the response; closed"),
        }
    })
}

/// What one hop sends of the configured request. The first hop sends all of it; a redirect
/// changes it the way browsers (the Fetch standard) and curl do:
/// - 303 turns every method but HEAD into a GET, and 301 and 302 turn a POST into a GET; such
///   a GET goes without the body and without the `Content-*` headers;
/// - 307 and 308 keep the method and the body;
/// - credentials (`auth` and every secret header) go only to the monitored URL's origin
///   (scheme, host and port): a hop to another origin goes without them, a hop back to it
///   gets them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sending {
    pub method: HttpMethod,
    /// Whether the body and the `Content-*` headers go.
    pub content: bool,
    /// Whether `auth` and the secret headers go.
    pub credentials: bool,
}

impl Sending {
    pub fn first(request: &RequestConfig) -> Self {
        Self { method: request.method, content: true, credentials: true }
    }

    /// The next hop after a redirect answered with `status`, to a URL on the monitored URL's
    /// origin (`same_origin`) or not.
    pub fn redirected(self, status: u16, same_origin: bool) -> Self {
        let to_get = match status {
            303 => self.method != HttpMethod::Head,
            301 | 302 => self.method == HttpMethod::Post,
            _ => false,
        };
        let (method, content) = if to_get { (HttpMethod::Get, false) } else { (self.method, self.content) };
        Self { method, content, credentials: same_origin }
    }
}

fn http_method(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
    }
}

/// The `Authorization` value of `auth`: `Basic base64(username:password)` (UTF-8, RFC 7617)
/// or `Bearer <token>`, marked sensitive so it is never printed.
pub fn authorization(auth: &Auth) -> Result<HeaderValue, String> {
    let text = match auth {
        Auth::Basic { username, password } => {
            let pair = format!("{username}:{}", password.expose());
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        }
        Auth::Bearer { token } => format!("Bearer {}", token.expose()),
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| format!("the {} credentials cannot be sent in a header", auth.kind()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The probe's request for one hop: `User-Agent` (the configured one) and `Accept: */*` unless
/// the domain's headers set them, `Accept-Encoding` with every coding the prober decodes unless
/// the method is HEAD (what a browser sends; some servers stall or misbehave without it), the
/// domain's headers in their order, `Authorization` from its `auth`, and the body; what
/// [`Sending`] leaves out is left out. POST, PUT and PATCH without a body send
/// `Content-Length: 0`. Credential headers are marked sensitive. Errors name a header, never
/// its value.
///
/// HTTP/1.1: origin-form target, `Host` (with a non-default port) and `Connection: close`
/// (connections are never reused). HTTP/2: the absolute URL, from which the `:scheme` and
/// `:authority` pseudo-headers are taken; no connection-specific header (RFC 9113 §8.2.2).
pub fn request(
    config: &RequestConfig,
    sending: Sending,
    target: &Target,
    user_agent: &str,
    protocol: Protocol,
) -> Result<Request<Full<Bytes>>, String> {
    let set = |name: &HeaderName| config.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name.as_str()));
    let mut builder = match protocol {
        Protocol::Http1 => {
            Request::builder().uri(target.path_and_query.as_str()).header(HOST, target.authority.as_str())
        }
        Protocol::Http2 => {
            let scheme = if target.tls { "https" } else { "http" };
            Request::builder()
                .version(http::Version::HTTP_2)
                .uri(format!("{scheme}://{}{}", target.authority, target.path_and_query))
        }
    };
    builder = builder.method(http_method(sending.method));
    if !set(&USER_AGENT) {
        builder = builder.header(USER_AGENT, user_agent);
    }
    if !set(&ACCEPT) {
        builder = builder.header(ACCEPT, "*/*");
    }
    if sending.method != HttpMethod::Head {
        builder = builder.header(ACCEPT_ENCODING, CODINGS);
    }
    for header in &config.headers {
        // The control plane never publishes these; a configuration written by hand might.
        if let Some(reason) = shared::request::reserved_header(&header.name) {
            return Err(format!("request header {} cannot be sent: {reason}", header.name));
        }
        let credential = header.secret || shared::request::always_secret(&header.name);
        let content = header.name.len() > 8 && header.name[..8].eq_ignore_ascii_case("content-");
        if (credential && !sending.credentials) || (content && !sending.content) {
            continue;
        }
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("request header {:?} has an invalid name", header.name))?;
        let mut value = HeaderValue::from_str(&header.value)
            .map_err(|_| format!("request header {} has an invalid value", header.name))?;
        value.set_sensitive(credential);
        builder = builder.header(name, value);
    }
    if let (Some(auth), true) = (&config.auth, sending.credentials) {
        builder = builder.header(AUTHORIZATION, authorization(auth)?);
    }
    let body = match (&config.body, sending.content) {
        (Some(body), true) => Bytes::from(body.text.clone()),
        _ => Bytes::new(),
    };
    if body.is_empty() && sending.method.takes_body() {
        builder = builder.header(CONTENT_LENGTH, "0");
    }
    if protocol == Protocol::Http1 {
        builder = builder.header(CONNECTION, "close");
    }
    builder.body(Full::new(body)).map_err(|e| format!("cannot build the request: {e}").to_lowercase())
}

/// For a redirect status, the `Location` to follow (`Err` when it is missing or unreadable);
/// `None` for any other status.
pub fn redirect_location(status: StatusCode, headers: &HeaderMap) -> Option<Result<&str, String>> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    Some(match headers.get(LOCATION) {
        None => Err(format!("{} without a location", status.as_u16())),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(str::trim)
            .ok_or_else(|| format!("{} with an unreadable location", status.as_u16())),
    })
}

/// A transport or protocol error as a short lowercase reason, with its cause.
pub fn describe(error: &hyper::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redirect_statuses_with_a_location_are_followed() {
        let mut headers = HeaderMap::new();
        assert!(redirect_location(StatusCode::OK, &headers).is_none());
        assert!(redirect_location(StatusCode::NOT_MODIFIED, &headers).is_none());
        assert!(matches!(redirect_location(StatusCode::FOUND, &headers), Some(Err(_))));
        headers.insert(LOCATION, "/next".parse().unwrap());
        for code in [301, 302, 303, 307, 308] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(redirect_location(status, &headers), Some(Ok("/next")));
        }
        assert!(redirect_location(StatusCode::MULTIPLE_CHOICES, &headers).is_none());
    }

    fn build(config: &RequestConfig, sending: Sending) -> Request<Full<Bytes>> {
        let target = Target::parse("http://example.com:8080/a?b=c").unwrap();
        request(config, sending, &target, "Crosscheck/test", Protocol::Http1).unwrap()
    }

    #[test]
    fn requests_carry_host_agent_and_close() {
        let head = RequestConfig::new(HttpMethod::Head);
        let request = build(&head, Sending::first(&head));
        assert_eq!(request.method(), Method::HEAD);
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers()[HOST], "example.com:8080");
        assert_eq!(request.headers()[USER_AGENT], "Crosscheck/test");
        assert_eq!(request.headers()[CONNECTION], "close");
        assert_eq!(request.headers()[ACCEPT], "*/*");
        assert!(request.headers().get(ACCEPT_ENCODING).is_none(), "a head request needs no coding");
        let get = RequestConfig::default();
        let request = build(&get, Sending::first(&get));
        assert_eq!(request.headers()[ACCEPT_ENCODING], "gzip, deflate, br, zstd");
        assert!(request.headers().get(CONTENT_LENGTH).is_none(), "a GET has no body to frame");
    }

    fn header(name: &str, value: &str, secret: bool) -> shared::RequestHeader {
        shared::RequestHeader { name: name.into(), value: value.into(), secret }
    }

    fn post() -> RequestConfig {
        RequestConfig {
            method: HttpMethod::Post,
            headers: vec![
                header("Content-Type", "application/json", false),
                header("User-Agent", "custom/1", false),
                header("X-Api-Key", "k3y", true),
                header("Cookie", "sid=1", false),
                header("X-Trace", "t", false),
            ],
            auth: Some(Auth::Basic {
                username: "Aladdin".into(),
                password: shared::Secret::new("open sesame"),
            }),
            body: Some(shared::RequestBody { text: "{\"a\":1}".into(), secret: false }),
        }
    }

    #[test]
    fn the_configured_request_is_sent_whole_on_the_first_hop() {
        let config = post();
        let request = build(&config, Sending::first(&config));
        assert_eq!(request.method(), Method::POST);
        let headers = request.headers();
        // RFC 7617's own example.
        assert_eq!(headers[AUTHORIZATION], "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(headers[AUTHORIZATION].is_sensitive() && headers["x-api-key"].is_sensitive());
        assert!(headers["cookie"].is_sensitive(), "a cookie is a credential even when not marked");
        assert!(!headers["x-trace"].is_sensitive());
        assert_eq!(headers[USER_AGENT], "custom/1", "the domain's user agent replaces the prober's");
        assert_eq!(headers.get_all(USER_AGENT).iter().count(), 1);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(hyper::body::Body::size_hint(request.body()).exact(), Some(7), "the body goes");
        assert!(!format!("{request:?}").contains("k3y"), "sensitive values are not printed");
        let bearer = RequestConfig {
            auth: Some(Auth::Bearer { token: shared::Secret::new("abc.def") }),
            ..RequestConfig::default()
        };
        assert_eq!(build(&bearer, Sending::first(&bearer)).headers()[AUTHORIZATION], "Bearer abc.def");
        let empty = RequestConfig::new(HttpMethod::Put);
        assert_eq!(build(&empty, Sending::first(&empty)).headers()[CONTENT_LENGTH], "0");
        let owned =
            RequestConfig { headers: vec![header("host", "other.test", false)], ..RequestConfig::default() };
        let target = Target::parse("http://example.com/").unwrap();
        let error =
            super::request(&owned, Sending::first(&owned), &target, "ua", Protocol::Http1).unwrap_err();
        assert!(error.starts_with("request header host cannot be sent: the prober sets Host"), "{error}");
    }

    #[test]
    fn redirects_change_the_method_body_and_credentials_like_browsers() {
        let first = Sending::first(&post());
        let get = |credentials| Sending { method: HttpMethod::Get, content: false, credentials };
        assert_eq!(first.redirected(303, true), get(true));
        assert_eq!(first.redirected(302, false), get(false));
        assert_eq!(first.redirected(301, true), get(true));
        assert_eq!(first.redirected(307, true), first);
        assert_eq!(first.redirected(308, false), Sending { credentials: false, ..first });
        let put = Sending { method: HttpMethod::Put, content: true, credentials: true };
        assert_eq!(put.redirected(302, true), put, "only a POST becomes a GET on 301 and 302");
        assert_eq!(put.redirected(303, true), get(true));
        let head = Sending { method: HttpMethod::Head, content: true, credentials: true };
        assert_eq!(head.redirected(303, true), head);
        // Back on the monitored origin, credentials go again.
        assert!(first.redirected(302, false).redirected(302, true).credentials);

        let config = post();
        let request = build(&config, first.redirected(303, false));
        assert_eq!(request.method(), Method::GET);
        let headers = request.headers();
        for gone in ["authorization", "x-api-key", "cookie", "content-type", "content-length"] {
            assert!(headers.get(gone).is_none(), "{gone} must not follow");
        }
        assert_eq!(headers["x-trace"], "t");
        assert_eq!(hyper::body::Body::size_hint(request.body()).exact(), Some(0), "the body stays");
    }

    #[test]
    fn http2_requests_carry_the_absolute_url_and_no_connection_headers() {
        let target = Target::parse("https://example.com:8443/a?b=c").unwrap();
        let get = RequestConfig::default();
        let request =
            super::request(&get, Sending::first(&get), &target, "Crosscheck/test", Protocol::Http2).unwrap();
        assert_eq!(request.version(), http::Version::HTTP_2);
        assert_eq!(request.uri(), "https://example.com:8443/a?b=c");
        assert!(request.headers().get(HOST).is_none(), ":authority carries the host");
        assert!(request.headers().get(CONNECTION).is_none(), "connection headers are illegal in h2");
        assert_eq!(request.headers()[USER_AGENT], "Crosscheck/test");
        assert_eq!(request.headers()[ACCEPT_ENCODING], "gzip, deflate, br, zstd");
        let plain = Target::parse("http://example.com/").unwrap();
        let head = RequestConfig::new(HttpMethod::Head);
        let request =
            super::request(&head, Sending::first(&head), &plain, "Crosscheck/test", Protocol::Http2).unwrap();
        assert_eq!(request.uri(), "http://example.com/");
        // The configured request over HTTP/2: the same headers and body, still no connection
        // headers.
        let config = post();
        let request =
            super::request(&config, Sending::first(&config), &target, "Crosscheck/test", Protocol::Http2)
                .unwrap();
        let headers = request.headers();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(headers[AUTHORIZATION], "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(headers["x-api-key"], "k3y");
        assert!(headers.get(HOST).is_none() && headers.get(CONNECTION).is_none());
        assert_eq!(hyper::body::Body::size_hint(request.body()).exact(), Some(7));
    }
}
