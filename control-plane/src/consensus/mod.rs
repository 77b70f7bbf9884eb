//! Consensus across regions: whether a domain is up or down, decided from every region's latest
//! observation, and the incidents and notifications that follow.
//!
//! - The ingest path hands each stored batch's observations to a bounded queue
//!   ([`ObservationSender::offer`]; a full queue drops and counts, the ack never waits).
//! - [`Consensus::run`] consumes the queue: one upsert per batch into `region_observations`
//!   (newest per domain, never backwards), the agents' health into `region_health`, then an
//!   evaluation of each domain whose vote may have changed, confirmation probes for failures
//!   of domains not (yet) down, and certificate expiry notifications. Every
//!   `consensus_sweep_interval_ms` it re-evaluates the domains that could change state (see
//!   [`Consensus::sweep`]), which also repairs anything a dropped observation or a stale
//!   per-replica hint skipped.
//! - [`Consensus::evaluate`]: one transaction per domain that locks its `domain_state` row,
//!   reads the observations, decides ([`decide`]) and, on a transition, opens or resolves the
//!   incident and enqueues the notification, records the transition (`domain_transitions`) and
//!   applies flap detection ([`crate::flap`]: entering flap mode, holding the notification),
//!   all before COMMIT. Replicas serialise on the row lock, so one transition opens one
//!   incident.

pub mod decide;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::proto::{Batch, ErrorKind};
use shared::{DomainId, ProbeRequest, RedisKeys};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use decide::{AgentSaturation, Decision, Health, Observation, Outcome, Standing, State, Vote};

use crate::clock::Clock;
use crate::config::Config;
use crate::expiry;
use crate::flap;
use crate::incidents::{self, Alert, Subject};
use crate::metrics::Metrics;
use crate::notify::{self, Notification};

/// Domains evaluated at once (each in its own transaction; replicas and tasks serialise on the
/// domain's state row).
const EVALUATE_CONCURRENCY: usize = 8;

/// Domains the sweep evaluates at once: fewer than the observation path, which must keep up.
const SWEEP_CONCURRENCY: usize = 2;

/// Queued batches merged into one recording step.
const MERGE_BATCHES: usize = 256;

/// Certificate expiry notifications remembered as sent (then the memory starts over; the
/// outbox's dedup key still prevents duplicates).
const CERT_MEMORY: usize = 100_000;

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

/// The certificate that expires first of those a domain's probe saw in a batch: over the first
/// hop's chain (the leaf and the earliest-expiring certificate above it) and every later hop's.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFact {
    pub domain_id: Uuid,
    /// What notices about this certificate are deduplicated by: a leaf's serial, or for a
    /// certificate above the leaf (which agents send without its serial) `i<position>-` and a
    /// digest of its subject and expiry.
    pub serial: String,
    pub subject: String,
    pub not_after: DateTime<Utc>,
    /// The hop's host; empty: the monitored URL's own host.
    pub host: String,
    /// 0 for the leaf, N for the Nth intermediate above it.
    pub position: u32,
}

impl CertificateFact {
    /// The earliest-expiring certificate of `result`'s hops and chains; `None` without a
    /// certificate (or without a usable leaf serial and expiry).
    pub fn earliest(domain_id: Uuid, result: &shared::proto::ProbeResult) -> Option<CertificateFact> {
        let first = result.certificate.as_ref()?;
        let mut facts = Vec::new();
        for cert in std::iter::once(first).chain(&result.redirect_certificates) {
            let Some(not_after) = Utc.timestamp_opt(cert.not_after_unix_s, 0).single() else { continue };
            if cert.serial.is_empty() {
                continue;
            }
            // The first certificate's host is empty when it is the monitored URL's.
            let host = cert.host.clone();
            facts.push(CertificateFact {
                domain_id,
                serial: cert.serial.clone(),
                subject: cert.subject.clone(),
                not_after,
                host: host.clone(),
                position: 0,
            });
            let Some(above) = &cert.chain_earliest else { continue };
            let Some(not_after) = Utc.timestamp_opt(above.not_after_unix_s, 0).single() else { continue };
            let subject =
                if above.position == 1 && above.subject.is_empty() { &cert.issuer } else { &above.subject };
            let digest = Sha256::digest(format!("{subject}\n{}", above.not_after_unix_s));
            facts.push(CertificateFact {
                domain_id,
                serial: format!("i{}-{}", above.position, hex::encode(&digest[..8])),
                subject: subject.clone(),
                not_after,
                host,
                position: above.position,
            });
        }
        facts.into_iter().min_by_key(|f| (f.not_after, f.position))
    }

