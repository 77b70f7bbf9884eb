//! The open batch: results collect until `batch_max_results` of them are waiting, the oldest
//! has waited `batch_max_age`, or a domain changes between ok and down, which closes the batch
//! at once so state changes reach the control plane without the batching delay. A domain's
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
}

impl Batcher {
    pub fn new(max_results: usize, max_age: Duration) -> Self {
        Self {
            max_results: max_results.max(1),
            max_age,
            open: Vec::new(),
            opened_at: None,
            last_ok: HashMap::new(),
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
            self.take(Trigger::StatusChange)
        } else if self.open.len() >= self.max_results {
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

    /// When the open batch must be closed for age; `None` while it is empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.max_age)
    }

    /// Closes the open batch when its oldest result has waited long enough.
    pub fn flush_due(&mut self, now: Instant) -> Option<Closed> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.take(Trigger::Age),
            _ => None,
        }
    }

    /// Closes the open batch whatever its size or age; `None` when empty.
    pub fn take(&mut self, trigger: Trigger) -> Option<Closed> {
        self.opened_at = None;
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
