//! TimescaleDB mode: the background policies (retention, compression, continuous-aggregate
//! refresh) reconciled with the configuration at every start, without recreating them.
//!
//! A policy is a TimescaleDB job; removing and adding it again at each start would give it a
//! new job id, lose its run history and statistics, and run a new retention job at once. So
//! [`reconcile`] reads the existing jobs from `timescaledb_information.jobs` and [`plan`] (pure)
//! decides, per wanted policy: none of its kind on its relation → add it; one with different
//! settings → `alter_job` that job (same id, its config with the changed keys replaced);
//! the same settings → nothing. Jobs this module does not want are left alone.
//!
//! The statements are built as SQL text from closed sets (the relation names are constants,
//! intervals are whole seconds) and run in one transaction under an advisory lock, so replicas
//! starting together do not both add a policy.

use std::collections::BTreeMap;

use anyhow::Context;
use sqlx::PgPool;

use super::rollup::Retention;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
const MINUTE: i64 = 60;

/// The kind of a TimescaleDB policy job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `policy_retention`: drops chunks older than `drop_after`.
    Retention,
    /// `policy_compression`: compresses chunks older than `compress_after`.
    Compression,
    /// `policy_refresh_continuous_aggregate`: refreshes `[now - start_offset, now - end_offset]`.
    Refresh,
}

impl PolicyKind {
    /// The job's procedure name in `timescaledb_information.jobs`.
    pub fn proc_name(self) -> &'static str {
        match self {
            PolicyKind::Retention => "policy_retention",
            PolicyKind::Compression => "policy_compression",
            PolicyKind::Refresh => "policy_refresh_continuous_aggregate",
        }
    }

    /// The kind of a procedure name; `None` for jobs that are not one of these policies.
    pub fn from_proc_name(name: &str) -> Option<PolicyKind> {
        [PolicyKind::Retention, PolicyKind::Compression, PolicyKind::Refresh]
            .into_iter()
            .find(|k| k.proc_name() == name)
    }

    /// The metric label: `retention`, `compression`, `refresh`.
    pub fn label(self) -> &'static str {
        match self {
            PolicyKind::Retention => "retention",
            PolicyKind::Compression => "compression",
            PolicyKind::Refresh => "refresh",
        }
    }
}

/// A continuous aggregate's refresh policy (bucket width and window, in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    pub view: &'static str,
    pub bucket_s: i64,
    pub start_offset_s: i64,
    pub end_offset_s: i64,
    pub schedule_s: i64,
}

/// The refresh policies of `rollup_hourly` and `rollup_daily` (as created by the 0001
/// migration: the last 3 days every 5 minutes, the last 4 days every hour).
pub const REFRESH_POLICIES: [RefreshPolicy; 2] = [
    RefreshPolicy {
        view: "rollup_hourly",
        bucket_s: HOUR,
        start_offset_s: 3 * DAY,
        end_offset_s: HOUR,
        schedule_s: 5 * MINUTE,
    },
    RefreshPolicy {
        view: "rollup_daily",
        bucket_s: DAY,
        start_offset_s: 4 * DAY,
        end_offset_s: DAY,
        schedule_s: HOUR,
    },
];

/// Raw chunks are compressed after this long (seconds).
pub const COMPRESS_AFTER_S: i64 = 7 * DAY;

/// One policy as wanted: its kind, relation, the config keys it sets (interval settings, in
/// seconds) and its schedule when this module sets one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub relation: &'static str,
    pub settings: Vec<(&'static str, i64)>,
    pub schedule_s: Option<i64>,
}

/// Every policy the time-series database should have under `retention`.
pub fn wanted(retention: Retention) -> Vec<Policy> {
    let retention_policy = |relation, days: u32| Policy {
        kind: PolicyKind::Retention,
        relation,
        settings: vec![("drop_after", i64::from(days) * DAY)],
        schedule_s: None,
    };
    let mut out = vec![
        retention_policy("probe_results", retention.raw_days),
        retention_policy("rollup_hourly", retention.rollup_days),
        retention_policy("rollup_daily", retention.rollup_days),
        Policy {
            kind: PolicyKind::Compression,
            relation: "probe_results",
            settings: vec![("compress_after", COMPRESS_AFTER_S)],
            schedule_s: None,
        },
    ];
    for r in REFRESH_POLICIES {
        out.push(Policy {
            kind: PolicyKind::Refresh,
            relation: r.view,
            settings: vec![("start_offset", r.start_offset_s), ("end_offset", r.end_offset_s)],
            schedule_s: Some(r.schedule_s),
        });
    }
    out
}

