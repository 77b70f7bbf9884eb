//! The agent's own saturation: whether this agent could run its probes when they were due, so
//! that a failure caused by its own overload (a probe that started late, or whose timeout ran
//! while the agent could not serve it) is not taken for the target's.
//!
//! Evidence, each an interval of wall-clock time during which the agent was behind:
//! - **start lag**: a probe started `saturation_lag_ms` or more after its due time: from its due
//!   time to its start (the scheduler fell behind, or every worker was busy);
//! - **a blocked hand-off**: the hand-off queue was full (every worker busy and a queue of
//!   waiting jobs) for `saturation_lag_ms` or more: from the moment it was found full until a
//!   worker took the job (each full queue is also counted, however short);
//! - **a late deadline**: a probe ended `saturation_lag_ms` or more after its own timeout could
//!   have ended it: the runtime did not run it on time (a starved process or machine).
//!
//! Evidence is merged into one **window** (`since`, `until`): evidence starting within
//! [`MERGE_GAP`] of the current window's end extends it; later evidence starts a new one. The
//! window's start is stretched back to the start of the earliest probe in flight when the
//! evidence was taken (or, for a blocked hand-off, when it was found full): those probes' timeouts
//! ran during the trouble. So every probe *started* inside `[since, until]` is suspect, and the
//! control plane only compares a result's start with the window. While evidence is recent
//! (within [`HOLD`]) the agent is `saturated` and the window reaches the report's time.
//!
//! The report ([`SaturationReport`]) travels with every batch in `AgentHealth` (fields 5–10).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Evidence this close to the end of the current window extends it rather than starting a new
/// one: a minute, longer than any batch takes to leave the agent, so the results of one episode
/// of trouble are all covered by the window that travels with their batches.
pub const MERGE_GAP: Duration = Duration::from_secs(60);

/// How long after its latest evidence the agent still reports itself saturated (a probe
/// starting then may still meet a backlog).
pub const HOLD: Duration = Duration::from_secs(5);

/// Start lags kept for the p95 (the most recent ones, within [`LAG_WINDOW`]).
const LAG_SAMPLES: usize = 1024;

/// Start lags older than this are left out of the p95.
const LAG_WINDOW: Duration = Duration::from_secs(60);

/// A period during which the agent was behind, as wall-clock instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Window {
    /// Whether a probe that started at `at` is suspect.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.since <= at && at <= self.until
    }
}

/// What the agent reports about its saturation, with every batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SaturationReport {
    /// Evidence within the last [`HOLD`], or a hand-off blocked for the threshold or more now.
    pub saturated: bool,
    /// The latest window; `None` when the agent was never behind since it started.
    pub window: Option<Window>,
    /// The 95th percentile of the start lag of the latest scheduled probes (at most 1,024,
    /// within the last minute), milliseconds.
    pub lag_p95_ms: f64,
    /// Times the hand-off queue was found full since the agent started.
    pub queue_full_total: u64,
    pub checked_at: DateTime<Utc>,
}

impl SaturationReport {
    /// The saturation fields of the wire's `AgentHealth` (its canary fields left as given).
    pub fn fill(&self, health: &mut shared::proto::AgentHealth) {
        health.saturated = self.saturated;
        health.saturated_since_unix_us = self.window.map(|w| w.since.timestamp_micros());
        health.saturated_until_unix_us = self.window.map(|w| w.until.timestamp_micros());
        health.lag_p95_us = (self.lag_p95_ms * 1000.0).round() as u32;
        health.queue_full_total = self.queue_full_total;
        health.saturation_checked_at_unix_us = self.checked_at.timestamp_micros();
    }
}

/// The saturation monitor shared by the scheduler, its workers and delivery. Cheap to clone;
/// the lock is held only to update a few fields, never across an `.await`.
#[derive(Debug, Clone)]
pub struct Saturation {
    threshold: chrono::Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Start times of the probes running now (a multiset).
    in_flight: BTreeMap<DateTime<Utc>, u32>,
    window: Option<Window>,
    /// A hand-off waiting on a full queue: when it was found full, and that or the earliest
    /// start of the probes in flight then, whichever is earlier.
    blocked: Option<(DateTime<Utc>, DateTime<Utc>)>,
    lags: VecDeque<(DateTime<Utc>, f64)>,
    queue_full_total: u64,
}

