//! Building and running an agent: validate, build the Redis clients, bind the operational
//! listener, then run the catalog sync until shutdown.

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

use crate::catalog::sync::{CatalogHandle, CatalogSync, SyncSettings};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::probe::Prober;
use crate::results::{self, LatestResults, ProbeResult};
use crate::scheduler::{ProbeNow, Scheduler, SchedulerSettings};

pub struct Agent {
    config: Arc<Config>,
    listener: TcpListener,
    sync: CatalogSync,
    handle: CatalogHandle,
    scheduler: Scheduler,
    probe_now: ProbeNow,
    results: tokio::sync::mpsc::Receiver<ProbeResult>,
    latest: LatestResults,
    registry: Arc<Registry>,
    pub metrics: Metrics,
}

impl Agent {
    /// Builds the agent and binds its operational listener. Does not need Redis to be up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let builder =
            shared::redis::builder(&config.redis_url, config.redis_options()).context("invalid redis_url")?;
        let client = builder.build().context("building the redis client")?;
        let subscriber = builder.build_subscriber_client().context("building the redis subscriber")?;
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
        let (sync, handle) = CatalogSync::new(settings, client, subscriber, metrics.clone());
        let probe_settings =
            config.probe_settings().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let prober = Prober::new(probe_settings).context("building the prober")?;
        let (sink, results) = results::queue(config.result_queue_capacity, metrics.clone());
        let (scheduler, probe_now) = Scheduler::new(
            SchedulerSettings { region: config.region.clone(), max_in_flight: config.max_in_flight },
            handle.catalog.clone(),
            Arc::new(prober),
            sink,
            metrics.clone(),
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot bind {}", config.listen))?;
        Ok(Self {
            config: Arc::new(config),
            listener,
            sync,
            handle,
            scheduler,
            probe_now,
            results,
            latest: LatestResults::default(),
            registry: Arc::new(registry),
            metrics,
        })
    }

    /// The entry point for probing a domain outside its schedule.
    pub fn probe_now(&self) -> ProbeNow {
        self.probe_now.clone()
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

    /// Runs until `shutdown` is cancelled.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(region = %self.config.region, agent_id = %self.config.agent_id, addr = %self.local_addr(), "probe agent starting");
        let sync = tokio::spawn(self.sync.run(shutdown.child_token()));
        let scheduler = tokio::spawn(self.scheduler.run(shutdown.child_token()));
        let consumer = tokio::spawn(results::consume(
            self.results,
            self.latest.clone(),
            self.handle.clone(),
            self.metrics.clone(),
        ));
        let app =
            ops_router(self.handle.clone(), self.latest.clone(), self.registry.clone(), self.config.clone());
        let signal = shutdown.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .context("operational http server failed");
        shutdown.cancel();
        for (name, task) in [("catalog sync", sync), ("scheduler", scheduler), ("result consumer", consumer)]
        {
            if let Err(error) = task.await {
                tracing::error!(%error, task = name, "agent task panicked");
            }
        }
        served
    }
}

#[derive(Clone)]
struct DebugState {
    handle: CatalogHandle,
    latest: LatestResults,
    config: Arc<Config>,
}

fn ops_router(
    handle: CatalogHandle,
    latest: LatestResults,
    registry: Arc<Registry>,
    config: Arc<Config>,
) -> Router {
    let ready_handle = handle.clone();
    let ready: shared::ops::ReadyCheck = Arc::new(move || {
        let loaded = ready_handle.is_loaded();
        Box::pin(async move {
            if loaded {
                Ok(())
            } else {
                Err("catalog not loaded yet".into())
            }
        })
    });
    Router::new()
        .route("/debug/catalog", get(debug_catalog))
        .route("/debug/results", get(debug_results))
        .with_state(DebugState { handle, latest, config })
        .merge(shared::ops::router(registry, ready))
}

/// The catalog as this agent holds it: region, version and every domain configuration.
async fn debug_catalog(State(state): State<DebugState>) -> Json<Value> {
    let catalog = state.handle.current();
    let domains: Vec<_> = catalog.iter().map(|c| c.as_ref()).collect();
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
