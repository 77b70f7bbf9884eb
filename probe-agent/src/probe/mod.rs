//! Probing one domain once: DNS, SSRF guard, TCP connect, TLS handshake with certificate
//! inspection, HTTP request, bounded body read with keyword search, redirects — with a timing
//! breakdown of every phase.
//!
//! [`Prober::probe`] never fails: every outcome, including refusals and timeouts, is a
//! [`ProbeReport`] with an [`ErrorKind`] from a closed set.
//!
//! - `engine`: the hop loop, the time budget and how each phase's outcome becomes a report;
//! - `target`: URLs and redirect locations; `dns`: the [`Resolve`] seam and its implementations
//!   (absolute names, named failures, retries);
//! - `guard`: the SSRF check on resolved addresses; `connect`: Happy Eyeballs (RFC 8305) over
//!   every allowed address; `tls`: client configuration, the recording
//!   certificate verifier and [`CertInfo`]; `http`: the request and redirect rules;
//! - `head`: the recorded response head and what is wrong with one hyper refused;
//! - `body`: the bounded body read and the body check; `decode`: content codings (gzip,
//!   deflate, br, zstd) with the decoded size bounded; `text`: charsets and decoding to UTF-8;
//!   `json`: an http check's JSON assertion on the decoded body;
//! - other check types: `socket` (`tcp`: connect, optional TLS, send and expect; `tls`: the
//!   handshake and certificate only) and `query` (`dns`: a record type at chosen servers,
//!   expected answers, DNSSEC), through the same resolver, guard, connect and TLS steps;
//!   `anchors`: the extra DNSSEC trust anchors a `dns` check with `dnssec` trusts.

mod anchors;
mod body;
mod connect;
mod decode;
mod dns;
mod engine;
mod guard;
mod head;
mod http;
mod json;
mod query;
mod socket;
mod target;
mod text;
mod tls;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use anchors::{Anchor, AnchorError, AnchorKind, TrustAnchorSet};
pub use body::KeywordScanner;
pub use connect::{AttemptOutcome, ConnectAttempt};
pub use dns::{
    Answer, DnsErrorReason, DnsFailure, HickoryResolver, Resolve, ResolverSettings, StaticResolver,
};
pub use http::Protocol as HttpProtocol;
pub use tls::TlsSetupError;

/// How a certificate's position is named in texts: `the leaf` or `intermediate N`.
pub fn position_name(position: u32) -> String {
    match position {
        0 => "the leaf".to_owned(),
        n => format!("intermediate {n}"),
    }
}

/// Why a probe failed. The set is closed so results aggregate cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The URL in the configuration cannot be probed (bad scheme, no host, …).
    InvalidUrl,
    /// Name resolution failed or returned no address.
    Dns,
    /// Every resolved address is in a blocked range (SSRF guard).
    BlockedTarget,
    /// The TCP connection was refused or failed.
    Connect,
    /// The TLS handshake failed, or the certificate is invalid (expired, self-signed, wrong host…).
    Tls,
    /// The total timeout or a phase's limit was exceeded.
    Timeout,
    /// The server broke the HTTP protocol or closed the connection early.
    Http,
    /// More redirects than allowed, or a redirect without a usable location.
    Redirect,
    /// The final status is outside the expected range.
    Status,
    /// The body check failed: the keyword (or pattern) is missing, or present in
    /// `not_contains` mode.
    Keyword,
    /// The decoded body exceeded the read limit before the body check could decide.
    BodyTooLarge,
    /// A tcp check's first response bytes (up to the read limit) lack its `expect` text.
    ExpectMismatch,
    /// A dns check's answer is empty or lacks an expected record.
    DnsAnswerMismatch,
    /// A dns check with `dnssec` got an answer that does not validate (bogus or unsigned).
    DnssecInvalid,
    /// An http check with a JSON assertion got a body that is not JSON.
    JsonInvalid,
    /// An http check's JSON assertion does not hold.
    JsonAssertionFailed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::InvalidUrl,
        ErrorKind::Dns,
        ErrorKind::BlockedTarget,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Http,
        ErrorKind::Redirect,
        ErrorKind::Status,
        ErrorKind::Keyword,
        ErrorKind::BodyTooLarge,
        ErrorKind::ExpectMismatch,
        ErrorKind::DnsAnswerMismatch,
        ErrorKind::DnssecInvalid,
        ErrorKind::JsonInvalid,
        ErrorKind::JsonAssertionFailed,
    ];

    /// The name shown in results and metrics: the wire enum's label, so the two never differ.
    pub fn as_str(self) -> &'static str {
        self.to_proto().label().expect("every probe error kind has a wire label")
    }

    /// The wire (protobuf) error kind.
    pub fn to_proto(self) -> shared::proto::ErrorKind {
        use shared::proto::ErrorKind as Wire;
        match self {
            ErrorKind::InvalidUrl => Wire::InvalidUrl,
            ErrorKind::Dns => Wire::Dns,
            ErrorKind::BlockedTarget => Wire::BlockedTarget,
            ErrorKind::Connect => Wire::Connect,
            ErrorKind::Tls => Wire::Tls,
            ErrorKind::Timeout => Wire::Timeout,
            ErrorKind::Http => Wire::Http,
            ErrorKind::Redirect => Wire::Redirect,
            ErrorKind::Status => Wire::Status,
            ErrorKind::Keyword => Wire::Keyword,
            ErrorKind::BodyTooLarge => Wire::BodyTooLarge,
            ErrorKind::ExpectMismatch => Wire::ExpectMismatch,
            ErrorKind::DnsAnswerMismatch => Wire::DnsAnswerMismatch,
            ErrorKind::DnssecInvalid => Wire::DnssecInvalid,
            ErrorKind::JsonInvalid => Wire::JsonInvalid,
            ErrorKind::JsonAssertionFailed => Wire::JsonAssertionFailed,
        }
    }
}

