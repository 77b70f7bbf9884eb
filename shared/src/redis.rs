//! Building Redis clients the same way in both binaries: explicit command timeouts (a call
//! never hangs while Redis is away), unlimited reconnection with capped exponential backoff and
//! jitter, TLS when the URL is `rediss://`, and Redis Sentinel when it is `redis-sentinel://`.
//!
//! # Sentinel
//!
//! With a Sentinel URL the client asks the sentinels for the monitored primary's address
//! (`SENTINEL get-master-addr-by-name`), checks that the node it reached says `ROLE` master, and
//! does both again on every reconnection. A failover reaches a client as a closed connection
//! (Sentinel runs `CLIENT KILL` on the nodes it reconfigures) or as a `READONLY` answer from a
//! node demoted under it; both make the client reconnect through the sentinels, Pub/Sub
//! clients included. [`normalize_url`] describes the accepted forms.

use std::time::Duration;

use fred::prelude::*;

/// The port a sentinel address without one gets (Redis Sentinel's default).
pub const SENTINEL_PORT: u16 = 26379;

/// Timeouts and backoff for a Redis client.
#[derive(Debug, Clone, Copy)]
pub struct RedisOptions {
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

const SCHEMES: [&str; 6] =
    ["redis", "rediss", "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster"];

/// The URL as the client library parses it, from the form an operator writes.
///
/// Plain URLs (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS) pass unchanged.
/// A Sentinel URL names the sentinels, not the primary:
///
/// ```text
/// redis-sentinel://[user:password@]sentinel1[:port],sentinel2[:port],…[/db]?sentinelServiceName=<name>
///     [&sentinelUsername=<user>][&sentinelPassword=<password>]
/// ```
///
/// - addresses are comma-separated; one without a port gets 26379; at least one is needed, and
///   more than one is what survives the loss of a sentinel (the client tries them in order);
/// - `sentinelServiceName` (required) is the name the sentinels monitor the primary under
///   (`sentinel monitor <name> …`);
/// - `user:password@` and `/db` are for the Redis nodes; the sentinels' own credentials, if they
///   have `requirepass` set, go in `sentinelUsername` / `sentinelPassword`;
/// - `rediss-sentinel://` uses TLS to the sentinels and the nodes;
/// - the client library's own form, `?node=host:port` for each further sentinel, is accepted too.
///
/// # Errors
/// A message naming the part at fault (the scheme, an address, its port, the service name), for
/// the caller to prefix with its configuration key. Secrets in the URL are never repeated.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(
            "not a Redis URL (redis://host:port, rediss:// for TLS, redis-sentinel:// for Sentinel)".into()
        );
    };
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "scheme {scheme:?} is not one of {} (redis://host:port, rediss:// for TLS, redis-sentinel:// for Sentinel)",
            SCHEMES.join(", ")
        ));
    }
    if !scheme.ends_with("-sentinel") {
        return Ok(url.to_owned());
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let mut addresses = Vec::new();
    for address in hosts.split(',') {
        addresses.push(sentinel_address(address)?);
    }
    let (first, others) = addresses.split_first().expect("split yields at least one item");
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if path.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(
            "a Sentinel URL takes the service name as ?sentinelServiceName=<name>, not as a #fragment".into(),
        );
    }
    match path.trim_start_matches('/') {
        "" => {}
        db if db.parse::<u8>().is_ok() => {}
        db => return Err(format!("database {db:?} is not a number from 0 to 255")),
    }
    let mut pairs: Vec<String> =
        query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()).map(str::to_owned).collect();
    let service = pairs.iter().find_map(|pair| pair.strip_prefix("sentinelServiceName="));
    match service {
        None => {
            return Err("sentinelServiceName is missing: add ?sentinelServiceName=<the name the sentinels monitor the primary under>".into())
        }
        Some("") => return Err("sentinelServiceName is empty".into()),
        Some(_) => {}
    }
    for pair in &pairs {
        if let Some(node) = pair.strip_prefix("node=") {
            let (host, port) = node.rsplit_once(':').ok_or_else(|| {
                format!(
                    "node={node:?} needs host:port (or list the sentinels comma-separated before the path)"
                )
            })?;
            if host.is_empty() || host.contains(':') || !port.parse::<u16>().is_ok_and(|p| p > 0) {
                return Err(format!("node={node:?} is not a host:port with a port from 1 to 65535"));
            }
        }
    }
    pairs.extend(others.iter().map(|(host, port)| format!("node={host}:{port}")));
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Ok(format!("{scheme}://{userinfo}{}:{}{path}?{}", first.0, first.1, pairs.join("&")))
}

/// One sentinel address: `host[:port]`, `[v6]:port` only first in the list (the client
/// library's list of further sentinels takes `host:port` without brackets).
fn sentinel_address(address: &str) -> Result<(String, u16), String> {
    if address.is_empty() {
        return Err("a sentinel address is empty (addresses are comma-separated host:port)".into());
    }
    let (host, port) = if let Some(v6) = address.strip_prefix('[') {
        let (inside, after) =
            v6.split_once(']').ok_or_else(|| format!("sentinel address {address:?} has no closing ]"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("sentinel address {address:?}: expected :port after ]")),
        };
        (format!("[{inside}]"), port)
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (address.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("sentinel address {address:?} has no host"));
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "sentinel address {address:?}: port {port:?} is not a number from 1 to 65535"
                ))
            }
        },
    };
    Ok((host, port))
}