impl State {
    fn earliest_in_flight(&self) -> Option<DateTime<Utc>> {
        self.in_flight.keys().next().copied()
    }

    /// Adds the evidence `[from, to]`, stretched back to the earliest probe in flight.
    fn evidence(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let since = self.earliest_in_flight().map_or(from, |first| first.min(from));
        let gap = chrono::Duration::from_std(MERGE_GAP).unwrap_or_default();
        self.window = Some(match self.window {
            Some(w) if since <= w.until + gap => Window { since: w.since.min(since), until: w.until.max(to) },
            _ => Window { since, until: to },
        });
    }
}

impl Saturation {
    /// A monitor for which a start lag (or a blocked hand-off, or a late deadline) of
    /// `threshold` or more is saturation.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold: chrono::Duration::from_std(threshold).unwrap_or(chrono::Duration::MAX),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A worker starts a probe at `start` that was due at `due`; `scheduled` probes' lags feed
    /// the p95 (on-demand probes start when asked).
    pub fn started(&self, due: DateTime<Utc>, start: DateTime<Utc>, scheduled: bool) {
        let mut state = self.lock();
        let lag = start - due;
        if scheduled {
            let lag_ms = lag.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
            if state.lags.len() == LAG_SAMPLES {
                state.lags.pop_front();
            }
            state.lags.push_back((start, lag_ms.max(0.0)));
        }
        if lag >= self.threshold {
            state.evidence(due, start);
        }
        *state.in_flight.entry(start).or_default() += 1;
    }

    /// The probe started at `start` ended at `end`; it could not run longer than `timeout`
    /// unless the agent was too busy to end it on time.
    pub fn finished(&self, start: DateTime<Utc>, end: DateTime<Utc>, timeout: Duration) {
        let mut state = self.lock();
        let deadline = start + chrono::Duration::from_std(timeout).unwrap_or_default();
        if end - deadline >= self.threshold {
            state.evidence(deadline, end);
        }
        if let Some(count) = state.in_flight.get_mut(&start) {
            *count -= 1;
            if *count == 0 {
                state.in_flight.remove(&start);
            }
        }
    }

    /// The hand-off found the queue full at `at` (counted each time).
    pub fn blocked(&self, at: DateTime<Utc>) {
        let mut state = self.lock();
        state.queue_full_total += 1;
        let first = state.earliest_in_flight().map_or(at, |first| first.min(at));
        state.blocked.get_or_insert((at, first));
    }

    /// The blocked hand-off went through at `at`.
    pub fn unblocked(&self, at: DateTime<Utc>) {
        let mut state = self.lock();
        if let Some((found, from)) = state.blocked.take() {
            if at - found >= self.threshold {
                state.evidence(from, at);
            }
        }
    }

    /// The saturation as of `now`. While saturated the window is extended to `now` (and stays
    /// so: a later report never shrinks what an earlier one covered).
    pub fn report(&self, now: DateTime<Utc>) -> SaturationReport {
        let mut state = self.lock();
        if let Some((found, from)) = state.blocked {
            if now - found >= self.threshold {
                state.evidence(from, now);
            }
        }
        let hold = chrono::Duration::from_std(HOLD).unwrap_or_default();
        let saturated = state.window.is_some_and(|w| now - w.until <= hold);
        if saturated {
            if let Some(w) = &mut state.window {
                w.until = w.until.max(now);
            }
        }
        let recent = now - chrono::Duration::from_std(LAG_WINDOW).unwrap_or_default();
        let mut lags: Vec<f64> = state.lags.iter().filter(|(at, _)| *at >= recent).map(|(_, l)| *l).collect();
        SaturationReport {
            saturated,
            window: state.window,
            lag_p95_ms: p95(&mut lags),
            queue_full_total: state.queue_full_total,
            checked_at: now,
        }
    }
}

