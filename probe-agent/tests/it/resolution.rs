//! Name resolution and connecting, with the agent's real resolver against the in-process DNS
//! server ([`crate::dns_server`]) and targets on 127.0.0.1 and [::1]: absolute names whatever
//! the search list says, DNS failures named by reason (and SERVFAIL retried), the answer's TTL
//! and CNAME chain, and Happy Eyeballs over every address the guard allows.
//!
//! The dual-stack cases need IPv6 loopback; without it they fail saying so.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use probe_agent::probe::{
    AttemptOutcome, DnsErrorReason, ErrorKind, HickoryResolver, ProbeReport, ProbeSettings, Prober,
    ResolverSettings,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use shared::netguard::TargetPolicy;
use shared::DomainConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::dns_server::{addrs, ips, Behaviour, DnsServer};
use crate::probe::{app_server, assert_failed, config, loopback_allowed, probe, settings, TestCa};

fn resolver_settings(dns: &DnsServer) -> ResolverSettings {
    ResolverSettings { servers: vec![dns.addr], query_timeout: Duration::from_secs(2), attempts: 2 }
}

/// A prober resolving through `dns`, loopback (both families) allowed.
fn prober(dns: &DnsServer) -> Prober {
    prober_with(dns, ProbeSettings::default())
}

/// Like [`prober`], with `base`'s limits and resolver limits (its servers replaced by `dns`).
fn prober_with(dns: &DnsServer, base: ProbeSettings) -> Prober {
    let resolver = ResolverSettings { servers: vec![dns.addr], ..base.resolver.clone() };
    Prober::new(ProbeSettings { resolver, ..ProbeSettings { policy: loopback_allowed(), ..base } }).unwrap()
}

/// Listeners on one free port of both addresses.
async fn same_port(first: &str, second: &str) -> (TcpListener, TcpListener) {
    for _ in 0..50 {
        let a = bind(&format!("{first}:0")).await;
        let port = a.local_addr().unwrap().port();
        match TcpListener::bind(format!("{second}:{port}")).await {
            Ok(b) => return (a, b),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            // Not a busy port: the address itself is unusable (say so, loudly).
            Err(_) => drop(bind(&format!("{second}:{port}")).await),
        }
    }
    panic!("no port free on both {first} and {second}");
}

/// Binds `addr`, failing loudly when it is an IPv6 loopback address this machine lacks.
async fn bind(addr: &str) -> TcpListener {
    TcpListener::bind(addr).await.unwrap_or_else(|e| {
        if addr.starts_with("[::1]") {
            panic!("IPv6 loopback [::1] is unavailable on this machine ({e}); the dual-stack probe tests need it")
        }
        panic!("cannot bind {addr}: {e}")
    })
}

