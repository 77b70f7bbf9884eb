//! Scratch resources for a run: a database created for it and dropped after, a private Redis
//! prefix deleted after.

use anyhow::Context;
use fred::prelude::*;
use sqlx::{Connection, PgConnection};

/// The server scratch databases are created on (`CROSSCHECK_BENCH_DATABASE_URL`).
pub fn admin_url() -> String {
    std::env::var("CROSSCHECK_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("CROSSCHECK_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database that exists for one run.
pub struct ScratchDb {
    pub name: String,
    pub url: String,
}

impl ScratchDb {
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        let name = format!("crosscheck_{label}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.context("connecting to postgres")?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await?;
        let mut url = url::Url::parse(&admin_url())?;
        url.set_path(&name);
        Ok(Self { name, url: url.to_string() })
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&admin_url()).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await?;
        Ok(())
    }
}

/// Scratch databases (transactional and time-series) plus a private Redis prefix: what a run of
/// the whole system needs.
pub struct Scratch {
    pub db: ScratchDb,
    pub timeseries: ScratchDb,
    pub prefix: String,
}

impl Scratch {
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        Ok(Self {
            db: ScratchDb::create(label).await?,
            timeseries: ScratchDb::create(&format!("{label}_ts")).await?,
            prefix: shared::testing::random_prefix(label),
        })
    }

    /// Deletes the prefix's keys and drops the databases.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let redis = redis_client().await?;
        shared::testing::delete_prefix(&redis, &self.prefix).await?;
        self.timeseries.drop_now().await?;
        self.db.drop_now().await
    }
}

pub async fn redis_client() -> anyhow::Result<Client> {
    let client = shared::redis::builder(&redis_url(), Default::default())?.build()?;
    client.init().await.context("connecting to redis")?;
    Ok(client)
}
