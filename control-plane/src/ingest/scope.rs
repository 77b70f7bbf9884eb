//! What an agent may report: results for domains that exist, are not paused, and run in the
//! agent's region (the certificate's; a domain without `regions` runs in every region).
//!
//! A batch's results are screened by **one** query for its distinct domain ids (ingest is a hot
//! path: never a query per row). The others are dropped before anything is stored, so they
//! never reach the time-series database, consensus, uptime, latency or DNS drift; they are
//! counted by reason (`control_plane_ingest_results_rejected_total{reason}`) and logged at most
//! once a minute per replica with the counts since the last line, and the batch is still
//! acknowledged, so a well-behaved agent whose catalog lags a pause, a deletion or a change of
//! regions does not resend it forever. A domain id that is not a UUID is left in: validation
//! refuses such a batch as before.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shared::proto::ProbeResult;
use sqlx::PgPool;
use uuid::Uuid;

use crate::metrics::Metrics;

/// The rejection log's quiet period: at most one line per this.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a result was not stored: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No such domain (never existed, or deleted).
    UnknownDomain,
    /// The domain is paused.
    Paused,
    /// The domain does not run in the agent's region.
    OtherRegion,
}

impl Rejection {
    pub const ALL: [Rejection; 3] = [Rejection::UnknownDomain, Rejection::Paused, Rejection::OtherRegion];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownDomain => "unknown_domain",
            Rejection::Paused => "paused",
            Rejection::OtherRegion => "other_region",
        }
    }
}

/// A batch's results after screening.
#[derive(Debug, Default)]
pub struct Screened {
    /// The results to store, in their order.
    pub kept: Vec<ProbeResult>,
    /// Results dropped, by reason.
    pub rejected: HashMap<Rejection, u64>,
    /// One domain that was dropped, for the log.
    pub example: Option<(Uuid, Rejection)>,
}

/// Screens `results` reported by an agent of `region`: one query whatever their number.
pub async fn screen(pool: &PgPool, region: &str, results: Vec<ProbeResult>) -> Result<Screened, sqlx::Error> {
    let ids: Vec<Uuid> = results
        .iter()
        .filter_map(|r| shared::proto::uuid_from_bytes(&r.domain_id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        "SELECT id, paused, (cardinality(regions) = 0 OR $2 = ANY (regions)) FROM domains WHERE id = ANY ($1)",
    )
    .bind(&ids)
    .bind(region)
    .fetch_all(pool)
    .await?;
    let verdicts: HashMap<Uuid, Option<Rejection>> = rows
        .into_iter()
        .map(|(id, paused, serves)| {
            let verdict = if paused {
                Some(Rejection::Paused)
            } else if !serves {
                Some(Rejection::OtherRegion)
            } else {
                None
            };
            (id, verdict)
        })
        .collect();
    let mut screened = Screened { kept: Vec::with_capacity(results.len()), ..Screened::default() };
    for result in results {
        let verdict = match shared::proto::uuid_from_bytes(&result.domain_id) {
            None => None,
            Some(id) => verdicts.get(&id).copied().unwrap_or(Some(Rejection::UnknownDomain)).map(|r| (id, r)),
        };
        match verdict {
            None => screened.kept.push(result),
            Some((id, rejection)) => {
                *screened.rejected.entry(rejection).or_default() += 1;
                screened.example.get_or_insert((id, rejection));
            }
        }
    }
    Ok(screened)
}

/// Counts rejected results and logs them aggregated: the first rejection at once, then at most
/// one line per [`LOG_EVERY`] with everything rejected since.
#[derive(Debug)]
pub struct RejectionLog {
    metrics: Metrics,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    counts: HashMap<Rejection, u64>,
    last_line: Option<Instant>,
}

impl RejectionLog {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics, pending: Mutex::default() }
    }

    /// Records what `screened` dropped from a batch of `region`/`agent_id`.
    pub fn record(&self, region: &str, agent_id: &str, screened: &Screened) {
        if screened.rejected.is_empty() {
            return;
        }
        for (rejection, n) in &screened.rejected {
            self.metrics.ingest_result_rejected(rejection.as_str(), *n);
        }
        let now = Instant::now();
        let due = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (rejection, n) in &screened.rejected {
                *pending.counts.entry(*rejection).or_default() += n;
            }
            if pending.last_line.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
                None
            } else {
                pending.last_line = Some(now);
                Some(std::mem::take(&mut pending.counts))
            }
        };
        if let Some(counts) = due {
            let [unknown_domain, paused, other_region] =
                Rejection::ALL.map(|r| counts.get(&r).copied().unwrap_or(0));
            let (example_domain, example_reason) =
                screened.example.map_or((String::new(), ""), |(id, r)| (id.to_string(), r.as_str()));
            tracing::warn!(
                region, agent_id, unknown_domain, paused, other_region, example_domain = %example_domain, example_reason,
                "results for domains the agent does not serve were not stored (counts since the last such line; acknowledged)"
            );
        }
    }
}
