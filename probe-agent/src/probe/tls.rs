//! The TLS side of a probe: one rustls client configuration per prober (web PKI roots plus
//! extra roots, no session resumption so every probe measures a full handshake), a verifier
//! that records the chain's verdict and the server's certificate instead of aborting, and the
//! certificate facts reported in [`CertInfo`].

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CertInfo;

tokio::task_local! {
    /// Where the verifier records what it saw during the handshake being polled.
    static SEEN: CertSlot;
}

/// The server certificate a handshake presented and the chain verification's verdict.
#[derive(Debug, Clone)]
pub struct SeenCert {
    pub end_entity: CertificateDer<'static>,
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
        let verdict =
            self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        let seen =
            SeenCert { end_entity: end_entity.clone().into_owned(), error: verdict.as_ref().err().cloned() };
        match SEEN.try_with(|slot| slot.put(seen)) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            // Outside a probe's handshake nobody would look at the record: be strict.
            Err(_) => verdict,
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
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("cannot configure tls: {0}")]
    Config(rustls::Error),
}

/// Makes TLS connections for probes; built once per prober.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
}

impl TlsClient {
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<TlsClient, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for root in extra_roots {
            roots.add(root.clone()).map_err(TlsSetupError::ExtraRoot)?;
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
        let mut config = client_config(provider)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RecordingVerifier { inner }))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Ok(TlsClient { connector: TlsConnector::from(Arc::new(config)) })
    }

    /// Runs a handshake over `io`. The certificate the server presented (and whether its chain
    /// verified) lands in `slot` even when the chain is invalid, as soon as it has been seen —
    /// so it is available when the handshake later fails or is abandoned.
    pub async fn handshake<IO>(
        &self,
        name: ServerName<'static>,
        io: IO,
        slot: &CertSlot,
    ) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        SEEN.scope(slot.clone(), self.connector.connect(name, io)).await
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

/// The certificate facts reported for `seen`, relative to `now`; `None` when the certificate
/// cannot be parsed.
pub fn cert_info(seen: &SeenCert, now: DateTime<Utc>) -> Option<CertInfo> {
    let (_, cert) = X509Certificate::from_der(seen.end_entity.as_ref()).ok()?;
    let validity = cert.validity();
    let not_before = DateTime::from_timestamp(validity.not_before.timestamp(), 0)?;
    let not_after = DateTime::from_timestamp(validity.not_after.timestamp(), 0)?;
    let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
    Some(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans: sans(&cert),
        serial: cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
        not_before,
        not_after,
        days_remaining: (not_after - now).num_seconds().div_euclid(86_400),
        valid: seen.error.is_none(),
        validation_error: seen.error.as_ref().map(|e| reason(e, self_issued)),
    })
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
    fn ip_sans_decode() {
        assert_eq!(ip_from_bytes(&[127, 0, 0, 1]), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip_from_bytes(&[0; 16]), Some("::".parse().unwrap()));
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }
}
