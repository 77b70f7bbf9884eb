//! Reads, the same SQL in both storage modes: uptime and latency from `rollup_hourly` (a
//! continuous aggregate or a table with the same columns), recent results from the raw table,
//! certificates from `certificates`.
//!
//! Every window reads the **hourly** roll-up: the buckets starting at or after the start of the
//! UTC hour `window` ago (so a window covers up to one hour more than its name). Hourly rows are
//! kept as long as daily ones (`retention_rollup_days`), so 30 days are at most 720 rows per
//! domain and region; `rollup_daily` serves longer ranges. Both modes include the newest
//! results: TimescaleDB's aggregates are real-time (`materialized_only = false`), and in plain
//! mode the hours whose results are still queued for the roll-ups (or that an older control
//! plane marked for a refresh) are rolled up from the raw rows at read time, in the same
//! snapshot as the rest (see [`snapshot`]).

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::buckets::{add_into, percentiles, Percentiles};
use super::writer::hour_of;
use super::{rollup, StorageMode};

/// A read window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = HistoryWindow)]
pub enum Window {
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
        }
    }

    pub fn duration(self) -> TimeDelta {
        match self {
            Window::Day => TimeDelta::hours(24),
            Window::Week => TimeDelta::days(7),
            Window::Month => TimeDelta::days(30),
        }
    }

    /// The first hourly bucket the window reads.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        hour_of(now - self.duration())
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "24h" => Ok(Window::Day),
            "7d" => Ok(Window::Week),
            "30d" => Ok(Window::Month),
            _ => Err("must be one of 24h, 7d, 30d".into()),
        }
    }
}

/// Probes and successes of one region, or of all.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UptimeCounts {
    pub probes: u64,
    pub successes: u64,
    /// `None` without probes.
    pub uptime_percent: Option<f64>,
}

impl UptimeCounts {
    fn new(probes: u64, successes: u64) -> Self {
        let uptime_percent = (probes > 0).then(|| successes as f64 * 100.0 / probes as f64);
        Self { probes, successes, uptime_percent }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RegionUptime {
    pub region: String,
    #[serde(flatten)]
    pub counts: UptimeCounts,
}

/// Probe success counts of a domain in a window: the raw ratio of successful probes, pooled
/// over every region (`probes`) and per region. This is not the domain's uptime: one region
/// failing every probe while the others succeed lowers these ratios, while consensus (and
/// [`crate::uptime`]) keeps the domain up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uptime {
    pub window: Window,
    pub since: DateTime<Utc>,
    /// Every region's probes together.
    pub probes: UptimeCounts,
    pub regions: Vec<RegionUptime>,
}

/// Percentiles per phase; a phase that never happened in the window is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PhaseLatency {
    pub total: Option<Percentiles>,
    pub dns: Option<Percentiles>,
    pub connect: Option<Percentiles>,
    pub tls: Option<Percentiles>,
    pub ttfb: Option<Percentiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RegionLatency {
    pub region: String,
    #[serde(flatten)]
    pub phases: PhaseLatency,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Latency {
    pub window: Window,
    pub since: DateTime<Utc>,
    pub overall: PhaseLatency,
    pub regions: Vec<RegionLatency>,
}

/// One raw result as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredResult {
    pub time: DateTime<Utc>,
    pub region: String,
    pub agent_id: String,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub error_detail: Option<String>,
    pub status_code: Option<i32>,
    /// Phase durations in microseconds; `null` when the phase did not happen.
    pub dns_us: Option<i32>,
    pub connect_us: Option<i32>,
    pub tls_us: Option<i32>,
    /// Time to the first response byte, microseconds.
    pub ttfb_us: Option<i32>,
    /// The whole probe, microseconds.
    pub total_us: i32,
    pub resolved_ip: Option<String>,
    /// `HTTP/1.1` or `HTTP/2`; `None` when no exchange started (or stored before it was kept).
    pub http_version: Option<String>,
    /// What started the probe: `scheduled` or `on_demand` (a check requested now).
    pub trigger: String,
    /// The domain's configuration version the probe ran with.
    pub config_version: i64,
}

/// The newest certificate seen from one region: the first HTTPS hop's (the monitored URL's
/// own host), its chain and fault, the later hops' certificates, and the earliest expiry over
/// all of them.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CertificateFacts {
    pub region: String,
    /// The host the certificate was presented for (the monitored URL's host unless the first
    /// HTTPS hop was a redirect target).
    pub host: String,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub valid: bool,
    pub validation_error: Option<String>,
    /// The certificate at fault when invalid: `{"kind", "position", "subject", "at"}` with
    /// `kind` one of `expired`, `not_yet_valid`, `unknown_issuer`, `name_mismatch`,
    /// `revoked`, `other`, and `position` 0 for the leaf, N for the Nth intermediate.
    #[schema(value_type = Option<crate::api::schema::CertificateProblem>)]
    pub problem: Option<serde_json::Value>,
    pub observed_at: DateTime<Utc>,
    /// Whole days from now until `not_after`, rounded down ([`crate::expiry::days_left`]):
    /// -1 during the first day after expiry.
    #[sqlx(skip)]
    pub days_left: i64,
    /// The stored chain record (see the `certificates` table).
    #[sqlx(rename = "chain")]
    #[serde(skip)]
    pub chain_record: serde_json::Value,
    /// Certificates on the chain, leaf included, trust anchor excluded; 0 when unknown.
    #[sqlx(skip)]
    pub chain_length: u32,
    /// The chain verified up to a trusted root.
    #[sqlx(skip)]
    pub chain_verified: bool,
    /// The chain's certificates the control plane knows: the leaf (position 0) and the
    /// earliest-expiring certificate above it (agents send only that one, with the length).
    #[sqlx(skip)]
    pub chain: Vec<ExpiringCertificate>,
    /// The certificate of the chain that expires first.
    #[sqlx(skip)]
    pub earliest_chain_expiry: Option<ExpiringCertificate>,
    /// The later HTTPS hops' certificates (redirect targets), in order, each with `days_left`.
    #[sqlx(rename = "hops")]
    #[schema(value_type = Vec<crate::api::schema::RedirectCertificate>)]
    pub redirect_certificates: serde_json::Value,
    /// The certificate that expires first over every hop and chain.
    #[sqlx(skip)]
    pub earliest_expiry: Option<ExpiringCertificate>,
}

