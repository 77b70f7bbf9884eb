//! Opening and resolving the incidents of many transitions at once, as consensus evaluates a
//! batch of domains: a few set-based statements per batch (incidents, events, outbox rows)
//! instead of a few per domain, with the same rows and notifications as one at a time. The
//! caller holds every domain's `domain_state` row lock, as for one.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{opened_notification, Alert, Kind, Subject, HELD, SYSTEM};
use crate::notify::{self, Notification};

/// An incident to open: its id (chosen by the caller), what it is about, when, the failing
/// regions (`[{"region", "error_kind", "status_code", "observed_at", "agent_id"}]`) and whether
/// its notification goes out.
#[derive(Debug, Clone)]
pub struct Opening<'a> {
    pub id: Uuid,
    pub kind: Kind,
    pub subject: &'a Subject,
    pub at: DateTime<Utc>,
    pub regions: &'a Value,
    pub alert: Alert,
}

/// An incident to resolve because its domain recovered: the passing regions as evidence.
#[derive(Debug, Clone)]
pub struct Resolution<'a> {
    pub id: Uuid,
    pub kind: Kind,
    pub subject: &'a Subject,
    pub at: DateTime<Utc>,
    pub regions: &'a Value,
    pub alert: Alert,
}

/// Inserts the incidents with their `opened` events and, for those not held, their
/// `incident_opened` notifications (`incident:<id>:opened`), in three statements.
pub async fn open_many(tx: &mut PgConnection, openings: &[Opening<'_>]) -> sqlx::Result<()> {
    if openings.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = openings.iter().map(|o| o.id).collect();
    let tenants: Vec<Uuid> = openings.iter().map(|o| o.subject.tenant_id).collect();
    let domains: Vec<Uuid> = openings.iter().map(|o| o.subject.domain_id).collect();
    let ats: Vec<DateTime<Utc>> = openings.iter().map(|o| o.at).collect();
    let regions: Vec<&Value> = openings.iter().map(|o| o.regions).collect();
    let kinds: Vec<&str> = openings.iter().map(|o| o.kind.as_str()).collect();
    let severities: Vec<&str> = openings.iter().map(|o| o.kind.severity()).collect();
    let details: Vec<Value> = openings
        .iter()
        .map(|o| {
            let mut details = json!({ "regions": o.regions });
            if o.alert == Alert::Hold {
                details["notification"] = Value::from(HELD);
            }
            details
        })
        .collect();
    sqlx::query(
        "INSERT INTO incidents (id, tenant_id, domain_id, state, opened_at, opened_regions, kind, severity)
         SELECT id, tenant_id, domain_id, 'open', at, regions, kind, severity
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::jsonb[], $6::text[], $7::text[])
             AS u(id, tenant_id, domain_id, at, regions, kind, severity)",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&domains)
    .bind(&ats)
    .bind(&regions)
    .bind(&kinds)
    .bind(&severities)
    .execute(&mut *tx)
    .await?;
    events(tx, &ids, "opened", &ats, &details).await?;
    let notifications: Vec<(Notification, String)> = openings
        .iter()
        .filter(|o| o.alert == Alert::Send)
        .map(|o| {
            (
                opened_notification(o.subject, o.id, o.kind, o.at, o.regions),
                format!("incident:{}:opened", o.id),
            )
        })
        .collect();
    enqueue(tx, &notifications).await?;
    Ok(())
}

/// Resolves the incidents still open (or acknowledged) with their `resolved` events and, unless
/// held, their `incident_resolved` notifications (`incident:<id>:resolved`): held also when the
/// incident's opening was held and never announced, so nobody hears of the end of an outage
/// they were not told about. Returns, per resolution in order, whether it resolved the
/// incident (false: it was already resolved).
pub async fn resolve_many(tx: &mut PgConnection, resolutions: &[Resolution<'_>]) -> sqlx::Result<Vec<bool>> {
    if resolutions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = resolutions.iter().map(|r| r.id).collect();
    let ats: Vec<DateTime<Utc>> = resolutions.iter().map(|r| r.at).collect();
    let resolved: Vec<(Uuid, i64, bool)> = sqlx::query_as(
        "WITH done AS (
             UPDATE incidents i SET state = 'resolved', resolved_at = u.at,
                 duration_s = GREATEST(0, floor(extract(epoch FROM u.at - i.opened_at)))::bigint
             FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
             WHERE i.id = u.id AND i.state <> 'resolved'
             RETURNING i.id, i.duration_s)
         SELECT d.id, d.duration_s, EXISTS (
             SELECT 1 FROM incident_events e
             WHERE e.incident_id = d.id AND e.kind = 'opened' AND e.details->>'notification' = $3)
         FROM done d",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(HELD)
    .fetch_all(&mut *tx)
    .await?;
    let resolved: std::collections::HashMap<Uuid, (i64, bool)> =
        resolved.into_iter().map(|(id, duration_s, unannounced)| (id, (duration_s, unannounced))).collect();
    let (mut event_ids, mut event_ats, mut details) = (Vec::new(), Vec::new(), Vec::new());
    let mut notifications: Vec<(Notification, String)> = Vec::new();
    for r in resolutions {
        let Some(&(duration_s, unannounced)) = resolved.get(&r.id) else { continue };
        let alert = if unannounced { Alert::Hold } else { r.alert };
        let mut detail = json!({
            "regions": r.regions, "recovered": true, "duration_s": duration_s, "incident": r.kind.describe(r.id),
        });
        if alert == Alert::Hold {
            detail["notification"] = Value::from(HELD);
        } else {
            notifications.push((
                Notification {
                    kind: "incident_resolved".into(),
                    tenant_id: r.subject.tenant_id,
                    domain_id: Some(r.subject.domain_id),
                    url: Some(r.subject.url.clone()),
                    incident_id: Some(r.id),
                    summary: match r.kind {
                        Kind::Down => format!("{} is up again after {duration_s} s", r.subject.url),
                        Kind::Degraded => {
                            format!("{} is no longer degraded after {duration_s} s", r.subject.url)
                        }
                    },
                    details: detail.clone(),
                    occurred_at: r.at,
                },
                format!("incident:{}:resolved", r.id),
            ));
        }
        event_ids.push(r.id);
        event_ats.push(r.at);
        details.push(detail);
    }
    events(tx, &event_ids, "resolved", &event_ats, &details).await?;
    enqueue(tx, &notifications).await?;
    Ok(resolutions.iter().map(|r| resolved.contains_key(&r.id)).collect())
}

/// One event of `kind` per incident, by the system.
async fn events(
    tx: &mut PgConnection,
    ids: &[Uuid],
    kind: &str,
    ats: &[DateTime<Utc>],
    details: &[Value],
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO incident_events (incident_id, kind, at, actor, details)
         SELECT id, $2, at, $3, details
         FROM unnest($1::uuid[], $4::timestamptz[], $5::jsonb[]) WITH ORDINALITY AS u(id, at, details, ord)
         ORDER BY ord",
    )
    .bind(ids)
    .bind(kind)
    .bind(SYSTEM)
    .bind(ats)
    .bind(details)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn enqueue(tx: &mut PgConnection, notifications: &[(Notification, String)]) -> sqlx::Result<u64> {
    let refs: Vec<(&Notification, &str)> = notifications.iter().map(|(n, k)| (n, k.as_str())).collect();
    notify::enqueue_many(tx, &refs).await
}
