//! Batches closed but not yet acknowledged, oldest first, bounded by encoded bytes and by age.
//! When a bound is hit the oldest batches that are not in flight go first; the caller counts
//! and logs what was dropped (and deletes their spool files, by the ids in [`Dropped`]). Batches in flight are never dropped (their outcome is pending),
//! so the byte bound can be exceeded by at most `send_concurrency` batches. Pure logic: time is
//! passed in.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

/// A closed batch, encoded once; resends carry exactly these bytes (and so the same id).
#[derive(Debug)]
pub struct EncodedBatch {
    /// A UUID v7, unique per batch.
    pub id: Uuid,
    pub results: usize,
    /// The encoded `Batch` message.
    pub bytes: Bytes,
    /// When the batch was closed.
    pub created: Instant,
}

#[derive(Debug)]
struct Entry {
    batch: Arc<EncodedBatch>,
    in_flight: bool,
}

/// What a bound removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub batches: usize,
    pub results: usize,
    pub bytes: usize,
    /// The ids of the batches removed (their spool files go with them).
    pub ids: Vec<Uuid>,
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }

    fn add(&mut self, batch: &EncodedBatch) {
        self.batches += 1;
        self.results += batch.results;
        self.bytes += batch.bytes.len();
        self.ids.push(batch.id);
    }
}

#[derive(Debug)]
pub struct Buffer {
    max_bytes: usize,
    max_age: Duration,
    entries: VecDeque<Entry>,
    bytes: usize,
    results: usize,
}

impl Buffer {
    pub fn new(max_bytes: usize, max_age: Duration) -> Self {
        Self { max_bytes, max_age, entries: VecDeque::new(), bytes: 0, results: 0 }
    }

    /// Adds a batch, then drops the oldest batches not in flight while over the byte bound.
    pub fn push(&mut self, batch: EncodedBatch) -> Dropped {
        self.bytes += batch.bytes.len();
        self.results += batch.results;
        self.entries.push_back(Entry { batch: Arc::new(batch), in_flight: false });
        let mut dropped = Dropped::default();
        while self.bytes > self.max_bytes {
            let Some(index) = self.entries.iter().position(|e| !e.in_flight) else { break };
            let entry = self.remove_at(index);
            dropped.add(&entry.batch);
        }
        dropped
    }

    /// Drops batches (not in flight) closed more than the age bound ago.
    pub fn expire(&mut self, now: Instant) -> Dropped {
        let mut dropped = Dropped::default();
        let mut index = 0;
        while index < self.entries.len() {
            let entry = &self.entries[index];
            if now.saturating_duration_since(entry.batch.created) <= self.max_age {
                // Entries are in creation order: the rest are younger.
                break;
            }
            if entry.in_flight {
                index += 1;
                continue;
            }
            let entry = self.remove_at(index);
            dropped.add(&entry.batch);
        }
        dropped
    }

    /// The oldest batch not in flight, now marked in flight.
    pub fn next_to_send(&mut self) -> Option<Arc<EncodedBatch>> {
        let entry = self.entries.iter_mut().find(|e| !e.in_flight)?;
        entry.in_flight = true;
        Some(entry.batch.clone())
    }

    /// Whether a batch waits that is not in flight.
    pub fn has_sendable(&self) -> bool {
        self.entries.iter().any(|e| !e.in_flight)
    }

    /// A send failed but the batch is kept: it may be sent again.
    pub fn release(&mut self, id: Uuid) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.batch.id == id) {
            entry.in_flight = false;
        }
    }

    /// Removes a batch (acknowledged or refused); `None` when it was no longer buffered.
    pub fn remove(&mut self, id: Uuid) -> Option<Arc<EncodedBatch>> {
        let index = self.entries.iter().position(|e| e.batch.id == id)?;
        Some(self.remove_at(index).batch)
    }

    /// Removes and returns everything, oldest first (shutdown).
    pub fn drain(&mut self) -> Vec<Arc<EncodedBatch>> {
        self.bytes = 0;
        self.results = 0;
        self.entries.drain(..).map(|entry| entry.batch).collect()
    }

    fn remove_at(&mut self, index: usize) -> Entry {
        let entry = self.entries.remove(index).expect("index in range");
        self.bytes -= entry.batch.bytes.len();
        self.results -= entry.batch.results;
        entry
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The age bound: batches closed longer ago are dropped by [`Buffer::expire`].
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn results(&self) -> usize {
        self.results
    }

    /// Age of the oldest batch; zero when empty.
    pub fn oldest_age(&self, now: Instant) -> Duration {
        self.entries.front().map_or(Duration::ZERO, |e| now.saturating_duration_since(e.batch.created))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn batch(results: usize, bytes: usize) -> EncodedBatch {
        EncodedBatch {
            id: Uuid::now_v7(),
            results,
            bytes: Bytes::from(vec![0u8; bytes]),
            created: Instant::now(),
        }
    }

    #[test]
    fn byte_bound_drops_the_oldest_not_in_flight() {
        let mut buffer = Buffer::new(1000, Duration::from_secs(60));
        let first = batch(10, 400);
        let first_id = first.id;
        assert!(buffer.push(first).is_empty());
        let second = batch(5, 400);
        let second_id = second.id;
        assert!(buffer.push(second).is_empty());
        assert_eq!((buffer.bytes(), buffer.results()), (800, 15));
        // The first is in flight: the second (oldest not in flight) goes instead.
        assert_eq!(buffer.next_to_send().unwrap().id, first_id);
        let dropped = buffer.push(batch(7, 400));
        assert_eq!(dropped, Dropped { batches: 1, results: 5, bytes: 400, ids: vec![second_id] });
        assert!(buffer.remove(second_id).is_none());
        // Released, the first is the oldest again and is dropped next.
        buffer.release(first_id);
        let dropped = buffer.push(batch(1, 300));
        assert_eq!(dropped, Dropped { batches: 1, results: 10, bytes: 400, ids: vec![first_id] });
        assert_eq!((buffer.len(), buffer.bytes(), buffer.results()), (2, 700, 8));
        let left = buffer.drain();
        assert_eq!(left.iter().map(|b| b.results).collect::<Vec<_>>(), vec![7, 1], "oldest first");
        assert!(buffer.is_empty() && buffer.bytes() == 0 && buffer.results() == 0);
    }

    #[tokio::test(start_paused = true)]
    async fn age_bound_drops_old_batches_and_sends_oldest_first() {
        let mut buffer = Buffer::new(1 << 20, Duration::from_secs(10));
        let old = batch(3, 10);
        let old_id = old.id;
        buffer.push(old);
        tokio::time::advance(Duration::from_secs(6)).await;
        let young = batch(4, 10);
        let young_id = young.id;
        buffer.push(young);
        assert_eq!(buffer.oldest_age(Instant::now()), Duration::from_secs(6));
        assert!(buffer.expire(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            buffer.expire(Instant::now()),
            Dropped { batches: 1, results: 3, bytes: 10, ids: vec![old_id] }
        );
        assert!(buffer.remove(old_id).is_none());
        assert_eq!(buffer.next_to_send().unwrap().id, young_id);
        assert!(buffer.next_to_send().is_none());
        assert!(!buffer.has_sendable());
        assert_eq!(buffer.remove(young_id).unwrap().results, 4);
        assert!(buffer.is_empty());
        assert_eq!(buffer.oldest_age(Instant::now()), Duration::ZERO);
    }
}