/// One certificate named by where it is: the hop's host and its position on that hop's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ExpiringCertificate {
    pub host: String,
    /// 0 for the leaf, N for the Nth intermediate above it.
    pub position: u32,
    pub subject: String,
    pub not_after: DateTime<Utc>,
    /// Whole days from now until `not_after`, rounded down (negative once expired).
    pub days_left: i64,
}

fn days_left(not_after: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    crate::expiry::days_left(not_after, now)
}

/// The chain's earliest certificate above the leaf from a stored chain record, if any.
fn stored_earliest(chain: &serde_json::Value, host: &str, now: DateTime<Utc>) -> Option<ExpiringCertificate> {
    let earliest = chain.get("earliest")?;
    let not_after: DateTime<Utc> = serde_json::from_value(earliest.get("not_after")?.clone()).ok()?;
    Some(ExpiringCertificate {
        host: host.to_owned(),
        position: u32::try_from(earliest.get("position")?.as_u64()?).ok()?,
        subject: earliest.get("subject")?.as_str()?.to_owned(),
        not_after,
        days_left: days_left(not_after, now),
    })
}

impl CertificateFacts {
    /// Fills the derived fields at `now`; an empty host is `url_host`, the monitored URL's.
    pub(crate) fn complete(&mut self, url_host: &str, now: DateTime<Utc>) {
        if self.host.is_empty() {
            self.host = url_host.to_owned();
        }
        self.days_left = days_left(self.not_after, now);
        let record = &self.chain_record;
        self.chain_length = record.get("length").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        self.chain_verified = record.get("verified").and_then(|v| v.as_bool()).unwrap_or(false);
        let leaf = ExpiringCertificate {
            host: self.host.clone(),
            position: 0,
            subject: self.subject.clone(),
            not_after: self.not_after,
            days_left: self.days_left,
        };
        self.chain = std::iter::once(leaf.clone()).chain(stored_earliest(record, &self.host, now)).collect();
        self.earliest_chain_expiry = self.chain.iter().min_by_key(|c| (c.not_after, c.position)).cloned();
        let mut candidates = self.chain.clone();
        if let Some(hops) = self.redirect_certificates.as_array_mut() {
            for hop in hops {
                let host = hop.get("host").and_then(|h| h.as_str()).unwrap_or_default().to_owned();
                let not_after: Option<DateTime<Utc>> =
                    hop.get("not_after").and_then(|v| serde_json::from_value(v.clone()).ok());
                let Some(not_after) = not_after else { continue };
                hop["days_left"] = days_left(not_after, now).into();
                candidates.push(ExpiringCertificate {
                    host: host.clone(),
                    position: 0,
                    subject: hop.get("subject").and_then(|s| s.as_str()).unwrap_or_default().to_owned(),
                    not_after,
                    days_left: days_left(not_after, now),
                });
                if let Some(chain) = hop.get("chain") {
                    candidates.extend(stored_earliest(chain, &host, now));
                }
            }
        }
        self.earliest_expiry = candidates.into_iter().min_by_key(|c| c.not_after);
    }
}