/// A policy job as `timescaledb_information.jobs` shows it: `relation` is the hypertable or,
/// for a continuous aggregate's jobs, the aggregate's view; `settings` the interval keys of its
/// config in seconds (`None` when absent or NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingJob {
    pub job_id: i32,
    pub kind: PolicyKind,
    pub relation: String,
    pub schedule_s: i64,
    pub config: serde_json::Value,
    pub settings: BTreeMap<String, Option<i64>>,
}

/// What [`plan`] decided for one wanted policy that needs a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// No job of this kind on this relation: add one.
    Add(Policy),
    /// Job `job_id` has other settings: give it `config` (its own with the wanted keys
    /// replaced) and, when set, `schedule_s`.
    Alter { job_id: i32, policy: Policy, config: serde_json::Value, schedule_s: Option<i64> },
}

impl Action {
    /// The statement that carries the action out, as SQL text.
    pub fn sql(&self) -> String {
        match self {
            Action::Add(p) => {
                let function = match p.kind {
                    PolicyKind::Retention => "add_retention_policy",
                    PolicyKind::Compression => "add_compression_policy",
                    PolicyKind::Refresh => "add_continuous_aggregate_policy",
                };
                let mut args = vec![format!("'{}'", p.relation)];
                for (key, secs) in &p.settings {
                    args.push(format!("{key} => INTERVAL '{}'", interval_text(*secs)));
                }
                if let Some(s) = p.schedule_s {
                    args.push(format!("schedule_interval => INTERVAL '{}'", interval_text(s)));
                }
                format!("SELECT {function}({})", args.join(", "))
            }
            Action::Alter { job_id, config, schedule_s, .. } => {
                let config = config.to_string().replace('\'', "''");
                let schedule = schedule_s
                    .map(|s| format!(", schedule_interval => INTERVAL '{}'", interval_text(s)))
                    .unwrap_or_default();
                format!("SELECT alter_job({job_id}, config => '{config}'::jsonb{schedule})")
            }
        }
    }

    /// For the log: `add retention policy on probe_results`, `alter job 12 (retention on ...)`.
    pub fn describe(&self) -> String {
        match self {
            Action::Add(p) => format!("add {} policy on {}", p.kind.label(), p.relation),
            Action::Alter { job_id, policy, .. } => {
                format!("alter job {job_id} ({} policy on {})", policy.kind.label(), policy.relation)
            }
        }
    }
}

