//! One probe, hop by hop: DNS → guard → TCP → TLS → request → body, following redirects, every
//! phase bounded by its own limit and by what is left of the probe's total timeout.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cookie_store::CookieStore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{self, BodyCheck, CheckEnd, ReadEnd};
use super::connect::{self, AttemptOutcome, ConnectAttempt, RaceEnd};
use super::decode::Coding;
use super::dns::{DnsErrorReason, DnsFailure, Resolve};
use super::head::{self, HeadLimits, Recording};
use super::target::{Target, TargetHost};
use super::text::Declared;
use super::tls::{CertSlot, SeenCert, TlsClient};
use super::{
    guard, http, tls, CertInfo, DnsInfo, EarliestExpiry, ErrorKind, ProbeReport, ProbeSettings, Timings,
};

/// The phases a timeout can interrupt.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    Dns,
    Connect,
    Tls,
    Request,
    Body,
    /// A tcp check's exchange: writing `send` and reading until `expect`.
    Exchange,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns resolution",
            Phase::Connect => "tcp connect",
            Phase::Tls => "tls handshake",
            Phase::Request => "waiting for the response",
            Phase::Body => "reading the body",
            Phase::Exchange => "waiting for the expected response",
        }
    }
}

/// Why a probe stopped early.
#[derive(Debug)]
pub(super) struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    pub(super) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
}

/// The probe's time budget.
pub(super) struct Clock {
    deadline: Instant,
    total: Duration,
}

impl Clock {
    /// The time a phase may take: its own `limit` or what is left of the total, whichever is
    /// shorter; and whether the total is the one that binds.
    pub(super) fn cap(&self, limit: Duration) -> (Duration, bool) {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if limit < remaining {
            (limit, false)
        } else {
            (remaining, true)
        }
    }

    /// The detail of a phase that ran out of time under [`Clock::cap`].
    pub(super) fn timeout_detail(&self, phase: Phase, cap: Duration, by_total: bool) -> String {
        if by_total {
            format!("total timeout of {} ms exceeded during {}", self.total.as_millis(), phase.as_str())
        } else {
            format!("{} timed out after {} ms", phase.as_str(), cap.as_millis())
        }
    }

    /// Runs one phase under `limit` (if any) and the remaining total budget; returns the
    /// outcome and how long the phase ran, also when it timed out.
    pub(super) async fn phase<F: Future>(
        &self,
        phase: Phase,
        limit: Option<Duration>,
        work: F,
    ) -> (Result<F::Output, Failure>, Duration) {
        let started = Instant::now();
        let (cap, by_total) = self.cap(limit.unwrap_or(Duration::MAX));
        let outcome = tokio::time::timeout(cap, work)
            .await
            .map_err(|_| Failure::new(ErrorKind::Timeout, self.timeout_detail(phase, cap, by_total)));
        (outcome, started.elapsed())
    }
}

pub(super) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// An established connection, the HTTP version it speaks, and what the hop sends over it.
struct Connection<IO> {
    io: IO,
    protocol: http::Protocol,
    sending: http::Sending,
}

/// How a hop ended when it did not fail.
enum HopEnd {
    Final,
    /// A redirect with its status.
    Redirect(Target, u16),
}

/// Shared by every clone of a prober.
pub(super) struct Engine {
    pub settings: ProbeSettings,
    pub resolver: Arc<dyn Resolve>,
    pub tls: TlsClient,
}

impl Engine {
    pub async fn probe(&self, config: &shared::DomainConfig) -> ProbeReport {
        let started = Instant::now();
        let total = Duration::from_millis(u64::from(config.timeout_ms));
        let clock = Clock { deadline: started + total, total };
        let mut report = empty_report();
        // The other kinds of check are boxed: their states would otherwise widen every HTTP
        // probe's future, which is moved into its box once per probe.
        let outcome = match &config.check {
            shared::CheckConfig::Http => self.run(config, &clock, &mut report).await,
            shared::CheckConfig::Tcp(tcp) => Box::pin(self.tcp_check(config, tcp, &clock, &mut report)).await,
            shared::CheckConfig::Tls(tls) => Box::pin(self.tls_check(config, tls, &clock, &mut report)).await,
            shared::CheckConfig::Dns(dns) => Box::pin(self.dns_check(dns, &clock, &mut report)).await,
        };
        report.timings.total_ms = ms(started.elapsed());
        finish(&mut report, outcome);
        report
    }

