//! Keeping the catalog in step with Redis.
//!
//! - At start: subscribe to `<prefix>:domains:changes`, then load the whole `<prefix>:domains`
//!   hash in pages (HSCAN) together with its version.
//! - On a notice: the next version reads that one field; anything else ([`super::on_notice`])
//!   is ignored or triggers a full resync, which also drops domains that are gone.
//! - On a reconnect, a lagging consumer, or a periodic version check that disagrees: full
//!   resync, since Pub/Sub is at-most-once and messages may have been lost.
//! - When Redis is unreachable the catalog stays as it is (probing continues on it); the
//!   clients reconnect with capped exponential backoff, and failures are logged and counted.
//! - A Redis without a version key (flushed, not yet rebuilt by the control plane) is never
//!   taken as "no domains": the agent keeps its catalog until the control plane republishes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scan::Scanner;
use futures::TryStreamExt;
use shared::{ChangeNotice, DomainConfig, DomainId, RedisKeys};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{on_notice, Catalog, NoticeAction};
use crate::metrics::Metrics;

/// Fields per HSCAN page.
const SCAN_PAGE: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("redis unavailable")]
    Redis(#[from] fred::error::Error),
    #[error("redis holds no published configuration yet")]
    NotPublished,
}

/// Owns the Redis clients and the catalog's `watch` sender.
pub struct CatalogSync {
    region: String,
    keys: RedisKeys,
    client: Client,
    subscriber: SubscriberClient,
    catalog: watch::Sender<Arc<Catalog>>,
    loaded: Arc<AtomicBool>,
    metrics: Metrics,
    version_check: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
}

/// A read handle on the catalog, for the scheduler, the debug endpoint and readiness.
#[derive(Clone)]
pub struct CatalogHandle {
    pub catalog: watch::Receiver<Arc<Catalog>>,
    loaded: Arc<AtomicBool>,
}

impl CatalogHandle {
    /// A handle on a catalog published by something other than [`CatalogSync`] (tests and
    /// benchmarks drive the agent's parts with a catalog of their own).
    pub fn from_watch(catalog: watch::Receiver<Arc<Catalog>>, loaded: bool) -> Self {
        Self { catalog, loaded: Arc::new(AtomicBool::new(loaded)) }
    }

    /// Whether a full load has succeeded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }
}

