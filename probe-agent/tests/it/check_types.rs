//! The check types other than http (`tcp`, `tls`, `dns`) and the http check's JSON assertion,
//! against servers each test starts on 127.0.0.1: a banner server, an echo server, a server
//! that never says what is expected, TLS servers with rcgen certificates, the in-process DNS
//! server and raw HTTP servers answering JSON. Each type is also refused by the SSRF guard.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::proto::rr::rdata::{MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use probe_agent::probe::{
    DnsErrorReason, DnssecProof, ErrorKind, ProbeReport, ProbeSettings, Prober, StaticResolver,
    TrustAnchorSet,
};
use shared::netguard::TargetPolicy;
use shared::{CheckConfig, DnsCheck, DnsRecordType, DomainConfig, JsonAssertion, JsonOp, TcpCheck, TlsCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::dns_server::{addrs, Behaviour, DnsServer, Fault, Keys, ZoneKeys};
use crate::probe::{
    app_server, assert_failed, check_invariants, config, loopback_allowed, settings, TestCa, Tripwire,
};

fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with("app.test", vec!["127.0.0.1".parse().unwrap()])
        .with("internal.test", vec!["10.0.0.1".parse().unwrap()])
}

fn prober(policy: TargetPolicy, roots: Option<&TestCa>) -> Prober {
    let settings = ProbeSettings {
        extra_roots: roots.map(|ca| vec![ca.cert.clone()]).unwrap_or_default(),
        ..settings(policy)
    };
    Prober::with_resolver(settings, Arc::new(resolver())).unwrap()
}

fn checking(check: CheckConfig) -> DomainConfig {
    DomainConfig { url: check.display_url().unwrap(), check, ..config("unused") }
}

fn tcp(host: &str, port: u16, send: Option<&str>, expect: Option<&str>) -> DomainConfig {
    checking(CheckConfig::Tcp(TcpCheck {
        host: host.into(),
        port,
        tls: false,
        send: send.map(Into::into),
        expect: expect.map(Into::into),
    }))
}

async fn run(prober: &Prober, config: &DomainConfig) -> ProbeReport {
    let report = prober.probe(config).await;
    check_invariants(&report);
    report
}

/// A server writing `banner` to each connection, then echoing what it reads (until `echo`
/// bytes or the client closes).
async fn banner_server(banner: &'static [u8], tls: Option<TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => talk(tcp, banner).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            talk(stream, banner).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn talk<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: IO, banner: &[u8]) {
    if io.write_all(banner).await.is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A server sending `a` forever without ever saying anything expected.
async fn chatty_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move { while tcp.write_all(&[b'a'; 4096]).await.is_ok() {} });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// tcp

#[tokio::test]
async fn tcp_expects_a_banner_with_timings() {
    let addr = banner_server(b"220 smtp.app.test ready\r\n", None).await;
    let prober = prober(loopback_allowed(), None);
    let report = run(&prober, &tcp("app.test", addr.port(), None, Some("220 smtp"))).await;
    assert!(report.ok, "{report:#?}");
    assert!(report.timings.dns_ms.is_some() && report.timings.connect_ms.is_some());
    assert!(report.timings.ttfb_ms.is_some(), "the first byte's time is the tcp check's ttfb");
    assert_eq!(report.timings.tls_ms, None);
    assert_eq!(report.resolved_ip, Some("127.0.0.1".parse().unwrap()));
    assert!(report.body_bytes >= 8);
}

#[tokio::test]
async fn tcp_sends_and_expects_the_echo() {
    let addr = banner_server(b"", None).await;
    let prober = prober(loopback_allowed(), None);
    let report = run(&prober, &tcp("127.0.0.1", addr.port(), Some("PING 42\r\n"), Some("PING 42"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.timings.dns_ms, None, "an address literal is not resolved");
}

#[tokio::test]
async fn tcp_expect_mismatches_are_named() {
    let prober = prober(loopback_allowed(), None);
    let closing = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.write_all(b"554 go away\r\n").await;
            }
        });
        addr
    };
    let report = run(&prober, &tcp("app.test", closing.port(), None, Some("220"))).await;
    assert_failed(&report, ErrorKind::ExpectMismatch, r#"without "220"; they began with "554 go away\r\n""#);

    let chatty = chatty_server().await;
    let report = run(&prober, &tcp("app.test", chatty.port(), None, Some("220"))).await;
    assert_failed(&report, ErrorKind::ExpectMismatch, "not in the first 16384 bytes");
    assert_eq!(report.body_bytes, 16384, "the read stops at the limit");
}

