//! What a status page shows, as pure data and pure functions of the rows behind it: a
//! component's public state, the overall banner, the 90-day bars of daily uptime, incident
//! titles. Nothing here reads a database; [`super::store`] loads the rows, these functions
//! decide, the templates and the JSON form only present.
//!
//! **What a page may reveal**: a component's display name, its group, its public state and
//! since when, its daily uptime and incidents, and operators' incident updates. Its URL, the
//! regions failing and the kind of failure (never an error's text) only when the component
//! opts in (`reveal`: `url`, `regions`, `errors`). Never a tenant, token or domain id, an
//! address, or an error body.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Days in a component's uptime bar (today included).
pub const DAYS: i64 = 90;

/// A component's public state, and the overall banner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Operational,
    Unknown,
    Maintenance,
    Degraded,
    PartialOutage,
    MajorOutage,
}

impl Level {
    /// The name in the JSON form, in CSS classes (`s-<name>`) and in live events.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Operational => "operational",
            Level::Unknown => "unknown",
            Level::Maintenance => "maintenance",
            Level::Degraded => "degraded",
            Level::PartialOutage => "partial_outage",
            Level::MajorOutage => "major_outage",
        }
    }

    /// What a component in this state is said to be.
    pub fn text(self) -> &'static str {
        match self {
            Level::Operational => "Operational",
            Level::Unknown => "No data yet",
            Level::Maintenance => "Under maintenance",
            Level::Degraded => "Degraded performance",
            Level::PartialOutage => "Partial outage",
            Level::MajorOutage => "Major outage",
        }
    }

    /// What the banner says when the page is in this state.
    pub fn banner(self) -> &'static str {
        match self {
            Level::Operational => "All systems operational",
            Level::Unknown => "Status not known yet",
            Level::Maintenance => "Under maintenance",
            Level::Degraded => "Degraded performance",
            Level::PartialOutage => "Partial outage",
            Level::MajorOutage => "Major outage",
        }
    }

    /// The icon shown with the text (never colour alone).
    pub fn icon(self) -> &'static str {
        match self {
            Level::Operational => "✓",
            Level::Unknown => "?",
            Level::Maintenance => "i",
            Level::Degraded => "!",
            Level::PartialOutage => "!",
            Level::MajorOutage => "✕",
        }
    }
}

/// What is known of a component's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition<'a> {
    /// The consensus state: `up`, `down` or `unknown`.
    pub consensus: &'a str,
    /// Monitoring is paused, or a maintenance window covers the domain.
    pub paused: bool,
    /// Up, but some region has failed its last observations in a row (a persistent regional
    /// failure: `regional_failure_observations`).
    pub regional_failure: bool,
}

/// A component's public state: paused (or inside a maintenance window) is maintenance; down is
/// a major outage; up with a region failing persistently, or consensus degraded (abnormally
/// slow), is degraded; up is operational; undecided is unknown.
pub fn component_level(c: Condition<'_>) -> Level {
    match (c.paused, c.consensus) {
        (true, _) => Level::Maintenance,
        (false, "down") => Level::MajorOutage,
        (false, "up") if c.regional_failure => Level::Degraded,
        (false, "degraded") => Level::Degraded,
        (false, "up") => Level::Operational,
        _ => Level::Unknown,
    }
}

/// The banner of a page whose components are in `levels`: a major outage when every
/// component that is known and not in maintenance is down, a partial outage when some are;
/// else degraded, else maintenance, else operational; unknown when nothing is known yet. A page
/// without components is operational.
pub fn overall(levels: &[Level]) -> Level {
    let down = levels.iter().filter(|l| **l == Level::MajorOutage).count();
    let counted = levels.iter().filter(|l| !matches!(l, Level::Unknown | Level::Maintenance)).count();
    if down > 0 {
        return if down == counted { Level::MajorOutage } else { Level::PartialOutage };
    }
    if levels.contains(&Level::Degraded) {
        Level::Degraded
    } else if levels.contains(&Level::Maintenance) {
        Level::Maintenance
    } else if !levels.is_empty() && levels.iter().all(|l| *l == Level::Unknown) {
        Level::Unknown
    } else {
        Level::Operational
    }
}

/// One day of a component's bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub date: NaiveDate,
    /// Consensus uptime that day (monitored time only); `None` when nothing was monitored.
    pub uptime_percent: Option<f64>,
    /// Incidents open at some time that day.
    pub incidents: u32,
}

