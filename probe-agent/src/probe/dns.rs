//! Name resolution for probes: the [`Resolve`] seam, the agent's resolver (hickory, with its
//! own TTL-respecting cache) and a static map for tests and benchmarks.
//!
//! Rules every implementation follows:
//! - **Names are absolute.** A monitored host is looked up as written, never through a search
//!   list or a default domain (`www.example.com` is `www.example.com.`; with `search corp.lan`
//!   and `ndots:5` in `/etc/resolv.conf` a wildcard `*.corp.lan` must not capture it).
//! - **Failures are named** by a [`DnsErrorReason`] from a closed set, so NXDOMAIN, SERVFAIL,
//!   an empty answer and a silent server can be told apart.
//! - **Transient failures are retried** (SERVFAIL and timeouts, up to the configured attempts)
//!   within the time the caller gives the lookup.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use serde::Serialize;
use tokio::time::Instant;

/// Why a name could not be resolved. The set is closed: it is the wire enum's, and results
/// aggregate by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsErrorReason {
    /// The name does not exist (NXDOMAIN).
    Nxdomain,
    /// The name server failed (SERVFAIL), on every attempt.
    Servfail,
    /// The name exists but has no A or AAAA record.
    NoRecords,
    /// No answer in time.
    Timeout,
    /// The name server refused the query (REFUSED).
    Refused,
    /// No name server could be reached.
    Unreachable,
    /// Another response code, a malformed answer or a name that is not a valid DNS name.
    Other,
}

impl DnsErrorReason {
    pub const ALL: [DnsErrorReason; 7] = [
        DnsErrorReason::Nxdomain,
        DnsErrorReason::Servfail,
        DnsErrorReason::NoRecords,
        DnsErrorReason::Timeout,
        DnsErrorReason::Refused,
        DnsErrorReason::Unreachable,
        DnsErrorReason::Other,
    ];

    /// The name shown in results, details and metrics: the wire enum's label.
    pub fn as_str(self) -> &'static str {
        self.to_proto().label().expect("every dns error reason has a wire label")
    }

    /// The wire (protobuf) form.
    pub fn to_proto(self) -> shared::proto::DnsError {
        use shared::proto::DnsError as Wire;
        match self {
            DnsErrorReason::Nxdomain => Wire::Nxdomain,
            DnsErrorReason::Servfail => Wire::Servfail,
            DnsErrorReason::NoRecords => Wire::NoRecords,
            DnsErrorReason::Timeout => Wire::Timeout,
            DnsErrorReason::Refused => Wire::Refused,
            DnsErrorReason::Unreachable => Wire::Unreachable,
            DnsErrorReason::Other => Wire::Other,
        }
    }

    /// Worth asking again: the server may answer next time.
    fn is_transient(self) -> bool {
        matches!(self, DnsErrorReason::Servfail | DnsErrorReason::Timeout)
    }

    /// When A and AAAA fail differently, the reason that says most about the name: a name
    /// that does not exist, then a server failure, … and last "no records" (which one family
    /// returning nothing says about any name with only the other family).
    fn precedence(self) -> u8 {
        match self {
            DnsErrorReason::Nxdomain => 0,
            DnsErrorReason::Servfail => 1,
            DnsErrorReason::Refused => 2,
            DnsErrorReason::Timeout => 3,
            DnsErrorReason::Unreachable => 4,
            DnsErrorReason::Other => 5,
            DnsErrorReason::NoRecords => 6,
        }
    }

    fn explain(self) -> &'static str {
        match self {
            DnsErrorReason::Nxdomain => "nxdomain (the name does not exist)",
            DnsErrorReason::Servfail => "servfail (the name server failed)",
            DnsErrorReason::NoRecords => "no_records (the name has no a or aaaa record)",
            DnsErrorReason::Timeout => "timeout (no answer in time)",
            DnsErrorReason::Refused => "refused (the name server refused the query)",
            DnsErrorReason::Unreachable => "unreachable (no name server could be reached)",
            DnsErrorReason::Other => "other",
        }
    }
}

impl fmt::Display for DnsErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a successful lookup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Every address, AAAA answers first, each family in the order the answer listed it.
    pub addrs: Vec<IpAddr>,
    /// The lowest remaining TTL of the answer records, in seconds (`None` when unknown, e.g.
    /// from a static map).
    pub ttl_s: Option<u32>,
    /// CNAME targets followed from the name to the addresses, in order.
    pub cnames: Vec<String>,
    /// Lookups made (1, or more after a retried transient failure).
    pub attempts: u32,
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFailure {
    pub reason: DnsErrorReason,
    /// Lookups made before giving up.
    pub attempts: u32,
    /// What else is known (a response code, a network error), lowercase.
    pub note: Option<String>,
}

