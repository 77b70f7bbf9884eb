//! What bearer authentication does besides looking the token up: failed attempts throttled
//! per client address and per token prefix, each failure logged and counted, and
//! `api_tokens.last_used_at` kept (written at most once a minute per token).
//!
//! Failures spend a GCRA cell (governor) of their client address and, when a token was
//! presented, of its prefix (its first [`PREFIX_CHARS`] characters: `cc_` and 5 characters of
//! the secret, harmless to log); `api_auth_failures_per_minute` refill, at most
//! `api_auth_failure_burst` at once. A failure finding no cell left is answered `429` with
//! `Retry-After`, and until then every request of that address or prefix is answered `429`
//! before any token is looked up. The address is the socket peer's, or the client a
//! `trusted_proxies` proxy reports ([`crate::console::client::client_addr`]). Guessing a 256-bit
//! token is hopeless anyway: the limit keeps one client from hammering the token table, and
//! makes a leaked or stale token retried from many places visible. Each replica keeps its own
//! buckets (N replicas admit N times the rate). Only the prefix of a presented token is ever
//! logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use uuid::Uuid;

use super::ApiError;
use crate::metrics::Metrics;

/// Characters of a presented token that key its bucket and appear in logs.
pub const PREFIX_CHARS: usize = 8;
/// `last_used_at` is written at most this often per token.
pub const LAST_USED_EVERY: chrono::Duration = chrono::Duration::seconds(60);
/// Keys remembered before those no longer limited are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// Why an authentication failed: the `reason` of `control_plane_auth_failures_total` (besides
/// `throttled`, a request refused before any lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// A bearer token that is unknown or revoked.
    InvalidToken,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::InvalidToken => "invalid_token",
        }
    }
}

/// The loggable prefix of a presented token: its first [`PREFIX_CHARS`] characters, anything
/// but letters, digits, `_` and `-` shown as `?`.
pub fn token_prefix(token: &str) -> String {
    token
        .chars()
        .take(PREFIX_CHARS)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '?' })
        .collect()
}

/// The throttle and the `last_used_at` writer. Cheap to clone.
#[derive(Clone)]
pub struct AuthGuard {
    inner: Arc<Inner>,
}

struct Inner {
    by_addr: DefaultKeyedRateLimiter<IpAddr>,
    by_prefix: DefaultKeyedRateLimiter<String>,
    /// Until when each refused address and prefix is answered 429 without a lookup.
    blocked: Mutex<Blocked>,
    /// When this replica last wrote each token's `last_used_at` (by the injected clock).
    touched: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    metrics: Metrics,
}

#[derive(Default)]
struct Blocked {
    addrs: HashMap<IpAddr, Instant>,
    prefixes: HashMap<String, Instant>,
}

impl std::fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGuard")
            .field("addresses", &self.inner.by_addr.len())
            .field("prefixes", &self.inner.by_prefix.len())
            .finish()
    }
}

