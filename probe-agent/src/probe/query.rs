//! The `dns` check: one query of a record type at chosen name servers (or the agent's own),
//! the answer compared with the expected records, optionally validated with DNSSEC.
//!
//! - Chosen servers are address literals; every one is screened by the SSRF guard before any
//!   query (a refused server fails the check, `blocked_target`): the check must not become a
//!   way to send packets into private networks.
//! - Each probe builds its own resolver without a cache (the point is to ask the server now),
//!   with the agent's per-lookup limit and a SERVFAIL or timeout asked again while the DNS
//!   budget lasts, as for an http probe's names.
//! - With `dnssec`, hickory validates from the root trust anchor and the agent's extra anchors
//!   for zones at or above the name ([`super::anchors`]); an answer whose records are not all
//!   proven `secure` (bogus, insecure: unsigned, or indeterminate) fails with
//!   `dnssec_invalid`, naming the proof (and an anchored zone whose key set could not be
//!   proven). `dns.dnssec` records the proof either way.
//! - The answer passes when it is non-empty and holds every `expect` value, compared in the
//!   normal form of [`shared::DnsRecordType::normalize`]; otherwise `dns_answer_mismatch`
//!   names what is missing and what was answered. `resolved_addrs` holds the A/AAAA answers,
//!   `dns.ttl_s` the lowest TTL and `dns.cnames` the CNAMEs followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Name, TokioResolver};
use tokio::time::Instant;

use shared::{DnsCheck, DnsRecordType};

use super::dns::{classify, DnsErrorReason};
use super::engine::{ms, Clock, Engine, Failure};
use super::{guard, DnsInfo, DnssecProof, ErrorKind, ProbeReport};

/// Most answers named in a failure's detail.
const NAMED: usize = 5;

fn record_type(kind: DnsRecordType) -> RecordType {
    match kind {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::Aaaa => RecordType::AAAA,
        DnsRecordType::Cname => RecordType::CNAME,
        DnsRecordType::Mx => RecordType::MX,
        DnsRecordType::Txt => RecordType::TXT,
        DnsRecordType::Ns => RecordType::NS,
        DnsRecordType::Soa => RecordType::SOA,
        DnsRecordType::Srv => RecordType::SRV,
        DnsRecordType::Caa => RecordType::CAA,
        DnsRecordType::Ptr => RecordType::PTR,
    }
}

/// An answer record in the text form expected values are written in, when it is of `kind`.
pub(super) fn answer_text(kind: DnsRecordType, data: &RData) -> Option<String> {
    let text = match (kind, data) {
        (DnsRecordType::A, RData::A(a)) => a.0.to_string(),
        (DnsRecordType::Aaaa, RData::AAAA(a)) => a.0.to_string(),
        (DnsRecordType::Cname, RData::CNAME(name)) => name.0.to_ascii(),
        (DnsRecordType::Ns, RData::NS(name)) => name.0.to_ascii(),
        (DnsRecordType::Ptr, RData::PTR(name)) => name.0.to_ascii(),
        (DnsRecordType::Mx, RData::MX(mx)) => format!("{} {}", mx.preference(), mx.exchange().to_ascii()),
        (DnsRecordType::Srv, RData::SRV(srv)) => {
            format!("{} {} {} {}", srv.priority(), srv.weight(), srv.port(), srv.target().to_ascii())
        }
        (DnsRecordType::Txt, RData::TXT(txt)) => {
            txt.txt_data().iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect::<String>()
        }
        (DnsRecordType::Soa, RData::SOA(soa)) => soa.to_string(),
        (DnsRecordType::Caa, RData::CAA(caa)) => caa.to_string(),
        _ => return None,
    };
    Some(kind.normalize(&text))
}

/// The expected values missing from `answers` (both in normal form).
pub(super) fn missing<'a>(expect: &'a [String], answers: &[String]) -> Vec<&'a str> {
    expect.iter().filter(|e| !answers.contains(e)).map(String::as_str).collect()
}

