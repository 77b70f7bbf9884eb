//! Flap detection: a domain that keeps changing between up, down and degraded is put in *flap
//! mode*, in
//! which its individual incident notifications are held (the incidents and their events are
//! still written) and one `domain_flapping` notice goes out instead; a periodic digest reports
//! what happened. When it has been stable long enough it leaves flap mode with one
//! `domain_stabilized` notice.
//!
//! **Two kinds, each with its own flap mode** ([`Kind`]): *availability* (`down`: a change to or
//! from `down`) and *latency* (`degraded`: a change between `up` and `degraded`). A domain
//! whose response time keeps crossing its anomaly threshold holds only its slow-response
//! alerts; its outages are still announced (and the other way round). A change is assessed
//! under its own kind only, and holds the notifications of the incidents it resolves and opens.
//!
//! **Score: transitions per rolling window** — the confirmed transitions of the kind between
//! known states (from `up`, `down` or `degraded`; `unknown → x` does not count) in
//! `(now - window, now]`. It is easy to
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

/// Which flap mode a change belongs to: availability (`down`) or latency (`degraded`). Stored
/// in `flap_periods.kind`; a domain has at most one open period of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A change to or from `down` (`unknown → up` too, though it never counts).
    Down,
    /// A change between `up` and `degraded` (and `unknown → degraded`).
    Degraded,
}

impl Kind {
    /// The kind of a change from `from` to `to` (states as stored).
    pub fn of(from: &str, to: &str) -> Kind {
        if from == "down" || to == "down" || (from == "unknown" && to == "up") {
            Kind::Down
        } else {
            Kind::Degraded
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Down => "down",
            Kind::Degraded => "degraded",
        }
    }

    /// The kind of a stored `flap_periods.kind`.
    pub fn parse(kind: &str) -> Kind {
        if kind == "degraded" {
            Kind::Degraded
        } else {
            Kind::Down
        }
    }
}

/// SQL: the kind ([`Kind::as_str`]) of the `domain_transitions` row aliased `t`, as
/// [`Kind::of`] decides it.
pub(crate) const TRANSITION_KIND_SQL: &str = "(CASE WHEN t.from_state = 'down' OR t.to_state = 'down'
       OR (t.from_state = 'unknown' AND t.to_state = 'up') THEN 'down' ELSE 'degraded' END)";

/// SQL: whether the `domain_transitions` row aliased `t` counts toward a score.
pub(crate) const COUNTS_SQL: &str = "t.from_state IN ('up', 'down', 'degraded')";
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

/// A domain's score of `kind` at `now`: its transitions of that kind from a known state in
/// `(now - window, now]`, and the time of the latest transition of that kind in the window.
pub async fn score(
    conn: &mut PgConnection,
    domain_id: Uuid,
    kind: Kind,
    now: DateTime<Utc>,
    window: std::time::Duration,
) -> sqlx::Result<(u32, Option<DateTime<Utc>>)> {
    let start = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let (count, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE {COUNTS_SQL}), max(t.at) FROM domain_transitions t
         WHERE t.domain_id = $1 AND t.at > $2 AND t.at <= $3 AND {TRANSITION_KIND_SQL} = $4"
    ))
    .bind(domain_id)
    .bind(start)
    .bind(now)
    .bind(kind.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok((u32::try_from(count).unwrap_or(u32::MAX), last))
}

/// A span a domain spent (or spends) in flap mode of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub id: Uuid,
    pub kind: Kind,
    pub entered_at: DateTime<Utc>,
    pub entered_score: i32,
}

/// The domain's open flap period of `kind`, if it is flapping so.
pub async fn open_period(
    conn: &mut PgConnection,
    domain_id: Uuid,
    kind: Kind,
) -> sqlx::Result<Option<Period>> {
    let row: Option<(Uuid, DateTime<Utc>, i32)> = sqlx::query_as(
        "SELECT id, entered_at, entered_score FROM flap_periods
         WHERE domain_id = $1 AND kind = $2 AND left_at IS NULL",
    )
    .bind(domain_id)
    .bind(kind.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(id, entered_at, entered_score)| Period { id, kind, entered_at, entered_score }))
}

