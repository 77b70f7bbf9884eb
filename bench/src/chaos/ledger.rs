//! What a chaos run counts outside the system under test: the probe requests the local target
//! received (the result ledger: every HTTP probe is exactly one request, so each request is a
//! result an agent produced), the domains the run switched down, and the notifications the
//! webhook receiver got, per domain and transition.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde_json::Value;

use crate::fleet::Delivery;

/// Transitions the run causes and expects one notification for each.
pub const OPENED: &str = "incident_opened";
pub const RESOLVED: &str = "incident_resolved";

struct Slots {
    hits: Vec<AtomicU64>,
    down: Vec<AtomicBool>,
}

/// A target serving `/d/<n>` for `n` below the domain count: 200 while domain `n` is up, 503
/// while the run holds it down; every request counted by `n`.
#[derive(Clone)]
pub struct CountedTarget {
    pub addr: SocketAddr,
    slots: Arc<Slots>,
}

impl CountedTarget {
    pub async fn start(domains: usize) -> anyhow::Result<Self> {
        let slots = Arc::new(Slots {
            hits: (0..domains).map(|_| AtomicU64::new(0)).collect(),
            down: (0..domains).map(|_| AtomicBool::new(false)).collect(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(answer).with_state(slots.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, slots })
    }

    pub fn url(&self, n: usize) -> String {
        format!("http://{}/d/{n}", self.addr)
    }

    pub fn set_down(&self, n: usize, down: bool) {
        self.slots.down[n].store(down, Ordering::Relaxed);
    }

    /// Requests received for each domain so far.
    pub fn hits(&self) -> Vec<u64> {
        self.slots.hits.iter().map(|h| h.load(Ordering::Relaxed)).collect()
    }
}

async fn answer(State(slots): State<Arc<Slots>>, uri: Uri) -> (StatusCode, &'static str) {
    let n = uri.path().strip_prefix("/d/").and_then(|n| n.parse::<usize>().ok());
    match n.filter(|n| *n < slots.hits.len()) {
        Some(n) => {
            slots.hits[n].fetch_add(1, Ordering::Relaxed);
            if slots.down[n].load(Ordering::Relaxed) {
                (StatusCode::SERVICE_UNAVAILABLE, "down")
            } else {
                (StatusCode::OK, "ok")
            }
        }
        None => (StatusCode::NOT_FOUND, "no such domain"),
    }
}

/// Notifications received, compared with the transitions the run caused.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub expected: usize,
    /// Expected transitions with no notification.
    pub lost: usize,
    /// Notifications beyond one per transition: the same message id again, or a second
    /// notification of one (kind, domain, incident).
    pub duplicated: usize,
    /// Opened or resolved notifications for domains the run never switched down (a false
    /// incident caused by a fault).
    pub unexpected: usize,
    /// Every notification received by kind.
    pub by_kind: BTreeMap<String, usize>,
}

/// The notification bodies one delivery carries: the elements of its `transitions` array when
/// it groups several, else the body itself.
fn carried(delivery: &Delivery) -> Vec<&Value> {
    match delivery.body.get("transitions").and_then(Value::as_array) {
        Some(transitions) => transitions.iter().collect(),
        None => vec![&delivery.body],
    }
}

/// Compares `deliveries` with `expected`: for each domain id, how many incidents the run caused
/// (each one an `incident_opened` and an `incident_resolved`).
pub fn tally(deliveries: &[Delivery], expected: &HashMap<String, usize>) -> Tally {
    let mut tally = Tally { expected: expected.values().sum::<usize>() * 2, ..Tally::default() };
    let field = |n: &Value, key: &str| n[key].as_str().unwrap_or_default().to_owned();
    let mut by_transition: HashMap<(String, String, String), usize> = HashMap::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for delivery in deliveries {
        *by_id.entry(delivery.id.as_str()).or_default() += 1;
        for n in carried(delivery) {
            let kind = field(n, "kind");
            *tally.by_kind.entry(kind.clone()).or_default() += 1;
            if kind == OPENED || kind == RESOLVED {
                *by_transition.entry((kind, field(n, "domain_id"), field(n, "incident_id"))).or_default() +=
                    1;
            }
        }
    }
    let repeated: usize = by_id.values().map(|n| n - 1).sum();
    tally.duplicated = by_transition.values().map(|n| n - 1).sum::<usize>().max(repeated);
    for (domain, incidents) in expected {
        for kind in [OPENED, RESOLVED] {
            let seen = by_transition.keys().filter(|(k, d, _)| k == kind && d == domain).count();
            tally.lost += incidents.saturating_sub(seen);
        }
    }
    tally.unexpected = by_transition.keys().filter(|(_, d, _)| !expected.contains_key(d)).count();
    tally
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    fn delivery(id: &str, body: Value) -> Delivery {
        Delivery {
            at: Instant::now(),
            id: id.into(),
            body,
            raw: String::new(),
            timestamp: String::new(),
            signature: String::new(),
        }
    }

    fn note(kind: &str, domain: &str, incident: &str) -> Value {
        json!({"kind": kind, "domain_id": domain, "incident_id": incident})
    }

    #[test]
    fn counts_lost_duplicated_and_unexpected_transitions() {
        let expected = HashMap::from([("a".to_owned(), 1), ("b".to_owned(), 1)]);
        let deliveries = [
            delivery("1", note(OPENED, "a", "i1")),
            delivery("2", note(RESOLVED, "a", "i1")),
            // The same message twice.
            delivery("2", note(RESOLVED, "a", "i1")),
            // b opened, never resolved; grouped with a false incident on c.
            delivery("3", json!({"transitions": [note(OPENED, "b", "i2"), note(OPENED, "c", "i3")]})),
        ];
        let tally = tally(&deliveries, &expected);
        assert_eq!(tally.expected, 4);
        assert_eq!(tally.lost, 1);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.unexpected, 1);
        assert_eq!(tally.by_kind[OPENED], 3);
    }

    #[test]
    fn nothing_received_is_everything_lost() {
        let expected = HashMap::from([("a".to_owned(), 2)]);
        let tally = tally(&[], &expected);
        assert_eq!((tally.expected, tally.lost, tally.duplicated), (4, 4, 0));
    }
}
