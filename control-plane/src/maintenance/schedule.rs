//! When a maintenance window happens, pure: a one-off interval, or a recurrence (an RFC 5545
//! `RRULE` expanded by the `rrule` crate from a local `DTSTART` in an IANA time zone) with a
//! duration; [`occurrences`] lists the intervals that overlap a span of time.
//!
//! Local times follow RFC 5545 §3.3.5: a start that falls in a daylight-saving gap is read with
//! the offset before the gap (02:30 on the day Berlin springs forward is 01:30 UTC, shown as
//! 03:30 CEST), and one that occurs twice is the first of the two (02:30 on the day Berlin falls
//! back is 00:30 UTC). A duration's days are nominal (RFC 5545 §3.3.6: `P1D` ends at the same
//! local time the next day, 23 or 25 hours across a change), its hours, minutes and seconds
//! exact.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Longest window (one-off, or one occurrence of a recurring one).
pub const MAX_WINDOW: Duration = Duration::days(31);
/// Most occurrences one expansion returns.
pub const MAX_OCCURRENCES: u16 = 1000;

/// A window's length: nominal days, then exact seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDuration {
    pub days: u32,
    pub seconds: u32,
}

impl WindowDuration {
    /// Parses an ISO 8601 duration of weeks, days, hours, minutes and seconds (`PT2H`, `P1DT30M`,
    /// `P1W`) or a whole number of seconds as a string or number. Years and months are refused
    /// (their length depends on the calendar), and so is a zero or over-long duration.
    pub fn parse(value: &serde_json::Value) -> Result<Self, String> {
        const SHAPE: &str =
            "must be an ISO 8601 duration such as \"PT2H\" or \"P1DT30M\", or a number of seconds";
        let duration = match value {
            serde_json::Value::Number(n) => {
                let seconds = n.as_u64().and_then(|s| u32::try_from(s).ok()).ok_or(SHAPE)?;
                WindowDuration { days: 0, seconds }
            }
            serde_json::Value::String(s) => {
                let s = s.trim();
                // The parser ignores trailing text: only the ISO 8601 alphabet, ending in a unit.
                let alphabet = s.chars().all(|c| c.is_ascii_digit() || "PTYWDHMS".contains(c));
                if !s.starts_with('P') || !alphabet || !s.ends_with(['Y', 'W', 'D', 'H', 'M', 'S']) {
                    return Err(SHAPE.into());
                }
                match iso8601::duration(s).map_err(|_| SHAPE.to_owned())? {
                    iso8601::Duration::Weeks(w) => WindowDuration { days: w.saturating_mul(7), seconds: 0 },
                    iso8601::Duration::YMDHMS { year, month, .. } if year > 0 || month > 0 => {
                        return Err("years and months are not allowed: use weeks, days, hours, minutes".into())
                    }
                    iso8601::Duration::YMDHMS { day, hour, minute, second, millisecond, .. } => {
                        if millisecond > 0 {
                            return Err("must be whole seconds".into());
                        }
                        let seconds = u64::from(hour) * 3600 + u64::from(minute) * 60 + u64::from(second);
                        WindowDuration { days: day, seconds: u32::try_from(seconds).map_err(|_| SHAPE)? }
                    }
                }
            }
            _ => return Err(SHAPE.into()),
        };
        let nominal =
            Duration::days(i64::from(duration.days)) + Duration::seconds(i64::from(duration.seconds));
        if nominal <= Duration::zero() {
            return Err("must be longer than zero".into());
        }
        if nominal > MAX_WINDOW {
            return Err(format!("must be at most {} days", MAX_WINDOW.num_days()));
        }
        Ok(duration)
    }

    /// The ISO 8601 form (`P1DT2H30M`; `PT0S` never, as zero is refused).
    pub fn iso(&self) -> String {
        let mut out = String::from("P");
        if self.days > 0 {
            out.push_str(&format!("{}D", self.days));
        }
        let (h, m, s) = (self.seconds / 3600, self.seconds / 60 % 60, self.seconds % 60);
        if self.seconds > 0 {
            out.push('T');
            for (n, unit) in [(h, 'H'), (m, 'M'), (s, 'S')] {
                if n > 0 {
                    out.push_str(&format!("{n}{unit}"));
                }
            }
        }
        out
    }

    /// When a window starting at `start` ends: the days added to the local date and time in
    /// `tz` (resolved as RFC 5545 resolves local times), then the exact seconds.
    pub fn end_from(&self, start: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = start.with_timezone(&tz).naive_local() + Duration::days(i64::from(self.days));
        resolve_local(local, tz) + Duration::seconds(i64::from(self.seconds))
    }
}