/// Whole seconds for `Retry-After`, at least 1.
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl AuthGuard {
    /// `per_minute` and `burst` are at least 1 (the configuration checks it).
    pub fn new(per_minute: u32, burst: u32, metrics: Metrics) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        Self {
            inner: Arc::new(Inner {
                by_addr: RateLimiter::keyed(quota),
                by_prefix: RateLimiter::keyed(quota),
                blocked: Mutex::default(),
                touched: Mutex::default(),
                metrics,
            }),
        }
    }

    fn count(&self, reason: &'static str) {
        self.inner.metrics.auth_failure(reason);
    }

    /// Whether `client`, presenting `token` (if any), may try now; otherwise
    /// [`ApiError::AuthThrottled`] with the seconds left (counted `throttled`, not logged: the
    /// failure that started the wait was).
    pub fn admit(&self, client: IpAddr, token: Option<&str>) -> Result<(), ApiError> {
        let now = Instant::now();
        let until = {
            let blocked = self.inner.blocked.lock().unwrap_or_else(|e| e.into_inner());
            let by_prefix = token.and_then(|t| blocked.prefixes.get(&token_prefix(t)).copied());
            blocked.addrs.get(&client).copied().into_iter().chain(by_prefix).filter(|u| *u > now).max()
        };
        match until {
            Some(until) => {
                self.count("throttled");
                Err(ApiError::AuthThrottled(retry_secs(until - now)))
            }
            None => Ok(()),
        }
    }

    /// Records a failed authentication of `client` (with the presented `token`, if any): counted
    /// by reason, logged with the client and the token's prefix. Returns the answer: 401, or
    /// 429 once the address or the prefix has no failure left.
    pub fn failed(&self, client: IpAddr, token: Option<&str>, failure: Failure) -> ApiError {
        self.count(failure.as_str());
        let prefix = token.map(token_prefix);
        let clock = DefaultClock::default();
        let (now, started) = (clock.now(), Instant::now());
        let mut wait: Option<Duration> = None;
        {
            let mut blocked = self.inner.blocked.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(not_until) = self.inner.by_addr.check_key(&client) {
                let left = not_until.wait_time_from(now);
                blocked.addrs.insert(client, started + left);
                wait = Some(left);
            }
            if let Some(prefix) = &prefix {
                if let Err(not_until) = self.inner.by_prefix.check_key(prefix) {
                    let left = not_until.wait_time_from(now);
                    blocked.prefixes.insert(prefix.clone(), started + left);
                    wait = Some(wait.map_or(left, |w| w.max(left)));
                }
            }
            if blocked.addrs.len() + blocked.prefixes.len() > PRUNE_ABOVE {
                blocked.addrs.retain(|_, until| *until > started);
                blocked.prefixes.retain(|_, until| *until > started);
            }
        }
        if self.inner.by_addr.len() > PRUNE_ABOVE {
            self.inner.by_addr.retain_recent();
        }
        if self.inner.by_prefix.len() > PRUNE_ABOVE {
            self.inner.by_prefix.retain_recent();
        }
        let token_prefix = prefix.as_deref().unwrap_or("");
        match wait {
            None => {
                tracing::warn!(client = %client, token_prefix, reason = failure.as_str(), "API authentication failed");
                ApiError::Unauthorized
            }
            Some(wait) => {
                let retry_after_s = retry_secs(wait);
                tracing::warn!(
                    client = %client, token_prefix, reason = failure.as_str(), retry_after_s,
                    "API authentication failed too often from this client or with this token prefix: throttled"
                );
                ApiError::AuthThrottled(retry_after_s)
            }
        }
    }

    /// Notes a successful authentication of `token_id` at `now` (the injected clock): writes
    /// `api_tokens.last_used_at` unless this replica did within [`LAST_USED_EVERY`], and the
    /// statement itself skips a row another replica stamped within it. A failed write is
    /// logged and counted and tried again by the next request; the request goes on.
    pub async fn used(&self, pool: &PgPool, token_id: Uuid, now: DateTime<Utc>) {
        {
            let mut touched = self.inner.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched.get(&token_id).is_some_and(|at| now - *at < LAST_USED_EVERY && *at <= now) {
                return;
            }
            touched.insert(token_id, now);
            if touched.len() > PRUNE_ABOVE {
                touched.retain(|_, at| now - *at < LAST_USED_EVERY);
            }
        }
        let written = sqlx::query(
            "UPDATE api_tokens SET last_used_at = now()
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= now() - make_interval(secs => $2))",
        )
        .bind(token_id)
        .bind(LAST_USED_EVERY.num_seconds() as f64)
        .execute(pool)
        .await;
        if let Err(error) = written {
            self.inner.touched.lock().unwrap_or_else(|e| e.into_inner()).remove(&token_id);
            self.inner.metrics.token_last_used_errors.inc();
            tracing::warn!(%token_id, error = %shared::error::Chain(&error), "cannot record the token's last use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_and_printable() {
        assert_eq!(token_prefix("cc_AbCdEfGhIjK"), "cc_AbCdE");
        assert_eq!(token_prefix("a\u{1b}b c"), "a?b?c");
        assert_eq!(token_prefix(""), "");
    }

    #[test]
    fn failures_of_one_address_are_throttled_then_refused_before_lookup() {
        let guard = AuthGuard::new(1, 3, Metrics::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for i in 0..3 {
            guard.admit(a, Some(&format!("cc_try{i}"))).unwrap();
            assert!(matches!(
                guard.failed(a, Some(&format!("cc_try{i}")), Failure::InvalidToken),
                ApiError::Unauthorized
            ));
        }
        let ApiError::AuthThrottled(wait) = guard.failed(a, Some("cc_try3"), Failure::InvalidToken) else {
            panic!("the fourth failure is throttled");
        };
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(matches!(guard.admit(a, None), Err(ApiError::AuthThrottled(_))));
        guard.admit(b, None).expect("another address has its own bucket");
    }

    #[test]
    fn one_prefix_is_throttled_across_addresses() {
        let guard = AuthGuard::new(1, 2, Metrics::default());
        for i in 0..2u8 {
            let addr = IpAddr::from([192, 0, 2, 10 + i]);
            assert!(matches!(
                guard.failed(addr, Some("cc_stale-token"), Failure::InvalidToken),
                ApiError::Unauthorized
            ));
        }
        let elsewhere = IpAddr::from([198, 51, 100, 1]);
        assert!(matches!(
            guard.failed(elsewhere, Some("cc_stale-other"), Failure::InvalidToken),
            ApiError::AuthThrottled(_)
        ));
        assert!(matches!(
            guard.admit(IpAddr::from([203, 0, 113, 9]), Some("cc_stale")),
            Err(ApiError::AuthThrottled(_))
        ));
        guard.admit(IpAddr::from([203, 0, 113, 9]), Some("cc_fresh")).expect("another prefix");
    }
}