#[tokio::test]
async fn tcp_connect_only_passes_and_a_closed_port_fails() {
    let prober = prober(loopback_allowed(), None);
    let open = banner_server(b"", None).await;
    assert!(run(&prober, &tcp("app.test", open.port(), None, None)).await.ok);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let report = run(&prober, &tcp("app.test", closed, None, None)).await;
    assert_failed(&report, ErrorKind::Connect, "refused");
}

#[tokio::test]
async fn tcp_over_tls_verifies_the_certificate_then_expects() {
    let ca = TestCa::new("Check Types CA");
    let addr = banner_server(b"* OK imap ready\r\n", Some(ca.server(&["app.test"], (2099, 1, 1)))).await;
    let mut config = tcp("app.test", addr.port(), None, Some("* OK"));
    if let CheckConfig::Tcp(check) = &mut config.check {
        check.tls = true;
    }
    let report = run(&prober(loopback_allowed(), Some(&ca)), &config).await;
    assert!(report.ok, "{report:#?}");
    assert!(report.timings.tls_ms.is_some());
    let certificate = report.certificate.as_ref().expect("the certificate is recorded");
    assert!(certificate.valid && certificate.host == "app.test", "{certificate:?}");

    let untrusting = run(&prober(loopback_allowed(), None), &config).await;
    assert_failed(&untrusting, ErrorKind::Tls, "unknown issuer");
}

// ---------------------------------------------------------------------------------------------
// tls

#[tokio::test]
async fn tls_checks_record_the_certificate_without_http() {
    let ca = TestCa::new("Check Types CA");
    let addr = banner_server(b"", Some(ca.server(&["app.test"], (2099, 1, 1)))).await;
    let config = checking(CheckConfig::Tls(TlsCheck { host: "app.test".into(), port: addr.port() }));
    let report = run(&prober(loopback_allowed(), Some(&ca)), &config).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.status, None, "no http exchange");
    assert_eq!(report.http_version, None);
    let certificate = report.certificate.as_ref().unwrap();
    assert!(certificate.valid);
    assert_eq!(certificate.chain.len(), 1, "the leaf below the trusted test root");
    assert!(report.earliest_expiry.is_some(), "expiry notices work for tls checks too");

    let expired = banner_server(b"", Some(ca.server(&["app.test"], (2021, 1, 1)))).await;
    let config = checking(CheckConfig::Tls(TlsCheck { host: "app.test".into(), port: expired.port() }));
    let report = run(&prober(loopback_allowed(), Some(&ca)), &config).await;
    assert_failed(&report, ErrorKind::Tls, "certificate expired");
    let insecure = DomainConfig { tls_verify: false, ..config };
    let report = run(&prober(loopback_allowed(), Some(&ca)), &insecure).await;
    assert!(report.ok, "insecure mode records but accepts: {report:#?}");
    assert!(!report.certificate.unwrap().valid);
}

// ---------------------------------------------------------------------------------------------
// SSRF

#[tokio::test]
async fn every_check_type_is_refused_by_the_guard() {
    let guarded = prober(TargetPolicy::default(), None);
    let Some(tripwire) = Tripwire::bind("127.0.0.1:0") else { return };
    let port = tripwire.port();
    for config in [
        tcp("127.0.0.1", port, Some("x"), Some("y")),
        tcp("app.test", port, None, None),
        checking(CheckConfig::Tls(TlsCheck { host: "app.test".into(), port })),
        checking(CheckConfig::Tls(TlsCheck { host: "127.0.0.1".into(), port })),
    ] {
        let report = run(&guarded, &config).await;
        assert_failed(&report, ErrorKind::BlockedTarget, "127.0.0.1 is in a loopback range");
    }
    let report = run(&guarded, &tcp("internal.test", 25, None, None)).await;
    assert_failed(&report, ErrorKind::BlockedTarget, "10.0.0.1 is in a private range");
    tripwire.assert_untouched();

    let server = DnsServer::start(&[("app.test", addrs(&["192.0.2.1"]))]).await;
    let config = dns("app.test", DnsRecordType::A, vec![server.addr], &[]);
    let report = run(&guarded, &config).await;
    assert_failed(&report, ErrorKind::BlockedTarget, "name server refused: 127.0.0.1 is in a loopback range");
    assert!(server.asked().is_empty(), "a refused server is never asked");
}

