//! The digest of one tenant and period, built from rows already loaded: no I/O, so every figure
//! is unit tested.
//!
//! A domain belongs to the digest of `[start, end)` when one of its flap periods overlaps it
//! (`entered_at < end` and `left_at` unset or `> start`: a flap period that ended exactly at the
//! start does not reach into it). For each such domain: its transitions in the period, the time
//! it spent down in the period, the regions involved, its state at the start, the end and now,
//! whether it is still flapping, and a timeline of [`SLOTS`] slots.
//!
//! A flap period closed as `paused` or `deleted` means monitoring stopped at its `left_at`: the
//! domain is not counted as down after it, and its state from then on is `paused` or `deleted`,
//! until monitoring resumed (`resumed_at`: the domain is back in the state it was paused in,
//! which pausing keeps) or a later transition shows it monitored again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Slots of a digest's timeline (one minute each for an hourly digest).
pub const SLOTS: usize = 60;

/// A timeline slot in which the domain was down for more than half of the slot.
pub const SLOT_DOWN: char = '#';
/// A timeline slot in which the domain was up (or its state unknown) most of the time.
pub const SLOT_UP: char = '.';
/// A timeline slot that had not begun when the digest was built (current period only).
pub const SLOT_FUTURE: char = '-';

/// One `domain_transitions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRow {
    pub domain_id: Uuid,
    pub at: DateTime<Utc>,
    pub from_state: String,
    pub to_state: String,
    /// `[{"region", "error_kind", "status_code", "observed_at"}]`.
    pub regions: Value,
    pub incident_id: Option<Uuid>,
    pub notified: bool,
}

/// `flap_periods.settled` (and the state reported) when monitoring was paused.
pub const STOPPED_PAUSED: &str = "paused";
/// `flap_periods.settled` (and the state reported) when the domain was deleted.
pub const STOPPED_DELETED: &str = "deleted";
/// A change marker: monitoring resumed (replaced by the state the domain was paused in).
const RESUMED: &str = "resumed";

/// One `flap_periods` row.
#[derive(Debug, Clone, PartialEq)]
pub struct FlapSpan {
    pub domain_id: Uuid,
    pub entered_at: DateTime<Utc>,
    pub entered_score: i32,
    pub left_at: Option<DateTime<Utc>>,
    pub settled: Option<String>,
    /// When monitoring resumed after the pause that closed this span (`monitoring_pauses`).
    pub resumed_at: Option<DateTime<Utc>>,
}

impl FlapSpan {
    /// Whether the span overlaps `[start, end)`: it entered before the end and had not left by
    /// the start (one that left exactly at the start lies wholly before the period).
    pub fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.entered_at < end && self.left_at.is_none_or(|left| left > start)
    }

    /// When and why monitoring stopped, if the span was closed by pausing or deleting the domain.
    pub fn stopped(&self) -> Option<(DateTime<Utc>, &str)> {
        match (self.left_at, self.settled.as_deref()) {
            (Some(at), Some(why @ (STOPPED_PAUSED | STOPPED_DELETED))) => Some((at, why)),
            _ => None,
        }
    }
}

/// What else is known of a domain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainFacts {
    /// Its URL; `None` once the domain is deleted.
    pub url: Option<String>,
    /// `to_state` of its last transition before the period.
    pub state_before: Option<String>,
    /// Its state now: `paused` or `deleted` when monitoring is stopped, else
    /// `domain_state.state`, or else the `to_state` of its latest transition.
    pub current_state: Option<String>,
}

/// Everything a tenant's digest is built from.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub tenant_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// When the digest is built; time after it is not counted (the current period).
    pub now: DateTime<Utc>,
    /// The tenant's flap periods (those not overlapping the period are ignored).
    pub flaps: &'a [FlapSpan],
    /// Transitions of those domains (those outside the period are ignored).
    pub transitions: &'a [TransitionRow],
    pub facts: &'a HashMap<Uuid, DomainFacts>,
}

/// One tenant's digest of one period: the `content` column, the API's answer and the webhook's
/// `details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Digest {
    pub tenant_id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// "Flap digest 10:00–11:00 UTC: 3 domains flapped, 41 state changes".
    pub summary: String,
    pub domain_count: usize,
    /// State changes of all its domains in the period.
    pub transition_count: usize,
    /// Length of one timeline slot.
    pub slot_seconds: f64,
    /// Most state changes first.
    pub domains: Vec<DomainDigest>,
}