/// The (address, outcome) of each attempt.
fn attempts(report: &ProbeReport) -> Vec<(IpAddr, AttemptOutcome)> {
    report.connect_attempts.iter().map(|a| (a.ip, a.outcome)).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Absolute names

/// With `search corp.test` and `ndots:5` (a Kubernetes pod's usual resolver configuration) a
/// wildcard `*.corp.test` captures `www.target.test` for a resolver that honours the search
/// list; the agent's resolver, built from the same configuration, asks only for the absolute
/// name.
#[tokio::test]
async fn search_domains_never_capture_a_monitored_name() {
    let port = crate::local_target().await;
    let dns = DnsServer::start(&[
        ("*.corp.test", addrs(&["127.0.0.3"])),
        ("www.target.test", addrs(&["127.0.0.1"])),
    ])
    .await;
    let (parsed, options) = hickory_resolver::system_conf::parse_resolv_conf(
        "nameserver 127.0.0.1\nsearch corp.test\noptions ndots:5\n",
    )
    .unwrap();
    assert_eq!(options.ndots, 5);
    let system = ResolverConfig::from_parts(
        parsed.domain().cloned(),
        parsed.search().to_vec(),
        vec![NameServerConfig::new(dns.addr, Protocol::Udp)],
    );

    // The trap is real: a resolver following the search list lands in the wildcard.
    let naive = TokioResolver::builder_with_config(system.clone(), TokioConnectionProvider::default())
        .with_options(options)
        .build();
    let captured: Vec<IpAddr> = naive.lookup_ip("www.target.test").await.unwrap().iter().collect();
    assert_eq!(captured, ips(&["127.0.0.3"]));
    assert!(dns.names_asked().contains(&"www.target.test.corp.test.".to_owned()), "{:?}", dns.asked());
    let before = dns.asked().len();

    let resolver = HickoryResolver::from_system(&system, ResolverSettings::default()).unwrap();
    let prober = Prober::with_resolver(settings(loopback_allowed()), Arc::new(resolver)).unwrap();
    for host in ["www.target.test", "www.target.test.", "WWW.Target.TEST"] {
        let report = probe(&prober, &config(format!("http://{host}:{port}/"))).await;
        assert!(report.ok, "{host}: {report:#?}");
        assert_eq!(report.resolved_ip, Some(ip("127.0.0.1")), "{host}");
        assert_eq!(report.resolved_addrs, ips(&["127.0.0.1"]), "{host}");
        assert_eq!(report.dns.as_ref().map(|d| d.name.as_str()), Some("www.target.test."), "{host}");
    }
    let asked: Vec<String> = dns.asked()[before..].iter().map(|a| a.name.clone()).collect();
    // The first probe asked (A and AAAA); the others were answered from the cache.
    assert!(!asked.is_empty(), "the agent's resolver asked nothing");
    assert!(asked.iter().all(|name| name == "www.target.test."), "{asked:?}");
}

/// Serves one certificate and records the server name (SNI) of every handshake.
#[derive(Debug)]
struct SniLog {
    key: Arc<CertifiedKey>,
    seen: Mutex<Vec<Option<String>>>,
}

impl ResolvesServerCert for SniLog {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.seen.lock().unwrap().push(hello.server_name().map(str::to_owned));
        Some(self.key.clone())
    }
}

/// F20 (b): an absolute name's trailing dot is not part of the TLS server name: the SNI sent
/// and the certificate check use `www.target.test` (RFC 6066 forbids the dot); letter case
/// does not matter either.
#[tokio::test]
async fn https_to_an_absolute_name_sends_and_checks_the_name_without_the_dot() {
    let ca = TestCa::new("Crosscheck Test CA");
    let (chain, key) = ca.chain(&["www.target.test"], (2099, 1, 1));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider.key_provider.load_private_key(PrivateKeyDer::from(key)).unwrap();
    let log = Arc::new(SniLog { key: Arc::new(CertifiedKey::new(chain, signing)), seen: Mutex::default() });
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(log.clone());
    let addr = app_server(Some(TlsAcceptor::from(Arc::new(server)))).await;
    let dns = DnsServer::start(&[("www.target.test", addrs(&["127.0.0.1"]))]).await;
    let prober =
        prober_with(&dns, ProbeSettings { extra_roots: vec![ca.cert.clone()], ..ProbeSettings::default() });
    let hosts = ["www.target.test", "www.target.test.", "WWW.Target.TEST."];
    for host in hosts {
        let report = probe(&prober, &config(format!("https://{host}:{}/", addr.port()))).await;
        assert!(report.ok, "{host}: {report:#?}");
        let cert = report.certificate.as_ref().expect("certificate recorded");
        assert!(cert.valid, "{host}: {cert:?}");
    }
    let seen = log.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![Some("www.target.test".to_owned()); hosts.len()]);
}

// ---------------------------------------------------------------------------------------------
// DNS failures

