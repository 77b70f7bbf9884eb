//! Digest storage: loading what a period's digests are built from, writing a digest, and the
//! tenant-scoped reads behind `/v1/digests`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::build::{DomainFacts, FlapSpan, TransitionRow, STOPPED_DELETED, STOPPED_PAUSED};

/// Everything one tenant's digest of a period is built from.
#[derive(Debug, Clone, Default)]
pub struct TenantRows {
    pub flaps: Vec<FlapSpan>,
    pub transitions: Vec<TransitionRow>,
    pub facts: HashMap<Uuid, DomainFacts>,
}

type FlapRecord = (Uuid, Uuid, DateTime<Utc>, i32, Option<DateTime<Utc>>, Option<String>);
type TransitionRecord = (Uuid, Uuid, DateTime<Utc>, String, String, Value, Option<Uuid>, bool);

/// The rows behind every tenant's digest of `[start, end)`, by tenant: the flap periods
/// overlapping it (one that left exactly at `start` does not), the transitions of those domains
/// in it, each domain's state before it, its URL and its state as of `now`: `paused` or
/// `deleted` when monitoring is stopped, else `domain_state`, else its latest transition; and
/// for a span closed by a pause, when monitoring resumed (`monitoring_pauses`). Tenants without
/// a flapping domain are absent.
pub async fn load_period(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> sqlx::Result<BTreeMap<Uuid, TenantRows>> {
    let flaps: Vec<FlapRecord> = sqlx::query_as(
        "SELECT tenant_id, domain_id, entered_at, entered_score, left_at, settled FROM flap_periods
         WHERE entered_at < $2 AND (left_at IS NULL OR left_at > $1)
         ORDER BY tenant_id, domain_id, entered_at",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    let mut tenants: BTreeMap<Uuid, TenantRows> = BTreeMap::new();
    let mut owner: HashMap<Uuid, Uuid> = HashMap::new();
    for (tenant_id, domain_id, entered_at, entered_score, left_at, settled) in flaps {
        owner.insert(domain_id, tenant_id);
        tenants.entry(tenant_id).or_default().flaps.push(FlapSpan {
            domain_id,
            entered_at,
            entered_score,
            left_at,
            settled,
            resumed_at: None,
        });
    }
    if owner.is_empty() {
        return Ok(tenants);
    }
    let ids: Vec<Uuid> = owner.keys().copied().collect();

    // A span closed by a pause was closed at the pause's own time (same transaction).
    let resumes: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT domain_id, paused_at, resumed_at FROM monitoring_pauses
         WHERE domain_id = ANY($1) AND resumed_at IS NOT NULL AND resumed_at > $2 AND paused_at < $3",
    )
    .bind(&ids)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    let resumed: HashMap<(Uuid, DateTime<Utc>), DateTime<Utc>> =
        resumes.into_iter().map(|(domain, paused, resumed)| ((domain, paused), resumed)).collect();
    for rows in tenants.values_mut() {
        for span in &mut rows.flaps {
            if span.settled.as_deref() == Some(STOPPED_PAUSED) {
                span.resumed_at = span.left_at.and_then(|left| resumed.get(&(span.domain_id, left)).copied());
            }
        }
    }

    let transitions: Vec<TransitionRecord> = sqlx::query_as(
        "SELECT tenant_id, domain_id, at, from_state, to_state, regions, incident_id, notified
         FROM domain_transitions
         WHERE domain_id = ANY($1) AND at >= $2 AND at < $3
         ORDER BY domain_id, at, id",
    )
    .bind(&ids)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    for (tenant_id, domain_id, at, from_state, to_state, regions, incident_id, notified) in transitions {
        // A domain id is unique; the tenant is checked all the same.
        if owner.get(&domain_id) != Some(&tenant_id) {
            continue;
        }
        if let Some(rows) = tenants.get_mut(&tenant_id) {
            rows.transitions.push(TransitionRow {
                domain_id,
                at,
                from_state,
                to_state,
                regions,
                incident_id,
                notified,
            });
        }
    }

    let mut facts: HashMap<Uuid, DomainFacts> = HashMap::new();
    let before: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (domain_id) domain_id, to_state FROM domain_transitions
         WHERE domain_id = ANY($1) AND at < $2 ORDER BY domain_id, at DESC, id DESC",
    )
    .bind(&ids)
    .bind(start)
    .fetch_all(&mut *conn)
    .await?;
    for (domain_id, state) in before {
        facts.entry(domain_id).or_default().state_before = Some(state);
    }
    let latest: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (domain_id) domain_id, to_state FROM domain_transitions
         WHERE domain_id = ANY($1) AND at <= $2 ORDER BY domain_id, at DESC, id DESC",
    )
    .bind(&ids)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    for (domain_id, state) in latest {
        facts.entry(domain_id).or_default().current_state = Some(state);
    }
    let domains: Vec<(Uuid, Uuid, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT d.id, d.tenant_id, d.url, d.paused, s.state FROM domains d
         LEFT JOIN domain_state s ON s.domain_id = d.id
         WHERE d.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut existing = HashSet::new();
    for (domain_id, tenant_id, url, paused, state) in domains {
        if owner.get(&domain_id) != Some(&tenant_id) {
            continue;
        }
        existing.insert(domain_id);
        let entry = facts.entry(domain_id).or_default();
        entry.url = Some(url);
        if paused {
            entry.current_state = Some(STOPPED_PAUSED.to_owned());
        } else if let Some(state) = state {
            entry.current_state = Some(state);
        }
    }
    for domain_id in &ids {
        if !existing.contains(domain_id) {
            facts.entry(*domain_id).or_default().current_state = Some(STOPPED_DELETED.to_owned());
        }
    }
    for (domain_id, fact) in facts {
        if let Some(rows) = owner.get(&domain_id).and_then(|t| tenants.get_mut(t)) {
            rows.facts.insert(domain_id, fact);
        }
    }
    Ok(tenants)
}

/// A digest as listed by `GET /v1/digests`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Listed {
    pub id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub domain_count: i64,
    pub summary: String,
}

/// A stored digest as served by `GET /v1/digests/{id}`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Stored {
    pub id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = crate::digests::build::Digest)]
    pub content: Value,
    pub text: String,
    pub html: String,
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Digests whose period starts at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Digests whose period starts before this.
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// A tenant's digests, newest period first.
pub async fn list(pool: &PgPool, tenant_id: Uuid, filter: &Filter) -> sqlx::Result<Vec<Listed>> {
    sqlx::query_as(
        "SELECT id, period_start, period_end, created_at,
                COALESCE((content->>'domain_count')::bigint, jsonb_array_length(content->'domains'), 0)
                    AS domain_count,
                COALESCE(content->>'summary', '') AS summary
         FROM digests
         WHERE tenant_id = $1
           AND ($2::timestamptz IS NULL OR period_start >= $2)
           AND ($3::timestamptz IS NULL OR period_start < $3)
         ORDER BY period_start DESC, id DESC LIMIT $4",
    )
    .bind(tenant_id)
    .bind(filter.since)
    .bind(filter.until)
    .bind(i64::from(filter.limit))
    .fetch_all(pool)
    .await
}

/// One digest of a tenant.
pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<Stored>> {
    sqlx::query_as(
        "SELECT id, period_start, period_end, created_at, content, text, html
         FROM digests WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}