/// Durations of each phase, in milliseconds. A phase that did not happen (no DNS for an IP
/// literal, no TLS for http, or a phase never reached) is `None`. For a redirected probe the
/// phases are those of the last hop and `total_ms` covers every hop.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub dns_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    pub tls_ms: Option<f64>,
    /// From the request being written to the response head arriving.
    pub ttfb_ms: Option<f64>,
    pub total_ms: f64,
}

/// What the TLS handshake of one hop showed about the server's certificate, recorded even when
/// it is invalid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertInfo {
    /// The host the certificate was presented for (the hop's host, without a trailing dot).
    pub host: String,
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses from the subject alternative names.
    pub sans: Vec<String>,
    pub serial: String,
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// Whole days from the probe until `not_after` (negative once expired).
    pub days_remaining: i64,
    /// The chain validates against the trusted roots and the name matches the host.
    pub valid: bool,
    /// Why validation failed, when it did: the kind of [`CertProblem`] first ("certificate
    /// expired", "certificate not yet valid", "unknown issuer", "self-signed certificate",
    /// "name mismatch", "certificate revoked", …), then which certificate and why, e.g.
    /// "certificate expired: intermediate 1 (CN=R11) expired at 2026-01-01T00:00:00Z".
    pub validation_error: Option<String>,
    /// The certificate at fault when validation failed.
    pub problem: Option<CertProblem>,
    /// The chain from the leaf (position 0) up to, not including, the trusted root: the path
    /// the web PKI verification built when [`CertInfo::chain_verified`], otherwise the
    /// presented certificates linked by issuer names from the leaf. Presented certificates that
    /// are not on the path (an extra cross-certificate, a stray old intermediate) are not in it.
    pub chain: Vec<ChainCert>,
    /// `chain` is a path whose signatures verified up to a trusted root. A path that failed
    /// only because a certificate was outside its validity period still counts (it was built
    /// at that certificate's own limit), so an expired intermediate is named on its real path.
    pub chain_verified: bool,
}

impl CertInfo {
    /// The certificate of [`CertInfo::chain`] that expires first (the leaf when the chain is
    /// unknown or the leaf expires first).
    pub fn chain_earliest(&self) -> ChainCert {
        self.chain.iter().min_by_key(|c| (c.not_after, c.position)).cloned().unwrap_or_else(|| ChainCert {
            position: 0,
            subject: self.subject.clone(),
            issuer: self.issuer.clone(),
            not_after: self.not_after,
            days_remaining: self.days_remaining,
        })
    }
}

/// One certificate of a verified (or name-linked) chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCert {
    /// 0 for the leaf, N for the Nth intermediate above it.
    pub position: u32,
    pub subject: String,
    pub issuer: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// Whole days from the probe until `not_after` (negative once expired).
    pub days_remaining: i64,
}

/// Why a certificate failed validation. The set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertProblemKind {
    /// A certificate of the chain is past its `not_after`.
    Expired,
    /// A certificate of the chain is before its `not_before`.
    NotYetValid,
    /// No path to a trusted root: the issuer is unknown, the chain is incomplete (the server
    /// did not send an intermediate) or the leaf is self-signed.
    UnknownIssuer,
    /// The leaf does not name the host.
    NameMismatch,
    /// The certificate is revoked.
    Revoked,
    /// Anything else (bad signature, wrong purpose, malformed, unsupported algorithm, …).
    Other,
}

impl CertProblemKind {
    /// The wire (protobuf) kind.
    pub fn to_proto(self) -> shared::proto::CertProblem {
        use shared::proto::CertProblem as Wire;
        match self {
            CertProblemKind::Expired => Wire::Expired,
            CertProblemKind::NotYetValid => Wire::NotYetValid,
            CertProblemKind::UnknownIssuer => Wire::UnknownIssuer,
            CertProblemKind::NameMismatch => Wire::NameMismatch,
            CertProblemKind::Revoked => Wire::Revoked,
            CertProblemKind::Other => Wire::Other,
        }
    }
}

