//! TLS material for the agent ↔ control-plane channel: PEM loading (a file path, or the PEM
//! text itself, which is how platform secrets arrive), the control plane's mutual-TLS server
//! configuration, and reading an agent's identity back out of its certificate.
//!
//! Who may connect is decided by the server configuration built here: a client certificate is
//! required, must chain to the configured CA, must be within its validity period, must carry
//! the client-auth extended key usage (a server certificate presented as a client is refused),
//! and must not be on the revocation list. The agents table can revoke further; that check is
//! the control plane's.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ExtendedKeyPurpose, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};

use crate::identity::AgentIdentity;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The setting names a file that cannot be read (the I/O error is part of the message).
    #[error("{what}: cannot read {path}: {error}")]
    Read { what: &'static str, path: String, error: std::io::Error },
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
}

fn invalid(what: &'static str, message: impl Into<String>) -> TlsError {
    TlsError::Invalid { what, message: message.into() }
}

/// The PEM bytes of a setting that holds either a path or the PEM text itself.
pub fn read_pem(what: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|error| TlsError::Read { what, path: value.to_owned(), error })
}

/// Every certificate in a PEM setting; at least one.
pub fn certificates(what: &'static str, value: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(what, value)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(what, "no certificate found"));
    }
    Ok(certs)
}

/// The private key in a PEM setting (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(what: &'static str, value: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(what, value)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| invalid(what, format!("no usable private key: {e}")))
}

/// The revocation lists of a PEM setting, read and checked.
#[derive(Debug, Clone)]
pub struct RevocationLists {
    /// Every list, as DER for the rustls verifier; at least one.
    pub ders: Vec<CertificateRevocationListDer<'static>>,
    /// The earliest `nextUpdate` of the lists: by then a fresh list should have replaced them.
    /// `None` when no list names one.
    pub next_update: Option<chrono::DateTime<chrono::Utc>>,
    /// Serials of the revoked certificates, normalized as [`normalize_serial`] does.
    pub revoked: std::collections::BTreeSet<String>,
}

/// Every revocation list in a PEM setting (a path or the PEM text). Errors when the file
/// cannot be read, holds no revocation list, or a list is not valid DER.
pub fn revocation_lists(what: &'static str, value: &str) -> Result<RevocationLists, TlsError> {
    parse_revocation_lists(what, &read_pem(what, value)?)
}

/// Like [`revocation_lists`], from PEM bytes already read.
pub fn parse_revocation_lists(what: &'static str, pem: &[u8]) -> Result<RevocationLists, TlsError> {
    use x509_parser::prelude::FromDer;
    let ders = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, format!("bad PEM: {e}")))?;
    if ders.is_empty() {
        return Err(invalid(what, "no revocation list found"));
    }
    let mut next_update = None;
    let mut revoked = std::collections::BTreeSet::new();
    for der in &ders {
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
            .map_err(|e| invalid(what, format!("unparsable revocation list: {e}")))?;
        if let Some(next) = crl.next_update() {
            let next = chrono::DateTime::from_timestamp(next.timestamp(), 0)
                .ok_or_else(|| invalid(what, "nextUpdate out of range"))?;
            next_update = Some(next_update.map_or(next, |earliest: chrono::DateTime<_>| earliest.min(next)));
        }
        revoked
            .extend(crl.iter_revoked_certificates().map(|r| normalize_serial(&hex_encode(r.raw_serial()))));
    }
    Ok(RevocationLists { ders, next_update, revoked })
}

