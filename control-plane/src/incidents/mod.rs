//! Incidents: a domain's down (or degraded, [`Kind`]) period from the transition that opened
//! it to the one that resolved it, with its events (`opened`, `acknowledged`, `paused`,
//! `resumed`, `maintenance_ended`, `resolved`). An incident opened inside a maintenance window
//! is marked with it and sends nothing until the window is over ([`crate::maintenance`]).
//! Pausing a domain keeps its incident open and sends nothing ([`pause`], [`resume`]);
//! deleting it closes the incident ([`close_for_domain`]).
//!
//! Every write here takes a transaction from its caller and enqueues the matching notification
//! (`incident:<id>:<kind>`) in it, so a transition and its outbox rows commit together or not
//! at all, unless the caller holds it ([`Alert::Hold`]: the domain is flapping), which is then
//! recorded in the event's details. Reads are scoped by tenant: another tenant's incident is
//! not found.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::notify::{self, Notification};

mod bulk;
pub mod updates;

pub use bulk::{open_many, resolve_many, Opening, Resolution};

/// The actor of events the control plane records itself.
pub const SYSTEM: &str = "system";

/// Whether a transition's notification goes out now or is held (the domain is flapping; see
/// [`crate::flap`]). Acknowledgements are never held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    Send,
    Hold,
}

/// What a held notification's event says in its details (`"notification"`).
pub const HELD: &str = "held: flapping";
/// What it says once the held opening was sent when the domain settled down.
pub const SENT_ON_SETTLING: &str = "sent when the domain settled";

/// Why monitoring of a domain stopped: paused ([`pause`]) or deleted ([`close_for_domain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Paused,
    Deleted,
}

impl Stopped {
    /// The reason recorded on the closing event.
    pub fn reason(self) -> &'static str {
        match self {
            Stopped::Paused => "monitoring paused",
            Stopped::Deleted => "domain deleted",
        }
    }

    /// What an open flap period is closed with (`flap_periods.settled`).
    pub fn settled(self) -> &'static str {
        match self {
            Stopped::Paused => "paused",
            Stopped::Deleted => "deleted",
        }
    }
}

/// What an incident is about: the domain failing (`down`, severity `critical`) or answering
/// abnormally slowly (`degraded`, severity `warning`). Notifications carry both in their
/// details' `incident` object (`{"id", "kind", "severity"}`); a reader that finds none means
/// `down`/`critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Down,
    Degraded,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Down => "down",
            Kind::Degraded => "degraded",
        }
    }

    /// `critical` for down, `warning` for degraded.
    pub fn severity(self) -> &'static str {
        match self {
            Kind::Down => "critical",
            Kind::Degraded => "warning",
        }
    }

    /// The stored kind (anything else is `down`, the kind before there were others).
    pub fn parse(raw: &str) -> Kind {
        if raw == "degraded" {
            Kind::Degraded
        } else {
            Kind::Down
        }
    }

    /// The `incident` object of a notification's details.
    pub fn describe(self, id: Uuid) -> Value {
        json!({ "id": id, "kind": self.as_str(), "severity": self.severity() })
    }
}

