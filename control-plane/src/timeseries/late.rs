//! TimescaleDB mode: results stored after the continuous aggregates' refresh policies stopped
//! looking at their buckets still reach the roll-ups.
//!
//! A refresh policy only refreshes `[now - start_offset, now - end_offset]` (3 days back for
//! `rollup_hourly`, 4 for `rollup_daily`); TimescaleDB logs the invalidation of an older bucket
//! but nothing refreshes it, while plain mode adds every result to its roll-ups at ingest. So:
//!
//! 1. The writer, in the transaction that stores a batch, appends one row to `late_results`
//!    when some of the new results are older than [`late_cutoff`]: the UTC hours of the oldest
//!    and the newest of them and their count ([`late_span`]).
//! 2. Every `rollup_refresh_interval_s` one replica ([`refresh`], under an advisory lock) reads
//!    every mark, refreshes each continuous aggregate once over the bucket-aligned range that
//!    covers them all ([`plan_refresh`]: coalesced), outside a transaction as
//!    `refresh_continuous_aggregate` requires, and then deletes the marks it read (a crash in
//!    between refreshes twice, never zero times). A refresh only recomputes the invalidated
//!    buckets inside its window, so a wide window costs little.
//! 3. Bounded: the window never starts before `now - (retention_raw_days - 1) days`. Older raw
//!    chunks may already be dropped, and refreshing over a dropped range would erase what the
//!    roll-ups hold for it. Results in marks wholly older than that are counted
//!    (`control_plane_timeseries_late_results_skipped`) and left out, as retention would soon
//!    drop them from the raw table anyway.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use super::policies::{RefreshPolicy, REFRESH_POLICIES};
use super::writer::hour_of;

/// A result is noted as late when its bucket may leave a refresh policy's window before the
/// policy runs again: older than `now` minus, for the policy reaching back least, its start
/// offset less one bucket and two schedule intervals (70 hours with the shipped policies).
pub fn late_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    let reach =
        REFRESH_POLICIES.iter().map(|p| p.start_offset_s - p.bucket_s - 2 * p.schedule_s).min().unwrap_or(0);
    now - Duration::seconds(reach)
}

/// The late results of one ingest transaction: the UTC hours holding the oldest and the newest
/// of them (hour starts), and how many there were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct LateSpan {
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
    pub results: i32,
}

/// The span of the `times` older than [`late_cutoff`]`(now)`; `None` when there are none.
pub fn late_span(times: impl IntoIterator<Item = DateTime<Utc>>, now: DateTime<Utc>) -> Option<LateSpan> {
    let cutoff = late_cutoff(now);
    let mut span: Option<LateSpan> = None;
    for t in times.into_iter().filter(|t| *t < cutoff) {
        let hour = hour_of(t);
        span = Some(match span {
            None => LateSpan { oldest: hour, newest: hour, results: 1 },
            Some(s) => LateSpan {
                oldest: s.oldest.min(hour),
                newest: s.newest.max(hour),
                results: s.results.saturating_add(1),
            },
        });
    }
    span
}

/// The writer's statement: one mark per transaction (`$1` oldest, `$2` newest, `$3` results).
pub const NOTE_LATE: &str = "INSERT INTO late_results (oldest, newest, results) VALUES ($1, $2, $3)";

/// One refresh of one continuous aggregate over `[start, end)`, bucket-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub view: &'static str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// The `CALL` that refreshes it, as SQL text (simple protocol, no transaction around it).
    pub fn sql(&self) -> String {
        let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S+00").to_string();
        format!(
            "CALL refresh_continuous_aggregate('{}', TIMESTAMPTZ '{}', TIMESTAMPTZ '{}')",
            self.view,
            at(self.start),
            at(self.end)
        )
    }
}

/// What one round refreshes: at most one window per continuous aggregate, and the results left
/// out because their marks lie wholly before the retention bound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefreshPlan {
    pub windows: Vec<Window>,
    pub skipped_results: u64,
}

