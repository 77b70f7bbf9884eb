//! Tenant quotas: at most so many domains and channels, no interval shorter than a minimum, and
//! at most so many API requests a minute. Stored on the tenant row (`quota_*`, NULL unlimited,
//! the default), set by `control-plane set-quota`, shown by `GET /v1/tenant`.
//!
//! The count quotas are checked inside the transaction that inserts: [`reserve_domain`] and
//! [`reserve_channel`] lock the tenant row (`FOR NO KEY UPDATE`, which foreign-key checks of
//! other inserts do not wait for) before counting, so two creates at once cannot both see room
//! for one. The request rate ([`RateLimits`]) is a token bucket per tenant in this replica's
//! memory (governor): N replicas admit up to N times the rate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, PgTransaction};
use uuid::Uuid;

/// A tenant's quotas; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Quotas {
    /// At most this many domains (0: none).
    pub max_domains: Option<u32>,
    /// No domain may be probed more often than every this many seconds (at least 1).
    pub min_interval_s: Option<u32>,
    /// At most this many notification channels (0: none).
    pub max_channels: Option<u32>,
    /// At most this many `/v1` requests a minute, per replica (at least 1).
    pub requests_per_minute: Option<u32>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Quotas {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        // The columns' checks keep them non-negative.
        let column = |name: &str| -> sqlx::Result<Option<u32>> {
            Ok(row.try_get::<Option<i32>, _>(name)?.and_then(|v| u32::try_from(v).ok()))
        };
        Ok(Quotas {
            max_domains: column("quota_max_domains")?,
            min_interval_s: column("quota_min_interval_s")?,
            max_channels: column("quota_max_channels")?,
            requests_per_minute: column("quota_requests_per_minute")?,
        })
    }
}

/// A change of quotas: for each, `None` keeps it, `Some(None)` makes it unlimited,
/// `Some(Some(n))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    pub max_domains: Option<Option<u32>>,
    pub min_interval_s: Option<Option<u32>>,
    pub max_channels: Option<Option<u32>>,
    pub requests_per_minute: Option<Option<u32>>,
}

/// A quota a write would exceed: `field` names it (`quota.max_domains`), `message` says it
/// (`tenant quota: at most 100 domains`). Answered 422 with code `quota_exceeded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Exceeded {
    pub field: &'static str,
    pub message: String,
}

/// Why a quota-checked write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Exceeded(#[from] Exceeded),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

const COLUMNS: &str =
    "quota_max_domains, quota_min_interval_s, quota_max_channels, quota_requests_per_minute";

