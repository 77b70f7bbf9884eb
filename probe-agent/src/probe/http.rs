//! HTTP/1.1 or HTTP/2 over an established connection (plain or TLS): the request a probe
//! sends, the connection driver task (aborted when the hop ends), and what counts as a redirect.

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONNECTION, HOST, LOCATION, USER_AGENT};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    pub async fn send_request(
        &mut self,
        request: Request<Empty<Bytes>>,
    ) -> hyper::Result<Response<Incoming>> {
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

/// The probe's request: the configured user agent, `Accept: */*` and, for GET,
/// `Accept-Encoding` with every coding the prober decodes (what a browser sends; some servers
/// stall or misbehave without it). A HEAD request needs no body and advertises none.
///
/// HTTP/1.1: origin-form target, `Host` (with a non-default port) and `Connection: close`
/// (connections are never reused). HTTP/2: the absolute URL, from which the `:scheme` and
/// `:authority` pseudo-headers are taken; no connection-specific header (RFC 9113 §8.2.2).
pub fn request(
    method: shared::HttpMethod,
    target: &Target,
    user_agent: &str,
    protocol: Protocol,
) -> Result<Request<Empty<Bytes>>, String> {
    let method = match method {
        shared::HttpMethod::Get => Method::GET,
        shared::HttpMethod::Head => Method::HEAD,
    };
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
    builder = builder.method(method.clone()).header(USER_AGENT, user_agent).header(ACCEPT, "*/*");
    if method == Method::GET {
        builder = builder.header(ACCEPT_ENCODING, CODINGS);
    }
    if protocol == Protocol::Http1 {
        builder = builder.header(CONNECTION, "close");
    }
    builder.body(Empty::new()).map_err(|e| format!("cannot build the request: {e}").to_lowercase())
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

    #[test]
    fn requests_carry_host_agent_and_close() {
        let target = Target::parse("http://example.com:8080/a?b=c").unwrap();
        let request = request(shared::HttpMethod::Head, &target, "Crosscheck/test", Protocol::Http1).unwrap();
        assert_eq!(request.method(), Method::HEAD);
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers()[HOST], "example.com:8080");
        assert_eq!(request.headers()[USER_AGENT], "Crosscheck/test");
        assert_eq!(request.headers()[CONNECTION], "close");
        assert_eq!(request.headers()[ACCEPT], "*/*");
        assert!(request.headers().get(ACCEPT_ENCODING).is_none(), "a head request needs no coding");
        let request =
            super::request(shared::HttpMethod::Get, &target, "Crosscheck/test", Protocol::Http1).unwrap();
        assert_eq!(request.headers()[ACCEPT_ENCODING], "gzip, deflate, br, zstd");
    }

    #[test]
    fn http2_requests_carry_the_absolute_url_and_no_connection_headers() {
        let target = Target::parse("https://example.com:8443/a?b=c").unwrap();
        let request =
            super::request(shared::HttpMethod::Get, &target, "Crosscheck/test", Protocol::Http2).unwrap();
        assert_eq!(request.version(), http::Version::HTTP_2);
        assert_eq!(request.uri(), "https://example.com:8443/a?b=c");
        assert!(request.headers().get(HOST).is_none(), ":authority carries the host");
        assert!(request.headers().get(CONNECTION).is_none(), "connection headers are illegal in h2");
        assert_eq!(request.headers()[USER_AGENT], "Crosscheck/test");
        assert_eq!(request.headers()[ACCEPT_ENCODING], "gzip, deflate, br, zstd");
        let plain = Target::parse("http://example.com/").unwrap();
        let request =
            super::request(shared::HttpMethod::Head, &plain, "Crosscheck/test", Protocol::Http2).unwrap();
        assert_eq!(request.uri(), "http://example.com/");
    }
}
