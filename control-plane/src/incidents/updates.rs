//! Operators' updates on an incident (`investigating`, `identified`, `monitoring`,
//! `resolved`, each a timestamped message), shown on the status pages of its domain.
//! Tenant-scoped: another tenant's incident is not found.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// An update as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct IncidentUpdate {
    pub id: i64,
    pub incident_id: Uuid,
    pub status: String,
    pub message: String,
    pub posted_at: DateTime<Utc>,
    /// The token that posted it.
    pub posted_by: String,
}

/// Posts an update on `tenant`'s incident `incident`; `None` when there is no such incident.
/// Returns the update and the incident's domain.
pub async fn post(
    pool: &PgPool,
    tenant: Uuid,
    incident: Uuid,
    status: &str,
    message: &str,
    actor: &str,
) -> sqlx::Result<Option<(IncidentUpdate, Uuid)>> {
    let mut tx = pool.begin().await?;
    let domain: Option<Uuid> =
        sqlx::query_scalar("SELECT domain_id FROM incidents WHERE id = $1 AND tenant_id = $2 FOR SHARE")
            .bind(incident)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(domain) = domain else { return Ok(None) };
    let update: IncidentUpdate = sqlx::query_as(
        "INSERT INTO incident_updates (incident_id, status, message, posted_by) VALUES ($1, $2, $3, $4)
         RETURNING id, incident_id, status, message, posted_at, posted_by",
    )
    .bind(incident)
    .bind(status)
    .bind(message)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((update, domain)))
}

/// The updates of `tenant`'s incident, oldest first; `None` when there is no such incident.
pub async fn list(pool: &PgPool, tenant: Uuid, incident: Uuid) -> sqlx::Result<Option<Vec<IncidentUpdate>>> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM incidents WHERE id = $1 AND tenant_id = $2)")
            .bind(incident)
            .bind(tenant)
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(None);
    }
    let updates = sqlx::query_as(
        "SELECT id, incident_id, status, message, posted_at, posted_by FROM incident_updates
         WHERE incident_id = $1 ORDER BY id",
    )
    .bind(incident)
    .fetch_all(pool)
    .await?;
    Ok(Some(updates))
}