/// Checked before an `Option<u32>` is stored: an unsigned value that fits PostgreSQL's integer.
fn to_db(value: Option<u32>) -> Option<i32> {
    value.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

/// The tenant's quotas; `None` when there is no such tenant.
pub async fn get(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Option<Quotas>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
        .bind(tenant_id)
        .fetch_optional(conn)
        .await
}

/// Applies `change` to the tenant's quotas; the quotas now, or `None` when there is no such
/// tenant. A minimum interval or request rate of 0 is refused by the database's checks (the
/// command line refuses it first).
pub async fn set(pool: &PgPool, tenant_id: Uuid, change: Change) -> sqlx::Result<Option<Quotas>> {
    let keep = |c: Option<Option<u32>>| c.is_none();
    sqlx::query_as(&format!(
        "UPDATE tenants SET
             quota_max_domains = CASE WHEN $2 THEN quota_max_domains ELSE $3 END,
             quota_min_interval_s = CASE WHEN $4 THEN quota_min_interval_s ELSE $5 END,
             quota_max_channels = CASE WHEN $6 THEN quota_max_channels ELSE $7 END,
             quota_requests_per_minute = CASE WHEN $8 THEN quota_requests_per_minute ELSE $9 END
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(keep(change.max_domains))
    .bind(to_db(change.max_domains.flatten()))
    .bind(keep(change.min_interval_s))
    .bind(to_db(change.min_interval_s.flatten()))
    .bind(keep(change.max_channels))
    .bind(to_db(change.max_channels.flatten()))
    .bind(keep(change.requests_per_minute))
    .bind(to_db(change.requests_per_minute.flatten()))
    .fetch_optional(pool)
    .await
}

/// The tenant's quotas with its row locked until the transaction ends (unlimited for a tenant
/// that does not exist: the insert's foreign key refuses it then).
async fn lock(tx: &mut PgTransaction<'_>, tenant_id: Uuid) -> sqlx::Result<Quotas> {
    let found: Option<Quotas> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1 FOR NO KEY UPDATE"))
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.unwrap_or_default())
}

/// Whether one more of `noun` fits beside `count` under `max` (`field` names the quota).
pub fn check_count(field: &'static str, noun: &str, count: u64, max: Option<u32>) -> Result<(), Exceeded> {
    match max {
        Some(max) if count >= u64::from(max) => {
            Err(Exceeded { field, message: format!("tenant quota: at most {max} {noun}") })
        }
        _ => Ok(()),
    }
}

/// Whether `interval_s` respects the tenant's minimum interval.
pub fn check_interval(quotas: &Quotas, interval_s: u32) -> Result<(), Exceeded> {
    match quotas.min_interval_s {
        Some(min) if interval_s < min => Err(Exceeded {
            field: "quota.min_interval_s",
            message: format!("tenant quota: a domain's interval must be at least {min} s"),
        }),
        _ => Ok(()),
    }
}

/// Before a domain is inserted in `tx`: locks the tenant row, then checks the domain count and
/// the interval.
pub async fn reserve_domain(
    tx: &mut PgTransaction<'_>,
    tenant_id: Uuid,
    interval_s: u32,
) -> Result<(), Error> {
    let quotas = lock(tx, tenant_id).await?;
    check_interval(&quotas, interval_s)?;
    if quotas.max_domains.is_some() {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM domains WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut **tx)
            .await?;
        check_count("quota.max_domains", "domains", count as u64, quotas.max_domains)?;
    }
    Ok(())
}

/// Before a domain's interval is written by an update in `tx`: checks it against the minimum
/// (no lock: the minimum concerns one domain at a time).
pub async fn check_domain_interval(
    tx: &mut PgTransaction<'_>,
    tenant_id: Uuid,
    interval_s: u32,
) -> Result<(), Error> {
    let quotas = get(tx, tenant_id).await?.unwrap_or_default();
    Ok(check_interval(&quotas, interval_s)?)
}

/// Before a channel is inserted in `tx`: locks the tenant row, then checks the channel count.
pub async fn reserve_channel(tx: &mut PgTransaction<'_>, tenant_id: Uuid) -> Result<(), Error> {
    let quotas = lock(tx, tenant_id).await?;
    if quotas.max_channels.is_some() {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM channels WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut **tx)
            .await?;
        check_count("quota.max_channels", "channels", count as u64, quotas.max_channels)?;
    }
    Ok(())
}

/// How long a replica keeps a tenant's request rate before reading it again: a changed quota
/// takes effect within this.
pub const RATE_REFRESH: Duration = Duration::from_secs(10);

/// Tenants remembered before those not seen for [`RATE_REFRESH`] are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// A request over the tenant's rate: the quota and whole seconds until a request fits (at least
/// 1, for `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateExceeded {
    pub per_minute: u32,
    pub retry_after_s: u64,
}

struct Bucket {
    read_at: Instant,
    per_minute: Option<u32>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

/// The request-rate quota of every tenant this replica served: a GCRA bucket per tenant holding
/// a minute's worth of requests, refilled continuously. Cheap to clone.
#[derive(Clone, Default)]
pub struct RateLimits {
    buckets: Arc<Mutex<HashMap<Uuid, Bucket>>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants = self.buckets.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("RateLimits").field("tenants", &tenants).finish()
    }
}

