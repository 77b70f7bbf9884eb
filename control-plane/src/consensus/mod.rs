//! Consensus across regions: whether a domain is up or down, decided from every region's latest
//! observation, and the incidents and notifications that follow.
//!
//! - [`queue`]: ingest hands each stored batch's observations to the observation queue
//!   ([`ObservationSender::offer`]), which folds them into what waits per agent and domain:
//!   the ack never waits and nothing is dropped.
//! - [`Consensus::run`] works in rounds: it takes everything waiting, records it (one upsert
//!   per agent into `region_observations`, [`observations`]; the agents' health into
//!   `agent_health`), evaluates the domains whose vote changed [`EVALUATE_BATCH`] at a time
//!   ([`evaluate`]: one transaction per batch, `SKIP LOCKED` claims, domains locked elsewhere
//!   evaluated again next round), feeds the successful latencies to each region's anomaly
//!   detector ([`crate::degraded::record`]), asks for confirmation probes for failures of
//!   domains not (yet) down and for latency anomalies of domains not (yet) degraded
//!   ([`confirm`]) and checks certificate expiry ([`certificates`]). Every
//!   `consensus_sweep_interval_ms`, in a task of its own, [`sweep`] re-evaluates the domains
//!   that could change state.
//! - All of it runs on a pool of its own (`consensus_db_connections`), so the API and ingest
//!   never wait for a connection consensus holds.
//! - [`decide`]: the pure decision, table-tested.

pub mod certificates;
mod confirm;
pub mod decide;
pub mod evaluate;
pub mod observations;
pub mod queue;
mod sweep;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use shared::RedisKeys;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use certificates::CertificateFact;
pub use decide::{
    AgentCanary, AgentSaturation, Decision, Health, Observation, Outcome, Standing, State, Vote,
};
pub use evaluate::{Claim, Round, EVALUATE_BATCH};
pub use observations::{
    health, observations, observations_of, regional_failures, BatchHealth, DomainObservation, ObservedBatch,
    RegionalFailure, Run,
};
pub use queue::{queue, ObservationReceiver, ObservationSender};

use crate::clock::Clock;
use crate::config::Config;
use crate::flap;
use crate::metrics::{Metrics, OutcomeLabels};

/// Batches of [`EVALUATE_BATCH`] domains a round evaluates at once (each its own transaction
/// on its own connection).
const EVALUATE_CONCURRENCY: usize = 2;

/// Confirmation requests sent at once (each a Redis `SET NX` and a `PUBLISH`).
const CONFIRM_CONCURRENCY: usize = 32;

/// How soon a round runs again for domains left over (locked elsewhere, or a failed step)
/// when nothing new arrives; doubled per failed round, up to the sweep interval.
const RETRY_DELAY: Duration = Duration::from_millis(50);

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
    /// The global degraded settings (a domain's `degraded` overrides are merged over them).
    pub degraded: crate::degraded::Settings,
    /// The least time between two rounds of confirmation probes for a latency anomaly, per
    /// domain.
    pub anomaly_confirmation_interval: Duration,
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
            degraded: crate::degraded::Settings::from_config(config),
            anomaly_confirmation_interval: Duration::from_millis(config.degraded_confirmation_interval_ms),
        }
    }
}

/// The result of one domain's evaluation.
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

/// Domains to evaluate in the next round, each with the regions whose new vote is a failure
/// (they are not asked to confirm it).
type Due = BTreeMap<Uuid, Vec<String>>;

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
    /// Where committed transitions and recorded results are published for live updates.
    live: crate::live::Publisher,
}