/// Coalesces `marks` into one window per aggregate, clamped to the raw retention (see the
/// module docs); no windows when there are no marks or all are too old.
pub fn plan_refresh(marks: &[LateSpan], now: DateTime<Utc>, raw_days: u32) -> RefreshPlan {
    let bound = hour_of(now - Duration::days(i64::from(raw_days.saturating_sub(1))) + Duration::hours(1));
    let mut skipped = 0u64;
    let mut range: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for m in marks {
        if m.newest < bound {
            skipped += u64::try_from(m.results).unwrap_or(0);
            continue;
        }
        let oldest = m.oldest.max(bound);
        range = Some(match range {
            None => (oldest, m.newest),
            Some((a, b)) => (a.min(oldest), b.max(m.newest)),
        });
    }
    let windows = match range {
        None => Vec::new(),
        Some((oldest, newest)) => REFRESH_POLICIES
            .iter()
            .map(|p| {
                let (start, end) = align(p, oldest, newest);
                // A bucket that starts before the bound is left to be: refreshing it would
                // recompute it from raw rows retention may have dropped.
                let start = if start < bound { start + Duration::seconds(p.bucket_s) } else { start };
                Window { view: p.view, start, end }
            })
            .filter(|w| w.start < w.end)
            .collect(),
    };
    RefreshPlan { windows, skipped_results: skipped }
}

/// The buckets of `p` holding `[oldest, newest]`: the first bucket's start, the last's end.
fn align(p: &RefreshPolicy, oldest: DateTime<Utc>, newest: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let floor = |t: DateTime<Utc>| {
        let s = t.timestamp();
        DateTime::from_timestamp(s - s.rem_euclid(p.bucket_s), 0).unwrap_or(t)
    };
    (floor(oldest), floor(newest) + Duration::seconds(p.bucket_s))
}

/// What one [`refresh`] round did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LateReport {
    /// Another replica held the lock; nothing was done.
    pub busy: bool,
    /// Marks read (and deleted after the refreshes).
    pub marks: usize,
    /// Late results the refreshed windows cover.
    pub results: u64,
    pub plan: RefreshPlan,
}

/// Most marks read in one round (the rest wait for the next).
const MAX_MARKS: i64 = 10_000;

/// One round: refreshes the continuous aggregates over the noted late ranges (see the module
/// docs). Errors: the database's, with the marks kept for the next round.
pub async fn refresh(pool: &PgPool, now: DateTime<Utc>, raw_days: u32) -> Result<LateReport, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('crosscheck late results'))")
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(LateReport { busy: true, ..LateReport::default() });
    }
    let result = refresh_locked(&mut conn, now, raw_days).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext('crosscheck late results'))")
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // Closing the connection releases its session lock.
        conn.close_on_drop();
    }
    result
}

