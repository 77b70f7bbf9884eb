//! Status pages in the transactional database: a tenant's pages (create, read, update,
//! delete; every query scoped by tenant, so another tenant's page is not found), the public
//! lookups by slug and hostname, and the rows a page's content is built from ([`load`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::model::{self, ComponentRow, FailingRow, History, IncidentRow, Inputs, MaintenanceRow, Update};
use super::spec::{ComponentSpec, PageSpec};
use crate::domains::FieldErrors;

/// Why a page write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid page")]
    Invalid(FieldErrors),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A stored page: its settings and identities.
#[derive(Debug, Clone)]
pub struct StoredPage {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub spec: PageSpec,
    /// The public id of each component, in the order of `spec.components`.
    pub component_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Unique violations named for the operator.
fn conflict(error: sqlx::Error) -> Error {
    if let Some(db) = error.as_database_error() {
        if db.is_unique_violation() {
            return match db.constraint() {
                Some("status_pages_slug_key") => Error::Conflict("this slug is taken by another page".into()),
                Some("status_page_hostnames_pkey") => {
                    Error::Conflict("a hostname is already used by another page".into())
                }
                _ => Error::Conflict("a page with these values already exists".into()),
            };
        }
    }
    Error::Database(error)
}

/// Refuses components whose domain is not one of `tenant`'s, naming each.
async fn check_domains(tx: &mut PgConnection, tenant: Uuid, spec: &PageSpec) -> Result<(), Error> {
    let ids: Vec<Uuid> = spec.components.iter().map(|c| c.domain).collect();
    let owned: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM domains WHERE tenant_id = $1 AND id = ANY($2)")
        .bind(tenant)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    let mut errors = FieldErrors::default();
    for (i, component) in spec.components.iter().enumerate() {
        if !owned.contains(&component.domain) {
            errors.add(&format!("components[{i}].domain"), "not a domain of this tenant");
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

async fn write_children(tx: &mut PgConnection, page: Uuid, spec: &PageSpec) -> Result<(), Error> {
    sqlx::query("DELETE FROM status_page_hostnames WHERE page_id = $1").bind(page).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO status_page_hostnames (hostname, page_id) SELECT unnest($1::text[]), $2")
        .bind(&spec.hostnames)
        .bind(page)
        .execute(&mut *tx)
        .await
        .map_err(conflict)?;
    // Components keep their public id while their domain stays on the page.
    let domains: Vec<Uuid> = spec.components.iter().map(|c| c.domain).collect();
    sqlx::query("DELETE FROM status_page_components WHERE page_id = $1 AND NOT (domain_id = ANY($2))")
        .bind(page)
        .bind(&domains)
        .execute(&mut *tx)
        .await?;
    let ids: Vec<Uuid> = spec.components.iter().map(|_| Uuid::now_v7()).collect();
    let positions: Vec<i32> = (0..spec.components.len() as i32).collect();
    let names: Vec<&str> = spec.components.iter().map(|c| c.name.as_str()).collect();
    let groups: Vec<Option<&str>> = spec.components.iter().map(|c| c.group.as_deref()).collect();
    // Postgres arrays of arrays must be rectangular: reveal travels as comma-joined text.
    let reveals: Vec<String> = spec.components.iter().map(|c| c.reveal.join(",")).collect();
    sqlx::query(
        "INSERT INTO status_page_components (id, page_id, domain_id, position, name, group_name, reveal)
         SELECT u.id, $1, u.domain_id, u.position, u.name, u.group_name,
                CASE WHEN u.reveal = '' THEN '{}'::text[] ELSE string_to_array(u.reveal, ',') END
         FROM unnest($2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::text[])
              AS u(id, domain_id, position, name, group_name, reveal)
         ON CONFLICT (page_id, domain_id) DO UPDATE
         SET position = excluded.position, name = excluded.name, group_name = excluded.group_name,
             reveal = excluded.reveal",
    )
    .bind(page)
    .bind(&ids)
    .bind(&domains)
    .bind(&positions)
    .bind(&names)
    .bind(&groups)
    .bind(&reveals)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Creates a page of `tenant`.
pub async fn create(pool: &PgPool, tenant: Uuid, spec: &PageSpec) -> Result<StoredPage, Error> {
    let mut tx = pool.begin().await?;
    check_domains(&mut tx, tenant, spec).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO status_pages (id, tenant_id, slug, title, description) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(tenant)
    .bind(&spec.slug)
    .bind(&spec.title)
    .bind(&spec.description)
    .execute(&mut *tx)
    .await
    .map_err(conflict)?;
    write_children(&mut tx, id, spec).await?;
    let page = read(&mut tx, tenant, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(page)
}

/// Applies `patch` (see [`PageSpec::parse_over`]) to `tenant`'s page `id`.
pub async fn update(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    patch: &serde_json::Map<String, Value>,
) -> Result<StoredPage, Error> {
    let mut tx = pool.begin().await?;
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM status_pages WHERE id = $1 AND tenant_id = $2 FOR UPDATE")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    locked.ok_or(Error::NotFound)?;
    let current = read(&mut tx, tenant, id).await?.ok_or(Error::NotFound)?;
    let spec = PageSpec::parse_over(patch, Some(&current.spec)).map_err(Error::Invalid)?;
    check_domains(&mut tx, tenant, &spec).await?;
    sqlx::query(
        "UPDATE status_pages SET slug = $2, title = $3, description = $4, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(&spec.slug)
    .bind(&spec.title)
    .bind(&spec.description)
    .execute(&mut *tx)
    .await
    .map_err(conflict)?;
    write_children(&mut tx, id, &spec).await?;
    let page = read(&mut tx, tenant, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(page)
}

/// Deletes `tenant`'s page `id`.
pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<(), Error> {
    let deleted = sqlx::query("DELETE FROM status_pages WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .execute(pool)
        .await?
        .rows_affected();
    if deleted == 0 {
        Err(Error::NotFound)
    } else {
        Ok(())
    }
}

/// `tenant`'s page `id`.
pub async fn get(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<StoredPage, Error> {
    let mut conn = pool.acquire().await?;
    read(&mut conn, tenant, id).await?.ok_or(Error::NotFound)
}

/// `tenant`'s pages, oldest first.
pub async fn list(pool: &PgPool, tenant: Uuid) -> Result<Vec<StoredPage>, Error> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM status_pages WHERE tenant_id = $1 ORDER BY created_at, id")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
    let mut conn = pool.acquire().await?;
    let mut pages = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(page) = read(&mut conn, tenant, id).await? {
            pages.push(page);
        }
    }
    Ok(pages)
}

type PageRow = (String, String, Option<String>, DateTime<Utc>, DateTime<Utc>);
type ComponentSettings = (Uuid, Uuid, String, Option<String>, Vec<String>);

async fn read(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Option<StoredPage>, Error> {
    let row: Option<PageRow> = sqlx::query_as(
        "SELECT slug, title, description, created_at, updated_at FROM status_pages WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((slug, title, description, created_at, updated_at)) = row else { return Ok(None) };
    let hostnames: Vec<String> =
        sqlx::query_scalar("SELECT hostname FROM status_page_hostnames WHERE page_id = $1 ORDER BY hostname")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let components: Vec<ComponentSettings> = sqlx::query_as(
        "SELECT id, domain_id, name, group_name, reveal FROM status_page_components WHERE page_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let component_ids = components.iter().map(|c| c.0).collect();
    let components = components
        .into_iter()
        .map(|(_, domain, name, group, reveal)| ComponentSpec { domain, name, group, reveal })
        .collect();
    Ok(Some(StoredPage {
        id,
        tenant_id: tenant,
        spec: PageSpec { slug, title, description, hostnames, components },
        component_ids,
        created_at,
        updated_at,
    }))
}

/// The page at `/status/<slug>`: its id and tenant.
pub async fn by_slug(pool: &PgPool, slug: &str) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    sqlx::query_as("SELECT id, tenant_id FROM status_pages WHERE slug = $1")
        .bind(slug)
        .fetch_optional(pool)
        .await
}

/// The page served at `/` of `hostname`: its id, tenant and slug.
pub async fn by_hostname(pool: &PgPool, hostname: &str) -> sqlx::Result<Option<(Uuid, Uuid, String)>> {
    sqlx::query_as(
        "SELECT p.id, p.tenant_id, p.slug FROM status_page_hostnames h JOIN status_pages p ON p.id = h.page_id
         WHERE h.hostname = $1",
    )
    .bind(hostname)
    .fetch_optional(pool)
    .await
}

/// Everything page `id` (of `tenant`) is built from, for the window starting at `since`.
/// `None` when the page is gone.
pub async fn load(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    since: DateTime<Utc>,
    regional_failure_observations: u32,
) -> sqlx::Result<Option<Inputs>> {
    let mut conn = pool.acquire().await?;
    let page: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT slug, title, description FROM status_pages WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((slug, title, description)) = page else { return Ok(None) };
    let components: Vec<ComponentRow> = sqlx::query_as(
        "SELECT c.id, c.domain_id, c.name, c.group_name, c.reveal, d.url, d.paused,
                COALESCE(s.state, 'unknown') AS consensus, s.since,
                EXISTS (SELECT 1 FROM maintenance_windows w
                        JOIN maintenance_occurrences o ON o.window_id = w.id
                        WHERE w.tenant_id = d.tenant_id AND (d.id = ANY (w.domain_ids) OR d.tags && w.tags)
                          AND o.starts_at <= now() AND o.ends_at > now()) AS maintenance
         FROM status_page_components c
         JOIN domains d ON d.id = c.domain_id AND d.tenant_id = $2
         LEFT JOIN domain_state s ON s.domain_id = c.domain_id
         WHERE c.page_id = $1 ORDER BY c.position",
    )
    .bind(id)
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    let domains: Vec<Uuid> = components.iter().map(|c| c.domain_id).collect();
    let failing: Vec<FailingRow> = sqlx::query_as(
        "SELECT domain_id, region, error_kind, status_code, consecutive_failures FROM region_observations
         WHERE domain_id = ANY($1) AND NOT ok ORDER BY domain_id, region",
    )
    .bind(&domains)
    .fetch_all(&mut *conn)
    .await?;
    let mut histories: HashMap<Uuid, History> = HashMap::new();
    let initial: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (domain_id) domain_id, to_state FROM domain_transitions
         WHERE domain_id = ANY($1) AND at < $2 ORDER BY domain_id, at DESC, id DESC",
    )
    .bind(&domains)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    for (domain, state) in initial {
        histories.entry(domain).or_default().initial = state;
    }
    let changes: Vec<(Uuid, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT domain_id, at, to_state FROM domain_transitions WHERE domain_id = ANY($1) AND at >= $2
         ORDER BY domain_id, at, id",
    )
    .bind(&domains)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    for (domain, at, state) in changes {
        histories.entry(domain).or_default().changes.push((at, state));
    }
    let pauses: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT domain_id, paused_at, resumed_at FROM monitoring_pauses
         WHERE domain_id = ANY($1) AND (resumed_at IS NULL OR resumed_at > $2) ORDER BY domain_id, paused_at",
    )
    .bind(&domains)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    for (domain, from, to) in pauses {
        histories.entry(domain).or_default().pauses.push((from, to));
    }
    type IncidentTuple = (Uuid, Uuid, DateTime<Utc>, Option<DateTime<Utc>>, Value);
    let incidents: Vec<IncidentTuple> = sqlx::query_as(
        "SELECT id, domain_id, opened_at, resolved_at, opened_regions FROM incidents
         WHERE tenant_id = $2 AND domain_id = ANY($1)
           AND (state <> 'resolved' OR resolved_at >= $3
                OR EXISTS (SELECT 1 FROM incident_updates u WHERE u.incident_id = incidents.id
                           AND u.posted_at >= $3))
         ORDER BY opened_at DESC, id DESC",
    )
    .bind(&domains)
    .bind(tenant)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = incidents.iter().map(|i| i.0).collect();
    let updates: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT incident_id, status, message, posted_at FROM incident_updates WHERE incident_id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut updates_of: HashMap<Uuid, Vec<Update>> = HashMap::new();
    for (incident, status, message, at) in updates {
        updates_of.entry(incident).or_default().push(Update { status, message, at });
    }
    let incidents = incidents
        .into_iter()
        .map(|(id, domain_id, opened_at, resolved_at, opened_regions)| IncidentRow {
            id,
            domain_id,
            opened_at,
            resolved_at,
            opened_regions,
            updates: updates_of.remove(&id).unwrap_or_default(),
        })
        .collect();
    // Occurrences not over and starting within the announcement horizon, with the page's
    // domains each covers.
    let maintenance: Vec<MaintenanceRow> = sqlx::query_as(
        "SELECT w.title, o.starts_at, o.ends_at, array_agg(d.id ORDER BY d.id) AS domain_ids
         FROM maintenance_occurrences o
         JOIN maintenance_windows w ON w.id = o.window_id
         JOIN domains d ON d.tenant_id = w.tenant_id AND d.id = ANY($1)
                       AND (d.id = ANY (w.domain_ids) OR d.tags && w.tags)
         WHERE o.tenant_id = $2 AND o.ends_at > now()
           AND o.starts_at < now() + make_interval(days => $3)
         GROUP BY w.id, w.title, o.starts_at, o.ends_at
         ORDER BY o.starts_at, w.id
         LIMIT $4",
    )
    .bind(&domains)
    .bind(tenant)
    .bind(i32::try_from(model::MAINTENANCE_AHEAD_DAYS).unwrap_or(i32::MAX))
    .bind(i64::try_from(model::MAINTENANCE_LIMIT).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Inputs {
        slug,
        title,
        description,
        components,
        failing,
        histories,
        incidents,
        maintenance,
        regional_failure_observations,
    }))
}
