//! Building and running the control plane: connect, migrate, seed regions, bind, then serve the
//! API and run the config publisher until shutdown. `Application::build` binds before returning,
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

use crate::api::{self, AppState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::publisher::Publisher;

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
        .context("cannot connect to the transactional database")
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
        let registry = Arc::new(registry);

        let publisher = Publisher::new(
            pool.clone(),
            redis.clone(),
            RedisKeys::new(config.redis_prefix.clone()),
            metrics.clone(),
            KEEP_CHANGE_LOG,
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot bind {}", config.listen))?;
        let state = AppState { pool, config: Arc::new(config), metrics, publisher_wake: publisher.waker() };
        Ok(Self { listener, state, registry, publisher, redis })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests and stops the
    /// publisher.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let config = self.state.config.clone();
        let publisher = tokio::spawn(self.publisher.clone().run(
            config.publish_poll(),
            config.reconcile_interval(),
            shutdown.child_token(),
        ));
        let app = api::router(self.state, self.registry);
        tracing::info!(addr = %self.listener.local_addr()?, "control plane listening");
        let signal = shutdown.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .context("http server failed");
        shutdown.cancel();
        if let Err(error) = publisher.await {
            tracing::error!(%error, "config publisher task panicked");
        }
        if let Err(error) = self.redis.quit().await {
            tracing::debug!(%error, "redis quit failed");
        }
        served
    }
}
