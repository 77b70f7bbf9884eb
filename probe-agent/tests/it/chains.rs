//! Certificates the way a browser sees them: every HTTPS hop's certificate (behind redirects),
//! the verified chain and its earliest expiry, the certificate at fault when validation fails,
//! and insecure mode (`tls_verify: false`). One local HTTPS server per test chooses the chain it
//! presents by SNI; every chain is built by the test (rcgen), with validity relative to now.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use probe_agent::probe::{
    CertInfo, CertProblemKind, ErrorKind, ProbeReport, ProbeSettings, Prober, StaticResolver,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shared::DomainConfig;
use time::{Duration, OffsetDateTime};
use tokio_rustls::TlsAcceptor;

use crate::probe::{app_server, assert_failed, config, loopback_allowed, probe, settings};

/// Validity from `from_days` to `to_days` around now, plus an hour so that whole days left
/// read as `to_days` during the test.
fn validity(params: &mut CertificateParams, from_days: i64, to_days: i64) {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    params.not_before = now + Duration::days(from_days);
    params.not_after = now + Duration::days(to_days) + Duration::hours(1);
}

/// A certificate authority: a trusted root or an intermediate.
struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    name: String,
}

impl Ca {
    fn ca_params(name: &str, from_days: i64, to_days: i64) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, from_days, to_days);
        params
    }

    /// A self-signed root valid for ten years.
    fn root(name: &str) -> Ca {
        let params = Ca::ca_params(name, -10, 3650);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Ca { cert, issuer: Issuer::new(params, key), name: format!("CN={name}") }
    }

    /// An intermediate signed by this CA, expiring in `days` (negative: expired).
    fn intermediate(&self, name: &str, days: i64) -> Ca {
        let params = Ca::ca_params(name, (days - 30).min(-30), days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        Ca { cert, issuer: Issuer::new(params, key), name: format!("CN={name}") }
    }

    /// A server certificate for `host` signed by this CA, valid from `from_days` to `to_days`.
    fn leaf(&self, host: &str, from_days: i64, to_days: i64) -> (CertificateDer<'static>, KeyPair) {
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, from_days, to_days);
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.issuer).unwrap().der().clone(), key)
    }
}

/// Presents, for each SNI name, the chain the test chose (the leaf first).
#[derive(Debug, Default)]
struct BySni(HashMap<String, Arc<CertifiedKey>>);

impl BySni {
    fn with(
        mut self,
        name: &str,
        leaf: (CertificateDer<'static>, KeyPair),
        rest: &[&CertificateDer<'static>],
    ) -> Self {
        let (cert, key) = leaf;
        let mut chain = vec![cert];
        chain.extend(rest.iter().map(|c| (*c).clone()));
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, PrivateKeyDer::from(key), &provider).unwrap();
        self.0.insert(name.to_owned(), Arc::new(key));
        self
    }

    fn acceptor(self) -> TlsAcceptor {
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(self));
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.get(hello.server_name()?).cloned()
    }
}

/// A prober trusting `root`, with the test names on 127.0.0.1.
fn trusting(root: &Ca) -> Prober {
    let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
    let resolver = ["a.test", "b.test", "c.test"]
        .into_iter()
        .fold(StaticResolver::new(), |resolver, name| resolver.with(name, local.clone()));
    let settings = ProbeSettings { extra_roots: vec![root.cert.clone()], ..settings(loopback_allowed()) };
    Prober::with_resolver(settings, Arc::new(resolver)).unwrap()
}

fn insecure(url: String) -> DomainConfig {
    DomainConfig { tls_verify: false, ..config(url) }
}

fn first_cert(report: &ProbeReport) -> &CertInfo {
    report.certificate.as_ref().unwrap_or_else(|| panic!("no certificate: {report:#?}"))
}

/// A one-intermediate chain the way most CAs issue it: root → intermediate (400 days).
fn usual() -> (Ca, Ca) {
    let root = Ca::root("Chain Test Root");
    let intermediate = root.intermediate("Chain Test Intermediate", 400);
    (root, intermediate)
}