/// A local date and time in `tz` as an instant, by RFC 5545's rules: the first of two, or
/// with the offset before a gap.
pub fn resolve_local(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the offset in force just before it (gaps are at most a few hours).
            let before = (1..=48)
                .find_map(|h| tz.from_local_datetime(&(local - Duration::hours(h))).earliest())
                .map(|t| t.offset().fix())
                .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
            (local - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

/// When a window happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// One interval, `starts_at` < `ends_at`.
    Once { starts_at: DateTime<Utc>, ends_at: DateTime<Utc> },
    /// Occurrences of `rrule` (the `RRULE` value, e.g. `FREQ=WEEKLY;BYDAY=SU`) from the local
    /// `dtstart`, each lasting `duration`.
    Recurring { dtstart: NaiveDateTime, duration: WindowDuration, rrule: String },
}

/// One interval of a window, `[starts_at, ends_at)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Occurrence {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Occurrence {
    /// Whether `at` falls inside.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }
}

/// The recurrence set of a recurring schedule in `tz`, or the crate's reason it is not one.
pub fn rule_set(dtstart: NaiveDateTime, rrule: &str, tz: Tz) -> Result<rrule::RRuleSet, String> {
    let text = format!("DTSTART;TZID={}:{}\nRRULE:{rrule}", tz.name(), dtstart.format("%Y%m%dT%H%M%S"));
    text.parse::<rrule::RRuleSet>().map_err(|e| e.to_string())
}

