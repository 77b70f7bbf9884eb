//! The TLS side of a probe: one rustls client configuration per prober (web PKI roots plus
//! extra roots, no session resumption so every probe measures a full handshake), a verifier
//! that records the chain's verdict, the presented certificates and the verified path instead
//! of aborting, and the certificate facts reported in [`CertInfo`] (the chain, and the
//! certificate at fault in a [`CertProblem`]).
//!
//! The verdict is rustls' own web PKI verifier's. The path is learned by asking the same path
//! builder (`rustls-webpki`, the version rustls uses) for it with the same roots, algorithms and
//! time; when only a validity period fails, the builder is asked again at that certificate's own
//! limit, so an expired intermediate is found on its real, signature-checked path. Without any
//! path (unknown issuer, incomplete chain) the presented certificates are linked by issuer
//! names from the leaf. A chain that verifies is built once per handshake: that path build is
//! the verdict on the chain, and rustls' own name check completes it (the inner verifier is
//! asked only when the chain fails, for its exact error).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{position_name, CertInfo, CertProblem, CertProblemKind, ChainCert};

tokio::task_local! {
    /// Where the verifier records what it saw during the handshake being polled.
    static SEEN: CertSlot;
}

/// The server certificate a handshake presented, the chain and the verification's verdict.
#[derive(Debug, Clone)]
pub struct SeenCert {
    /// The name the certificate was checked against.
    pub server_name: String,
    pub end_entity: CertificateDer<'static>,
    /// The leaf first, then the certificates above it up to (not including) the trust anchor:
    /// see [`CertInfo::chain`].
    pub chain: Vec<CertificateDer<'static>>,
    /// `chain` is a signature-verified path (see [`CertInfo::chain_verified`]).
    pub chain_verified: bool,
    pub error: Option<rustls::Error>,
}

/// Filled by the verifier during one handshake.
#[derive(Debug, Clone, Default)]
pub struct CertSlot(Arc<Mutex<Option<SeenCert>>>);

impl CertSlot {
    fn put(&self, seen: SeenCert) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(seen);
    }

    pub fn take(&self) -> Option<SeenCert> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Delegates every decision to the web PKI verifier, but during a probe's handshake records a
/// failed chain verification instead of aborting, so the handshake completes and the caller
/// decides. Handshake signatures are always verified: the server must hold the key of the
/// certificate it presented.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The same roots and algorithms the inner verifier uses, to learn the verified path.
    roots: Arc<RootCertStore>,
    algorithms: &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm],
}

/// How many times the path builder is asked again at a failing certificate's own limit.
const TIME_RETRIES: usize = 4;

