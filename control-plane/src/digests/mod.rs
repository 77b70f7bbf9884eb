//! Flap digests: once per period (`digest_period_s`, hourly by default), one summary per tenant
//! of the domains that were in flap mode during the period, stored in `digests` and sent to the
//! tenant's channels as a `flap_digest` notification.
//!
//! - [`build`]: the digest of one tenant and period, a pure function of the loaded
//!   `flap_periods` and `domain_transitions` rows (down time, regions, timeline).
//! - [`render`]: its plain-text and HTML renderings.
//! - [`store`]: loading those rows, and the tenant-scoped reads behind `/v1/digests`.
//! - [`scheduler`]: builds each finished period exactly once across replicas and restarts,
//!   under the lock of the `digest_cursor` row, and catches up periods missed while down.

pub mod build;
pub mod render;
pub mod scheduler;
pub mod store;

use chrono::{DateTime, Duration, Utc};

pub use build::{build, Digest, DomainDigest};
pub use scheduler::Scheduler;

/// The notification kind of a digest.
pub const KIND: &str = "flap_digest";

/// The start of the period holding `at`: periods are `[k·P, (k+1)·P)` seconds since the Unix
/// epoch, so with `P = 3600` they start at the top of each hour. Sub-second parts are dropped.
pub fn period_start(at: DateTime<Utc>, period_s: u64) -> DateTime<Utc> {
    let period = period_s.max(1) as i64;
    let seconds = at.timestamp().div_euclid(period) * period;
    DateTime::from_timestamp(seconds, 0).expect("an aligned time is representable")
}

/// The period `[start, end)` holding `at`.
pub fn period_of(at: DateTime<Utc>, period_s: u64) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = period_start(at, period_s);
    (start, start + Duration::seconds(period_s.max(1) as i64))
}

/// The dedup key of a tenant's digest notification for the period starting at `period_start`.
pub fn dedup_key(tenant_id: uuid::Uuid, period_start: DateTime<Utc>) -> String {
    format!("digest:{tenant_id}:{}", period_start.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hourly_periods_start_at_the_top_of_the_hour() {
        assert_eq!(period_start(at("2026-03-14T10:41:07.250Z"), 3600), at("2026-03-14T10:00:00Z"));
        assert_eq!(period_start(at("2026-03-14T10:00:00Z"), 3600), at("2026-03-14T10:00:00Z"));
        assert_eq!(period_start(at("2026-03-14T10:59:59.999Z"), 3600), at("2026-03-14T10:00:00Z"));
        assert_eq!(
            period_of(at("2026-03-14T23:30:00Z"), 3600),
            (at("2026-03-14T23:00:00Z"), at("2026-03-15T00:00:00Z"))
        );
    }

    #[test]
    fn other_periods_are_aligned_to_the_epoch() {
        assert_eq!(period_start(at("2026-03-14T10:41:07Z"), 900), at("2026-03-14T10:30:00Z"));
        assert_eq!(period_start(at("2026-03-14T10:41:07Z"), 86_400), at("2026-03-14T00:00:00Z"));
        // 7 minutes: multiples of 420 s since 1970, not of the hour.
        let start = period_start(at("2026-03-14T10:41:07Z"), 420);
        assert_eq!(start.timestamp() % 420, 0);
        assert!(
            start <= at("2026-03-14T10:41:07Z")
                && at("2026-03-14T10:41:07Z") < start + Duration::seconds(420)
        );
        // Before the epoch too.
        assert_eq!(period_start(at("1969-12-31T23:30:00Z"), 3600), at("1969-12-31T23:00:00Z"));
    }

    #[test]
    fn the_dedup_key_names_tenant_and_period_in_unix_seconds() {
        let tenant = uuid::Uuid::nil();
        assert_eq!(
            dedup_key(tenant, at("2026-03-14T10:00:00Z")),
            format!("digest:{tenant}:{}", at("2026-03-14T10:00:00Z").timestamp())
        );
    }
}