impl Engine {
    pub(super) async fn dns_check(
        &self,
        check: &DnsCheck,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<(), Failure> {
        let servers = self.dns_servers(check)?;
        let absolute = format!("{}.", check.name.trim_end_matches('.'));
        let name = Name::from_ascii(&absolute)
            .map_err(|e| Failure::new(ErrorKind::InvalidUrl, format!("not a valid dns name: {e}")))?;
        let (cap, by_total) = clock.cap(self.settings.dns_timeout);
        let per_query = cap.min(self.settings.resolver.query_timeout);
        let started = Instant::now();
        let deadline = started + cap;
        // The extra anchors' key sets are proven first, within the same DNS budget.
        let (anchors, unproven) = if check.dnssec && !self.settings.dnssec_anchors.is_empty() {
            let (keys, unproven) = self.settings.dnssec_anchors.keys_for(&name, &servers, per_query).await;
            (Some(keys), unproven)
        } else {
            (None, Vec::new())
        };
        let resolver = build(servers, per_query, anchors, check.dnssec);
        let kind = record_type(check.record_type);
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = match tokio::time::timeout(left, resolver.lookup(name.clone(), kind)).await {
                Err(_) => Err(None),
                Ok(Err(error)) => Err(Some(error)),
                Ok(Ok(lookup)) => Ok(lookup),
            };
            let transient = match &outcome {
                Err(None) => true,
                Err(Some(error)) => {
                    matches!(classify(error).reason, DnsErrorReason::Servfail | DnsErrorReason::Timeout)
                }
                Ok(_) => false,
            };
            if !transient || attempts >= self.settings.resolver.attempts || Instant::now() >= deadline {
                break outcome;
            }
        };
        report.timings.dns_ms = Some(ms(started.elapsed()));
        let mut info = DnsInfo { name: absolute, attempts, ttl_s: None, cnames: Vec::new(), dnssec: None };
        // What the failure detail adds about anchored zones whose key set was not proven.
        let unproven = if unproven.is_empty() { String::new() } else { format!("; {}", unproven.join("; ")) };
        let lookup = match outcome {
            Ok(lookup) => lookup,
            Err(error) => {
                let failure = match &error {
                    None => super::dns::DnsFailure::new(DnsErrorReason::Timeout, attempts),
                    Some(error) => super::dns::DnsFailure { attempts, ..classify(error) },
                };
                let proof = if check.dnssec { error.as_ref().and_then(proof_error) } else { None };
                info.dnssec = proof.map(from_proof);
                report.dns = Some(info);
                report.dns_error = Some(failure.reason);
                if let (Some(_), Some(error)) = (proof, &error) {
                    return Err(Failure::new(
                        ErrorKind::DnssecInvalid,
                        format!(
                            "the answer for {} {} does not validate: {error}{unproven}",
                            check.name, check.record_type
                        )
                        .to_lowercase(),
                    ));
                }
                let mut detail =
                    format!("cannot resolve {} {}: {}", check.name, check.record_type, failure.detail());
                if failure.reason == DnsErrorReason::Timeout {
                    detail.push_str(&format!(
                        "; {}",
                        clock.timeout_detail(super::engine::Phase::Dns, cap, by_total)
                    ));
                }
                return Err(Failure::new(ErrorKind::Dns, detail));
            }
        };
        let now = std::time::Instant::now();
        info.ttl_s = Some(
            u32::try_from(lookup.valid_until().saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX),
        );
        let mut answers = Vec::new();
        let mut proofs = Vec::new();
        for record in lookup.records() {
            match record.data() {
                RData::CNAME(target) if check.record_type != DnsRecordType::Cname => {
                    info.cnames.push(target.0.to_ascii());
                }
                RData::A(a) => report.resolved_addrs.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => report.resolved_addrs.push(IpAddr::V6(a.0)),
                _ => {}
            }
            if let Some(text) = answer_text(check.record_type, record.data()) {
                answers.push(text);
                proofs.push(record.proof());
            }
        }
        report.resolved_addrs.sort();
        report.resolved_addrs.dedup();
        let weakest = proofs.iter().copied().find(|p| *p != Proof::Secure).or(proofs.first().copied());
        if check.dnssec {
            info.dnssec = weakest.map(from_proof);
        }
        report.dns = Some(info);
        if check.dnssec {
            if let Some(proof) = weakest.filter(|p| *p != Proof::Secure) {
                return Err(Failure::new(
                    ErrorKind::DnssecInvalid,
                    format!(
                        "the answer for {} {} is {} by dnssec, not secure{unproven}",
                        check.name,
                        check.record_type,
                        proof_name(proof)
                    ),
                ));
            }
        }
        if answers.is_empty() {
            return Err(Failure::new(
                ErrorKind::DnsAnswerMismatch,
                format!("{} has no {} record", check.name, check.record_type),
            ));
        }
        let absent = missing(&check.expect, &answers);
        if !absent.is_empty() {
            let shown: Vec<&str> = answers.iter().take(NAMED).map(String::as_str).collect();
            let more = answers.len().saturating_sub(NAMED);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            return Err(Failure::new(
                ErrorKind::DnsAnswerMismatch,
                format!(
                    "the {} answer for {} lacks {}; it holds {}{more}",
                    check.record_type,
                    check.name,
                    absent.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "),
                    shown.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "),
                ),
            ));
        }
        Ok(())
    }