async fn refresh_locked(
    conn: &mut sqlx::PgConnection,
    now: DateTime<Utc>,
    raw_days: u32,
) -> Result<LateReport, sqlx::Error> {
    let rows: Vec<(i64, DateTime<Utc>, DateTime<Utc>, i32)> =
        sqlx::query_as("SELECT id, oldest, newest, results FROM late_results ORDER BY id LIMIT $1")
            .bind(MAX_MARKS)
            .fetch_all(&mut *conn)
            .await?;
    if rows.is_empty() {
        return Ok(LateReport::default());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let marks: Vec<LateSpan> =
        rows.iter().map(|r| LateSpan { oldest: r.1, newest: r.2, results: r.3 }).collect();
    let plan = plan_refresh(&marks, now, raw_days);
    for window in &plan.windows {
        // A statement without parameters goes through the simple query protocol.
        let sql = window.sql();
        sqlx::Executor::execute(&mut *conn, sql.as_str()).await?;
    }
    sqlx::query("DELETE FROM late_results WHERE id = ANY($1)").bind(&ids).execute(&mut *conn).await?;
    let total: u64 = marks.iter().map(|m| u64::try_from(m.results).unwrap_or(0)).sum();
    Ok(LateReport { busy: false, marks: marks.len(), results: total - plan.skipped_results, plan })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    #[test]
    fn only_results_older_than_the_policies_reach_are_late() {
        let now = at(20, 12, 0);
        assert_eq!(late_cutoff(now), now - Duration::hours(70));
        type Case = (&'static str, Vec<DateTime<Utc>>, Option<LateSpan>);
        let cases: &[Case] = &[
            ("nothing stored", vec![], None),
            ("fresh results", vec![now, now - Duration::hours(69)], None),
            (
                "one three days late",
                vec![now, at(17, 11, 59)],
                Some(LateSpan { oldest: at(17, 11, 0), newest: at(17, 11, 0), results: 1 }),
            ),
            (
                "several, in any order",
                vec![at(10, 5, 30), now, at(17, 1, 0), at(3, 23, 59)],
                Some(LateSpan { oldest: at(3, 23, 0), newest: at(17, 1, 0), results: 3 }),
            ),
            ("just at the cutoff is not late", vec![now - Duration::hours(70)], None),
        ];
        for (name, times, want) in cases {
            assert_eq!(late_span(times.iter().copied(), now), *want, "{name}");
        }
    }

    #[test]
    fn marks_coalesce_into_one_window_per_aggregate() {
        let now = at(20, 12, 0);
        let mark = |oldest, newest, results| LateSpan { oldest, newest, results };
        let hourly = |start, end| Window { view: "rollup_hourly", start, end };
        let daily = |start, end| Window { view: "rollup_daily", start, end };
        let cases: Vec<(&str, Vec<LateSpan>, u32, RefreshPlan)> = vec![
            ("no marks", vec![], 90, RefreshPlan::default()),
            (
                "one hour",
                vec![mark(at(15, 7, 0), at(15, 7, 0), 4)],
                90,
                RefreshPlan {
                    windows: vec![hourly(at(15, 7, 0), at(15, 8, 0)), daily(at(15, 0, 0), at(16, 0, 0))],
                    skipped_results: 0,
                },
            ),
            (
                "overlapping and disjoint marks",
                vec![
                    mark(at(15, 7, 0), at(15, 9, 0), 2),
                    mark(at(10, 22, 0), at(11, 1, 0), 1),
                    mark(at(15, 8, 0), at(16, 3, 0), 5),
                ],
                90,
                RefreshPlan {
                    windows: vec![hourly(at(10, 22, 0), at(16, 4, 0)), daily(at(10, 0, 0), at(17, 0, 0))],
                    skipped_results: 0,
                },
            ),
            (
                // Raw retention of 8 days: the bound is 7 days back, 13 Nov 13:00.
                "clamped to the raw retention",
                vec![mark(at(1, 0, 0), at(2, 0, 0), 6), mark(at(12, 0, 0), at(14, 5, 0), 3)],
                8,
                RefreshPlan {
                    windows: vec![hourly(at(13, 13, 0), at(14, 6, 0)), daily(at(14, 0, 0), at(15, 0, 0))],
                    skipped_results: 6,
                },
            ),
            (
                "every mark before the bound",
                vec![mark(at(1, 0, 0), at(2, 0, 0), 6)],
                8,
                RefreshPlan { windows: vec![], skipped_results: 6 },
            ),
        ];
        for (name, marks, raw_days, want) in cases {
            assert_eq!(plan_refresh(&marks, now, raw_days), want, "{name}");
        }
    }

    #[test]
    fn the_refresh_statement_names_the_view_and_utc_bounds() {
        let w = Window { view: "rollup_daily", start: at(10, 0, 0), end: at(17, 0, 0) };
        assert_eq!(
            w.sql(),
            "CALL refresh_continuous_aggregate('rollup_daily', TIMESTAMPTZ '2026-11-10 00:00:00+00', \
             TIMESTAMPTZ '2026-11-17 00:00:00+00')"
        );
    }
}
