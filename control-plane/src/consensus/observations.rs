//! What consensus reads from results, and where it keeps it: one region's newest observation
//! per domain ([`DomainObservation`], with its [`Run`] of failures in a row), a stored batch's
//! observations ([`ObservedBatch`]), their upsert into `region_observations`
//! ([`Consensus::record`]), each agent's health (`agent_health`), and the reads the evaluation
//! and the status API share ([`observations`], [`health`], [`regional_failures`]).

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use shared::proto::{Batch, ErrorKind};
use uuid::Uuid;

use super::certificates::CertificateFact;
use super::decide::{AgentCanary, AgentSaturation, Health, Observation, State};
use super::Consensus;

/// One region's newest observation of one domain in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainObservation {
    pub domain_id: Uuid,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub status_code: Option<i32>,
    pub observed_at: DateTime<Utc>,
    /// The results this observation stands for (it is the newest of them) and the run of
    /// failures they end with, so a region's failures in a row are counted exactly even when
    /// a batch holds several results of a domain or queued batches are merged.
    pub run: Run,
    /// The latencies of the successful results it stands for, milliseconds, oldest first (at
    /// most [`MAX_LATENCIES`], the newest kept): what the latency anomaly detector takes.
    pub latencies: Vec<f32>,
}

/// Latencies an observation carries at most (merged batches of a stalled consensus keep the
/// newest).
pub const MAX_LATENCIES: usize = 1000;

/// `older` followed by `newer`, the newest [`MAX_LATENCIES`] kept.
fn join_latencies(older: &[f32], newer: &[f32]) -> Vec<f32> {
    let mut all: Vec<f32> = older.iter().chain(newer).copied().collect();
    let excess = all.len().saturating_sub(MAX_LATENCIES);
    all.drain(..excess);
    all
}

/// A sequence of results of one domain from one region, oldest to newest: how many, how many
/// failures in a row it ends with, and when the first of those failures was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub results: u32,
    pub failures: u32,
    pub since: Option<DateTime<Utc>>,
}

impl Run {
    /// One result.
    pub fn of(ok: bool, at: DateTime<Utc>) -> Self {
        Self { results: 1, failures: u32::from(!ok), since: (!ok).then_some(at) }
    }

    /// Whether every result failed (the run may go on from before it).
    pub fn all_failed(self) -> bool {
        self.failures == self.results
    }

    /// `self` followed by the later `next`.
    pub fn then(self, next: Run) -> Run {
        let results = self.results.saturating_add(next.results);
        if next.all_failed() {
            Run {
                results,
                failures: self.failures.saturating_add(next.failures),
                since: self.since.or(next.since),
            }
        } else {
            Run { results, ..next }
        }
    }
}

/// What a batch says of its agent's own health.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchHealth {
    /// The canary self-check: healthy, and when it ran; `None` without canaries.
    pub canary: Option<(bool, DateTime<Utc>)>,
    /// The agent's saturation report; `None` from an agent that predates it.
    pub saturation: Option<AgentSaturation>,
}

impl BatchHealth {
    /// The health a batch carries: the canary verdict when it names canaries or a check time,
    /// the saturation when its fields were taken (`saturation_checked_at_unix_us`).
    pub fn from_proto(
        health: &shared::proto::AgentHealth,
        agent_id: &str,
        received_at: DateTime<Utc>,
    ) -> Self {
        let at = |us: i64| Utc.timestamp_micros(us).single();
        let canary = (health.canaries_total > 0 || health.checked_at_unix_us != 0)
            .then(|| (health.healthy, at(health.checked_at_unix_us).unwrap_or(received_at)));
        let saturation = (health.saturation_checked_at_unix_us != 0).then(|| AgentSaturation {
            agent_id: agent_id.to_owned(),
            saturated: health.saturated,
            since: health.saturated_since_unix_us.and_then(at),
            until: health.saturated_until_unix_us.and_then(at),
            lag_p95_ms: f64::from(health.lag_p95_us) / 1000.0,
            checked_at: at(health.saturation_checked_at_unix_us).unwrap_or(received_at),
        });
        Self { canary, saturation }
    }

