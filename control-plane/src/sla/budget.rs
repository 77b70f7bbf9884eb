//! The error budget of one domain and period, pure: from the period's consensus uptime
//! ([`crate::uptime::compute`]) and the SLO's target.
//!
//! - The period's **scope** is the time that counts toward it: the time monitored so far (up or
//!   down, not paused, decided) plus the time still to come in the period. At the period's end
//!   nothing is to come and the scope is the monitored time.
//! - The **allowed downtime** (the whole budget) is `(100 − target) %` of the scope.
//! - The **budget used** is the down time so far; the **budget left** is the allowed downtime
//!   minus it, negative once overspent; the fractions are of the allowed downtime.
//! - The period is **breached** once the down time exceeds the allowed downtime: even if the
//!   domain stays up for the rest of the period, its uptime will end below the target. At the
//!   period's end this is exactly "uptime below the target".
//!
//! Counting the time still to come is what makes a breach final and the budget a plan: a
//! domain down 10 minutes on the 1st of a month at 99.9 % has used 10 minutes of a 43-minute
//! budget, not missed its target.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::slo::Slo;
use crate::uptime::ConsensusUptime;

/// The notices an SLO sends, each at most once per domain and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The budget left fell to the SLO's `budget_alert_fraction` of the whole budget.
    BudgetLow,
    /// The period's down time exceeds its allowed downtime.
    Breach,
}

impl Notice {
    /// The notification kind.
    pub fn kind(self) -> &'static str {
        match self {
            Notice::BudgetLow => super::BUDGET_LOW_KIND,
            Notice::Breach => super::BREACH_KIND,
        }
    }
}

/// A domain's SLO figures for one period, as of a moment. Seconds are `f64` with millisecond
/// precision; fractions are of the allowed downtime, `None` when it is zero.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = SloBudget)]
pub struct Budget {
    /// The SLO's target in percent.
    pub target: f64,
    /// Not serialized: each answer shows the period in the tenant's zone.
    #[serde(skip)]
    pub period_start: DateTime<Utc>,
    #[serde(skip)]
    pub period_end: DateTime<Utc>,
    /// The moment the figures are for: now, or the period's end once it is over.
    pub as_of: DateTime<Utc>,
    /// Seconds monitored (decided, not paused) in `[period_start, as_of)`.
    pub monitored_s: f64,
    pub up_s: f64,
    pub down_s: f64,
    pub paused_s: f64,
    /// `up_s / monitored_s × 100`; `None` when nothing was monitored.
    pub uptime_percent: Option<f64>,
    /// Seconds of the period still to come after `as_of`.
    pub remaining_s: f64,
    /// The whole budget: `(100 − target) % × (monitored_s + remaining_s)`.
    pub allowed_downtime_s: f64,
    /// `down_s`.
    pub budget_used_s: f64,
    /// `allowed_downtime_s − budget_used_s`; negative once overspent.
    pub budget_left_s: f64,
    pub budget_used_fraction: Option<f64>,
    /// Negative once overspent.
    pub budget_left_fraction: Option<f64>,
    /// `down_s > allowed_downtime_s`.
    pub breached: bool,
}

fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