/// What an incident is about (for notifications).
#[derive(Debug, Clone)]
pub struct Subject {
    pub tenant_id: Uuid,
    pub domain_id: Uuid,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Incident {
    pub id: Uuid,
    pub domain_id: Uuid,
    pub state: String,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by_token: Option<Uuid>,
    pub ack_note: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub duration_s: Option<i64>,
    /// The regions failing when it opened (`degraded` ones for a latency incident).
    #[schema(value_type = Vec<crate::api::schema::RecordedVote>)]
    pub opened_regions: Value,
    /// The maintenance window the incident opened in (its notifications withheld), if any.
    pub maintenance_window_id: Option<Uuid>,
    /// Until when its notifications are withheld (the covering window's end).
    pub maintenance_until: Option<DateTime<Utc>>,
    /// When the window's end was handled: the incident was announced then.
    pub maintenance_ended_at: Option<DateTime<Utc>>,
    /// `down` or `degraded`.
    pub kind: String,
    /// `critical` (down) or `warning` (degraded).
    pub severity: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[schema(value_type = crate::api::schema::IncidentEventDetails)]
    pub details: Value,
}

const COLUMNS: &str = "id, domain_id, state, opened_at, acknowledged_at, acknowledged_by_token, ack_note, \
     resolved_at, duration_s, opened_regions, maintenance_window_id, maintenance_until, maintenance_ended_at, \
     kind, severity";

async fn event(
    tx: &mut PgConnection,
    incident: Uuid,
    kind: &str,
    at: DateTime<Utc>,
    actor: &str,
    details: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO incident_events (incident_id, kind, at, actor, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(incident)
    .bind(kind)
    .bind(at)
    .bind(actor)
    .bind(details)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// "ams: connect, iad: status 503"
fn describe(regions: &Value) -> String {
    regions
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|r| {
                    let region = r["region"].as_str().unwrap_or("?");
                    match (r["error_kind"].as_str(), r["status_code"].as_i64()) {
                        (Some(kind), _) => format!("{region}: {kind}"),
                        (None, Some(code)) => format!("{region}: status {code}"),
                        (None, None) => region.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// "ams, iad"
fn region_names(regions: &Value) -> String {
    regions
        .as_array()
        .map(|items| items.iter().filter_map(|r| r["region"].as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn opened_notification(
    subject: &Subject,
    id: Uuid,
    kind: Kind,
    at: DateTime<Utc>,
    regions: &Value,
) -> Notification {
    let summary = match kind {
        Kind::Down => format!("{} is down ({})", subject.url, describe(regions)),
        Kind::Degraded => {
            format!("{} is degraded: abnormally slow in {}", subject.url, region_names(regions))
        }
    };
    Notification {
        kind: "incident_opened".into(),
        tenant_id: subject.tenant_id,
        domain_id: Some(subject.domain_id),
        url: Some(subject.url.clone()),
        incident_id: Some(id),
        summary,
        details: json!({ "regions": regions, "incident": kind.describe(id) }),
        occurred_at: at,
    }
}

/// Enqueues the `incident_opened` notification of incident `id` as [`open_many`] would have (same
/// dedup key, so it goes out once however often this is called): for an incident whose opening
/// was held while its domain flapped and that is still unresolved when the domain settles.
/// Returns the outbox rows added (0 when it was already enqueued or the incident is unknown).
///
/// An incident a maintenance window still withholds is not announced here (0): the
/// [`crate::maintenance::Sweeper`] announces it when the window is over.
pub async fn notify_opened(tx: &mut PgConnection, subject: &Subject, id: Uuid) -> sqlx::Result<u64> {
    let row: Option<(DateTime<Utc>, Value, String)> = sqlx::query_as(
        "SELECT opened_at, opened_regions, kind FROM incidents
         WHERE id = $1 AND (maintenance_window_id IS NULL OR maintenance_ended_at IS NOT NULL)",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((at, regions, kind)) = row else { return Ok(0) };
    let added = notify::enqueue(
        tx,
        &opened_notification(subject, id, Kind::parse(&kind), at, &regions),
        &format!("incident:{id}:opened"),
    )
    .await?;
    // The opening is announced now: its resolution will be too.
    sqlx::query(
        "UPDATE incident_events SET details = jsonb_set(details, '{notification}', to_jsonb($3::text))
         WHERE incident_id = $1 AND kind = 'opened' AND details->>'notification' = $2",
    )
    .bind(id)
    .bind(HELD)
    .bind(SENT_ON_SETTLING)
    .execute(&mut *tx)
    .await?;
    Ok(added)
}

/// Whether incident `id`'s opening was held (its domain was flapping) or withheld (a
/// maintenance window still covers it) and never announced since: its resolution is held
/// too, so nobody hears of the end of an outage they were never told about.
async fn opening_unannounced(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM incident_events
                        WHERE incident_id = $1 AND kind = 'opened' AND details->>'notification' = $2)
             OR EXISTS (SELECT 1 FROM incidents
                        WHERE id = $1 AND maintenance_window_id IS NOT NULL AND maintenance_ended_at IS NULL)",
    )
    .bind(id)
    .bind(HELD)
    .fetch_one(&mut *tx)
    .await
}

/// Announces incident `id`, withheld by maintenance window `window_id`, because the window
/// ended at `at` while it was still open: a `maintenance_ended` event, its `incident_opened`
/// notification (same dedup key as [`open_many`], so once only) and the opening event marked
/// [`crate::maintenance::SENT_AT_END`]. The caller has set `maintenance_ended_at` and holds the
/// incident's row lock. Returns outbox rows added.
pub async fn announce_after_maintenance(
    tx: &mut PgConnection,
    subject: &Subject,
    id: Uuid,
    at: DateTime<Utc>,
    window_id: Option<Uuid>,
) -> sqlx::Result<u64> {
    let sent = crate::maintenance::SENT_AT_END;
    let details = json!({ "window_id": window_id, "notification": sent });
    event(tx, id, "maintenance_ended", at, SYSTEM, &details).await?;
    let added = notify_opened(tx, subject, id).await?;
    sqlx::query(
        "UPDATE incident_events SET details = jsonb_set(details, '{notification}', to_jsonb($3::text))
         WHERE incident_id = $1 AND kind = 'opened' AND details->>'notification' IN ($2, $4)",
    )
    .bind(id)
    .bind(crate::maintenance::WITHHELD)
    .bind(sent)
    .bind(SENT_ON_SETTLING)
    .execute(&mut *tx)
    .await?;
    Ok(added)
}

/// Closes the domain's unresolved incident, if any, because the domain is deleted (`stopped`),
/// closes its open flap period (settled `deleted`, without notices) and forgets its consensus
/// state. The closing is an `incident_resolved` notification (so receivers close the page)
/// whose details say `"recovered": false` and the reason, and whose summary says the incident
/// was closed because the domain was deleted, not that the target recovered; it is held when
/// the opening was. Call it in the transaction that deletes the domain, after locking the
/// domain row; `actor` is who deleted it. Returns the incident closed.
pub async fn close_for_domain(
    tx: &mut PgConnection,
    subject: &Subject,
    at: DateTime<Utc>,
    stopped: Stopped,
    actor: &str,
) -> sqlx::Result<Option<Uuid>> {
    let reason = stopped.reason();
    let open: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM incidents WHERE domain_id = $1 AND state <> 'resolved' FOR UPDATE",
    )
    .bind(subject.domain_id)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM domain_state WHERE domain_id = $1")
        .bind(subject.domain_id)
        .execute(&mut *tx)
        .await?;
    crate::flap::close_for_domain(tx, subject.domain_id, at, stopped.settled()).await?;
    let Some(id) = open else { return Ok(None) };
    let why = Why { key: "reason", value: Value::from(reason), recovered: false, actor };
    finish(tx, subject, id, at, why, Alert::Send, |duration_s| {
        format!(
            "{}: incident closed after {duration_s} s ({reason}); it had not recovered when monitoring stopped",
            subject.url
        )
    })
    .await?;
    Ok(Some(id))
}

/// What a `paused` event says in its details (`"notification"`).
pub const NOT_SENT_PAUSED: &str = "none: the incident stays open while monitoring is paused";
/// What a `resumed` event says in its details (`"notification"`).
pub const NOT_SENT_RESUMED: &str = "none: the same incident goes on";
/// What the `opened` event of a held incident says once it was announced after a resume.
pub const SENT_AFTER_RESUME: &str = "sent: still down after monitoring resumed";

/// The domain's open incident, if any, locked.
async fn open_incident(tx: &mut PgConnection, domain_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT id FROM incidents WHERE domain_id = $1 AND state <> 'resolved' FOR UPDATE")
        .bind(domain_id)
        .fetch_optional(&mut *tx)
        .await
}

/// Monitoring of the domain is paused by `actor` at `at`: the pause is recorded
/// (`monitoring_pauses`), an open flap period is closed (settled `paused`, without notices),
/// and an open incident **stays open** with a `paused` event (who, when) and **nothing is
/// sent**: the target may well still be failing, and a pause is not a recovery. The consensus
/// state is kept, so resuming continues the same incident. Call it in the transaction that
/// pauses the domain, after locking the domain row. Returns the open incident.
pub async fn pause(
    tx: &mut PgConnection,
    subject: &Subject,
    at: DateTime<Utc>,
    actor: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query(
        "INSERT INTO monitoring_pauses (tenant_id, domain_id, paused_at, paused_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (domain_id) WHERE resumed_at IS NULL DO NOTHING",
    )
    .bind(subject.tenant_id)
    .bind(subject.domain_id)
    .bind(at)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    crate::flap::close_for_domain(tx, subject.domain_id, at, Stopped::Paused.settled()).await?;
    let Some(id) = open_incident(tx, subject.domain_id).await? else { return Ok(None) };
    let details = json!({ "reason": Stopped::Paused.reason(), "notification": NOT_SENT_PAUSED });
    event(tx, id, "paused", at, actor, &details).await?;
    Ok(Some(id))
}

/// Monitoring of the domain is resumed by `actor` at `at`: the pause is closed, and an open
/// incident gets a `resumed` event and **nothing is sent**: consensus goes on from the state
/// kept at the pause, so an outage that continues stays the same incident (no second
/// `incident_opened`), and one that ended meanwhile is resolved by the next evaluation with
/// one `incident_resolved`. An incident whose opening was held (the domain was flapping when
/// it was paused; the pause ended flap mode) is marked to be announced by the first evaluation
/// that finds a failure quorum observed after `at`, as a domain that settles down is.
/// Returns the open incident.
pub async fn resume(
    tx: &mut PgConnection,
    subject: &Subject,
    at: DateTime<Utc>,
    actor: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query(
        "UPDATE monitoring_pauses SET resumed_at = GREATEST($2, paused_at), resumed_by = $3
         WHERE domain_id = $1 AND resumed_at IS NULL",
    )
    .bind(subject.domain_id)
    .bind(at)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    let Some(id) = open_incident(tx, subject.domain_id).await? else { return Ok(None) };
    let held = opening_unannounced(tx, id).await?;
    let mut details = json!({ "reason": "monitoring resumed", "notification": NOT_SENT_RESUMED });
    if held {
        details["notification"] = Value::from("held: announced if still down once probes resume");
        sqlx::query("UPDATE domain_state SET announce_after = $2 WHERE domain_id = $1")
            .bind(subject.domain_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    event(tx, id, "resumed", at, actor, &details).await?;
    Ok(Some(id))
}

/// Announces incident `id`, whose opening was held, because its domain was found still down
/// after monitoring resumed: its `incident_opened` notification (same dedup key as [`open_many`],
/// so once only) and the opening event marked [`SENT_AFTER_RESUME`]. Returns outbox rows added.
pub async fn announce_after_resume(tx: &mut PgConnection, subject: &Subject, id: Uuid) -> sqlx::Result<u64> {
    let added = notify_opened(tx, subject, id).await?;
    sqlx::query(
        "UPDATE incident_events SET details = jsonb_set(details, '{notification}', to_jsonb($3::text))
         WHERE incident_id = $1 AND kind = 'opened' AND details->>'notification' = $2",
    )
    .bind(id)
    .bind(SENT_ON_SETTLING)
    .bind(SENT_AFTER_RESUME)
    .execute(&mut *tx)
    .await?;
    Ok(added)
}

/// Why an incident is finished: the detail key and value, whether the target recovered, and
/// who finished it.
struct Why<'a> {
    key: &'static str,
    value: Value,
    recovered: bool,
    actor: &'a str,
}

/// Marks the incident resolved (unless it already is) with its duration, then writes the
/// `resolved` event (details: `why`, `recovered` and the duration) and, unless held, the
/// `incident_resolved` notification. Returns false when it was already resolved.
async fn finish(
    tx: &mut PgConnection,
    subject: &Subject,
    id: Uuid,
    at: DateTime<Utc>,
    why: Why<'_>,
    alert: Alert,
    summary: impl FnOnce(i64) -> String,
) -> sqlx::Result<bool> {
    let duration: Option<i64> = sqlx::query_scalar(
        "UPDATE incidents SET state = 'resolved', resolved_at = $2,
             duration_s = GREATEST(0, floor(extract(epoch FROM $2 - opened_at)))::bigint
         WHERE id = $1 AND state <> 'resolved'
         RETURNING duration_s",
    )
    .bind(id)
    .bind(at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(duration_s) = duration else {
        return Ok(false);
    };
    let alert = if alert == Alert::Send && opening_unannounced(tx, id).await? { Alert::Hold } else { alert };
    let mut details = serde_json::Map::new();
    details.insert(why.key.to_owned(), why.value);
    details.insert("recovered".into(), Value::from(why.recovered));
    details.insert("duration_s".into(), Value::from(duration_s));
    if alert == Alert::Hold {
        details.insert("notification".into(), Value::from(HELD));
        let details = Value::Object(details);
        event(tx, id, "resolved", at, why.actor, &details).await?;
        return Ok(true);
    }
    let details = Value::Object(details);
    event(tx, id, "resolved", at, why.actor, &details).await?;
    let notification = Notification {
        kind: "incident_resolved".into(),
        tenant_id: subject.tenant_id,
        domain_id: Some(subject.domain_id),
        url: Some(subject.url.clone()),
        incident_id: Some(id),
        summary: summary(duration_s),
        details,
        occurred_at: at,
    };
    notify::enqueue(tx, &notification, &format!("incident:{id}:resolved")).await?;
    Ok(true)
}

/// Why an acknowledgement was refused.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("incident not found")]
    NotFound,
    #[error("the incident is already {0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Acknowledges an open incident of `tenant_id` on behalf of `token_id`, with its event and
/// notification. A resolved or already acknowledged incident is a conflict.
pub async fn acknowledge(
    pool: &sqlx::PgPool,
    tenant_id: Uuid,
    id: Uuid,
    token_id: Uuid,
    note: Option<&str>,
) -> Result<Incident, AckError> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, Uuid, String, bool)> = sqlx::query_as(
        "SELECT i.state, i.domain_id, COALESCE(d.url, ''),
             i.maintenance_window_id IS NOT NULL AND i.maintenance_ended_at IS NULL
         FROM incidents i
         LEFT JOIN domains d ON d.id = i.domain_id
         WHERE i.id = $1 AND i.tenant_id = $2 FOR UPDATE OF i",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (state, domain_id, url, withheld) = row.ok_or(AckError::NotFound)?;
    if state != "open" {
        tx.rollback().await?;
        return Err(AckError::Conflict(state));
    }
    let now = Utc::now();
    let incident: Incident = sqlx::query_as(&format!(
        "UPDATE incidents SET state = 'acknowledged', acknowledged_at = $2, acknowledged_by_token = $3,
             ack_note = $4
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(now)
    .bind(token_id)
    .bind(note)
    .fetch_one(&mut *tx)
    .await?;
    let details = json!({ "note": note });
    event(&mut tx, id, "acknowledged", now, &token_id.to_string(), &details).await?;
    let notification = Notification {
        kind: "incident_acknowledged".into(),
        tenant_id,
        domain_id: Some(domain_id),
        url: Some(url.clone()),
        incident_id: Some(id),
        summary: match note {
            Some(note) => format!("{url}: incident acknowledged ({note})"),
            None => format!("{url}: incident acknowledged"),
        },
        details,
        occurred_at: now,
    };
    // An incident a maintenance window withholds was never announced: nor is its acknowledgement.
    if !withheld {
        notify::enqueue(&mut tx, &notification, &format!("incident:{id}:acknowledged")).await?;
    }
    tx.commit().await?;
    Ok(incident)
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `open` (open or acknowledged), `acknowledged`, or `resolved`.
    pub state: Option<String>,
    pub domain_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// A tenant's incidents, newest first.
pub async fn list(pool: &sqlx::PgPool, tenant_id: Uuid, filter: &Filter) -> sqlx::Result<Vec<Incident>> {
    let states: Option<Vec<&str>> = filter.state.as_deref().map(|s| match s {
        "open" => vec!["open", "acknowledged"],
        "acknowledged" => vec!["acknowledged"],
        _ => vec!["resolved"],
    });
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM incidents
         WHERE tenant_id = $1
           AND ($2::text[] IS NULL OR state = ANY($2))
           AND ($3::uuid IS NULL OR domain_id = $3)
           AND ($4::timestamptz IS NULL OR opened_at >= $4)
           AND ($5::timestamptz IS NULL OR opened_at < $5)
         ORDER BY opened_at DESC, id DESC LIMIT $6"
    ))
    .bind(tenant_id)
    .bind(states)
    .bind(filter.domain_id)
    .bind(filter.since)
    .bind(filter.until)
    .bind(i64::from(filter.limit))
    .fetch_all(pool)
    .await
}

/// One incident of a tenant.
pub async fn get(pool: &sqlx::PgPool, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<Incident>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM incidents WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await
}

/// An incident's events in order.
pub async fn events(pool: &sqlx::PgPool, id: Uuid) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as(
        "SELECT id, kind, at, actor, details FROM incident_events WHERE incident_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