    async fn run(
        &self,
        config: &shared::DomainConfig,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<(), Failure> {
        let mut target = Target::parse(&config.url).map_err(|e| Failure::new(ErrorKind::InvalidUrl, e))?;
        let origin = target.url.origin();
        let mut sending = http::Sending::first(&config.request);
        let mut cookies = CookieStore::new();
        // Each request of the chain: its URL, the cookies it sent and its method (a POST
        // answered 303 to its own URL is followed by a GET of it, not a loop).
        let mut requested = vec![(target.url.to_string(), String::new(), sending.method)];
        loop {
            start_hop(report);
            match self.hop(config, sending, &target, &mut cookies, clock, report).await? {
                HopEnd::Final => return Ok(()),
                HopEnd::Redirect(next, status) => {
                    sending = sending.redirected(status, next.url.origin() == origin);
                    let request = (next.url.to_string(), cookie_header(&cookies, &next.url), sending.method);
                    if let Some(hop) = requested.iter().position(|seen| *seen == request) {
                        report.redirects.push(request.0);
                        return Err(Failure::new(ErrorKind::Redirect, redirect_loop(&requested, hop)));
                    }
                    if report.redirects.len() >= self.settings.max_redirects as usize {
                        let detail = format!("more than {} redirects", self.settings.max_redirects);
                        return Err(Failure::new(ErrorKind::Redirect, detail));
                    }
                    report.redirects.push(request.0.clone());
                    requested.push(request);
                    target = next;
                }
            }
        }
    }

    async fn hop(
        &self,
        config: &shared::DomainConfig,
        sending: http::Sending,
        target: &Target,
        cookies: &mut CookieStore,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<HopEnd, Failure> {
        let addrs = self.resolve(&target.host, clock, report).await?;
        let tcp = self.connect(&addrs, target.port, clock, report).await?;
        if target.tls {
            // Boxed: the handshake and the exchange over TLS are several kilobytes of future
            // state that a plain HTTP hop would otherwise carry too.
            Box::pin(self.tls_exchange(config, sending, target, tcp, cookies, clock, report)).await
        } else {
            // Plain HTTP has no negotiation: HTTP/2 there is prior knowledge (h2c).
            let protocol = match config.http_version {
                shared::HttpVersion::Http2 => http::Protocol::Http2,
                shared::HttpVersion::Auto | shared::HttpVersion::Http1 => http::Protocol::Http1,
            };
            self.exchange(config, target, Connection { io: tcp, protocol, sending }, cookies, clock, report)
                .await
        }
    }

    /// The TLS handshake of a hop, then its exchange over the negotiated protocol.
    #[allow(clippy::too_many_arguments)]
    async fn tls_exchange(
        &self,
        config: &shared::DomainConfig,
        sending: http::Sending,
        target: &Target,
        tcp: TcpStream,
        cookies: &mut CookieStore,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<HopEnd, Failure> {
        let stream =
            self.tls_handshake(config, &target.host, Some(config.http_version), tcp, clock, report).await?;
        let protocol = tls::negotiated(&stream);
        if config.http_version == shared::HttpVersion::Http2 && protocol != http::Protocol::Http2 {
            return Err(Failure::new(
                ErrorKind::Http,
                "the server did not select http/2 (alpn h2), which the domain requires (http_version: http2)",
            ));
        }
        self.exchange(config, target, Connection { io: stream, protocol, sending }, cookies, clock, report)
            .await
    }

    /// DNS, unless the host is an address: every address of the name, as answered.
    ///
    /// The lookup gets the DNS limit or what is left of the total, whichever is shorter; running
    /// out of it is a `dns` failure with reason `timeout` (the resolver, not the target, failed).
    pub(super) async fn resolve(
        &self,
        host: &TargetHost,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<Vec<IpAddr>, Failure> {
        let name = match host {
            TargetHost::Ip(ip) => {
                report.resolved_addrs = vec![*ip];
                return Ok(vec![*ip]);
            }
            TargetHost::Name(name) => name,
        };
        let absolute = format!("{}.", name.trim_end_matches('.'));
        let started = Instant::now();
        let (cap, by_total) = clock.cap(self.settings.dns_timeout);
        let outcome = tokio::time::timeout(cap, self.resolver.lookup(name, cap))
            .await
            .unwrap_or_else(|_| Err(DnsFailure::new(DnsErrorReason::Timeout, 1)));
        report.timings.dns_ms = Some(ms(started.elapsed()));
        // A resolver answering with no address has found no record, whatever it says.
        let outcome = outcome.and_then(|answer| {
            if answer.addrs.is_empty() {
                Err(DnsFailure::new(DnsErrorReason::NoRecords, answer.attempts))
            } else {
                Ok(answer)
            }
        });
        match outcome {
            Ok(answer) => {
                let mut sorted = answer.addrs.clone();
                sorted.sort();
                sorted.dedup();
                report.resolved_addrs = sorted;
                report.dns = Some(DnsInfo {
                    name: absolute,
                    attempts: answer.attempts,
                    ttl_s: answer.ttl_s,
                    cnames: answer.cnames,
                    dnssec: None,
                });
                Ok(answer.addrs)
            }
            Err(failure) => {
                report.dns = Some(DnsInfo {
                    name: absolute,
                    attempts: failure.attempts,
                    ttl_s: None,
                    cnames: Vec::new(),
                    dnssec: None,
                });
                report.dns_error = Some(failure.reason);
                let detail = if failure.reason == DnsErrorReason::Timeout {
                    let limit = clock.timeout_detail(Phase::Dns, cap, by_total);
                    format!("cannot resolve {name}: {}; {limit}", failure.detail())
                } else {
                    format!("cannot resolve {name}: {}", failure.detail())
                };
                Err(Failure::new(ErrorKind::Dns, detail))
            }
        }
    }

    /// The SSRF guard, then TCP to the allowed addresses, Happy Eyeballs style (see
    /// [`connect`]): the connection of the first address that answers. Each address is checked
    /// by the guard again right before its socket opens.
    pub(super) async fn connect(
        &self,
        addrs: &[IpAddr],
        port: u16,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<TcpStream, Failure> {
        let screened = guard::screen(&self.settings.policy, addrs);
        if screened.allowed.is_empty() {
            return Err(Failure::new(ErrorKind::BlockedTarget, screened.refusal()));
        }
        report.connect_attempts = screened
            .refused
            .iter()
            .map(|(ip, range)| ConnectAttempt {
                ip: *ip,
                outcome: AttemptOutcome::Blocked,
                started_ms: None,
                took_ms: None,
                detail: Some(format!("{ip} is in a {range} range")),
            })
            .collect();
        let ordered: Vec<SocketAddr> =
            connect::order(&screened.allowed).into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
        report.resolved_ip = ordered.first().map(SocketAddr::ip);

        let policy = &self.settings.policy;
        let started = Instant::now();
        let (cap, by_total) = clock.cap(self.settings.connect_timeout);
        let (end, attempts) =
            connect::race(&ordered, self.settings.connect_attempt_delay, cap, |addr| async move {
                guard::check(policy, addr.ip())?;
                TcpStream::connect(addr).await
            })
            .await;
        report.timings.connect_ms = Some(ms(started.elapsed()));
        report.connect_attempts.extend(attempts);
        let tcp = match end {
            RaceEnd::Connected(index, tcp) => {
                report.resolved_ip = Some(ordered[index].ip());
                tcp
            }
            RaceEnd::TimedOut => {
                let tried = report.connect_attempts.iter().filter(|a| a.started_ms.is_some()).count();
                let mut detail = clock.timeout_detail(Phase::Connect, cap, by_total);
                if tried > 1 {
                    detail.push_str(&format!(" ({tried} addresses tried)"));
                }
                return Err(Failure::new(ErrorKind::Timeout, detail));
            }
            RaceEnd::Failed => {
                let detail = report
                    .connect_attempts
                    .iter()
                    .filter(|a| a.started_ms.is_some())
                    .map(|a| {
                        let why = a.detail.as_deref().unwrap_or("failed");
                        format!("connect to {} failed: {why}", SocketAddr::new(a.ip, port))
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Failure::new(ErrorKind::Connect, detail));
            }
        };
        // Only a latency tweak: a failure here does not make the target unhealthy.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set tcp_nodelay");
        }
        Ok(tcp)
    }

    /// The handshake, recording the certificate; an invalid certificate stops the hop, unless
    /// the domain is in insecure mode (`tls_verify: false`), where the facts are recorded and
    /// the hop goes on.
    ///
    /// `offer` is the ALPN offer: the domain's HTTP version for http, none for tcp and tls
    /// checks.
    pub(super) async fn tls_handshake(
        &self,
        config: &shared::DomainConfig,
        host: &TargetHost,
        offer: Option<shared::HttpVersion>,
        tcp: TcpStream,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
        let name = tls::server_name(host).map_err(|e| Failure::new(ErrorKind::Tls, e))?;
        let slot = CertSlot::default();
        let handshake = self.tls.handshake(name, tcp, &slot, offer);
        let (outcome, took) = clock.phase(Phase::Tls, Some(self.settings.tls_timeout), handshake).await;
        report.timings.tls_ms = Some(ms(took));
        let seen = slot.take();
        let info = seen.as_ref().and_then(|seen| tls::cert_info(seen, chrono::Utc::now()));
        let detail = info.as_ref().and_then(|cert| cert.validation_error.clone());
        if let Some(info) = info {
            record_certificate(report, info);
        }
        let stream =
            outcome?.map_err(|e| Failure::new(ErrorKind::Tls, handshake_error(&e, config.http_version)))?;
        match seen {
            // A completed handshake always went through the verifier.
            None => Err(Failure::new(ErrorKind::Tls, "the certificate was not verified")),
            Some(SeenCert { error: None, .. }) => Ok(stream),
            Some(SeenCert { error: Some(error), .. }) => {
                let detail = detail.unwrap_or_else(|| tls::reason(&error, false));
                if config.tls_verify {
                    Err(Failure::new(ErrorKind::Tls, detail))
                } else {
                    tracing::debug!(url = %config.url, %detail, "invalid certificate accepted (tls_verify off)");
                    Ok(stream)
                }
            }
        }
    }

    /// Request, response head, and (for a final, expected response to anything but HEAD) the
    /// body.
    async fn exchange<IO>(
        &self,
        config: &shared::DomainConfig,
        target: &Target,
        connection: Connection<IO>,
        cookies: &mut CookieStore,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<HopEnd, Failure>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { io, protocol, sending } = connection;
        let mut request =
            http::request(&config.request, sending, target, &self.settings.user_agent, protocol)
                .map_err(|e| Failure::new(ErrorKind::Http, e))?;
        let sent = cookie_header(cookies, &target.url);
        if !sent.is_empty() {
            let value = ::http::HeaderValue::from_str(&sent).map_err(|_| {
                Failure::new(
                    ErrorKind::Http,
                    "a cookie set earlier in the redirect chain cannot be sent back",
                )
            })?;
            // After the domain's own `Cookie` header, when it goes on this hop.
            let value = match request.headers().get(::http::header::COOKIE) {
                None => value,
                Some(configured) => {
                    let mut joined = configured.as_bytes().to_vec();
                    joined.extend_from_slice(b"; ");
                    joined.extend_from_slice(value.as_bytes());
                    let mut joined = ::http::HeaderValue::from_bytes(&joined).map_err(|_| {
                        Failure::new(ErrorKind::Http, "the cookies of the redirect chain cannot be sent")
                    })?;
                    joined.set_sensitive(true);
                    joined
                }
            };
            request.headers_mut().insert(::http::header::COOKIE, value);
        }
        let limits = self.head_limits();
        report.http_version = Some(protocol);
        // The HTTP/2 connection preface and settings exchange are part of the wait for the
        // response (HTTP/1.1 has no handshake of its own).
        let exchange = async {
            let (mut sender, driver, recording) = http::start(io, limits, protocol).await?;
            let response =
                sender.send_request(request).await.map_err(|e| head_error(&e, recording.as_ref(), limits))?;
            Ok::<_, String>((response, driver))
        };
        let (outcome, took) = clock.phase(Phase::Request, None, exchange).await;
        report.timings.ttfb_ms = Some(ms(took));
        let (response, driver) = outcome?.map_err(|e| Failure::new(ErrorKind::Http, e))?;
        // HTTP/1.1 checks both limits while parsing; HTTP/2 refuses only heads far past the
        // size limit (see `http::start`), so both are checked here.
        if protocol == http::Protocol::Http2 && http2_head_size(response.headers()) > limits.max_bytes {
            return Err(Failure::new(
                ErrorKind::Http,
                format!(
                    "the response head is larger than the limit of {} bytes (max_header_bytes)",
                    limits.max_bytes
                ),
            ));
        }
        if response.headers().len() > limits.max_headers {
            return Err(Failure::new(
                ErrorKind::Http,
                format!(
                    "the response has {} header fields, more than the limit of {} (max_response_headers)",
                    response.headers().len(),
                    limits.max_headers
                ),
            ));
        }

        keep_cookies(cookies, &target.url, response.headers());

        let status = response.status();
        let matched = config.expected_status.contains(status.as_u16());
        report.status = Some(status.as_u16());
        report.status_matched = Some(matched);
        if !matched {
            if let Some(location) = http::redirect_location(status, response.headers()) {
                let location = location.map_err(|e| Failure::new(ErrorKind::Redirect, e))?;
                let next = target.follow(location).map_err(|e| Failure::new(ErrorKind::Redirect, e))?;
                return Ok(HopEnd::Redirect(next, status.as_u16()));
            }
            let detail =
                format!("status {} is outside the expected {}", status.as_u16(), config.expected_status);
            return Err(Failure::new(ErrorKind::Status, detail));
        }
        if sending.method == shared::HttpMethod::Head {
            return match (keyword(config), &config.json_check) {
                (None, None) => Ok(HopEnd::Final),
                (Some(_), _) => {
                    Err(Failure::new(ErrorKind::Keyword, "a head response has no body to search"))
                }
                (None, Some(_)) => {
                    Err(Failure::new(ErrorKind::JsonInvalid, "a head response has no body to check"))
                }
            };
        }
        let (parts, body) = response.into_parts();
        match (keyword(config), &config.json_check) {
            (Some(check), _) => self.check_body(check, &parts.headers, body, driver, clock, report).await,
            (None, Some(assertion)) => {
                self.check_json(assertion, &parts.headers, body, driver, clock, report).await
            }
            (None, None) => self.read_body(&parts.headers, body, driver, clock, report).await,
        }
        .map(|()| HopEnd::Final)
    }

    fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_headers: self.settings.max_response_headers,
            max_bytes: self.settings.max_header_bytes,
        }
    }

    /// Without a body check: the body is read to its end (at most `max_body_bytes` wire bytes,
    /// not decoded), so a body that stalls is a timeout, not a pass.
    async fn read_body(
        &self,
        headers: &::http::HeaderMap,
        mut body: hyper::body::Incoming,
        driver: http::Driver,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<(), Failure> {
        let mut read = 0;
        let reading = body::read_to_end(&mut body, self.settings.max_body_bytes, &mut read);
        let (outcome, _) = clock.phase(Phase::Body, None, reading).await;
        report.body_bytes = read;
        report.body_wire_bytes = read;
        match outcome {
            Err(timeout) => Err(stalled(timeout, read, headers)),
            Ok(Err(e)) => Err(broken_body(&e, read, headers)),
            Ok(Ok(ReadEnd::Ended | ReadEnd::LimitReached)) => {
                driver.finish();
                Ok(())
            }
        }
    }

    /// With a body check: decoded (content coding, then charset) and matched until the
    /// verdict, which ends the probe; the rest of a body is drained in the background.
    async fn check_body(
        &self,
        check: &shared::KeywordCheck,
        headers: &::http::HeaderMap,
        mut body: hyper::body::Incoming,
        driver: http::Driver,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<(), Failure> {
        let limit = self.settings.max_body_bytes;
        let coding = Coding::parse(headers.get(::http::header::CONTENT_ENCODING).map(|v| v.as_bytes()))
            .map_err(|e| Failure::new(ErrorKind::Http, e))?;
        let declared =
            Declared::from_content_type(headers.get(::http::header::CONTENT_TYPE).map(|v| v.as_bytes()));
        let mut checker = BodyCheck::new(check, coding, declared, limit)
            .map_err(|e| Failure::new(ErrorKind::Keyword, e))?;
        let (outcome, _) = clock.phase(Phase::Body, None, body::check_body(&mut body, &mut checker)).await;
        report.body_bytes = checker.decoded;
        report.body_wire_bytes = checker.wire;
        let end = match outcome {
            Err(timeout) => return Err(stalled(timeout, checker.wire, headers)),
            Ok(Err(e)) => return Err(broken_body(&e, checker.wire, headers)),
            Ok(Ok(end)) => end,
        };
        let what = match check.mode {
            shared::KeywordMode::Regex => "pattern",
            shared::KeywordMode::Contains | shared::KeywordMode::NotContains => "keyword",
        };
        match end {
            CheckEnd::Found => {
                report.keyword_matched = Some(true);
                driver.finish_draining(body, limit.saturating_sub(checker.wire));
                match check.mode {
                    shared::KeywordMode::NotContains => Err(Failure::new(
                        ErrorKind::Keyword,
                        format!(
                            "the body contains the keyword, which it must not ({})",
                            body_facts(&checker)
                        ),
                    )),
                    _ => Ok(()),
                }
            }
            CheckEnd::NotFound => {
                report.keyword_matched = Some(false);
                driver.finish();
                match check.mode {
                    shared::KeywordMode::NotContains => Ok(()),
                    shared::KeywordMode::Regex => Err(Failure::new(
                        ErrorKind::Keyword,
                        format!("the body does not match the pattern ({})", body_facts(&checker)),
                    )),
                    shared::KeywordMode::Contains => Err(Failure::new(
                        ErrorKind::Keyword,
                        format!("the body does not contain the keyword ({})", body_facts(&checker)),
                    )),
                }
            }
            CheckEnd::TooLarge => {
                report.keyword_matched = Some(false);
                let absence = match check.mode {
                    shared::KeywordMode::NotContains => "; its absence from the rest cannot be confirmed",
                    _ => "",
                };
                let detail = match coding {
                    Coding::Identity => format!(
                        "the {what} is not in the first {limit} bytes of the body (max_body_bytes){absence}"
                    ),
                    coding => format!(
                        "the {} body decodes to more than {limit} bytes (max_body_bytes) from {} bytes on the \
                         wire, without the {what} in them{absence}",
                        coding.as_str(),
                        checker.wire
                    ),
                };
                Err(Failure::new(ErrorKind::BodyTooLarge, detail))
            }
            CheckEnd::Corrupt(reason) => Err(Failure::new(
                ErrorKind::Http,
                format!(
                    "the {} body cannot be decoded after {} bytes on the wire: {reason}",
                    coding.as_str(),
                    checker.wire
                ),
            )),
        }
    }
}

/// What hyper refused about a response head, named precisely from the recorded bytes when
/// they show it (the limit hit, the offending header), else hyper's reason.
fn head_error(error: &hyper::Error, recording: Option<&Recording>, limits: HeadLimits) -> String {
    if let Some(recording) = recording.filter(|_| error.is_parse() || error.is_parse_too_large()) {
        let diagnosis = head::diagnose(&recording.bytes(), limits, error.is_parse_too_large());
        if let Some(reason) = diagnosis {
            tracing::debug!(%error, %reason, "response head refused");
            return reason;
        }
    }
    http::describe(error)
}

/// Why a TLS handshake failed, lowercase; a refusal of every offered ALPN protocol names them.
fn handshake_error(error: &std::io::Error, version: shared::HttpVersion) -> String {
    let alert = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)) = alert {
        let offered = match version {
            shared::HttpVersion::Auto => "h2 and http/1.1",
            shared::HttpVersion::Http1 => "http/1.1",
            shared::HttpVersion::Http2 => "h2",
        };
        return format!(
            "tls handshake failed: the server supports none of the offered application protocols \
             (alpn {offered}, http_version: {})",
            version.as_str()
        );
    }
    format!("tls handshake failed: {error}").to_lowercase()
}

/// The size of an HTTP/2 response head as `SETTINGS_MAX_HEADER_LIST_SIZE` counts it: each
/// field's name and value plus 32 bytes (RFC 9113 §6.5.2), `:status` included.
fn http2_head_size(headers: &::http::HeaderMap) -> usize {
    let status = ":status".len() + 3 + 32;
    headers.iter().fold(status, |size, (name, value)| size + name.as_str().len() + value.len() + 32)
}

/// The `Cookie` header a request to `url` carries: the chain's cookies that match it, in the
/// store's order (empty when none).
fn cookie_header(cookies: &CookieStore, url: &url::Url) -> String {
    let mut pairs: Vec<String> =
        cookies.get_request_values(url).map(|(name, value)| format!("{name}={value}")).collect();
    // The store's order is not stable across insertions; the loop check compares these.
    pairs.sort();
    pairs.join("; ")
}

/// Keeps the cookies a response sets, for the rest of the probe's redirect chain (a session
/// cookie set before a redirect to the same URL is what makes it not a loop). One that does not
/// parse or is refused (a domain the host may not set) is left out.
fn keep_cookies(cookies: &mut CookieStore, url: &url::Url, headers: &::http::HeaderMap) {
    for value in headers.get_all(::http::header::SET_COOKIE) {
        let Ok(text) = value.to_str() else {
            tracing::debug!(%url, "set-cookie header that is not text ignored");
            continue;
        };
        if let Err(error) = cookies.parse(text, url) {
            tracing::debug!(%url, %error, "set-cookie header ignored");
        }
    }
}

/// The detail of a redirect back to `requested[hop]`, with the same cookies: what repeats.
fn redirect_loop(requested: &[(String, String, shared::HttpMethod)], hop: usize) -> String {
    let (url, cookies, _) = &requested[hop];
    let from = &requested[requested.len() - 1].0;
    let with = if cookies.is_empty() { "" } else { " with the same cookies" };
    if hop + 1 == requested.len() {
        format!("redirect loop: {url} redirects to itself{with}")
    } else if hop == 0 {
        format!("redirect loop: {from} redirects back to the monitored url {url}{with}")
    } else {
        format!("redirect loop: {from} redirects back to {url} (redirect {hop}){with}")
    }
}

/// A body that stopped arriving: the phase's timeout, with how much of it came.
pub(super) fn stalled(timeout: Failure, received: u64, headers: &::http::HeaderMap) -> Failure {
    let expected = headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let progress = match expected {
        Some(length) => format!("{received} of {length} body bytes received"),
        None => format!("{received} body bytes received"),
    };
    Failure::new(timeout.kind, format!("{} ({progress})", timeout.detail))
}

/// A body that broke off before its end: the server closed the connection short of the
/// declared `Content-Length` or inside a chunked body, or reset the HTTP/2 stream. The users'
/// page is cut short, so this is a failure (`http`) however healthy the head looked, and the
/// message says how far the body got.
pub(super) fn broken_body(error: &hyper::Error, received: u64, headers: &::http::HeaderMap) -> Failure {
    let declared = headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = headers
        .get_all(::http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("chunked")));
    let closed = error.is_incomplete_message() || ends_early(error);
    let detail = match (closed, declared) {
        (true, Some(length)) => format!(
            "the body ended after {received} of {length} bytes: the connection closed before the \
             declared content-length was reached"
        ),
        (true, None) if chunked => format!(
            "the body ended after {received} bytes: the connection closed inside the chunked body, \
             before its last chunk"
        ),
        (true, None) => format!("the body ended after {received} bytes: the connection closed early"),
        (false, Some(length)) => {
            format!("the body broke off after {received} of {length} bytes: {}", http::describe(error))
        }
        (false, None) => format!("the body broke off after {received} bytes: {}", http::describe(error)),
    };
    Failure::new(ErrorKind::Http, detail)
}

/// Whether the connection ended under a body that was not over: hyper reports that as an
/// unexpected end of file somewhere in the error's causes.
fn ends_early(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Sizes, coding and charset of a checked body, for messages.
fn body_facts(checker: &BodyCheck) -> String {
    match checker.coding() {
        Coding::Identity => format!("{} bytes read as {}", checker.decoded, checker.charset()),
        coding => format!(
            "{} bytes decoded from {} bytes of {}, read as {}",
            checker.decoded,
            checker.wire,
            coding.as_str(),
            checker.charset()
        ),
    }
}

/// The configured body check, if any (an empty keyword means none).
fn keyword(config: &shared::DomainConfig) -> Option<&shared::KeywordCheck> {
    config.keyword.as_ref().filter(|k| !k.pattern.is_empty())
}

pub(super) fn empty_report() -> ProbeReport {
    ProbeReport {
        ok: false,
        error: None,
        error_detail: None,
        timings: Timings::default(),
        status: None,
        status_matched: None,
        keyword_matched: None,
        resolved_ip: None,
        resolved_addrs: Vec::new(),
        dns: None,
        dns_error: None,
        connect_attempts: Vec::new(),
        http_version: None,
        redirects: Vec::new(),
        body_bytes: 0,
        body_wire_bytes: 0,
        certificate: None,
        redirect_certificates: Vec::new(),
        earliest_expiry: None,
    }
}

/// Keeps a hop's certificate: the first HTTPS hop's is the domain's own, later hops' are
/// redirect certificates (one per host and serial); the earliest expiry is updated over every
/// chain.
pub(super) fn record_certificate(report: &mut ProbeReport, info: CertInfo) {
    let earliest = info.chain_earliest();
    if report.earliest_expiry.as_ref().is_none_or(|e| earliest.not_after < e.not_after) {
        report.earliest_expiry = Some(EarliestExpiry {
            host: info.host.clone(),
            position: earliest.position,
            subject: earliest.subject,
            not_after: earliest.not_after,
            days_remaining: earliest.days_remaining,
        });
    }
    let seen_before = |c: &CertInfo| c.host == info.host && c.serial == info.serial;
    match &report.certificate {
        None => report.certificate = Some(info),
        Some(first) if seen_before(first) => {}
        Some(_) if report.redirect_certificates.iter().any(seen_before) => {}
        Some(_) => report.redirect_certificates.push(info),
    }
}

/// Forgets what the previous hop measured. The certificates stay: every HTTPS hop's is kept.
fn start_hop(report: &mut ProbeReport) {
    report.timings = Timings::default();
    report.status = None;
    report.status_matched = None;
    report.keyword_matched = None;
    report.resolved_ip = None;
    report.resolved_addrs.clear();
    report.dns = None;
    report.dns_error = None;
    report.connect_attempts.clear();
    report.http_version = None;
    report.body_bytes = 0;
    report.body_wire_bytes = 0;
}

fn finish(report: &mut ProbeReport, outcome: Result<(), Failure>) {
    let timings = &mut report.timings;
    // The phases are disjoint parts of the total; keep float rounding from saying otherwise.
    let phases: f64 =
        [timings.dns_ms, timings.connect_ms, timings.tls_ms, timings.ttfb_ms].iter().flatten().sum();
    timings.total_ms = timings.total_ms.max(phases);
    match outcome {
        Ok(()) => report.ok = true,
        Err(failure) => {
            report.ok = false;
            report.error = Some(failure.kind);
            report.error_detail = Some(failure.detail);
        }
    }
}
