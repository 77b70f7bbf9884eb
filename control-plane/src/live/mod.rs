//! Live updates: events published after their commit, fanned out to every replica, and
//! streamed to browsers as Server-Sent Events.
//!
//! ```text
//! commit (consensus, API) ──Publisher::publish──▶ bounded queue ──XADD MAXLEN ~──▶ <prefix>:events (stream)
//! recorded results ──Publisher::publish_results──▶ bounded queue ──PUBLISH──▶ <prefix>:events:results
//!                                                                                 │
//!        every replica: XREAD BLOCK from its last id (stream) + SUBSCRIBE (results) ◀┘
//!                          │ hooks (cache invalidation), then tokio broadcast
//!                          ▼
//!        each SSE client: its View filters and shapes events; Last-Event-ID resumes from the stream
//! ```
//!
//! - **After commit, never in the transaction**: [`Publisher::publish`] only queues (a full
//!   queue drops the event, counted in `control_plane_live_events_dropped_total{reason=
//!   "queue_full"}`); a task writes the queue to Redis in pipelined batches.
//! - **Every replica delivers every event**: each replica reads the whole stream with
//!   `XREAD BLOCK` from the last id it read, so a replica that lost Redis for a while catches up
//!   on what it missed (as long as the stream still holds it) instead of losing it as Pub/Sub
//!   would. Results, which are many and stale as soon as a newer one exists, go through Pub/Sub
//!   only and carry no id.
//! - **Resume**: a stream's events carry their stream id as the SSE `id`; a reconnecting
//!   browser sends it back as `Last-Event-ID` (or a page passes the position it was rendered at
//!   as `?after=`), and the stream replays what came after it from Redis before going live. When
//!   that part of the stream was trimmed (`live_stream_max_len`), the client is sent `reset`
//!   (reload) instead of a silent gap.
//! - **Slow clients are dropped**: a client may fall at most `live_client_buffer` events behind
//!   the broadcast; beyond it its stream ends (its browser reconnects and resumes). Nothing
//!   waits for a client. Heartbeats every `live_heartbeat_s` carry the position the client has
//!   reached, so a quiet stream still resumes from close to where it stopped.
//! - **Bounded**: at most `live_max_clients` streams per replica; beyond it `503`.
//!
//! A stream is shaped by a [`View`]: [`TenantView`] (the console: every event of one tenant,
//! results included, as the event's JSON) or a status page's view (its components' state
//! changes and incident updates only, without URLs, addresses, errors or ids it does not
//! reveal; see [`crate::status`]).

mod event;
mod publisher;
mod stream;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared::RedisKeys;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use event::{BadEventId, Event, EventId, Kind};
pub use publisher::{Publisher, ResultNotice};
pub use stream::{resume_point, Busy, Delivery, Message, TenantView, View};

use crate::config::Config;
use crate::metrics::{KindLabels, OutcomeLabels, ReasonLabels};

/// The settings of the live hub (from the `live_*` configuration keys).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Entries kept in the stream (approximate trimming).
    pub stream_max_len: u64,
    /// SSE streams this replica serves at once.
    pub max_clients: usize,
    /// Events a client may fall behind before it is dropped.
    pub client_buffer: usize,
    /// Interval of heartbeats on an idle stream.
    pub heartbeat: Duration,
    /// Events waiting to be written to Redis before new ones are dropped.
    pub publish_queue: usize,
    /// Whether new probe results are published (the console's live results).
    pub results: bool,
    /// What browsers are told to wait before reconnecting.
    pub retry: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            stream_max_len: config.live_stream_max_len,
            max_clients: config.live_max_clients,
            client_buffer: config.live_client_buffer,
            heartbeat: Duration::from_millis(config.live_heartbeat_ms),
            publish_queue: config.live_publish_queue,
            results: config.live_results,
            retry: Duration::from_secs(2),
        }
    }
}

/// The hub's metrics (`control_plane_live_*`).
#[derive(Clone, Debug, Default)]
pub struct LiveMetrics {
    /// Events written to Redis by this replica, by kind.
    pub published: Family<KindLabels, Counter>,
    /// Events read from Redis by this replica and handed to its clients, by kind.
    pub received: Family<KindLabels, Counter>,
    /// Events lost, by reason: `queue_full` (the publish queue), `publish` (Redis refused the
    /// write after retries), `malformed` (an entry that does not parse), `lagged` (results the
    /// subscriber missed).
    pub dropped: Family<ReasonLabels, Counter>,
    /// Failed Redis calls of the hub, by reason (`publish`, `read`, `replay`, `subscribe`).
    pub errors: Family<ReasonLabels, Counter>,
    /// Open SSE streams on this replica.
    pub clients: Gauge,
    /// Streams ended by the server, by reason: `slow` (fell more than `live_client_buffer`
    /// events behind), `reset` (could not resume), `refused` (`live_max_clients` reached).
    pub disconnects: Family<ReasonLabels, Counter>,
    /// Resumptions by outcome: `resumed`, `reset`.
    pub resumes: Family<OutcomeLabels, Counter>,
}