    /// `self` and a report of the same agent, the newest part of each kept.
    fn newest(self, other: BatchHealth) -> BatchHealth {
        let canary = match (self.canary, other.canary) {
            (Some(a), Some(b)) => Some(if b.1 >= a.1 { b } else { a }),
            (a, b) => a.or(b),
        };
        let saturation = match (self.saturation, other.saturation) {
            (Some(a), Some(b)) => Some(if b.checked_at >= a.checked_at { b } else { a }),
            (a, b) => a.or(b),
        };
        BatchHealth { canary, saturation }
    }
}

/// What consensus takes from one stored batch. Region and agent come from the certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedBatch {
    pub region: String,
    pub agent_id: String,
    /// The agent's self-check and saturation.
    pub health: Option<BatchHealth>,
    pub received_at: DateTime<Utc>,
    pub observations: Vec<DomainObservation>,
    pub certificates: Vec<CertificateFact>,
    /// Every result's DNS answer set (not only the newest per domain): DNS drift counts probes.
    pub dns: Vec<crate::dns_drift::DnsAnswer>,
}

/// One agent's observations being merged: the newest observation per domain (the runs of the
/// others folded into it), the newest health, the latest certificate fact per domain.
#[derive(Debug)]
pub(crate) struct AgentObservations {
    region: String,
    agent_id: String,
    health: Option<BatchHealth>,
    received_at: DateTime<Utc>,
    newest: HashMap<Uuid, DomainObservation>,
    certificates: HashMap<Uuid, CertificateFact>,
    dns: Vec<crate::dns_drift::DnsAnswer>,
}

impl AgentObservations {
    pub(crate) fn new(batch: ObservedBatch) -> Self {
        let mut merged = Self {
            region: batch.region.clone(),
            agent_id: batch.agent_id.clone(),
            health: None,
            received_at: batch.received_at,
            newest: HashMap::with_capacity(batch.observations.len()),
            certificates: HashMap::new(),
            dns: Vec::new(),
        };
        merged.absorb(batch);
        merged
    }

    pub(crate) fn is_of(&self, region: &str, agent_id: &str) -> bool {
        self.region == region && self.agent_id == agent_id
    }

    /// Observations held (at most one per domain).
    pub(crate) fn len(&self) -> usize {
        self.newest.len()
    }

    /// Folds a batch of the same agent in. Returns how many observations it replaced or that
    /// were older than the one held (their results still count in the run).
    pub(crate) fn absorb(&mut self, batch: ObservedBatch) -> usize {
        self.received_at = self.received_at.max(batch.received_at);
        self.health = match (self.health.take(), batch.health) {
            (Some(a), Some(b)) => Some(a.newest(b)),
            (a, b) => a.or(b),
        };
        for cert in batch.certificates {
            self.certificates.insert(cert.domain_id, cert);
        }
        self.dns.extend(batch.dns);
        let mut coalesced = 0;
        for mut o in batch.observations {
            match self.newest.get_mut(&o.domain_id) {
                Some(existing) if existing.observed_at >= o.observed_at => {
                    existing.run = o.run.then(existing.run);
                    existing.latencies = join_latencies(&o.latencies, &existing.latencies);
                    coalesced += 1;
                }
                Some(existing) => {
                    o.run = existing.run.then(o.run);
                    o.latencies = join_latencies(&existing.latencies, &o.latencies);
                    *existing = o;
                    coalesced += 1;
                }
                None => {
                    self.newest.insert(o.domain_id, o);
                }
            }
        }
        coalesced
    }

    pub(crate) fn into_batch(self) -> ObservedBatch {
        ObservedBatch {
            region: self.region,
            agent_id: self.agent_id,
            health: self.health,
            received_at: self.received_at,
            observations: self.newest.into_values().collect(),
            certificates: self.certificates.into_values().collect(),
            dns: self.dns,
        }
    }
}

