//! The degraded state: a domain that answers, but abnormally slowly, in a quorum of regions.
//!
//! - [`detector`]: the pure latency anomaly detector of one (domain, region): a moving
//!   median/MAD baseline of recent normal latencies, a robust z-score per probe, degraded after
//!   K anomalous probes in a row; table-tested on known series.
//! - [`settings`]: the global `degraded_*` settings, a domain's `degraded` overrides and their
//!   merge.
//! - [`record`]: consensus feeds it each recorded batch's successful latencies; one transaction
//!   per batch with a fixed number of statements (missing rows created, the rows locked in
//!   domain order, the new states written through `unnest`), whatever the batch's size.
//!
//! Consensus reads each region's verdict (`latency_baselines.degraded`) beside its latest
//! observation and decides `degraded` by quorum like `down` (see
//! [`crate::consensus::decide`]).

pub mod detector;
pub mod settings;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub use detector::{Baseline, Verdict};
pub use settings::{Overrides, Settings};

use crate::consensus::DomainObservation;
use crate::metrics::Metrics;

/// What recording a batch's latencies did to one domain's detector in the batch's region.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub domain_id: Uuid,
    /// The region's verdict after the batch.
    pub degraded: bool,
    /// Whether the batch changed it.
    pub changed: bool,
    /// Whether the batch's newest latency was anomalous.
    pub anomalous: bool,
    /// The domain's regions as stored (empty: every region).
    pub regions: Vec<String>,
}

/// The settings of a domain whose stored overrides are `stored`; overrides that no longer
/// merge give the global settings, logged and counted.
pub fn settings_for(
    global: &Settings,
    stored: Option<&Value>,
    domain_id: Uuid,
    metrics: &Metrics,
) -> Settings {
    match global.for_domain(stored) {
        Ok(settings) => settings,
        Err((fallback, why)) => {
            metrics.degraded_invalid_settings.inc();
            tracing::warn!(%domain_id, why, "a domain's degraded settings do not apply; using the global ones");
            fallback
        }
    }
}

/// An array literal of `real[]`.
fn literal(values: &[f32]) -> String {
    let items: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("{{{}}}", items.join(","))
}

#[derive(sqlx::FromRow)]
struct Row {
    domain_id: Uuid,
    samples: Vec<f32>,
    anomalies: Vec<f32>,
    anomalous_since: Option<DateTime<Utc>>,
    degraded: bool,
    observed_at: DateTime<Utc>,
    overrides: Option<Value>,
    regions: Vec<String>,
}