/// A confirmed transition of a domain into `up`, `down` or `degraded`.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub subject: &'a Subject,
    pub at: DateTime<Utc>,
    /// `unknown`, `up`, `down` or `degraded`.
    pub from: &'a str,
    /// `up`, `down` or `degraded`.
    pub to: &'a str,
    /// The regions whose observations decided it (the voters given to the incident).
    pub regions: &'a Value,
}

/// What flap detection says about one transition, before its incident is written.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The kind of the change, under which it was assessed.
    pub kind: Kind,
    pub settings: Settings,
    /// Transitions of its kind in the window ending at the transition, itself included.
    pub score: u32,
    /// The flap period of its kind open before the transition.
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
/// leaves (`unknown`, `up`, `down` or `degraded`) and enters, when, and the domain's settings.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub domain_id: Uuid,
    pub from: &'a str,
    pub to: &'a str,
    pub at: DateTime<Utc>,
    pub settings: &'a Settings,
}

/// Step one of the transitions of a batch of domains (inside evaluate's transaction, under
/// their row locks), in one statement: scores each domain under its transition's kind with the
/// transition included and decides. One assessment per candidate, in order.
pub async fn assess_many(
    tx: &mut PgConnection,
    candidates: &[Candidate<'_>],
) -> sqlx::Result<Vec<Assessment>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = candidates.iter().map(|c| c.domain_id).collect();
    let ats: Vec<DateTime<Utc>> = candidates.iter().map(|c| c.at).collect();
    let kinds: Vec<Kind> = candidates.iter().map(|c| Kind::of(c.from, c.to)).collect();
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = candidates
        .iter()
        .map(|c| c.at - chrono::Duration::from_std(c.settings.window).unwrap_or(chrono::Duration::MAX))
        .collect();
    type Row = (i64, i64, Option<Uuid>, Option<DateTime<Utc>>, Option<i32>);
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT u.ord,
                (SELECT count(*) FILTER (WHERE {COUNTS_SQL}) FROM domain_transitions t
                 WHERE t.domain_id = u.domain_id AND t.at > u.start AND t.at <= u.at
                   AND {TRANSITION_KIND_SQL} = u.kind),
                p.id, p.entered_at, p.entered_score
         FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::text[])
              WITH ORDINALITY AS u(domain_id, start, at, kind, ord)
         LEFT JOIN flap_periods p ON p.domain_id = u.domain_id AND p.kind = u.kind AND p.left_at IS NULL
         ORDER BY u.ord"
    ))
    .bind(&ids)
    .bind(&starts)
    .bind(&ats)
    .bind(&kind_names)
    .fetch_all(&mut *tx)
    .await?;
    let mut assessments = Vec::with_capacity(candidates.len());
    for ((c, kind), (_, earlier, period_id, entered_at, entered_score)) in
        candidates.iter().zip(kinds).zip(rows)
    {
        let period = match (period_id, entered_at, entered_score) {
            (Some(id), Some(entered_at), Some(entered_score)) => {
                Some(Period { id, kind, entered_at, entered_score })
            }
            _ => None,
        };
        let earlier = u32::try_from(earlier).unwrap_or(u32::MAX);
        let score = earlier.saturating_add(u32::from(matches!(c.from, "up" | "down" | "degraded")));
        let decision = decide(period.is_some(), score, Some(c.at), c.at, c.settings);
        assessments.push(Assessment { kind, settings: *c.settings, score, period, decision });
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
                "INSERT INTO flap_periods (id, tenant_id, domain_id, kind, entered_at, entered_score)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(subject.tenant_id)
            .bind(subject.domain_id)
            .bind(assessment.kind.as_str())
            .bind(transition.at)
            .bind(i32::try_from(assessment.score).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
            let settings = &assessment.settings;
            let what = match assessment.kind {
                Kind::Down => format!(
                    "{} is flapping: {} state changes in the last {}; individual alerts are held and a digest will follow",
                    subject.url,
                    assessment.score,
                    describe_duration(settings.window_s()),
                ),
                Kind::Degraded => format!(
                    "{}'s response time is flapping: {} changes between up and degraded in the last {}; slow-response alerts are held (outage alerts are not) and a digest will follow",
                    subject.url,
                    assessment.score,
                    describe_duration(settings.window_s()),
                ),
            };
            let notification = Notification {
                kind: "domain_flapping".into(),
                tenant_id: subject.tenant_id,
                domain_id: Some(subject.domain_id),
                url: Some(subject.url.clone()),
                incident_id: None,
                summary: what,
                details: json!({
                    "flap_period_id": id,
                    "flap_kind": assessment.kind,
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
/// `domain_stabilized` notice (`flap:<period>:left`); when it settled `down` or `degraded` with
/// `open_incident` and no open period of the incident's kind holds it, that incident's
/// `incident_opened` notification (`incident:<id>:opened`, so once only). Returns false when
/// the period was already closed.
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
        let who = match period.kind {
            Kind::Down => subject.url.clone(),
            Kind::Degraded => format!("{}'s response time", subject.url),
        };
        format!(
            "{who} is no longer flapping and settled {settled}: {score} state changes in the last {}; individual alerts resume",
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
            "flap_kind": period.kind,
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
        // The open incident is of the settled state's kind; another open period of that kind
        // still holds it.
        let incident_kind = if settled == "down" { Kind::Down } else { Kind::Degraded };
        if incident_kind == period.kind || open_period(tx, subject.domain_id, incident_kind).await?.is_none()
        {
            incidents::notify_opened(tx, subject, incident).await?;
        }
    }
    Ok(true)
}

/// Closes the domain's open flap periods (of both kinds), because monitoring stopped
/// (`settled`: `paused` or `deleted`), without notices. Returns the periods closed (0 to 2).
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

/// A domain's flap modes as the status API shows them: availability at the top level (as
/// before latency had its own), latency under `degraded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = FlapStatus)]
pub struct Status {
    pub enabled: bool,
    /// In availability flap mode (changes to or from `down`).
    pub flapping: bool,
    /// When the open availability flap period began.
    pub since: Option<DateTime<Utc>>,
    /// Availability transitions in the window ending now.
    pub score: u32,
    /// Latency flap mode (changes between `up` and `degraded`).
    pub degraded: KindStatus,
    pub window_s: u64,
    pub enter_transitions: u32,
    pub leave_transitions: u32,
    pub quiet_s: u64,
}

/// One kind's flap mode in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = FlapKindStatus)]
pub struct KindStatus {
    pub flapping: bool,
    /// When the open period began.
    pub since: Option<DateTime<Utc>>,
    /// Transitions of the kind in the window ending now.
    pub score: u32,
}

/// The domain's flap status at `now` under `settings`.
pub async fn status(
    conn: &mut PgConnection,
    domain_id: Uuid,
    settings: &Settings,
    now: DateTime<Utc>,
) -> sqlx::Result<Status> {
    let mut kinds = Vec::with_capacity(2);
    for kind in [Kind::Down, Kind::Degraded] {
        let period = open_period(conn, domain_id, kind).await?;
        let (score, _) = score(conn, domain_id, kind, now, settings.window).await?;
        kinds.push(KindStatus { flapping: period.is_some(), since: period.map(|p| p.entered_at), score });
    }
    let degraded = kinds.pop().expect("two kinds");
    let down = kinds.pop().expect("two kinds");
    Ok(Status {
        enabled: settings.enabled,
        flapping: down.flapping,
        since: down.since,
        score: down.score,
        degraded,
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
    fn a_change_to_or_from_down_is_availability_and_between_up_and_degraded_is_latency() {
        for (from, to, kind) in [
            ("up", "down", Kind::Down),
            ("down", "up", Kind::Down),
            ("degraded", "down", Kind::Down),
            ("down", "degraded", Kind::Down),
            ("unknown", "down", Kind::Down),
            ("unknown", "up", Kind::Down),
            ("up", "degraded", Kind::Degraded),
            ("degraded", "up", Kind::Degraded),
            ("unknown", "degraded", Kind::Degraded),
        ] {
            assert_eq!(Kind::of(from, to), kind, "{from} → {to}");
            assert_eq!(Kind::parse(kind.as_str()), kind);
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(describe_duration(3600), "60 min");
        assert_eq!(describe_duration(900), "15 min");
        assert_eq!(describe_duration(7200), "2 h");
        assert_eq!(describe_duration(90), "90 s");
        assert_eq!(describe_duration(0), "0 s");
    }
}