impl Day {
    /// The CSS class of the day's cell: `u0` (≥ 99.95 %) to `u4` (< 90 %), `nd` without data.
    pub fn class(&self) -> &'static str {
        match self.uptime_percent {
            None => "nd",
            Some(p) if p >= 99.95 => "u0",
            Some(p) if p >= 99.0 => "u1",
            Some(p) if p >= 95.0 => "u2",
            Some(p) if p >= 90.0 => "u3",
            Some(_) => "u4",
        }
    }

    /// What hovering or focusing the cell says: `2026-11-20: 99.95% uptime, 1 incident`.
    pub fn tip(&self) -> String {
        let uptime = match self.uptime_percent {
            None => "no data".to_owned(),
            Some(p) => format!("{} uptime", percent(p)),
        };
        match self.incidents {
            0 => format!("{}: {uptime}", self.date),
            1 => format!("{}: {uptime}, 1 incident", self.date),
            n => format!("{}: {uptime}, {n} incidents", self.date),
        }
    }
}

/// `99.95%`, `100%`, `87.5%`: two decimals at most, never rounded up to 100, and never below
/// `0%` (an all-down period whose arithmetic lands on `-0.0` or a hair under zero).
pub fn percent(p: f64) -> String {
    // `+ 0.0` turns a negative zero into zero.
    let floored = (p.clamp(0.0, 100.0) * 100.0).floor() / 100.0 + 0.0;
    let text = format!("{floored:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// A span of time from its start to its end (`None`: still going on).
pub type Span = (DateTime<Utc>, Option<DateTime<Utc>>);

/// A domain's history as the bars need it.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The consensus state at the window's start (`unknown` before the first decision).
    pub initial: String,
    /// Transitions in the window: time and new state, in order.
    pub changes: Vec<(DateTime<Utc>, String)>,
    /// Pauses overlapping the window: start and end (`None`: still paused), in order.
    pub pauses: Vec<Span>,
    /// Incidents overlapping the window: opened and resolved (`None`: still open).
    pub incidents: Vec<Span>,
}

/// The first instant of the bar that ends today (UTC days).
pub fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    (today - Duration::days(DAYS - 1)).and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// The `DAYS` days ending today, each with its consensus uptime (time up over time monitored,
/// as [`crate::uptime`] defines it; today until `now`) and the incidents open during it; and
/// the uptime over the whole window.
pub fn days(history: &History, now: DateTime<Utc>) -> (Vec<Day>, Option<f64>) {
    let start = window_start(now);
    let changes: Vec<(DateTime<Utc>, &str)> =
        history.changes.iter().map(|(at, s)| (*at, s.as_str())).collect();
    let mut state = history.initial.as_str();
    let mut next = 0;
    let mut out = Vec::with_capacity(DAYS as usize);
    for d in 0..DAYS {
        let from = start + Duration::days(d);
        let until = (from + Duration::days(1)).min(now);
        let first = next;
        while next < changes.len() && changes[next].0 < from + Duration::days(1) {
            next += 1;
        }
        let uptime = if until > from {
            crate::uptime::compute(state, &changes[first..next], &history.pauses, from, until).uptime_percent
        } else {
            None
        };
        if next > first {
            state = changes[next - 1].1;
        }
        let day_end = from + Duration::days(1);
        let incidents = history
            .incidents
            .iter()
            .filter(|(opened, resolved)| *opened < day_end && resolved.is_none_or(|r| r > from))
            .count() as u32;
        out.push(Day { date: from.date_naive(), uptime_percent: uptime, incidents });
    }
    let total =
        crate::uptime::compute(&history.initial, &changes, &history.pauses, start, now).uptime_percent;
    (out, total)
}

/// An operator's update as a page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    pub status: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// The statuses of an operator's update, in their usual order.
pub const UPDATE_STATUSES: [&str; 4] = ["investigating", "identified", "monitoring", "resolved"];

/// Whether an incident is shown as active: consensus has not resolved it, or an operator's
/// latest update says it is not over (`investigating`, `identified`, `monitoring`): operators
/// close it with a `resolved` update.
pub fn incident_active(resolved: bool, latest_update: Option<&str>) -> bool {
    !resolved || latest_update.is_some_and(|s| s != "resolved")
}

/// What an incident is called on a page: the component's name and what happened, with the
/// failing regions and kinds of failure when the component reveals them.
pub fn incident_title(
    component: &str,
    regions: &[(String, Option<String>)],
    reveal_regions: bool,
    reveal_errors: bool,
) -> String {
    let mut title = format!("{component} unavailable");
    let parts: Vec<String> = regions
        .iter()
        .filter_map(|(region, kind)| match (reveal_regions, reveal_errors, kind) {
            (true, true, Some(kind)) => Some(format!("{region}: {kind}")),
            (true, _, _) => Some(region.clone()),
            (false, true, Some(kind)) => Some(kind.clone()),
            _ => None,
        })
        .collect();
    let mut parts = parts;
    parts.dedup();
    if !parts.is_empty() {
        title.push_str(&format!(" ({})", parts.join(", ")));
    }
    title
}

/// A component as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// The component's public id (not the domain's).
    pub id: Uuid,
    pub name: String,
    pub group: Option<String>,
    pub state: Level,
    pub state_text: &'static str,
    /// Since when consensus holds the domain in its state (absent before any decision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Uptime over the bar's days.
    pub uptime_percent: Option<f64>,
    pub days: Vec<Day>,
    /// Revealed only with `reveal: ["url"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Regions failing now; only with `reveal: ["regions"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_regions: Option<Vec<String>>,
    /// Kinds of failure now (`connect`, `status 503`, …); only with `reveal: ["errors"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<String>>,
}

