//! Calendar months in a tenant's time zone, pure: where one starts and ends as instants, which
//! one holds a moment, and the `YYYY-MM` label the API and the reports use.
//!
//! A month starts at local midnight of its first day. Where a daylight-saving change skips
//! midnight (a few zones move their clocks at 00:00), it starts at the first local time that
//! exists that day; where midnight happens twice, at the earlier one. A month's length in
//! seconds is therefore not always a whole number of days: March in Europe/Berlin is one hour
//! short.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A calendar month of a time zone: `[start, end)` as instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    /// 1–12.
    pub month: u32,
    pub tz: Tz,
}

impl Month {
    /// The month holding the instant `at` in `tz`.
    pub fn containing(at: DateTime<Utc>, tz: Tz) -> Month {
        let local = at.with_timezone(&tz);
        Month { year: local.year(), month: local.month(), tz }
    }

    /// Parses `YYYY-MM` (e.g. `2026-11`); `None` for anything else.
    pub fn parse(raw: &str, tz: Tz) -> Option<Month> {
        let (year, month) = raw.split_once('-')?;
        if year.len() != 4
            || month.len() != 2
            || !year.bytes().chain(month.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let (year, month) = (year.parse().ok()?, month.parse().ok()?);
        NaiveDate::from_ymd_opt(year, month, 1)?;
        Some(Month { year, month, tz })
    }

    /// The first day of the month (the `month` column of stored reports).
    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("a parsed month is a valid date")
    }

    pub fn next(&self) -> Month {
        match self.month {
            12 => Month { year: self.year + 1, month: 1, tz: self.tz },
            m => Month { month: m + 1, ..*self },
        }
    }

    pub fn previous(&self) -> Month {
        match self.month {
            1 => Month { year: self.year - 1, month: 12, tz: self.tz },
            m => Month { month: m - 1, ..*self },
        }
    }

    /// The instant the month starts: local midnight of its first day in its zone.
    pub fn start(&self) -> DateTime<Utc> {
        local_midnight(self.first_day(), self.tz)
    }

    /// The instant the month ends: the next month's start.
    pub fn end(&self) -> DateTime<Utc> {
        self.next().start()
    }

    /// The month's length in seconds.
    pub fn seconds(&self) -> i64 {
        (self.end() - self.start()).num_seconds()
    }
}

impl fmt::Display for Month {
    /// `2026-11`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The first instant of `day` in `tz`: midnight, or the first local time after a gap that
/// swallowed it (the earlier one when it happened twice).
fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight: NaiveDateTime = day.and_hms_opt(0, 0, 0).expect("midnight is a valid time");
    // Gaps are at most a few hours; step by 15 minutes (the finest offsets in use).
    (0..=16)
        .find_map(|step| tz.from_local_datetime(&(midnight + Duration::minutes(15 * step))).earliest())
        .map(|local| local.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`); `None` when unknown.
pub fn parse_time_zone(raw: &str) -> Option<Tz> {
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        parse_time_zone(name).unwrap()
    }

    #[test]
    fn months_start_at_local_midnight_across_daylight_saving_changes() {
        // (zone, month, start, end, length in hours)
        let table = [
            ("UTC", "2026-11", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", 30 * 24),
            // Berlin: CET (+01) in winter, CEST (+02) from the last Sunday of March.
            ("Europe/Berlin", "2026-03", "2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z", 31 * 24 - 1),
            ("Europe/Berlin", "2026-10", "2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z", 31 * 24 + 1),
            ("Europe/Berlin", "2026-06", "2026-05-31T22:00:00Z", "2026-06-30T22:00:00Z", 30 * 24),
            // New York: EDT (−04) from the second Sunday of March.
            ("America/New_York", "2026-03", "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", 31 * 24 - 1),
            // December runs into the next year.
            ("Asia/Tokyo", "2026-12", "2026-11-30T15:00:00Z", "2026-12-31T15:00:00Z", 31 * 24),
            // Leap year February.
            ("UTC", "2028-02", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z", 29 * 24),
        ];
        for (zone, label, start, end, hours) in table {
            let month = Month::parse(label, tz(zone)).unwrap();
            assert_eq!(month.start(), at(start), "{zone} {label}");
            assert_eq!(month.end(), at(end), "{zone} {label}");
            assert_eq!(month.seconds(), hours * 3600, "{zone} {label}");
            assert_eq!(month.to_string(), label);
        }
    }

    #[test]
    fn a_midnight_skipped_by_the_clock_starts_the_month_at_the_first_local_time() {
        // Santiago moves from −04 to −03 at local midnight between the first Saturday and
        // Sunday of September: 6 September 2026 has no 00:00.
        let day = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        let start = local_midnight(day, tz("America/Santiago"));
        assert_eq!(start, at("2026-09-06T04:00:00Z"), "01:00 −03, the first local time of the day");
    }

    #[test]
    fn the_month_holding_an_instant_is_the_local_one() {
        let berlin = tz("Europe/Berlin");
        // 23:30 UTC on 31 October is already November in Berlin.
        assert_eq!(Month::containing(at("2026-10-31T23:30:00Z"), berlin).to_string(), "2026-11");
        assert_eq!(Month::containing(at("2026-10-31T22:59:59Z"), berlin).to_string(), "2026-10");
        assert_eq!(Month::containing(at("2026-10-31T23:30:00Z"), Tz::UTC).to_string(), "2026-10");
        let month = Month::containing(at("2026-01-15T12:00:00Z"), Tz::UTC);
        assert_eq!(
            (month.previous().to_string(), month.next().to_string()),
            ("2025-12".into(), "2026-02".into())
        );
    }

    #[test]
    fn only_year_dash_month_parses() {
        for bad in
            ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", "", "abcd-ef", "+026-11"]
        {
            assert_eq!(Month::parse(bad, Tz::UTC), None, "{bad}");
        }
        assert_eq!(
            Month::parse("2026-11", Tz::UTC).unwrap().first_day(),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
        );
        assert!(parse_time_zone("Europe/Berlin").is_some());
        assert!(parse_time_zone("Mars/Olympus").is_none());
    }
}
