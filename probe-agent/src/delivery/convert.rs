//! From the agent's [`ProbeResult`] to the wire's [`proto::ProbeResult`]: the domain id as 16
//! bytes, the start time in microseconds since the epoch, phase durations in microseconds
//! (absent when the phase did not happen), the error kind as the protocol's enum.

use shared::proto;

use crate::probe::HttpProtocol as Protocol;
use crate::probe::{AttemptOutcome, CertInfo, ConnectAttempt, DnsErrorReason, ErrorKind};
use crate::results::{ProbeResult, Trigger};

/// The wire form of one result.
pub fn to_proto(result: &ProbeResult) -> proto::ProbeResult {
    let report = &result.report;
    let started_at = result.planned_at.timestamp_micros().saturating_add(ms_to_us_i64(result.lag_ms));
    proto::ProbeResult {
        domain_id: result.domain_id.0.as_bytes().to_vec(),
        started_at_unix_us: started_at,
        config_version: result.config_version,
        trigger: match result.trigger {
            Trigger::Scheduled => proto::Trigger::Scheduled,
            Trigger::OnDemand => proto::Trigger::OnDemand,
        } as i32,
        ok: report.ok,
        error: report.error.map_or(proto::ErrorKind::None, ErrorKind::to_proto) as i32,
        error_detail: report.error_detail.clone().unwrap_or_default(),
        status_code: report.status.map_or(0, u32::from),
        dns_us: report.timings.dns_ms.map(ms_to_us),
        connect_us: report.timings.connect_ms.map(ms_to_us),
        tls_us: report.timings.tls_ms.map(ms_to_us),
        ttfb_us: report.timings.ttfb_ms.map(ms_to_us),
        total_us: ms_to_us(report.timings.total_ms),
        resolved_ip: report.resolved_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        keyword_matched: report.keyword_matched,
        body_bytes: report.body_bytes,
        // Without a redirect the first HTTPS hop is the monitored URL's host: its name is not
        // sent again.
        certificate: report.certificate.as_ref().map(|cert| certificate(cert, !report.redirects.is_empty())),
        redirect_certificates: report
            .redirect_certificates
            .iter()
            .map(|cert| proto::Certificate { sans: Vec::new(), ..certificate(cert, true) })
            .collect(),
        dns_error: report.dns_error.map_or(proto::DnsError::Unspecified, DnsErrorReason::to_proto) as i32,
        dns_ttl_s: report.dns.as_ref().and_then(|dns| dns.ttl_s),
        // Left out when they say nothing beyond `resolved_ip` (the common case), to keep
        // results small.
        resolved_addrs: if report.resolved_addrs.len() > 1 || report.resolved_ip.is_none() {
            report.resolved_addrs.iter().map(ToString::to_string).collect()
        } else {
            Vec::new()
        },
        connect_attempts: match report.connect_attempts.as_slice() {
            [only] if only.outcome == AttemptOutcome::Connected => Vec::new(),
            attempts => attempts.iter().map(connect_attempt).collect(),
        },
        dnssec: report
            .dns
            .as_ref()
            .and_then(|dns| dns.dnssec)
            .map_or(proto::DnssecProof::Unspecified, crate::probe::DnssecProof::to_proto)
            as i32,
        http_version: match report.http_version {
            None => proto::HttpVersion::Unspecified,
            Some(Protocol::Http1) => proto::HttpVersion::HttpVersion11,
            Some(Protocol::Http2) => proto::HttpVersion::HttpVersion2,
        } as i32,
        request_id: result.request_id.map(|id| id.as_bytes().to_vec()),
    }
}

fn connect_attempt(attempt: &ConnectAttempt) -> proto::ConnectAttempt {
    proto::ConnectAttempt {
        ip: attempt.ip.to_string(),
        outcome: attempt.outcome.to_proto() as i32,
        started_us: attempt.started_ms.map(ms_to_us),
        duration_us: attempt.took_ms.map(ms_to_us),
    }
}