/// The crypto provider used everywhere: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The control plane's ingest server configuration: mutual TLS against `ca`, optionally with
/// revocation lists, ALPN `h2`. Errors when a revocation list is not issued by a `ca`
/// certificate, or the server certificate and key do not fit.
pub fn mtls_server_config(
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<ServerConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone()).map_err(|e| invalid("ca", e.to_string()))?;
    }
    // A list of another CA says nothing about this CA's certificates: rustls would then find
    // every agent's revocation status unknown and refuse them all. Refuse the list instead.
    for crl in &crls {
        crl_issued_by(crl, ca)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls)
        .build()
        .map_err(|e| invalid("client verifier", e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", e.to_string()))?
        .with_client_cert_verifier(Arc::new(ClientAuthRequired(verifier)))
        .with_single_cert(chain, key)
        .map_err(|e| invalid("server certificate", e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The web-PKI client verifier, plus the client-auth extended key usage made mandatory.
///
/// webpki accepts a certificate *without* an EKU extension for any purpose (RFC 5280 reads an
/// absent extension as unrestricted), so a certificate the CA issued for something else
/// entirely (no EKU at all) would pass. Agent certificates always carry `clientAuth`
/// (`certs agent`), so anything else is refused during the handshake, with the same error as a
/// certificate whose EKU lacks client auth (`InvalidPurpose`, alert `unsupported_certificate`).
#[derive(Debug)]
struct ClientAuthRequired(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ClientAuthRequired {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if !has_client_auth_eku(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::InvalidPurposeContext {
                required: ExtendedKeyPurpose::ClientAuth,
                presented: Vec::new(),
            }));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Whether a certificate carries an extended key usage extension that lists client auth.
pub fn has_client_auth_eku(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, cert)| cert.extended_key_usage().ok().flatten().map(|eku| eku.value.client_auth))
        .unwrap_or(false)
}

/// Checks that `crl` names one of the `ca` certificates' subjects as its issuer.
fn crl_issued_by(crl: &CertificateRevocationListDer<'_>, ca: &[CertificateDer<'_>]) -> Result<(), TlsError> {
    use x509_parser::prelude::FromDer;
    let (_, list) = x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
        .map_err(|e| invalid("tls_crl", format!("unparsable revocation list: {e}")))?;
    let issuer = list.issuer();
    let known = ca.iter().any(|der| {
        x509_parser::parse_x509_certificate(der)
            .is_ok_and(|(_, cert)| cert.subject().as_raw() == issuer.as_raw())
    });
    if known {
        Ok(())
    } else {
        Err(invalid(
            "tls_crl",
            format!("the revocation list is issued by \"{issuer}\", not by the configured CA"),
        ))
    }
}

/// What the control plane learns from an agent's (already verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCertificate {
    pub identity: AgentIdentity,
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// Lowercase hex without leading zero bytes, so serials compare equal however they were
/// written (`00ab…`, `AB…`, `ab:…`).
pub fn normalize_serial(serial: &str) -> String {
    let hex: String = serial.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    let mut s = hex.as_str();
    while s.len() > 2 && s.starts_with("00") {
        s = &s[2..];
    }
    s.to_owned()
}

/// Reads the agent identity URI, serial and expiry from a DER certificate.
pub fn agent_certificate(der: &[u8]) -> Result<AgentCertificate, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
        .ok_or("the certificate has no subject alternative names")?;
    let mut identities = san.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with(crate::identity::URI_PREFIX) => Some(*uri),
        _ => None,
    });
    let uri = identities.next().ok_or("the certificate carries no crosscheck://agents/ URI")?;
    if identities.next().is_some() {
        return Err("the certificate carries more than one agent identity".into());
    }
    let identity = AgentIdentity::from_uri(uri)?;
    let not_after = chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or("certificate expiry out of range")?;
    Ok(AgentCertificate { identity, serial: normalize_serial(&hex_encode(cert.raw_serial())), not_after })
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("00AB:cd"), "abcd");
        assert_eq!(normalize_serial("0000"), "00");
        assert_eq!(normalize_serial("7f01"), "7f01");
    }

    #[test]
    fn inline_pem_is_not_a_path() {
        let pem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
        assert_eq!(read_pem("ca", pem).unwrap(), pem.as_bytes());
        assert!(matches!(read_pem("ca", "/nonexistent/ca.pem"), Err(TlsError::Read { .. })));
        assert!(certificates("ca", "-----BEGIN NOTHING-----\n").is_err());
    }

    #[test]
    fn a_setting_without_a_revocation_list_is_an_error() {
        let err = parse_revocation_lists("tls_crl", b"").unwrap_err();
        assert!(err.to_string().contains("no revocation list"), "{err}");
        let garbage = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
        let err = parse_revocation_lists("tls_crl", garbage).unwrap_err();
        assert!(err.to_string().starts_with("tls_crl: unparsable revocation list"), "{err}");
    }
}