#[tokio::test]
async fn dns_failures_are_named_by_reason() {
    let dns = DnsServer::start(&[
        ("nx.test", Behaviour::NxDomain),
        ("sf.test", Behaviour::ServFail),
        ("refused.test", Behaviour::Refused),
        ("empty.test", Behaviour::NoRecords),
    ])
    .await;
    let prober = prober(&dns);
    let cases = [
        ("nx.test", DnsErrorReason::Nxdomain, "nxdomain (the name does not exist)", 1),
        ("sf.test", DnsErrorReason::Servfail, "servfail (the name server failed) after 2 attempts", 2),
        ("refused.test", DnsErrorReason::Refused, "refused (the name server refused the query)", 1),
        ("empty.test", DnsErrorReason::NoRecords, "no_records (the name has no a or aaaa record)", 1),
        ("unknown.test", DnsErrorReason::Nxdomain, "nxdomain", 1),
    ];
    for (name, reason, text, lookups) in cases {
        let report = probe(&prober, &config(format!("http://{name}/"))).await;
        assert_failed(&report, ErrorKind::Dns, &format!("cannot resolve {name}: {text}"));
        assert_eq!(report.dns_error, Some(reason), "{name}");
        let dns_info = report.dns.as_ref().expect("dns recorded");
        assert_eq!(
            (dns_info.name.as_str(), dns_info.attempts),
            (format!("{name}.").as_str(), lookups),
            "{name}"
        );
        assert!(report.timings.dns_ms.is_some(), "{name}");
        assert_eq!(report.timings.connect_ms, None, "{name}");
        assert!(report.connect_attempts.is_empty() && report.resolved_ip.is_none(), "{name}");
        // One query per family and lookup: a SERVFAIL is asked again, nothing else is.
        for kind in [RecordType::A, RecordType::AAAA] {
            assert_eq!(dns.count(name, kind), lookups as usize, "{name} {kind}: {:?}", dns.asked());
        }
    }
}

