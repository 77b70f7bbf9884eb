//! Maintenance window storage, tenant-scoped: the window rows and their occurrences expanded
//! [`HORIZON`] ahead into `maintenance_occurrences` (a one-off window has its one occurrence;
//! a recurring one is extended by the [`super::Sweeper`]). A write replaces the occurrences
//! not yet over and releases the incidents the window was withholding, so the sweeper decides
//! again whether they are still in maintenance.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::schedule::{self, Occurrence, Schedule, WindowDuration, MAX_WINDOW};
use super::spec::{FieldErrors, Scope, WindowSpec};

/// How far ahead recurring windows are expanded.
pub const HORIZON: Duration = Duration::days(60);

/// A stored window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub spec: WindowSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid maintenance window")]
    Invalid(FieldErrors),
    #[error("maintenance window not found")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    title: String,
    description: Option<String>,
    domain_ids: Vec<Uuid>,
    tags: Vec<String>,
    time_zone: String,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    dtstart: Option<NaiveDateTime>,
    duration: Option<String>,
    rrule: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, title, description, domain_ids, tags, time_zone, starts_at, ends_at, \
     dtstart, duration, rrule, created_at, updated_at";

impl TryFrom<Row> for Window {
    type Error = sqlx::Error;

    fn try_from(row: Row) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| sqlx::Error::Decode(format!("maintenance window {}: bad {what}", row.id).into());
        let time_zone = row.time_zone.parse().map_err(|_| corrupt("time zone"))?;
        let schedule = match (row.starts_at, row.ends_at, row.dtstart, row.duration, row.rrule) {
            (Some(starts_at), Some(ends_at), _, _, None) => Schedule::Once { starts_at, ends_at },
            (None, _, Some(dtstart), Some(duration), Some(rrule)) => Schedule::Recurring {
                dtstart,
                duration: WindowDuration::parse(&serde_json::Value::from(duration))
                    .map_err(|_| corrupt("duration"))?,
                rrule,
            },
            _ => return Err(corrupt("schedule")),
        };
        Ok(Window {
            id: row.id,
            tenant_id: row.tenant_id,
            spec: WindowSpec {
                title: row.title,
                description: row.description,
                scope: Scope { domain_ids: row.domain_ids, tags: row.tags },
                time_zone,
                schedule,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The scope's domain ids that are not the tenant's domains, as field errors.
async fn check_scope(conn: &mut PgConnection, tenant_id: Uuid, scope: &Scope) -> Result<(), StoreError> {
    if scope.domain_ids.is_empty() {
        return Ok(());
    }
    let known: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM domains WHERE tenant_id = $1 AND id = ANY($2)")
        .bind(tenant_id)
        .bind(&scope.domain_ids)
        .fetch_all(&mut *conn)
        .await?;
    let errors: FieldErrors = scope
        .domain_ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !known.contains(id))
        .map(|(i, _)| (format!("scope.domain_ids[{i}]"), "no such domain".to_owned()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(errors))
    }
}

/// Writes the occurrences of `window` overlapping `[from, to)`; an occurrence already stored
/// with the same start takes the new end.
async fn expand(
    conn: &mut PgConnection,
    window: &Window,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let found: Vec<Occurrence> =
        schedule::occurrences(&window.spec.schedule, window.spec.time_zone, from, to);
    if found.is_empty() {
        return Ok(0);
    }
    let starts: Vec<DateTime<Utc>> = found.iter().map(|o| o.starts_at).collect();
    let ends: Vec<DateTime<Utc>> = found.iter().map(|o| o.ends_at).collect();
    Ok(sqlx::query(
        "INSERT INTO maintenance_occurrences (window_id, tenant_id, starts_at, ends_at)
         SELECT $1, $2, s, e FROM unnest($3::timestamptz[], $4::timestamptz[]) AS u(s, e)
         ON CONFLICT (window_id, starts_at) DO UPDATE SET ends_at = excluded.ends_at",
    )
    .bind(window.id)
    .bind(window.tenant_id)
    .bind(&starts)
    .bind(&ends)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Replaces the window's occurrences that are not over at `now` and sets how far it is
/// expanded; the incidents it withheld are released to the sweeper (their `maintenance_until`
/// brought forward to `now`), which finds whether they are still covered.
async fn reexpand(conn: &mut PgConnection, window: &Window, now: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM maintenance_occurrences WHERE window_id = $1 AND ends_at > $2")
        .bind(window.id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let until = match window.spec.schedule {
        // The one occurrence, wherever it lies.
        Schedule::Once { ends_at, .. } => ends_at.max(now) + HORIZON,
        Schedule::Recurring { .. } => now + HORIZON,
    };
    expand(conn, window, now, until).await?;
    sqlx::query("UPDATE maintenance_windows SET expanded_until = $2 WHERE id = $1")
        .bind(window.id)
        .bind(until)
        .execute(&mut *conn)
        .await?;
    release(conn, window.id, now).await?;
    Ok(())
}

async fn release(conn: &mut PgConnection, window_id: Uuid, now: DateTime<Utc>) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE incidents SET maintenance_until = LEAST(maintenance_until, $2)
         WHERE maintenance_window_id = $1 AND maintenance_ended_at IS NULL AND state <> 'resolved'",
    )
    .bind(window_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

async fn write(
    conn: &mut PgConnection,
    id: Uuid,
    tenant_id: Uuid,
    spec: &WindowSpec,
) -> sqlx::Result<Window> {
    let (starts_at, ends_at, dtstart, duration, rrule) = match &spec.schedule {
        Schedule::Once { starts_at, ends_at } => (Some(*starts_at), Some(*ends_at), None, None, None),
        Schedule::Recurring { dtstart, duration, rrule } => {
            (None, None, Some(*dtstart), Some(duration.iso()), Some(rrule.as_str()))
        }
    };
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO maintenance_windows (id, tenant_id, title, description, domain_ids, tags, time_zone, \
             starts_at, ends_at, dtstart, duration, rrule, expanded_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now()) \
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description, \
             domain_ids = excluded.domain_ids, tags = excluded.tags, time_zone = excluded.time_zone, \
             starts_at = excluded.starts_at, ends_at = excluded.ends_at, dtstart = excluded.dtstart, \
             duration = excluded.duration, rrule = excluded.rrule, updated_at = now() \
         WHERE maintenance_windows.tenant_id = excluded.tenant_id \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(tenant_id)
    .bind(&spec.title)
    .bind(spec.description.as_deref())
    .bind(&spec.scope.domain_ids)
    .bind(&spec.scope.tags)
    .bind(spec.time_zone.name())
    .bind(starts_at)
    .bind(ends_at)
    .bind(dtstart)
    .bind(duration)
    .bind(rrule)
    .fetch_one(&mut *conn)
    .await?;
    row.try_into()
}

/// Creates a window, its occurrences expanded from `now`.
pub async fn create(
    pool: &PgPool,
    tenant_id: Uuid,
    spec: &WindowSpec,
    now: DateTime<Utc>,
) -> Result<Window, StoreError> {
    let mut tx = pool.begin().await?;
    check_scope(&mut tx, tenant_id, &spec.scope).await?;
    let window = write(&mut tx, Uuid::now_v7(), tenant_id, spec).await?;
    reexpand(&mut tx, &window, now).await?;
    tx.commit().await?;
    Ok(window)
}

async fn lock(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<Window, StoreError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM maintenance_windows WHERE id = $1 AND tenant_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.ok_or(StoreError::NotFound)?.try_into()?)
}

/// Applies a partial update ([`WindowSpec::patched`]); occurrences not over at `now` are
/// replaced.
pub async fn update(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    patch: &serde_json::Map<String, serde_json::Value>,
    now: DateTime<Utc>,
) -> Result<Window, StoreError> {
    let mut tx = pool.begin().await?;
    let current = lock(&mut tx, tenant_id, id).await?;
    let spec = match current.spec.patched(patch) {
        Ok(spec) => spec,
        Err(errors) => {
            tx.rollback().await?;
            return Err(StoreError::Invalid(errors));
        }
    };
    if let Err(error) = check_scope(&mut tx, tenant_id, &spec.scope).await {
        tx.rollback().await?;
        return Err(error);
    }
    let window = write(&mut tx, id, tenant_id, &spec).await?;
    reexpand(&mut tx, &window, now).await?;
    tx.commit().await?;
    Ok(window)
}

/// Deletes a window; the incidents it withheld are released to the sweeper at `now`.
pub async fn delete(pool: &PgPool, tenant_id: Uuid, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, tenant_id, id).await?;
    release(&mut tx, id, now).await?;
    sqlx::query("DELETE FROM maintenance_windows WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// One window of a tenant.
pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Window, StoreError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM maintenance_windows WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.ok_or(StoreError::NotFound)?.try_into()?)
}

/// A tenant's windows in creation order, at most `limit` after `after`.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Window>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM maintenance_windows WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) \
         ORDER BY id LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Window::try_from).collect::<Result<_, _>>()?)
}

/// Extends every recurring window expanded less than half the [`HORIZON`] past `now` to
/// `now + HORIZON`. Returns the windows extended.
pub async fn extend_due(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let rows: Vec<(Row, DateTime<Utc>)> = {
        let ids: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, expanded_until FROM maintenance_windows
             WHERE rrule IS NOT NULL AND expanded_until < $1 ORDER BY expanded_until LIMIT 500",
        )
        .bind(now + HORIZON / 2)
        .fetch_all(pool)
        .await?;
        let mut rows = Vec::with_capacity(ids.len());
        for (id, until) in ids {
            let row: Option<Row> =
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM maintenance_windows WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            rows.extend(row.map(|r| (r, until)));
        }
        rows
    };
    let mut extended = 0;
    for (row, until) in rows {
        let window = Window::try_from(row)?;
        let mut tx = pool.begin().await?;
        // The row may have been rewritten meanwhile: extend only what is still due.
        let still: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT expanded_until FROM maintenance_windows WHERE id = $1 FOR UPDATE")
                .bind(window.id)
                .fetch_optional(&mut *tx)
                .await?;
        if still != Some(until) {
            tx.rollback().await?;
            continue;
        }
        let to = now + HORIZON;
        // Occurrences starting from the old horizon on (one under way at it is already stored).
        let from = until.max(now - MAX_WINDOW);
        expand(&mut tx, &window, from, to).await?;
        sqlx::query("UPDATE maintenance_windows SET expanded_until = $2 WHERE id = $1")
            .bind(window.id)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        extended += 1;
    }
    Ok(extended)
}

