//! Consensus uptime: the share of the time a domain was **monitored** in which consensus held it
//! **up**, from its confirmed transitions (`domain_transitions`) and its pauses
//! (`monitoring_pauses`) in the transactional database.
//!
//! - *Monitored* time is time in a decided state (`up`, `degraded` or `down`) while not paused:
//!   the time before the first decision (`unknown`) and paused spans do not count either way.
//! - *Uptime* is up time over monitored time; `None` when nothing was monitored in the window.
//!   Degraded time is up time (the site answered, slowly), and is also reported on its own
//!   (`degraded_s`).
//!
//! This is the figure that agrees with the state and the incidents: a region that fails every
//! probe while the others succeed leaves consensus `up`, and so leaves this uptime at 100 %,
//! while that region's own probe success ratio (read from the time series) shows its failures.
//! The state intervals are integrated by the digests' [`intervals_in`] (the same walk that
//! gives a flap digest its down time); [`compute`] is pure, [`load`] reads the rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::digests::build::intervals_in;

/// A domain's consensus uptime over `[since, until)`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConsensusUptime {
    /// `up_s / monitored_s × 100`; `None` when nothing was monitored.
    pub uptime_percent: Option<f64>,
    /// Seconds consensus held the domain up (paused time excluded), degraded time included.
    pub up_s: f64,
    /// Seconds of `up_s` consensus held it degraded (up, but abnormally slow).
    pub degraded_s: f64,
    /// Seconds consensus held it down (paused time excluded).
    pub down_s: f64,
    /// `up_s + down_s`.
    pub monitored_s: f64,
    /// Seconds monitoring was paused.
    pub paused_s: f64,
}

type Interval = (DateTime<Utc>, DateTime<Utc>);

fn seconds(intervals: &[Interval]) -> f64 {
    intervals.iter().map(|(a, b)| (*b - *a).num_milliseconds() as f64 / 1000.0).sum()
}

/// The parts of `intervals` outside every span of `holes` (each span sorted, disjoint).
fn minus(intervals: &[Interval], holes: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    for &(mut from, to) in intervals {
        for &(h_from, h_to) in holes {
            if h_to <= from || h_from >= to {
                continue;
            }
            if h_from > from {
                out.push((from, h_from));
            }
            from = from.max(h_to);
        }
        if to > from {
            out.push((from, to));
        }
    }
    out
}

