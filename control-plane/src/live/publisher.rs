//! Publishing: what a commit hands to the hub, and the task that writes it to Redis.
//!
//! [`Publisher::publish`] never waits and never fails the caller: it is called after a commit,
//! and a live update is not worth holding up the work that committed. The queue is bounded
//! (`live_publish_queue`); what does not fit is dropped and counted. The writer sends what is
//! queued in one pipeline (one round trip for many events), retrying a failed write a few
//! times before dropping it (counted, logged).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use shared::RedisKeys;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Event, Kind, LiveMetrics, Outgoing, Settings};
use crate::metrics::KindLabels;

/// A region's newest probe result of a domain, as consensus recorded it (its tenant is looked
/// up by the writer).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultNotice {
    pub domain: Uuid,
    pub region: String,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub status_code: Option<i32>,
    pub at: DateTime<Utc>,
}

/// Where commits publish live events. Cheap to clone; [`Publisher::disabled`] publishes
/// nothing (tools and tests that run consensus without a hub).
#[derive(Clone)]
pub struct Publisher {
    queue: Option<mpsc::Sender<Outgoing>>,
    results: bool,
    metrics: LiveMetrics,
}

/// The receiving end of the publisher's queue.
pub(super) struct Queues {
    rx: mpsc::Receiver<Outgoing>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("enabled", &self.queue.is_some()).finish()
    }
}

impl Publisher {
    pub(super) fn new(settings: &Settings, metrics: LiveMetrics) -> (Self, Queues) {
        let (tx, rx) = mpsc::channel(settings.publish_queue.max(1));
        (Self { queue: Some(tx), results: settings.results, metrics }, Queues { rx })
    }

    /// A publisher that drops everything (nothing listens).
    pub fn disabled() -> Self {
        Self { queue: None, results: false, metrics: LiveMetrics::default() }
    }

    /// Queues `event` for every replica's streams. Call after the commit that made it true.
    pub fn publish(&self, event: Event) {
        self.send(Outgoing::Event(Box::new(event)), 1);
    }

    /// Queues new probe results (the console's live results); nothing when `live_results` is
    /// off.
    pub fn publish_results(&self, results: Vec<ResultNotice>) {
        if self.results && !results.is_empty() {
            let n = results.len() as u64;
            self.send(Outgoing::Results(results), n);
        }
    }

    fn send(&self, item: Outgoing, n: u64) {
        let Some(queue) = &self.queue else { return };
        if let Err(error) = queue.try_send(item) {
            self.metrics.drop("queue_full", n);
            if matches!(error, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!(events = n, "live publish queue full; events dropped");
            }
        }
    }
}

/// Events written in one pipeline at most.
const BATCH: usize = 256;
/// Attempts at writing one batch.
const ATTEMPTS: u32 = 3;
/// Tenants remembered per domain before the cache starts over.
const TENANT_CACHE: usize = 100_000;

/// Drains the queue into Redis until `shutdown` (then writes what is left).
pub(super) async fn write(
    mut queues: Queues,
    redis: Client,
    keys: RedisKeys,
    pool: PgPool,
    max_len: u64,
    metrics: LiveMetrics,
    shutdown: CancellationToken,
) {
    let mut tenants: HashMap<Uuid, Uuid> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            n = queues.rx.recv_many(&mut batch, BATCH) => n,
            () = shutdown.cancelled() => {
                while batch.len() < BATCH * 4 {
                    match queues.rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                batch.len()
            }
        };
        if received == 0 && !shutdown.is_cancelled() {
            break; // every publisher is gone
        }
        let mut events = Vec::new();
        let mut results = Vec::new();
        for item in batch.drain(..) {
            match item {
                Outgoing::Event(event) => events.push(*event),
                Outgoing::Results(notices) => results.extend(notices),
            }
        }
        if !events.is_empty() {
            write_events(&redis, &keys, max_len, &events, &metrics).await;
        }
        if !results.is_empty() {
            write_results(&redis, &keys, &pool, &mut tenants, results, &metrics).await;
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
}

async fn write_events(
    redis: &Client,
    keys: &RedisKeys,
    max_len: u64,
    events: &[Event],
    metrics: &LiveMetrics,
) {
    let key = keys.events();
    for attempt in 1..=ATTEMPTS {
        match xadd_all(redis, &key, max_len, events).await {
            Ok(()) => {
                for event in events {
                    metrics.published.get_or_create(&KindLabels { kind: event.kind.as_str().into() }).inc();
                }
                return;
            }
            Err(error) => {
                metrics.error("publish");
                if attempt == ATTEMPTS {
                    metrics.drop("publish", events.len() as u64);
                    tracing::error!(%error, events = events.len(), "live events could not be written to redis; dropped");
                } else {
                    tracing::warn!(%error, attempt, "writing live events to redis failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
    }
}

async fn xadd_all(
    redis: &Client,
    key: &str,
    max_len: u64,
    events: &[Event],
) -> Result<(), fred::error::Error> {
    let pipeline = redis.pipeline();
    let cap = ("MAXLEN", "~", i64::try_from(max_len).unwrap_or(i64::MAX));
    for event in events {
        let () = pipeline.xadd(key, false, cap, "*", vec![("e", event.json())]).await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

async fn write_results(
    redis: &Client,
    keys: &RedisKeys,
    pool: &PgPool,
    tenants: &mut HashMap<Uuid, Uuid>,
    results: Vec<ResultNotice>,
    metrics: &LiveMetrics,
) {
    let mut missing: Vec<Uuid> =
        results.iter().map(|r| r.domain).filter(|d| !tenants.contains_key(d)).collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        if tenants.len() + missing.len() > TENANT_CACHE {
            tenants.clear();
        }
        let rows: Result<Vec<(Uuid, Uuid)>, _> =
            sqlx::query_as("SELECT id, tenant_id FROM domains WHERE id = ANY($1)")
                .bind(&missing)
                .fetch_all(pool)
                .await;
        match rows {
            Ok(rows) => tenants.extend(rows),
            Err(error) => {
                metrics.error("tenants");
                metrics.drop("publish", results.len() as u64);
                tracing::warn!(%error, "looking up the tenants of live results failed; results dropped");
                return;
            }
        }
    }
    // A domain deleted meanwhile has no tenant: its results concern nobody.
    let events: Vec<Event> = results
        .into_iter()
        .filter_map(|r| {
            let tenant = *tenants.get(&r.domain)?;
            Some(Event::result(tenant, r.domain, r.region, r.ok, r.error_kind, r.status_code, r.at))
        })
        .collect();
    if events.is_empty() {
        return;
    }
    let payload = match serde_json::to_string(&events) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::error!(%error, "encoding live results failed");
            return;
        }
    };
    match redis.publish::<i64, _, _>(keys.event_results(), payload).await {
        Ok(_) => {
            let kind = KindLabels { kind: Kind::Result.as_str().into() };
            metrics.published.get_or_create(&kind).inc_by(events.len() as u64);
        }
        Err(error) => {
            metrics.error("publish");
            metrics.drop("publish", events.len() as u64);
            tracing::warn!(%error, "publishing live results failed; dropped");
        }
    }
}
