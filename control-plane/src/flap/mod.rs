//! Flap detection: a domain that keeps changing between up, down and degraded is put in *flap
//! mode*, in
//! which its individual incident notifications are held (the incidents and their events are
//! still written) and one `domain_flapping` notice goes out instead; a periodic digest reports
//! what happened. When it has been stable long enough it leaves flap mode with one
//! `domain_stabilized` notice.
//!
//! **Score: transitions per rolling window** — the confirmed transitions between known states
//! (from `up`, `down` or `degraded`; `unknown → x` does not count: a domain whose latency
//! keeps crossing its anomaly threshold flaps like one whose probes keep failing) in `(now - window, now]`. It is easy to
//! explain to an operator ("6 state changes in the last 60 min"), it does not depend on the probe
//! interval (it counts consensus transitions, not probe results), and it bounds the messages a
//! domain can cause: outside flap mode fewer than `enter` transitions per window are notified.
//! **Hysteresis**: a domain enters at `enter` transitions in the window, and leaves only when at
//! most `leave` (< `enter`) remain *and* none happened for `quiet`, so a score hovering around
//! one threshold cannot switch modes back and forth.
//!
//! Where it runs:
//! - [`assess_many`] and [`record_many`] run inside consensus's evaluation of a batch of
//!   domains ([`crate::consensus::Consensus::evaluate_many`]), in the transaction that holds
//!   their `domain_state` row locks: every transition into `up` or `down` becomes a
//!   `domain_transitions` row (`notified = false` when held), and entering (or, with a zero
//!   quiet period, leaving) happens there. Scores and open periods are read for the whole batch
//!   in one statement and the rows written in another; entering and leaving, once per flap
//!   period, are written per domain.
//! - [`Sweeper`] leaves flap mode, which needs no transition: every `flap_check_interval_ms`
//!   it takes each open `flap_periods` row under the same row lock (`SKIP LOCKED`, so replicas
//!   and evaluations never wait on each other) and closes the stable ones.
//! - [`close_for_domain`]: pausing or deleting a domain closes its flap period without notices.
//!
//! Exactly-once notices by dedup key: `flap:<period>:entered`, `flap:<period>:left`, and, for a
//! domain that settles down with an incident open, that incident's own `incident:<id>:opened`
//! (sent once even if it had gone out before flap mode).
//!
//! - [`settings`]: global settings, per-domain overrides and their rules. [`decide`]: the pure
//!   decision. [`sweeper`]: the periodic exit check.

pub mod decide;
pub mod settings;
pub mod sweeper;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

pub use decide::{decide, Decision};
pub use settings::{Overrides, Settings, MAX_WINDOW_S};
pub use sweeper::Sweeper;

pub use crate::incidents::Alert;
use crate::incidents::{self, Subject};
use crate::metrics::Metrics;
use crate::notify::{self, Notification};

/// "60 min", "2 h", "90 s".
pub fn describe_duration(secs: u64) -> String {
    if secs > 3600 && secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs > 0 && secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// The settings for a domain: the global ones with its stored overrides merged over them.
/// Overrides that no longer merge (the global settings changed) are ignored, logged and counted.
pub fn settings_for(
    global: &Settings,
    stored: Option<&Value>,
    domain_id: Uuid,
    metrics: &Metrics,
) -> Settings {
    match global.for_domain(stored) {
        Ok(settings) => settings,
        Err((fallback, why)) => {
            metrics.flap_invalid_settings.inc();
            tracing::warn!(%domain_id, why, "a domain's flap settings do not apply; using the global ones");
            fallback
        }
    }
}

/// A domain's score at `now`: transitions from `up` or `down` in `(now - window, now]`, and
/// the time of its latest transition (of any kind) in that window.
pub async fn score(
    conn: &mut PgConnection,
    domain_id: Uuid,
    now: DateTime<Utc>,
    window: std::time::Duration,
) -> sqlx::Result<(u32, Option<DateTime<Utc>>)> {
    let start = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let (count, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE from_state IN ('up', 'down', 'degraded')), max(at) FROM domain_transitions
         WHERE domain_id = $1 AND at > $2 AND at <= $3",
    )
    .bind(domain_id)
    .bind(start)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok((u32::try_from(count).unwrap_or(u32::MAX), last))
}