/// One flapping domain in a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainDigest {
    pub domain_id: Uuid,
    /// The URL, or the domain id once the domain is deleted.
    pub url: String,
    pub deleted: bool,
    /// State changes in the period.
    pub transition_count: usize,
    /// Time spent down in the period (up to the build time for the current period).
    pub down_seconds: i64,
    /// Regions named by its transitions in the period, sorted.
    pub regions: Vec<String>,
    /// Error kinds named by its transitions in the period, sorted.
    pub error_kinds: Vec<String>,
    pub first_transition_at: Option<DateTime<Utc>>,
    pub last_transition_at: Option<DateTime<Utc>>,
    /// `up`, `down` or `unknown`.
    pub state_at_start: String,
    /// `up`, `down`, `unknown`, or `paused` / `deleted` when monitoring stopped in the period.
    pub state_at_end: String,
    /// Its state when the digest was built (`paused` / `deleted` when monitoring is stopped).
    pub current_state: String,
    /// Whether it was in flap mode when the digest was built.
    pub still_flapping: bool,
    /// When it entered flap mode (the earliest flap period overlapping the period).
    pub flap_entered_at: DateTime<Utc>,
    /// When it left flap mode, if it had when the digest was built.
    pub flap_left_at: Option<DateTime<Utc>>,
    /// How it left flap mode (`up`, `down`, `paused`, `deleted`).
    pub settled: Option<String>,
    /// One character per slot: [`SLOT_DOWN`], [`SLOT_UP`] or [`SLOT_FUTURE`].
    pub timeline: String,
    pub transitions: Vec<DigestTransition>,
}

/// One state change listed in a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DigestTransition {
    pub at: DateTime<Utc>,
    pub from: String,
    pub to: String,
    /// The regions that decided it, as recorded.
    #[schema(value_type = Vec<crate::api::schema::RecordedVote>)]
    pub regions: Value,
    pub incident_id: Option<Uuid>,
    /// False when its notification was held because the domain was flapping.
    pub notified: bool,
}

/// The digest of `input`, or `None` when none of the tenant's domains was in flap mode in the
/// period.
pub fn build(input: &Input<'_>) -> Option<Digest> {
    let (start, end) = (input.start, input.end);
    let mut spans: BTreeMap<Uuid, Vec<&FlapSpan>> = BTreeMap::new();
    for span in input.flaps.iter().filter(|s| s.overlaps(start, end)) {
        spans.entry(span.domain_id).or_default().push(span);
    }
    if spans.is_empty() {
        return None;
    }
    let mut by_domain: HashMap<Uuid, Vec<&TransitionRow>> = HashMap::new();
    for t in input.transitions.iter().filter(|t| t.at >= start && t.at < end) {
        by_domain.entry(t.domain_id).or_default().push(t);
    }
    for list in by_domain.values_mut() {
        list.sort_by_key(|t| t.at);
    }
    let none = DomainFacts::default();
    let mut domains: Vec<DomainDigest> = spans
        .into_iter()
        .map(|(domain_id, spans)| {
            let transitions = by_domain.remove(&domain_id).unwrap_or_default();
            let facts = input.facts.get(&domain_id).unwrap_or(&none);
            domain_digest(input, domain_id, &spans, &transitions, facts)
        })
        .collect();
    domains.sort_by(|a, b| b.transition_count.cmp(&a.transition_count).then_with(|| a.url.cmp(&b.url)));
    let transition_count = domains.iter().map(|d| d.transition_count).sum();
    let period = end - start;
    Some(Digest {
        tenant_id: input.tenant_id,
        period_start: start,
        period_end: end,
        summary: summary(start, end, domains.len(), transition_count),
        domain_count: domains.len(),
        transition_count,
        slot_seconds: period.num_milliseconds() as f64 / SLOTS as f64 / 1000.0,
        domains,
    })
}