impl Budget {
    /// The figures of `[start, end)` as of `now` (clamped into the period) from the period's
    /// consensus uptime up to that moment.
    pub fn compute(
        slo: &Slo,
        uptime: &ConsensusUptime,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Budget {
        let as_of = now.clamp(start, end);
        let remaining_s = (end - as_of).num_milliseconds() as f64 / 1000.0;
        let allowed = millis((100.0 - slo.target) / 100.0 * (uptime.monitored_s + remaining_s));
        let used = millis(uptime.down_s);
        let fraction = |s: f64| (allowed > 0.0).then(|| s / allowed);
        Budget {
            target: slo.target,
            period_start: start,
            period_end: end,
            as_of,
            monitored_s: millis(uptime.monitored_s),
            up_s: millis(uptime.up_s),
            down_s: used,
            paused_s: millis(uptime.paused_s),
            uptime_percent: uptime.uptime_percent,
            remaining_s,
            allowed_downtime_s: allowed,
            budget_used_s: used,
            budget_left_s: millis(allowed - used),
            budget_used_fraction: fraction(used),
            budget_left_fraction: fraction(allowed - used),
            breached: used > allowed,
        }
    }

    /// The notices whose condition holds now, in the order they are sent (a low budget before
    /// the breach that follows it). Whether one was already sent this period is the caller's.
    pub fn notices(&self, slo: &Slo) -> Vec<Notice> {
        let mut due = Vec::new();
        let low = self.budget_used_s > 0.0
            && self.budget_left_fraction.is_some_and(|left| left <= slo.budget_alert_fraction);
        if low || self.breached {
            due.push(Notice::BudgetLow);
        }
        if self.breached {
            due.push(Notice::Breach);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::period::{parse_time_zone, Month};
    use crate::sla::slo::SloPeriod;
    use crate::uptime::compute;
    use chrono::Duration;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    fn slo(target: f64) -> Slo {
        Slo { target, period: SloPeriod::Month, budget_alert_fraction: 0.25 }
    }

    /// One row of the table: a period in a zone, the domain's history, the moment asked about
    /// and the figures expected.
    struct Case {
        name: &'static str,
        zone: &'static str,
        month: &'static str,
        target: f64,
        initial: &'static str,
        changes: &'static [(&'static str, &'static str)],
        pauses: &'static [(&'static str, Option<&'static str>)],
        now: &'static str,
        monitored_s: f64,
        down_s: f64,
        allowed_downtime_s: f64,
        breached: bool,
        notices: &'static [Notice],
    }

    const MIN: f64 = 60.0;
    const HOUR: f64 = 3600.0;
    const DAY: f64 = 24.0 * HOUR;

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "a 30-day month up all along: 43.2 minutes allowed at 99.9 %, none used",
                zone: "UTC",
                month: "2026-11",
                target: 99.9,
                initial: "up",
                changes: &[],
                pauses: &[],
                now: "2026-12-05T00:00:00Z",
                monitored_s: 30.0 * DAY,
                down_s: 0.0,
                allowed_downtime_s: 43.2 * MIN,
                breached: false,
                notices: &[],
            },
            Case {
                name: "one 30-minute incident: budget used 30 of 43.2 minutes, 30 % left, not low yet",
                zone: "UTC",
                month: "2026-11",
                target: 99.9,
                initial: "up",
                changes: &[("2026-11-10T12:00:00Z", "down"), ("2026-11-10T12:30:00Z", "up")],
                pauses: &[],
                now: "2026-12-01T00:00:00Z",
                monitored_s: 30.0 * DAY,
                down_s: 30.0 * MIN,
                allowed_downtime_s: 43.2 * MIN,
                breached: false,
                notices: &[],
            },
            Case {
                name: "a second one of 5 minutes: 8.2 minutes left, below a quarter",
                zone: "UTC",
                month: "2026-11",
                target: 99.9,
                initial: "up",
                changes: &[
                    ("2026-11-10T12:00:00Z", "down"),
                    ("2026-11-10T12:30:00Z", "up"),
                    ("2026-11-20T08:00:00Z", "down"),
                    ("2026-11-20T08:05:00Z", "up"),
                ],
                pauses: &[],
                now: "2026-12-01T00:00:00Z",
                monitored_s: 30.0 * DAY,
                down_s: 35.0 * MIN,
                allowed_downtime_s: 43.2 * MIN,
                breached: false,
                notices: &[Notice::BudgetLow],
            },
            Case {
                name: "mid-month, the time to come counts: 10 minutes down on day 2 is not a breach",
                zone: "UTC",
                month: "2026-11",
                target: 99.9,
                initial: "up",
                changes: &[("2026-11-02T00:00:00Z", "down"), ("2026-11-02T00:10:00Z", "up")],
                pauses: &[],
                now: "2026-11-03T00:00:00Z",
                monitored_s: 2.0 * DAY,
                down_s: 10.0 * MIN,
                allowed_downtime_s: 43.2 * MIN,
                breached: false,
                notices: &[],
            },
            Case {
                name: "an incident spanning two months counts in each only for its own part",
                zone: "UTC",
                month: "2026-11",
                target: 99.0,
                initial: "up",
                // Down from 30 November 20:00 to 1 December 06:00: 4 h in November.
                changes: &[("2026-11-30T20:00:00Z", "down"), ("2026-12-01T06:00:00Z", "up")],
                pauses: &[],
                now: "2026-12-10T00:00:00Z",
                monitored_s: 30.0 * DAY,
                down_s: 4.0 * HOUR,
                allowed_downtime_s: 7.2 * HOUR,
                breached: false,
                notices: &[],
            },
            Case {
                name: "the same incident's December part, with the month's start inside it",
                zone: "UTC",
                month: "2026-12",
                target: 99.0,
                initial: "down",
                changes: &[("2026-12-01T06:00:00Z", "up")],
                pauses: &[],
                now: "2027-01-01T00:00:00Z",
                monitored_s: 31.0 * DAY,
                down_s: 6.0 * HOUR,
                allowed_downtime_s: 7.44 * HOUR,
                breached: false,
                // 1.44 h of 7.44 h left: below a quarter.
                notices: &[Notice::BudgetLow],
            },
            Case {
                name: "a pause is neither up nor down and shrinks the scope",
                zone: "UTC",
                month: "2026-11",
                target: 99.9,
                initial: "up",
                // Down 1 h, of which 20 min were paused; paused 10 days in all.
                changes: &[("2026-11-05T00:00:00Z", "down"), ("2026-11-05T01:00:00Z", "up")],
                pauses: &[("2026-11-05T00:40:00Z", Some("2026-11-15T00:40:00Z"))],
                now: "2026-12-01T00:00:00Z",
                monitored_s: 20.0 * DAY,
                down_s: 40.0 * MIN,
                allowed_downtime_s: 28.8 * MIN,
                breached: true,
                notices: &[Notice::BudgetLow, Notice::Breach],
            },
            Case {
                name: "Berlin's March is one hour short and starts at 23:00 UTC the day before",
                zone: "Europe/Berlin",
                month: "2026-03",
                target: 99.9,
                initial: "up",
                // 28 February 23:30 UTC is 1 March 00:30 in Berlin: inside the month.
                changes: &[("2026-02-28T23:30:00Z", "down"), ("2026-02-28T23:50:00Z", "up")],
                pauses: &[],
                now: "2026-04-15T00:00:00Z",
                monitored_s: 743.0 * HOUR,
                down_s: 20.0 * MIN,
                allowed_downtime_s: 44.58 * MIN,
                breached: false,
                notices: &[],
            },
            Case {
                name:
                    "an outage from 23:15 to 01:00 Berlin time: its 60 minutes in Berlin's March are a breach",
                zone: "Europe/Berlin",
                month: "2026-03",
                target: 99.9,
                initial: "up",
                // Ends at 01:00 Berlin on 1 March, starts in February (Berlin) at 23:15 local.
                changes: &[("2026-02-28T22:15:00Z", "down"), ("2026-03-01T00:00:00Z", "up")],
                pauses: &[],
                now: "2026-04-01T00:00:00Z",
                monitored_s: 743.0 * HOUR,
                down_s: 60.0 * MIN,
                allowed_downtime_s: 44.58 * MIN,
                breached: true,
                notices: &[Notice::BudgetLow, Notice::Breach],
            },
            Case {
                name: "the same history in UTC's March: none of it, it ended as that March began",
                zone: "UTC",
                month: "2026-03",
                target: 99.9,
                initial: "up",
                changes: &[("2026-02-28T22:15:00Z", "down"), ("2026-03-01T00:00:00Z", "up")],
                pauses: &[],
                now: "2026-04-01T00:00:00Z",
                monitored_s: 744.0 * HOUR,
                down_s: 0.0,
                allowed_downtime_s: 44.64 * MIN,
                breached: false,
                notices: &[],
            },
            Case {
                name: "before the first decision nothing is monitored; the time to come still counts",
                zone: "UTC",
                month: "2026-11",
                target: 99.9,
                initial: "unknown",
                changes: &[("2026-11-16T00:00:00Z", "up")],
                pauses: &[],
                now: "2026-11-16T00:00:00Z",
                monitored_s: 0.0,
                down_s: 0.0,
                allowed_downtime_s: 21.6 * MIN,
                breached: false,
                notices: &[],
            },
        ]
    }

