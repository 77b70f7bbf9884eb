//! The pure flap decision: whether a domain enters, stays in, leaves or stays out of flap mode,
//! given its score (transitions in the window ending now), its last transition and the
//! settings. No I/O; table-tested.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Settings;

/// What to do about a domain's flap mode now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Not flapping, and the score reached `enter`: open a flap period.
    Enter,
    /// Flapping, and not yet stable: keep holding alerts.
    Stay,
    /// Flapping, and stable (score at most `leave` and no transition for `quiet`), or flap
    /// detection was turned off: close the flap period.
    Leave,
    /// Not flapping, and not about to.
    Nothing,
}

impl Decision {
    /// Whether the domain is flapping after this decision (alerts are held).
    pub fn flapping(self) -> bool {
        matches!(self, Decision::Enter | Decision::Stay)
    }
}

/// Decides. `score` counts the transitions between known states (from `up` or `down`) in
/// `(now - window, now]`; `last` is the domain's latest transition, if any.
pub fn decide(
    flapping: bool,
    score: u32,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Decision {
    if !settings.enabled {
        return if flapping { Decision::Leave } else { Decision::Nothing };
    }
    if !flapping {
        return if score >= settings.enter { Decision::Enter } else { Decision::Nothing };
    }
    let quiet = chrono::Duration::from_std(settings.quiet).unwrap_or(chrono::Duration::MAX);
    let quiet_passed = last.is_none_or(|at| now.signed_duration_since(at) >= quiet);
    if score <= settings.leave && quiet_passed {
        Decision::Leave
    } else {
        Decision::Stay
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use Decision::*;

    fn settings(enabled: bool) -> Settings {
        Settings {
            enabled,
            window: Duration::from_secs(3600),
            enter: 6,
            leave: 2,
            quiet: Duration::from_secs(900),
        }
    }

    #[test]
    fn decision_table() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc);
        let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
        // (flapping, score, last transition, enabled, expected, why)
        let cases = [
            (false, 0, None, true, Nothing, "no transitions"),
            (false, 5, ago(0), true, Nothing, "one below the entry threshold"),
            (false, 6, ago(0), true, Enter, "at the entry threshold"),
            (false, 9, ago(0), true, Enter, "above the entry threshold"),
            (true, 9, ago(0), true, Stay, "still changing"),
            (true, 5, ago(3000), true, Stay, "hysteresis: below enter but above leave keeps flapping"),
            (true, 3, ago(3000), true, Stay, "one above the exit threshold"),
            (true, 2, ago(899), true, Stay, "at the exit threshold but the quiet period is not over"),
            (true, 2, ago(900), true, Leave, "at the exit threshold after exactly the quiet period"),
            (true, 0, None, true, Leave, "nothing left in the window"),
            (true, 1, ago(1200), true, Leave, "below the exit threshold and quiet"),
            (false, 9, ago(0), false, Nothing, "disabled: never enters"),
            (true, 9, ago(0), false, Leave, "disabled while flapping: leaves at once"),
        ];
        for (flapping, score, last, enabled, expected, why) in cases {
            let got = decide(flapping, score, last, now, &settings(enabled));
            assert_eq!(got, expected, "{why}: flapping={flapping} score={score} last={last:?}");
            assert_eq!(got.flapping(), matches!(expected, Enter | Stay));
        }
    }

    #[test]
    fn zero_quiet_period_allows_leaving_at_a_transition() {
        let now = Utc::now();
        let s = Settings { quiet: Duration::ZERO, ..settings(true) };
        assert_eq!(decide(true, 2, Some(now), now, &s), Leave);
        assert_eq!(decide(true, 3, Some(now), now, &s), Stay);
    }
}