impl ObservedBatch {
    /// Merges batches of the same agent: the newest observation per domain, the newest health,
    /// the latest certificate fact per domain. Order of agents is kept.
    pub fn merge(batches: Vec<ObservedBatch>) -> Vec<ObservedBatch> {
        let mut merged: Vec<AgentObservations> = Vec::new();
        for batch in batches {
            match merged.iter_mut().find(|m| m.is_of(&batch.region, &batch.agent_id)) {
                Some(into) => {
                    into.absorb(batch);
                }
                None => merged.push(AgentObservations::new(batch)),
            }
        }
        merged.into_iter().map(AgentObservations::into_batch).collect()
    }

    /// The newest observation (and certificate) per domain of `batch`.
    pub fn from_batch(region: &str, agent_id: &str, batch: &Batch, received_at: DateTime<Utc>) -> Self {
        let mut per_domain: HashMap<Uuid, Vec<(i64, &shared::proto::ProbeResult)>> = HashMap::new();
        let mut dns = Vec::new();
        for result in &batch.results {
            let Some(id) = shared::proto::uuid_from_bytes(&result.domain_id) else { continue };
            per_domain.entry(id).or_default().push((result.started_at_unix_us, result));
            if let Some(answer) = dns_answer(id, result) {
                dns.push(answer);
            }
        }
        let mut observations = Vec::with_capacity(per_domain.len());
        let mut certificates = Vec::new();
        for (domain_id, mut results) in per_domain {
            // Oldest first (stable: of two at the same instant, the later in the batch is newer).
            results.sort_by_key(|(at, _)| *at);
            let run = results
                .iter()
                .filter_map(|(at, r)| Some(Run::of(r.ok, Utc.timestamp_micros(*at).single()?)))
                .reduce(Run::then);
            let (Some(run), Some(&(at, result))) = (run, results.last()) else { continue };
            let Some(observed_at) = Utc.timestamp_micros(at).single() else { continue };
            let error_kind = ErrorKind::try_from(result.error).ok().and_then(ErrorKind::label);
            let latencies: Vec<f32> =
                results.iter().filter(|(_, r)| r.ok).map(|(_, r)| r.total_us as f32 / 1000.0).collect();
            observations.push(DomainObservation {
                domain_id,
                ok: result.ok,
                error_kind: error_kind.map(str::to_owned),
                status_code: (result.status_code != 0).then_some(result.status_code as i32),
                observed_at,
                run,
                latencies: join_latencies(&[], &latencies),
            });
            certificates.extend(CertificateFact::earliest(domain_id, result));
        }
        let health = batch.health.as_ref().map(|h| BatchHealth::from_proto(h, agent_id, received_at));
        Self {
            region: region.to_owned(),
            agent_id: agent_id.to_owned(),
            health,
            received_at,
            observations,
            certificates,
            dns,
        }
    }
}

/// A result's DNS answer set: every resolved address (`resolved_addrs`, or `resolved_ip` alone
/// when that is all it resolved to); `None` when no name was resolved.
fn dns_answer(domain_id: Uuid, result: &shared::proto::ProbeResult) -> Option<crate::dns_drift::DnsAnswer> {
    let addrs: Vec<String> = if result.resolved_addrs.is_empty() {
        (!result.resolved_ip.is_empty()).then(|| vec![result.resolved_ip.clone()])?
    } else {
        result.resolved_addrs.clone()
    };
    Some(crate::dns_drift::DnsAnswer {
        domain_id,
        observed_at: Utc.timestamp_micros(result.started_at_unix_us).single()?,
        addrs: crate::dns_drift::fold::normalize(addrs),
    })
}