/// The certificate at fault in a failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertProblem {
    pub kind: CertProblemKind,
    /// Where the certificate sits: 0 for the leaf, N for the Nth intermediate above it (for
    /// `unknown_issuer`: the highest certificate reached, whose issuer is missing).
    pub position: u32,
    pub subject: String,
    /// For `expired` the certificate's `not_after`, for `not_yet_valid` its `not_before`.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The certificate that expires first over every HTTPS hop of a probe and its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EarliestExpiry {
    /// The hop's host.
    pub host: String,
    /// 0 for the leaf, N for the Nth intermediate above it.
    pub position: u32,
    pub subject: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// Whole days from the probe until `not_after` (negative once expired).
    pub days_remaining: i64,
}

/// What resolving one hop's name showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsInfo {
    /// The absolute name asked, with its trailing dot (`www.example.com.`).
    pub name: String,
    /// Lookups made (more than 1 after a retried SERVFAIL or timeout).
    pub attempts: u32,
    /// The lowest remaining TTL of the answer, in seconds (`None` when failed or unknown).
    pub ttl_s: Option<u32>,
    /// CNAME targets followed to the addresses, in order.
    pub cnames: Vec<String>,
    /// A dns check with `dnssec`: what validation proved of the answer (the weakest proof of
    /// its records, or the proof of a denial that did not validate); `None` otherwise.
    pub dnssec: Option<DnssecProof>,
}

/// What DNSSEC validation proved of an answer (RFC 4035, 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnssecProof {
    /// Signed along a chain from a trust anchor.
    Secure,
    /// Provably unsigned (a signed parent proves the zone has no DS).
    Insecure,
    /// Signed but wrong, or unsigned where a chain should exist.
    Bogus,
    /// Neither proven secure nor insecure.
    Indeterminate,
}

impl DnssecProof {
    pub const ALL: [DnssecProof; 4] =
        [DnssecProof::Secure, DnssecProof::Insecure, DnssecProof::Bogus, DnssecProof::Indeterminate];

    /// The proof's name as shown (`secure`, `insecure`, `bogus`, `indeterminate`).
    pub fn as_str(self) -> &'static str {
        match self {
            DnssecProof::Secure => "secure",
            DnssecProof::Insecure => "insecure",
            DnssecProof::Bogus => "bogus",
            DnssecProof::Indeterminate => "indeterminate",
        }
    }

    /// The wire form.
    pub fn to_proto(self) -> shared::proto::DnssecProof {
        use shared::proto::DnssecProof as Wire;
        match self {
            DnssecProof::Secure => Wire::Secure,
            DnssecProof::Insecure => Wire::Insecure,
            DnssecProof::Bogus => Wire::Bogus,
            DnssecProof::Indeterminate => Wire::Indeterminate,
        }
    }
}

/// Everything one probe measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// True when the final response had an expected status and (if configured) the keyword.
    pub ok: bool,
    pub error: Option<ErrorKind>,
    /// A short human-readable detail for the error (never secrets).
    pub error_detail: Option<String>,
    pub timings: Timings,
    /// Final HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub status_matched: Option<bool>,
    /// Whether the keyword (or pattern) was found in the decoded body — a fact, not the
    /// verdict: in `not_contains` mode `Some(true)` is a failure. `None` when no keyword is
    /// configured or the body check did not finish.
    pub keyword_matched: Option<bool>,
    /// The address that served the last hop; when no connection was made, the first address
    /// tried.
    pub resolved_ip: Option<IpAddr>,
    /// Every address the last hop's name resolved to, sorted.
    pub resolved_addrs: Vec<IpAddr>,
    /// How the last hop's name was resolved; `None` for an address literal or a hop that
    /// never got to DNS.
    pub dns: Option<DnsInfo>,
    /// Why the last hop's name could not be resolved (with `error = dns`).
    pub dns_error: Option<DnsErrorReason>,
    /// Every address the last hop's connect phase considered, in the order tried (IPv6 and
    /// IPv4 interleaved), blocked ones first; see [`ConnectAttempt`].
    pub connect_attempts: Vec<ConnectAttempt>,
    /// The HTTP version the last hop spoke (`None` when no exchange started): HTTP/2 when
    /// the server selected `h2` by ALPN (or `http_version: http2` on plain HTTP), else HTTP/1.1.
    pub http_version: Option<http::Protocol>,
    /// URLs redirected to, in order.
    pub redirects: Vec<String>,
    /// Body bytes read, after content decoding when the body was checked (the limit applies
    /// to these); without a body check the body is not decoded and this is the wire count.
    pub body_bytes: u64,
    /// Body bytes received on the wire (compressed, when a content coding was used).
    pub body_wire_bytes: u64,
    /// The certificate of the first HTTPS hop: the monitored URL's own host when it is https.
    /// Its days left and validity are the domain's certificate facts.
    pub certificate: Option<CertInfo>,
    /// The certificates of the later HTTPS hops (redirect targets), in order; a hop that
    /// presented a certificate already recorded for the same host is not repeated.
    pub redirect_certificates: Vec<CertInfo>,
    /// The certificate expiring first over every hop's chain (leaves and verified
    /// intermediates); `None` when no HTTPS hop presented a certificate.
    pub earliest_expiry: Option<EarliestExpiry>,
}