impl RecordingVerifier {
    /// The path from `end_entity` up to (not including) a trust anchor, and whether it verified
    /// at `now`. When only a validity period fails, the builder is asked again at that
    /// certificate's own limit, so the path is still found (and `false` says it is not valid
    /// now). `None`: no signature-checked path at all.
    fn verified_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<(Vec<CertificateDer<'static>>, bool)> {
        let leaf = webpki::EndEntityCert::try_from(end_entity).ok()?;
        let mut time = now;
        for _ in 0..TIME_RETRIES {
            let verified = leaf.verify_for_usage(
                self.algorithms,
                &self.roots.roots,
                intermediates,
                time,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            );
            match verified {
                Ok(path) => {
                    let mut chain = vec![end_entity.clone().into_owned()];
                    chain.extend(path.intermediate_certificates().map(|cert| cert.der().into_owned()));
                    return Some((chain, time == now));
                }
                Err(webpki::Error::CertExpired { not_after, .. }) if not_after != time => time = not_after,
                Err(webpki::Error::CertNotValidYet { not_before, .. }) if not_before != time => {
                    time = not_before
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The verdict, the chain (the verified path if there is one, else the presented
    /// certificates linked by names) and whether the chain is a verified path.
    ///
    /// One path build serves both when the chain verifies now, the common case: the inner
    /// verifier would build the same path again (same roots, algorithms, time, no revocation
    /// lists), so only the name is left to check, with rustls' own check. When the chain does
    /// not verify, the verdict is the inner verifier's, so its error is exactly rustls'.
    fn assess(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> (Result<(), rustls::Error>, Vec<CertificateDer<'static>>, bool) {
        match self.verified_path(end_entity, intermediates, now) {
            Some((path, true)) => {
                let verdict = ParsedCertificate::try_from(end_entity)
                    .and_then(|cert| rustls::client::verify_server_name(&cert, server_name));
                (verdict, path, true)
            }
            found => {
                let verdict = self
                    .inner
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map(|_| ());
                match found {
                    Some((path, _)) => (verdict, path, true),
                    None => (verdict, linked_by_names(end_entity, intermediates, &self.roots), false),
                }
            }
        }
    }
}

/// The leaf, then each presented certificate whose subject is the previous one's issuer, until
/// a trusted root's name, a self-issued certificate or a missing issuer.
fn linked_by_names(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
) -> Vec<CertificateDer<'static>> {
    let mut chain = vec![end_entity.clone().into_owned()];
    let mut used = vec![false; intermediates.len()];
    let mut current = end_entity.as_ref().to_vec();
    for _ in 0..intermediates.len() {
        let Ok((_, cert)) = X509Certificate::from_der(&current) else { break };
        let issuer = cert.issuer().as_raw();
        if issuer == cert.subject().as_raw()
            || roots.roots.iter().any(|anchor| anchor.subject.as_ref() == name_value(issuer))
        {
            break;
        }
        let next = intermediates.iter().enumerate().find(|(index, candidate)| {
            !used[*index]
                && X509Certificate::from_der(candidate.as_ref())
                    .is_ok_and(|(_, c)| c.subject().as_raw() == issuer)
        });
        let Some((index, next)) = next else { break };
        used[index] = true;
        current = next.as_ref().to_vec();
        chain.push(next.clone().into_owned());
    }
    chain
}

/// The contents of a DER-encoded name (what a trust anchor's `subject` holds): the bytes after
/// the SEQUENCE's tag and length.
fn name_value(der: &[u8]) -> &[u8] {
    let header = match der.get(1) {
        Some(len) if *len < 0x80 => 2,
        Some(len) => 2 + usize::from(len & 0x7f),
        None => return der,
    };
    der.get(header..).unwrap_or(der)
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (verdict, chain, chain_verified) =
            self.assess(end_entity, intermediates, server_name, ocsp_response, now);
        let seen = SeenCert {
            server_name: server_name.to_str().into_owned(),
            end_entity: end_entity.clone().into_owned(),
            chain,
            chain_verified,
            error: verdict.as_ref().err().cloned(),
        };
        match SEEN.try_with(|slot| slot.put(seen)) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            // Outside a probe's handshake nobody would look at the record: be strict.
            Err(_) => verdict.map(|()| ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why the TLS client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("invalid extra root certificate: {0}")]
    ExtraRoot(rustls::Error),
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(rustls::client::VerifierBuilderError),
    #[error("cannot configure tls: {0}")]
    Config(rustls::Error),
}

/// Makes TLS connections for probes; built once per prober.
#[derive(Clone)]
pub struct TlsClient {
    /// Offering `h2` and `http/1.1` (`http_version: auto`).
    any: TlsConnector,
    /// Offering `http/1.1` only.
    http1: TlsConnector,
    /// Offering `h2` only.
    http2: TlsConnector,
    /// Offering no protocol (tcp and tls checks: the service is not HTTP).
    none: TlsConnector,
}

impl TlsClient {
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<TlsClient, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for root in extra_roots {
            roots.add(root.clone()).map_err(TlsSetupError::ExtraRoot)?;
        }
        let roots = Arc::new(roots);
        let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(TlsSetupError::Verifier)?;
        let algorithms = provider.signature_verification_algorithms.all;
        let mut config = client_config(provider)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RecordingVerifier { inner, roots, algorithms }))
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        let offering = |protocols: &[&[u8]]| {
            let mut config = config.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        };
        Ok(TlsClient {
            any: offering(&[ALPN_H2, ALPN_HTTP1]),
            http1: offering(&[ALPN_HTTP1]),
            http2: offering(&[ALPN_H2]),
            none: offering(&[]),
        })
    }

    /// Runs a handshake over `io`. The certificate the server presented (and whether its chain
    /// verified) lands in `slot` even when the chain is invalid, as soon as it has been seen —
    /// so it is available when the handshake later fails or is abandoned.
    ///
    /// The ALPN offer follows `version`: `h2` and `http/1.1` for `auto`, else only the forced
    /// one, and nothing for `None`; [`negotiated`] reads the server's choice.
    pub async fn handshake<IO>(
        &self,
        name: ServerName<'static>,
        io: IO,
        slot: &CertSlot,
        version: Option<shared::HttpVersion>,
    ) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = match version {
            Some(shared::HttpVersion::Auto) => &self.any,
            Some(shared::HttpVersion::Http1) => &self.http1,
            Some(shared::HttpVersion::Http2) => &self.http2,
            None => &self.none,
        };
        SEEN.scope(slot.clone(), connector.connect(name, io)).await
    }
}

/// The ALPN protocol IDs (RFC 7301, IANA registry).
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The protocol the server selected by ALPN: `h2` is HTTP/2; `http/1.1`, or no selection (a
/// server without ALPN), is HTTP/1.1.
pub fn negotiated<IO>(stream: &TlsStream<IO>) -> super::http::Protocol {
    match stream.get_ref().1.alpn_protocol() {
        Some(ALPN_H2) => super::http::Protocol::Http2,
        _ => super::http::Protocol::Http1,
    }
}

fn client_config(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsSetupError> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)
}

/// The name the certificate must be valid for (also sent as SNI for DNS names).
pub fn server_name(host: &super::target::TargetHost) -> Result<ServerName<'static>, String> {
    match host {
        super::target::TargetHost::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        // An absolute name's trailing dot is not part of the server name: SNI never carries
        // it (RFC 6066 §3) and certificates do not name it.
        super::target::TargetHost::Name(name) => ServerName::try_from(name.trim_end_matches('.').to_owned())
            .map_err(|_| format!("{name:?} is not a valid tls server name")),
    }
}

