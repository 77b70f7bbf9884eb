//! The scheduler: runs every catalog domain on its interval and phase ([`plan`]), with at most
//! `max_in_flight` probes at once, and hands each result to the result queue.
//!
//! One task plans: it sleeps until the next due time, a catalog change, an on-demand request or
//! shutdown, and a catalog change reschedules only what changed. Due probes go into a bounded
//! hand-off queue served by `max_in_flight` long-lived worker tasks (no task per probe, and a
//! busy worker takes the next job without being woken). When the hand-off queue is full every
//! worker is busy: the scheduler says so (`probe_agent_scheduler_saturated_total` and a
//! rate-limited warning) and waits; the delay shows in `probe_agent_schedule_lag_seconds`,
//! measured when a worker actually starts the probe.
//!
//! Both, and probes ending well past their own timeout, feed the [`Saturation`] monitor, whose
//! report travels with every batch so the control plane does not take the agent's own overload
//! for its targets' failure.
//!
//! When the region runs several agents the planning task also watches the member set
//! ([`crate::membership`]) and keeps on its plan only the domains this agent owns; a change of
//! members moves the domains that changed hands (counted in
//! `probe_agent_membership_handoffs_total`). On-demand probes are not filtered: any agent of the
//! region answers a confirmation request for any of its catalog's domains.

pub mod plan;
pub mod saturation;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shared::{DomainConfig, DomainId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::membership::Membership;
use crate::metrics::{handoffs, Metrics};
use crate::probe::ProbeReport;
use crate::results::{ProbeResult, ResultSink, Trigger};
use plan::{Anchor, Plan};
pub use saturation::{Saturation, SaturationReport};

/// Default `saturation_lag_ms`: a probe starting this late (or a hand-off blocked this long, or
/// a deadline served this late) means the agent is saturated. An agent keeping up starts its
/// probes within milliseconds of their due time; a second is far beyond that, and still a
/// tenth of the default timeouts, so a probe whose timeout ran in such a period was slowed by
/// the agent, not only by its target.
pub const DEFAULT_SATURATION_LAG_MS: u64 = 1_000;

/// Something that probes a domain once. The real one is [`crate::probe::Prober`]; tests use
/// fakes to check timing without network.
pub trait Probe: Send + Sync + 'static {
    fn probe(&self, config: Arc<DomainConfig>) -> BoxFuture<'static, ProbeReport>;
}

impl Probe for crate::probe::Prober {
    fn probe(&self, config: Arc<DomainConfig>) -> BoxFuture<'static, ProbeReport> {
        let prober = self.clone();
        Box::pin(async move { prober.probe(&config).await })
    }
}

/// Asks the scheduler to probe a domain now, outside its schedule (confirmation probes).
#[derive(Debug, Clone)]
pub struct ProbeNow {
    tx: mpsc::Sender<OnDemand>,
}

/// Something held for as long as an on-demand probe is queued or running, and dropped once its
/// result is queued (or the request is dropped): lets the caller bound and coalesce its
/// requests (see [`crate::requests::OnDemandLimit`]).
pub type Ticket = Box<dyn std::any::Any + Send + Sync>;

/// One on-demand request on its way to the scheduler.
struct OnDemand {
    id: DomainId,
    ticket: Option<Ticket>,
    /// An operator's test: its request id and the configuration to probe (not the catalog's).
    test: Option<(Uuid, Arc<DomainConfig>)>,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProbeNowError {
    #[error("too many on-demand probes queued")]
    Busy,
    #[error("scheduler stopped")]
    Stopped,
}

impl ProbeNow {
    /// Queues an immediate probe of `id`. Unknown or paused domains are ignored by the
    /// scheduler (and logged).
    pub fn request(&self, id: DomainId) -> Result<(), ProbeNowError> {
        self.send(OnDemand { id, ticket: None, test: None })
    }

    /// Like [`ProbeNow::request`], holding `ticket` until the probe's result is queued, or
    /// until the request is dropped (unknown or paused domain, shutdown, or refused here).
    pub fn request_with(&self, id: DomainId, ticket: Ticket) -> Result<(), ProbeNowError> {
        self.send(OnDemand { id, ticket: Some(ticket), test: None })
    }

    /// Queues an immediate probe of `config` for the test `request_id`, holding `ticket` like
    /// [`ProbeNow::request_with`]. The configuration is probed as given (it need not be in the
    /// catalog, and is not added to it); the result carries `request_id`.
    pub fn request_test(
        &self,
        request_id: Uuid,
        config: Arc<DomainConfig>,
        ticket: Ticket,
    ) -> Result<(), ProbeNowError> {
        self.send(OnDemand { id: config.id, ticket: Some(ticket), test: Some((request_id, config)) })
    }