fn domain_digest(
    input: &Input<'_>,
    domain_id: Uuid,
    spans: &[&FlapSpan],
    transitions: &[&TransitionRow],
    facts: &DomainFacts,
) -> DomainDigest {
    let (start, end) = (input.start, input.end);
    // The period as far as it has happened.
    let until = input.now.clamp(start, end);
    let state_at_start = facts
        .state_before
        .clone()
        .or_else(|| transitions.first().map(|t| t.from_state.clone()))
        .unwrap_or_else(|| "unknown".into());
    // The state changes: the transitions, and monitoring stopping where a flap period was closed
    // by pausing or deleting the domain (after a transition at the same instant).
    let mut changes: Vec<(DateTime<Utc>, &str)> =
        transitions.iter().map(|t| (t.at, t.to_state.as_str())).collect();
    let stops: Vec<(DateTime<Utc>, &str)> =
        spans.iter().filter_map(|s| s.stopped()).filter(|(at, _)| *at >= start && *at < end).collect();
    changes.extend(stops.iter().copied());
    // Monitoring resuming after a pause: back in the state it was paused in.
    let resumes: Vec<DateTime<Utc>> = spans
        .iter()
        .filter(|s| s.stopped().is_some_and(|(_, why)| why == STOPPED_PAUSED))
        .filter_map(|s| s.resumed_at)
        .filter(|at| *at < end)
        .collect();
    changes.extend(resumes.iter().map(|at| (*at, RESUMED)));
    // Stable: at equal times transitions stay before stops, and stops before resumes.
    changes.sort_by_key(|(at, _)| *at);
    let mut monitored = state_at_start.as_str();
    for change in &mut changes {
        match change.1 {
            RESUMED => change.1 = monitored,
            STOPPED_PAUSED | STOPPED_DELETED => {}
            state => monitored = state,
        }
    }
    let down = down_intervals(&state_at_start, &changes, start, until);
    let down_ms: i64 = down.iter().map(|(a, b)| (*b - *a).num_milliseconds()).sum();
    let state_at_end =
        changes.last().map_or_else(|| state_at_start.clone(), |(_, state)| (*state).to_owned());
    // Monitoring stopped and not resumed since (no resume and no transition after the stop, up
    // to now).
    let stopped_now = spans
        .iter()
        .filter_map(|s| s.stopped().map(|stop| (stop, s.resumed_at)))
        .max_by_key(|((at, _), _)| *at)
        .filter(|((at, _), resumed)| {
            *at <= input.now
                && transitions.last().is_none_or(|t| t.at <= *at)
                && resumed.is_none_or(|r| r > input.now)
        })
        .map(|((_, why), _)| why.to_owned());

    let mut regions = BTreeSet::new();
    let mut error_kinds = BTreeSet::new();
    for t in transitions {
        for entry in t.regions.as_array().into_iter().flatten() {
            if let Some(region) = entry.get("region").and_then(Value::as_str) {
                regions.insert(region.to_owned());
            }
            if let Some(kind) = entry.get("error_kind").and_then(Value::as_str) {
                error_kinds.insert(kind.to_owned());
            }
        }
    }
    let still_flapping = spans.iter().any(|s| s.left_at.is_none());
    let last_left = spans.iter().filter(|s| s.left_at.is_some()).max_by_key(|s| s.left_at);
    DomainDigest {
        domain_id,
        url: facts.url.clone().unwrap_or_else(|| domain_id.to_string()),
        deleted: facts.url.is_none(),
        transition_count: transitions.len(),
        down_seconds: (down_ms + 500) / 1000,
        regions: regions.into_iter().collect(),
        error_kinds: error_kinds.into_iter().collect(),
        first_transition_at: transitions.first().map(|t| t.at),
        last_transition_at: transitions.last().map(|t| t.at),
        current_state: facts.current_state.clone().or(stopped_now).unwrap_or_else(|| state_at_end.clone()),
        state_at_start,
        state_at_end,
        still_flapping,
        flap_entered_at: spans.iter().map(|s| s.entered_at).min().expect("at least one span"),
        flap_left_at: if still_flapping { None } else { last_left.and_then(|s| s.left_at) },
        settled: if still_flapping { None } else { last_left.and_then(|s| s.settled.clone()) },
        timeline: timeline(&down, start, end, until),
        transitions: transitions
            .iter()
            .map(|t| DigestTransition {
                at: t.at,
                from: t.from_state.clone(),
                to: t.to_state.clone(),
                regions: t.regions.clone(),
                incident_id: t.incident_id,
                notified: t.notified,
            })
            .collect(),
    }
}