// ---------------------------------------------------------------------------------------------
// Hops

#[tokio::test]
async fn the_first_hops_certificate_is_the_domains_and_every_hop_counts_for_the_earliest_expiry() {
    let (root, inter) = usual();
    let server = BySni::default()
        .with("a.test", inter.leaf("a.test", -30, 5), &[&inter.cert])
        .with("b.test", inter.leaf("b.test", -30, 80), &[&inter.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();
    let prober = trusting(&root);

    // a.test (5 days) → b.test (80 days): the domain's facts are a.test's.
    let url = format!("https://a.test:{port}/to?https://b.test:{port}/");
    let report = probe(&prober, &config(url)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.redirects, [format!("https://b.test:{port}/")]);
    let cert = first_cert(&report);
    assert_eq!((cert.host.as_str(), cert.subject.as_str(), cert.days_remaining), ("a.test", "CN=a.test", 5));
    let [hop] = report.redirect_certificates.as_slice() else { panic!("{report:#?}") };
    assert_eq!((hop.host.as_str(), hop.days_remaining, hop.valid), ("b.test", 80, true));
    let earliest = report.earliest_expiry.as_ref().unwrap();
    assert_eq!((earliest.host.as_str(), earliest.position, earliest.days_remaining), ("a.test", 0, 5));
    assert_eq!(earliest.not_after, cert.not_after);

    // b.test (80 days) → a.test (5 days): the domain's facts are b.test's, the earliest
    // expiry still names a.test.
    let url = format!("https://b.test:{port}/to?https://a.test:{port}/");
    let report = probe(&prober, &config(url)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!((first_cert(&report).host.as_str(), first_cert(&report).days_remaining), ("b.test", 80));
    let earliest = report.earliest_expiry.as_ref().unwrap();
    assert_eq!((earliest.host.as_str(), earliest.subject.as_str()), ("a.test", "CN=a.test"));

    // A redirect on the same host presents the same certificate: recorded once.
    let report = probe(&prober, &config(format!("https://a.test:{port}/redirect/2"))).await;
    assert!(report.ok && report.redirects.len() == 3, "{report:#?}");
    assert!(report.redirect_certificates.is_empty(), "{report:#?}");
    assert_eq!(first_cert(&report).host, "a.test");
}

#[tokio::test]
async fn an_http_start_makes_the_first_https_hop_the_domains_certificate() {
    let (root, inter) = usual();
    let tls = BySni::default().with("b.test", inter.leaf("b.test", -30, 80), &[&inter.cert]).acceptor();
    let tls_port = app_server(Some(tls)).await.port();
    let plain_port = app_server(None).await.port();
    let url = format!("http://a.test:{plain_port}/to?https://b.test:{tls_port}/");
    let report = probe(&trusting(&root), &config(url)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!((first_cert(&report).host.as_str(), first_cert(&report).days_remaining), ("b.test", 80));
    assert!(report.redirect_certificates.is_empty());
    assert_eq!(report.earliest_expiry.as_ref().unwrap().host, "b.test");
}

#[tokio::test]
async fn an_invalid_certificate_behind_a_redirect_fails_and_both_hops_are_recorded() {
    let (root, inter) = usual();
    let server = BySni::default()
        .with("a.test", inter.leaf("a.test", -30, 60), &[&inter.cert])
        .with("b.test", inter.leaf("b.test", -400, -3), &[&inter.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();
    let url = format!("https://a.test:{port}/to?https://b.test:{port}/");
    let report = probe(&trusting(&root), &config(url)).await;
    assert_failed(&report, ErrorKind::Tls, "certificate expired: the leaf (CN=b.test) expired at");
    assert!(first_cert(&report).valid && first_cert(&report).host == "a.test", "{report:#?}");
    let [hop] = report.redirect_certificates.as_slice() else { panic!("{report:#?}") };
    assert_eq!(hop.problem.as_ref().map(|p| (p.kind, p.position)), Some((CertProblemKind::Expired, 0)));
    let earliest = report.earliest_expiry.as_ref().unwrap();
    assert_eq!((earliest.host.as_str(), earliest.days_remaining), ("b.test", -3));
}

// ---------------------------------------------------------------------------------------------
// Chains

#[tokio::test]
async fn an_intermediate_expiring_before_the_leaf_is_the_chains_earliest_expiry() {
    let root = Ca::root("Chain Test Root");
    let short = root.intermediate("Short Intermediate", 10);
    // Two intermediates, the upper one expiring first.
    let upper = root.intermediate("Upper Intermediate", 20);
    let lower = upper.intermediate("Lower Intermediate", 300);
    let server = BySni::default()
        .with("a.test", short.leaf("a.test", -30, 60), &[&short.cert])
        .with("b.test", lower.leaf("b.test", -30, 60), &[&lower.cert, &upper.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();
    let prober = trusting(&root);

    let report = probe(&prober, &config(format!("https://a.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    let cert = first_cert(&report);
    assert!(cert.valid && cert.chain_verified, "{cert:#?}");
    assert_eq!(cert.days_remaining, 60);
    let chain: Vec<(u32, &str, i64)> =
        cert.chain.iter().map(|c| (c.position, c.subject.as_str(), c.days_remaining)).collect();
    assert_eq!(chain, [(0, "CN=a.test", 60), (1, "CN=Short Intermediate", 10)]);
    assert_eq!(cert.chain[1].issuer, root.name);
    let earliest = cert.chain_earliest();
    assert_eq!(
        (earliest.position, earliest.subject.as_str(), earliest.days_remaining),
        (1, short.name.as_str(), 10)
    );
    let domain = report.earliest_expiry.as_ref().unwrap();
    assert_eq!(
        (domain.host.as_str(), domain.position, domain.subject.as_str()),
        ("a.test", 1, short.name.as_str())
    );

    let report = probe(&prober, &config(format!("https://b.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    let cert = first_cert(&report);
    assert_eq!(cert.chain.len(), 3, "{cert:#?}");
    let earliest = cert.chain_earliest();
    assert_eq!(
        (earliest.position, earliest.subject.as_str(), earliest.days_remaining),
        (2, upper.name.as_str(), 20)
    );
}

#[tokio::test]
async fn an_expired_intermediate_is_named_and_the_leaf_facts_stay() {
    let root = Ca::root("Chain Test Root");
    let expired = root.intermediate("Expired Intermediate", -2);
    let inter = root.intermediate("Fine Intermediate", 400);
    let server = BySni::default()
        .with("a.test", expired.leaf("a.test", -30, 59), &[&expired.cert])
        .with("b.test", inter.leaf("b.test", -400, -1), &[&inter.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();
    let prober = trusting(&root);

    let report = probe(&prober, &config(format!("https://a.test:{port}/"))).await;
    assert_failed(
        &report,
        ErrorKind::Tls,
        "certificate expired: intermediate 1 (CN=Expired Intermediate) expired at",
    );
    let cert = first_cert(&report);
    assert!(!cert.valid, "{cert:#?}");
    assert_eq!((cert.subject.as_str(), cert.days_remaining), ("CN=a.test", 59));
    let problem = cert.problem.as_ref().unwrap();
    assert_eq!(
        (problem.kind, problem.position, problem.subject.as_str()),
        (CertProblemKind::Expired, 1, expired.name.as_str())
    );
    assert_eq!(problem.at, Some(cert.chain[1].not_after));
    // The path was still verified (at the intermediate's own limit), so it is the real one.
    assert!(cert.chain_verified && cert.chain.len() == 2, "{cert:#?}");
    assert_eq!(report.earliest_expiry.as_ref().map(|e| (e.position, e.days_remaining)), Some((1, -2)));

    // An expired leaf under a valid intermediate names the leaf.
    let report = probe(&prober, &config(format!("https://b.test:{port}/"))).await;
    assert_failed(&report, ErrorKind::Tls, "certificate expired: the leaf (CN=b.test) expired at");
    let problem = first_cert(&report).problem.clone().unwrap();
    assert_eq!((problem.kind, problem.position), (CertProblemKind::Expired, 0));
}

#[tokio::test]
async fn a_missing_intermediate_or_an_unknown_issuer_names_the_certificate_whose_issuer_is_missing() {
    let (root, inter) = usual();
    let stranger = Ca::root("Stranger Root");
    let server = BySni::default()
        // The server forgets to send the intermediate.
        .with("a.test", inter.leaf("a.test", -30, 60), &[])
        .with("b.test", stranger.leaf("b.test", -30, 60), &[&stranger.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();
    let prober = trusting(&root);

    let report = probe(&prober, &config(format!("https://a.test:{port}/"))).await;
    assert_failed(
        &report,
        ErrorKind::Tls,
        "unknown issuer: CN=Chain Test Intermediate, the issuer of the leaf (CN=a.test), is not a trusted root \
         and was not sent",
    );
    let cert = first_cert(&report);
    assert_eq!(
        cert.problem.as_ref().map(|p| (p.kind, p.position)),
        Some((CertProblemKind::UnknownIssuer, 0))
    );
    assert!(!cert.chain_verified && cert.chain.len() == 1, "{cert:#?}");
    assert_eq!(cert.days_remaining, 60);

    // An untrusted root sent along: the chain links up to it by names and names it.
    let report = probe(&prober, &config(format!("https://b.test:{port}/"))).await;
    assert_failed(
        &report,
        ErrorKind::Tls,
        "unknown issuer: intermediate 1 (CN=Stranger Root) is a self-signed root that is not trusted",
    );
    let cert = first_cert(&report);
    assert_eq!(
        cert.problem.as_ref().map(|p| (p.kind, p.position)),
        Some((CertProblemKind::UnknownIssuer, 1))
    );
    assert!(!cert.chain_verified && cert.chain.len() == 2, "{cert:#?}");
}

#[tokio::test]
async fn a_chain_without_a_verified_path_stops_at_a_trusted_roots_name() {
    let (root, _) = usual();
    // An impostor root with the trusted root's name but another key, and its intermediate.
    let impostor = Ca::root("Chain Test Root");
    let inter = impostor.intermediate("Impostor Intermediate", 400);
    let server = BySni::default()
        .with("a.test", inter.leaf("a.test", -30, 60), &[&inter.cert, &impostor.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();

    let report = probe(&trusting(&root), &config(format!("https://a.test:{port}/"))).await;
    assert_eq!(report.error, Some(ErrorKind::Tls), "{report:#?}");
    let cert = first_cert(&report);
    assert!(!cert.valid && !cert.chain_verified, "{cert:#?}");
    // Linked by names up to the trusted root's name, which is where a path would end: the
    // impostor root sent along is not part of it.
    let subjects: Vec<&str> = cert.chain.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["CN=a.test", "CN=Impostor Intermediate"]);
}

#[tokio::test]
async fn a_name_mismatch_and_a_leaf_not_yet_valid_name_the_leaf() {
    let (root, inter) = usual();
    let server = BySni::default()
        // a.test is answered with c.test's certificate.
        .with("a.test", inter.leaf("c.test", -30, 60), &[&inter.cert])
        .with("b.test", inter.leaf("b.test", 3, 90), &[&inter.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();
    let prober = trusting(&root);

    let report = probe(&prober, &config(format!("https://a.test:{port}/"))).await;
    assert_failed(&report, ErrorKind::Tls, "name mismatch: the leaf (CN=c.test) is not valid for a.test");
    let cert = first_cert(&report);
    assert_eq!(cert.problem.as_ref().map(|p| (p.kind, p.position)), Some((CertProblemKind::NameMismatch, 0)));
    // The chain itself is fine and was verified.
    assert!(cert.chain_verified && cert.chain.len() == 2, "{cert:#?}");

    let report = probe(&prober, &config(format!("https://b.test:{port}/"))).await;
    assert_failed(&report, ErrorKind::Tls, "certificate not yet valid: the leaf (CN=b.test) is valid from");
    let cert = first_cert(&report);
    let problem = cert.problem.as_ref().unwrap();
    assert_eq!(
        (problem.kind, problem.position, problem.at),
        (CertProblemKind::NotYetValid, 0, Some(cert.not_before))
    );
}

#[tokio::test]
async fn an_extra_cross_certificate_off_the_verified_path_does_not_count() {
    let root_params = Ca::ca_params("Chain Test Root", -10, 3650);
    let root_key = KeyPair::generate().unwrap();
    let root_cert = root_params.self_signed(&root_key).unwrap().der().clone();
    // The same root name and key, cross-signed by an old root that nobody trusts, expiring in
    // 3 days: sent by the server, but the path ends at the trusted root before it.
    let old = Ca::root("Old Root");
    let cross_params = Ca::ca_params("Chain Test Root", -300, 3);
    let cross = cross_params.signed_by(&root_key, &old.issuer).unwrap().der().clone();
    let root =
        Ca { cert: root_cert, issuer: Issuer::new(root_params, root_key), name: "CN=Chain Test Root".into() };
    let inter = root.intermediate("Chain Test Intermediate", 400);
    let server = BySni::default()
        .with("a.test", inter.leaf("a.test", -30, 60), &[&inter.cert, &cross, &old.cert])
        .acceptor();
    let port = app_server(Some(server)).await.port();

    let report = probe(&trusting(&root), &config(format!("https://a.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    let cert = first_cert(&report);
    let subjects: Vec<&str> = cert.chain.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["CN=a.test", "CN=Chain Test Intermediate"]);
    assert_eq!(cert.chain_earliest().days_remaining, 60);
    let earliest = report.earliest_expiry.as_ref().unwrap();
    assert_eq!((earliest.position, earliest.days_remaining), (0, 60));
}

// ---------------------------------------------------------------------------------------------
// Insecure mode

#[tokio::test]
async fn tls_verify_off_passes_an_invalid_certificate_and_keeps_every_fact() {
    let root = Ca::root("Chain Test Root");
    let expired = root.intermediate("Expired Intermediate", -2);
    let inter = root.intermediate("Fine Intermediate", 400);
    let stranger = Ca::root("Stranger Root");
    let server = BySni::default()
        .with("a.test", inter.leaf("a.test", -400, -5), &[&inter.cert])
        .with("b.test", expired.leaf("b.test", -30, 59), &[&expired.cert])
        .with("c.test", stranger.leaf("c.test", -30, 20), &[])
        .acceptor();
    let port = app_server(Some(server)).await.port();
    let prober = trusting(&root);

    let report = probe(&prober, &insecure(format!("https://a.test:{port}/"))).await;
    assert!(report.ok && report.status == Some(200), "{report:#?}");
    let cert = first_cert(&report);
    assert!(!cert.valid && cert.days_remaining == -5, "{cert:#?}");
    assert!(cert.validation_error.as_deref().is_some_and(|e| e.starts_with("certificate expired: the leaf")));
    assert_eq!(report.earliest_expiry.as_ref().map(|e| e.days_remaining), Some(-5));

    let report = probe(&prober, &insecure(format!("https://b.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    let cert = first_cert(&report);
    assert_eq!(cert.problem.as_ref().map(|p| (p.kind, p.position)), Some((CertProblemKind::Expired, 1)));
    assert_eq!(report.earliest_expiry.as_ref().map(|e| e.subject.as_str()), Some(expired.name.as_str()));

    let report = probe(&prober, &insecure(format!("https://c.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(first_cert(&report).problem.as_ref().map(|p| p.kind), Some(CertProblemKind::UnknownIssuer));
    assert_eq!(first_cert(&report).days_remaining, 20);

    // The same server with verification on fails: insecure mode is what lets it pass.
    let report = probe(&prober, &config(format!("https://a.test:{port}/"))).await;
    assert_failed(&report, ErrorKind::Tls, "certificate expired");
}