/// Consensus uptime over `[since, until)` of a domain that was `initial` at `since`, changed at
/// each of `changes` (time and new state, `up` or `down`, sorted by time) and was paused during
/// `pauses` (start and end, `None` while still paused; sorted, disjoint).
pub fn compute(
    initial: &str,
    changes: &[(DateTime<Utc>, &str)],
    pauses: &[(DateTime<Utc>, Option<DateTime<Utc>>)],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> ConsensusUptime {
    let until = until.max(since);
    let paused: Vec<Interval> = pauses
        .iter()
        .map(|(from, to)| ((*from).clamp(since, until), to.unwrap_or(until).clamp(since, until)))
        .filter(|(from, to)| to > from)
        .collect();
    let up = minus(&intervals_in("up", initial, changes, since, until), &paused);
    let degraded = minus(&intervals_in("degraded", initial, changes, since, until), &paused);
    let down = minus(&intervals_in("down", initial, changes, since, until), &paused);
    let degraded_s = seconds(&degraded);
    let (up_s, down_s) = (seconds(&up) + degraded_s, seconds(&down));
    let monitored_s = up_s + down_s;
    ConsensusUptime {
        uptime_percent: (monitored_s > 0.0).then(|| up_s * 100.0 / monitored_s),
        up_s,
        degraded_s,
        down_s,
        monitored_s,
        paused_s: seconds(&paused),
    }
}

/// Reads the domain's state at `since` (its last transition before it), its transitions in
/// `[since, until)` and its pauses overlapping that span, and computes its consensus uptime.
pub async fn load(
    conn: &mut PgConnection,
    domain_id: Uuid,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<ConsensusUptime> {
    let initial: Option<String> = sqlx::query_scalar(
        "SELECT to_state FROM domain_transitions WHERE domain_id = $1 AND at < $2
         ORDER BY at DESC, id DESC LIMIT 1",
    )
    .bind(domain_id)
    .bind(since)
    .fetch_optional(&mut *conn)
    .await?;
    let changes: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT at, to_state FROM domain_transitions WHERE domain_id = $1 AND at >= $2 AND at < $3
         ORDER BY at, id",
    )
    .bind(domain_id)
    .bind(since)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    let pauses: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT paused_at, resumed_at FROM monitoring_pauses
         WHERE domain_id = $1 AND paused_at < $3 AND (resumed_at IS NULL OR resumed_at > $2)
         ORDER BY paused_at",
    )
    .bind(domain_id)
    .bind(since)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    let changes: Vec<(DateTime<Utc>, &str)> = changes.iter().map(|(at, s)| (*at, s.as_str())).collect();
    Ok(compute(initial.as_deref().unwrap_or("unknown"), &changes, &pauses, since, until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, 10, 0, 0).unwrap() + Duration::minutes(minute)
    }

    #[test]
    fn a_domain_up_all_along_is_at_100_percent_whatever_one_region_says() {
        // One region failing every probe never changes consensus: no transition in the window.
        let u = compute("up", &[], &[], at(0), at(60));
        assert_eq!(u.uptime_percent, Some(100.0));
        assert_eq!((u.up_s, u.down_s, u.monitored_s), (3600.0, 0.0, 3600.0));
    }

    #[test]
    fn down_time_counts_against_uptime_and_unknown_time_counts_for_nothing() {
        // Decided up only at :10 (unknown before), down :20–:35.
        let changes = [(at(10), "up"), (at(20), "down"), (at(35), "up")];
        let u = compute("unknown", &changes, &[], at(0), at(60));
        assert_eq!(u.monitored_s, 50.0 * 60.0);
        assert_eq!(u.down_s, 15.0 * 60.0);
        assert_eq!(u.uptime_percent, Some(70.0));
        // Nothing decided at all: no figure rather than 0 % or 100 %.
        assert_eq!(compute("unknown", &[], &[], at(0), at(60)).uptime_percent, None);
    }

    #[test]
    fn degraded_time_is_up_and_reported_apart() {
        // Up, degraded :10–:25, down :25–:31, degraded :31–:40, up after; paused :35–:37.
        let changes = [(at(10), "degraded"), (at(25), "down"), (at(31), "degraded"), (at(40), "up")];
        let pauses = [(at(35), Some(at(37)))];
        let u = compute("up", &changes, &pauses, at(0), at(60));
        assert_eq!(u.degraded_s, (15.0 + 7.0) * 60.0);
        assert_eq!(u.down_s, 6.0 * 60.0);
        assert_eq!(u.up_s, (10.0 + 22.0 + 20.0) * 60.0);
        assert_eq!(u.monitored_s, 58.0 * 60.0);
        assert_eq!(u.uptime_percent, Some(52.0 * 100.0 / 58.0));
        // Degraded from before the window to its end: 100 % up, all of it degraded.
        let u = compute("degraded", &[], &[], at(0), at(60));
        assert_eq!((u.uptime_percent, u.degraded_s), (Some(100.0), 3600.0));
    }

    #[test]
    fn paused_time_is_not_monitored() {
        // Down from :10; paused :20–:40 (still down when resumed); up at :50.
        let changes = [(at(10), "down"), (at(50), "up")];
        let pauses = [(at(20), Some(at(40)))];
        let u = compute("up", &changes, &pauses, at(0), at(60));
        assert_eq!(u.paused_s, 20.0 * 60.0);
        assert_eq!(u.down_s, 20.0 * 60.0, ":10–:20 and :40–:50");
        assert_eq!(u.up_s, 20.0 * 60.0, ":00–:10 and :50–:60");
        assert_eq!(u.uptime_percent, Some(50.0));
        // A pause still open at the end, and one that began before the window.
        let pauses = [(at(-30), Some(at(5))), (at(45), None)];
        let u = compute("up", &[], &pauses, at(0), at(60));
        assert_eq!(u.paused_s, 20.0 * 60.0);
        assert_eq!(u.monitored_s, 40.0 * 60.0);
        assert_eq!(u.uptime_percent, Some(100.0));
    }

    #[test]
    fn holes_are_cut_out_of_intervals() {
        let cut = minus(&[(at(0), at(60))], &[(at(10), at(20)), (at(30), at(40)), (at(55), at(70))]);
        assert_eq!(cut, vec![(at(0), at(10)), (at(20), at(30)), (at(40), at(55))]);
        assert_eq!(minus(&[(at(10), at(20))], &[(at(0), at(30))]), vec![]);
    }
}