/// The occurrences of `schedule` (in time zone `tz`) that overlap `[from, to)`, in order, at
/// most [`MAX_OCCURRENCES`]. A recurring schedule whose rule does not parse has none (rules are
/// checked when a window is written).
pub fn occurrences(schedule: &Schedule, tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Occurrence> {
    match schedule {
        Schedule::Once { starts_at, ends_at } => {
            let once = Occurrence { starts_at: *starts_at, ends_at: *ends_at };
            if once.ends_at > from && once.starts_at < to {
                vec![once]
            } else {
                Vec::new()
            }
        }
        Schedule::Recurring { dtstart, duration, rrule } => {
            let Ok(set) = rule_set(*dtstart, rrule, tz) else { return Vec::new() };
            // An occurrence that started up to one window length before `from` may still last.
            let rtz = rrule::Tz::Tz(tz);
            let after = (from - MAX_WINDOW - Duration::days(1)).with_timezone(&rtz);
            let before = to.with_timezone(&rtz);
            let mut out = Vec::new();
            for start in set.after(after).before(before).all(MAX_OCCURRENCES).dates {
                let starts_at = start.with_timezone(&Utc);
                let occurrence = Occurrence { starts_at, ends_at: duration.end_from(starts_at, tz) };
                if occurrence.ends_at > from && occurrence.starts_at < to {
                    out.push(occurrence);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    fn weekly(dtstart: &str, duration: &str) -> Schedule {
        Schedule::Recurring {
            dtstart: local(dtstart),
            duration: WindowDuration::parse(&json!(duration)).unwrap(),
            rrule: "FREQ=WEEKLY".into(),
        }
    }

    fn pairs(found: &[Occurrence]) -> Vec<(String, String)> {
        found.iter().map(|o| (o.starts_at.to_rfc3339(), o.ends_at.to_rfc3339())).collect()
    }

    #[test]
    fn weekly_0230_berlin_across_the_march_change() {
        // Sundays at 02:30 for two hours; on 2026-03-29 clocks jump from 02:00 to 03:00 CEST.
        let found = occurrences(
            &weekly("2026-03-15T02:30:00", "PT2H"),
            chrono_tz::Europe::Berlin,
            utc("2026-03-14T00:00:00Z"),
            utc("2026-04-06T00:00:00Z"),
        );
        assert_eq!(
            pairs(&found),
            [
                ("2026-03-15T01:30:00+00:00", "2026-03-15T03:30:00+00:00"), // CET
                ("2026-03-22T01:30:00+00:00", "2026-03-22T03:30:00+00:00"),
                // 02:30 does not exist: read with the offset before the gap (CET), two hours long.
                ("2026-03-29T01:30:00+00:00", "2026-03-29T03:30:00+00:00"),
                ("2026-04-05T00:30:00+00:00", "2026-04-05T02:30:00+00:00"), // CEST
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        for o in &found {
            assert_eq!(o.ends_at - o.starts_at, Duration::hours(2), "hours are exact");
        }
    }

    #[test]
    fn weekly_0230_berlin_across_the_october_change() {
        // On 2026-10-25 clocks fall back from 03:00 CEST to 02:00 CET: 02:30 happens twice.
        let found = occurrences(
            &weekly("2026-10-11T02:30:00", "PT1H"),
            chrono_tz::Europe::Berlin,
            utc("2026-10-17T00:00:00Z"),
            utc("2026-11-02T00:00:00Z"),
        );
        assert_eq!(
            pairs(&found),
            [
                ("2026-10-18T00:30:00+00:00", "2026-10-18T01:30:00+00:00"), // CEST
                ("2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00"), // the first 02:30 (CEST)
                ("2026-11-01T01:30:00+00:00", "2026-11-01T02:30:00+00:00"), // CET
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn days_are_nominal_across_a_change() {
        // A one-day window from Saturday 12:00 CET ends Sunday 12:00 CEST: 23 hours.
        let start = utc("2026-03-28T11:00:00Z");
        let day = WindowDuration { days: 1, seconds: 0 };
        assert_eq!(day.end_from(start, chrono_tz::Europe::Berlin), utc("2026-03-29T10:00:00Z"));
        // Across the October change: 25 hours.
        let start = utc("2026-10-24T10:00:00Z");
        assert_eq!(day.end_from(start, chrono_tz::Europe::Berlin), utc("2026-10-25T11:00:00Z"));
        // 24 hours exactly is PT24H.
        let hours = WindowDuration { days: 0, seconds: 86_400 };
        assert_eq!(hours.end_from(start, chrono_tz::Europe::Berlin), utc("2026-10-25T10:00:00Z"));
    }

    #[test]
    fn an_occurrence_under_way_at_the_span_start_is_listed() {
        let found = occurrences(
            &Schedule::Recurring {
                dtstart: local("2026-01-01T22:00:00"),
                duration: WindowDuration { days: 0, seconds: 4 * 3600 },
                rrule: "FREQ=DAILY".into(),
            },
            chrono_tz::UTC,
            utc("2026-01-05T01:00:00Z"),
            utc("2026-01-05T02:00:00Z"),
        );
        assert_eq!(
            pairs(&found),
            [("2026-01-04T22:00:00+00:00".to_owned(), "2026-01-05T02:00:00+00:00".to_owned())]
        );
        assert!(found[0].covers(utc("2026-01-05T01:59:59Z")));
        assert!(!found[0].covers(utc("2026-01-05T02:00:00Z")), "the end is excluded");
    }

    #[test]
    fn count_and_until_bound_the_rule() {
        let schedule = Schedule::Recurring {
            dtstart: local("2026-01-01T03:00:00"),
            duration: WindowDuration { days: 0, seconds: 600 },
            rrule: "FREQ=MONTHLY;BYMONTHDAY=1;COUNT=3".into(),
        };
        let found =
            occurrences(&schedule, chrono_tz::UTC, utc("2025-01-01T00:00:00Z"), utc("2030-01-01T00:00:00Z"));
        assert_eq!(found.len(), 3);
        assert_eq!(found[2].starts_at, utc("2026-03-01T03:00:00Z"));
    }

    #[test]
    fn one_off_overlap() {
        let once =
            Schedule::Once { starts_at: utc("2026-05-01T10:00:00Z"), ends_at: utc("2026-05-01T12:00:00Z") };
        for (from, to, n) in [
            ("2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", 1),
            ("2026-05-01T11:00:00Z", "2026-05-01T11:30:00Z", 1),
            ("2026-05-01T12:00:00Z", "2026-05-02T00:00:00Z", 0),
            ("2026-05-01T00:00:00Z", "2026-05-01T10:00:00Z", 0),
        ] {
            assert_eq!(occurrences(&once, chrono_tz::UTC, utc(from), utc(to)).len(), n, "{from} {to}");
        }
    }

    #[test]
    fn durations() {
        for (input, want) in [
            (json!("PT2H"), Ok((0, 7200, "PT2H"))),
            (json!("PT90M"), Ok((0, 5400, "PT1H30M"))),
            (json!("P1DT30M"), Ok((1, 1800, "P1DT30M"))),
            (json!("P1W"), Ok((7, 0, "P7D"))),
            (json!(3600), Ok((0, 3600, "PT1H"))),
            (json!("PT45S"), Ok((0, 45, "PT45S"))),
            (json!("PT0S"), Err("must be longer than zero")),
            (json!(0), Err("must be longer than zero")),
            (json!("P32D"), Err("must be at most 31 days")),
            (json!("P1M"), Err("years and months are not allowed: use weeks, days, hours, minutes")),
            (
                json!("2 hours"),
                Err("must be an ISO 8601 duration such as \"PT2H\" or \"P1DT30M\", or a number of seconds"),
            ),
            (
                json!("PT2Hx"),
                Err("must be an ISO 8601 duration such as \"PT2H\" or \"P1DT30M\", or a number of seconds"),
            ),
            (
                json!(-5),
                Err("must be an ISO 8601 duration such as \"PT2H\" or \"P1DT30M\", or a number of seconds"),
            ),
            (
                json!(true),
                Err("must be an ISO 8601 duration such as \"PT2H\" or \"P1DT30M\", or a number of seconds"),
            ),
        ] {
            let got = WindowDuration::parse(&input).map(|d| (d.days, d.seconds, d.iso()));
            assert_eq!(got, want.map(|(d, s, iso)| (d, s, iso.to_owned())).map_err(str::to_owned), "{input}");
        }
    }

    #[test]
    fn local_times_resolve_as_rfc_5545_says() {
        let berlin = chrono_tz::Europe::Berlin;
        for (local_time, want) in [
            ("2026-03-29T02:30:00", "2026-03-29T01:30:00Z"), // gap: the offset before (+01:00)
            ("2026-10-25T02:30:00", "2026-10-25T00:30:00Z"), // twice: the first (+02:00)
            ("2026-07-01T12:00:00", "2026-07-01T10:00:00Z"),
            ("2026-01-01T12:00:00", "2026-01-01T11:00:00Z"),
        ] {
            assert_eq!(resolve_local(local(local_time), berlin), utc(want), "{local_time}");
        }
    }
}