    /// How a notice names the certificate: `the certificate of <url>`, `intermediate 1
    /// (CN=R11) of the chain of <url>`, `the certificate of b.example (redirect target of
    /// <url>)`.
    fn describe(&self, url: &str) -> String {
        let own =
            self.host.is_empty() || url::Url::parse(url).is_ok_and(|u| u.host_str() == Some(&self.host));
        let whose = if own { url.to_owned() } else { format!("{} (redirect target of {url})", self.host) };
        match self.position {
            0 if own => format!("the certificate of {whose}"),
            0 => format!("the certificate of {whose}, {}", self.subject),
            n => format!("intermediate {n} ({}) of the certificate chain of {whose}", self.subject),
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
}

impl ObservedBatch {
    /// Merges batches of the same agent: the newest observation per domain, the newest health,
    /// every certificate. Order of agents is kept.
    pub fn merge(batches: Vec<ObservedBatch>) -> Vec<ObservedBatch> {
        // Per agent: the merged batch and its newest observation per domain, collected once.
        let mut merged: Vec<(ObservedBatch, HashMap<Uuid, DomainObservation>)> = Vec::new();
        for mut batch in batches {
            let observations = std::mem::take(&mut batch.observations);
            let found =
                merged.iter().position(|(m, _)| m.region == batch.region && m.agent_id == batch.agent_id);
            let at = match found {
                Some(at) => {
                    let into = &mut merged[at].0;
                    into.received_at = into.received_at.max(batch.received_at);
                    into.health = match (into.health.take(), batch.health) {
                        (Some(a), Some(b)) => Some(a.newest(b)),
                        (a, b) => a.or(b),
                    };
                    into.certificates.extend(batch.certificates);
                    at
                }
                None => {
                    merged.push((batch, HashMap::new()));
                    merged.len() - 1
                }
            };
            let newest = &mut merged[at].1;
            for mut o in observations {
                match newest.get_mut(&o.domain_id) {
                    Some(existing) if existing.observed_at >= o.observed_at => {
                        existing.run = o.run.then(existing.run);
                    }
                    Some(existing) => {
                        o.run = existing.run.then(o.run);
                        *existing = o;
                    }
                    None => {
                        newest.insert(o.domain_id, o);
                    }
                }
            }
        }
        merged
            .into_iter()
            .map(|(mut batch, newest)| {
                batch.observations = newest.into_values().collect();
                batch
            })
            .collect()
    }

    /// The newest observation (and certificate) per domain of `batch`.
    pub fn from_batch(region: &str, agent_id: &str, batch: &Batch, received_at: DateTime<Utc>) -> Self {
        let mut per_domain: HashMap<Uuid, Vec<(i64, &shared::proto::ProbeResult)>> = HashMap::new();
        for result in &batch.results {
            let Some(id) = shared::proto::uuid_from_bytes(&result.domain_id) else { continue };
            per_domain.entry(id).or_default().push((result.started_at_unix_us, result));
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
            observations.push(DomainObservation {
                domain_id,
                ok: result.ok,
                error_kind: error_kind.map(str::to_owned),
                status_code: (result.status_code != 0).then_some(result.status_code as i32),
                observed_at,
                run,
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
        }
    }
}

/// The ingest side of the observation queue. Cheap to clone.
#[derive(Clone)]
pub struct ObservationSender {
    queue: mpsc::Sender<ObservedBatch>,
    metrics: Metrics,
}

impl ObservationSender {
    /// Queues a stored batch's observations without waiting; a full queue drops them (counted).
    pub fn offer(&self, batch: ObservedBatch) {
        if let Err(error) = self.queue.try_send(batch) {
            self.metrics.observation_drops.inc();
            tracing::warn!(reason = %error, "observation queue full or closed: observations dropped");
        }
    }
}

/// The bounded observation queue between ingest and [`Consensus::run`].
pub fn queue(capacity: usize, metrics: Metrics) -> (ObservationSender, mpsc::Receiver<ObservedBatch>) {
    let (queue, receiver) = mpsc::channel(capacity);
    (ObservationSender { queue, metrics }, receiver)
}

/// The settings consensus reads from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub freshness_factor: f64,
    pub sweep_interval: Duration,
    pub confirmation_min_interval: Duration,
    /// Ascending.
    pub cert_thresholds_days: Vec<u32>,
    /// The global flap settings (a domain's `flap` overrides are merged over them).
    pub flap: flap::Settings,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        let mut thresholds = config.cert_expiry_thresholds_days.clone();
        thresholds.sort_unstable();
        thresholds.dedup();
        Self {
            freshness_factor: config.consensus_freshness_factor,
            sweep_interval: Duration::from_millis(config.consensus_sweep_interval_ms),
            confirmation_min_interval: Duration::from_millis(config.confirmation_min_interval_ms),
            cert_thresholds_days: thresholds,
            flap: flap::Settings::from_config(config),
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The state after the evaluation.
    pub state: State,
    pub outcome: Outcome,
    /// The incident opened or resolved by this evaluation.
    pub incident: Option<Uuid>,
    /// The domain's regions (expanded).
    pub regions: Vec<String>,
    /// What flap detection decided on this transition (`Nothing` without one); with `Enter` or
    /// `Stay` the incident's notification was held.
    pub flap: flap::Decision,
}

/// The consensus engine. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    pool: PgPool,
    redis: Client,
    keys: RedisKeys,
    metrics: Metrics,
    settings: Arc<Settings>,
    /// Dedup keys of certificate notices already enqueued.
    certs_sent: Arc<Mutex<HashSet<String>>>,
    /// The state this replica last saw each domain in: a hint only (another replica may have
    /// moved it since), used to skip evaluating a failure of a domain already down. The sweep
    /// corrects whatever a stale hint skipped.
    known: Arc<Mutex<HashMap<Uuid, State>>>,
    clock: Arc<dyn Clock>,
}

/// A domain as consensus needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct DomainRow {
    tenant_id: Uuid,
    url: String,
    regions: Vec<String>,
    quorum: Option<i32>,
    interval_s: i32,
    paused: bool,
    flap: Option<Value>,
}

impl Consensus {
    pub fn new(pool: PgPool, redis: Client, keys: RedisKeys, metrics: Metrics, settings: Settings) -> Self {
        Self {
            pool,
            redis,
            keys,
            metrics,
            settings: Arc::new(settings),
            certs_sent: Arc::default(),
            known: Arc::default(),
            clock: crate::clock::system(),
        }
    }

    /// The clock evaluations and the sweep take "now" from (the system clock unless set; a
    /// `ManualClock` in tests and benchmarks, shared with the flap check and digests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn error(&self, reason: &str, error: &dyn std::fmt::Display) {
        self.metrics.consensus_error(reason);
        tracing::warn!(reason, error = %error, "consensus step failed");
    }

    /// Consumes the observation queue, and sweeps periodically in a task of its own so a long
    /// sweep never holds up observations, until `shutdown`.
    pub async fn run(self, mut queue: mpsc::Receiver<ObservedBatch>, shutdown: CancellationToken) {
        let sweeper = {
            let (this, shutdown) = (self.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut sweep = tokio::time::interval(this.settings.sweep_interval);
                sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = sweep.tick() => {
                            if let Err(error) = this.sweep().await {
                                this.error("sweep", &shared::error::Chain(&*error).to_string());
                            }
                        }
                    }
                }
            })
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = queue.recv() => match batch {
                    Some(first) => {
                        // Whatever else is queued goes with it: one upsert per agent for all of it.
                        let mut batches = vec![first];
                        while batches.len() < MERGE_BATCHES {
                            match queue.try_recv() {
                                Ok(batch) => batches.push(batch),
                                Err(_) => break,
                            }
                        }
                        for batch in ObservedBatch::merge(batches) {
                            self.process(batch).await;
                        }
                    }
                    None => break,
                },
            }
        }
        if let Err(error) = sweeper.await {
            tracing::error!(%error, "consensus sweep task panicked");
        }
    }

    /// Records one batch's observations, evaluates the domains whose vote may have changed
    /// (several at once), requests confirmation probes and checks certificates. Failures are
    /// logged and counted.
    pub async fn process(&self, batch: ObservedBatch) {
        use futures::StreamExt;
        if let Some(health) = &batch.health {
            if let Some((healthy, checked_at)) = health.canary {
                if let Err(error) =
                    self.record_health(&batch.region, healthy, checked_at, batch.received_at).await
                {
                    self.error("health", &error);
                }
            }
            if let Some(saturation) = &health.saturation {
                // Before the observations are recorded and evaluated: their votes read it.
                if let Err(error) = self.record_saturation(&batch.region, saturation, batch.received_at).await
                {
                    self.error("saturation", &error);
                }
                let set_aside = batch
                    .observations
                    .iter()
                    .filter(|o| {
                        !o.ok
                            && decide::saturation_can_cause(o.error_kind.as_deref())
                            && saturation.covers(o.observed_at)
                    })
                    .count();
                if set_aside > 0 {
                    self.metrics.saturated_failures(&batch.region, set_aside as u64);
                    tracing::info!(
                        region = batch.region, agent_id = batch.agent_id, failures = set_aside,
                        since = ?saturation.since, until = ?saturation.until, lag_p95_ms = saturation.lag_p95_ms,
                        "failures observed while the agent was saturated: unknown, not votes"
                    );
                }
            }
        }
        let changed = match self.record(&batch).await {
            Ok(changed) => changed,
            Err(error) => {
                self.error("record", &error);
                return;
            }
        };
        let changed: Vec<(Uuid, bool)> = {
            let known = self.known.lock().expect("consensus hint lock");
            // A failure of a domain this replica saw go down cannot change anything.
            changed.into_iter().filter(|(id, ok)| *ok || known.get(id) != Some(&State::Down)).collect()
        };
        let region = batch.region.as_str();
        futures::stream::iter(changed)
            .for_each_concurrent(EVALUATE_CONCURRENCY, |(domain_id, ok)| async move {
                match self.evaluate(domain_id, self.clock.now()).await {
                    Ok(Some(evaluated)) if !ok && evaluated.state != State::Down => {
                        self.confirm(domain_id, region, &evaluated.regions).await;
                    }
                    Ok(_) => {}
                    Err(error) => self.error("evaluate", &shared::error::Chain(&*error).to_string()),
                }
            })
            .await;
        for cert in &batch.certificates {
            if let Err(error) = self.certificate(cert, batch.received_at).await {
                self.error("certificate", &error);
            }
        }
    }

    /// Records a region's agent health (the newest self-check wins).
    pub async fn record_health(
        &self,
        region: &str,
        healthy: bool,
        checked_at: DateTime<Utc>,
        reported_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO region_health (region, healthy, checked_at, reported_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (region) DO UPDATE
             SET healthy = excluded.healthy, checked_at = excluded.checked_at, reported_at = excluded.reported_at
             WHERE region_health.checked_at <= excluded.checked_at",
        )
        .bind(region)
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
        let rows: Vec<(Uuid, bool, Option<bool>)> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::bool[], $3::text[], $4::int[], $5::timestamptz[],
                                      $8::int[], $9::bool[], $10::timestamptz[])
                     AS u(domain_id, ok, error_kind, status_code, observed_at, run_failures, run_all_failed, run_since)
                 WHERE EXISTS (SELECT 1 FROM domains d WHERE d.id = u.domain_id)
             ),
             old AS (
                 SELECT o.domain_id, o.ok FROM region_observations o
                 WHERE o.region = $6 AND o.domain_id IN (SELECT domain_id FROM input)
             ),
             up AS (
                 INSERT INTO region_observations (domain_id, region, ok, error_kind, status_code, observed_at,
                                                  agent_id, failing_since, consecutive_failures)
                 SELECT domain_id, $6, ok, error_kind, status_code, observed_at, $7, run_since, run_failures
                 FROM input ORDER BY domain_id
                 ON CONFLICT (domain_id, region) DO UPDATE
                 SET ok = excluded.ok, error_kind = excluded.error_kind, status_code = excluded.status_code,
                     observed_at = excluded.observed_at, agent_id = excluded.agent_id,
                     -- The new results continue the stored run when they all failed.
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
             SELECT up.domain_id, up.ok, old.ok FROM up LEFT JOIN old USING (domain_id)",
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
        // costs a transaction per result: the sweep, which looks at every domain with an
        // observation disagreeing with its state, takes those within `consensus_sweep_interval_ms`.
        Ok(rows
            .into_iter()
            .filter(|(_, ok, previous)| *previous != Some(*ok))
            .map(|(id, ok, _)| (id, ok))
            .collect())
    }

    /// Re-evaluates every domain that could change state: one without a decided state, or one
    /// with a fresh observation that disagrees with its state (a failure while up, a success
    /// while down), or one resumed with a held incident to announce if it is still down. A
    /// domain whose observations all agree with its state cannot transition, whatever goes
    /// stale: staleness only removes voters. Returns how many were evaluated.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        use futures::StreamExt;
        let now = self.clock.now();
        // Only fresh observations can vote, so only they can move a domain.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT o.domain_id FROM region_observations o
             JOIN domains d ON d.id = o.domain_id
             LEFT JOIN domain_state s USING (domain_id)
             WHERE o.observed_at > $2 - make_interval(secs => d.interval_s * $1 + 5)
               AND (s.state IS NULL OR s.state NOT IN ('up', 'down') OR s.announce_after IS NOT NULL
                    OR (s.state = 'up' AND NOT o.ok) OR (s.state = 'down' AND o.ok))
             ORDER BY o.domain_id",
        )
        .bind(self.settings.freshness_factor)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        futures::stream::iter(&ids)
            .for_each_concurrent(SWEEP_CONCURRENCY, |id| async move {
                if let Err(error) = self.evaluate(*id, now).await {
                    self.error("evaluate", &shared::error::Chain(&*error).to_string());
                }
            })
            .await;
        Ok(ids.len())
    }

    fn remember(&self, domain_id: Uuid, state: State) {
        self.known.lock().expect("consensus hint lock").insert(domain_id, state);
    }

    /// The domain's regions: its own, or every configured region when it names none.
    async fn regions_of(&self, tx: &mut sqlx::PgConnection, own: &[String]) -> sqlx::Result<Vec<String>> {
        if !own.is_empty() {
            return Ok(own.to_vec());
        }
        crate::regions::list(&mut *tx).await
    }

    /// Evaluates one domain in one transaction (see the module documentation). `None` when the
    /// domain does not exist.
    pub async fn evaluate(&self, domain_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<Option<Evaluated>> {
        self.metrics.consensus_evaluations.inc();
        let mut tx = self.pool.begin().await?;
        // Lock order as for domain writes: the domain row first (KEY SHARE keeps it from being
        // deleted under us), then its state row.
        let domain: Option<DomainRow> = sqlx::query_as(
            "SELECT tenant_id, url, regions, quorum, interval_s, paused, flap FROM domains WHERE id = $1 FOR KEY SHARE",
        )
        .bind(domain_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(domain) = domain else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO domain_state (domain_id, state, since) VALUES ($1, 'unknown', $2)
             ON CONFLICT (domain_id) DO NOTHING",
        )
        .bind(domain_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        type StateRow = (String, Option<Uuid>, DateTime<Utc>, Option<DateTime<Utc>>);
        let (state, open_incident, since, announce_after): StateRow = sqlx::query_as(
            "SELECT state, open_incident_id, since, announce_after FROM domain_state
             WHERE domain_id = $1 FOR UPDATE",
        )
        .bind(domain_id)
        .fetch_one(&mut *tx)
        .await?;
        // `now` was taken before the lock wait: an evaluation that committed meanwhile may have
        // stamped a later transition. Never record one before it, so transitions (and the flap
        // score and digests built from them) stay in commit order.
        let now = now.max(since);
        let current = State::parse(&state);
        let regions = self.regions_of(&mut tx, &domain.regions).await?;
        let unchanged = Evaluated {
            state: current,
            outcome: Outcome::Unchanged,
            incident: None,
            regions: regions.clone(),
            flap: flap::Decision::Nothing,
        };
        if domain.paused {
            tx.commit().await?;
            return Ok(Some(unchanged));
        }
        let observations = observations(&mut tx, domain_id).await?;
        let health = health(&mut tx).await?;
        let decision = decide::decide(&decide::Inputs {
            regions: &regions,
            quorum: domain.quorum.and_then(|q| u32::try_from(q).ok()),
            freshness: decide::freshness(domain.interval_s.max(1) as u32, self.settings.freshness_factor),
            now,
            observations: &observations,
            health: &health,
            current,
        });
        let subject = Subject { tenant_id: domain.tenant_id, domain_id, url: domain.url.clone() };
        let (next, voting) = match decision.outcome {
            Outcome::Unchanged => {
                if let (Some(after), Some(incident), State::Down) = (announce_after, open_incident, current) {
                    // Resumed while its incident's opening was held: announce it once a failure
                    // quorum observed after the resume confirms the outage goes on.
                    let confirmed = decision
                        .votes
                        .iter()
                        .filter(|v| v.standing == Standing::Failing)
                        .filter(|v| v.observation.as_ref().is_some_and(|o| o.observed_at >= after))
                        .count() as u32;
                    if confirmed >= decision.quorum {
                        let added = incidents::announce_after_resume(&mut tx, &subject, incident).await?;
                        sqlx::query("UPDATE domain_state SET announce_after = NULL WHERE domain_id = $1")
                            .bind(domain_id)
                            .execute(&mut *tx)
                            .await?;
                        tracing::info!(%domain_id, %incident, added, "held incident announced: still down after monitoring resumed");
                    }
                }
                tx.commit().await?;
                self.remember(domain_id, current);
                return Ok(Some(unchanged));
            }
            Outcome::Down => (State::Down, voters(&decision, Standing::Failing)),
            Outcome::Up => (State::Up, voters(&decision, Standing::Ok)),
        };
        // Flap detection first: it decides whether the incident's notification goes out.
        let flap_settings =
            flap::settings_for(&self.settings.flap, domain.flap.as_ref(), domain_id, &self.metrics);
        let assessment = flap::assess(&mut tx, domain_id, current.as_str(), now, &flap_settings).await?;
        let alert = assessment.alert();
        let incident = match next {
            State::Down => Some(incidents::open(&mut tx, &subject, now, &voting, alert).await?),
            _ => match open_incident {
                Some(id) => {
                    incidents::resolve(&mut tx, &subject, id, now, &voting, alert).await?.then_some(id)
                }
                None => None,
            },
        };
        let transition = flap::Transition {
            subject: &subject,
            at: now,
            from: current.as_str(),
            to: next.as_str(),
            regions: &voting,
        };
        let period = flap::record(&mut tx, &transition, incident, &assessment).await?;
        sqlx::query(
            "UPDATE domain_state SET state = $2, since = $3, evaluated_at = $3, announce_after = NULL,
                 open_incident_id = CASE WHEN $2 = 'down' THEN $4 ELSE NULL END
             WHERE domain_id = $1",
        )
        .bind(domain_id)
        .bind(next.as_str())
        .bind(now)
        .bind(incident)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.metrics.transition(current.as_str(), next.as_str());
        match assessment.decision {
            flap::Decision::Enter => {
                self.metrics.flap_entries.inc();
                tracing::info!(%domain_id, period = ?period, score = assessment.score, "domain entered flap mode");
            }
            flap::Decision::Leave => {
                self.metrics.flap_exits.inc();
                tracing::info!(%domain_id, score = assessment.score, settled = next.as_str(), "domain left flap mode");
            }
            _ => {}
        }
        if alert == Alert::Hold && incident.is_some() {
            self.metrics.flap_held_notifications.inc();
        }
        match decision.outcome {
            Outcome::Down => self.metrics.incidents_opened.inc(),
            _ if incident.is_some() => self.metrics.incidents_resolved.inc(),
            _ => 0,
        };
        tracing::info!(
            domain_id = %domain_id, from = current.as_str(), to = next.as_str(), incident = ?incident,
            failing = decision.failing, passing = decision.passing, quorum = decision.quorum,
            flap = ?assessment.decision, "domain state changed"
        );
        self.remember(domain_id, next);
        Ok(Some(Evaluated {
            state: next,
            outcome: decision.outcome,
            incident,
            regions,
            flap: assessment.decision,
        }))
    }

    /// Asks the domain's other regions to probe it now, at most once per
    /// `confirmation_min_interval_ms` per domain (across replicas, through Redis).
    pub async fn confirm(&self, domain_id: Uuid, region: &str, regions: &[String]) {
        let others: Vec<String> = regions.iter().filter(|r| *r != region).cloned().collect();
        if others.is_empty() {
            return;
        }
        let ms = self.settings.confirmation_min_interval.as_millis() as i64;
        let lock: Result<Option<String>, _> = self
            .redis
            .set(
                self.keys.confirmation_lock(&domain_id.to_string()),
                1,
                Some(Expiration::PX(ms.max(1))),
                Some(SetOptions::NX),
                false,
            )
            .await;
        match lock {
            Ok(None) => {
                self.metrics.confirmation("rate_limited");
                return;
            }
            Ok(Some(_)) => {}
            Err(error) => {
                self.metrics.confirmation("error");
                self.error("confirmation", &error);
                return;
            }
        }
        let request = ProbeRequest {
            domain_id: DomainId(domain_id),
            regions: others,
            reason: "confirmation".into(),
            request_id: None,
            config: None,
        };
        let payload = match serde_json::to_string(&request) {
            Ok(payload) => payload,
            Err(error) => return self.error("confirmation", &error),
        };
        match self.redis.publish::<i64, _, _>(self.keys.probe_requests(), payload).await {
            Ok(_) => {
                self.metrics.confirmation("published");
                tracing::debug!(%domain_id, region, "confirmation probe requested");
            }
            Err(error) => {
                self.metrics.confirmation("error");
                self.error("confirmation", &error);
            }
        }
    }

    /// Enqueues the expiry notice `cert` is due ([`crate::expiry::due`]): a
    /// `certificate_expiring` notification once per (domain, serial, threshold), or a
    /// `certificate_expired` one once per (domain, serial) after `not_after`. The dedup key
    /// `cert:<domain>:<serial>:<days | expired>` makes each once-only; an in-memory set spares
    /// the database the repeats. Returns whether outbox rows were added.
    pub async fn certificate(&self, cert: &CertificateFact, now: DateTime<Utc>) -> sqlx::Result<bool> {
        let Some(notice) = expiry::due(&self.settings.cert_thresholds_days, cert.not_after, now) else {
            return Ok(false);
        };
        let dedup_key = format!("cert:{}:{}:{}", cert.domain_id, cert.serial, notice.key_part());
        if self.certs_sent.lock().expect("certificate memory").contains(&dedup_key) {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        let domain: Option<(Uuid, String)> =
            sqlx::query_as("SELECT tenant_id, url FROM domains WHERE id = $1")
                .bind(cert.domain_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((tenant_id, url)) = domain else {
            tx.rollback().await?;
            return Ok(false);
        };
        let days_left = expiry::days_left(cert.not_after, now);
        let host = if cert.host.is_empty() {
            url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned))
        } else {
            Some(cert.host.clone())
        };
        let mut details = json!({
            "serial": cert.serial, "subject": cert.subject, "not_after": cert.not_after,
            "days_left": days_left, "host": host, "position": cert.position,
        });
        match notice {
            expiry::Notice::Expiring { threshold_days } => details["threshold_days"] = json!(threshold_days),
            expiry::Notice::Expired => {
                details["expired_at"] = json!(cert.not_after);
                details["expired_for_s"] = json!((now - cert.not_after).num_seconds().max(0));
            }
        }
        let notification = Notification {
            kind: notice.kind().into(),
            tenant_id,
            domain_id: Some(cert.domain_id),
            url: Some(url.clone()),
            incident_id: None,
            summary: expiry::summary(notice, &cert.describe(&url), cert.not_after, now),
            details,
            occurred_at: now,
        };
        let added = notify::enqueue(&mut tx, &notification, &dedup_key).await?;
        tx.commit().await?;
        if added > 0 {
            self.metrics.cert_expiry_notifications.inc();
        }
        let mut sent = self.certs_sent.lock().expect("certificate memory");
        if sent.len() >= CERT_MEMORY {
            sent.clear();
        }
        sent.insert(dedup_key);
        Ok(added > 0)
    }
}

/// The voting regions with `standing`, as stored on incidents and events.
fn voters(decision: &Decision, standing: Standing) -> Value {
    Value::Array(
        decision
            .votes
            .iter()
            .filter(|v| v.standing == standing)
            .filter_map(|v| v.observation.as_ref())
            .map(|o| {
                json!({
                    "region": o.region, "error_kind": o.error_kind, "status_code": o.status_code,
                    "observed_at": o.observed_at, "agent_id": o.agent_id,
                })
            })
            .collect(),
    )
}

/// A region failing persistently while consensus holds its domain up: its latest
/// `consecutive_failures` observations (at least the configured
/// `regional_failure_observations`) all failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    if state != State::Up {
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
    #[derive(sqlx::FromRow)]
    struct Row {
        region: String,
        ok: bool,
        error_kind: Option<String>,
        status_code: Option<i32>,
        observed_at: DateTime<Utc>,
        agent_id: String,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT region, ok, error_kind, status_code, observed_at, agent_id FROM region_observations
         WHERE domain_id = $1 ORDER BY region",
    )
    .bind(domain_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Observation {
            region: r.region,
            ok: r.ok,
            error_kind: r.error_kind,
            status_code: r.status_code,
            observed_at: r.observed_at,
            agent_id: r.agent_id,
        })
        .collect())
}