/// A read-only snapshot to read roll-ups in, and the hours from `since` on whose results are
/// not all in the roll-ups yet ([`rollup::pending_hours`]): reads compute those from the raw rows in the same snapshot,
/// so results count as soon as they are stored, as TimescaleDB's real-time aggregates do (with
/// TimescaleDB the list is empty). In one snapshot every result of an unmarked hour is in the
/// roll-ups, and a marked hour is read whole from the raw rows.
async fn snapshot(
    pool: &PgPool,
    mode: StorageMode,
    since: DateTime<Utc>,
) -> Result<(Transaction<'static, Postgres>, Vec<DateTime<Utc>>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let pending = match mode {
        StorageMode::Plain => rollup::pending_hours(&mut tx, since).await?,
        StorageMode::Timescale => Vec::new(),
    };
    Ok((tx, pending))
}

pub(crate) async fn uptime(
    pool: &PgPool,
    mode: StorageMode,
    domain: Uuid,
    window: Window,
) -> Result<Uptime, sqlx::Error> {
    let since = window.start(Utc::now());
    let (mut tx, pending) = snapshot(pool, mode, since).await?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT region, sum(probes)::bigint, sum(successes)::bigint FROM (
             SELECT region, probes, successes FROM rollup_hourly
             WHERE domain_id = $1 AND bucket >= $2 AND bucket <> ALL($3)
             UNION ALL
             SELECT region, probes, successes FROM ({}) AS fresh
         ) AS hours GROUP BY region ORDER BY region",
        rollup::hours_from_raw("$3", Some("$1"))
    ))
    .bind(domain)
    .bind(since)
    .bind(&pending)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let (mut probes, mut successes) = (0u64, 0u64);
    let regions = rows
        .into_iter()
        .map(|(region, p, s)| {
            let (p, s) = (p.max(0) as u64, s.max(0) as u64);
            probes += p;
            successes += s;
            RegionUptime { region, counts: UptimeCounts::new(p, s) }
        })
        .collect();
    Ok(Uptime { window, since, probes: UptimeCounts::new(probes, successes), regions })
}

type HistRow =
    (String, Option<Vec<i32>>, Option<Vec<i32>>, Option<Vec<i32>>, Option<Vec<i32>>, Option<Vec<i32>>);