    /// The servers to ask: the check's own, each allowed by the SSRF policy, or the agent's.
    fn dns_servers(&self, check: &DnsCheck) -> Result<Vec<NameServerConfig>, Failure> {
        let addrs: Vec<SocketAddr> = if check.servers.is_empty() {
            if self.settings.resolver.servers.is_empty() {
                let (system, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                    Failure::new(
                        ErrorKind::Dns,
                        format!("cannot read the system resolver configuration: {e}"),
                    )
                })?;
                return Ok(system.name_servers().to_vec());
            }
            self.settings.resolver.servers.clone()
        } else {
            let ips: Vec<IpAddr> = check.servers.iter().map(SocketAddr::ip).collect();
            let screened = guard::screen(&self.settings.policy, &ips);
            if !screened.refused.is_empty() {
                return Err(Failure::new(
                    ErrorKind::BlockedTarget,
                    format!("name server refused: {}", screened.refusal()),
                ));
            }
            check.servers.clone()
        };
        Ok(addrs
            .into_iter()
            .flat_map(|addr| {
                [NameServerConfig::new(addr, Protocol::Udp), NameServerConfig::new(addr, Protocol::Tcp)]
            })
            .collect())
    }
}

/// A resolver for one check: no cache to speak of, no hosts file, no search list, one attempt
/// per lookup (the caller retries), DNSSEC validation when asked (from `anchors`, or the
/// root's keys alone).
fn build(
    servers: Vec<NameServerConfig>,
    timeout: Duration,
    anchors: Option<Arc<TrustAnchors>>,
    dnssec: bool,
) -> TokioResolver {
    let config = ResolverConfig::from_parts(None, Vec::new(), servers);
    let mut builder = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    if let Some(anchors) = anchors {
        builder = builder.with_trust_anchor(anchors);
    }
    let options = builder.options_mut();
    options.ndots = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.timeout = timeout;
    options.attempts = 1;
    options.cache_size = 1;
    options.preserve_intermediates = true;
    options.validate = dnssec;
    builder.build()
}

/// The proof of a denial that did not validate (hickory's NSEC error), if `error` is one.
fn proof_error(error: &hickory_resolver::ResolveError) -> Option<Proof> {
    use hickory_resolver::proto::ProtoErrorKind;
    match error.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::Nsec { proof, .. }) if *proof != Proof::Secure => Some(*proof),
        _ => None,
    }
}

fn from_proof(proof: Proof) -> DnssecProof {
    match proof {
        Proof::Secure => DnssecProof::Secure,
        Proof::Insecure => DnssecProof::Insecure,
        Proof::Bogus => DnssecProof::Bogus,
        Proof::Indeterminate => DnssecProof::Indeterminate,
    }
}

fn proof_name(proof: Proof) -> &'static str {
    match proof {
        Proof::Secure => "secure",
        Proof::Insecure => "insecure (unsigned)",
        Proof::Bogus => "bogus",
        Proof::Indeterminate => "indeterminate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{MX, TXT};

    #[test]
    fn answers_in_the_expected_form() {
        let mx = RData::MX(MX::new(10, Name::from_ascii("Mail.Example.com.").unwrap()));
        assert_eq!(answer_text(DnsRecordType::Mx, &mx).unwrap(), "10 mail.example.com");
        let txt = RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()]));
        assert_eq!(answer_text(DnsRecordType::Txt, &txt).unwrap(), "v=spf1 -all");
        assert_eq!(answer_text(DnsRecordType::A, &txt), None, "another type is not an answer");
        let a = RData::A("192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap().into());
        assert_eq!(answer_text(DnsRecordType::A, &a).unwrap(), "192.0.2.1");
    }

    #[test]
    fn missing_answers() {
        let answers = vec!["192.0.2.1".to_owned(), "192.0.2.2".to_owned()];
        let cases: [(&[&str], &[&str]); 4] = [
            (&[], &[]),
            (&["192.0.2.1"], &[]),
            (&["192.0.2.2", "192.0.2.1"], &[]),
            (&["192.0.2.1", "192.0.2.9"], &["192.0.2.9"]),
        ];
        for (expect, absent) in cases {
            let expect: Vec<String> = expect.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(missing(&expect, &answers), absent.to_vec());
        }
    }
}
