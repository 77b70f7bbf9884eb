//! TimescaleDB mode: whether the background jobs (refresh, compression, retention policies)
//! actually run. TimescaleDB runs them in its own background workers and a failing job is
//! visible only in its statistics (for example, on PostgreSQL 15.20 with TimescaleDB 2.28.3
//! every job failed with `cannot drop portal "" while it is being set up` while ingest and
//! reads went on), so the control plane reads `timescaledb_information.job_stats` every
//! `maintenance_interval_s` ([`read`]), evaluates it ([`evaluate`], pure) and publishes the
//! result as gauges (`control_plane_timeseries_jobs_failed{kind}`,
//! `control_plane_timeseries_jobs_overdue{kind}`) and as a `/readyz` detail line. Failing jobs
//! do not make the control plane unready: ingest and the API still work, and taking replicas
//! out of a load balancer would not make a job run.

use chrono::{DateTime, Duration, Utc};

use super::policies::PolicyKind;

/// The job kinds used as the `kind` label (a closed set).
pub const KINDS: [&str; 4] = ["refresh", "compression", "retention", "other"];

/// One job's statistics as [`read`] returns them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobStat {
    pub job_id: i32,
    pub proc_name: String,
    /// The job's schedule interval, in seconds.
    pub schedule_s: i64,
    /// `Success` or `Failed`; `None` before the first run.
    pub last_run_status: Option<String>,
    /// `Scheduled`, `Running` or `Paused`.
    pub job_status: Option<String>,
    pub next_start: Option<DateTime<Utc>>,
    pub last_successful_finish: Option<DateTime<Utc>>,
    pub total_failures: i64,
}

impl JobStat {
    /// The `kind` label of this job: one of [`KINDS`].
    pub fn kind(&self) -> &'static str {
        PolicyKind::from_proc_name(&self.proc_name).map_or("other", PolicyKind::label)
    }
}

/// A job is overdue when it is scheduled and its next start passed more than this long ago (or
/// more than one schedule interval, whichever is longer).
pub const OVERDUE_GRACE: Duration = Duration::minutes(10);

/// The health of one kind of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindHealth {
    pub jobs: u32,
    /// Jobs whose last run failed.
    pub failed: u32,
    /// Scheduled jobs whose next start is overdue (see [`OVERDUE_GRACE`]).
    pub overdue: u32,
}