impl DnsFailure {
    pub fn new(reason: DnsErrorReason, attempts: u32) -> Self {
        Self { reason, attempts, note: None }
    }

    fn with_note(mut self, note: &str) -> Self {
        self.note = Some(note.to_lowercase());
        self
    }

    /// Lowercase text naming the reason first, e.g. `servfail (the name server failed) after 2
    /// attempts`; without the name.
    pub fn detail(&self) -> String {
        let mut detail = self.reason.explain().to_owned();
        if let Some(note) = &self.note {
            detail.push_str(": ");
            detail.push_str(note);
        }
        if self.attempts > 1 {
            detail.push_str(&format!(" after {} attempts", self.attempts));
        }
        detail
    }
}

/// Resolves a host name to its addresses. `name` is taken as an absolute name (a trailing dot
/// is allowed and changes nothing). The lookup ends within `budget` (retries included) or
/// fails with [`DnsErrorReason::Timeout`]; a successful answer has at least one address.
pub trait Resolve: Send + Sync {
    fn lookup<'a>(&'a self, name: &'a str, budget: Duration) -> BoxFuture<'a, Result<Answer, DnsFailure>>;
}

/// How the agent's resolver is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers (UDP, and TCP for truncated answers). Empty: the system's, from
    /// `/etc/resolv.conf`, with the hosts file consulted first.
    pub servers: Vec<SocketAddr>,
    /// Limit of one lookup (A and AAAA queried at once).
    pub query_timeout: Duration,
    /// Lookups made for a name at most: a SERVFAIL or a timeout is asked again while attempts
    /// and the probe's DNS budget remain.
    pub attempts: u32,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self { servers: Vec::new(), query_timeout: Duration::from_secs(2), attempts: 2 }
    }
}

/// Records kept in the resolver's cache (each expires with its own TTL).
const CACHE_RECORDS: usize = 4096;

/// The agent's resolver: hickory with the configured name servers (or the system's, and then
/// the hosts file first, so `localhost` resolves without network), A and AAAA asked at once,
/// answers cached for their TTL, no search list and no default domain whatever the system
/// configuration says.
pub struct HickoryResolver {
    inner: TokioResolver,
    settings: ResolverSettings,
}