impl Consensus {
    /// Records an agent's canary verdict (the newest self-check of each agent wins; each agent
    /// of a region has its own).
    pub async fn record_health(
        &self,
        region: &str,
        agent_id: &str,
        healthy: bool,
        checked_at: DateTime<Utc>,
        reported_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO agent_health (region, agent_id, healthy, checked_at, reported_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (region, agent_id) DO UPDATE
             SET healthy = excluded.healthy, checked_at = excluded.checked_at, reported_at = excluded.reported_at
             WHERE agent_health.checked_at <= excluded.checked_at",
        )
        .bind(region)
        .bind(agent_id)
        .bind(healthy)
        .bind(checked_at)
        .bind(reported_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an agent's saturation report (the newest report of each agent wins; the agent
    /// never shrinks a window it reported, and starts a new one only for a later episode).
    pub async fn record_saturation(
        &self,
        region: &str,
        saturation: &AgentSaturation,
        reported_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO agent_saturation (region, agent_id, saturated, since, until, lag_p95_ms, checked_at, reported_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (region, agent_id) DO UPDATE
             SET saturated = excluded.saturated, since = excluded.since, until = excluded.until,
                 lag_p95_ms = excluded.lag_p95_ms, checked_at = excluded.checked_at,
                 reported_at = excluded.reported_at
             WHERE agent_saturation.checked_at <= excluded.checked_at",
        )
        .bind(region)
        .bind(&saturation.agent_id)
        .bind(saturation.saturated)
        .bind(saturation.since)
        .bind(saturation.until)
        .bind(saturation.lag_p95_ms)
        .bind(saturation.checked_at)
        .bind(reported_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Upserts the batch's observations in one statement (never moving `observed_at`
    /// backwards; unknown domains skipped), keeping each region's run of failures (how many in
    /// a row, since when; reset by a success). Returns the domains whose vote changed (a new
    /// region, or a changed outcome) with the observation's `ok`.
    pub async fn record(&self, batch: &ObservedBatch) -> sqlx::Result<Vec<(Uuid, bool)>> {
        if batch.observations.is_empty() {
            return Ok(Vec::new());
        }
        let n = batch.observations.len();
        let (mut ids, mut oks, mut kinds, mut codes, mut ats) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut run_failures, mut run_all_failed, mut run_since) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        // In domain order, so concurrent upserts (two agents of a region, two replicas) lock
        // rows in the same order and cannot deadlock.
        let mut sorted: Vec<&DomainObservation> = batch.observations.iter().collect();
        sorted.sort_by_key(|o| o.domain_id);
        for o in sorted {
            ids.push(o.domain_id);
            oks.push(o.ok);
            kinds.push(o.error_kind.clone());
            codes.push(o.status_code);
            ats.push(o.observed_at);
            run_failures.push(i32::try_from(o.run.failures).unwrap_or(i32::MAX));
            run_all_failed.push(o.run.all_failed());
            run_since.push(o.run.since);
        }
        // Existing rows are locked in domain order first (concurrent upserts of two agents of a
        // region, or two replicas, cannot deadlock), then updated through a join: an
        // `ON CONFLICT DO UPDATE` would need the run of each row from the input by a correlated
        // lookup, quadratic in the batch (10,000 observations: 30 s instead of 0.8 s). Rows new
        // to the snapshot are inserted; one inserted meanwhile by another transaction takes the
        // conflict path, with that lookup for it alone.
        let rows: Vec<(Uuid, bool, Option<bool>)> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::bool[], $3::text[], $4::int[], $5::timestamptz[],
                                      $8::int[], $9::bool[], $10::timestamptz[])
                     AS u(domain_id, ok, error_kind, status_code, observed_at, run_failures, run_all_failed, run_since)
                 WHERE EXISTS (SELECT 1 FROM domains d WHERE d.id = u.domain_id)
             ),
             old AS MATERIALIZED (
                 SELECT o.domain_id, o.ok FROM region_observations o
                 WHERE o.region = $6 AND o.domain_id IN (SELECT domain_id FROM input)
                 ORDER BY o.domain_id FOR UPDATE
             ),
             updated AS (
                 UPDATE region_observations o
                 SET ok = i.ok, error_kind = i.error_kind, status_code = i.status_code,
                     observed_at = i.observed_at, agent_id = $7,
                     -- The new results continue the stored run when they all failed.
                     failing_since = CASE WHEN i.run_all_failed THEN COALESCE(o.failing_since, i.run_since)
                                          ELSE i.run_since END,
                     consecutive_failures = CASE WHEN i.run_all_failed THEN o.consecutive_failures + i.run_failures
                                                 ELSE i.run_failures END
                 FROM input i JOIN old USING (domain_id)
                 WHERE o.region = $6 AND o.domain_id = i.domain_id AND o.observed_at < i.observed_at
                 RETURNING o.domain_id, o.ok, old.ok AS previous
             ),
             inserted AS (
                 INSERT INTO region_observations (domain_id, region, ok, error_kind, status_code, observed_at,
                                                  agent_id, failing_since, consecutive_failures)
                 SELECT domain_id, $6, ok, error_kind, status_code, observed_at, $7, run_since, run_failures
                 FROM input i WHERE NOT EXISTS (SELECT 1 FROM old WHERE old.domain_id = i.domain_id)
                 ORDER BY domain_id
                 ON CONFLICT (domain_id, region) DO UPDATE
                 SET ok = excluded.ok, error_kind = excluded.error_kind, status_code = excluded.status_code,
                     observed_at = excluded.observed_at, agent_id = excluded.agent_id,
                     failing_since = CASE
                         WHEN (SELECT run_all_failed FROM input i WHERE i.domain_id = excluded.domain_id)
                         THEN COALESCE(region_observations.failing_since, excluded.failing_since)
                         ELSE excluded.failing_since END,
                     consecutive_failures = CASE
                         WHEN (SELECT run_all_failed FROM input i WHERE i.domain_id = excluded.domain_id)
                         THEN region_observations.consecutive_failures + excluded.consecutive_failures
                         ELSE excluded.consecutive_failures END
                 WHERE region_observations.observed_at < excluded.observed_at
                 RETURNING domain_id, ok
             )
             SELECT domain_id, ok, previous FROM updated
             UNION ALL SELECT domain_id, ok, NULL FROM inserted",
        )
        .bind(&ids)
        .bind(&oks)
        .bind(&kinds)
        .bind(&codes)
        .bind(&ats)
        .bind(&batch.region)
        .bind(&batch.agent_id)
        .bind(&run_failures)
        .bind(&run_all_failed)
        .bind(&run_since)
        .fetch_all(&self.pool)
        .await?;
        // Only a region's new vote or changed vote is evaluated at once. A repeated failure can
        // matter too (it refreshes a vote that had gone stale), but re-evaluating every repeat
        // costs work per result: the sweep, which looks at every domain with an observation
        // disagreeing with its state, takes those within `consensus_sweep_interval_ms`.
        Ok(rows
            .into_iter()
            .filter(|(_, ok, previous)| *previous != Some(*ok))
            .map(|(id, ok, _)| (id, ok))
            .collect())
    }
}

