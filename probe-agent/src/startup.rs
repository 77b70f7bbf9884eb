//! Building and running an agent: validate, check the certificate's identity when delivery is
//! configured, build the Redis clients and the delivery channel, bind the operational listener,
//! then run the catalog sync, the region membership registry, the scheduler, the probe-request
//! listener, the canary self-check, the result consumer and the sender until shutdown.
//! On shutdown probing stops first and the agent leaves its region's members; then the open
//! batch is closed and buffered results are delivered within `shutdown_flush_timeout_ms` (with
//! `spool_dir`, what is left stays on disk for the next start, which sends it first).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use shared::RedisKeys;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::canary::{Canaries, CanarySettings, HealthWatch};
use crate::catalog::sync::{CatalogHandle, CatalogSync, SyncSettings};
use crate::config::Config;
use crate::delivery::{self, Batching, DeliverySettings, Sender};
use crate::membership::registry::Registry as Members;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::probe::Prober;
use crate::requests::{ProbeRequests, RequestSettings};
use crate::results::{self, LatestResults, ProbeResult};
use crate::scheduler::{ProbeNow, Saturation, Scheduler, SchedulerSettings};

pub struct Agent {
    config: Arc<Config>,
    listener: TcpListener,
    sync: CatalogSync,
    handle: CatalogHandle,
    members: Members,
    membership: tokio::sync::watch::Receiver<Arc<Membership>>,
    scheduler: Scheduler,
    probe_now: ProbeNow,
    requests: ProbeRequests,
    canaries: Canaries,
    health: HealthWatch,
    results: tokio::sync::mpsc::Receiver<ProbeResult>,
    delivery: Option<(Batching, Sender)>,
    latest: LatestResults,
    registry: Arc<Registry>,
    pub metrics: Metrics,
}