/// The nearest-rank 95th percentile; 0 for no samples.
fn p95(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let rank = ((samples.len() as f64) * 0.95).ceil() as usize;
    let (_, value, _) = samples.select_nth_unstable_by(rank.clamp(1, samples.len()) - 1, f64::total_cmp);
    *value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn monitor() -> Saturation {
        Saturation::new(Duration::from_millis(1_000))
    }

    #[test]
    fn probes_on_time_are_no_saturation() {
        let s = monitor();
        for i in 0..100 {
            s.started(at(i * 10), at(i * 10 + 5), true);
            s.finished(at(i * 10 + 5), at(i * 10 + 500), Duration::from_secs(10));
        }
        let report = s.report(at(2_000));
        assert!(!report.saturated);
        assert_eq!(report.window, None);
        assert_eq!(report.lag_p95_ms, 5.0);
        assert_eq!(report.queue_full_total, 0);
    }

    #[test]
    fn a_late_start_opens_a_window_reaching_back_to_the_probes_in_flight() {
        let s = monitor();
        // A probe started at 0 is still running (its timeout overlaps what follows).
        s.started(at(0), at(0), true);
        // Due at 5 s, started at 8 s: 3 s late.
        s.started(at(5_000), at(8_000), true);
        let report = s.report(at(9_000));
        assert!(report.saturated);
        assert_eq!(report.window, Some(Window { since: at(0), until: at(9_000) }), "held until the report");
        // A lag under the threshold is no evidence.
        let s = monitor();
        s.started(at(5_000), at(5_900), true);
        assert_eq!(s.report(at(6_000)).window, None);
    }

    #[test]
    fn the_window_is_held_then_kept_and_a_later_episode_starts_a_new_one() {
        let s = monitor();
        s.started(at(10_000), at(12_000), true);
        s.finished(at(12_000), at(12_100), Duration::from_secs(10));
        assert!(s.report(at(16_000)).saturated, "within the hold");
        let later = s.report(at(30_000));
        assert!(!later.saturated);
        assert_eq!(
            later.window,
            Some(Window { since: at(10_000), until: at(16_000) }),
            "what a report covered stays covered"
        );
        // Evidence within a minute of the window's end extends it.
        s.started(at(50_000), at(52_000), true);
        s.finished(at(52_000), at(52_100), Duration::from_secs(10));
        assert_eq!(s.report(at(100_000)).window, Some(Window { since: at(10_000), until: at(52_000) }));
        // Much later: a new window.
        s.started(at(500_000), at(501_500), true);
        assert_eq!(s.report(at(600_000)).window, Some(Window { since: at(500_000), until: at(501_500) }));
    }

    #[test]
    fn a_blocked_hand_off_counts_from_when_the_queue_was_found_full() {
        let s = monitor();
        s.started(at(0), at(0), true);
        s.blocked(at(1_000));
        s.blocked(at(1_200));
        s.unblocked(at(1_500));
        let report = s.report(at(1_600));
        assert_eq!(report.queue_full_total, 2);
        assert_eq!(report.window, None, "blocked for 0.5 s only");
        s.blocked(at(2_000));
        // Still blocked when the report is taken: saturated now.
        let report = s.report(at(3_500));
        assert!(report.saturated);
        assert_eq!(report.window, Some(Window { since: at(0), until: at(3_500) }));
        s.unblocked(at(4_000));
        assert_eq!(s.report(at(4_000)).window.unwrap().until, at(4_000));
    }

    #[test]
    fn a_probe_ending_well_past_its_timeout_is_evidence() {
        let s = monitor();
        s.started(at(0), at(0), true);
        s.finished(at(0), at(12_500), Duration::from_secs(10));
        assert_eq!(s.report(at(13_000)).window, Some(Window { since: at(0), until: at(13_000) }));
        let s = monitor();
        s.started(at(0), at(0), true);
        s.finished(at(0), at(10_200), Duration::from_secs(10));
        assert_eq!(s.report(at(11_000)).window, None, "a timer 0.2 s late is no saturation");
    }

    #[test]
    fn the_p95_reads_recent_scheduled_lags() {
        let s = monitor();
        for i in 0..100 {
            s.started(at(i), at(i + if i < 90 { 1 } else { 400 }), true);
        }
        // On-demand probes do not count.
        s.started(at(0), at(5_000), false);
        assert_eq!(s.report(at(1_000)).lag_p95_ms, 400.0);
        assert_eq!(s.report(at(200_000)).lag_p95_ms, 0.0, "older than a minute");
        let mut none: [f64; 0] = [];
        assert_eq!(p95(&mut none), 0.0);
    }
}
