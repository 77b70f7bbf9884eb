//! The certificate tool's library: a CA, the control plane's server certificate, agent client
//! certificates that carry their identity (`crosscheck://agents/<region>/<agent-id>` as a URI
//! SAN, client-auth EKU only), and a revocation list signed by the CA.
//!
//! Everything lives in one output directory (git-ignored): `ca.pem`/`ca.key`,
//! `server.pem`/`server.key`, `agents/<region>-<agent-id>.pem`/`.key`, `revoked.txt` (one serial
//! per line) and `crl.pem`. Private keys are written owner-only (0600).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use shared::identity::AgentIdentity;
use time::{Duration, OffsetDateTime};

/// Where the tool reads and writes.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

/// Paths of an issued certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The subject alternative names the certificate carries, as `DNS:<name>`, `IP:<address>`
    /// or `URI:<uri>` (empty for the CA).
    pub sans: Vec<String>,
}

fn random_serial() -> (SerialNumber, String) {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f; // positive
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // An existing file keeps its old mode on open; make sure it is owner-only.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that run behind.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(days));
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    fn revoked_list(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }

    /// Creates the CA. Refuses to overwrite an existing one unless `force`.
    pub fn create_ca(&self, name: &str, days: u32, overwrite: Overwrite) -> anyhow::Result<Issued> {
        fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        if self.ca_cert().exists() && overwrite == Overwrite::Refuse {
            bail!(
                "{} exists; pass --force to replace the CA (every issued certificate then stops working)",
                self.ca_cert().display()
            );
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        write_private(&self.ca_key(), &key.serialize_pem())?;
        write_public(&self.ca_cert(), &cert.pem())?;
        Ok(Issued { cert: self.ca_cert(), key: self.ca_key(), serial: serial_hex, sans: Vec::new() })
    }

    fn issuer(&self) -> anyhow::Result<Issuer<'static, KeyPair>> {
        let key_pem = fs::read_to_string(self.ca_key()).with_context(|| {
            format!("reading {} (create the CA first: certs ca)", self.ca_key().display())
        })?;
        let cert_pem = fs::read_to_string(self.ca_cert())
            .with_context(|| format!("reading {}", self.ca_cert().display()))?;
        let key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
        Issuer::from_ca_cert_pem(&cert_pem, key).context("parsing the CA certificate")
    }

    /// Issues the control plane's server certificate for exactly the given names and addresses
    /// (nothing is added: development names such as `localhost` only when passed). Errors when
    /// both are empty, a name is not a valid DNS name, or the CA cannot be read.
    pub fn issue_server(&self, dns: &[String], ips: &[IpAddr], days: u32) -> anyhow::Result<Issued> {
        if dns.is_empty() && ips.is_empty() {
            bail!("a server certificate needs at least one --dns name or --ip address");
        }
        let issuer = self.issuer()?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(dns.to_vec())?;
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, dns.first().map_or("crosscheck control plane", String::as_str));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        validity(&mut params, days);
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = (self.dir.join("server.pem"), self.dir.join("server.key"));
        write_private(&key_path, &key.serialize_pem())?;
        write_public(&cert_path, &cert.pem())?;
        let sans =
            dns.iter().map(|d| format!("DNS:{d}")).chain(ips.iter().map(|ip| format!("IP:{ip}"))).collect();
        Ok(Issued { cert: cert_path, key: key_path, serial: serial_hex, sans })
    }

    /// Issues an agent's client certificate: identity URI SAN, client-auth EKU only.
    pub fn issue_agent(&self, identity: &AgentIdentity, days: u32) -> anyhow::Result<Issued> {
        let now = std::time::SystemTime::now();
        let slack = std::time::Duration::from_secs(5 * 60);
        self.issue_agent_window(
            identity,
            now - slack,
            now + std::time::Duration::from_secs(u64::from(days) * 86_400),
        )
    }

    /// Issues an agent certificate valid from `not_before` to `not_after` (tests use a window
    /// in the past to get an expired certificate).
    pub fn issue_agent_window(
        &self,
        identity: &AgentIdentity,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> anyhow::Result<Issued> {
        let issuer = self.issuer()?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(identity.to_uri().try_into()?)];
        params.distinguished_name.push(DnType::CommonName, format!("agent {identity}"));
        params.distinguished_name.push(DnType::OrganizationalUnitName, identity.region.clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        let cert = params.signed_by(&key, &issuer)?;
        let dir = self.dir.join("agents");
        fs::create_dir_all(&dir)?;
        let base = format!("{}-{}", identity.region, identity.agent_id);
        let (cert_path, key_path) = (dir.join(format!("{base}.pem")), dir.join(format!("{base}.key")));
        write_private(&key_path, &key.serialize_pem())?;
        write_public(&cert_path, &cert.pem())?;
        let sans = vec![format!("URI:{}", identity.to_uri())];
        Ok(Issued { cert: cert_path, key: key_path, serial: serial_hex, sans })
    }

    /// Serials revoked so far.
    pub fn revoked(&self) -> anyhow::Result<Vec<String>> {
        match fs::read_to_string(self.revoked_list()) {
            Ok(text) => {
                Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).context("reading revoked.txt"),
        }
    }

    /// Adds a serial (hex) to the revocation list and rewrites `crl.pem`.
    pub fn revoke(&self, serial_hex: &str) -> anyhow::Result<PathBuf> {
        let serial = serial_hex.trim().to_ascii_lowercase();
        if serial.is_empty() || hex::decode(&serial).is_err() {
            bail!("{serial_hex:?} is not a hexadecimal serial number");
        }
        let mut revoked = self.revoked()?;
        if !revoked.contains(&serial) {
            revoked.push(serial);
            write_public(&self.revoked_list(), &(revoked.join("\n") + "\n"))?;
        }
        self.write_crl(7)
    }

    /// Writes `crl.pem` listing every revoked serial, with its `nextUpdate` `days` from now
    /// (re-run it before then). The file is replaced atomically.
    pub fn write_crl(&self, days: u32) -> anyhow::Result<PathBuf> {
        let issuer = self.issuer()?;
        let now = OffsetDateTime::now_utc();
        let revoked_certs = self
            .revoked()?
            .iter()
            .map(|hex_serial| {
                let bytes = hex::decode(hex_serial)
                    .with_context(|| format!("bad serial {hex_serial:?} in revoked.txt"))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(i64::from(days)),
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        // Written aside and renamed over crl.pem, so a control plane re-reading the file never
        // sees half a list.
        let partial = self.dir.join("crl.pem.partial");
        write_public(&partial, &crl.pem()?)?;
        fs::rename(&partial, self.crl())
            .with_context(|| format!("replacing {} with {}", self.crl().display(), partial.display()))?;
        Ok(self.crl())
    }
}

/// Whether an existing CA may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Replace,
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn store() -> Store {
        Store::new(std::env::temp_dir().join(format!("crosscheck-certs-{}", uuid::Uuid::new_v4().simple())))
    }

    fn parse(path: &Path) -> Vec<u8> {
        let pem = fs::read_to_string(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        pem.contents
    }

    #[test]
    fn agent_certificates_carry_identity_and_client_auth_only() {
        let store = store();
        store.create_ca("test CA", 30, Overwrite::Refuse).unwrap();
        let identity = AgentIdentity::new("ams", "ams-1").unwrap();
        let issued = store.issue_agent(&identity, 7).unwrap();
        let der = parse(&issued.cert);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let sans = cert.subject_alternative_name().unwrap().unwrap().value;
        let uris: Vec<_> = sans
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        assert_eq!(uris, ["crosscheck://agents/ams/ams-1"]);
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
        assert_eq!(days, 7);
        assert_eq!(hex::encode(cert.raw_serial()), issued.serial);
        let ca_der = parse(&store.ca_cert());
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        let _ = fs::remove_dir_all(&store.dir);
    }

    #[test]
    fn server_certificates_name_hosts_and_addresses() {
        let store = store();
        store.create_ca("test CA", 30, Overwrite::Refuse).unwrap();
        let issued = store.issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 30).unwrap();
        let der = parse(&issued.cert);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let names = format!("{:?}", cert.subject_alternative_name().unwrap().unwrap().value.general_names);
        assert!(names.contains("localhost") && names.contains("127"), "{names}");
        assert_eq!(issued.sans, ["DNS:localhost", "IP:127.0.0.1"]);
        assert!(store.issue_server(&[], &[], 30).is_err());

        // Only what was asked for: no development name slips in.
        let issued = store.issue_server(&["example.com".into()], &[], 30).unwrap();
        let der = parse(&issued.cert);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let names = &cert.subject_alternative_name().unwrap().unwrap().value.general_names;
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(matches!(names[0], GeneralName::DNSName("example.com")), "{names:?}");
        assert_eq!(issued.sans, ["DNS:example.com"]);
        let _ = fs::remove_dir_all(&store.dir);
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_owner_only_and_the_ca_is_not_replaced_by_accident() {
        use std::os::unix::fs::PermissionsExt;
        let store = store();
        let ca = store.create_ca("test CA", 30, Overwrite::Refuse).unwrap();
        assert_eq!(fs::metadata(&ca.key).unwrap().permissions().mode() & 0o777, 0o600);
        let agent = store.issue_agent(&AgentIdentity::new("sin", "a").unwrap(), 1).unwrap();
        assert_eq!(fs::metadata(&agent.key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(store.create_ca("again", 30, Overwrite::Refuse).is_err());
        assert!(store.create_ca("again", 30, Overwrite::Replace).is_ok());
        let _ = fs::remove_dir_all(&store.dir);
    }

    #[test]
    fn revocation_list_names_revoked_serials() {
        let store = store();
        store.create_ca("test CA", 30, Overwrite::Refuse).unwrap();
        let agent = store.issue_agent(&AgentIdentity::new("iad", "x").unwrap(), 1).unwrap();
        let crl_path = store.revoke(&agent.serial).unwrap();
        store.revoke(&agent.serial).unwrap();
        assert_eq!(store.revoked().unwrap(), vec![agent.serial.clone()]);
        let pem = fs::read_to_string(crl_path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&pem.contents).unwrap();
        let serials: Vec<_> = crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect();
        assert_eq!(serials, std::slice::from_ref(&agent.serial));
        // What the control plane reads back from it.
        let lists = shared::tls::revocation_lists("tls_crl", &store.crl().display().to_string()).unwrap();
        assert_eq!(
            lists.revoked.into_iter().collect::<Vec<_>>(),
            [shared::tls::normalize_serial(&agent.serial)]
        );
        let days = (lists.next_update.unwrap() - chrono::Utc::now()).num_hours();
        assert!((7 * 24 - 1..=7 * 24).contains(&days), "nextUpdate in {days} h");
        assert!(store.revoke("not hex").is_err());

        // The control plane takes this list with its own CA, and refuses another CA's list.
        let server = store.issue_server(&["localhost".into()], &[], 1).unwrap();
        let tls = |ca: &Path, crl: &Path| {
            shared::tls::mtls_server_config(
                &shared::tls::certificates("tls_ca", &ca.display().to_string()).unwrap(),
                shared::tls::certificates("tls_cert", &server.cert.display().to_string()).unwrap(),
                shared::tls::private_key("tls_key", &server.key.display().to_string()).unwrap(),
                shared::tls::revocation_lists("tls_crl", &crl.display().to_string()).unwrap().ders,
            )
        };
        assert!(tls(&store.ca_cert(), &store.crl()).is_ok());
        let other = self::store();
        other.create_ca("other CA", 30, Overwrite::Refuse).unwrap();
        other.write_crl(7).unwrap();
        let error = tls(&store.ca_cert(), &other.crl()).unwrap_err().to_string();
        assert!(error.contains("not by the configured CA") && error.contains("other CA"), "{error}");
        let _ = fs::remove_dir_all(&other.dir);
        let _ = fs::remove_dir_all(&store.dir);
    }
}
