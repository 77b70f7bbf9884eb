//! The per-tenant rate limit of check tests: a token bucket per tenant, in memory (no database
//! round trip on the request path). Each replica keeps its own buckets, so with N replicas
//! behind a balancer a tenant gets up to N times the rate; a test makes every agent of a
//! region send traffic, and the bound is about not letting one tenant turn the fleet into a
//! traffic generator, which a per-replica bound achieves.
//!
//! Pure logic: time is passed in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Buckets beyond this many are pruned of the full ones (tenants that have not tested lately).
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by tenant: `burst` tokens, refilled at `per_minute`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantLimiter {
    per_second: f64,
    burst: f64,
    buckets: Arc<Mutex<HashMap<Uuid, Bucket>>>,
}

impl TenantLimiter {
    /// `per_minute` and `burst` are at least 1 (the configuration checks it).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Arc::default(),
        }
    }

    /// Takes a token of `tenant` at `now`; when there is none, how long until there is one
    /// (rounded up to whole seconds, at least 1 s, for `Retry-After`).
    pub fn check(&self, tenant: Uuid, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.per_second, self.burst);
            buckets
                .retain(|_, b| b.tokens + rate * now.saturating_duration_since(b.at).as_secs_f64() < burst);
        }
        let bucket = buckets.entry(tenant).or_insert(Bucket { tokens: self.burst, at: now });
        let refilled = self.per_second * now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(Duration::from_secs((wait.ceil() as u64).max(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_tenant() {
        let limiter = TenantLimiter::new(30, 2); // one token every 2 s
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let start = Instant::now();
        assert!(limiter.check(a, start).is_ok());
        assert!(limiter.check(a, start).is_ok());
        assert_eq!(limiter.check(a, start), Err(Duration::from_secs(2)));
        assert!(limiter.check(b, start).is_ok(), "tenants have their own buckets");
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.check(a, later), Err(Duration::from_secs(2)), "1.5 s rounded up");
        assert!(limiter.check(a, start + Duration::from_secs(2)).is_ok());
        assert!(limiter.check(a, start + Duration::from_secs(2)).is_err());
        // Refill stops at the burst.
        let idle = start + Duration::from_secs(3_600);
        assert!(limiter.check(a, idle).is_ok());
        assert!(limiter.check(a, idle).is_ok());
        assert!(limiter.check(a, idle).is_err());
    }
}