impl RateLimits {
    /// Takes one request of `tenant_id`, reading its quota from the database when this replica
    /// has not for [`RATE_REFRESH`].
    pub async fn check(
        &self,
        pool: &PgPool,
        tenant_id: Uuid,
    ) -> Result<Result<(), RateExceeded>, sqlx::Error> {
        let now = Instant::now();
        let fresh = {
            let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
            buckets.get(&tenant_id).is_some_and(|b| now.duration_since(b.read_at) < RATE_REFRESH)
        };
        if !fresh {
            let mut conn = pool.acquire().await?;
            let per_minute = get(&mut conn, tenant_id).await?.unwrap_or_default().requests_per_minute;
            self.set(tenant_id, per_minute, now);
        }
        Ok(self.take(tenant_id))
    }

    /// Records `per_minute` as read at `now`, keeping the bucket when the rate is unchanged.
    fn set(&self, tenant_id: Uuid, per_minute: Option<u32>, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| now.duration_since(b.read_at) < RATE_REFRESH);
        }
        match buckets.get_mut(&tenant_id) {
            Some(bucket) if bucket.per_minute == per_minute => bucket.read_at = now,
            _ => {
                let limiter = per_minute
                    .and_then(NonZeroU32::new)
                    .map(|n| Arc::new(RateLimiter::direct(Quota::per_minute(n))));
                buckets.insert(tenant_id, Bucket { read_at: now, per_minute, limiter });
            }
        }
    }

    fn take(&self, tenant_id: Uuid) -> Result<(), RateExceeded> {
        let (limiter, per_minute) = {
            let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
            match buckets.get(&tenant_id) {
                Some(Bucket { limiter: Some(l), per_minute: Some(n), .. }) => (l.clone(), *n),
                _ => return Ok(()),
            }
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RateExceeded { per_minute, retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_refuse_at_the_maximum() {
        assert!(check_count("quota.max_domains", "domains", 2, Some(3)).is_ok());
        let refused = check_count("quota.max_domains", "domains", 3, Some(3)).unwrap_err();
        assert_eq!(refused.field, "quota.max_domains");
        assert_eq!(refused.message, "tenant quota: at most 3 domains");
        assert!(check_count("quota.max_channels", "channels", 0, Some(0)).is_err(), "0 allows none");
        assert!(check_count("quota.max_channels", "channels", 1_000_000, None).is_ok(), "unlimited");
    }

    #[test]
    fn the_interval_is_at_least_the_minimum() {
        let quotas = Quotas { min_interval_s: Some(60), ..Quotas::default() };
        assert!(check_interval(&quotas, 60).is_ok());
        let refused = check_interval(&quotas, 59).unwrap_err();
        assert_eq!(refused.field, "quota.min_interval_s");
        assert_eq!(refused.message, "tenant quota: a domain's interval must be at least 60 s");
        assert!(check_interval(&Quotas::default(), 1).is_ok());
    }

    #[test]
    fn a_minute_of_requests_then_refused_per_tenant() {
        let limits = RateLimits::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let now = Instant::now();
        limits.set(a, Some(3), now);
        limits.set(b, Some(3), now);
        limits.set(c, None, now);
        for _ in 0..3 {
            limits.take(a).unwrap();
        }
        let refused = limits.take(a).unwrap_err();
        assert_eq!(refused.per_minute, 3);
        assert!((1..=20).contains(&refused.retry_after_s), "{refused:?}");
        limits.take(b).expect("another tenant has its own bucket");
        for _ in 0..1_000 {
            limits.take(c).expect("unlimited");
        }
        // Re-reading the same rate keeps the bucket (still empty); a new rate starts a new one.
        limits.set(a, Some(3), now);
        assert!(limits.take(a).is_err());
        limits.set(a, Some(10), now);
        assert!(limits.take(a).is_ok());
    }
}