/// Every region's latest agent health: the canary verdict and each agent's saturation (a
/// region with saturation reports but no verdict counts as healthy). One round trip.
pub async fn health(tx: &mut sqlx::PgConnection) -> sqlx::Result<HashMap<String, Health>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        region: String,
        healthy: Option<bool>,
        reported_at: Option<DateTime<Utc>>,
        agent_id: Option<String>,
        saturated: Option<bool>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        lag_p95_ms: Option<f64>,
        checked_at: Option<DateTime<Utc>>,
        saturation_reported_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT COALESCE(h.region, s.region) AS region, h.healthy, h.reported_at, s.agent_id, s.saturated,
                s.since, s.until, s.lag_p95_ms, s.checked_at, s.reported_at AS saturation_reported_at
         FROM region_health h FULL JOIN agent_saturation s ON s.region = h.region
         ORDER BY 1, s.agent_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut health: HashMap<String, Health> = HashMap::new();
    for row in rows {
        let Some(reported_at) = row.reported_at.or(row.saturation_reported_at) else { continue };
        let entry = health.entry(row.region).or_insert_with(|| Health {
            healthy: row.healthy.unwrap_or(true),
            reported_at,
            saturation: Vec::new(),
        });
        if let (Some(agent_id), Some(checked_at)) = (row.agent_id, row.checked_at) {
            entry.saturation.push(AgentSaturation {
                agent_id,
                saturated: row.saturated.unwrap_or(false),
                since: row.since,
                until: row.until,
                lag_p95_ms: row.lag_p95_ms.unwrap_or(0.0),
                checked_at,
            });
        }
    }
    Ok(health)
}