/// Milliseconds (fractional) to whole microseconds, saturating; negative or NaN become 0.
fn ms_to_us(ms: f64) -> u32 {
    // `as` saturates float-to-int conversions and maps NaN to 0.
    (ms * 1000.0).round() as u32
}

fn ms_to_us_i64(ms: f64) -> i64 {
    (ms * 1000.0).round() as i64
}

/// The wire certificate; `with_host` sends the hop's host. Of the chain only its length and the
/// earliest-expiring certificate above the leaf are sent (the leaf's own facts are already
/// there): that is what expiry warnings need, in ~15 bytes instead of ~70 per intermediate.
fn certificate(cert: &CertInfo, with_host: bool) -> proto::Certificate {
    let chain_earliest = cert.chain.iter().skip(1).min_by_key(|c| (c.not_after, c.position));
    let problem = cert.problem.as_ref();
    proto::Certificate {
        subject: cert.subject.clone(),
        issuer: cert.issuer.clone(),
        sans: cert.sans.clone(),
        serial: cert.serial.clone(),
        not_before_unix_s: cert.not_before.timestamp(),
        not_after_unix_s: cert.not_after.timestamp(),
        valid: cert.valid,
        validation_error: cert.validation_error.clone().unwrap_or_default(),
        chain_length: u32::try_from(cert.chain.len()).unwrap_or(u32::MAX),
        chain_verified: cert.chain_verified,
        chain_earliest: chain_earliest.map(|c| proto::ChainCertificate {
            position: c.position,
            subject: if c.position == 1 { String::new() } else { c.subject.clone() },
            not_after_unix_s: c.not_after.timestamp(),
        }),
        problem: problem.map_or(proto::CertProblem::Unspecified, |p| p.kind.to_proto()) as i32,
        problem_position: problem.map_or(0, |p| p.position),
        problem_subject: problem.filter(|p| p.position >= 2).map(|p| p.subject.clone()).unwrap_or_default(),
        problem_at_unix_s: problem.and_then(|p| p.at).map(|at| at.timestamp()),
        host: if with_host { cert.host.clone() } else { String::new() },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::probe::{CertProblem, CertProblemKind, ChainCert, ProbeReport, Timings};
    use prost::Message;
    use shared::DomainId;

    /// A result as a real HTTPS probe produces it; `with_cert` adds a typical web certificate
    /// (Let's Encrypt issuer, two names).
    pub(crate) fn realistic(domain_id: DomainId, ok: bool, with_cert: bool) -> ProbeResult {
        let now = chrono::Utc::now();
        ProbeResult {
            domain_id,
            config_version: 18_734,
            region: "ams".into(),
            trigger: Trigger::Scheduled,
            request_id: None,
            planned_at: now,
            lag_ms: 1.734,
            report: ProbeReport {
                ok,
                error: (!ok).then_some(ErrorKind::Status),
                error_detail: (!ok).then(|| "status 503 outside 200-299".into()),
                timings: Timings {
                    dns_ms: Some(12.412),
                    connect_ms: Some(18.903),
                    tls_ms: Some(41.227),
                    ttfb_ms: Some(88.514),
                    total_ms: 163.302,
                },
                status: Some(if ok { 200 } else { 503 }),
                status_matched: Some(ok),
                keyword_matched: Some(true),
                resolved_ip: Some("203.0.113.45".parse().unwrap()),
                resolved_addrs: vec!["203.0.113.45".parse().unwrap()],
                dns: Some(crate::probe::DnsInfo {
                    name: "shop.example-customer.com.".into(),
                    attempts: 1,
                    ttl_s: Some(287),
                    cnames: Vec::new(),
                    dnssec: None,
                }),
                dns_error: None,
                connect_attempts: vec![ConnectAttempt {
                    ip: "203.0.113.45".parse().unwrap(),
                    outcome: AttemptOutcome::Connected,
                    started_ms: Some(0.0),
                    took_ms: Some(18.903),
                    detail: None,
                }],
                http_version: Some(Protocol::Http2),
                redirects: Vec::new(),
                body_bytes: 48_213,
                redirect_certificates: Vec::new(),
                earliest_expiry: None,
                body_wire_bytes: 9_120,
                certificate: with_cert.then(|| CertInfo {
                    host: "shop.example-customer.com".into(),
                    subject: "CN=shop.example-customer.com".into(),
                    issuer: "C=US, O=Let's Encrypt, CN=R11".into(),
                    sans: vec!["shop.example-customer.com".into(), "www.shop.example-customer.com".into()],
                    serial: "04:a3:5f:0e:9b:27:c1:d4:88:e2:6f:13:50:7a:9c:b1:2d:44".into(),
                    not_before: now - chrono::Duration::days(30),
                    not_after: now + chrono::Duration::days(60),
                    days_remaining: 60,
                    valid: true,
                    validation_error: None,
                    problem: None,
                    chain: vec![
                        ChainCert {
                            position: 0,
                            subject: "CN=shop.example-customer.com".into(),
                            issuer: "C=US, O=Let's Encrypt, CN=R11".into(),
                            not_after: now + chrono::Duration::days(60),
                            days_remaining: 60,
                        },
                        ChainCert {
                            position: 1,
                            subject: "C=US, O=Let's Encrypt, CN=R11".into(),
                            issuer: "C=US, O=Internet Security Research Group, CN=ISRG Root X1".into(),
                            not_after: now + chrono::Duration::days(400),
                            days_remaining: 400,
                        },
                    ],
                    chain_verified: true,
                }),
            },
        }
    }

    #[test]
    fn converts_every_field() {
        let result = realistic(DomainId::new(), false, true);
        let wire = to_proto(&result);
        assert_eq!(wire.domain_id, result.domain_id.0.as_bytes());
        assert_eq!(wire.started_at_unix_us, result.planned_at.timestamp_micros() + 1734);
        assert_eq!(wire.error, proto::ErrorKind::Status as i32);
        assert_eq!(wire.status_code, 503);
        assert_eq!(wire.dns_us, Some(12_412));
        assert_eq!(wire.total_us, 163_302);
        assert_eq!(wire.resolved_ip, "203.0.113.45");
        assert_eq!(wire.keyword_matched, Some(true));
        assert_eq!(wire.certificate.as_ref().unwrap().sans.len(), 2);
        assert_eq!(wire.http_version(), proto::HttpVersion::HttpVersion2);
        let plain = to_proto(&ProbeResult {
            report: ProbeReport {
                timings: Timings { total_ms: -1.0, ..Timings::default() },
                ..result.report
            },
            ..result
        });
        assert_eq!((plain.dns_us, plain.total_us, plain.status_code), (None, 0, 503));
        // One address, connected at once: nothing beyond resolved_ip goes on the wire.
        assert_eq!(wire.dns_ttl_s, Some(287));
        assert!(wire.resolved_addrs.is_empty() && wire.connect_attempts.is_empty());
        assert_eq!(wire.dns_error, proto::DnsError::Unspecified as i32);
        assert_eq!(wire.dnssec(), proto::DnssecProof::Unspecified, "not a validated dns check");
        let mut validated = realistic(DomainId::new(), true, false);
        validated.report.dns.as_mut().unwrap().dnssec = Some(crate::probe::DnssecProof::Bogus);
        assert_eq!(to_proto(&validated).dnssec(), proto::DnssecProof::Bogus);
    }

    #[test]
    fn dns_failures_and_fallbacks_reach_the_wire() {
        let mut result = realistic(DomainId::new(), false, false);
        result.report.error = Some(ErrorKind::Dns);
        result.report.dns_error = Some(DnsErrorReason::Servfail);
        result.report.resolved_ip = None;
        result.report.resolved_addrs.clear();
        let wire = to_proto(&result);
        assert_eq!(wire.error, proto::ErrorKind::Dns as i32);
        assert_eq!(wire.dns_error(), proto::DnsError::Servfail);

        let mut result = realistic(DomainId::new(), true, false);
        result.report.resolved_addrs = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        result.report.resolved_ip = Some("127.0.0.1".parse().unwrap());
        result.report.connect_attempts = vec![
            ConnectAttempt {
                ip: "::1".parse().unwrap(),
                outcome: AttemptOutcome::Refused,
                started_ms: Some(0.0),
                took_ms: Some(0.2),
                detail: Some("connection refused".into()),
            },
            ConnectAttempt {
                ip: "127.0.0.1".parse().unwrap(),
                outcome: AttemptOutcome::Connected,
                started_ms: Some(0.2),
                took_ms: Some(0.1),
                detail: None,
            },
        ];
        let wire = to_proto(&result);
        assert_eq!(wire.resolved_addrs, ["127.0.0.1", "::1"]);
        let outcomes: Vec<_> = wire.connect_attempts.iter().map(|a| (a.ip.as_str(), a.outcome())).collect();
        assert_eq!(
            outcomes,
            [("::1", proto::ConnectOutcome::Refused), ("127.0.0.1", proto::ConnectOutcome::Connected)]
        );
        assert_eq!(wire.connect_attempts[1].started_us, Some(200));
    }

    #[test]
    fn chain_facts_travel_compactly() {
        let mut result = realistic(DomainId::new(), false, true);
        let wire = to_proto(&result);
        let cert = wire.certificate.as_ref().unwrap();
        assert_eq!((cert.chain_length, cert.chain_verified), (2, true));
        let earliest = cert.chain_earliest.as_ref().unwrap();
        // Position 1 is the leaf's issuer: its subject is not sent twice.
        assert_eq!((earliest.position, earliest.subject.as_str()), (1, ""));
        assert_eq!(cert.problem(), proto::CertProblem::Unspecified);
        assert!(cert.host.is_empty(), "no redirect: the host is the monitored URL's");

        let report = &mut result.report;
        let mut second = report.certificate.clone().unwrap();
        second.host = "landing.example.net".into();
        second.chain.push(ChainCert {
            position: 2,
            subject: "CN=Old Cross".into(),
            issuer: "CN=Older Root".into(),
            not_after: second.not_after - chrono::Duration::days(1),
            days_remaining: 59,
        });
        second.valid = false;
        second.problem = Some(CertProblem {
            kind: CertProblemKind::Expired,
            position: 2,
            subject: "CN=Old Cross".into(),
            at: Some(second.not_after),
        });
        report.redirect_certificates.push(second);
        report.redirects.push("https://landing.example.net/".into());
        let wire = to_proto(&result);
        assert_eq!(wire.certificate.as_ref().unwrap().host, "shop.example-customer.com");
        let [hop] = wire.redirect_certificates.as_slice() else { panic!("one redirect certificate") };
        assert!(hop.sans.is_empty() && hop.host == "landing.example.net");
        let earliest = hop.chain_earliest.as_ref().unwrap();
        assert_eq!((earliest.position, earliest.subject.as_str()), (2, "CN=Old Cross"));
        assert_eq!((hop.problem(), hop.problem_position), (proto::CertProblem::Expired, 2));
        assert_eq!(hop.problem_subject, "CN=Old Cross");
        assert!(hop.problem_at_unix_s.is_some());
    }

    /// The sizes behind `DEFAULT_BUFFER_MAX_BYTES` (run with `--nocapture` to see them).
    #[test]
    fn encoded_sizes_of_realistic_results() {
        let sized = |ok, cert| {
            let wire = to_proto(&realistic(DomainId::new(), ok, cert));
            // Inside a batch each result also costs a tag and a length prefix.
            wire.encoded_len() + 1 + prost::length_delimiter_len(wire.encoded_len())
        };
        let (plain, failed, with_cert) = (sized(true, false), sized(false, false), sized(true, true));
        println!("encoded result: {plain} B plain, {failed} B failed, {with_cert} B with a certificate");
        assert!(with_cert <= super::super::RESULT_BYTES_WITH_CERTIFICATE, "{with_cert}");
        assert!(failed <= super::super::RESULT_BYTES_WITH_CERTIFICATE, "{failed}");
    }
}