impl Agent {
    /// Builds the agent and binds its operational listener. Needs neither Redis nor the control
    /// plane to be up. Refuses a configured region that differs from the agent certificate's
    /// (see [`Config::adopt_certificate_identity`]).
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let configured_id = config.agent_id.clone();
        let identity =
            config.adopt_certificate_identity().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if let Some(cert) = &identity {
            if cert.identity.agent_id != configured_id {
                tracing::warn!(
                    configured = %configured_id,
                    certificate = %cert.identity.agent_id,
                    "agent_id differs from the agent certificate's; using the certificate's"
                );
            }
        }
        let builder =
            shared::redis::builder(&config.redis_url, config.redis_options()).context("invalid redis_url")?;
        let client = builder.build().context("building the redis client")?;
        let subscriber = builder.build_subscriber_client().context("building the redis subscriber")?;
        let request_subscriber =
            builder.build_subscriber_client().context("building the redis subscriber for probe requests")?;
        let registry_client = builder.build().context("building the redis client for membership")?;
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let settings = SyncSettings {
            region: config.region.clone(),
            keys: RedisKeys::new(config.redis_prefix.clone()),
            version_check: config.version_check_interval(),
            min_backoff: std::time::Duration::from_millis(config.redis_min_backoff_ms),
            max_backoff: std::time::Duration::from_millis(config.redis_max_backoff_ms),
        };
        let keys = settings.keys.clone();
        let (sync, handle) = CatalogSync::new(settings, client, subscriber, metrics.clone());
        let probe_settings =
            config.probe_settings().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let prober = Arc::new(Prober::new(probe_settings).context("building the prober")?);
        let (sink, results) = results::queue(config.result_queue_capacity, metrics.clone());
        let saturation = Saturation::new(std::time::Duration::from_millis(config.saturation_lag_ms));
        let (scheduler, probe_now) = Scheduler::new(
            SchedulerSettings { region: config.region.clone(), max_in_flight: config.max_in_flight },
            handle.catalog.clone(),
            prober.clone(),
            sink,
            metrics.clone(),
        );
        let (members, membership) =
            Members::new(config.membership_settings(), registry_client, metrics.clone());
        let scheduler = scheduler.with_saturation(saturation.clone()).with_membership(membership.clone());
        let requests = ProbeRequests::new(
            RequestSettings {
                region: config.region.clone(),
                keys,
                max_in_flight: config.on_demand_limit(),
                min_backoff: std::time::Duration::from_millis(config.redis_min_backoff_ms),
                max_backoff: std::time::Duration::from_millis(config.redis_max_backoff_ms),
            },
            request_subscriber,
            handle.clone(),
            probe_now.clone(),
            metrics.clone(),
        );
        let (canaries, health) = Canaries::new(CanarySettings::from_config(&config), prober, metrics.clone());
        if config.on_demand_limit() < config.max_on_demand_in_flight {
            tracing::info!(
                max_on_demand_in_flight = config.max_on_demand_in_flight,
                limit = config.on_demand_limit(),
                "on-demand probes are limited to half of max_in_flight"
            );
        }
        let delivery = match DeliverySettings::from_config(&config) {
            Some(settings) => {
                let url = settings.url.clone();
                let built = delivery::build(settings, metrics.clone(), health.clone(), saturation.clone())?;
                tracing::info!(
                    control_plane = %url,
                    identity = %identity.as_ref().map(|c| c.identity.to_string()).unwrap_or_default(),
                    spool = %config.spool_dir.as_ref().map_or_else(|| "none (in memory)".into(), |d| d.display().to_string()),
                    "results are delivered to the control plane"
                );
                Some(built)
            }
            None => {
                tracing::warn!(
                    "control_plane_url is not set: results are only kept locally (/debug/results), not delivered"
                );
                if let Some(dir) = &config.spool_dir {
                    tracing::warn!(dir = %dir.display(), "spool_dir is set but unused: nothing is delivered");
                }
                None
            }
        };
        let listener =
            shared::listen::bind(config.listen).with_context(|| format!("cannot bind {}", config.listen))?;
        Ok(Self {
            config: Arc::new(config),
            listener,
            sync,
            handle,
            members,
            membership,
            scheduler,
            probe_now,
            requests,
            canaries,
            health,
            results,
            delivery,
            latest: LatestResults::default(),
            registry: Arc::new(registry),
            metrics,
        })
    }

    /// The entry point for probing a domain outside its schedule.
    pub fn probe_now(&self) -> ProbeNow {
        self.probe_now.clone()
    }

    /// The agent's latest canary verdict (`None` without canaries or before the first check).
    pub fn health(&self) -> HealthWatch {
        self.health.clone()
    }

    /// The latest result of each domain.
    pub fn latest(&self) -> LatestResults {
        self.latest.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// A read handle on the catalog.
    pub fn catalog(&self) -> CatalogHandle {
        self.handle.clone()
    }

    /// The region's member set as this agent sees it (see [`crate::membership`]).
    pub fn membership(&self) -> tokio::sync::watch::Receiver<Arc<Membership>> {
        self.membership.clone()
    }

    /// The agent's effective configuration (with the certificate's agent id when delivering).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs until `shutdown` is cancelled; then stops probing, flushes delivery (bounded by
    /// `shutdown_flush_timeout_ms`) and returns.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(region = %self.config.region, agent_id = %self.config.agent_id, addr = %self.local_addr(), "probe agent starting");
        let sync = tokio::spawn(self.sync.run(shutdown.child_token()));
        let members = tokio::spawn(self.members.run(shutdown.child_token()));
        let saturation = self.scheduler.saturation();
        let scheduler = tokio::spawn(self.scheduler.run(shutdown.child_token()));
        let requests = tokio::spawn(self.requests.run(shutdown.child_token()));
        let canaries = tokio::spawn(self.canaries.run(shutdown.child_token()));
        let (batching, sender) = match self.delivery {
            Some((batching, sender)) => (Some(batching), Some(tokio::spawn(sender.run()))),
            None => (None, None),
        };
        let consumer = tokio::spawn(results::consume(
            self.results,
            self.latest.clone(),
            self.handle.clone(),
            self.metrics.clone(),
            batching,
        ));
        let app = ops_router(
            DebugState {
                handle: self.handle.clone(),
                latest: self.latest.clone(),
                health: self.health.clone(),
                saturation,
                membership: self.membership.clone(),
                config: self.config.clone(),
            },
            self.registry.clone(),
        );
        let signal = shutdown.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .context("operational http server failed");
        shutdown.cancel();
        for (name, task) in [
            ("catalog sync", sync),
            ("membership", members),
            ("scheduler", scheduler),
            ("probe requests", requests),
            ("canaries", canaries),
            ("result consumer", consumer),
        ] {
            if let Err(error) = task.await {
                tracing::error!(%error, task = name, "agent task panicked");
            }
        }
        // The consumer has closed the last batch; the sender delivers what it can and stops.
        if let Some(sender) = sender {
            if let Err(error) = sender.await {
                tracing::error!(%error, task = "delivery sender", "agent task panicked");
            }
        }
        served
    }
}

