//! Opening and resolving the incidents of many transitions at once, as consensus evaluates a
//! batch of domains: a few set-based statements per batch (incidents, events, outbox rows)
//! instead of a few per domain, with the same rows and notifications as one at a time. The
//! caller holds every domain's `domain_state` row lock, as for one. A domain a maintenance
//! window covers at the transition's instant gets its incident marked with the window and no
//! notification ([`crate::maintenance`]).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{opened_notification, Alert, Kind, Subject, HELD, SYSTEM};
use crate::maintenance;
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

/// Inserts the incidents with their `opened` events and, for those not held nor inside a
/// maintenance window, their `incident_opened` notifications (`incident:<id>:opened`), in a
/// few statements.
pub async fn open_many(tx: &mut PgConnection, openings: &[Opening<'_>]) -> sqlx::Result<()> {
    if openings.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = openings.iter().map(|o| o.id).collect();
    let tenants: Vec<Uuid> = openings.iter().map(|o| o.subject.tenant_id).collect();
    let domains: Vec<Uuid> = openings.iter().map(|o| o.subject.domain_id).collect();
    let ats: Vec<DateTime<Utc>> = openings.iter().map(|o| o.at).collect();
    let regions: Vec<&Value> = openings.iter().map(|o| o.regions).collect();
    let covered = maintenance::covering(tx, &domains, &ats).await?;
    let window = |o: &Opening<'_>| covered.get(&o.subject.domain_id).copied();
    let kinds: Vec<&str> = openings.iter().map(|o| o.kind.as_str()).collect();
    let severities: Vec<&str> = openings.iter().map(|o| o.kind.severity()).collect();
    let details: Vec<Value> = openings
        .iter()
        .map(|o| {
            let mut details = json!({ "regions": o.regions });
            if let Some((window_id, until)) = window(o) {
                details["maintenance"] = maintenance::details(window_id, until);
                details["notification"] = Value::from(maintenance::WITHHELD);
            } else if o.alert == Alert::Hold {
                details["notification"] = Value::from(HELD);
            }
            details
        })
        .collect();
    let windows: Vec<Option<Uuid>> = openings.iter().map(|o| window(o).map(|w| w.0)).collect();
    let untils: Vec<Option<DateTime<Utc>>> = openings.iter().map(|o| window(o).map(|w| w.1)).collect();
    sqlx::query(
        "INSERT INTO incidents (id, tenant_id, domain_id, state, opened_at, opened_regions,
             maintenance_window_id, maintenance_until, kind, severity)
         SELECT id, tenant_id, domain_id, 'open', at, regions, window_id, until, kind, severity
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::jsonb[], $6::uuid[],
                     $7::timestamptz[], $8::text[], $9::text[])
             AS u(id, tenant_id, domain_id, at, regions, window_id, until, kind, severity)",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&domains)
    .bind(&ats)
    .bind(&regions)
    .bind(&windows)
    .bind(&untils)
    .bind(&kinds)
    .bind(&severities)
    .execute(&mut *tx)
    .await?;
    events(tx, &ids, "opened", &ats, &details).await?;
    for o in openings.iter().filter(|o| window(o).is_some()) {
        tracing::info!(incident_id = %o.id, domain_id = %o.subject.domain_id, "incident opened inside a maintenance window: nothing sent");
    }
    let notifications: Vec<(Notification, String)> = openings
        .iter()
        .filter(|o| o.alert == Alert::Send && window(o).is_none())
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
/// they were not told about. An incident a maintenance window withheld sends nothing when it
/// resolves inside a window; one whose window is over but that the sweeper has not announced
/// yet is announced now, opening then resolution. Returns, per resolution in order, whether it
/// resolved the incident (false: it was already resolved).
pub async fn resolve_many(tx: &mut PgConnection, resolutions: &[Resolution<'_>]) -> sqlx::Result<Vec<bool>> {
    if resolutions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = resolutions.iter().map(|r| r.id).collect();
    let ats: Vec<DateTime<Utc>> = resolutions.iter().map(|r| r.at).collect();
    // `withheld_until`: the end of the maintenance window withholding it, read from the row
    // as updated (after any wait for its lock).
    type Done = (Uuid, i64, bool, Option<DateTime<Utc>>);
    let resolved: Vec<Done> = sqlx::query_as(
        "WITH done AS (
             UPDATE incidents i SET state = 'resolved', resolved_at = u.at,
                 duration_s = GREATEST(0, floor(extract(epoch FROM u.at - i.opened_at)))::bigint
             FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
             WHERE i.id = u.id AND i.state <> 'resolved'
             RETURNING i.id, i.duration_s,
                 CASE WHEN i.maintenance_window_id IS NOT NULL AND i.maintenance_ended_at IS NULL
                      THEN i.maintenance_until END AS withheld_until)
         SELECT d.id, d.duration_s, EXISTS (
             SELECT 1 FROM incident_events e
             WHERE e.incident_id = d.id AND e.kind = 'opened' AND e.details->>'notification' = $3),
             d.withheld_until
         FROM done d",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(HELD)
    .fetch_all(&mut *tx)
    .await?;
    let resolved: std::collections::HashMap<Uuid, (i64, bool, Option<DateTime<Utc>>)> = resolved
        .into_iter()
        .map(|(id, duration_s, unannounced, until)| (id, (duration_s, unannounced, until)))
        .collect();
    // Withheld incidents whose window is over: announced now unless another window covers them.
    let late: Vec<&Resolution<'_>> = resolutions
        .iter()
        .filter(|r| resolved.get(&r.id).and_then(|x| x.2).is_some_and(|until| until <= r.at))
        .collect();
    let still_covered = maintenance::covering(
        tx,
        &late.iter().map(|r| r.subject.domain_id).collect::<Vec<_>>(),
        &late.iter().map(|r| r.at).collect::<Vec<_>>(),
    )
    .await?;
    let (mut event_ids, mut event_ats, mut details) = (Vec::new(), Vec::new(), Vec::new());
    let mut notifications: Vec<(Notification, String)> = Vec::new();
    for r in resolutions {
        let Some(&(duration_s, unannounced, withheld_until)) = resolved.get(&r.id) else { continue };
        let inside = withheld_until
            .is_some_and(|until| until > r.at || still_covered.contains_key(&r.subject.domain_id));
        if withheld_until.is_some() && !inside {
            sqlx::query("UPDATE incidents SET maintenance_ended_at = $2 WHERE id = $1")
                .bind(r.id)
                .bind(r.at)
                .execute(&mut *tx)
                .await?;
            let added = super::announce_after_maintenance(tx, r.subject, r.id, r.at, None).await?;
            tracing::info!(incident_id = %r.id, added, "incident announced as it resolved: its maintenance window was over");
        }
        let alert = if unannounced || inside { Alert::Hold } else { r.alert };
        let mut detail = json!({
            "regions": r.regions, "recovered": true, "duration_s": duration_s, "incident": r.kind.describe(r.id),
        });
        if inside {
            detail["notification"] = Value::from(maintenance::RESOLVED_INSIDE);
        } else if alert == Alert::Hold {
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
