//! The open batch: results collect until `batch_max_results` of them are waiting, the oldest
//! has waited `batch_max_age`, or a domain changes between ok and down, which closes the batch
//! at once so state changes reach the control plane without the batching delay. Changes that
//! follow a change-closed batch within [`CHANGE_GAP`] wait for the end of that gap and leave
//! together: in a mass outage thousands of domains change within seconds, and one batch per
//! change would turn the outage into thousands of one-result batches (a transaction each at
//! the control plane) queued behind each other, delaying every alert; an isolated change is
//! never delayed, and one during a storm by at most the gap. A domain's
//! first result after start is not a change (there is nothing to compare with): otherwise an
//! agent with many domains would send one tiny batch per domain for its first interval.
//! An operator's test result ([`Batcher::push_test`]) closes the batch at once too (someone
//! waits for it) and leaves the domain's last state alone (a test is not the schedule's view).
//! Pure logic: time is passed in.

use std::collections::HashMap;
use std::time::Duration;

use shared::proto;
use shared::DomainId;
use tokio::time::Instant;

/// The least time between two batches closed by status changes: a change within it of the
/// previous change-closed batch closes the batch when the gap ends, together with every change
/// that arrives meanwhile.
pub const CHANGE_GAP: Duration = Duration::from_millis(100);

/// Why a batch was closed (`probe_agent_delivery_batches_created_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Count,
    Age,
    StatusChange,
    /// An operator's test result is in the batch.
    Test,
    Shutdown,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Count => "count",
            Trigger::Age => "age",
            Trigger::StatusChange => "status_change",
            Trigger::Test => "test",
            Trigger::Shutdown => "shutdown",
        }
    }
}

/// Results of a closed batch and why it closed.
#[derive(Debug)]
pub struct Closed {
    pub results: Vec<proto::ProbeResult>,
    pub trigger: Trigger,
}

#[derive(Debug)]
pub struct Batcher {
    max_results: usize,
    max_age: Duration,
    open: Vec<proto::ProbeResult>,
    opened_at: Option<Instant>,
    /// The last ok/down state of each domain seen.
    last_ok: HashMap<DomainId, bool>,
    /// When a status change last closed a batch.
    last_change_close: Option<Instant>,
    /// When the open batch, holding a change that came within [`CHANGE_GAP`] of the last
    /// change-closed batch, closes.
    change_due: Option<Instant>,
}

impl Batcher {
    pub fn new(max_results: usize, max_age: Duration) -> Self {
        Self {
            max_results: max_results.max(1),
            max_age,
            open: Vec::new(),
            opened_at: None,
            last_ok: HashMap::new(),
            last_change_close: None,
            change_due: None,
        }
    }

    /// Adds a result; returns the batch when this result closed it.
    pub fn push(&mut self, domain: DomainId, result: proto::ProbeResult, now: Instant) -> Option<Closed> {
        let changed = self.last_ok.insert(domain, result.ok).is_some_and(|previous| previous != result.ok);
        if self.open.is_empty() {
            self.opened_at = Some(now);
        }
        self.open.push(result);
        if changed {
            match self.last_change_close {
                Some(last) if now < last + CHANGE_GAP => {
                    self.change_due.get_or_insert(last + CHANGE_GAP);
                }
                _ => return self.take_change(now),
            }
        }
        if self.open.len() >= self.max_results {
            self.take(Trigger::Count)
        } else {
            None
        }
    }

    /// Adds an operator's test result and closes the batch with it. The domain's last state is
    /// not touched.
    pub fn push_test(&mut self, result: proto::ProbeResult) -> Closed {
        self.open.push(result);
        self.opened_at = None;
        Closed { results: std::mem::take(&mut self.open), trigger: Trigger::Test }
    }

    /// When the open batch must be closed (for age, or for a change held by the gap); `None`
    /// while it is empty.
    pub fn deadline(&self) -> Option<Instant> {
        let age = self.opened_at.map(|t| t + self.max_age);
        match (age, self.change_due) {
            (Some(age), Some(change)) => Some(age.min(change)),
            (age, change) => age.or(change),
        }
    }

    /// Closes the open batch when a held change's gap has ended or its oldest result has
    /// waited long enough.
    pub fn flush_due(&mut self, now: Instant) -> Option<Closed> {
        match (self.change_due, self.opened_at) {
            (Some(change), _) if now >= change => self.take_change(now),
            (_, Some(opened)) if now >= opened + self.max_age => self.take(Trigger::Age),
            _ => None,
        }
    }

    fn take_change(&mut self, now: Instant) -> Option<Closed> {
        self.last_change_close = Some(now);
        self.take(Trigger::StatusChange)
    }

    /// Closes the open batch whatever its size or age; `None` when empty.
    pub fn take(&mut self, trigger: Trigger) -> Option<Closed> {
        self.opened_at = None;
        self.change_due = None;
        if self.open.is_empty() {
            return None;
        }
        Some(Closed { results: std::mem::take(&mut self.open), trigger })
    }

