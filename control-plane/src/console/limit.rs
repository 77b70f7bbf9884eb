//! The sign-in rate limit: a GCRA bucket per client address (governor), in memory. Each replica
//! keeps its own, so N replicas admit up to N times the rate; guessing a 256-bit token is hopeless
//! anyway, and the limit is there to keep one address from hammering the token table.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Addresses remembered before the ones whose bucket is full again are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// Sign-in attempts per client address. Cheap to clone.
#[derive(Clone)]
pub struct SignInLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for SignInLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInLimiter").field("addresses", &self.limiter.len()).finish()
    }
}

impl SignInLimiter {
    /// `per_minute` and `burst` are at least 1 (the configuration checks it).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        Self { limiter: Arc::new(RateLimiter::keyed(quota)) }
    }

    /// Takes an attempt of `addr`; when it has none left, how long until it has (whole
    /// seconds, at least 1, for `Retry-After`).
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > PRUNE_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&addr).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_address_then_refused() {
        let limiter = SignInLimiter::new(1, 3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            limiter.check(a).unwrap();
        }
        let wait = limiter.check(a).unwrap_err();
        assert!((1..=60).contains(&wait.as_secs()), "{wait:?}");
        limiter.check(b).expect("another address has its own bucket");
    }
}