pub(crate) async fn latency(
    pool: &PgPool,
    mode: StorageMode,
    domain: Uuid,
    window: Window,
) -> Result<Latency, sqlx::Error> {
    let since = window.start(Utc::now());
    let (mut tx, pending) = snapshot(pool, mode, since).await?;
    let rows: Vec<HistRow> = sqlx::query_as(&format!(
        "SELECT region, hist_sum(total_hist), hist_sum(dns_hist), hist_sum(connect_hist), \
                hist_sum(tls_hist), hist_sum(ttfb_hist) FROM (
             SELECT region, total_hist, dns_hist, connect_hist, tls_hist, ttfb_hist FROM rollup_hourly
             WHERE domain_id = $1 AND bucket >= $2 AND bucket <> ALL($3)
             UNION ALL
             SELECT region, total_hist, dns_hist, connect_hist, tls_hist, ttfb_hist FROM ({}) AS fresh
         ) AS hours GROUP BY region ORDER BY region",
        rollup::hours_from_raw("$3", Some("$1"))
    ))
    .bind(domain)
    .bind(since)
    .bind(&pending)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut overall: [Vec<i64>; 5] = Default::default();
    let mut regions = Vec::with_capacity(rows.len());
    for (region, total, dns, connect, tls, ttfb) in rows {
        let mut phases: [Vec<i64>; 5] = Default::default();
        for (i, hist) in [total, dns, connect, tls, ttfb].into_iter().enumerate() {
            if let Some(hist) = hist {
                add_into(&mut phases[i], &hist);
                add_into(&mut overall[i], &hist);
            }
        }
        regions.push(RegionLatency { region, phases: phase_latency(&phases) });
    }
    Ok(Latency { window, since, overall: phase_latency(&overall), regions })
}

fn phase_latency(h: &[Vec<i64>; 5]) -> PhaseLatency {
    PhaseLatency {
        total: percentiles(&h[0]),
        dns: percentiles(&h[1]),
        connect: percentiles(&h[2]),
        tls: percentiles(&h[3]),
        ttfb: percentiles(&h[4]),
    }
}

pub(crate) async fn recent_results(
    pool: &PgPool,
    domain: Uuid,
    limit: u32,
) -> Result<Vec<StoredResult>, sqlx::Error> {
    sqlx::query_as(
        "SELECT time, region, agent_id, ok, error_kind, error_detail, status_code, dns_us, connect_us, \
                tls_us, ttfb_us, total_us, resolved_ip, http_version, trigger, config_version \
         FROM probe_results WHERE domain_id = $1 ORDER BY time DESC LIMIT $2",
    )
    .bind(domain)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

pub(crate) async fn certificates(
    pool: &PgPool,
    domain: Uuid,
    url_host: &str,
) -> Result<Vec<CertificateFacts>, sqlx::Error> {
    let mut facts: Vec<CertificateFacts> = sqlx::query_as(
        "SELECT region, host, subject, issuer, sans, serial, not_before, not_after, valid, validation_error, \
                problem, observed_at, chain, hops FROM certificates WHERE domain_id = $1 ORDER BY region",
    )
    .bind(domain)
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    for f in &mut facts {
        f.complete(url_host, now);
    }
    Ok(facts)
}

/// What one domain's latest result (a failing one when `failing`) since `since`, and its newest
/// certificate, say: for naming what a grouped notification's domains have in common.
pub(crate) async fn result_facts(
    pool: &PgPool,
    domains: &[(Uuid, bool)],
    since: DateTime<Utc>,
) -> Result<Vec<(Uuid, crate::notify::storm::ResultFacts)>, sqlx::Error> {
    let (ids, failing): (Vec<Uuid>, Vec<bool>) = domains.iter().copied().unzip();
    type Row = (Uuid, Option<String>, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.id, r.resolved_ip, r.error_kind, r.error_detail, c.issuer
         FROM unnest($1::uuid[], $2::bool[]) AS d(id, failing)
         LEFT JOIN LATERAL (
             SELECT resolved_ip, error_kind, error_detail FROM probe_results p
             WHERE p.domain_id = d.id AND p.time >= $3 AND (NOT d.failing OR NOT p.ok)
             ORDER BY p.time DESC LIMIT 1) r ON true
         LEFT JOIN LATERAL (
             SELECT issuer FROM certificates c WHERE c.domain_id = d.id
             ORDER BY c.observed_at DESC LIMIT 1) c ON true",
    )
    .bind(&ids)
    .bind(&failing)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, resolved_ip, error_kind, error_detail, issuer)| {
            let facts = crate::notify::storm::ResultFacts {
                resolved_ip: resolved_ip.filter(|ip| !ip.is_empty()),
                error_kind,
                error_detail: error_detail.filter(|d| !d.is_empty()),
                issuer,
            };
            (id, facts)
        })
        .collect())
}
