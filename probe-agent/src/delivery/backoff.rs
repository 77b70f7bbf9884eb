//! Exponential backoff with full jitter: after the n-th consecutive failure the wait is uniform
//! in `[0, min(max, min · 2^(n-1))]`, so agents that lost the control plane together do not
//! come back together. A success resets it.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), failures: 0 }
    }

    /// The upper bound of the next wait after `failures` consecutive failures (at least one).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        self.min.saturating_mul(1u32 << exponent).min(self.max)
    }

    /// Records a failure and returns how long to wait: uniform in `[0, ceiling]`.
    pub fn fail(&mut self, rng: &mut impl Rng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling(self.failures);
        let ms = rng.gen_range(0..=ceiling.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// Records a failure that will not go away by itself (revoked certificate, region not
    /// configured): wait the maximum.
    pub fn fail_hard(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.max
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn waits_stay_within_the_jittered_exponential_bounds() {
        let (min, max) = (Duration::from_millis(200), Duration::from_millis(30_000));
        let mut backoff = Backoff::new(min, max);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen_low = false;
        for failure in 1..=20u32 {
            let ceiling = backoff.ceiling(failure);
            let expected = (200u64 << (failure - 1).min(20)).min(30_000);
            assert_eq!(ceiling, Duration::from_millis(expected), "failure {failure}");
            let mut last = Duration::ZERO;
            for _ in 0..50 {
                let mut probe = backoff.clone();
                last = probe.fail(&mut rng);
                assert!(last <= ceiling, "{last:?} above {ceiling:?} at failure {failure}");
                seen_low |= last < ceiling / 2;
            }
            assert!(last <= max);
            backoff.fail(&mut rng);
            assert_eq!(backoff.failures(), failure);
        }
        assert!(seen_low, "full jitter reaches below half the ceiling");
        assert_eq!(backoff.fail_hard(), max);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.ceiling(1), min);
    }
}