impl HickoryResolver {
    /// Builds the resolver; reads `/etc/resolv.conf` when `settings.servers` is empty.
    ///
    /// Errors: the system configuration cannot be read, or names no server.
    pub fn new(settings: ResolverSettings) -> Result<Self, String> {
        if settings.servers.is_empty() {
            let (system, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
            return Self::from_system(&system, settings);
        }
        let servers = settings
            .servers
            .iter()
            .flat_map(|&addr| {
                [NameServerConfig::new(addr, Protocol::Udp), NameServerConfig::new(addr, Protocol::Tcp)]
            })
            .collect();
        Ok(Self::build(servers, ResolveHosts::Never, settings))
    }

    /// The resolver for a system configuration as `/etc/resolv.conf` gives it: its name servers
    /// (and the hosts file, consulted first) are used; its domain, search list and options
    /// (`ndots`, timeouts, attempts) are not — `settings` has the limits.
    ///
    /// Errors: `system` names no name server.
    pub fn from_system(system: &ResolverConfig, settings: ResolverSettings) -> Result<Self, String> {
        if system.name_servers().is_empty() {
            return Err("the system resolver configuration names no name server".to_owned());
        }
        Ok(Self::build(system.name_servers().to_vec(), ResolveHosts::Always, settings))
    }

    fn build(servers: Vec<NameServerConfig>, hosts: ResolveHosts, settings: ResolverSettings) -> Self {
        // No domain and no search list: monitored names are absolute (and each lookup asks for
        // a fully qualified name, so even a search list would not be used).
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut builder = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        let options = builder.options_mut();
        options.ndots = 0;
        options.use_hosts_file = hosts;
        options.timeout = settings.query_timeout;
        // Retries are this module's, so every attempt is counted and bounded by the budget.
        options.attempts = 1;
        options.cache_size = CACHE_RECORDS;
        options.preserve_intermediates = true;
        Self { inner: builder.build(), settings }
    }

    /// One lookup of both families, bounded by `limit`.
    async fn attempt(&self, name: &Name, limit: Duration) -> Result<Answer, DnsFailure> {
        let both = futures::future::join(
            self.inner.lookup(name.clone(), RecordType::AAAA),
            self.inner.lookup(name.clone(), RecordType::A),
        );
        match tokio::time::timeout(limit, both).await {
            Err(_) => Err(DnsFailure::new(DnsErrorReason::Timeout, 1)),
            Ok((v6, v4)) => {
                let now = std::time::Instant::now();
                combine(family(v6, now), family(v4, now))
            }
        }
    }
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryResolver").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Resolve for HickoryResolver {
    fn lookup<'a>(&'a self, host: &'a str, budget: Duration) -> BoxFuture<'a, Result<Answer, DnsFailure>> {
        Box::pin(async move {
            let name = absolute_name(host)?;
            let deadline = Instant::now() + budget;
            let mut attempts = 0;
            loop {
                attempts += 1;
                let left = deadline.saturating_duration_since(Instant::now());
                let outcome = if left.is_zero() {
                    Err(DnsFailure::new(DnsErrorReason::Timeout, 1))
                } else {
                    self.attempt(&name, left.min(self.settings.query_timeout)).await
                };
                match outcome {
                    Ok(answer) => return Ok(Answer { attempts, ..answer }),
                    Err(failure)
                        if failure.reason.is_transient()
                            && attempts < self.settings.attempts
                            && Instant::now() < deadline =>
                    {
                        tracing::debug!(name = %name, reason = %failure.reason, attempts, "dns lookup retried");
                    }
                    Err(failure) => return Err(DnsFailure { attempts, ..failure }),
                }
            }
        })
    }
}

/// `host` as an absolute DNS name.
fn absolute_name(host: &str) -> Result<Name, DnsFailure> {
    let mut name = Name::from_ascii(host).map_err(|e| {
        DnsFailure::new(DnsErrorReason::Other, 1).with_note(&format!("not a valid dns name: {e}"))
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// One family's outcome: its addresses, remaining TTL and CNAME chain, or why there are none.
type Family = Result<Answer, DnsFailure>;

fn family(lookup: Result<Lookup, ResolveError>, now: std::time::Instant) -> Family {
    match lookup {
        Ok(lookup) => {
            let mut answer = Answer {
                ttl_s: Some(
                    u32::try_from(lookup.valid_until().saturating_duration_since(now).as_secs())
                        .unwrap_or(u32::MAX),
                ),
                attempts: 1,
                ..Answer::default()
            };
            for data in lookup.iter() {
                match data {
                    RData::A(a) => answer.addrs.push(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => answer.addrs.push(IpAddr::V6(aaaa.0)),
                    RData::CNAME(target) => answer.cnames.push(target.0.to_ascii()),
                    _ => {}
                }
            }
            if answer.addrs.is_empty() {
                return Err(DnsFailure::new(DnsErrorReason::NoRecords, 1));
            }
            Ok(answer)
        }
        Err(error) => Err(classify(&error)),
    }
}

/// The reason a hickory error stands for.
pub(super) fn classify(error: &ResolveError) -> DnsFailure {
    let reason = match error.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => DnsErrorReason::Nxdomain,
            ResponseCode::NoError => DnsErrorReason::NoRecords,
            ResponseCode::ServFail => DnsErrorReason::Servfail,
            ResponseCode::Refused => DnsErrorReason::Refused,
            other => {
                return DnsFailure::new(DnsErrorReason::Other, 1).with_note(&format!("response code {other}"))
            }
        },
        Some(ProtoErrorKind::Timeout) => DnsErrorReason::Timeout,
        Some(ProtoErrorKind::RequestRefused) => DnsErrorReason::Refused,
        Some(ProtoErrorKind::Io(_) | ProtoErrorKind::NoConnections) => {
            return DnsFailure::new(DnsErrorReason::Unreachable, 1).with_note(&error.to_string())
        }
        _ => return DnsFailure::new(DnsErrorReason::Other, 1).with_note(&error.to_string()),
    };
    DnsFailure::new(reason, 1)
}

/// Merges the AAAA and A outcomes: any address makes an answer (IPv6 first, the lower TTL);
/// with none, the family failure that says most (see [`DnsErrorReason::precedence`]).
fn combine(v6: Family, v4: Family) -> Result<Answer, DnsFailure> {
    match (v6, v4) {
        (Ok(v6), Ok(v4)) => {
            let mut cnames = v6.cnames;
            for name in v4.cnames {
                if !cnames.contains(&name) {
                    cnames.push(name);
                }
            }
            let ttl_s = match (v6.ttl_s, v4.ttl_s) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            Ok(Answer { addrs: [v6.addrs, v4.addrs].concat(), ttl_s, cnames, attempts: 1 })
        }
        (Ok(answer), Err(_)) | (Err(_), Ok(answer)) => Ok(answer),
        (Err(a), Err(b)) => Err(if b.reason.precedence() < a.reason.precedence() { b } else { a }),
    }
}

/// A fixed name → addresses map; unknown names fail with NXDOMAIN, names mapped to nothing
/// with `no_records`.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a name's addresses. Names match case-insensitively, with or without
    /// a trailing dot.
    pub fn with(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.names.insert(host.trim_end_matches('.').to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

impl Resolve for StaticResolver {
    fn lookup<'a>(&'a self, host: &'a str, _budget: Duration) -> BoxFuture<'a, Result<Answer, DnsFailure>> {
        let found = match self.names.get(&host.trim_end_matches('.').to_ascii_lowercase()) {
            None => Err(DnsFailure::new(DnsErrorReason::Nxdomain, 1)),
            Some(addrs) if addrs.is_empty() => Err(DnsFailure::new(DnsErrorReason::NoRecords, 1)),
            Some(addrs) => Ok(Answer { addrs: addrs.clone(), attempts: 1, ..Answer::default() }),
        };
        Box::pin(futures::future::ready(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(addrs: &[&str], ttl: u32) -> Family {
        Ok(Answer {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ttl_s: Some(ttl),
            cnames: Vec::new(),
            attempts: 1,
        })
    }

    fn failed(reason: DnsErrorReason) -> Family {
        Err(DnsFailure::new(reason, 1))
    }

    #[test]
    fn both_families_make_one_answer_ipv6_first_with_the_lower_ttl() {
        let answer = combine(ok(&["::1"], 30), ok(&["127.0.0.1", "127.0.0.2"], 10)).unwrap();
        assert_eq!(answer.addrs, ["::1", "127.0.0.1", "127.0.0.2"].map(|a| a.parse::<IpAddr>().unwrap()));
        assert_eq!(answer.ttl_s, Some(10));
        let only_v4 = combine(failed(DnsErrorReason::NoRecords), ok(&["127.0.0.1"], 5)).unwrap();
        assert_eq!((only_v4.addrs.len(), only_v4.ttl_s), (1, Some(5)));
        // A server failing one family still gives the other family's addresses.
        assert!(combine(ok(&["::1"], 5), failed(DnsErrorReason::Servfail)).is_ok());
    }

    #[test]
    fn with_no_address_the_most_telling_reason_wins() {
        use DnsErrorReason::*;
        let cases = [
            (NoRecords, NoRecords, NoRecords),
            (Nxdomain, NoRecords, Nxdomain),
            (NoRecords, Servfail, Servfail),
            (Timeout, NoRecords, Timeout),
            (Servfail, Timeout, Servfail),
            (Refused, Refused, Refused),
            (Unreachable, Timeout, Timeout),
            (Other, NoRecords, Other),
        ];
        for (v6, v4, want) in cases {
            assert_eq!(combine(failed(v6), failed(v4)).unwrap_err().reason, want, "{v6:?} + {v4:?}");
            assert_eq!(combine(failed(v4), failed(v6)).unwrap_err().reason, want, "{v4:?} + {v6:?}");
        }
    }

    #[test]
    fn only_servfail_and_timeouts_are_retried() {
        let transient: Vec<_> = DnsErrorReason::ALL.into_iter().filter(|r| r.is_transient()).collect();
        assert_eq!(transient, [DnsErrorReason::Servfail, DnsErrorReason::Timeout]);
    }

    #[test]
    fn details_name_the_reason_first_and_the_attempts() {
        let failure = DnsFailure::new(DnsErrorReason::Servfail, 2);
        assert_eq!(failure.detail(), "servfail (the name server failed) after 2 attempts");
        assert_eq!(
            DnsFailure::new(DnsErrorReason::Nxdomain, 1).detail(),
            "nxdomain (the name does not exist)"
        );
        let noted = DnsFailure::new(DnsErrorReason::Other, 1).with_note("Response code NotImp");
        assert_eq!(noted.detail(), "other: response code notimp");
        for reason in DnsErrorReason::ALL {
            assert!(DnsFailure::new(reason, 1).detail().starts_with(reason.as_str()), "{reason:?}");
        }
    }

    #[test]
    fn names_are_made_absolute() {
        assert_eq!(absolute_name("www.target.test").unwrap().to_ascii(), "www.target.test.");
        assert_eq!(absolute_name("www.target.test.").unwrap().to_ascii(), "www.target.test.");
        assert!(absolute_name("www.target.test").unwrap().is_fqdn());
        let failure = absolute_name(&format!("{}.test", "a".repeat(64))).unwrap_err();
        assert_eq!(failure.reason, DnsErrorReason::Other);
        assert!(failure.detail().contains("not a valid dns name"), "{}", failure.detail());
    }
}