    #[test]
    fn budgets_of_known_histories() {
        for case in cases() {
            let tz = parse_time_zone(case.zone).unwrap();
            let month = Month::parse(case.month, tz).unwrap();
            let (start, end, now) = (month.start(), month.end(), at(case.now));
            let changes: Vec<(DateTime<Utc>, &str)> = case.changes.iter().map(|(t, s)| (at(t), *s)).collect();
            let pauses: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> =
                case.pauses.iter().map(|(a, b)| (at(a), b.map(at))).collect();
            // What the store does: the state at the start, the changes inside the period.
            let initial = changes.iter().rev().find(|(t, _)| *t < start).map_or(case.initial, |(_, s)| *s);
            let inside: Vec<_> = changes.iter().copied().filter(|(t, _)| *t >= start && *t < end).collect();
            let uptime = compute(initial, &inside, &pauses, start, now.clamp(start, end));
            let slo = slo(case.target);
            let budget = Budget::compute(&slo, &uptime, start, end, now);
            let name = case.name;
            assert_eq!(budget.monitored_s, case.monitored_s, "{name}: monitored");
            assert_eq!(budget.down_s, case.down_s, "{name}: down");
            assert!(
                (budget.allowed_downtime_s - case.allowed_downtime_s).abs() < 0.01,
                "{name}: allowed {budget:?}"
            );
            assert_eq!(budget.breached, case.breached, "{name}: breached");
            assert_eq!(budget.notices(&slo), case.notices, "{name}: notices");
            assert_eq!(
                budget.budget_left_s,
                ((budget.allowed_downtime_s - budget.down_s) * 1000.0).round() / 1000.0
            );
            if let Some(left) = budget.budget_left_fraction {
                let used = budget.budget_used_fraction.unwrap();
                assert!((left + used - 1.0).abs() < 1e-9, "{name}");
            }
        }
    }