    fn send(&self, request: OnDemand) -> Result<(), ProbeNowError> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProbeNowError::Busy,
            mpsc::error::TrySendError::Closed(_) => ProbeNowError::Stopped,
        })
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub region: String,
    pub max_in_flight: usize,
}

pub struct Scheduler {
    settings: SchedulerSettings,
    catalog: watch::Receiver<Arc<Catalog>>,
    prober: Arc<dyn Probe>,
    sink: ResultSink,
    metrics: Metrics,
    on_demand: mpsc::Receiver<OnDemand>,
    anchor: Anchor,
    saturation: Saturation,
    /// The region's member set (`None`: this agent probes every domain of its catalog).
    membership: Option<watch::Receiver<Arc<Membership>>>,
}

/// A probe handed to a worker.
struct Job {
    config: Arc<DomainConfig>,
    planned: Instant,
    trigger: Trigger,
    /// The operator's test this probe answers, if any.
    request_id: Option<Uuid>,
    /// Released when the job's result is queued.
    ticket: Option<Ticket>,
}

const SATURATION_LOG_EVERY: Duration = Duration::from_secs(10);

impl Scheduler {
    pub fn new(
        settings: SchedulerSettings,
        catalog: watch::Receiver<Arc<Catalog>>,
        prober: Arc<dyn Probe>,
        sink: ResultSink,
        metrics: Metrics,
    ) -> (Self, ProbeNow) {
        let (tx, on_demand) = mpsc::channel(1024);
        let saturation = Saturation::new(Duration::from_millis(DEFAULT_SATURATION_LAG_MS));
        let scheduler = Self {
            settings,
            catalog,
            prober,
            sink,
            metrics,
            on_demand,
            anchor: Anchor::now(),
            saturation,
            membership: None,
        };
        (scheduler, ProbeNow { tx })
    }

    /// Probes only the domains `membership` gives this agent (see [`crate::membership`]);
    /// without it the agent probes every domain of its catalog.
    pub fn with_membership(mut self, membership: watch::Receiver<Arc<Membership>>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// Reports saturation to `saturation` (one with the default threshold unless set).
    pub fn with_saturation(mut self, saturation: Saturation) -> Self {
        self.saturation = saturation;
        self
    }

    /// The saturation monitor this scheduler feeds.
    pub fn saturation(&self) -> Saturation {
        self.saturation.clone()
    }

    /// Uses a fixed wall-clock anchor (tests under paused time).
    pub fn with_anchor(mut self, anchor: Anchor) -> Self {
        self.anchor = anchor;
        self
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let slots = self.settings.max_in_flight.max(1);
        let (jobs, queue) = async_channel::bounded::<Job>(slots);
        let mut workers = JoinSet::new();
        for _ in 0..slots {
            workers.spawn(worker(
                queue.clone(),
                cancel.clone(),
                self.prober.clone(),
                self.sink.clone(),
                self.metrics.clone(),
                self.settings.region.clone(),
                self.saturation.clone(),
            ));
        }
        drop(queue);
        let mut plan = Plan::new(&self.settings.region, self.anchor);
        if let Some(membership) = &mut self.membership {
            let view = membership.borrow_and_update().clone();
            plan.set_membership(view, &Catalog::default(), Instant::now());
        }
        let mut current = self.catalog.borrow_and_update().clone();
        plan.apply(&Catalog::default(), &current, Instant::now());
        self.metrics.scheduled_domains.set(plan.len() as i64);
        let mut saturation = SaturationLog::default();
        loop {
            let next = plan.next_due();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                changed = self.catalog.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let newer = self.catalog.borrow_and_update().clone();
                    plan.apply(&current, &newer, Instant::now());
                    current = newer;
                    self.metrics.scheduled_domains.set(plan.len() as i64);
                }
                view = membership_changed(&mut self.membership) => match view {
                    Some(view) => {
                        let handoff = plan.set_membership(view.clone(), &current, Instant::now());
                        self.metrics.scheduled_domains.set(plan.len() as i64);
                        self.metrics.handoff(handoffs::GAINED, handoff.gained);
                        self.metrics.handoff(handoffs::LOST, handoff.lost);
                        self.metrics.membership_catch_ups.inc_by(handoff.overdue);
                        if handoff != plan::Handoff::default() {
                            tracing::info!(
                                members = view.len(),
                                gained = handoff.gained,
                                lost = handoff.lost,
                                caught_up = handoff.overdue,
                                owned = plan.len(),
                                "domains handed over after a membership change"
                            );
                        }
                    }
                    // The registry stopped (shutdown): keep the plan as it is.
                    None => self.membership = None,
                },
                Some(OnDemand { id, ticket, test }) = self.on_demand.recv() => {
                    let (request_id, config) = match test {
                        Some((request_id, config)) => (Some(request_id), Some(config)),
                        None => (None, current.get(&id).filter(|c| !c.paused).cloned()),
                    };
                    match config {
                        Some(config) => {
                            self.metrics.on_demand_probes.inc();
                            let job = Job {
                                config,
                                planned: Instant::now(),
                                trigger: Trigger::OnDemand,
                                request_id,
                                ticket,
                            };
                            if !self.hand_off(&jobs, job, &mut saturation, &cancel).await {
                                break;
                            }
                        }
                        _ => tracing::info!(domain_id = %id, "on-demand probe for a domain not in this agent's catalog; ignored"),
                    }
                }
                () = sleep_until(next) => {
                    while let Some(due) = plan.pop_due(Instant::now()) {
                        let job = Job {
                            config: due.config,
                            planned: due.planned,
                            trigger: Trigger::Scheduled,
                            request_id: None,
                            ticket: None,
                        };
                        if !self.hand_off(&jobs, job, &mut saturation, &cancel).await {
                            break;
                        }
                    }
                    if plan.skipped > 0 {
                        self.metrics.schedule_skipped.inc_by(plan.skipped);
                        tracing::warn!(skipped = plan.skipped, "fell more than an interval behind; missed slots skipped");
                        plan.skipped = 0;
                    }
                }
            }
        }
        // Workers finish the probe they hold (bounded by its timeout) and stop; queued jobs are
        // dropped, their slots come round again on the next start.
        jobs.close();
        while let Some(joined) = workers.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "probe worker panicked");
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// Gives a job to a worker, waiting while all are busy. `false` when shutting down.
    async fn hand_off(
        &self,
        jobs: &async_channel::Sender<Job>,
        job: Job,
        saturation: &mut SaturationLog,
        cancel: &CancellationToken,
    ) -> bool {
        let job = match jobs.try_send(job) {
            Ok(()) => return true,
            Err(async_channel::TrySendError::Closed(_)) => return false,
            Err(async_channel::TrySendError::Full(job)) => job,
        };
        self.metrics.scheduler_saturated.inc();
        self.saturation.blocked(chrono::Utc::now());
        saturation.note(self.settings.max_in_flight);
        let sent = tokio::select! {
            () = cancel.cancelled() => false,
            sent = jobs.send(job) => sent.is_ok(),
        };
        self.saturation.unblocked(chrono::Utc::now());
        sent
    }
}