/// The evaluation of every job: per kind, in the order of [`KINDS`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobHealth {
    pub kinds: [(&'static str, KindHealth); 4],
    /// `job 12 (refresh): last run failed`, one line per unhealthy job, by job id.
    pub problems: Vec<String>,
}

impl JobHealth {
    /// The `/readyz` detail line: `timeseries jobs: ok (6 jobs)` or
    /// `timeseries jobs: 2 failed (refresh 2), 1 overdue (retention 1)`.
    pub fn detail(&self) -> String {
        let total: u32 = self.kinds.iter().map(|(_, h)| h.jobs).sum();
        let part = |what: &str, pick: fn(&KindHealth) -> u32| {
            let n: u32 = self.kinds.iter().map(|(_, h)| pick(h)).sum();
            let per: Vec<String> = self
                .kinds
                .iter()
                .filter(|(_, h)| pick(h) > 0)
                .map(|(k, h)| format!("{k} {}", pick(h)))
                .collect();
            (n > 0).then(|| format!("{n} {what} ({})", per.join(", ")))
        };
        let parts: Vec<String> =
            [part("failed", |h| h.failed), part("overdue", |h| h.overdue)].into_iter().flatten().collect();
        if parts.is_empty() {
            format!("timeseries jobs: ok ({total} jobs)")
        } else {
            format!("timeseries jobs: {}", parts.join(", "))
        }
    }
}

/// Evaluates `stats` at `now`: a job failed when its last run did; it is overdue when it is
/// `Scheduled` and its next start lies more than max(schedule interval, [`OVERDUE_GRACE`]) in
/// the past. Running and paused jobs are never overdue.
pub fn evaluate(stats: &[JobStat], now: DateTime<Utc>) -> JobHealth {
    let mut health = JobHealth { kinds: KINDS.map(|k| (k, KindHealth::default())), problems: Vec::new() };
    let mut sorted: Vec<&JobStat> = stats.iter().collect();
    sorted.sort_by_key(|s| s.job_id);
    for s in sorted {
        let kind = s.kind();
        let Some((_, h)) = health.kinds.iter_mut().find(|(k, _)| *k == kind) else { continue };
        h.jobs += 1;
        if s.last_run_status.as_deref() == Some("Failed") {
            h.failed += 1;
            let since = s
                .last_successful_finish
                .map_or_else(|| "never succeeded".to_owned(), |t| format!("last success {}", t.to_rfc3339()));
            health.problems.push(format!(
                "job {} ({kind}): last run failed, {} failures, {since}",
                s.job_id, s.total_failures
            ));
        }
        let grace = Duration::seconds(s.schedule_s).max(OVERDUE_GRACE);
        if s.job_status.as_deref() == Some("Scheduled") && s.next_start.is_some_and(|next| next + grace < now)
        {
            h.overdue += 1;
            health.problems.push(format!(
                "job {} ({kind}): overdue since {}",
                s.job_id,
                s.next_start.map(|t| t.to_rfc3339()).unwrap_or_default()
            ));
        }
    }
    health
}

/// Every job's statistics with its procedure and schedule.
pub const JOB_STATS: &str = "\
    SELECT s.job_id, j.proc_name::text AS proc_name, \
           coalesce(extract(epoch FROM j.schedule_interval), 0)::bigint AS schedule_s, \
           s.last_run_status::text AS last_run_status, s.job_status::text AS job_status, \
           s.next_start, s.last_successful_finish, coalesce(s.total_failures, 0)::bigint AS total_failures \
    FROM timescaledb_information.job_stats s \
    JOIN timescaledb_information.jobs j ON j.job_id = s.job_id \
    ORDER BY s.job_id";

/// Reads [`JOB_STATS`].
pub async fn read(pool: &sqlx::PgPool) -> Result<Vec<JobStat>, sqlx::Error> {
    sqlx::query_as(JOB_STATS).fetch_all(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn job(id: i32, proc_name: &str) -> JobStat {
        JobStat {
            job_id: id,
            proc_name: proc_name.into(),
            schedule_s: 300,
            last_run_status: Some("Success".into()),
            job_status: Some("Scheduled".into()),
            next_start: None,
            last_successful_finish: None,
            total_failures: 0,
        }
    }

    #[test]
    fn failed_and_overdue_jobs_are_counted_per_kind() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let failed = JobStat {
            last_run_status: Some("Failed".into()),
            total_failures: 42,
            next_start: Some(now + Duration::minutes(1)),
            ..job(1000, "policy_refresh_continuous_aggregate")
        };
        let late_hourly = JobStat {
            schedule_s: 3_600,
            next_start: Some(now - Duration::minutes(50)),
            ..job(1001, "policy_refresh_continuous_aggregate")
        };
        let overdue = JobStat {
            schedule_s: 86_400,
            next_start: Some(now - Duration::days(2)),
            ..job(1002, "policy_retention")
        };
        let overdue_short =
            JobStat { next_start: Some(now - Duration::minutes(11)), ..job(1003, "policy_compression") };
        let not_yet =
            JobStat { next_start: Some(now - Duration::minutes(9)), ..job(1004, "policy_compression") };
        let paused = JobStat {
            job_status: Some("Paused".into()),
            next_start: Some(now - Duration::days(9)),
            ..job(1005, "policy_retention")
        };
        let running = JobStat {
            job_status: Some("Running".into()),
            next_start: Some(now - Duration::days(1)),
            ..job(1006, "policy_retention")
        };
        let telemetry = JobStat { last_run_status: Some("Failed".into()), ..job(1, "policy_telemetry") };
        let never_ran = JobStat { last_run_status: None, ..job(1007, "policy_retention") };

        // (name, jobs, per kind (jobs, failed, overdue), /readyz detail)
        type Case = (&'static str, Vec<JobStat>, [(u32, u32, u32); 4], &'static str);
        let cases: Vec<Case> = vec![
            ("no jobs", vec![], [(0, 0, 0); 4], "timeseries jobs: ok (0 jobs)"),
            (
                "healthy jobs",
                vec![
                    late_hourly.clone(),
                    not_yet.clone(),
                    paused.clone(),
                    running.clone(),
                    never_ran.clone(),
                ],
                [(1, 0, 0), (1, 0, 0), (3, 0, 0), (0, 0, 0)],
                "timeseries jobs: ok (5 jobs)",
            ),
            (
                "a failing refresh",
                vec![failed.clone(), late_hourly.clone()],
                [(2, 1, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)],
                "timeseries jobs: 1 failed (refresh 1)",
            ),
            (
                "overdue jobs of two kinds",
                vec![overdue.clone(), overdue_short.clone(), not_yet.clone()],
                [(0, 0, 0), (2, 0, 1), (1, 0, 1), (0, 0, 0)],
                "timeseries jobs: 2 overdue (compression 1, retention 1)",
            ),
            (
                "everything at once",
                vec![telemetry.clone(), failed.clone(), overdue.clone()],
                [(1, 1, 0), (0, 0, 0), (1, 0, 1), (1, 1, 0)],
                "timeseries jobs: 2 failed (refresh 1, other 1), 1 overdue (retention 1)",
            ),
        ];
        for (name, stats, want, detail) in cases {
            let health = evaluate(&stats, now);
            let got: Vec<(u32, u32, u32)> =
                health.kinds.iter().map(|(_, h)| (h.jobs, h.failed, h.overdue)).collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(health.detail(), detail, "{name}");
        }
        let health = evaluate(&[overdue, failed], now);
        assert_eq!(
            health.problems,
            [
                "job 1000 (refresh): last run failed, 42 failures, never succeeded".to_owned(),
                "job 1002 (retention): overdue since 2026-11-29T12:00:00+00:00".to_owned(),
            ]
        );
    }
}