impl LiveMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("control_plane_live");
        r.register("events_published", "Live events written to Redis, by kind", self.published.clone());
        r.register(
            "events_received",
            "Live events read from Redis and fanned out, by kind",
            self.received.clone(),
        );
        r.register("events_dropped", "Live events lost, by reason", self.dropped.clone());
        r.register("errors", "Failed Redis calls of the live hub, by reason", self.errors.clone());
        r.register("clients", "Open Server-Sent Event streams", self.clients.clone());
        r.register("disconnects", "Streams ended by the server, by reason", self.disconnects.clone());
        r.register("resumes", "Stream resumptions by outcome", self.resumes.clone());
    }

    fn drop(&self, reason: &str, n: u64) {
        self.dropped.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(n);
    }

    fn error(&self, reason: &str) {
        self.errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    fn disconnect(&self, reason: &str) {
        self.disconnects.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    fn resume(&self, outcome: &str) {
        self.resumes.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }
}

/// Called with every stream event this replica reads, before its clients get it (e.g. to drop
/// a cached page the event makes stale).
pub type Hook = Box<dyn Fn(&Event) + Send + Sync>;

/// The live hub of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    keys: RedisKeys,
    /// Commands (XADD, XRANGE, PUBLISH).
    redis: Client,
    /// Its own connection for the blocking `XREAD`.
    reader: Client,
    subscriber: fred::clients::SubscriberClient,
    pool: PgPool,
    metrics: LiveMetrics,
    publisher: Publisher,
    /// The publisher's queues, taken by [`Hub::run`].
    queues: Mutex<Option<publisher::Queues>>,
    kept: broadcast::Sender<Arc<Event>>,
    results: broadcast::Sender<Arc<Event>>,
    /// The id of the last stream entry this replica has read.
    position: Mutex<EventId>,
    clients: AtomicUsize,
    hooks: RwLock<Vec<Hook>>,
    /// Cancelled when the hub stops: every stream ends (a graceful shutdown waits for them).
    closing: CancellationToken,
}

