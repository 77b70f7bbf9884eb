//! The `audit_log` table: appending a row, reading a tenant's rows with filters (newest first,
//! by UUID v7 id), and deleting rows past retention.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Where a write came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The REST API under `/v1`.
    Api,
    /// A console form (acting with its session's token).
    Console,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Console => "console",
        }
    }
}

/// One write, as appended.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tenant_id: Uuid,
    /// The token that wrote (a console session's token).
    pub token_id: Uuid,
    pub via: Via,
    pub client_addr: IpAddr,
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// The matched route template (`/v1/domains/{id}`).
    pub route: String,
    /// `domain`, `channel`, `token`, … (see [`super::layer`]).
    pub resource_type: &'static str,
    pub resource_id: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// `{"before", "after"}` ([`super::diff::diff`]), `None` when nothing was read.
    pub diff: Option<Value>,
}

/// Appends `entry` (the token's name is looked up as it is now).
pub async fn insert(pool: &PgPool, entry: &Entry) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, token_id, token_name, via, client_addr, method, route,
             resource_type, resource_id, status, diff)
         SELECT $1, $2, $3, coalesce((SELECT name FROM api_tokens WHERE id = $3), ''), $4, $5::inet, $6,
             $7, $8, $9, $10, $11",
    )
    .bind(id)
    .bind(entry.tenant_id)
    .bind(entry.token_id)
    .bind(entry.via.as_str())
    .bind(entry.client_addr.to_string())
    .bind(entry.method)
    .bind(&entry.route)
    .bind(entry.resource_type)
    .bind(&entry.resource_id)
    .bind(entry.status as i16)
    .bind(&entry.diff)
    .execute(pool)
    .await?;
    Ok(id)
}

/// What `GET /v1/audit` filters on; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// The token that wrote.
    pub actor: Option<Uuid>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// A route template, exactly (`/v1/domains/{id}`).
    pub route: Option<String>,
    /// Rows older than this one (the previous page's last id).
    pub before_id: Option<Uuid>,
}

/// A row as `GET /v1/audit` shows it: who (`token_id`, the token's `token_name` as it is now),
/// how (`via`: `api` or `console`), from where, what (`method`, the route template, the
/// resource), the HTTP `status` answered, and `diff` (`{"before", "after"}`: the changed
/// top-level fields of the resource's view, secrets redacted; absent for a refused write).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Row {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub token_id: Uuid,
    pub token_name: String,
    pub via: String,
    pub client_address: String,
    pub method: String,
    pub route: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub status: i16,
    #[schema(value_type = Option<crate::api::schema::AuditDiff>)]
    pub diff: Option<Value>,
}

/// The tenant's rows matching `filter`, newest first, at most `limit`.
pub async fn list(pool: &PgPool, tenant_id: Uuid, filter: &Filter, limit: u32) -> sqlx::Result<Vec<Row>> {
    sqlx::query_as(
        "SELECT id, at, token_id, token_name, via, host(client_addr) AS client_address, method, route,
                resource_type, resource_id, status, diff
         FROM audit_log
         WHERE tenant_id = $1
           AND ($2::timestamptz IS NULL OR at >= $2)
           AND ($3::timestamptz IS NULL OR at < $3)
           AND ($4::uuid IS NULL OR token_id = $4)
           AND ($5::text IS NULL OR resource_type = $5)
           AND ($6::text IS NULL OR resource_id = $6)
           AND ($7::text IS NULL OR route = $7)
           AND ($8::uuid IS NULL OR id < $8)
         ORDER BY id DESC
         LIMIT $9",
    )
    .bind(tenant_id)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.actor)
    .bind(&filter.resource_type)
    .bind(&filter.resource_id)
    .bind(&filter.route)
    .bind(filter.before_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// Rows deleted per statement: short transactions, whatever the backlog.
const PRUNE_BATCH: i64 = 5_000;

/// A lock only one replica's pruning holds at a time (the others skip that round).
const PRUNE_LOCK: &str = "crosscheck:audit_retention";

/// Deletes every row written before `cutoff`, in batches; the number deleted. Another replica
/// pruning at the same time makes this one stop early (it would only wait for the same rows).
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<u64> {
    let mut deleted = 0;
    loop {
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(deleted);
        }
        let done = sqlx::query(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(PRUNE_BATCH)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        deleted += done.rows_affected();
        if done.rows_affected() < PRUNE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}