/// Feeds the successful latencies of `observations` (one region's, oldest first within each)
/// to their detectors, in one transaction: an observation not newer than what its detector
/// already took (a resent or reordered batch) is skipped. Unknown domains are skipped. Returns
/// per domain fed what changed.
pub async fn record(
    pool: &PgPool,
    global: &Settings,
    metrics: &Metrics,
    region: &str,
    observations: &[DomainObservation],
) -> sqlx::Result<Vec<Change>> {
    let mut fed: Vec<&DomainObservation> = observations.iter().filter(|o| !o.latencies.is_empty()).collect();
    if fed.is_empty() {
        return Ok(Vec::new());
    }
    fed.sort_by_key(|o| o.domain_id);
    let ids: Vec<Uuid> = fed.iter().map(|o| o.domain_id).collect();
    let mut tx = pool.begin().await?;
    let result = record_in(&mut tx, global, metrics, region, &fed, &ids).await;
    match result {
        Ok(changes) => {
            tx.commit().await?;
            Ok(changes)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

async fn record_in(
    tx: &mut sqlx::PgConnection,
    global: &Settings,
    metrics: &Metrics,
    region: &str,
    fed: &[&DomainObservation],
    ids: &[Uuid],
) -> sqlx::Result<Vec<Change>> {
    // Missing detectors first (domain order), so every row can be locked below.
    sqlx::query(
        "INSERT INTO latency_baselines (domain_id, region, observed_at)
         SELECT d.id, $2, 'epoch' FROM domains d WHERE d.id = ANY($1) ORDER BY d.id
         ON CONFLICT (domain_id, region) DO NOTHING",
    )
    .bind(ids)
    .bind(region)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT b.domain_id, b.samples, b.anomalies, b.anomalous_since, b.degraded, b.observed_at,
                d.degraded AS overrides, d.regions
         FROM latency_baselines b JOIN domains d ON d.id = b.domain_id
         WHERE b.region = $2 AND b.domain_id = ANY($1)
         ORDER BY b.domain_id FOR UPDATE OF b",
    )
    .bind(ids)
    .bind(region)
    .fetch_all(&mut *tx)
    .await?;
    let by_id: std::collections::HashMap<Uuid, &DomainObservation> =
        fed.iter().map(|o| (o.domain_id, *o)).collect();
    let mut changes = Vec::with_capacity(rows.len());
    let (mut w_ids, mut w_samples, mut w_anomalies, mut w_since, mut w_degraded, mut w_at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let Some(observation) = by_id.get(&row.domain_id) else { continue };
        if observation.observed_at <= row.observed_at {
            continue;
        }
        let settings = settings_for(global, row.overrides.as_ref(), row.domain_id, metrics);
        let mut baseline =
            Baseline { samples: row.samples, anomalies: row.anomalies, anomalous_since: row.anomalous_since };
        let mut last = None;
        for &latency in &observation.latencies {
            last = Some(baseline.observe(latency, observation.observed_at, &settings));
        }
        let anomalous = last.is_some_and(|v| v.anomalous);
        if anomalous {
            metrics.latency_anomalies.inc();
        }
        let degraded = baseline.degraded(&settings);
        changes.push(Change {
            domain_id: row.domain_id,
            degraded,
            changed: degraded != row.degraded,
            anomalous,
            regions: row.regions,
        });
        w_ids.push(row.domain_id);
        w_samples.push(literal(&baseline.samples));
        w_anomalies.push(literal(&baseline.anomalies));
        w_since.push(baseline.anomalous_since);
        w_degraded.push(degraded);
        w_at.push(observation.observed_at);
    }
    if w_ids.is_empty() {
        return Ok(changes);
    }
    sqlx::query(
        "UPDATE latency_baselines b
         SET samples = u.samples::real[], anomalies = u.anomalies::real[], anomalous_since = u.since,
             degraded = u.degraded, observed_at = u.at
         FROM unnest($1::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::bool[], $7::timestamptz[])
             AS u(domain_id, samples, anomalies, since, degraded, at)
         WHERE b.region = $2 AND b.domain_id = u.domain_id",
    )
    .bind(&w_ids)
    .bind(region)
    .bind(&w_samples)
    .bind(&w_anomalies)
    .bind(&w_since)
    .bind(&w_degraded)
    .bind(&w_at)
    .execute(&mut *tx)
    .await?;
    Ok(changes)
}

/// One region's latency detector as the status API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = LatencyDetector)]
pub struct RegionLatency {
    /// The baseline's median, milliseconds (`None` before the first sample).
    pub baseline_median_ms: Option<f64>,
    /// Normal latencies the baseline holds.
    pub baseline_samples: usize,
    /// Anomalous probes in a row so far.
    pub anomalous: usize,
    pub anomalous_since: Option<DateTime<Utc>>,
    pub degraded: bool,
}

/// The latency detector of each region of a domain (a region without any is absent).
pub async fn latency_of(
    conn: &mut sqlx::PgConnection,
    domain_id: Uuid,
) -> sqlx::Result<std::collections::HashMap<String, RegionLatency>> {
    type Row = (String, Vec<f32>, Vec<f32>, Option<DateTime<Utc>>, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT region, samples, anomalies, anomalous_since, degraded FROM latency_baselines
         WHERE domain_id = $1",
    )
    .bind(domain_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(region, samples, anomalies, anomalous_since, degraded)| {
            let baseline = Baseline { samples, anomalies, anomalous_since };
            let view = RegionLatency {
                baseline_median_ms: baseline.median_ms(),
                baseline_samples: baseline.samples.len(),
                anomalous: baseline.anomalies.len(),
                anomalous_since,
                degraded,
            };
            (region, view)
        })
        .collect())
}