#[tokio::test]
async fn a_servfail_once_is_retried_and_the_probe_is_up() {
    let port = crate::local_target().await;
    let dns = DnsServer::start(&[("flaky.test", Behaviour::ServFailOnce(ips(&["127.0.0.1"])))]).await;
    let report = probe(&prober(&dns), &config(format!("http://flaky.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.dns.as_ref().map(|d| d.attempts), Some(2));
    assert_eq!(report.resolved_ip, Some(ip("127.0.0.1")));
    assert_eq!(dns.count("flaky.test", RecordType::A), 2);
}

/// F21: a resolver answering after 8 s with a 300 ms DNS limit fails the probe as `dns`
/// (reason `timeout`) at the limit, without connecting; the probe is not a `timeout`.
#[tokio::test]
async fn a_slow_resolver_is_a_dns_timeout_at_the_dns_limit() {
    let dns =
        DnsServer::start(&[("slow.test", Behaviour::Slow(Duration::from_secs(8), ips(&["127.0.0.1"])))])
            .await;
    let limited = ProbeSettings { dns_timeout: Duration::from_millis(300), ..ProbeSettings::default() };
    let report = probe(
        &prober_with(&dns, limited),
        &DomainConfig { timeout_ms: 10_000, ..config("http://slow.test/") },
    )
    .await;
    assert_failed(&report, ErrorKind::Dns, "cannot resolve slow.test: timeout");
    assert_failed(&report, ErrorKind::Dns, "dns resolution timed out after 300 ms");
    assert_eq!(report.dns_error, Some(DnsErrorReason::Timeout));
    let dns_ms = report.timings.dns_ms.unwrap();
    assert!((300.0..3000.0).contains(&dns_ms), "dns took {dns_ms} ms");
    assert!(report.timings.total_ms < 3000.0, "{:?}", report.timings);
    assert_eq!(report.timings.connect_ms, None);
    assert!(report.connect_attempts.is_empty());

    // With a shorter limit per lookup, the timeout is asked again within the DNS limit.
    let per_lookup = ProbeSettings {
        dns_timeout: Duration::from_secs(5),
        resolver: ResolverSettings {
            query_timeout: Duration::from_millis(200),
            attempts: 2,
            servers: Vec::new(),
        },
        ..ProbeSettings::default()
    };
    let report = probe(&prober_with(&dns, per_lookup), &config("http://slow.test/")).await;
    assert_failed(&report, ErrorKind::Dns, "timeout (no answer in time) after 2 attempts");
    assert_eq!(report.dns.as_ref().map(|d| d.attempts), Some(2));
    let dns_ms = report.timings.dns_ms.unwrap();
    assert!((400.0..4000.0).contains(&dns_ms), "dns took {dns_ms} ms");

    // A probe timeout shorter than the DNS limit binds, and it is still the resolver's failure.
    let report = probe(&prober(&dns), &DomainConfig { timeout_ms: 300, ..config("http://slow.test/") }).await;
    assert_failed(&report, ErrorKind::Dns, "total timeout of 300 ms exceeded during dns resolution");
    assert_eq!(report.dns_error, Some(DnsErrorReason::Timeout));
}

// ---------------------------------------------------------------------------------------------
// Answers

#[tokio::test]
async fn the_answer_ttl_and_cname_chain_are_recorded() {
    let port = crate::local_target().await;
    let dns = DnsServer::start(&[
        ("ttl.test", Behaviour::Addrs { addrs: ips(&["127.0.0.1"]), ttl: 300 }),
        ("cname.test", Behaviour::Cname("c2.test".into())),
        ("c2.test", Behaviour::Cname("c3.test".into())),
        ("c3.test", Behaviour::Addrs { addrs: ips(&["127.0.0.1"]), ttl: 120 }),
    ])
    .await;
    let prober = prober(&dns);
    let report = probe(&prober, &config(format!("http://ttl.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    let ttl = report.dns.as_ref().and_then(|d| d.ttl_s).expect("ttl recorded");
    assert!((290..=300).contains(&ttl), "ttl {ttl}");
    // The second probe is answered from the cache, with what is left of the TTL.
    let again = probe(&prober, &config(format!("http://ttl.test:{port}/"))).await;
    assert!(again.dns.as_ref().and_then(|d| d.ttl_s).is_some_and(|t| t <= ttl));
    assert_eq!(dns.count("ttl.test", RecordType::A), 1);

    let report = probe(&prober, &config(format!("http://cname.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.resolved_ip, Some(ip("127.0.0.1")));
    let info = report.dns.as_ref().unwrap();
    assert_eq!(info.cnames, ["c2.test.", "c3.test."]);
    assert!(info.ttl_s.is_some_and(|t| t <= 120), "{info:?}");
}

/// F21: a TTL of 0 is not cached: the next probe asks again and uses the new address.
#[tokio::test]
async fn a_zero_ttl_answer_is_asked_again_by_the_next_probe() {
    let (one, two) = same_port("127.0.0.1", "127.0.0.2").await;
    let port = one.local_addr().unwrap().port();
    crate::serve(one);
    crate::serve(two);
    let dns =
        DnsServer::start(&[("ttl0.test", Behaviour::Addrs { addrs: ips(&["127.0.0.1"]), ttl: 0 })]).await;
    let prober = prober(&dns);
    let url = format!("http://ttl0.test:{port}/");
    let report = probe(&prober, &config(url.as_str())).await;
    assert_eq!((report.ok, report.resolved_ip), (true, Some(ip("127.0.0.1"))), "{report:#?}");
    assert_eq!(report.dns.as_ref().and_then(|d| d.ttl_s), Some(0));

    dns.set("ttl0.test", Behaviour::Addrs { addrs: ips(&["127.0.0.2"]), ttl: 0 });
    let report = probe(&prober, &config(url.as_str())).await;
    assert_eq!((report.ok, report.resolved_ip), (true, Some(ip("127.0.0.2"))), "{report:#?}");
    assert_eq!(dns.count("ttl0.test", RecordType::A), 2);
}

// ---------------------------------------------------------------------------------------------
// Several addresses (Happy Eyeballs)

#[tokio::test]
async fn single_family_names_are_reached_on_their_family() {
    let v6 = bind("[::1]:0").await;
    let v6_port = v6.local_addr().unwrap().port();
    crate::serve(v6);
    let v4_port = crate::local_target().await;
    let dns = DnsServer::start(&[("v6.test", addrs(&["::1"])), ("v4.test", addrs(&["127.0.0.1"]))]).await;
    let prober = prober(&dns);
    for (url, want) in [
        (format!("http://v6.test:{v6_port}/"), ip("::1")),
        (format!("http://v4.test:{v4_port}/"), ip("127.0.0.1")),
    ] {
        let report = probe(&prober, &config(url.as_str())).await;
        assert!(report.ok, "{url}: {report:#?}");
        assert_eq!(report.resolved_ip, Some(want), "{url}");
        assert_eq!(report.resolved_addrs, vec![want], "{url}");
        assert_eq!(attempts(&report), [(want, AttemptOutcome::Connected)], "{url}");
    }
}

/// The case found: AAAA `::1` and A `127.0.0.1`, served on IPv6 only, was down with `connect`
/// because only the lowest address was tried. IPv6 goes first.
#[tokio::test]
async fn a_dual_stack_name_served_on_ipv6_only_is_up() {
    let (v6, v4) = same_port("[::1]", "127.0.0.1").await;
    let port = v6.local_addr().unwrap().port();
    crate::serve(v6);
    drop(v4);
    let dns = DnsServer::start(&[("dual.test", addrs(&["127.0.0.1", "::1"]))]).await;
    let report = probe(&prober(&dns), &config(format!("http://dual.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.resolved_ip, Some(ip("::1")));
    assert_eq!(report.resolved_addrs, ips(&["127.0.0.1", "::1"]));
    assert_eq!(attempts(&report), [(ip("::1"), AttemptOutcome::Connected)]);
}

/// F18: the IPv6 address refuses, IPv4 serves: up through IPv4, with the failed IPv6 attempt
/// on record.
#[tokio::test]
async fn a_dual_stack_name_served_on_ipv4_only_falls_back() {
    let (v4, v6) = same_port("127.0.0.1", "[::1]").await;
    let port = v4.local_addr().unwrap().port();
    crate::serve(v4);
    drop(v6);
    let dns = DnsServer::start(&[("dual.test", addrs(&["127.0.0.1", "::1"]))]).await;
    let report = probe(&prober(&dns), &config(format!("http://dual.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.resolved_ip, Some(ip("127.0.0.1")));
    assert_eq!(
        attempts(&report),
        [(ip("::1"), AttemptOutcome::Refused), (ip("127.0.0.1"), AttemptOutcome::Connected)]
    );
    let refused = &report.connect_attempts[0];
    assert!(refused.detail.as_deref().is_some_and(|d| d.contains("refused")), "{refused:?}");
    assert!(refused.took_ms.is_some() && report.connect_attempts[1].started_ms.is_some());
}

/// F19: two A records, the first dead, the answer order rotating per query: every probe is
/// up through the live address, and the dead one shows in the attempts whenever it came first.
#[tokio::test]
async fn a_dead_first_address_never_fails_the_probe() {
    let (live, dead) = same_port("127.0.0.1", "127.0.0.2").await;
    let port = live.local_addr().unwrap().port();
    crate::serve(live);
    drop(dead);
    let dns = DnsServer::start(&[(
        "multi.test",
        Behaviour::Rotating { addrs: ips(&["127.0.0.2", "127.0.0.1"]), ttl: 0 },
    )])
    .await;
    let prober = prober(&dns);
    let mut fell_back = 0;
    for round in 0..20 {
        let report = probe(&prober, &config(format!("http://multi.test:{port}/"))).await;
        assert!(report.ok, "round {round}: {report:#?}");
        assert_eq!(report.resolved_ip, Some(ip("127.0.0.1")), "round {round}");
        match attempts(&report).as_slice() {
            [(first, AttemptOutcome::Connected)] if *first == ip("127.0.0.1") => {}
            [(first, AttemptOutcome::Refused), (second, AttemptOutcome::Connected)]
                if *first == ip("127.0.0.2") && *second == ip("127.0.0.1") =>
            {
                fell_back += 1
            }
            other => panic!("round {round}: unexpected attempts {other:?}"),
        }
    }
    // The first answer lists the dead address first; later ones rotate.
    assert!(fell_back >= 1, "the dead address was never tried first");
    assert_eq!(dns.count("multi.test", RecordType::A), 20);
}

#[tokio::test]
async fn every_address_dead_is_a_connect_failure_naming_each() {
    let (v4, v6) = same_port("127.0.0.2", "[::1]").await;
    let port = v4.local_addr().unwrap().port();
    drop((v4, v6));
    let dns = DnsServer::start(&[("dead.test", addrs(&["127.0.0.2", "::1"]))]).await;
    let report = probe(&prober(&dns), &config(format!("http://dead.test:{port}/"))).await;
    assert_failed(
        &report,
        ErrorKind::Connect,
        &format!("connect to [::1]:{port} failed: connection refused"),
    );
    assert_failed(
        &report,
        ErrorKind::Connect,
        &format!("connect to 127.0.0.2:{port} failed: connection refused"),
    );
    assert_eq!(
        attempts(&report),
        [(ip("::1"), AttemptOutcome::Refused), (ip("127.0.0.2"), AttemptOutcome::Refused)]
    );
    // With no connection, the address reported is the first one tried.
    assert_eq!(report.resolved_ip, Some(ip("::1")));
}

/// Only addresses the guard allows are tried; a refused one is on record as blocked and never
/// connected to.
#[tokio::test]
async fn blocked_addresses_are_skipped_and_never_connected_to() {
    let (v4, v6) = same_port("127.0.0.1", "[::1]").await;
    let port = v4.local_addr().unwrap().port();
    crate::serve(v4);
    let untouched = v6.into_std().unwrap();
    let dns = DnsServer::start(&[("dual.test", addrs(&["127.0.0.1", "::1", "10.0.0.1"]))]).await;
    let only_v4 = ProbeSettings {
        resolver: resolver_settings(&dns),
        ..settings(TargetPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]))
    };
    let report = probe(&Prober::new(only_v4).unwrap(), &config(format!("http://dual.test:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.resolved_ip, Some(ip("127.0.0.1")));
    assert_eq!(
        attempts(&report),
        [
            (ip("::1"), AttemptOutcome::Blocked),
            (ip("10.0.0.1"), AttemptOutcome::Blocked),
            (ip("127.0.0.1"), AttemptOutcome::Connected)
        ]
    );
    assert_eq!(report.connect_attempts[0].detail.as_deref(), Some("::1 is in a loopback range"));
    assert_eq!(report.connect_attempts[0].started_ms, None);
    match untouched.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("[::1]:{port} was connected to: {other:?}"),
    }
}

/// An address literal skips DNS and goes through the same connect phase.
#[tokio::test]
async fn an_address_literal_is_one_attempt() {
    let port = crate::local_target().await;
    let dns = DnsServer::start(&[]).await;
    let report = probe(&prober(&dns), &config(format!("http://127.0.0.1:{port}/"))).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(attempts(&report), [(ip("127.0.0.1"), AttemptOutcome::Connected)]);
    assert!(report.dns.is_none() && report.timings.dns_ms.is_none());
    assert!(dns.asked().is_empty());
}