/// An incident as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: Uuid,
    pub title: String,
    /// The component it concerns.
    pub component: Uuid,
    pub component_name: String,
    pub active: bool,
    pub opened_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Newest first.
    pub updates: Vec<Update>,
}

/// A maintenance window's occurrence as the page shows it: under way, or starting within
/// [`MAINTENANCE_AHEAD_DAYS`]. Only the window's title and times are public, never its
/// description or scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Maintenance {
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Under way now (`starts_at <= now < ends_at`).
    pub active: bool,
    /// The names of the page's components it covers, in page order.
    pub components: Vec<String>,
}

/// How far ahead a page announces scheduled maintenance, in days.
pub const MAINTENANCE_AHEAD_DAYS: i64 = 7;

/// Maintenance occurrences a page lists at most.
pub const MAINTENANCE_LIMIT: usize = 20;

/// A status page's whole public content.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub slug: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: Level,
    pub status_text: &'static str,
    pub components: Vec<Component>,
    pub active_incidents: Vec<Incident>,
    pub incident_history: Vec<Incident>,
    /// Maintenance under way, then scheduled within [`MAINTENANCE_AHEAD_DAYS`], by start.
    pub maintenance: Vec<Maintenance>,
    pub generated_at: DateTime<Utc>,
    /// The live position this content reflects: its event stream resumes after it.
    pub last_event_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: i64, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, hour, 0, 0).unwrap() + Duration::days(day)
    }

    #[test]
    fn a_components_state_follows_pause_consensus_and_regional_failures() {
        let c = |consensus, paused, regional_failure| {
            component_level(Condition { consensus, paused, regional_failure })
        };
        assert_eq!(c("up", false, false), Level::Operational);
        assert_eq!(c("degraded", false, false), Level::Degraded);
        assert_eq!(c("up", false, true), Level::Degraded);
        assert_eq!(c("down", false, true), Level::MajorOutage);
        assert_eq!(c("down", true, false), Level::Maintenance);
        assert_eq!(c("unknown", false, false), Level::Unknown);
    }

    #[test]
    fn a_page_lists_maintenance_under_way_then_scheduled_within_a_week_for_its_components() {
        let now = at(0, 12);
        let (a, b, elsewhere) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let row = |domain, name: &str| ComponentRow {
            id: Uuid::now_v7(),
            domain_id: domain,
            name: name.into(),
            group_name: None,
            reveal: Vec::new(),
            url: String::new(),
            paused: false,
            consensus: "up".into(),
            since: None,
            maintenance: false,
        };
        let window = |title: &str, start: DateTime<Utc>, hours: i64, domains: Vec<Uuid>| MaintenanceRow {
            title: title.into(),
            starts_at: start,
            ends_at: start + Duration::hours(hours),
            domain_ids: domains,
        };
        let inputs = Inputs {
            components: vec![row(a, "API"), row(b, "Web")],
            maintenance: vec![
                window("Over", at(0, 9), 2, vec![a]),
                window("Next week", at(6, 11), 1, vec![b, a]),
                window("Too far", at(8, 11), 1, vec![a]),
                window("Now", at(0, 11), 2, vec![b]),
                window("Not on this page", at(1, 0), 1, vec![elsewhere]),
            ],
            ..Inputs::default()
        };
        let page = build(&inputs, now, "0");
        let listed: Vec<(&str, bool, Vec<&str>)> = page
            .maintenance
            .iter()
            .map(|m| (m.title.as_str(), m.active, m.components.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(listed, [("Now", true, vec!["Web"]), ("Next week", false, vec!["API", "Web"])]);
        assert_eq!(page.maintenance[0].ends_at, at(0, 13));
    }

    #[test]
    fn the_banner_reads_the_worst_news_and_how_widespread_it_is() {
        use Level::*;
        assert_eq!(overall(&[]), Operational);
        assert_eq!(overall(&[Operational, Operational]), Operational);
        assert_eq!(overall(&[Operational, MajorOutage]), PartialOutage);
        assert_eq!(overall(&[MajorOutage, MajorOutage, Maintenance, Unknown]), MajorOutage);
        assert_eq!(overall(&[Operational, Degraded, Maintenance]), Degraded);
        assert_eq!(overall(&[Operational, Maintenance]), Maintenance);
        assert_eq!(overall(&[Unknown, Unknown]), Unknown);
        assert_eq!(overall(&[Unknown, Operational]), Operational);
    }

    #[test]
    fn percentages_are_floored_never_rounded_up_to_a_perfect_score() {
        assert_eq!(percent(100.0), "100%");
        assert_eq!(percent(99.999), "99.99%");
        assert_eq!(percent(87.5), "87.5%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(-0.0), "0%");
        assert_eq!(percent(-1e-9), "0%");
        assert_eq!(percent(100.000_000_1), "100%");
    }

    #[test]
    fn daily_bars_integrate_consensus_uptime_per_day_with_incidents() {
        let now = at(0, 12); // noon on the last day
        let start = window_start(now);
        assert_eq!(start, at(-89, 0));
        // Up since before the window; down 6 h on the day before yesterday; paused 2 h yesterday.
        let history = History {
            initial: "up".into(),
            changes: vec![(at(-2, 6), "down".into()), (at(-2, 12), "up".into())],
            pauses: vec![(at(-1, 0), Some(at(-1, 2)))],
            incidents: vec![(at(-2, 6), Some(at(-2, 12)))],
        };
        let (days, total) = days(&history, now);
        assert_eq!(days.len(), 90);
        assert_eq!(days[0].date, start.date_naive());
        assert_eq!(days[87], Day { date: at(-2, 0).date_naive(), uptime_percent: Some(75.0), incidents: 1 });
        assert_eq!(days[88].uptime_percent, Some(100.0), "paused time is not monitored");
        assert_eq!(days[89].uptime_percent, Some(100.0), "today counts until now");
        assert_eq!(days[87].class(), "u4");
        assert_eq!(days[87].tip(), format!("{}: 75% uptime, 1 incident", days[87].date));
        let monitored_h = 89.0 * 24.0 + 12.0 - 2.0;
        let expected = (monitored_h - 6.0) / monitored_h * 100.0;
        assert!((total.unwrap() - expected).abs() < 1e-9, "{total:?} {expected}");
        // A domain first decided yesterday has no data before.
        let young = History {
            initial: "unknown".into(),
            changes: vec![(at(-1, 0), "up".into())],
            ..History::default()
        };
        let (days, _) = super::days(&young, now);
        assert_eq!(days[87].uptime_percent, None);
        assert_eq!(days[87].class(), "nd");
        assert_eq!(days[88].uptime_percent, Some(100.0));
    }

    #[test]
    fn an_incident_is_active_until_consensus_and_the_operators_both_say_it_is_over() {
        assert!(incident_active(false, None));
        assert!(!incident_active(true, None));
        assert!(incident_active(true, Some("monitoring")));
        assert!(!incident_active(true, Some("resolved")));
        assert!(incident_active(false, Some("resolved")), "still down whatever was written");
    }

    #[test]
    fn titles_name_regions_and_failures_only_when_revealed() {
        let regions = vec![
            ("ams".to_owned(), Some("connect".to_owned())),
            ("iad".to_owned(), Some("connect".to_owned())),
        ];
        assert_eq!(incident_title("API", &regions, false, false), "API unavailable");
        assert_eq!(incident_title("API", &regions, true, false), "API unavailable (ams, iad)");
        assert_eq!(incident_title("API", &regions, false, true), "API unavailable (connect)");
        assert_eq!(
            incident_title("API", &regions, true, true),
            "API unavailable (ams: connect, iad: connect)"
        );
    }
}

/// A component's row as loaded: its settings and its domain's current condition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ComponentRow {
    pub id: Uuid,
    pub domain_id: Uuid,
    pub name: String,
    pub group_name: Option<String>,
    pub reveal: Vec<String>,
    pub url: String,
    pub paused: bool,
    pub consensus: String,
    pub since: Option<DateTime<Utc>>,
    /// A maintenance window covers the domain now: shown as maintenance, like a pause.
    pub maintenance: bool,
}

impl ComponentRow {
    pub fn reveals(&self, what: &str) -> bool {
        self.reveal.iter().any(|r| r == what)
    }
}

/// A region whose latest observation of a component's domain failed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailingRow {
    pub domain_id: Uuid,
    pub region: String,
    pub error_kind: Option<String>,
    pub status_code: Option<i32>,
    pub consecutive_failures: i32,
}