/// What the sync needs besides its clients.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub region: String,
    pub keys: RedisKeys,
    pub version_check: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl CatalogSync {
    pub fn new(
        settings: SyncSettings,
        client: Client,
        subscriber: SubscriberClient,
        metrics: Metrics,
    ) -> (Self, CatalogHandle) {
        let (tx, rx) = watch::channel(Arc::new(Catalog::default()));
        let loaded = Arc::new(AtomicBool::new(false));
        let sync = Self {
            region: settings.region,
            keys: settings.keys,
            client,
            subscriber,
            catalog: tx,
            loaded: loaded.clone(),
            metrics,
            version_check: settings.version_check,
            min_backoff: settings.min_backoff,
            max_backoff: settings.max_backoff,
        };
        (sync, CatalogHandle { catalog: rx, loaded })
    }

    fn current(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    fn publish(&self, catalog: Catalog) {
        self.metrics.catalog_domains.set(catalog.len() as i64);
        self.metrics.catalog_version.set(catalog.version() as i64);
        self.catalog.send_replace(Arc::new(catalog));
    }

    /// Loads the whole hash. Reads the version first: changes landing during the scan are
    /// also announced by notices above that version, which re-read their fields, so the
    /// catalog converges whatever the scan saw.
    pub async fn resync(&self, reason: &'static str) -> Result<(), SyncError> {
        let started = std::time::Instant::now();
        let version: Option<u64> = self.client.get(self.keys.version()).await?;
        let Some(version) = version else {
            return Err(SyncError::NotPublished);
        };
        let mut configs = Vec::new();
        let mut bad = 0u64;
        let pages = self.client.hscan(self.keys.domains(), "*", Some(SCAN_PAGE));
        let mut pages = std::pin::pin!(pages);
        while let Some(mut page) = pages.try_next().await? {
            if let Some(map) = page.take_results() {
                for (field, value) in map.inner() {
                    match value.as_str().map(|s| serde_json::from_str::<DomainConfig>(s.as_ref())) {
                        Some(Ok(config)) => configs.push(config),
                        _ => {
                            bad += 1;
                            tracing::warn!(field = ?field.as_str(), "unreadable domain config in redis; skipped");
                        }
                    }
                }
            }
            page.next();
        }
        if bad > 0 {
            self.metrics
                .catalog_errors
                .get_or_create(&crate::metrics::ReasonLabels { reason: "decode".into() })
                .inc_by(bad);
        }
        let catalog = Catalog::from_snapshot(version, configs, &self.region);
        tracing::info!(
            reason,
            version,
            domains = catalog.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "catalog loaded"
        );
        self.metrics.resync(reason);
        self.publish(catalog);
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies one notice; may fall back to a full resync.
    async fn handle_notice(&self, notice: &ChangeNotice) -> Result<(), SyncError> {
        let current = self.current();
        match on_notice(current.version(), notice) {
            NoticeAction::Ignore => Ok(()),
            NoticeAction::Resync(reason) => self.resync(reason).await,
            NoticeAction::Fetch(id) => self.fetch_one(id, notice.version).await,
        }
    }

    async fn fetch_one(&self, id: DomainId, version: u64) -> Result<(), SyncError> {
        let raw: Option<String> = self.client.hget(self.keys.domains(), id.to_string()).await?;
        let config = match raw.as_deref().map(serde_json::from_str::<DomainConfig>) {
            None => None,
            Some(Ok(config)) => Some(config),
            Some(Err(error)) => {
                self.metrics.error("decode");
                // The category and position only: serde's message can quote a value, and a
                // configuration holds secrets.
                tracing::warn!(
                    domain_id = %id, category = ?error.classify(), line = error.line(), column = error.column(),
                    "unreadable domain config in redis; resyncing"
                );
                return self.resync("decode").await;
            }
        };
        // The catalog may have moved on while we read (only this task writes it, so it has
        // not); apply on top of what is current.
        let next = self.current().with_change(version, id, config, &self.region);
        tracing::debug!(domain_id = %id, version, domains = next.len(), "catalog updated");
        self.metrics.catalog_updates.inc();
        self.publish(next);
        Ok(())
    }

    async fn subscribe(&self) -> Result<(), SyncError> {
        self.subscriber.subscribe(self.keys.changes()).await?;
        Ok(())
    }

    /// Subscribes and loads, retrying with backoff until it works or `cancel` fires.
    async fn establish(&self, reason: &'static str, cancel: &CancellationToken) {
        let mut backoff = self.min_backoff;
        loop {
            let attempt = async {
                self.subscribe().await?;
                self.resync(reason).await
            };
            match attempt.await {
                Ok(()) => return,
                Err(error) => {
                    let label = match error {
                        SyncError::Redis(_) => "redis",
                        SyncError::NotPublished => "not_published",
                    };
                    self.metrics.error(label);
                    tracing::warn!(
                        error = %error,
                        cause = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default(),
                        retry_in_ms = backoff.as_millis() as u64,
                        domains_kept = self.current().len(),
                        "catalog sync failed; keeping the current catalog"
                    );
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(jitter(backoff)) => {}
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    /// Compares the catalog's version with Redis's. Redis behind the catalog (rebuilt or
    /// restored) resyncs at once. Redis ahead is normal for a moment (notices in flight), so it
    /// resyncs only when the catalog has still not reached, by the next check, the version Redis
    /// had at this one: the notice for it was lost.
    async fn check_version(&self, ahead_at_last_check: &mut Option<u64>) -> Result<(), SyncError> {
        let remote: Option<u64> = self.client.get(self.keys.version()).await?;
        let local = self.current().version();
        let Some(remote) = remote else { return Err(SyncError::NotPublished) };
        let lost = ahead_at_last_check.is_some_and(|earlier| local < earlier);
        if remote < local || lost {
            tracing::info!(redis_version = remote, catalog_version = local, "catalog out of step with redis");
            *ahead_at_last_check = None;
            return self.resync("version_check").await;
        }
        *ahead_at_last_check = (remote > local).then_some(remote);
        Ok(())
    }

    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut errors = self.subscriber.error_rx();
        let _conn_client = self.client.connect();
        let _conn_sub = self.subscriber.connect();

        self.establish("start", &cancel).await;
        let mut check = tokio::time::interval(self.version_check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.reset();
        let mut first_connect_seen = false;
        let mut ahead_at_last_check = None;

        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                message = messages.recv() => match message {
                    Ok(message) => {
                        let parsed = message.value.as_str().and_then(|s| serde_json::from_str::<ChangeNotice>(s.as_ref()).ok());
                        let Some(notice) = parsed else {
                            self.metrics.error("bad_notice");
                            tracing::warn!("unreadable change notice; resyncing");
                            self.establish("bad_notice", &cancel).await;
                            continue;
                        };
                        if let Err(error) = self.handle_notice(&notice).await {
                            self.metrics.error("apply");
                            tracing::warn!(error = %error, version = notice.version, "applying a change failed; resyncing");
                            self.establish("apply_failed", &cancel).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "change notices overflowed; resyncing");
                        self.establish("lagged", &cancel).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        messages = self.subscriber.message_rx();
                    }
                },
                event = reconnects.recv() => {
                    if event.is_ok() {
                        self.metrics.redis_up.set(1);
                        // The first event is the initial connection, not a reconnection.
                        if first_connect_seen {
                            self.metrics.redis_reconnects.inc();
                            tracing::info!("reconnected to redis; resubscribing and resyncing");
                            self.establish("reconnect", &cancel).await;
                        }
                        first_connect_seen = true;
                    }
                },
                error = errors.recv() => {
                    if let Ok((error, _)) = error {
                        self.metrics.redis_up.set(0);
                        tracing::warn!(%error, domains_kept = self.current().len(), "redis connection lost; probing continues on the current catalog");
                    }
                },
                _ = check.tick() => {
                    if let Err(error) = self.check_version(&mut ahead_at_last_check).await {
                        self.metrics.error("version_check");
                        tracing::warn!(error = %error, "catalog version check failed");
                    }
                },
            }
        }
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
        tracing::info!("catalog sync stopped");
    }
}

fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::thread_rng().gen_range(0..=ms / 2 + 1))
}