/// An interval in seconds as PostgreSQL reads it, in the largest whole unit: `30 days`,
/// `1 hour`, `5 minutes`, `90 seconds`.
pub fn interval_text(secs: i64) -> String {
    let (n, unit) = if secs != 0 && secs % DAY == 0 {
        (secs / DAY, "day")
    } else if secs != 0 && secs % HOUR == 0 {
        (secs / HOUR, "hour")
    } else if secs != 0 && secs % MINUTE == 0 {
        (secs / MINUTE, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The changes that make `existing` jobs match `wanted` policies, in the order of `wanted`;
/// empty when everything matches. Of several jobs of one kind on one relation (TimescaleDB
/// allows one), the lowest id is the one compared.
pub fn plan(wanted: &[Policy], existing: &[ExistingJob]) -> Vec<Action> {
    let mut actions = Vec::new();
    for policy in wanted {
        let job = existing
            .iter()
            .filter(|j| j.kind == policy.kind && j.relation == policy.relation)
            .min_by_key(|j| j.job_id);
        let Some(job) = job else {
            actions.push(Action::Add(policy.clone()));
            continue;
        };
        let settings_differ = policy
            .settings
            .iter()
            .any(|(key, secs)| job.settings.get(*key).copied().flatten() != Some(*secs));
        let schedule = policy.schedule_s.filter(|s| *s != job.schedule_s);
        if !settings_differ && schedule.is_none() {
            continue;
        }
        let mut config = match &job.config {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        for (key, secs) in &policy.settings {
            config.insert((*key).to_owned(), serde_json::Value::String(interval_text(*secs)));
        }
        actions.push(Action::Alter {
            job_id: job.job_id,
            policy: policy.clone(),
            config: serde_json::Value::Object(config),
            schedule_s: schedule,
        });
    }
    actions
}

/// The policy jobs on relations of the current schema, with each continuous aggregate's jobs
/// named by its view (TimescaleDB versions differ in whether `jobs` shows the view or its
/// materialization hypertable; the join covers both).
pub const EXISTING_JOBS: &str = "\
    SELECT j.job_id, j.proc_name::text AS proc_name, \
           coalesce(c.view_name, j.hypertable_name)::text AS relation, \
           extract(epoch FROM j.schedule_interval)::bigint AS schedule_s, j.config, \
           extract(epoch FROM (j.config->>'drop_after')::interval)::bigint AS drop_after, \
           extract(epoch FROM (j.config->>'compress_after')::interval)::bigint AS compress_after, \
           extract(epoch FROM (j.config->>'start_offset')::interval)::bigint AS start_offset, \
           extract(epoch FROM (j.config->>'end_offset')::interval)::bigint AS end_offset \
    FROM timescaledb_information.jobs j \
    LEFT JOIN timescaledb_information.continuous_aggregates c \
      ON c.materialization_hypertable_schema = j.hypertable_schema \
     AND c.materialization_hypertable_name = j.hypertable_name \
    WHERE j.proc_name IN ('policy_retention', 'policy_compression', 'policy_refresh_continuous_aggregate') \
      AND coalesce(c.view_schema, j.hypertable_schema) = current_schema() \
    ORDER BY j.job_id";

type JobRow =
    (i32, String, String, i64, Option<serde_json::Value>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Reads the existing policy jobs ([`EXISTING_JOBS`]).
pub async fn existing_jobs(conn: &mut sqlx::PgConnection) -> Result<Vec<ExistingJob>, sqlx::Error> {
    let rows: Vec<JobRow> = sqlx::query_as(EXISTING_JOBS).fetch_all(conn).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(job_id, proc_name, relation, schedule_s, config, drop, compress, start, end)| {
            let kind = PolicyKind::from_proc_name(&proc_name)?;
            let settings = [
                ("drop_after", drop),
                ("compress_after", compress),
                ("start_offset", start),
                ("end_offset", end),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            Some(ExistingJob {
                job_id,
                kind,
                relation,
                schedule_s,
                config: config.unwrap_or(serde_json::Value::Null),
                settings,
            })
        })
        .collect())
}

/// The shortest raw retention TimescaleDB mode accepts.
pub const MIN_TIMESCALE_RAW_DAYS: u32 = 7;

/// Makes the database's policies match [`wanted`]`(retention)`: reads the jobs, applies
/// [`plan`] in one transaction under an advisory lock. The actions taken (none when the
/// settings did not change). Errors: `retention_raw_days` below [`MIN_TIMESCALE_RAW_DAYS`],
/// or a database error naming the action that failed.
pub async fn reconcile(pool: &PgPool, retention: Retention) -> anyhow::Result<Vec<Action>> {
    // Raw chunks inside the continuous aggregates' refresh windows (up to 4 days back) must not
    // be dropped: a refresh over a dropped range would erase those roll-ups.
    anyhow::ensure!(
        retention.raw_days >= MIN_TIMESCALE_RAW_DAYS,
        "retention_raw_days must be at least {MIN_TIMESCALE_RAW_DAYS} with TimescaleDB (its roll-ups are \
         refreshed over the last 4 days)"
    );
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('crosscheck retention policies'))")
        .execute(&mut *tx)
        .await?;
    let existing = existing_jobs(&mut tx).await.context("reading timescaledb_information.jobs")?;
    let actions = plan(&wanted(retention), &existing);
    for action in &actions {
        let sql = action.sql();
        sqlx::Executor::execute(&mut *tx, sql.as_str()).await.with_context(|| action.describe())?;
    }
    tx.commit().await?;
    for action in &actions {
        tracing::info!(action = %action.describe(), "time-series policy changed");
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn retention(raw_days: u32, rollup_days: u32) -> Retention {
        Retention { raw_days, rollup_days, partitions_ahead_days: 3 }
    }

    /// The jobs as TimescaleDB would hold them after adding `policies`, ids from 1000.
    fn jobs_for(policies: &[Policy]) -> Vec<ExistingJob> {
        policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut settings: BTreeMap<String, Option<i64>> =
                    ["drop_after", "compress_after", "start_offset", "end_offset"]
                        .into_iter()
                        .map(|k| (k.to_owned(), None))
                        .collect();
                let mut config = serde_json::Map::new();
                config.insert("hypertable_id".into(), json!(i + 1));
                for (k, s) in &p.settings {
                    settings.insert((*k).to_owned(), Some(*s));
                    config.insert((*k).to_owned(), json!(interval_text(*s)));
                }
                ExistingJob {
                    job_id: 1000 + i as i32,
                    kind: p.kind,
                    relation: p.relation.to_owned(),
                    schedule_s: p.schedule_s.unwrap_or(DAY),
                    config: serde_json::Value::Object(config),
                    settings,
                }
            })
            .collect()
    }

    #[test]
    fn plan_adds_missing_alters_changed_and_leaves_the_rest() {
        let want = wanted(retention(90, 730));
        let same = jobs_for(&want);
        let mut raw_30 = same.clone();
        raw_30[0].settings.insert("drop_after".into(), Some(30 * DAY));
        let mut slow_refresh = same.clone();
        slow_refresh[4].schedule_s = HOUR;
        let mut foreign = same.clone();
        foreign.push(ExistingJob { job_id: 7, relation: "other_table".into(), ..same[0].clone() });
        let mut duplicate = same.clone();
        duplicate.push(ExistingJob { job_id: 2000, ..same[1].clone() });
        duplicate[1].settings.insert("drop_after".into(), Some(DAY));

        struct Case {
            name: &'static str,
            existing: Vec<ExistingJob>,
            want: Vec<String>,
        }
        let cases = [
            Case {
                name: "a new database gets every policy",
                existing: vec![],
                want: want
                    .iter()
                    .map(|p| format!("add {} policy on {}", p.kind.label(), p.relation))
                    .collect(),
            },
            Case { name: "unchanged settings touch nothing", existing: same.clone(), want: vec![] },
            Case {
                name: "a changed raw retention alters that job only",
                existing: raw_30,
                want: vec!["alter job 1000 (retention policy on probe_results)".into()],
            },
            Case {
                name: "a changed schedule alters the refresh job",
                existing: slow_refresh,
                want: vec!["alter job 1004 (refresh policy on rollup_hourly)".into()],
            },
            Case { name: "jobs on other relations are left alone", existing: foreign, want: vec![] },
            Case {
                name: "of two jobs the lowest id is compared",
                existing: duplicate,
                want: vec!["alter job 1001 (retention policy on rollup_hourly)".into()],
            },
            Case {
                name: "only the compression policy is missing",
                existing: same.iter().filter(|j| j.kind != PolicyKind::Compression).cloned().collect(),
                want: vec!["add compression policy on probe_results".into()],
            },
        ];
        for case in cases {
            let got: Vec<String> = plan(&want, &case.existing).iter().map(Action::describe).collect();
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn an_alter_keeps_the_job_config_and_replaces_the_changed_keys() {
        let want = wanted(retention(30, 730));
        let existing = jobs_for(&wanted(retention(90, 730)));
        let actions = plan(&want, &existing);
        assert_eq!(actions.len(), 1);
        assert_eq!(
            actions[0].sql(),
            r#"SELECT alter_job(1000, config => '{"drop_after":"30 days","hypertable_id":1}'::jsonb)"#
        );
        let mut slow = existing.clone();
        slow[5].schedule_s = 2 * HOUR;
        slow[5].settings.insert("start_offset".into(), Some(DAY));
        let actions = plan(&wanted(retention(90, 730)), &slow);
        assert_eq!(
            actions[0].sql(),
            "SELECT alter_job(1005, config => '{\"end_offset\":\"1 day\",\"hypertable_id\":6,\"start_offset\":\
             \"4 days\"}'::jsonb, schedule_interval => INTERVAL '1 hour')"
        );
    }

    #[test]
    fn add_statements_name_the_relation_and_intervals() {
        let sql: Vec<String> = wanted(retention(90, 730)).into_iter().map(|p| Action::Add(p).sql()).collect();
        assert_eq!(
            sql,
            [
                "SELECT add_retention_policy('probe_results', drop_after => INTERVAL '90 days')",
                "SELECT add_retention_policy('rollup_hourly', drop_after => INTERVAL '730 days')",
                "SELECT add_retention_policy('rollup_daily', drop_after => INTERVAL '730 days')",
                "SELECT add_compression_policy('probe_results', compress_after => INTERVAL '7 days')",
                "SELECT add_continuous_aggregate_policy('rollup_hourly', start_offset => INTERVAL '3 days', \
                 end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes')",
                "SELECT add_continuous_aggregate_policy('rollup_daily', start_offset => INTERVAL '4 days', \
                 end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour')",
            ]
        );
    }

    #[test]
    fn intervals_are_written_in_the_largest_whole_unit() {
        for (secs, text) in [
            (0, "0 seconds"),
            (1, "1 second"),
            (90, "90 seconds"),
            (300, "5 minutes"),
            (3_600, "1 hour"),
            (7_200, "2 hours"),
            (DAY, "1 day"),
            (30 * DAY, "30 days"),
            (DAY + HOUR, "25 hours"),
        ] {
            assert_eq!(interval_text(secs), text);
        }
    }

    #[test]
    fn kinds_round_trip_through_their_procedure_names() {
        for kind in [PolicyKind::Retention, PolicyKind::Compression, PolicyKind::Refresh] {
            assert_eq!(PolicyKind::from_proc_name(kind.proc_name()), Some(kind));
        }
        assert_eq!(PolicyKind::from_proc_name("policy_telemetry"), None);
    }
}