    #[test]
    fn at_the_end_a_breach_is_exactly_uptime_below_the_target() {
        let start = at("2026-11-01T00:00:00Z");
        let end = at("2026-12-01T00:00:00Z");
        for down_minutes in [0, 43, 44, 120] {
            let down_at = at("2026-11-10T00:00:00Z");
            let changes = [(down_at, "down"), (down_at + Duration::minutes(down_minutes), "up")];
            let uptime = compute("up", &changes, &[], start, end);
            let budget = Budget::compute(&slo(99.9), &uptime, start, end, end + Duration::days(3));
            assert_eq!(budget.remaining_s, 0.0);
            assert_eq!(budget.as_of, end);
            assert_eq!(budget.breached, uptime.uptime_percent.unwrap() < 99.9, "{down_minutes} min");
        }
    }

    #[test]
    fn nothing_to_budget_gives_no_fractions() {
        let start = at("2026-11-01T00:00:00Z");
        let end = at("2026-12-01T00:00:00Z");
        let uptime = compute("unknown", &[], &[], start, end);
        let budget = Budget::compute(&slo(99.9), &uptime, start, end, end);
        assert_eq!(
            (budget.allowed_downtime_s, budget.budget_left_fraction, budget.breached),
            (0.0, None, false)
        );
        assert_eq!(budget.uptime_percent, None);
        assert!(budget.notices(&slo(99.9)).is_empty());
    }
}