/// A region failing persistently while consensus holds its domain up: its latest
/// `consecutive_failures` observations (at least the configured
/// `regional_failure_observations`) all failed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RegionalFailure {
    pub region: String,
    /// The first failure of the current run.
    pub since: DateTime<Utc>,
    /// Failed observations in a row, counted as consensus records them (the newest result of
    /// a batch per domain: one per probe unless batches were merged under load).
    pub consecutive_failures: u32,
    /// The latest failure: when, and what failed.
    pub last_observed_at: DateTime<Utc>,
    pub error_kind: Option<String>,
    pub status_code: Option<i32>,
}

/// The regions of `regions` whose latest `threshold` or more observations of the domain all
/// failed, when the domain's consensus state is `up` (a domain down, or not decided, has no
/// *regional* failure: every failing region is part of the state). Oldest run first.
pub async fn regional_failures(
    conn: &mut sqlx::PgConnection,
    domain_id: Uuid,
    regions: &[String],
    state: State,
    threshold: u32,
) -> sqlx::Result<Vec<RegionalFailure>> {
    if !matches!(state, State::Up | State::Degraded) {
        return Ok(Vec::new());
    }
    type Row = (String, DateTime<Utc>, i32, DateTime<Utc>, Option<String>, Option<i32>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT region, failing_since, consecutive_failures, observed_at, error_kind, status_code
         FROM region_observations
         WHERE domain_id = $1 AND region = ANY($2) AND NOT ok AND failing_since IS NOT NULL
           AND consecutive_failures >= $3
         ORDER BY failing_since, region",
    )
    .bind(domain_id)
    .bind(regions)
    .bind(i32::try_from(threshold).unwrap_or(i32::MAX))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(region, since, count, last, error_kind, status_code)| RegionalFailure {
            region,
            since,
            consecutive_failures: u32::try_from(count).unwrap_or(0),
            last_observed_at: last,
            error_kind,
            status_code,
        })
        .collect())
}