    /// Results in the open batch.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Forgets the state of domains that are gone, so the map does not grow without bound.
    pub fn retain(&mut self, keep: impl Fn(&DomainId) -> bool) {
        self.last_ok.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: bool) -> proto::ProbeResult {
        proto::ProbeResult { ok, ..Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn closes_by_count_age_and_status_change() {
        let start = Instant::now();
        let mut batcher = Batcher::new(3, Duration::from_millis(1000));
        let (a, b) = (DomainId::new(), DomainId::new());
        // First results are not changes: collected until the count.
        assert!(batcher.push(a, result(true), start).is_none());
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(1000)));
        assert!(batcher.push(b, result(false), start).is_none());
        let closed = batcher.push(a, result(true), start).unwrap();
        assert_eq!((closed.results.len(), closed.trigger), (3, Trigger::Count));
        assert_eq!(batcher.deadline(), None);
        // Age, counted from the oldest result in the open batch.
        tokio::time::advance(Duration::from_millis(100)).await;
        let opened = Instant::now();
        assert!(batcher.push(a, result(true), opened).is_none());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(batcher.flush_due(Instant::now()).is_none());
        assert!(batcher.push(b, result(false), Instant::now()).is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        let closed = batcher.flush_due(Instant::now()).unwrap();
        assert_eq!((closed.results.len(), closed.trigger), (2, Trigger::Age));
        // A status change closes the batch including the changed result.
        assert!(batcher.push(b, result(false), Instant::now()).is_none());
        let closed = batcher.push(a, result(false), Instant::now()).unwrap();
        assert_eq!((closed.results.len(), closed.trigger), (2, Trigger::StatusChange));
        assert!(!closed.results[1].ok);
        assert!(batcher.take(Trigger::Shutdown).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn changes_close_at_once_unless_one_just_did_then_they_leave_together() {
        let mut batcher = Batcher::new(1000, Duration::from_secs(1));
        let domains: Vec<DomainId> = (0..100).map(|_| DomainId::new()).collect();
        for d in &domains {
            assert!(batcher.push(*d, result(true), Instant::now()).is_none());
        }
        batcher.take(Trigger::Age).unwrap();
        // The first change of a storm leaves at once, alone.
        let first = batcher.push(domains[0], result(false), Instant::now()).unwrap();
        assert_eq!((first.results.len(), first.trigger), (1, Trigger::StatusChange));
        // The next 99 within the gap wait for its end and leave as one batch.
        let started = Instant::now();
        for d in &domains[1..] {
            tokio::time::advance(Duration::from_micros(500)).await;
            assert!(batcher.push(*d, result(false), Instant::now()).is_none());
        }
        assert_eq!(batcher.deadline(), Some(started + CHANGE_GAP));
        assert!(batcher.flush_due(Instant::now()).is_none());
        tokio::time::advance(started + CHANGE_GAP - Instant::now()).await;
        let storm = batcher.flush_due(Instant::now()).unwrap();
        assert_eq!((storm.results.len(), storm.trigger), (99, Trigger::StatusChange));
        // A change long after the last change-closed batch leaves at once again.
        tokio::time::advance(CHANGE_GAP).await;
        let alone = batcher.push(domains[0], result(true), Instant::now()).unwrap();
        assert_eq!(alone.results.len(), 1);
        // A held change never outlives the batch's age bound or its count.
        let mut small = Batcher::new(3, Duration::from_millis(50));
        small.push(domains[1], result(true), Instant::now());
        small.push(domains[2], result(true), Instant::now());
        small.take(Trigger::Age).unwrap();
        small.push(domains[1], result(false), Instant::now()).expect("a change alone leaves at once");
        assert!(small.push(domains[2], result(false), Instant::now()).is_none(), "held by the gap");
        assert_eq!(small.deadline(), Some(Instant::now() + Duration::from_millis(50)), "the age is sooner");
        assert!(small.push(domains[3], result(true), Instant::now()).is_none());
        let full = small.push(domains[4], result(true), Instant::now()).unwrap();
        assert_eq!((full.results.len(), full.trigger), (3, Trigger::Count));
        assert_eq!(small.deadline(), None, "nothing is held once the batch left");
    }

    #[test]
    fn a_test_result_closes_the_batch_and_is_not_a_state() {
        let now = Instant::now();
        let mut batcher = Batcher::new(10, Duration::from_secs(1));
        let a = DomainId::new();
        assert!(batcher.push(a, result(true), now).is_none());
        let closed = batcher.push_test(result(false));
        assert_eq!((closed.results.len(), closed.trigger), (2, Trigger::Test));
        assert_eq!(batcher.deadline(), None);
        // The failed test did not change the domain's state: another success is no change.
        assert!(batcher.push(a, result(true), now).is_none());
        assert!(batcher.push(a, result(false), now).is_some(), "a real change still closes");
    }

    #[test]
    fn forgets_removed_domains() {
        let now = Instant::now();
        let mut batcher = Batcher::new(10, Duration::from_secs(1));
        let a = DomainId::new();
        batcher.push(a, result(true), now);
        batcher.retain(|_| false);
        // Seen again after being forgotten: a first result again, not a change.
        assert!(batcher.push(a, result(false), now).is_none());
        assert!(batcher.push(a, result(true), now).is_some());
    }
}