impl Hub {
    /// Connects the hub's Redis clients (commands, the blocking reader, the results
    /// subscriber) and reads where the stream ends, so streams opened before the reader's first
    /// read already know their position.
    pub async fn connect(config: &Config, pool: PgPool, metrics: LiveMetrics) -> anyhow::Result<Self> {
        let settings = Settings::from_config(config);
        let keys = RedisKeys::new(config.redis_prefix.clone());
        let redis = shared::redis::builder(&config.redis_url, Default::default())
            .context("invalid redis_url")?
            .build()
            .context("building the live hub's redis client")?;
        // The reader blocks for READ_BLOCK at a time: its command timeout must be longer.
        let reader_options = shared::redis::RedisOptions {
            command_timeout: READ_BLOCK + Duration::from_secs(5),
            ..Default::default()
        };
        let reader = shared::redis::builder(&config.redis_url, reader_options)
            .context("invalid redis_url")?
            .build()
            .context("building the live hub's stream reader")?;
        let subscriber = shared::redis::builder(&config.redis_url, Default::default())
            .context("invalid redis_url")?
            .build_subscriber_client()
            .context("building the live hub's subscriber")?;
        redis.init().await.context("the live hub cannot connect to redis")?;
        reader.init().await.context("the live hub's reader cannot connect to redis")?;
        subscriber.init().await.context("the live hub's subscriber cannot connect to redis")?;
        subscriber.subscribe(keys.event_results()).await.context("subscribing to live results")?;
        let _resubscriber = subscriber.manage_subscriptions();
        let position =
            stream::last_id(&redis, &keys.events()).await.context("reading the live stream's end")?;
        let (publisher, queues) = Publisher::new(&settings, metrics.clone());
        let (kept, _) = broadcast::channel(settings.client_buffer.max(1));
        let (results, _) = broadcast::channel(settings.client_buffer.max(1));
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                keys,
                redis,
                reader,
                subscriber,
                pool,
                metrics,
                publisher,
                queues: Mutex::new(Some(queues)),
                kept,
                results,
                position: Mutex::new(position),
                clients: AtomicUsize::new(0),
                hooks: RwLock::new(Vec::new()),
                closing: CancellationToken::new(),
            }),
        })
    }

    /// What commits publish through (cheap to clone).
    pub fn publisher(&self) -> Publisher {
        self.inner.publisher.clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The id of the last stream entry this replica has read: a page rendered now reflects
    /// every event up to it, so its stream resumes after it (`?after=`).
    pub fn position(&self) -> EventId {
        *self.inner.position.lock().expect("live position lock")
    }

    /// Open streams on this replica.
    pub fn clients(&self) -> usize {
        self.inner.clients.load(Ordering::Relaxed)
    }

    /// Runs `hook` on every stream event read from now on, before clients get it.
    pub fn on_event(&self, hook: Hook) {
        self.inner.hooks.write().expect("live hooks lock").push(hook);
    }

    /// Writes published events to Redis and reads every replica's events back, until
    /// `shutdown`. Call once.
    pub async fn run(self, shutdown: CancellationToken) {
        let queues = self.inner.queues.lock().expect("live queue lock").take();
        let Some(queues) = queues else {
            tracing::error!("the live hub was run twice; the second run does nothing");
            return;
        };
        let writer = tokio::spawn(publisher::write(
            queues,
            self.inner.redis.clone(),
            self.inner.keys.clone(),
            self.inner.pool.clone(),
            self.inner.settings.stream_max_len,
            self.inner.metrics.clone(),
            shutdown.clone(),
        ));
        let results = tokio::spawn(self.clone().read_results(shutdown.clone()));
        let closing = self.inner.closing.clone();
        let streams = shutdown.clone();
        tokio::spawn(async move {
            streams.cancelled().await;
            closing.cancel();
        });
        self.clone().read_stream(shutdown).await;
        for (name, task) in [("writer", writer), ("results reader", results)] {
            if let Err(error) = task.await {
                tracing::error!(%error, task = name, "live hub task panicked");
            }
        }
        let _ = self.inner.subscriber.quit().await;
        let _ = self.inner.reader.quit().await;
    }

    /// Reads the stream from this replica's position with `XREAD BLOCK`, forever.
    async fn read_stream(self, shutdown: CancellationToken) {
        let key = self.inner.keys.events();
        let mut failures: u32 = 0;
        loop {
            let from = self.position();
            let read = tokio::select! {
                () = shutdown.cancelled() => break,
                read = stream::read_after(&self.inner.reader, &key, from, READ_BLOCK) => read,
            };
            match read {
                Ok(entries) => {
                    failures = 0;
                    for (id, event) in entries {
                        match event {
                            Some(event) => self.fan_out(event.with_id(id)),
                            None => self.inner.metrics.drop("malformed", 1),
                        }
                        *self.inner.position.lock().expect("live position lock") = id;
                    }
                }
                Err(error) => {
                    self.inner.metrics.error("read");
                    failures = failures.saturating_add(1);
                    let backoff =
                        (Duration::from_millis(100) * 2u32.pow(failures.min(6))).min(Duration::from_secs(5));
                    tracing::warn!(error = %error, ?backoff, "reading the live event stream failed; retrying from the last id read");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    fn fan_out(&self, event: Event) {
        self.inner.metrics.received.get_or_create(&KindLabels { kind: event.kind.as_str().into() }).inc();
        for hook in self.inner.hooks.read().expect("live hooks lock").iter() {
            hook(&event);
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.inner.kept.send(Arc::new(event));
    }

    /// Hands every results message to this replica's clients, until `shutdown`.
    async fn read_results(self, shutdown: CancellationToken) {
        let channel = self.inner.keys.event_results();
        let mut messages = self.inner.subscriber.message_rx();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                message = messages.recv() => match message {
                    Ok(message) => {
                        if *message.channel != *channel {
                            continue;
                        }
                        let parsed = message.value.as_str().and_then(|text| serde_json::from_str::<Vec<Event>>(text.as_ref()).ok());
                        match parsed {
                            Some(events) => {
                                let kind = KindLabels { kind: Kind::Result.as_str().into() };
                                self.inner.metrics.received.get_or_create(&kind).inc_by(events.len() as u64);
                                for event in events {
                                    let _ = self.inner.results.send(Arc::new(event));
                                }
                            }
                            None => self.inner.metrics.drop("malformed", 1),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.inner.metrics.drop("lagged", missed);
                        tracing::warn!(missed, "live results overflowed the subscriber");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        messages = self.inner.subscriber.message_rx();
                    }
                },
            }
        }
    }

    fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        (self.inner.kept.subscribe(), self.inner.results.subscribe())
    }

    /// Takes a client slot, or refuses when `live_max_clients` streams are open.
    fn slot(&self) -> Result<Slot, Busy> {
        let max = self.inner.settings.max_clients;
        let taken = self
            .inner
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(n) => {
                self.inner.metrics.clients.set((n + 1) as i64);
                Ok(Slot { hub: self.inner.clone() })
            }
            Err(_) => {
                self.inner.metrics.disconnect("refused");
                Err(Busy)
            }
        }
    }
}

/// How long one `XREAD` blocks at most (an idle replica re-issues it).
const READ_BLOCK: Duration = Duration::from_secs(2);

/// One open stream; releases its place when the stream ends.
struct Slot {
    hub: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let left = self.hub.clients.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.hub.metrics.clients.set(left as i64);
    }
}

/// What the publisher's queue holds.
#[derive(Debug)]
enum Outgoing {
    Event(Box<Event>),
    Results(Vec<ResultNotice>),
}