#[derive(Clone)]
struct DebugState {
    handle: CatalogHandle,
    latest: LatestResults,
    health: HealthWatch,
    saturation: Saturation,
    membership: tokio::sync::watch::Receiver<Arc<Membership>>,
    config: Arc<Config>,
}

fn ops_router(state: DebugState, registry: Arc<Registry>) -> Router {
    let ready_handle = state.handle.clone();
    let ready: shared::ops::ReadyCheck = Arc::new(move || {
        let loaded = ready_handle.is_loaded();
        Box::pin(async move {
            if loaded {
                Ok(Vec::new())
            } else {
                Err("catalog not loaded yet".into())
            }
        })
    });
    Router::new()
        .route("/debug/catalog", get(debug_catalog))
        .route("/debug/results", get(debug_results))
        .route("/debug/health", get(debug_health))
        .route("/debug/membership", get(debug_membership))
        .with_state(state)
        .merge(shared::ops::router(registry, ready))
}

/// The catalog as this agent holds it: region, version and every domain configuration, with
/// each request in its redacted form (secrets shown as set, never their values).
async fn debug_catalog(State(state): State<DebugState>) -> Json<Value> {
    let catalog = state.handle.current();
    let domains: Vec<_> = catalog.iter().map(|c| c.redacted_json()).collect();
    Json(json!({
        "region": state.config.region,
        "agent_id": state.config.agent_id,
        "loaded": state.handle.is_loaded(),
        "version": catalog.version(),
        "domains": domains,
    }))
}

/// The latest result of every domain this agent probed, with its timing breakdown.
async fn debug_results(State(state): State<DebugState>) -> Json<Value> {
    let mut results = state.latest.all();
    results.sort_by_key(|r| r.domain_id);
    let items: Vec<_> = results.iter().map(|r| r.as_ref()).collect();
    Json(json!({ "region": state.config.region, "results": items }))
}

/// The latest canary self-check: the verdict (as attached to batches) and each canary's
/// outcome; `health` is null without canaries or before the first check. `saturation` is the
/// saturation report as batches carry it now.
async fn debug_health(State(state): State<DebugState>) -> Json<Value> {
    let health = state.health.borrow().clone();
    let saturation = state.saturation.report(chrono::Utc::now());
    Json(json!({
        "saturation": saturation,
        "region": state.config.region,
        "canaries": state.config.canaries,
        "healthy_min": (!state.config.canaries.is_empty()).then(|| state.config.canary_quorum()),
        "interval_s": state.config.canary_interval_s,
        "health": health.as_deref(),
    }))
}

/// The region's live agents as this agent last saw them, and how many of its catalog's
/// domains it owns. `known` is false while it has never read the member set (it then probes
/// every domain).
async fn debug_membership(State(state): State<DebugState>) -> Json<Value> {
    let view = state.membership.borrow().clone();
    let catalog = state.handle.current();
    let owned = catalog.iter().filter(|c| view.owns(c)).count();
    Json(json!({
        "region": state.config.region,
        "agent_id": view.me(),
        "known": view.is_known(),
        "members": view.members(),
        "heartbeat_interval_ms": state.config.heartbeat_interval_ms,
        "membership_ttl_ms": state.config.membership_ttl_ms,
        "domains": catalog.len(),
        "owned": owned,
    }))
}