/// How probes behave, from the agent's configuration.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Limit of the DNS phase (every attempt included), also capped by what is left of the
    /// probe's timeout.
    pub dns_timeout: Duration,
    /// The resolver [`Prober::new`] builds (servers, per-lookup limit, attempts).
    pub resolver: ResolverSettings,
    /// How long a connection attempt runs alone before the next address is tried as well
    /// (RFC 8305's connection attempt delay).
    pub connect_attempt_delay: Duration,
    pub connect_timeout: Duration,
    pub tls_timeout: Duration,
    /// Largest body read: decoded bytes when the body is checked, wire bytes otherwise.
    pub max_body_bytes: u64,
    /// Most header fields accepted in a response head.
    pub max_response_headers: usize,
    /// Most bytes accepted in a response head, status line included (at least 8192).
    pub max_header_bytes: usize,
    pub max_redirects: u32,
    pub user_agent: String,
    /// Blocked ranges minus the allow-list.
    pub policy: shared::netguard::TargetPolicy,
    /// Extra trusted root certificates (DER), on top of the web PKI roots.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Extra DNSSEC trust anchors (private zones), on top of the root's keys; shared, read-only.
    pub dnssec_anchors: Arc<TrustAnchorSet>,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            dns_timeout: Duration::from_secs(5),
            resolver: ResolverSettings::default(),
            connect_attempt_delay: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
            tls_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            max_response_headers: 256,
            max_header_bytes: 64 * 1024,
            max_redirects: 5,
            user_agent: concat!("Crosscheck/", env!("CARGO_PKG_VERSION")).to_owned(),
            policy: Default::default(),
            extra_roots: Vec::new(),
            dnssec_anchors: Arc::default(),
        }
    }
}

/// Why a [`Prober`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    #[error("{0}")]
    Resolver(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// Probes domains. Cheap to clone; clones share the resolver (and its cache) and the TLS
/// configuration.
#[derive(Clone)]
pub struct Prober {
    engine: Arc<engine::Engine>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").field("settings", &self.engine.settings).finish_non_exhaustive()
    }
}

impl Prober {
    /// A prober resolving names with `settings.resolver`: its name servers, or the system's
    /// (`/etc/resolv.conf`, and the hosts file first), caching answers for their TTL.
    ///
    /// Errors: the resolver cannot be set up ([`ProberError::Resolver`]) or the TLS roots are
    /// unusable ([`ProberError::Tls`]).
    pub fn new(settings: ProbeSettings) -> Result<Prober, ProberError> {
        let resolver = HickoryResolver::new(settings.resolver.clone()).map_err(ProberError::Resolver)?;
        Prober::with_resolver(settings, Arc::new(resolver))
    }

    /// A prober resolving names with `resolver`.
    pub fn with_resolver(settings: ProbeSettings, resolver: Arc<dyn Resolve>) -> Result<Prober, ProberError> {
        let tls = tls::TlsClient::new(&settings.extra_roots)?;
        Ok(Prober { engine: Arc::new(engine::Engine { settings, resolver, tls }) })
    }

    /// Probes `config.url` once (or runs its `tcp`, `tls` or `dns` check), within
    /// `config.timeout_ms` for everything (all redirect hops included). Never fails: every
    /// outcome is a report.
    ///
    /// - Redirects (301, 302, 303, 307, 308 with a `Location`) are followed up to
    ///   `max_redirects`, each as a new hop (new resolution, guard check and connection) —
    ///   unless the redirect status itself is expected.
    /// - The body is read only for a GET whose final status is expected. Without a keyword it
    ///   is read to its end (or `max_body_bytes` wire bytes), undecoded, so a stalled body is a
    ///   timeout. With one it is decoded (content coding, then charset) and checked until the
    ///   verdict; `total_ms` ends at the verdict, and the rest of the body is drained in the
    ///   background.
    /// - A phase that ran and failed (refused, timed out) reports the time it ran.
    pub async fn probe(&self, config: &shared::DomainConfig) -> ProbeReport {
        self.engine.probe(config).await
    }
}
