//! Certificate expiry: how many days a certificate has left, and which notice it is due. Pure
//! functions, used by consensus (the notices) and the certificate API (`days_left`).
//!
//! **Days left are a floor** of the time left in days, the same rule the agent applies: a
//! certificate with 36 hours left has 1 day left, one with 23 hours has 0, one that expired an
//! hour ago has -1 (never 0: rounding toward zero would make a just-expired certificate look
//! valid for one more day).

use chrono::{DateTime, Utc};

/// Seconds in a day.
const DAY_S: i64 = 86_400;

/// Whole days from `now` until `not_after`, rounded down: negative once expired (-1 during the
/// first day after expiry).
pub fn days_left(not_after: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (not_after - now).num_seconds().div_euclid(DAY_S)
}

/// The expiry notice a certificate is due at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// `certificate_expiring`: it expires within this many days (the smallest threshold
    /// crossed).
    Expiring { threshold_days: u32 },
    /// `certificate_expired`: `not_after` has passed.
    Expired,
}

impl Notice {
    /// The notification kind.
    pub fn kind(self) -> &'static str {
        match self {
            Notice::Expiring { .. } => "certificate_expiring",
            Notice::Expired => "certificate_expired",
        }
    }

    /// The last part of the dedup key `cert:<domain>:<serial>:<part>`: the threshold in days,
    /// or `expired` (so each threshold, and the expiry, is notified once per certificate).
    pub fn key_part(self) -> String {
        match self {
            Notice::Expiring { threshold_days } => threshold_days.to_string(),
            Notice::Expired => "expired".to_owned(),
        }
    }
}

/// The notice due for a certificate valid until `not_after` at `now`, given the thresholds in
/// days (ascending): [`Notice::Expired`] once `not_after` has passed (at `not_after` itself the
/// certificate is no longer valid), else the smallest threshold whose days it is within, else
/// none.
pub fn due(thresholds_days: &[u32], not_after: DateTime<Utc>, now: DateTime<Utc>) -> Option<Notice> {
    let left = not_after - now;
    if left <= chrono::Duration::zero() {
        return Some(Notice::Expired);
    }
    thresholds_days
        .iter()
        .copied()
        .find(|days| left <= chrono::Duration::days(i64::from(*days)))
        .map(|threshold_days| Notice::Expiring { threshold_days })
}

/// "3 days", "1 day", "5 h", "1 h", "12 min", "less than a minute": a span for a sentence.
pub fn describe_span(span: chrono::Duration) -> String {
    let s = span.num_seconds().max(0);
    let plural = |n: i64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    if s >= DAY_S {
        plural(s / DAY_S, "day")
    } else if s >= 3600 {
        format!("{} h", s / 3600)
    } else if s >= 60 {
        format!("{} min", s / 60)
    } else {
        "less than a minute".to_owned()
    }
}

/// The notice's one-line summary for the certificate of `url`. Expiring: "expires in 5 days
/// (2026-03-19T10:00:00+00:00)", or "in less than a day" under 24 hours; expired: "expired 3 h
/// ago (at …); it is no longer valid".
pub fn summary(notice: Notice, url: &str, not_after: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let at = not_after.to_rfc3339();
    match notice {
        Notice::Expiring { .. } => match days_left(not_after, now) {
            0 => format!("the certificate of {url} expires in less than a day, at {at}"),
            1 => format!("the certificate of {url} expires in 1 day ({at})"),
            days => format!("the certificate of {url} expires in {days} days ({at})"),
        },
        Notice::Expired => format!(
            "the certificate of {url} expired {} ago (at {at}); it is no longer valid",
            describe_span(now - not_after)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, 10, 0, 0).unwrap()
    }

    #[test]
    fn days_left_is_a_floor() {
        let at = |d: Duration| now() + d;
        assert_eq!(days_left(at(Duration::hours(36)), now()), 1);
        assert_eq!(days_left(at(Duration::hours(23)), now()), 0);
        assert_eq!(days_left(at(Duration::seconds(1)), now()), 0);
        assert_eq!(days_left(now(), now()), 0);
        assert_eq!(days_left(at(-Duration::hours(1)), now()), -1, "expired an hour ago");
        assert_eq!(days_left(at(-Duration::hours(24)), now()), -1);
        assert_eq!(days_left(at(-Duration::hours(25)), now()), -2);
        assert_eq!(days_left(at(Duration::days(30)), now()), 30);
    }

    #[test]
    fn an_expired_certificate_is_due_its_expired_notice_not_a_threshold() {
        let thresholds = [1, 7, 14, 30];
        let due_in = |d: Duration| due(&thresholds, now() + d, now());
        assert_eq!(due_in(Duration::days(60)), None);
        assert_eq!(due_in(Duration::days(30)), Some(Notice::Expiring { threshold_days: 30 }));
        assert_eq!(due_in(Duration::days(10)), Some(Notice::Expiring { threshold_days: 14 }));
        assert_eq!(due_in(Duration::hours(1)), Some(Notice::Expiring { threshold_days: 1 }));
        assert_eq!(due_in(Duration::zero()), Some(Notice::Expired));
        assert_eq!(due_in(-Duration::hours(1)), Some(Notice::Expired));
        assert_eq!(due_in(-Duration::days(3)), Some(Notice::Expired));
        assert_eq!(due(&[], now() - Duration::hours(1), now()), Some(Notice::Expired));
        assert_eq!(Notice::Expired.key_part(), "expired");
        assert_eq!(Notice::Expiring { threshold_days: 7 }.key_part(), "7");
    }

    #[test]
    fn wording_says_expired_and_when() {
        let url = "https://example.com/";
        let hour_ago = now() - Duration::hours(1);
        let text = summary(Notice::Expired, url, hour_ago, now());
        assert_eq!(
            text,
            "the certificate of https://example.com/ expired 1 h ago (at 2026-03-14T09:00:00+00:00); it is no longer valid"
        );
        assert!(!text.contains("expires in"), "{text}");
        let text = summary(Notice::Expired, url, now() - Duration::days(3), now());
        assert!(text.contains("expired 3 days ago"), "{text}");
        let text = summary(Notice::Expiring { threshold_days: 1 }, url, now() + Duration::hours(5), now());
        assert!(text.contains("expires in less than a day, at 2026-03-14T15:00:00+00:00"), "{text}");
        let text = summary(Notice::Expiring { threshold_days: 7 }, url, now() + Duration::hours(36), now());
        assert!(text.contains("expires in 1 day ("), "{text}");
        let text = summary(Notice::Expiring { threshold_days: 14 }, url, now() + Duration::days(10), now());
        assert!(text.contains("expires in 10 days ("), "{text}");
        assert_eq!(describe_span(Duration::seconds(30)), "less than a minute");
        assert_eq!(describe_span(Duration::minutes(12)), "12 min");
        assert_eq!(describe_span(Duration::days(1)), "1 day");
    }
}