impl Consensus {
    /// `pool` is consensus's own (see `consensus_db_connections`): every statement of the
    /// observation rounds, evaluations, the sweep and certificate notices runs on it.
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
            live: crate::live::Publisher::disabled(),
        }
    }

    /// Publishes every committed transition (`state` events) and recorded result (`result`
    /// events) through `live`, after its commit.
    pub fn with_live(mut self, live: crate::live::Publisher) -> Self {
        self.live = live;
        self
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

    /// The pool consensus runs on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn error(&self, reason: &str, error: &dyn std::fmt::Display) {
        self.metrics.consensus_error(reason);
        tracing::warn!(reason, error = %error, "consensus step failed");
    }

    /// Folds the batch's DNS answers into the region's drift states ([`crate::dns_drift`]). A
    /// failure is logged and counted; the batch is not retried for it (the next probes fold in).
    async fn track_dns(&self, batch: &ObservedBatch) {
        if batch.dns.is_empty() {
            return;
        }
        match crate::dns_drift::track(&self.pool, &batch.region, &batch.dns).await {
            Ok(tracked) => {
                let rotations = tracked.rotations as u64;
                let changed = (tracked.changes - tracked.rotations) as u64;
                let count = |outcome: &str, n: u64| {
                    if n > 0 {
                        self.metrics
                            .dns_changes
                            .get_or_create(&OutcomeLabels { outcome: outcome.into() })
                            .inc_by(n);
                    }
                };
                count("rotation", rotations);
                count("changed", changed);
                if tracked.changes > 0 {
                    tracing::info!(
                        region = batch.region,
                        changes = tracked.changes,
                        rotations,
                        notified = tracked.notified,
                        "DNS answer sets changed"
                    );
                }
            }
            Err(error) => self.error("dns_drift", &error),
        }
    }

    fn remember(&self, domain_id: Uuid, state: State) {
        self.known.lock().expect("consensus hint lock").insert(domain_id, state);
    }

    /// Works through the observation queue in rounds (as [`Consensus::process`]), and sweeps
    /// periodically in a task of its own so a long sweep never holds up observations, until
    /// `shutdown`. Domains a round could not evaluate (locked elsewhere, or a failed step) are
    /// taken up again by the next round, which comes [`RETRY_DELAY`] later at the latest; after
    /// a failed step the next round waits [`RETRY_DELAY`], doubled per failed round up to the
    /// sweep interval.
    pub async fn run(self, queue: ObservationReceiver, shutdown: CancellationToken) {
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
        let mut due = Due::new();
        let mut failures: u32 = 0;
        loop {
            if failures > 0 {
                // A failed step (the database may be down): wait before trying again, whatever
                // arrives meanwhile.
                let backoff = (RETRY_DELAY * 2u32.pow(failures.min(10))).min(self.settings.sweep_interval);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = queue.ready() => {}
                _ = tokio::time::sleep(RETRY_DELAY), if !due.is_empty() => {}
            }
            let (ok, _) = self.round(queue.take(), &mut due, Some(&queue)).await;
            failures = if ok { 0 } else { failures.saturating_add(1) };
        }
        if let Err(error) = sweeper.await {
            tracing::error!(%error, "consensus sweep task panicked");
        }
    }

    /// One round over `batches` (several agents' observations), until every domain they
    /// concern was evaluated or a step failed. Failures are logged and counted. Returns how
    /// many domains were evaluated.
    pub async fn process(&self, batches: Vec<ObservedBatch>) -> usize {
        let mut due = Due::new();
        let mut evaluated = self.round(batches, &mut due, None).await.1;
        for _ in 0..100 {
            if due.is_empty() {
                break;
            }
            tokio::time::sleep(RETRY_DELAY).await;
            evaluated += self.round(Vec::new(), &mut due, None).await.1;
        }
        evaluated
    }

    /// Records `batches`, evaluates what they changed together with `due` (what is left over is
    /// left in `due`), confirms, checks certificates. A batch that could not be recorded goes
    /// back to `queue`. Returns whether every step succeeded, and how many domains were
    /// evaluated.
    async fn round(
        &self,
        batches: Vec<ObservedBatch>,
        due: &mut Due,
        queue: Option<&ObservationReceiver>,
    ) -> (bool, usize) {
        use futures::StreamExt;
        let mut ok = true;
        let mut recorded = Vec::with_capacity(batches.len());
        // Domains with a new latency anomaly in a region not yet degraded, with their regions.
        let mut anomalous: HashMap<Uuid, Vec<String>> = HashMap::new();
        for batch in batches {
            if let Some(health) = &batch.health {
                if let Some((healthy, checked_at)) = health.canary {
                    if let Err(error) = self
                        .record_health(&batch.region, &batch.agent_id, healthy, checked_at, batch.received_at)
                        .await
                    {
                        self.error("health", &error);
                    }
                }
                if let Some(saturation) = &health.saturation {
                    // Before the observations are recorded and evaluated: their votes read it.
                    if let Err(error) =
                        self.record_saturation(&batch.region, saturation, batch.received_at).await
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
                            since = ?saturation.since, until = ?saturation.until,
                            lag_p95_ms = saturation.lag_p95_ms,
                            "failures observed while the agent was saturated: unknown, not votes"
                        );
                    }
                }
            }
            let changed = match self.record(&batch).await {
                Ok(changed) => changed,
                Err(error) => {
                    self.error("record", &error);
                    ok = false;
                    if let Some(queue) = queue {
                        queue.put_back(batch);
                    }
                    continue;
                }
            };
            self.track_dns(&batch).await;
            // The latencies after the observations: an evaluation reads both.
            let latency = match crate::degraded::record(
                &self.pool,
                &self.settings.degraded,
                &self.metrics,
                &batch.region,
                &batch.observations,
            )
            .await
            {
                Ok(latency) => latency,
                Err(error) => {
                    // Not put back: its observations are recorded, and feeding the same
                    // latencies twice would count them twice. The next batch goes on.
                    self.error("latency", &error);
                    ok = false;
                    Vec::new()
                }
            };
            let known = self.known.lock().expect("consensus hint lock");
            for change in latency {
                let settled = matches!(known.get(&change.domain_id), Some(State::Degraded | State::Down));
                if change.changed || (change.anomalous && !change.degraded && !settled) {
                    due.entry(change.domain_id).or_default();
                }
                if change.anomalous && !change.degraded && !settled {
                    anomalous.insert(change.domain_id, change.regions);
                }
            }
            for (domain_id, vote_ok) in changed {
                // A failure of a domain this replica saw go down cannot change anything.
                if !vote_ok && known.get(&domain_id) == Some(&State::Down) {
                    continue;
                }
                let failing = due.entry(domain_id).or_default();
                if !vote_ok && !failing.contains(&batch.region) {
                    failing.push(batch.region.clone());
                }
            }
            drop(known);
            self.live.publish_results(
                batch
                    .observations
                    .iter()
                    .map(|o| crate::live::ResultNotice {
                        domain: o.domain_id,
                        region: batch.region.clone(),
                        ok: o.ok,
                        error_kind: o.error_kind.clone(),
                        status_code: o.status_code,
                        at: o.observed_at,
                    })
                    .collect(),
            );
            recorded.push(batch);
        }

        let items: Vec<Uuid> = due.keys().copied().collect();
        let chunks: Vec<Vec<Uuid>> = items.chunks(EVALUATE_BATCH).map(<[Uuid]>::to_vec).collect();
        let rounds: Vec<(usize, anyhow::Result<Round>)> = futures::stream::iter(chunks)
            .map(|chunk| async move {
                let now = self.clock.now();
                let items: Vec<_> = chunk.iter().map(|id| (*id, now)).collect();
                (chunk.len(), self.evaluate_many(&items, Claim::Skip).await)
            })
            .buffer_unordered(EVALUATE_CONCURRENCY)
            .collect()
            .await;
        let mut confirmations = Vec::new();
        let mut anomaly_confirmations = Vec::new();
        let mut evaluated = 0;
        for (chunk, result) in rounds {
            match result {
                Ok(round) => {
                    evaluated += round.evaluated.len();
                    for (domain_id, result) in round.evaluated {
                        let failing = due.remove(&domain_id).unwrap_or_default();
                        let settled = matches!(result.state, State::Down | State::Degraded);
                        if let Some(regions) = anomalous.remove(&domain_id).filter(|_| !settled) {
                            anomaly_confirmations.push((domain_id, regions));
                        }
                        if !failing.is_empty() && result.state != State::Down {
                            confirmations.push((domain_id, failing, result.regions));
                        }
                    }
                    for domain_id in round.missing {
                        due.remove(&domain_id);
                    }
                }
                Err(error) => {
                    // The chunk stays due: the next round tries it again.
                    ok = false;
                    self.error("evaluate", &shared::error::Chain(&*error).to_string());
                    tracing::debug!(domains = chunk, "evaluation of a batch failed; it is tried again");
                }
            }
        }
        futures::stream::iter(confirmations)
            .for_each_concurrent(CONFIRM_CONCURRENCY, |(domain_id, failing, regions)| async move {
                self.confirm(domain_id, &failing, &regions).await;
            })
            .await;
        futures::stream::iter(anomaly_confirmations)
            .for_each_concurrent(CONFIRM_CONCURRENCY, |(domain_id, regions)| async move {
                self.confirm_anomaly(domain_id, regions).await;
            })
            .await;
        for batch in &recorded {
            for cert in &batch.certificates {
                if let Err(error) = self.certificate(cert, batch.received_at).await {
                    self.error("certificate", &error);
                }
            }
        }
        (ok, evaluated)
    }
}
