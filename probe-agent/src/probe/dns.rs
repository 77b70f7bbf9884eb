//! Name resolution for probes: the [`Resolve`] seam, the system resolver (hickory, with its own
//! TTL-respecting cache and the hosts file) and a static map for tests and benchmarks.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use futures::future::BoxFuture;
use hickory_resolver::config::{LookupIpStrategy, ResolveHosts};
use hickory_resolver::TokioResolver;

/// Resolves a host name to its addresses. Implementations return every address they found, in
/// any order, or a short lowercase reason; an empty list is treated as a failure by the caller.
pub trait Resolve: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>>;
}

/// Records kept in the resolver's cache (each expires with its own TTL).
const CACHE_RECORDS: usize = 4096;

/// The system resolver: `/etc/resolv.conf` for servers and options, the hosts file first (so
/// `localhost` resolves without network), A and AAAA queried together, answers cached for their
/// TTL.
pub struct SystemResolver {
    inner: TokioResolver,
}

impl SystemResolver {
    pub fn from_system_conf() -> Result<Self, String> {
        let mut builder = TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Always;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.cache_size = CACHE_RECORDS;
        Ok(Self { inner: builder.build() })
    }
}

impl fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemResolver").finish_non_exhaustive()
    }
}

impl Resolve for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            match self.inner.lookup_ip(host).await {
                Ok(lookup) => Ok(lookup.iter().collect()),
                Err(e) => Err(e.to_string().to_lowercase()),
            }
        })
    }
}

/// A fixed name → addresses map; unknown names fail like NXDOMAIN.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a name's addresses. Names match case-insensitively.
    pub fn with(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.names.insert(host.to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

impl Resolve for StaticResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        let found = self
            .names
            .get(&host.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| format!("no record found for {host}"));
        Box::pin(futures::future::ready(found))
    }
}