impl FailingRow {
    /// The kind of failure as a page may say it (`connect`, `status 503`): never its text.
    pub fn kind(&self) -> Option<String> {
        match (&self.error_kind, self.status_code) {
            (Some(kind), Some(code)) if kind == "status" => Some(format!("status {code}")),
            (Some(kind), _) => Some(kind.clone()),
            (None, Some(code)) => Some(format!("status {code}")),
            (None, None) => None,
        }
    }
}

/// An incident of a component's domain with its operators' updates (oldest first).
#[derive(Debug, Clone)]
pub struct IncidentRow {
    pub id: Uuid,
    pub domain_id: Uuid,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The regions that confirmed it, as stored (`[{"region", "error_kind", "status_code"}]`).
    pub opened_regions: serde_json::Value,
    pub updates: Vec<Update>,
}

impl IncidentRow {
    fn regions(&self) -> Vec<(String, Option<String>)> {
        self.opened_regions
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|r| {
                        let region = r["region"].as_str()?.to_owned();
                        let kind = match (r["error_kind"].as_str(), r["status_code"].as_i64()) {
                            (Some("status"), Some(code)) | (None, Some(code)) => {
                                Some(format!("status {code}"))
                            }
                            (Some(kind), _) => Some(kind.to_owned()),
                            (None, None) => None,
                        };
                        Some((region, kind))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One occurrence of a maintenance window covering some of a page's domains.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MaintenanceRow {
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// The page's domains it covers.
    pub domain_ids: Vec<Uuid>,
}

/// Everything a page is made from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub slug: String,
    pub title: String,
    pub description: Option<String>,
    /// In page order.
    pub components: Vec<ComponentRow>,
    pub failing: Vec<FailingRow>,
    /// Per domain: its transitions and pauses in the window (incidents are taken from
    /// `incidents`).
    pub histories: std::collections::HashMap<Uuid, History>,
    /// Incidents open at some time in the window, newest first.
    pub incidents: Vec<IncidentRow>,
    /// Maintenance occurrences covering a component's domain that end after now and start
    /// within [`MAINTENANCE_AHEAD_DAYS`], by start.
    pub maintenance: Vec<MaintenanceRow>,
    /// Failed observations in a row that make a region's failure persistent.
    pub regional_failure_observations: u32,
}

/// Incidents listed in a page's history at most.
pub const HISTORY_LIMIT: usize = 50;

/// The maintenance a page lists at `now`: occurrences not over yet and starting within
/// [`MAINTENANCE_AHEAD_DAYS`], those under way first, then by start; each with the names of
/// the components it covers (an occurrence covering none is left out).
fn maintenance(inputs: &Inputs, now: DateTime<Utc>) -> Vec<Maintenance> {
    let horizon = now + Duration::days(MAINTENANCE_AHEAD_DAYS);
    let mut listed: Vec<Maintenance> = inputs
        .maintenance
        .iter()
        .filter(|m| m.ends_at > now && m.starts_at < horizon)
        .filter_map(|m| {
            let components: Vec<String> = inputs
                .components
                .iter()
                .filter(|c| m.domain_ids.contains(&c.domain_id))
                .map(|c| c.name.clone())
                .collect();
            (!components.is_empty()).then(|| Maintenance {
                title: m.title.clone(),
                starts_at: m.starts_at,
                ends_at: m.ends_at,
                active: m.starts_at <= now,
                components,
            })
        })
        .collect();
    listed.sort_by(|a, b| b.active.cmp(&a.active).then(a.starts_at.cmp(&b.starts_at)));
    listed.truncate(MAINTENANCE_LIMIT);
    listed
}

/// The page as shown at `now`, reflecting the live events up to `position`.
pub fn build(inputs: &Inputs, now: DateTime<Utc>, position: &str) -> Page {
    use std::collections::HashMap;
    let persistent = i32::try_from(inputs.regional_failure_observations).unwrap_or(i32::MAX);
    let mut failing: HashMap<Uuid, Vec<&FailingRow>> = HashMap::new();
    for row in &inputs.failing {
        failing.entry(row.domain_id).or_default().push(row);
    }
    let mut incidents_of: HashMap<Uuid, Vec<Span>> = HashMap::new();
    for i in &inputs.incidents {
        incidents_of.entry(i.domain_id).or_default().push((i.opened_at, i.resolved_at));
    }
    let empty = History::default();
    let components: Vec<Component> = inputs
        .components
        .iter()
        .map(|row| {
            let fails = failing.get(&row.domain_id).map(Vec::as_slice).unwrap_or_default();
            let level = component_level(Condition {
                consensus: &row.consensus,
                paused: row.paused || row.maintenance,
                regional_failure: fails.iter().any(|f| f.consecutive_failures >= persistent),
            });
            let mut history = inputs.histories.get(&row.domain_id).unwrap_or(&empty).clone();
            if history.initial.is_empty() {
                history.initial = "unknown".into();
            }
            history.incidents = incidents_of.get(&row.domain_id).cloned().unwrap_or_default();
            let (days, uptime_percent) = days(&history, now);
            // What is failing now is shown only while it matters (not up and fine, not paused).
            let showing = !row.paused && !row.maintenance && level != Level::Operational;
            let mut regions: Vec<String> = fails.iter().map(|f| f.region.clone()).collect();
            regions.sort();
            let mut kinds: Vec<String> = fails.iter().filter_map(|f| f.kind()).collect();
            kinds.sort();
            kinds.dedup();
            Component {
                id: row.id,
                name: row.name.clone(),
                group: row.group_name.clone(),
                state: level,
                state_text: level.text(),
                since: row.since,
                uptime_percent,
                days,
                url: row.reveals("url").then(|| row.url.clone()),
                failing_regions: (row.reveals("regions") && showing).then_some(regions),
                failures: (row.reveals("errors") && showing).then_some(kinds),
            }
        })
        .collect();
    let by_domain: HashMap<Uuid, &ComponentRow> =
        inputs.components.iter().map(|c| (c.domain_id, c)).collect();
    let mut active = Vec::new();
    let mut history = Vec::new();
    for row in &inputs.incidents {
        let Some(component) = by_domain.get(&row.domain_id) else { continue };
        let latest = row.updates.last().map(|u| u.status.as_str());
        let is_active = incident_active(row.resolved_at.is_some(), latest);
        let incident = Incident {
            id: row.id,
            title: incident_title(
                &component.name,
                &row.regions(),
                component.reveals("regions"),
                component.reveals("errors"),
            ),
            component: component.id,
            component_name: component.name.clone(),
            active: is_active,
            opened_at: row.opened_at,
            resolved_at: row.resolved_at,
            updates: row.updates.iter().rev().cloned().collect(),
        };
        if is_active {
            active.push(incident);
        } else if history.len() < HISTORY_LIMIT {
            history.push(incident);
        }
    }
    let maintenance = maintenance(inputs, now);
    let levels: Vec<Level> = components.iter().map(|c| c.state).collect();
    let status = overall(&levels);
    Page {
        slug: inputs.slug.clone(),
        title: inputs.title.clone(),
        description: inputs.description.clone(),
        status,
        status_text: status.banner(),
        components,
        active_incidents: active,
        incident_history: history,
        maintenance,
        generated_at: now,
        last_event_id: position.to_owned(),
    }
}