/// A span a domain spent (or spends) in flap mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Period {
    pub id: Uuid,
    pub entered_at: DateTime<Utc>,
    pub entered_score: i32,
}

/// The domain's open flap period, if it is flapping.
pub async fn open_period(conn: &mut PgConnection, domain_id: Uuid) -> sqlx::Result<Option<Period>> {
    sqlx::query_as(
        "SELECT id, entered_at, entered_score FROM flap_periods WHERE domain_id = $1 AND left_at IS NULL",
    )
    .bind(domain_id)
    .fetch_optional(&mut *conn)
    .await
}

/// A confirmed transition of a domain into `up` or `down`.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub subject: &'a Subject,
    pub at: DateTime<Utc>,
    /// `unknown`, `up` or `down`.
    pub from: &'a str,
    /// `up` or `down`.
    pub to: &'a str,
    /// The regions whose observations decided it (the voters given to the incident).
    pub regions: &'a Value,
}

/// What flap detection says about one transition, before its incident is written.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub settings: Settings,
    /// Transitions in the window ending at the transition, itself included.
    pub score: u32,
    /// The flap period open before the transition.
    pub period: Option<Period>,
    pub decision: Decision,
}

impl Assessment {
    /// Whether the transition's incident notification goes out or is held.
    pub fn alert(&self) -> Alert {
        if self.decision.flapping() {
            Alert::Hold
        } else {
            Alert::Send
        }
    }
}

/// A transition about to be written, as flap detection needs it: the domain, the state it
/// leaves (`unknown`, `up` or `down`), when, and the domain's settings.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub domain_id: Uuid,
    pub from: &'a str,
    pub at: DateTime<Utc>,
    pub settings: &'a Settings,
}

/// Step one of the transitions of a batch of domains (inside evaluate's transaction, under
/// their row locks), in one statement: scores each domain with its transition included and
/// decides. One assessment per candidate, in order.
pub async fn assess_many(
    tx: &mut PgConnection,
    candidates: &[Candidate<'_>],
) -> sqlx::Result<Vec<Assessment>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = candidates.iter().map(|c| c.domain_id).collect();
    let ats: Vec<DateTime<Utc>> = candidates.iter().map(|c| c.at).collect();
    let starts: Vec<DateTime<Utc>> = candidates
        .iter()
        .map(|c| c.at - chrono::Duration::from_std(c.settings.window).unwrap_or(chrono::Duration::MAX))
        .collect();
    type Row = (i64, i64, Option<Uuid>, Option<DateTime<Utc>>, Option<i32>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT u.ord,
                (SELECT count(*) FILTER (WHERE t.from_state IN ('up', 'down', 'degraded')) FROM domain_transitions t
                 WHERE t.domain_id = u.domain_id AND t.at > u.start AND t.at <= u.at),
                p.id, p.entered_at, p.entered_score
         FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY AS u(domain_id, start, at, ord)
         LEFT JOIN flap_periods p ON p.domain_id = u.domain_id AND p.left_at IS NULL
         ORDER BY u.ord",
    )
    .bind(&ids)
    .bind(&starts)
    .bind(&ats)
    .fetch_all(&mut *tx)
    .await?;
    let mut assessments = Vec::with_capacity(candidates.len());
    for (c, (_, earlier, period_id, entered_at, entered_score)) in candidates.iter().zip(rows) {
        let period = match (period_id, entered_at, entered_score) {
            (Some(id), Some(entered_at), Some(entered_score)) => {
                Some(Period { id, entered_at, entered_score })
            }
            _ => None,
        };
        let earlier = u32::try_from(earlier).unwrap_or(u32::MAX);
        let score = earlier.saturating_add(u32::from(matches!(c.from, "up" | "down" | "degraded")));
        let decision = decide(period.is_some(), score, Some(c.at), c.at, c.settings);
        assessments.push(Assessment { settings: *c.settings, score, period, decision });
    }
    Ok(assessments)
}