/// A domain's latest observation per region.
pub async fn observations(tx: &mut sqlx::PgConnection, domain_id: Uuid) -> sqlx::Result<Vec<Observation>> {
    Ok(observations_of(tx, &[domain_id]).await?.remove(&domain_id).unwrap_or_default())
}

/// The latest observation per region of each of `domain_ids` (a domain without any is
/// absent), in one round trip; each domain's in region order.
pub async fn observations_of(
    tx: &mut sqlx::PgConnection,
    domain_ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Vec<Observation>>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        domain_id: Uuid,
        region: String,
        ok: bool,
        error_kind: Option<String>,
        status_code: Option<i32>,
        observed_at: DateTime<Utc>,
        agent_id: String,
        degraded: bool,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT o.domain_id, o.region, o.ok, o.error_kind, o.status_code, o.observed_at, o.agent_id,
                COALESCE(b.degraded, false) AS degraded
         FROM region_observations o
         LEFT JOIN latency_baselines b ON b.domain_id = o.domain_id AND b.region = o.region
         WHERE o.domain_id = ANY($1) ORDER BY o.domain_id, o.region",
    )
    .bind(domain_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut by_domain: HashMap<Uuid, Vec<Observation>> = HashMap::new();
    for r in rows {
        by_domain.entry(r.domain_id).or_default().push(Observation {
            region: r.region,
            ok: r.ok,
            error_kind: r.error_kind,
            status_code: r.status_code,
            observed_at: r.observed_at,
            agent_id: r.agent_id,
            degraded: r.degraded,
        });
    }
    Ok(by_domain)
}

