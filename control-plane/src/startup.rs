//! Building and running the control plane: connect, migrate, seed regions, bind, then serve the
//! API, the config publisher, the consensus task, the flap check, the digest scheduler and the
//! SLA monitor until shutdown. `Application::build` binds before returning,
//! so tests can use port 0 and read the real address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use prometheus_client::registry::Registry;
use shared::RedisKeys;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agents::AgentRegistry;
use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::Config;
use crate::consensus::{Consensus, ObservationReceiver, Settings};
use crate::digests;
use crate::flap;
use crate::ingest::IngestServer;
use crate::metrics::Metrics;
use crate::notify::Dispatcher;
use crate::publisher::Publisher;
use crate::timeseries::Timeseries;

/// Change-log rows kept below Redis's version (older ones are pruned by the reconciler).
const KEEP_CHANGE_LOG: u64 = 100_000;

/// The embedded migrations of the transactional database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/control");

/// Connects a pool to the transactional database.
pub async fn connect_database(config: &Config) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config.database_url.parse().context("invalid database_url")?;
    connect_with(config, options).await
}

pub async fn connect_with(config: &Config, options: PgConnectOptions) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(missing_database_hint)
        .context("cannot connect to the transactional database")
}

/// A connection error, with the way out added when the database does not exist (SQLSTATE
/// `3D000`, `invalid_catalog_name`).
pub fn missing_database_hint(error: sqlx::Error) -> anyhow::Error {
    let missing = error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "3D000");
    let error = anyhow::Error::from(error);
    if missing {
        error.context("the database does not exist: `control-plane migrate` creates it")
    } else {
        error
    }
}

/// Creates the database `url` names unless it exists (connecting to the server's `postgres`
/// database to look); true when it was created. `what` names it in errors.
pub async fn ensure_database(what: &str, url: &str) -> anyhow::Result<bool> {
    use sqlx::migrate::MigrateDatabase;
    let exists = sqlx::Postgres::database_exists(url)
        .await
        .with_context(|| format!("cannot check whether the {what} database exists"))?;
    if exists {
        return Ok(false);
    }
    match sqlx::Postgres::create_database(url).await {
        Ok(()) => Ok(true),
        // Created meanwhile by another `migrate` (SQLSTATE 42P04, duplicate_database).
        Err(error) if error.as_database_error().and_then(|e| e.code()).is_some_and(|c| c == "42P04") => {
            Ok(false)
        }
        Err(error) => Err(anyhow::Error::from(error).context(format!("cannot create the {what} database"))),
    }
}

/// Runs pending migrations (safe to run from several replicas at once: sqlx takes a lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("migrating the transactional database")
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    registry: Arc<Registry>,
    publisher: Publisher,
    redis: Client,
    agents: AgentRegistry,
    ingest: Option<IngestServer>,
    consensus: Consensus,
    observations: ObservationReceiver,
    dispatcher: Dispatcher,
    flap: flap::Sweeper,
    maintenance: crate::maintenance::Sweeper,
    digests: digests::Scheduler,
    sla: crate::sla::Monitor,
    check_results: crate::checks::ResultListener,
    audit_retention: crate::audit::Retention,
}