/// The intervals in `[start, until)` during which the state was `down`, starting in `initial`
/// and changing at each of `changes` (time and new state, sorted by time).
pub fn down_intervals(
    initial: &str,
    changes: &[(DateTime<Utc>, &str)],
    start: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    intervals_in("down", initial, changes, start, until)
}

/// The intervals in `[start, until)` during which the state was `wanted`, starting in `initial`
/// and changing at each of `changes` (time and new state, sorted by time). Changes before
/// `start` count as made at `start`, after `until` as made at `until`.
pub fn intervals_in(
    wanted: &str,
    initial: &str,
    changes: &[(DateTime<Utc>, &str)],
    start: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut intervals = Vec::new();
    let mut state = initial;
    let mut since = start;
    for (at, to) in changes {
        let at = (*at).clamp(start, until);
        if state == wanted && at > since {
            intervals.push((since, at));
        }
        state = to;
        since = at;
    }
    if state == wanted && until > since {
        intervals.push((since, until));
    }
    intervals
}

/// [`SLOTS`] characters: a slot is down when down for more than half of the part of it that has
/// happened; slots that had not begun at `until` are [`SLOT_FUTURE`].
pub fn timeline(
    down: &[(DateTime<Utc>, DateTime<Utc>)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    until: DateTime<Utc>,
) -> String {
    let period_ms = (end - start).num_milliseconds();
    (0..SLOTS)
        .map(|i| {
            let from = start + Duration::milliseconds(period_ms * i as i64 / SLOTS as i64);
            let to = start + Duration::milliseconds(period_ms * (i as i64 + 1) / SLOTS as i64);
            if from >= until {
                return SLOT_FUTURE;
            }
            let to = to.min(until);
            let down_ms: i64 =
                down.iter().map(|(a, b)| ((*b).min(to) - (*a).max(from)).num_milliseconds().max(0)).sum();
            if 2 * down_ms > (to - from).num_milliseconds() {
                SLOT_DOWN
            } else {
                SLOT_UP
            }
        })
        .collect()
}

/// "Flap digest 10:00–11:00 UTC: 3 domains flapped, 41 state changes" (with dates when the
/// period is not within one day).
pub fn summary(start: DateTime<Utc>, end: DateTime<Utc>, domains: usize, transitions: usize) -> String {
    format!(
        "Flap digest {} UTC: {domains} {} flapped, {transitions} state {}",
        period_label(start, end),
        if domains == 1 { "domain" } else { "domains" },
        if transitions == 1 { "change" } else { "changes" },
    )
}

/// `10:00–11:00`, `10:00:30–10:01:00`, or `2026-03-14 00:00–2026-03-15 00:00`.
pub fn period_label(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let seconds = start.timestamp() % 60 != 0 || end.timestamp() % 60 != 0;
    let time = if seconds { "%H:%M:%S" } else { "%H:%M" };
    let last = end - Duration::milliseconds(1);
    if end - start < Duration::days(1) && last.date_naive() == start.date_naive() {
        format!("{}–{}", start.format(time), end.format(time))
    } else {
        let with_date = format!("%Y-%m-%d {time}");
        format!("{}–{}", start.format(&with_date), end.format(&with_date))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    pub fn tr(domain_id: Uuid, when: &str, from: &str, to: &str, regions: &[&str]) -> TransitionRow {
        let (error, status) =
            if to == "down" { (json!("connect"), Value::Null) } else { (Value::Null, json!(200)) };
        TransitionRow {
            domain_id,
            at: at(when),
            from_state: from.into(),
            to_state: to.into(),
            regions: Value::Array(
                regions
                    .iter()
                    .map(|r| json!({"region": r, "error_kind": error, "status_code": status, "observed_at": when}))
                    .collect(),
            ),
            incident_id: None,
            notified: false,
        }
    }

    pub fn span(domain_id: Uuid, entered: &str, left: Option<&str>) -> FlapSpan {
        FlapSpan {
            domain_id,
            entered_at: at(entered),
            entered_score: 6,
            left_at: left.map(at),
            settled: left.map(|_| "up".to_owned()),
            resumed_at: None,
        }
    }

    fn facts(url: &str, before: Option<&str>, current: &str) -> DomainFacts {
        DomainFacts {
            url: Some(url.into()),
            state_before: before.map(str::to_owned),
            current_state: Some(current.into()),
        }
    }

    fn input<'a>(
        flaps: &'a [FlapSpan],
        transitions: &'a [TransitionRow],
        facts: &'a HashMap<Uuid, DomainFacts>,
        now: &str,
    ) -> Input<'a> {
        Input {
            tenant_id: Uuid::nil(),
            start: at("2026-03-14T10:00:00Z"),
            end: at("2026-03-14T11:00:00Z"),
            now: at(now),
            flaps,
            transitions,
            facts,
        }
    }

    #[test]
    fn nothing_for_a_tenant_without_a_flap_period_in_the_period() {
        let d = Uuid::new_v4();
        let facts = HashMap::new();
        let transitions = [tr(d, "2026-03-14T10:10:00Z", "up", "down", &["ams"])];
        // No span at all, one that ended before, one that starts at the end: nothing.
        for flaps in [
            vec![],
            vec![span(d, "2026-03-14T08:00:00Z", Some("2026-03-14T09:59:59Z"))],
            vec![span(d, "2026-03-14T11:00:00Z", None)],
        ] {
            assert!(build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).is_none());
        }
        // One that left exactly at the start lies before the period: nothing either.
        let flaps = [span(d, "2026-03-14T08:00:00Z", Some("2026-03-14T10:00:00Z"))];
        assert!(build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).is_none());
        // One that left a moment after the start counts.
        let flaps = [span(d, "2026-03-14T08:00:00Z", Some("2026-03-14T10:00:00.001Z"))];
        assert!(build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).is_some());
    }

    #[test]
    fn down_time_starts_from_the_state_left_by_a_transition_before_the_period() {
        let d = Uuid::new_v4();
        // Down since 09:50 (before the period), up at 10:15, down at 10:30, up at 10:40.
        let transitions = [
            tr(d, "2026-03-14T10:15:00Z", "down", "up", &["ams", "iad"]),
            tr(d, "2026-03-14T10:30:00Z", "up", "down", &["iad", "sin"]),
            tr(d, "2026-03-14T10:40:00Z", "down", "up", &["sin"]),
        ];
        let facts = HashMap::from([(d, facts("https://a.example/", Some("down"), "up"))]);
        let flaps = [span(d, "2026-03-14T09:30:00Z", None)];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).unwrap();
        let dd = &digest.domains[0];
        assert_eq!(dd.down_seconds, 25 * 60);
        assert_eq!(dd.state_at_start, "down");
        assert_eq!(dd.state_at_end, "up");
        assert_eq!(dd.transition_count, 3);
        assert_eq!(dd.regions, ["ams", "iad", "sin"]);
        assert_eq!(dd.error_kinds, ["connect"]);
        assert_eq!(dd.first_transition_at, Some(at("2026-03-14T10:15:00Z")));
        assert_eq!(dd.last_transition_at, Some(at("2026-03-14T10:40:00Z")));
        assert!(dd.still_flapping);
        assert_eq!(dd.flap_entered_at, at("2026-03-14T09:30:00Z"));
        assert_eq!(
            dd.timeline,
            format!("{}{}{}{}", "#".repeat(15), ".".repeat(15), "#".repeat(10), ".".repeat(20))
        );
        assert_eq!(digest.summary, "Flap digest 10:00–11:00 UTC: 1 domain flapped, 3 state changes");
    }

    #[test]
    fn without_an_earlier_transition_the_first_from_state_is_the_state_at_the_start() {
        let d = Uuid::new_v4();
        let transitions = [
            tr(d, "2026-03-14T10:20:00Z", "down", "up", &["ams"]),
            tr(d, "2026-03-14T10:50:00Z", "up", "down", &["ams"]),
        ];
        let facts = HashMap::from([(d, facts("https://b.example/", None, "down"))]);
        let flaps = [span(d, "2026-03-14T10:05:00Z", None)];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T12:00:00Z")).unwrap();
        // 10:00–10:20 and 10:50–11:00: clipped at the end of the period, not at "now".
        assert_eq!(digest.domains[0].down_seconds, 30 * 60);
        assert_eq!(digest.domains[0].state_at_start, "down");
        // From unknown: not down until the first transition.
        let transitions = [tr(d, "2026-03-14T10:20:00Z", "unknown", "down", &["ams"])];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T12:00:00Z")).unwrap();
        assert_eq!(digest.domains[0].down_seconds, 40 * 60);
    }

    #[test]
    fn the_current_period_is_counted_up_to_now_and_later_slots_are_future() {
        let d = Uuid::new_v4();
        let transitions = [tr(d, "2026-03-14T10:10:00Z", "up", "down", &["ams"])];
        let facts = HashMap::from([(d, facts("https://c.example/", Some("up"), "down"))]);
        let flaps = [span(d, "2026-03-14T09:00:00Z", None)];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T10:30:00Z")).unwrap();
        let dd = &digest.domains[0];
        assert_eq!(dd.down_seconds, 20 * 60);
        assert_eq!(dd.timeline, format!("{}{}{}", ".".repeat(10), "#".repeat(20), "-".repeat(30)));
    }

    #[test]
    fn a_slot_is_down_only_when_down_for_most_of_it() {
        let start = at("2026-03-14T10:00:00Z");
        let end = at("2026-03-14T11:00:00Z");
        // Slot 0: 31 s down; slot 1: exactly 30 s; slot 2: 29 s in two pieces.
        let down = [
            (at("2026-03-14T10:00:00Z"), at("2026-03-14T10:00:31Z")),
            (at("2026-03-14T10:01:30Z"), at("2026-03-14T10:02:00Z")),
            (at("2026-03-14T10:02:00Z"), at("2026-03-14T10:02:10Z")),
            (at("2026-03-14T10:02:40Z"), at("2026-03-14T10:02:59Z")),
        ];
        let line = timeline(&down, start, end, end);
        assert_eq!(&line[..4], "#...");
        assert_eq!(line.len(), SLOTS);
    }

    #[test]
    fn a_deleted_domain_falls_back_to_its_id_and_domains_sort_by_activity() {
        let (quiet, busy) = (Uuid::new_v4(), Uuid::new_v4());
        let transitions = [
            tr(busy, "2026-03-14T10:01:00Z", "up", "down", &["ams"]),
            tr(busy, "2026-03-14T10:02:00Z", "down", "up", &["ams"]),
        ];
        let facts = HashMap::from([(quiet, facts("https://quiet.example/", Some("up"), "up"))]);
        let mut left = span(quiet, "2026-03-14T09:00:00Z", Some("2026-03-14T10:20:00Z"));
        left.settled = Some("up".into());
        let flaps = [left, span(busy, "2026-03-14T09:40:00Z", None)];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:01Z")).unwrap();
        assert_eq!(digest.domain_count, 2);
        assert_eq!(digest.transition_count, 2);
        assert_eq!(digest.domains[0].domain_id, busy);
        assert_eq!(digest.domains[0].url, busy.to_string());
        assert!(digest.domains[0].deleted);
        assert_eq!(digest.domains[0].current_state, "up", "from the last transition");
        let q = &digest.domains[1];
        assert_eq!(q.transition_count, 0);
        assert_eq!(q.down_seconds, 0);
        assert!(!q.still_flapping);
        assert_eq!(q.flap_left_at, Some(at("2026-03-14T10:20:00Z")));
        assert_eq!(q.settled.as_deref(), Some("up"));
        assert_eq!(q.timeline, ".".repeat(SLOTS));
        assert_eq!(digest.summary, "Flap digest 10:00–11:00 UTC: 2 domains flapped, 2 state changes");
    }

    #[test]
    fn a_domain_paused_or_deleted_while_down_is_not_down_after_monitoring_stopped() {
        let d = Uuid::new_v4();
        // Down at 10:10, paused at 10:20 (its domain_state is gone, so no current state).
        let transitions = [tr(d, "2026-03-14T10:10:00Z", "up", "down", &["ams"])];
        let facts = HashMap::from([(
            d,
            DomainFacts {
                url: Some("https://p.example/".into()),
                state_before: Some("up".into()),
                current_state: None,
            },
        )]);
        let mut paused = span(d, "2026-03-14T09:30:00Z", Some("2026-03-14T10:20:00Z"));
        paused.settled = Some("paused".into());
        let flaps = [paused.clone()];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).unwrap();
        let dd = &digest.domains[0];
        assert_eq!(dd.down_seconds, 10 * 60, "down 10:10–10:20 only");
        assert_eq!(dd.state_at_end, "paused");
        assert_eq!(dd.current_state, "paused");
        assert_eq!(dd.settled.as_deref(), Some("paused"));
        assert_eq!(dd.timeline, format!("{}{}{}", ".".repeat(10), "#".repeat(10), ".".repeat(40)));

        // Deleted the same way: no URL, no state.
        let mut deleted = paused.clone();
        deleted.settled = Some("deleted".into());
        let flaps = [deleted];
        let digest = build(&input(&flaps, &transitions, &HashMap::new(), "2026-03-14T11:00:05Z")).unwrap();
        let dd = &digest.domains[0];
        assert_eq!(dd.down_seconds, 10 * 60);
        assert_eq!((dd.state_at_end.as_str(), dd.current_state.as_str()), ("deleted", "deleted"));
        assert!(dd.deleted);

        // Resumed at 10:40 and down again: monitored, and down, from then on.
        let transitions = [
            tr(d, "2026-03-14T10:10:00Z", "up", "down", &["ams"]),
            tr(d, "2026-03-14T10:40:00Z", "unknown", "down", &["ams"]),
        ];
        let flaps = [paused.clone()];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).unwrap();
        let dd = &digest.domains[0];
        assert_eq!(dd.down_seconds, 30 * 60, "10:10–10:20 and 10:40–11:00");
        assert_eq!((dd.state_at_end.as_str(), dd.current_state.as_str()), ("down", "down"));

        // Resumed at 10:40 with no transition since (pausing keeps the state): down again from
        // the resume, as it was when paused, and no longer `paused` now.
        let transitions = [tr(d, "2026-03-14T10:10:00Z", "up", "down", &["ams"])];
        let mut resumed = paused.clone();
        resumed.resumed_at = Some(at("2026-03-14T10:40:00Z"));
        let flaps = [resumed];
        let facts_down = HashMap::from([(
            d,
            DomainFacts { current_state: Some("down".into()), ..facts.get(&d).unwrap().clone() },
        )]);
        let digest = build(&input(&flaps, &transitions, &facts_down, "2026-03-14T11:00:05Z")).unwrap();
        let dd = &digest.domains[0];
        assert_eq!(dd.down_seconds, 30 * 60, "10:10–10:20 and 10:40–11:00");
        assert_eq!((dd.state_at_end.as_str(), dd.current_state.as_str()), ("down", "down"));
        assert_eq!(
            dd.timeline,
            format!("{}{}{}{}", ".".repeat(10), "#".repeat(10), ".".repeat(20), "#".repeat(20))
        );
        // A resume after the period does not reach into it.
        let mut later = paused.clone();
        later.resumed_at = Some(at("2026-03-14T11:30:00Z"));
        let flaps = [later];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).unwrap();
        assert_eq!(digest.domains[0].down_seconds, 10 * 60);
        assert_eq!(digest.domains[0].current_state, "paused");

        // A pause at the same instant as a transition wins.
        let transitions = [tr(d, "2026-03-14T10:20:00Z", "up", "down", &["ams"])];
        let flaps = [paused];
        let digest = build(&input(&flaps, &transitions, &facts, "2026-03-14T11:00:05Z")).unwrap();
        assert_eq!(digest.domains[0].down_seconds, 0);
        assert_eq!(digest.domains[0].current_state, "paused");
    }

    #[test]
    fn period_labels_carry_dates_or_seconds_when_needed() {
        assert_eq!(period_label(at("2026-03-14T23:00:00Z"), at("2026-03-15T00:00:00Z")), "23:00–00:00");
        assert_eq!(
            period_label(at("2026-03-14T00:00:00Z"), at("2026-03-15T00:00:00Z")),
            "2026-03-14 00:00–2026-03-15 00:00"
        );
        assert_eq!(period_label(at("2026-03-14T10:00:30Z"), at("2026-03-14T10:01:00Z")), "10:00:30–10:01:00");
    }
}