// ---------------------------------------------------------------------------------------------
// dns

fn dns(name: &str, record_type: DnsRecordType, servers: Vec<SocketAddr>, expect: &[&str]) -> DomainConfig {
    checking(CheckConfig::Dns(DnsCheck {
        name: name.into(),
        record_type,
        servers,
        expect: expect.iter().map(|e| record_type.normalize(e)).collect(),
        dnssec: false,
    }))
}

#[tokio::test]
async fn dns_checks_compare_the_answer_with_what_is_expected() {
    let mx = |pref, name: &str| RData::MX(MX::new(pref, Name::from_ascii(name).unwrap()));
    let server = DnsServer::start(&[
        ("www.app.test", addrs(&["192.0.2.1", "192.0.2.2"])),
        ("app.test", Behaviour::Records(vec![mx(10, "mx1.app.test."), mx(20, "mx2.app.test.")])),
        (
            "txt.app.test",
            Behaviour::Records(vec![RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()]))]),
        ),
        ("empty.app.test", Behaviour::NoRecords),
    ])
    .await;
    let prober = prober(loopback_allowed(), None);
    let at = vec![server.addr];

    let report = run(&prober, &dns("www.app.test", DnsRecordType::A, at.clone(), &["192.0.2.2"])).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.resolved_addrs, crate::dns_server::ips(&["192.0.2.1", "192.0.2.2"]));
    assert!(report.timings.dns_ms.is_some());
    assert_eq!(report.dns.as_ref().unwrap().name, "www.app.test.");
    assert_eq!(report.dns.as_ref().unwrap().ttl_s.map(|t| t <= 300), Some(true));
    assert_eq!(server.count("www.app.test", hickory_resolver::proto::rr::RecordType::A), 1);

    let report = run(&prober, &dns("www.app.test", DnsRecordType::A, at.clone(), &["192.0.2.9"])).await;
    assert_failed(
        &report,
        ErrorKind::DnsAnswerMismatch,
        r#"the A answer for www.app.test lacks "192.0.2.9"; it holds "192.0.2.1", "192.0.2.2""#,
    );

    let report = run(&prober, &dns("app.test", DnsRecordType::Mx, at.clone(), &["20 MX2.app.test."])).await;
    assert!(report.ok, "{report:#?}");
    let report = run(&prober, &dns("txt.app.test", DnsRecordType::Txt, at.clone(), &["v=spf1 -all"])).await;
    assert!(report.ok, "{report:#?}");

    let report = run(&prober, &dns("empty.app.test", DnsRecordType::A, at.clone(), &[])).await;
    assert_eq!(report.error, Some(ErrorKind::Dns), "{report:#?}");
    assert_eq!(report.dns_error, Some(DnsErrorReason::NoRecords));
    let report = run(&prober, &dns("absent.app.test", DnsRecordType::A, at.clone(), &[])).await;
    assert_eq!(report.dns_error, Some(DnsErrorReason::Nxdomain), "{report:#?}");
    let report = run(&prober, &dns("www.app.test", DnsRecordType::Mx, at, &[])).await;
    assert!(!report.ok, "an A-only name has no MX answer: {report:#?}");
}

#[tokio::test]
async fn dnssec_refuses_an_unsigned_answer_that_passes_without_it() {
    let server = DnsServer::start(&[("www.app.test", addrs(&["192.0.2.1"]))]).await;
    let prober = prober(loopback_allowed(), None);
    let plain = dns("www.app.test", DnsRecordType::A, vec![server.addr], &["192.0.2.1"]);
    assert!(run(&prober, &plain).await.ok);
    let mut validated = plain.clone();
    if let CheckConfig::Dns(check) = &mut validated.check {
        check.dnssec = true;
    }
    let report = run(&prober, &validated).await;
    // The local server has no DNSKEY or DS records: no chain from the root trust anchor can be
    // built for the unsigned answer, so the validator calls it bogus.
    assert_failed(&report, ErrorKind::DnssecInvalid, "the answer for www.app.test A is bogus by dnssec");
}