#[cfg(test)]
mod tests {

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
        };
        let batch = |agent: &str, health: Option<(bool, DateTime<Utc>)>, observations| ObservedBatch {
            region: "ams".into(),
            agent_id: agent.into(),
            health: health.map(|canary| BatchHealth { canary: Some(canary), saturation: None }),
            received_at: at(100),
            observations,
            certificates: Vec::new(),
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

    use super::*;
    use shared::proto::{AgentHealth, Certificate, ProbeResult};

    #[test]
    fn the_earliest_certificate_over_chains_and_hops_is_watched_and_named() {
        let domain_id = Uuid::now_v7();
        let leaf = |host: &str, serial: &str, not_after: i64| Certificate {
            host: host.into(),
            subject: format!("CN={}", if host.is_empty() { "example.com" } else { host }),
            issuer: "CN=R11".into(),
            serial: serial.into(),
            not_after_unix_s: not_after,
            ..Default::default()
        };
        let mut result =
            ProbeResult { certificate: Some(leaf("", "01", 2_000_000_000)), ..Default::default() };
        let fact = CertificateFact::earliest(domain_id, &result).unwrap();
        assert_eq!((fact.serial.as_str(), fact.position), ("01", 0));
        assert_eq!(fact.describe("https://example.com/"), "the certificate of https://example.com/");

        // An intermediate (the leaf's issuer) expiring first is watched under its own key.
        result.certificate.as_mut().unwrap().chain_earliest = Some(shared::proto::ChainCertificate {
            position: 1,
            subject: String::new(),
            not_after_unix_s: 1_900_000_000,
        });
        let fact = CertificateFact::earliest(domain_id, &result).unwrap();
        assert_eq!((fact.subject.as_str(), fact.position), ("CN=R11", 1));
        assert!(fact.serial.starts_with("i1-") && fact.serial.len() == 3 + 16, "{}", fact.serial);
        assert_eq!(
            fact.describe("https://example.com/"),
            "intermediate 1 (CN=R11) of the certificate chain of https://example.com/"
        );

        // A redirect target's leaf expiring sooner still comes first.
        result.redirect_certificates = vec![leaf("www.example.net", "77", 1_800_000_000)];
        let fact = CertificateFact::earliest(domain_id, &result).unwrap();
        assert_eq!((fact.host.as_str(), fact.serial.as_str()), ("www.example.net", "77"));
        assert_eq!(
            fact.describe("https://example.com/"),
            "the certificate of www.example.net (redirect target of https://example.com/), CN=www.example.net"
        );
        assert_eq!(CertificateFact::earliest(domain_id, &ProbeResult::default()), None);
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
            }],
            certificates: Vec::new(),
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
}