/// One probe slot: takes jobs until the queue closes.
async fn worker(
    jobs: async_channel::Receiver<Job>,
    cancel: CancellationToken,
    prober: Arc<dyn Probe>,
    sink: ResultSink,
    metrics: Metrics,
    region: String,
    saturation: Saturation,
) {
    loop {
        let job = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            job = jobs.recv() => match job {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let lag = Instant::now().saturating_duration_since(job.planned);
        if job.trigger == Trigger::Scheduled {
            metrics.schedule_lag.observe(lag.as_secs_f64());
        }
        let started_at = chrono::Utc::now();
        let planned_at = started_at - chrono::Duration::from_std(lag).unwrap_or_default();
        saturation.started(planned_at, started_at, job.trigger == Trigger::Scheduled);
        let started = Instant::now();
        metrics.probes_in_flight.inc();
        let report = prober.probe(job.config.clone()).await;
        metrics.probes_in_flight.dec();
        let ended_at = started_at + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
        saturation.finished(started_at, ended_at, Duration::from_millis(u64::from(job.config.timeout_ms)));
        sink.push(ProbeResult {
            domain_id: job.config.id,
            config_version: job.config.version,
            region: region.clone(),
            trigger: job.trigger,
            request_id: job.request_id,
            planned_at,
            lag_ms: lag.as_secs_f64() * 1000.0,
            report,
        });
        drop(job.ticket);
    }
}

/// The next member set, or `None` once its sender is gone; never ready without a watch.
async fn membership_changed(
    membership: &mut Option<watch::Receiver<Arc<Membership>>>,
) -> Option<Arc<Membership>> {
    match membership {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Rate-limits the "saturated" warning.
#[derive(Default)]
struct SaturationLog {
    last_log: Option<Instant>,
    since_log: u64,
}

impl SaturationLog {
    fn note(&mut self, limit: usize) {
        self.since_log += 1;
        let due = self.last_log.is_none_or(|at| at.elapsed() >= SATURATION_LOG_EVERY);
        if due {
            tracing::warn!(
                max_in_flight = limit,
                waits = self.since_log,
                "probe concurrency exhausted; probes are starting late (raise max_in_flight or add agents)"
            );
            self.last_log = Some(Instant::now());
            self.since_log = 0;
        }
    }
}

#[cfg(test)]
mod tests;