/// A dns check with `dnssec` of `name`'s A record at `server`, expecting `expect`.
fn validated(name: &str, server: &DnsServer, expect: &[&str]) -> DomainConfig {
    let mut config = dns(name, DnsRecordType::A, vec![server.addr], expect);
    if let CheckConfig::Dns(check) = &mut config.check {
        check.dnssec = true;
    }
    config
}

/// A prober trusting the anchors of `lines` (presentation format), loaded from a file as the
/// agent loads `dnssec_trust_anchors`.
fn anchored_prober(lines: &[String]) -> Prober {
    let dir = std::env::temp_dir().join(format!("crosscheck-anchors-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("anchors.key");
    std::fs::write(&path, format!("; test anchors\n{}\n", lines.join("\n"))).unwrap();
    let anchors = TrustAnchorSet::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let settings = ProbeSettings { dnssec_anchors: Arc::new(anchors), ..settings(loopback_allowed()) };
    Prober::with_resolver(settings, Arc::new(resolver())).unwrap()
}

/// A server with the zone `signed.test` signed by `keys`, answering `www` and `plain` below it.
async fn signed_server(keys: Keys) -> (DnsServer, ZoneKeys) {
    let server = DnsServer::start(&[
        ("www.signed.test", addrs(&["192.0.2.10", "192.0.2.11"])),
        ("plain.signed.test", addrs(&["192.0.2.20"])),
    ])
    .await;
    let zone = server.sign("signed.test", keys);
    (server, zone)
}

fn dnssec_of(report: &ProbeReport) -> Option<DnssecProof> {
    report.dns.as_ref().and_then(|dns| dns.dnssec)
}

#[tokio::test]
async fn dnssec_proves_a_signed_answer_secure_from_a_configured_trust_anchor() {
    let (server, zone) = signed_server(Keys::Combined).await;
    let check = validated("www.signed.test", &server, &["192.0.2.11"]);

    // From the root's keys alone there is no chain to the local zone.
    let report = run(&prober(loopback_allowed(), None), &check).await;
    assert_failed(&report, ErrorKind::DnssecInvalid, "the answer for www.signed.test A is bogus by dnssec");
    assert_eq!(dnssec_of(&report), Some(DnssecProof::Bogus));

    let report = run(&anchored_prober(&[zone.dnskey_line()]), &check).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(dnssec_of(&report), Some(DnssecProof::Secure));
    assert_eq!(report.resolved_addrs, crate::dns_server::ips(&["192.0.2.10", "192.0.2.11"]));
    let asked = server.asked();
    assert!(
        asked.iter().any(|a| a.name == "signed.test." && a.kind == RecordType::DNSKEY),
        "the key set is asked: {asked:?}"
    );
    // The fact is in the report, as `probe-agent check` prints it.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["dns"]["dnssec"], "secure");

    // An anchor vouches only for names at or below its zone: the same key anchored for
    // another zone proves nothing here.
    let misplaced = zone.dnskey_line().replacen("signed.test.", "elsewhere.test.", 1);
    let report = run(&anchored_prober(&[misplaced]), &check).await;
    assert_failed(&report, ErrorKind::DnssecInvalid, "the answer for www.signed.test A is bogus by dnssec");
}

#[tokio::test]
async fn dnssec_proves_a_zone_signing_key_from_an_anchored_key_signing_key_or_its_ds() {
    let (server, zone) = signed_server(Keys::Split).await;
    let check = validated("www.signed.test", &server, &["192.0.2.10"]);
    for anchor in [zone.dnskey_line(), zone.ds_line()] {
        let report = run(&anchored_prober(std::slice::from_ref(&anchor)), &check).await;
        assert!(report.ok, "{anchor}: {report:#?}");
        assert_eq!(dnssec_of(&report), Some(DnssecProof::Secure), "{anchor}");
    }

    // A key set whose own signature is spoiled proves nothing: the DS anchor adds no key.
    server.fault("signed.test", Fault::Tampered);
    let report = run(&anchored_prober(&[zone.ds_line()]), &check).await;
    assert_failed(&report, ErrorKind::DnssecInvalid, "the answer for www.signed.test A is bogus by dnssec");
    let detail = report.error_detail.as_deref().unwrap();
    assert!(
        detail.contains(
            "the DNSKEY set of signed.test. has a signature by its anchored key that does not verify"
        ),
        "{detail}"
    );
}

#[tokio::test]
async fn dnssec_refuses_tampered_expired_and_missing_signatures_under_an_anchor() {
    let (server, zone) = signed_server(Keys::Combined).await;
    let prober = anchored_prober(&[zone.ds_line()]);
    server.set("bad.signed.test", addrs(&["192.0.2.40"]));
    server.fault("bad.signed.test", Fault::Tampered);
    server.set("old.signed.test", addrs(&["192.0.2.41"]));
    server.fault("old.signed.test", Fault::Expired);
    server.fault("plain.signed.test", Fault::Unsigned);
    for name in ["bad.signed.test", "old.signed.test", "plain.signed.test"] {
        let report = run(&prober, &validated(name, &server, &[])).await;
        assert_failed(
            &report,
            ErrorKind::DnssecInvalid,
            &format!("the answer for {name} A is bogus by dnssec"),
        );
        assert_eq!(dnssec_of(&report), Some(DnssecProof::Bogus), "{name}");
        assert!(report.resolved_addrs.len() == 1, "the answer arrived, it just does not validate");
    }
    // The same names pass without validation, and a good name passes with it.
    let mut plain = validated("bad.signed.test", &server, &["192.0.2.40"]);
    if let CheckConfig::Dns(check) = &mut plain.check {
        check.dnssec = false;
    }
    let report = run(&prober, &plain).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(dnssec_of(&report), None, "not validated, no proof");
    assert!(run(&prober, &validated("www.signed.test", &server, &[])).await.ok);
}

// ---------------------------------------------------------------------------------------------
// JSON assertions

/// An HTTP server answering every request with `body` as `content_type`.
async fn json_server(body: String, content_type: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = tcp.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

fn asserting(url: String, path: &str, op: JsonOp, value: Option<serde_json::Value>) -> DomainConfig {
    DomainConfig { json_check: Some(JsonAssertion { path: path.into(), op, value }), ..config(url) }
}

#[tokio::test]
async fn json_assertions_on_the_body() {
    use serde_json::json;
    let prober = prober(loopback_allowed(), None);
    let health = json_server(
        r#"{"status":"ok","queue":{"depth":3},"regions":["ams","iad"]}"#.into(),
        "application/json",
    )
    .await;
    let url = format!("http://app.test:{}/health", health.port());
    for (path, op, value) in [
        ("$.status", JsonOp::Eq, Some(json!("ok"))),
        ("$.queue.depth", JsonOp::Lt, Some(json!(10))),
        ("$.regions", JsonOp::Contains, Some(json!("iad"))),
        ("$.queue", JsonOp::Exists, None),
    ] {
        let report = run(&prober, &asserting(url.clone(), path, op, value)).await;
        assert!(report.ok, "{path}: {report:#?}");
        assert!(report.body_bytes > 0);
    }
    let report = run(&prober, &asserting(url.clone(), "$.status", JsonOp::Eq, Some(json!("down")))).await;
    assert_failed(&report, ErrorKind::JsonAssertionFailed, r#"$.status is "ok", expected == "down""#);
    let report = run(&prober, &asserting(url.clone(), "$.missing", JsonOp::Exists, None)).await;
    assert_failed(&report, ErrorKind::JsonAssertionFailed, "$.missing selects nothing");

    let html = json_server("<html>maintenance</html>".into(), "text/html").await;
    let url = format!("http://app.test:{}/", html.port());
    let report = run(&prober, &asserting(url, "$.status", JsonOp::Eq, Some(json!("ok")))).await;
    assert_failed(&report, ErrorKind::JsonInvalid, "the body is not json");

    let huge = json_server(format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096)), "application/json").await;
    let small = ProbeSettings { max_body_bytes: 1024, ..settings(loopback_allowed()) };
    let limited = Prober::with_resolver(small, Arc::new(resolver())).unwrap();
    let url = format!("http://app.test:{}/", huge.port());
    let report = run(&limited, &asserting(url, "$.pad", JsonOp::Exists, None)).await;
    assert_failed(&report, ErrorKind::BodyTooLarge, "1024 bytes");

    // The ordinary http path is untouched by the other types.
    let app = app_server(None).await;
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(run(&prober, &config(format!("http://{ip}:{}/", app.port()))).await.ok);
}