/// Every region's agent health: each agent's latest canary verdict and saturation report, and
/// the region's verdict aggregated over them ([`Health::aggregate`]). One round trip.
pub async fn health(tx: &mut sqlx::PgConnection) -> sqlx::Result<HashMap<String, Health>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        region: String,
        agent_id: String,
        healthy: Option<bool>,
        health_checked_at: Option<DateTime<Utc>>,
        reported_at: Option<DateTime<Utc>>,
        saturated: Option<bool>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        lag_p95_ms: Option<f64>,
        checked_at: Option<DateTime<Utc>>,
        saturation_reported_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT COALESCE(h.region, s.region) AS region, COALESCE(h.agent_id, s.agent_id) AS agent_id,
                h.healthy, h.checked_at AS health_checked_at, h.reported_at, s.saturated,
                s.since, s.until, s.lag_p95_ms, s.checked_at, s.reported_at AS saturation_reported_at
         FROM agent_health h FULL JOIN agent_saturation s ON s.region = h.region AND s.agent_id = h.agent_id
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *tx)
    .await?;
    type Parts = (Vec<AgentCanary>, Vec<AgentSaturation>, Option<DateTime<Utc>>);
    let mut by_region: HashMap<String, Parts> = HashMap::new();
    for row in rows {
        let (canaries, saturation, saturation_reported_at) = by_region.entry(row.region).or_default();
        if let (Some(healthy), Some(checked_at), Some(reported_at)) =
            (row.healthy, row.health_checked_at, row.reported_at)
        {
            canaries.push(AgentCanary { agent_id: row.agent_id.clone(), healthy, checked_at, reported_at });
        }
        if let (Some(checked_at), Some(reported_at)) = (row.checked_at, row.saturation_reported_at) {
            *saturation_reported_at = (*saturation_reported_at).max(Some(reported_at));
            saturation.push(AgentSaturation {
                agent_id: row.agent_id,
                saturated: row.saturated.unwrap_or(false),
                since: row.since,
                until: row.until,
                lag_p95_ms: row.lag_p95_ms.unwrap_or(0.0),
                checked_at,
            });
        }
    }
    Ok(by_region
        .into_iter()
        .filter_map(|(region, (canaries, saturation, at))| {
            Health::aggregate(canaries, saturation, at).map(|health| (region, health))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::proto::{AgentHealth, Certificate, ProbeResult};

    #[test]
    fn merged_batches_keep_the_newest_per_domain_and_agent() {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let obs = |d: Uuid, ok: bool, s: i64| DomainObservation {
            domain_id: d,
            ok,
            error_kind: None,
            status_code: None,
            observed_at: at(s),
            run: Run::of(ok, at(s)),
            latencies: Vec::new(),
        };
        let batch = |agent: &str, health: Option<(bool, DateTime<Utc>)>, observations| ObservedBatch {
            region: "ams".into(),
            agent_id: agent.into(),
            health: health.map(|canary| BatchHealth { canary: Some(canary), saturation: None }),
            received_at: at(100),
            observations,
            certificates: Vec::new(),
            dns: Vec::new(),
        };
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let merged = ObservedBatch::merge(vec![
            batch("ams-1", Some((true, at(1))), vec![obs(a, true, 1), obs(b, true, 1)]),
            batch("ams-2", None, vec![obs(a, false, 2)]),
            batch("ams-1", Some((false, at(3))), vec![obs(a, false, 3)]),
            batch("ams-1", None, vec![obs(b, false, 0)]),
        ]);
        assert_eq!(merged.len(), 2);
        let first = &merged[0];
        assert_eq!(first.agent_id, "ams-1");
        assert_eq!(first.health.as_ref().and_then(|h| h.canary), Some((false, at(3))));
        let mut seen: Vec<(Uuid, bool)> = first.observations.iter().map(|o| (o.domain_id, o.ok)).collect();
        seen.sort();
        let mut want = vec![(a, false), (b, true)];
        want.sort();
        assert_eq!(seen, want, "the newest observation of each domain wins");
        assert_eq!(merged[1].observations.len(), 1);
    }

    fn result(domain: Uuid, at_us: i64, ok: bool) -> ProbeResult {
        ProbeResult {
            domain_id: domain.as_bytes().to_vec(),
            started_at_unix_us: at_us,
            ok,
            error: if ok { 0 } else { ErrorKind::Connect as i32 },
            ..Default::default()
        }
    }

    #[test]
    fn failures_in_a_row_survive_batching_and_merging() {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        // ok, fail, fail in one batch: a run of 2 since the first failure.
        let (d, base) = (Uuid::now_v7(), at(0).timestamp_micros());
        let batch = Batch {
            results: vec![
                result(d, base + 2_000_000, false),
                result(d, base, true),
                result(d, base + 1_000_000, false),
            ],
            ..Default::default()
        };
        let observed = ObservedBatch::from_batch("sin", "sin-1", &batch, at(5));
        let run = observed.observations[0].run;
        assert_eq!(run, Run { results: 3, failures: 2, since: Some(at(1)) });
        assert!(!run.all_failed(), "the run starts inside the batch: it does not continue a stored one");
        // Two queued batches of failures merged (the older arriving second): one run of both.
        let one = |s: i64, ok: bool| ObservedBatch {
            region: "sin".into(),
            agent_id: "sin-1".into(),
            health: None,
            received_at: at(s),
            observations: vec![DomainObservation {
                domain_id: d,
                ok,
                error_kind: None,
                status_code: None,
                observed_at: at(s),
                run: Run::of(ok, at(s)),
                latencies: if ok { vec![s as f32] } else { Vec::new() },
            }],
            certificates: Vec::new(),
            dns: Vec::new(),
        };
        let merged = ObservedBatch::merge(vec![one(20, false), one(10, false), one(30, false)]);
        let o = &merged[0].observations[0];
        assert_eq!(o.observed_at, at(30));
        assert_eq!(o.run, Run { results: 3, failures: 3, since: Some(at(10)) });
        assert!(o.run.all_failed());
        // A success in between ends the run there.
        let merged = ObservedBatch::merge(vec![one(10, false), one(20, true), one(30, false)]);
        assert_eq!(merged[0].observations[0].run, Run { results: 3, failures: 1, since: Some(at(30)) });
        let merged = ObservedBatch::merge(vec![one(10, false), one(20, false), one(30, true)]);
        assert_eq!(merged[0].observations[0].run, Run { results: 3, failures: 0, since: None });
    }

    #[test]
    fn latencies_of_successes_are_kept_oldest_first_across_batches_and_merges() {
        let d = Uuid::now_v7();
        let base = Utc::now().timestamp_micros();
        let timed =
            |at: i64, ok: bool, ms: u32| ProbeResult { total_us: ms * 1000, ..result(d, base + at, ok) };
        let batch = |results| Batch { results, ..Default::default() };
        // Out of order in the batch, a failure among them: sorted by start, failures left out.
        let first = ObservedBatch::from_batch(
            "ams",
            "ams-1",
            &batch(vec![timed(3, true, 30), timed(1, true, 10), timed(2, false, 999)]),
            Utc::now(),
        );
        assert_eq!(first.observations[0].latencies, [10.0, 30.0]);
        let second = ObservedBatch::from_batch("ams", "ams-1", &batch(vec![timed(5, true, 50)]), Utc::now());
        let merged = ObservedBatch::merge(vec![first.clone(), second.clone()]);
        assert_eq!(merged[0].observations[0].latencies, [10.0, 30.0, 50.0]);
        // The older batch arriving second goes first.
        let merged = ObservedBatch::merge(vec![second, first]);
        assert_eq!(merged[0].observations[0].latencies, [10.0, 30.0, 50.0]);
        // Bounded, the newest kept.
        let long: Vec<f32> = (0..MAX_LATENCIES as u32 + 5).map(|i| i as f32).collect();
        let joined = join_latencies(&long, &[1.0]);
        assert_eq!(joined.len(), MAX_LATENCIES);
        assert_eq!((joined[0], *joined.last().unwrap()), (6.0, 1.0));
    }

    #[test]
    fn newest_observation_per_domain_is_kept() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let base = Utc::now().timestamp_micros();
        let mut later = result(a, base + 10, false);
        later.certificate =
            Some(Certificate { serial: "0a".into(), not_after_unix_s: 2_000_000_000, ..Default::default() });
        let batch = Batch {
            results: vec![result(a, base, true), later, result(a, base + 5, true), result(b, base, true)],
            health: Some(AgentHealth { healthy: false, checked_at_unix_us: base, ..Default::default() }),
            ..Default::default()
        };
        let observed = ObservedBatch::from_batch("ams", "ams-1", &batch, Utc::now());
        assert_eq!(observed.observations.len(), 2);
        let a_obs = observed.observations.iter().find(|o| o.domain_id == a).unwrap();
        assert!(!a_obs.ok);
        assert_eq!(a_obs.error_kind.as_deref(), Some("connect"));
        assert_eq!(observed.certificates.len(), 1);
        let health = observed.health.unwrap();
        assert_eq!(health.canary.map(|c| c.0), Some(false));
        assert_eq!(health.saturation, None, "an agent that predates the saturation fields");
    }

    #[test]
    fn every_results_answer_set_is_kept_for_dns_drift() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let base = Utc::now().timestamp_micros();
        let mut first = result(a, base, true);
        first.resolved_addrs = vec!["192.0.2.2".into(), "192.0.2.1".into(), "192.0.2.1".into()];
        let mut second = result(a, base + 5, true);
        second.resolved_ip = "192.0.2.9".into();
        let mut unresolved = result(b, base, false);
        unresolved.error = ErrorKind::Dns as i32;
        let mut only_ip = result(c, base, true);
        only_ip.resolved_ip = "2001:db8::1".into();
        let batch = Batch { results: vec![first, second, unresolved, only_ip], ..Default::default() };
        let observed = ObservedBatch::from_batch("ams", "ams-1", &batch, Utc::now());
        let got: Vec<(Uuid, Vec<&str>)> = observed
            .dns
            .iter()
            .map(|d| (d.domain_id, d.addrs.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            got,
            [(a, vec!["192.0.2.1", "192.0.2.2"]), (a, vec!["192.0.2.9"]), (c, vec!["2001:db8::1"])],
            "every result, sorted and deduplicated; nothing for a name that did not resolve"
        );
        assert_eq!(observed.observations.len(), 3, "still the newest observation per domain");
    }
}