/// The certificate facts reported for `seen`, relative to `now`; `None` when the leaf cannot
/// be parsed. A chain certificate that cannot be parsed ends the reported chain.
pub fn cert_info(seen: &SeenCert, now: DateTime<Utc>) -> Option<CertInfo> {
    let (_, cert) = X509Certificate::from_der(seen.end_entity.as_ref()).ok()?;
    let validity = cert.validity();
    let not_before = DateTime::from_timestamp(validity.not_before.timestamp(), 0)?;
    let not_after = DateTime::from_timestamp(validity.not_after.timestamp(), 0)?;
    let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
    let chain: Vec<Facts> =
        seen.chain.iter().enumerate().map_while(|(position, der)| facts(der, position, now)).collect();
    let problem = seen.error.as_ref().map(|error| problem(error, &chain));
    let validation_error = seen.error.as_ref().map(|error| {
        let problem = problem.as_ref().expect("a problem for every error");
        describe(error, problem, &chain, self_issued, &seen.server_name)
    });
    Some(CertInfo {
        host: seen.server_name.clone(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans: sans(&cert),
        serial: cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
        not_before,
        not_after,
        days_remaining: days_until(not_after, now),
        valid: seen.error.is_none(),
        validation_error,
        problem,
        chain: chain.into_iter().map(|facts| facts.cert).collect(),
        chain_verified: seen.chain_verified,
    })
}

/// Whole days from `now` until `at` (negative once past).
fn days_until(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (at - now).num_seconds().div_euclid(86_400)
}

/// One chain certificate's reported facts and its start of validity.
struct Facts {
    cert: ChainCert,
    not_before: DateTime<Utc>,
}

fn facts(der: &CertificateDer<'_>, position: usize, now: DateTime<Utc>) -> Option<Facts> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
    let not_before = DateTime::from_timestamp(cert.validity().not_before.timestamp(), 0)?;
    Some(Facts {
        cert: ChainCert {
            position: u32::try_from(position).ok()?,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after,
            days_remaining: days_until(not_after, now),
        },
        not_before,
    })
}

/// The certificate at fault for `error`, on `chain` (leaf first; positions are indices).
fn problem(error: &rustls::Error, chain: &[Facts]) -> CertProblem {
    use CertificateError::*;
    let at_position = |position: usize, kind: CertProblemKind, at: Option<DateTime<Utc>>| CertProblem {
        kind,
        position: position as u32,
        subject: chain.get(position).map(|f| f.cert.subject.clone()).unwrap_or_default(),
        at,
    };
    let leaf = |kind| at_position(0, kind, None);
    let rustls::Error::InvalidCertificate(cert_error) = error else { return leaf(CertProblemKind::Other) };
    match cert_error {
        ExpiredContext { not_after, .. } => {
            let limit = DateTime::from_timestamp(not_after.as_secs() as i64, 0);
            let position = chain.iter().position(|f| Some(f.cert.not_after) == limit);
            at_position(position.unwrap_or(0), CertProblemKind::Expired, limit)
        }
        Expired => {
            let position = chain.iter().position(|f| f.cert.days_remaining < 0).unwrap_or(0);
            let at = chain.get(position).map(|f| f.cert.not_after);
            at_position(position, CertProblemKind::Expired, at)
        }
        NotValidYetContext { not_before, .. } => {
            let limit = DateTime::from_timestamp(not_before.as_secs() as i64, 0);
            let position = chain.iter().position(|f| Some(f.not_before) == limit);
            at_position(position.unwrap_or(0), CertProblemKind::NotYetValid, limit)
        }
        NotValidYet => {
            let now = Utc::now();
            let position = chain.iter().position(|f| f.not_before > now).unwrap_or(0);
            let at = chain.get(position).map(|f| f.not_before);
            at_position(position, CertProblemKind::NotYetValid, at)
        }
        // The highest certificate reached is the one whose issuer is missing.
        UnknownIssuer => at_position(chain.len().saturating_sub(1), CertProblemKind::UnknownIssuer, None),
        NotValidForName | NotValidForNameContext { .. } => leaf(CertProblemKind::NameMismatch),
        Revoked => leaf(CertProblemKind::Revoked),
        _ => leaf(CertProblemKind::Other),
    }
}

/// The validation error's text: [`reason`]'s short kind, then which certificate and why.
fn describe(
    error: &rustls::Error,
    problem: &CertProblem,
    chain: &[Facts],
    self_issued: bool,
    host: &str,
) -> String {
    let short = reason(error, self_issued);
    let who = format!("{} ({})", position_name(problem.position), problem.subject);
    let at = problem.at.map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    match problem.kind {
        CertProblemKind::Expired => format!("{short}: {who} expired at {at}"),
        CertProblemKind::NotYetValid => format!("{short}: {who} is valid from {at}"),
        CertProblemKind::UnknownIssuer if self_issued => format!("{short}: {who} is not a trusted root"),
        CertProblemKind::UnknownIssuer
            if chain.get(problem.position as usize).is_some_and(|f| f.cert.subject == f.cert.issuer) =>
        {
            format!("{short}: {who} is a self-signed root that is not trusted")
        }
        CertProblemKind::UnknownIssuer => {
            let issuer = chain.get(problem.position as usize).map(|f| f.cert.issuer.as_str()).unwrap_or("");
            format!(
                "{short}: {issuer}, the issuer of {who}, is not a trusted root and was not sent \
                 (incomplete chain or untrusted issuer)"
            )
        }
        CertProblemKind::NameMismatch => format!("{short}: {who} is not valid for {host}"),
        CertProblemKind::Revoked | CertProblemKind::Other => format!("{short}: {who}"),
    }
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else { return Vec::new() };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A short lowercase reason for a failed verification.
pub fn reason(error: &rustls::Error, self_issued: bool) -> String {
    use CertificateError::*;
    let rustls::Error::InvalidCertificate(cert_error) = error else {
        return error.to_string().to_lowercase();
    };
    match cert_error {
        Expired | ExpiredContext { .. } => "certificate expired".to_owned(),
        NotValidYet | NotValidYetContext { .. } => "certificate not yet valid".to_owned(),
        UnknownIssuer if self_issued => "self-signed certificate".to_owned(),
        UnknownIssuer => "unknown issuer".to_owned(),
        NotValidForName | NotValidForNameContext { .. } => "name mismatch".to_owned(),
        Revoked => "certificate revoked".to_owned(),
        BadSignature => "bad certificate signature".to_owned(),
        InvalidPurpose | InvalidPurposeContext { .. } => {
            "certificate not valid for server authentication".to_owned()
        }
        BadEncoding => "malformed certificate".to_owned(),
        other => format!("invalid certificate: {other}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_and_lowercase() {
        let invalid = |e| rustls::Error::InvalidCertificate(e);
        assert_eq!(reason(&invalid(CertificateError::Expired), false), "certificate expired");
        assert_eq!(reason(&invalid(CertificateError::UnknownIssuer), false), "unknown issuer");
        assert_eq!(reason(&invalid(CertificateError::UnknownIssuer), true), "self-signed certificate");
        assert_eq!(reason(&invalid(CertificateError::NotValidForName), false), "name mismatch");
        let other = reason(&rustls::Error::General("Odd Thing".into()), false);
        assert_eq!(other, other.to_lowercase());
    }

    #[test]
    fn name_values_skip_the_sequence_header() {
        assert_eq!(name_value(&[0x30, 0x02, 0xaa, 0xbb]), [0xaa, 0xbb]);
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend(std::iter::repeat_n(0xcc, 0x80));
        assert_eq!(name_value(&long).len(), 0x80);
        assert_eq!(name_value(&[0x30]), [0x30]);
    }

    fn facts_at(position: u32, subject: &str, days: i64) -> Facts {
        let now = Utc::now();
        Facts {
            cert: ChainCert {
                position,
                subject: subject.into(),
                issuer: "CN=Up".into(),
                not_after: DateTime::from_timestamp((now + chrono::Duration::days(days)).timestamp(), 0)
                    .unwrap(),
                days_remaining: days,
            },
            not_before: now - chrono::Duration::days(90),
        }
    }

    #[test]
    fn the_problem_names_the_certificate_whose_limit_failed() {
        let chain = [facts_at(0, "CN=leaf", 30), facts_at(1, "CN=Mid", -2), facts_at(2, "CN=Top", 300)];
        let limit = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            chain[1].cert.not_after.timestamp() as u64,
        ));
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::now(),
            not_after: limit,
        });
        let found = problem(&expired, &chain);
        assert_eq!(
            (found.kind, found.position, found.subject.as_str()),
            (CertProblemKind::Expired, 1, "CN=Mid")
        );
        let text = describe(&expired, &found, &chain, false, "a.example");
        assert!(text.starts_with("certificate expired: intermediate 1 (CN=Mid) expired at "), "{text}");
        // Without context, the first expired certificate of the chain.
        let plain = problem(&rustls::Error::InvalidCertificate(CertificateError::Expired), &chain);
        assert_eq!(plain.position, 1);
        // An unknown issuer is the top's; a name mismatch the leaf's.
        let unknown = problem(&rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), &chain);
        assert_eq!((unknown.kind, unknown.position), (CertProblemKind::UnknownIssuer, 2));
        let name = problem(&rustls::Error::InvalidCertificate(CertificateError::NotValidForName), &chain);
        assert_eq!((name.kind, name.position), (CertProblemKind::NameMismatch, 0));
        let other = problem(&rustls::Error::InvalidCertificate(CertificateError::BadSignature), &chain);
        assert_eq!((other.kind, other.position), (CertProblemKind::Other, 0));
    }

    #[test]
    fn ip_sans_decode() {
        assert_eq!(ip_from_bytes(&[127, 0, 0, 1]), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip_from_bytes(&[0; 16]), Some("::".parse().unwrap()));
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }
}
