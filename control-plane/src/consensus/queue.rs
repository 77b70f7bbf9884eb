//! The observation queue between ingest and consensus, which never drops and never makes
//! ingest wait: a batch offered after its commit is folded into what is already waiting for
//! its agent (per domain the newest observation, the runs of failures of the others folded
//! into it; see [`super::observations::AgentObservations`]). What waits is therefore bounded by
//! agents × domains, whatever the rate of batches, and consensus takes all of it at once
//! ([`ObservationReceiver::take`]) for one round of recording and evaluating. An observation
//! replaced before consensus recorded it is counted (`observations_coalesced`): it would have
//! been overwritten in `region_observations` anyway, and its result still counts in the run.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::observations::{AgentObservations, ObservedBatch};
use crate::metrics::Metrics;

/// What waits for consensus, per agent.
#[derive(Default)]
struct Waiting {
    agents: Vec<AgentObservations>,
}

struct Shared {
    waiting: Mutex<Waiting>,
    ready: Notify,
    metrics: Metrics,
}

/// The ingest side of the observation queue. Cheap to clone.
#[derive(Clone)]
pub struct ObservationSender {
    shared: Arc<Shared>,
}

impl ObservationSender {
    /// Queues a stored batch's observations without waiting (a short lock while they are
    /// merged in), and wakes consensus.
    pub fn offer(&self, batch: ObservedBatch) {
        self.shared.add(batch);
    }
}

impl Shared {
    fn add(&self, batch: ObservedBatch) {
        let pending = {
            let mut waiting = self.waiting.lock().expect("observation queue lock");
            match waiting.agents.iter_mut().find(|a| a.is_of(&batch.region, &batch.agent_id)) {
                Some(agent) => {
                    let coalesced = agent.absorb(batch);
                    self.metrics.observations_coalesced.inc_by(coalesced as u64);
                }
                None => waiting.agents.push(AgentObservations::new(batch)),
            }
            waiting.agents.iter().map(AgentObservations::len).sum::<usize>()
        };
        self.metrics.observations_pending.set(pending as i64);
        self.ready.notify_one();
    }
}

/// The consensus side of the observation queue.
pub struct ObservationReceiver {
    shared: Arc<Shared>,
}

impl ObservationReceiver {
    /// Returns once something was offered since the last [`take`](Self::take) (at once if it
    /// already was).
    pub async fn ready(&self) {
        self.shared.ready.notified().await;
    }

    /// Everything waiting, one batch per agent, in the order the agents first offered.
    pub fn take(&self) -> Vec<ObservedBatch> {
        let agents = std::mem::take(&mut self.shared.waiting.lock().expect("observation queue lock").agents);
        self.shared.metrics.observations_pending.set(0);
        agents.into_iter().map(AgentObservations::into_batch).collect()
    }

    /// Puts back a batch that was taken but could not be recorded, merged with whatever
    /// arrived since (the newer observations win, the runs are joined in order).
    pub fn put_back(&self, batch: ObservedBatch) {
        self.shared.add(batch);
    }
}

/// The observation queue: the sender for ingest, the receiver for [`super::Consensus::run`].
pub fn queue(metrics: Metrics) -> (ObservationSender, ObservationReceiver) {
    let shared = Arc::new(Shared { waiting: Mutex::default(), ready: Notify::new(), metrics });
    (ObservationSender { shared: shared.clone() }, ObservationReceiver { shared })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::consensus::{DomainObservation, Run};

    fn batch(agent: &str, domains: &[Uuid], ok: bool, s: i64) -> ObservedBatch {
        let at = Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        ObservedBatch {
            region: "ams".into(),
            agent_id: agent.into(),
            health: None,
            received_at: at,
            observations: domains
                .iter()
                .map(|d| DomainObservation {
                    domain_id: *d,
                    ok,
                    error_kind: None,
                    status_code: None,
                    observed_at: at,
                    run: Run::of(ok, at),
                    latencies: Vec::new(),
                })
                .collect(),
            certificates: Vec::new(),
            dns: Vec::new(),
        }
    }

    #[tokio::test]
    async fn any_number_of_batches_waits_as_one_observation_per_agent_and_domain() {
        let metrics = Metrics::default();
        let (sender, receiver) = queue(metrics.clone());
        let domains: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
        // Far more batches than any channel capacity would have held: nothing is dropped.
        for s in 0..5_000 {
            sender.offer(batch("ams-1", &domains, s % 2 == 0, s));
        }
        sender.offer(batch("ams-2", &domains[..1], false, 1));
        receiver.ready().await;
        assert_eq!(metrics.observations_pending.get(), 11);
        let taken = receiver.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].agent_id, "ams-1");
        assert_eq!(taken[0].observations.len(), 10);
        for o in &taken[0].observations {
            // The newest (s = 4999, a failure) with all 5,000 results in its run.
            assert!(!o.ok);
            assert_eq!(o.run.results, 5_000);
            assert_eq!(o.run.failures, 1);
        }
        assert_eq!(metrics.observations_coalesced.get(), 4_999 * 10);
        assert!(receiver.take().is_empty());
        assert_eq!(metrics.observations_pending.get(), 0);
    }
}