/// Checks a Redis URL as [`builder`] will use it (see [`normalize_url`] for the forms). The
/// error names what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    let normalized = normalize_url(url)?;
    Config::from_url(&normalized).map(|_| ()).map_err(|e| e.details().to_owned())
}

/// A client builder for `url` (any form [`normalize_url`] accepts); the caller picks `build()`
/// or `build_subscriber_client()`.
///
/// # Errors
/// The URL does not parse ([`check_url`] says why in words).
pub fn builder(url: &str, options: RedisOptions) -> Result<Builder, fred::error::Error> {
    let normalized =
        normalize_url(url).map_err(|e| fred::error::Error::new(fred::error::ErrorKind::Config, e))?;
    let config = Config::from_url(&normalized)?;
    let mut builder = Builder::from_config(config);
    let mut policy = ReconnectPolicy::new_exponential(
        0, // never give up
        options.min_backoff.as_millis() as u32,
        options.max_backoff.as_millis() as u32,
        2,
    );
    policy.set_jitter(100);
    builder
        .set_policy(policy)
        .with_performance_config(|perf| {
            perf.default_command_timeout = options.command_timeout;
            // Pub/Sub messages queue here while a consumer is busy (e.g. during a resync);
            // a consumer that still lags is told so and resyncs.
            perf.broadcast_channel_capacity = 4096;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = options.connect_timeout;
            conn.internal_command_timeout = options.connect_timeout;
            conn.max_command_attempts = 2;
            conn.tcp = TcpConfig { nodelay: Some(true), ..Default::default() };
        });
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_pass_unchanged() {
        for url in ["redis://127.0.0.1:6379", "rediss://user:pw@redis.example:6380/2"] {
            assert_eq!(normalize_url(url).as_deref(), Ok(url));
            check_url(url).unwrap();
        }
    }

    #[test]
    fn sentinel_lists_become_the_client_form() {
        let url = "redis-sentinel://:secret@s1.example:26380,s2.example,10.0.0.3:5000/1?sentinelServiceName=mymaster";
        let normalized = normalize_url(url).unwrap();
        assert_eq!(
            normalized,
            "redis-sentinel://:secret@s1.example:26380/1?sentinelServiceName=mymaster&node=s2.example:26379&node=10.0.0.3:5000"
        );
        let config = Config::from_url(&normalized).unwrap();
        let ServerConfig::Sentinel { hosts, service_name, .. } = &config.server else {
            panic!("not a sentinel config: {:?}", config.server)
        };
        assert_eq!(service_name, "mymaster");
        let mut hosts: Vec<String> = hosts.iter().map(|s| format!("{}:{}", s.host, s.port)).collect();
        hosts.sort();
        assert_eq!(hosts, ["10.0.0.3:5000", "s1.example:26380", "s2.example:26379"]);
        assert_eq!(config.password.as_deref(), Some("secret"));
        assert_eq!(config.database, Some(1));
    }

    #[test]
    fn one_sentinel_without_port_gets_the_default() {
        let normalized = normalize_url("redis-sentinel://sentinel?sentinelServiceName=m").unwrap();
        assert_eq!(normalized, "redis-sentinel://sentinel:26379?sentinelServiceName=m");
        check_url(&normalized).unwrap();
    }

    #[test]
    fn sentinel_credentials_are_kept_apart() {
        let url = "redis-sentinel://:nodepw@s1:26379,s2:26379?sentinelServiceName=m&sentinelPassword=sentpw";
        let config = Config::from_url(&normalize_url(url).unwrap()).unwrap();
        assert_eq!(config.password.as_deref(), Some("nodepw"));
        let ServerConfig::Sentinel { password, .. } = &config.server else { panic!("not sentinel") };
        assert_eq!(password.as_deref(), Some("sentpw"));
    }

    #[test]
    fn errors_name_the_part_at_fault() {
        let cases = [
            ("127.0.0.1:6379", "not a Redis URL"),
            ("http://127.0.0.1:6379", "scheme \"http\""),
            ("redis-sentinel://s1:26379,s2:26379/0", "sentinelServiceName is missing"),
            ("redis-sentinel://s1:26379?sentinelServiceName=", "sentinelServiceName is empty"),
            ("redis-sentinel://s1:26379,,s2?sentinelServiceName=m", "a sentinel address is empty"),
            (
                "redis-sentinel://s1:26379,s2:http?sentinelServiceName=m",
                "sentinel address \"s2:http\": port \"http\"",
            ),
            ("redis-sentinel://s1:0?sentinelServiceName=m", "port \"0\""),
            ("redis-sentinel://:26379?sentinelServiceName=m", "has no host"),
            ("redis-sentinel://s1/x?sentinelServiceName=m", "database \"x\""),
            ("redis-sentinel://s1#mymaster", "not as a #fragment"),
            ("redis-sentinel://s1?sentinelServiceName=m&node=s2", "node=\"s2\" needs host:port"),
        ];
        for (url, expected) in cases {
            let error = check_url(url).expect_err(url);
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn errors_do_not_repeat_passwords() {
        let error = check_url("redis-sentinel://:hunter2@s1:x?sentinelServiceName=m").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