/// Step two, after the incidents were opened or resolved with [`Assessment::alert`]: writes
/// every transition's `domain_transitions` row (one statement), then applies each decision (a
/// new flap period and its `domain_flapping` notice, or the period closed with its
/// `domain_stabilized` notice). Returns the new flap period of each transition that entered.
pub async fn record_many(
    tx: &mut PgConnection,
    transitions: &[(Transition<'_>, Option<Uuid>, &Assessment)],
) -> sqlx::Result<Vec<Option<Uuid>>> {
    if transitions.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = transitions.iter().map(|(t, _, _)| t.subject.tenant_id).collect();
    let domains: Vec<Uuid> = transitions.iter().map(|(t, _, _)| t.subject.domain_id).collect();
    let ats: Vec<DateTime<Utc>> = transitions.iter().map(|(t, _, _)| t.at).collect();
    let froms: Vec<&str> = transitions.iter().map(|(t, _, _)| t.from).collect();
    let tos: Vec<&str> = transitions.iter().map(|(t, _, _)| t.to).collect();
    let regions: Vec<&Value> = transitions.iter().map(|(t, _, _)| t.regions).collect();
    let incidents: Vec<Option<Uuid>> = transitions.iter().map(|(_, i, _)| *i).collect();
    let notified: Vec<bool> = transitions.iter().map(|(_, _, a)| a.alert() == Alert::Send).collect();
    sqlx::query(
        "INSERT INTO domain_transitions
             (tenant_id, domain_id, at, from_state, to_state, regions, incident_id, notified)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
                              $6::jsonb[], $7::uuid[], $8::bool[])",
    )
    .bind(&tenants)
    .bind(&domains)
    .bind(&ats)
    .bind(&froms)
    .bind(&tos)
    .bind(&regions)
    .bind(&incidents)
    .bind(&notified)
    .execute(&mut *tx)
    .await?;
    let mut entered = Vec::with_capacity(transitions.len());
    for (transition, _, assessment) in transitions {
        entered.push(apply(tx, transition, assessment).await?);
    }
    Ok(entered)
}

/// Applies one transition's flap decision: entering opens a period with its notice, leaving
/// closes it with its notice. Returns the period entered.
async fn apply(
    tx: &mut PgConnection,
    transition: &Transition<'_>,
    assessment: &Assessment,
) -> sqlx::Result<Option<Uuid>> {
    let subject = transition.subject;
    match (assessment.decision, &assessment.period) {
        (Decision::Enter, _) => {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO flap_periods (id, tenant_id, domain_id, entered_at, entered_score)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(subject.tenant_id)
            .bind(subject.domain_id)
            .bind(transition.at)
            .bind(i32::try_from(assessment.score).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
            let settings = &assessment.settings;
            let notification = Notification {
                kind: "domain_flapping".into(),
                tenant_id: subject.tenant_id,
                domain_id: Some(subject.domain_id),
                url: Some(subject.url.clone()),
                incident_id: None,
                summary: format!(
                    "{} is flapping: {} state changes in the last {}; individual alerts are held and a digest will follow",
                    subject.url,
                    assessment.score,
                    describe_duration(settings.window_s()),
                ),
                details: json!({
                    "flap_period_id": id,
                    "score": assessment.score,
                    "window_s": settings.window_s(),
                    "enter_transitions": settings.enter,
                    "leave_transitions": settings.leave,
                    "quiet_s": settings.quiet_s(),
                    "state": transition.to,
                }),
                occurred_at: transition.at,
            };
            notify::enqueue(tx, &notification, &format!("flap:{id}:entered")).await?;
            Ok(Some(id))
        }
        (Decision::Leave, Some(period)) => {
            leave(
                tx,
                subject,
                period,
                transition.at,
                transition.to,
                None,
                assessment.score,
                &assessment.settings,
            )
            .await?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Closes the open flap `period` at `at`, settled in `settled` (the domain's state), with its
/// `domain_stabilized` notice (`flap:<period>:left`); when it settled `down` with
/// `open_incident`, that incident's `incident_opened` notification (`incident:<id>:opened`,
/// so once only). Returns false when the period was already closed.
#[allow(clippy::too_many_arguments)]
pub async fn leave(
    tx: &mut PgConnection,
    subject: &Subject,
    period: &Period,
    at: DateTime<Utc>,
    settled: &str,
    open_incident: Option<Uuid>,
    score: u32,
    settings: &Settings,
) -> sqlx::Result<bool> {
    let closed = sqlx::query(
        "UPDATE flap_periods SET left_at = GREATEST($2, entered_at), settled = $3
         WHERE id = $1 AND left_at IS NULL",
    )
    .bind(period.id)
    .bind(at)
    .bind(settled)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if closed == 0 {
        return Ok(false);
    }
    let summary = if settings.enabled {
        format!(
            "{} is no longer flapping and settled {settled}: {score} state changes in the last {}; individual alerts resume",
            subject.url,
            describe_duration(settings.window_s()),
        )
    } else {
        format!(
            "{}: flap detection was turned off while it was flapping; it is {settled} and individual alerts resume",
            subject.url
        )
    };
    let notification = Notification {
        kind: "domain_stabilized".into(),
        tenant_id: subject.tenant_id,
        domain_id: Some(subject.domain_id),
        url: Some(subject.url.clone()),
        incident_id: None,
        summary,
        details: json!({
            "flap_period_id": period.id,
            "entered_at": period.entered_at,
            "entered_score": period.entered_score,
            "settled": settled,
            "score": score,
            "window_s": settings.window_s(),
            "quiet_s": settings.quiet_s(),
            "reason": if settings.enabled { "stable" } else { "disabled" },
        }),
        occurred_at: at,
    };
    notify::enqueue(tx, &notification, &format!("flap:{}:left", period.id)).await?;
    if let (Some(incident), "down" | "degraded") = (open_incident, settled) {
        incidents::notify_opened(tx, subject, incident).await?;
    }
    Ok(true)
}

/// Closes the domain's open flap period, if any, because monitoring stopped (`settled`:
/// `paused` or `deleted`), without notices. Returns the periods closed (0 or 1).
pub async fn close_for_domain(
    tx: &mut PgConnection,
    domain_id: Uuid,
    at: DateTime<Utc>,
    settled: &str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE flap_periods SET left_at = GREATEST($2, entered_at), settled = $3
         WHERE domain_id = $1 AND left_at IS NULL",
    )
    .bind(domain_id)
    .bind(at)
    .bind(settled)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// A domain's flap mode as the status API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub enabled: bool,
    pub flapping: bool,
    /// When the open flap period began.
    pub since: Option<DateTime<Utc>>,
    /// Transitions in the window ending now.
    pub score: u32,
    pub window_s: u64,
    pub enter_transitions: u32,
    pub leave_transitions: u32,
    pub quiet_s: u64,
}

/// The domain's flap status at `now` under `settings`.
pub async fn status(
    conn: &mut PgConnection,
    domain_id: Uuid,
    settings: &Settings,
    now: DateTime<Utc>,
) -> sqlx::Result<Status> {
    let period = open_period(conn, domain_id).await?;
    let (score, _) = score(conn, domain_id, now, settings.window).await?;
    Ok(Status {
        enabled: settings.enabled,
        flapping: period.is_some(),
        since: period.map(|p| p.entered_at),
        score,
        window_s: settings.window_s(),
        enter_transitions: settings.enter,
        leave_transitions: settings.leave,
        quiet_s: settings.quiet_s(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(describe_duration(3600), "60 min");
        assert_eq!(describe_duration(900), "15 min");
        assert_eq!(describe_duration(7200), "2 h");
        assert_eq!(describe_duration(90), "90 s");
        assert_eq!(describe_duration(0), "0 s");
    }
}