/// An occurrence of a window, with the window's id and title (for status answers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = MaintenanceOccurrence)]
pub struct Scheduled {
    pub window_id: Uuid,
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// The domain's maintenance at `now`: the occurrence under way that ends last, and the next
/// one to start (within the expanded horizon).
pub async fn for_domain(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    domain_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<(Option<Scheduled>, Option<Scheduled>)> {
    let rows: Vec<(bool, Scheduled)> = sqlx::query_as::<_, (bool, Uuid, String, DateTime<Utc>, DateTime<Utc>)>(
        "(SELECT true, w.id, w.title, o.starts_at, o.ends_at
          FROM domains d
          JOIN maintenance_windows w ON w.tenant_id = d.tenant_id AND (d.id = ANY (w.domain_ids) OR d.tags && w.tags)
          JOIN maintenance_occurrences o ON o.window_id = w.id AND o.starts_at <= $3 AND o.ends_at > $3
          WHERE d.id = $2 AND d.tenant_id = $1
          ORDER BY o.ends_at DESC LIMIT 1)
         UNION ALL
         (SELECT false, w.id, w.title, o.starts_at, o.ends_at
          FROM domains d
          JOIN maintenance_windows w ON w.tenant_id = d.tenant_id AND (d.id = ANY (w.domain_ids) OR d.tags && w.tags)
          JOIN maintenance_occurrences o ON o.window_id = w.id AND o.starts_at > $3
          WHERE d.id = $2 AND d.tenant_id = $1
          ORDER BY o.starts_at LIMIT 1)",
    )
    .bind(tenant_id)
    .bind(domain_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(active, window_id, title, starts_at, ends_at)| (active, Scheduled { window_id, title, starts_at, ends_at }))
    .collect();
    let active = rows.iter().find(|(a, _)| *a).map(|(_, s)| s.clone());
    let next = rows.into_iter().find(|(a, _)| !*a).map(|(_, s)| s);
    Ok((active, next))
}

/// For each `(domain, at)`, the window occurrence covering the domain at that instant (the one
/// ending last, when several do): `domain id → (window id, end)`.
pub async fn covering(
    conn: &mut PgConnection,
    domain_ids: &[Uuid],
    ats: &[DateTime<Utc>],
) -> sqlx::Result<std::collections::HashMap<Uuid, (Uuid, DateTime<Utc>)>> {
    if domain_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT DISTINCT ON (u.domain_id) u.domain_id, o.window_id, o.ends_at
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(domain_id, at)
         JOIN domains d ON d.id = u.domain_id
         JOIN maintenance_windows w ON w.tenant_id = d.tenant_id AND (d.id = ANY (w.domain_ids) OR d.tags && w.tags)
         JOIN maintenance_occurrences o
             ON o.window_id = w.id AND o.tenant_id = d.tenant_id AND o.starts_at <= u.at AND o.ends_at > u.at
         ORDER BY u.domain_id, o.ends_at DESC",
    )
    .bind(domain_ids)
    .bind(ats)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(domain, window, until)| (domain, (window, until))).collect())
}
