//! Building Redis clients the same way in both binaries: explicit command timeouts (a call
//! never hangs while Redis is away), unlimited reconnection with capped exponential backoff and
//! jitter, TLS when the URL is `rediss://`.

use std::time::Duration;

use fred::prelude::*;

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

/// A client builder for `url`; the caller picks `build()` or `build_subscriber_client()`.
/// Checks a Redis URL as [`builder`] will use it: a `redis://`, `rediss://` (TLS) or Sentinel /
/// cluster URL that parses. The error names what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    const SCHEMES: [&str; 6] =
        ["redis", "rediss", "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster"];
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !scheme.is_some_and(|s| SCHEMES.contains(&s)) {
        return Err(format!("{url:?} is not a Redis URL (redis://host:port, or rediss:// for TLS)"));
    }
    Config::from_url(url).map(|_| ()).map_err(|e| e.to_string())
}

pub fn builder(url: &str, options: RedisOptions) -> Result<Builder, fred::error::Error> {
    let config = Config::from_url(url)?;
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