impl Application {
    /// Connects to Postgres (from `config.database_url`) and Redis, migrates, seeds regions and
    /// binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = connect_database(&config).await?;
        Self::build_with_pool(config, pool).await
    }

    /// Like [`Application::build`] with an existing pool (tests hand in their own database).
    pub async fn build_with_pool(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        Self::build_with_clock(config, pool, crate::clock::system()).await
    }

    /// Like [`Application::build_with_pool`] with the clock the time-driven parts (the flap
    /// check and the digest scheduler) read, e.g. a [`crate::clock::ManualClock`] in tests and
    /// benchmarks.
    pub async fn build_with_clock(
        config: Config,
        pool: PgPool,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        migrate(&pool).await?;
        crate::regions::seed(&pool, &config.regions).await.context("seeding regions")?;

        let redis = shared::redis::builder(&config.redis_url, Default::default())
            .context("invalid redis_url")?
            .build()
            .context("building the redis client")?;
        redis.init().await.context("cannot connect to redis")?;

        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let live_metrics = crate::live::LiveMetrics::default();
        live_metrics.register(&mut registry);
        let live = crate::live::Hub::connect(&config, pool.clone(), live_metrics)
            .await
            .context("starting the live event hub")?;
        let timeseries = Timeseries::connect(&config, &mut registry).await?;
        let registry = Arc::new(registry);

        let publisher = Publisher::new(
            pool.clone(),
            redis.clone(),
            RedisKeys::new(config.redis_prefix.clone()),
            metrics.clone(),
            KEEP_CHANGE_LOG,
        );
        let agents = AgentRegistry::load(
            pool.clone(),
            metrics.clone(),
            Duration::from_secs(config.last_seen_interval_s),
        )
        .await
        .context("loading agents and revoked certificates")?;
        // Consensus's own connections, to the same database: its rounds and sweeps never take a
        // connection the API or ingest is waiting for. Its set-based statements take arrays of
        // a round's domains (one to thousands): a cached generic plan, made without the
        // arrays' sizes, nested-loops over them (a 10,000-domain round took 83 s instead of
        // 1.5 s), so each execution is planned for its own arguments.
        let consensus_pool = PgPoolOptions::new()
            .max_connections(config.consensus_db_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(
                (*pool.connect_options()).clone().options([("plan_cache_mode", "force_custom_plan")]),
            );
        let consensus = Consensus::new(
            consensus_pool,
            redis.clone(),
            RedisKeys::new(config.redis_prefix.clone()),
            metrics.clone(),
            Settings::from_config(&config),
        )
        .with_clock(clock.clone())
        .with_live(live.publisher());
        let (sender, observations) = crate::consensus::queue(metrics.clone());
        let ingest = if config.ingest_enabled() {
            Some(
                IngestServer::bind(
                    &config,
                    agents.clone(),
                    timeseries.clone(),
                    metrics.clone(),
                    sender,
                    crate::checks::ResultPublisher {
                        redis: redis.clone(),
                        keys: RedisKeys::new(config.redis_prefix.clone()),
                        metrics: metrics.clone(),
                    },
                    pool.clone(),
                )
                .await?,
            )
        } else {
            tracing::warn!("tls_ca, tls_cert and tls_key are not set: gRPC ingest is disabled");
            None
        };
        let dispatcher = Dispatcher::new(pool.clone(), &config, metrics.clone())
            .context("building the notification dispatcher")?
            .with_results(timeseries.clone());
        let flap = flap::Sweeper::new(pool.clone(), metrics.clone(), &config, clock.clone());
        let maintenance = crate::maintenance::Sweeper::new(
            pool.clone(),
            metrics.clone(),
            std::time::Duration::from_millis(config.maintenance_check_interval_ms.max(1)),
            clock.clone(),
        );
        let digests = digests::Scheduler::new(pool.clone(), &config, clock.clone(), metrics.clone());
        let sla = crate::sla::Monitor::new(pool.clone(), &config, clock.clone(), metrics.clone());
        let audit_retention =
            crate::audit::Retention::new(pool.clone(), config.audit_retention_days, metrics.audit.clone());
        let waiters = crate::checks::Waiters::default();
        let check_results = crate::checks::ResultListener::subscribe(
            shared::redis::builder(&config.redis_url, Default::default())
                .context("invalid redis_url")?
                .build_subscriber_client()
                .context("building the redis subscriber for check results")?,
            &RedisKeys::new(config.redis_prefix.clone()),
            waiters.clone(),
            metrics.clone(),
        )
        .await
        .context("cannot subscribe to check results in redis")?;
        let checks = crate::api::Checks {
            redis: redis.clone(),
            keys: RedisKeys::new(config.redis_prefix.clone()),
            waiters,
            limiter: crate::checks::limit::TenantLimiter::new(
                config.check_test_per_minute,
                config.check_test_burst,
            ),
        };
        let listener =
            shared::listen::bind(config.listen).with_context(|| format!("cannot bind {}", config.listen))?;
        let sign_in_limiter = crate::console::limit::SignInLimiter::new(
            config.console_sign_in_per_minute,
            config.console_sign_in_burst,
        );
        let auth_guard = crate::api::auth_guard::AuthGuard::new(
            config.api_auth_failures_per_minute,
            config.api_auth_failure_burst,
            metrics.clone(),
        );
        let pages = crate::status::Pages::new(
            pool.clone(),
            live.clone(),
            Duration::from_millis(config.status_page_cache_ms),
            config.regional_failure_observations,
        );
        let state = AppState {
            pool,
            config: Arc::new(config),
            metrics,
            publisher_wake: publisher.waker(),
            timeseries,
            notify_wake: dispatcher.waker(),
            clock: clock.clone(),
            checks,
            sign_in_limiter,
            auth_guard,
            live,
            pages,
            quotas: crate::quotas::RateLimits::default(),
        };
        Ok(Self {
            check_results,
            listener,
            state,
            registry,
            publisher,
            redis,
            agents,
            ingest,
            consensus,
            observations,
            dispatcher,
            flap,
            maintenance,
            digests,
            sla,
            audit_retention,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The ingest listener's address, when ingest is enabled.
    pub fn ingest_addr(&self) -> Option<SocketAddr> {
        self.ingest.as_ref().map(IngestServer::local_addr)
    }

    /// The agent registry (tests refresh or flush it directly).
    pub fn agents(&self) -> AgentRegistry {
        self.agents.clone()
    }

    /// The consensus engine (tests evaluate and sweep directly).
    pub fn consensus(&self) -> Consensus {
        self.consensus.clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The flap check (runs in `run_until`; tests call `check(now)` directly).
    pub fn flap(&self) -> flap::Sweeper {
        self.flap.clone()
    }

    /// The maintenance sweeper (runs in `run_until`; tests call `step(now)` directly).
    pub fn maintenance(&self) -> crate::maintenance::Sweeper {
        self.maintenance.clone()
    }

    /// The notification dispatcher (runs in `run_until` when `notify_dispatch` is set).
    pub fn dispatcher(&self) -> Dispatcher {
        self.dispatcher.clone()
    }

    /// This replica's live event hub (runs in `run_until`).
    pub fn live(&self) -> crate::live::Hub {
        self.state.live.clone()
    }

    /// The flap digest scheduler (tests call `run_due` directly; it also runs in `run_until`).
    pub fn digest_scheduler(&self) -> digests::Scheduler {
        self.digests.clone()
    }

    /// The audit log's retention (tests call `step(now)` directly; it also runs in `run_until`).
    pub fn audit_retention(&self) -> crate::audit::Retention {
        self.audit_retention.clone()
    }

    /// The SLA monitor (tests call `run_due` directly; it also runs in `run_until`).
    pub fn sla_monitor(&self) -> crate::sla::Monitor {
        self.sla.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests and stops the
    /// publisher and the notification dispatcher (deliveries in flight finish first).
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let config = self.state.config.clone();
        let publisher = tokio::spawn(self.publisher.clone().run(
            config.publish_poll(),
            config.reconcile_interval(),
            shutdown.child_token(),
        ));
        let agents = tokio::spawn(self.agents.clone().run(shutdown.child_token()));
        let ingest = self.ingest.map(|server| tokio::spawn(server.run(shutdown.child_token())));
        let timeseries = tokio::spawn(self.state.timeseries.clone().run_maintenance(shutdown.child_token()));
        let consensus = tokio::spawn(self.consensus.clone().run(self.observations, shutdown.child_token()));
        let flap = tokio::spawn(self.flap.clone().run(shutdown.child_token()));
        let maintenance = tokio::spawn(self.maintenance.clone().run(shutdown.child_token()));
        let digests = tokio::spawn(self.digests.run(shutdown.child_token()));
        let sla = tokio::spawn(self.sla.run(shutdown.child_token()));
        let audit_retention = tokio::spawn(self.audit_retention.run(shutdown.child_token()));
        let check_results = tokio::spawn(self.check_results.run(shutdown.child_token()));
        let live = tokio::spawn(self.state.live.clone().run(shutdown.child_token()));
        let dispatcher = if config.notify_dispatch {
            Some(tokio::spawn(self.dispatcher.run(shutdown.child_token())))
        } else {
            tracing::info!("notify_dispatch is off: this replica delivers no notifications");
            None
        };
        let app = api::router(self.state, self.registry);
        tracing::info!(addr = %self.listener.local_addr()?, "control plane listening");
        let signal = shutdown.clone();
        // With each connection's peer address: the console's sign-in limit is per client.
        let served = axum::serve(self.listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .context("http server failed");
        shutdown.cancel();
        if let Some(ingest) = ingest {
            match ingest.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(error = %shared::error::Chain(&*error), "ingest server failed")
                }
                Err(error) => tracing::error!(%error, "ingest server task panicked"),
            }
        }
        if let Err(error) = agents.await {
            tracing::error!(%error, "agent registry task panicked");
        }
        if let Err(error) = publisher.await {
            tracing::error!(%error, "config publisher task panicked");
        }
        if let Err(error) = consensus.await {
            tracing::error!(%error, "consensus task panicked");
        }
        if let Err(error) = flap.await {
            tracing::error!(%error, "flap check task panicked");
        }
        if let Err(error) = maintenance.await {
            tracing::error!(%error, "maintenance sweeper task panicked");
        }
        if let Err(error) = timeseries.await {
            tracing::error!(%error, "time-series maintenance task panicked");
        }
        if let Err(error) = digests.await {
            tracing::error!(%error, "digest scheduler task panicked");
        }
        if let Err(error) = sla.await {
            tracing::error!(%error, "SLA monitor task panicked");
        }
        if let Err(error) = audit_retention.await {
            tracing::error!(%error, "audit retention task panicked");
        }
        if let Err(error) = check_results.await {
            tracing::error!(%error, "check result listener task panicked");
        }
        if let Err(error) = live.await {
            tracing::error!(%error, "live event hub task panicked");
        }
        if let Some(dispatcher) = dispatcher {
            if let Err(error) = dispatcher.await {
                tracing::error!(%error, "notification dispatcher task panicked");
            }
        }
        if let Err(error) = self.redis.quit().await {
            tracing::debug!(%error, "redis quit failed");
        }
        served
    }
}
