//! TimescaleDB mode as far as plain PostgreSQL can show it: migrating as a role that is not a
//! superuser, the released 0001 checksum, and, against a fake TimescaleDB catalog created in a
//! scratch database (`timescaledb_information.jobs`, `.continuous_aggregates`, `.job_stats`
//! and the policy functions, recording their calls), policies created once and altered in
//! place, late results refreshed outside a transaction, and the background jobs' health.

use chrono::{DateTime, Duration, Utc};
use control_plane::timeseries::{self, late, policies, IngestBatch, Retention, StorageMode, Timeseries};
use control_plane::Config;
use prometheus_client::registry::Registry;
use shared::proto::ProbeResult;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::helpers::{ScratchDb, ADMIN_URL};

fn ts_config(url: &str) -> Config {
    Config {
        timeseries_url: url.to_owned(),
        timeseries_write_connections: 1,
        timeseries_read_connections: 2,
        ingest_wait_ms: 2_000,
        ..Config::default()
    }
}

/// A LOGIN role that is not a superuser, owning two fresh databases (transactional and
/// time-series); all three are dropped when it is.
struct PlainRole {
    role: String,
    databases: [String; 2],
}

impl PlainRole {
    async fn create() -> Self {
        let role = format!("cctest_role_{}", Uuid::new_v4().simple());
        let databases = [format!("{role}_tx"), format!("{role}_ts")];
        let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("connect as postgres");
        sqlx::query(&format!("CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"))
            .execute(&mut admin)
            .await
            .expect("create the role");
        for db in &databases {
            sqlx::query(&format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""))
                .execute(&mut admin)
                .await
                .expect("create a database owned by the role");
        }
        PlainRole { role, databases }
    }

    fn url(&self, i: usize) -> String {
        format!("postgres://{}@127.0.0.1:5432/{}", self.role, self.databases[i])
    }

    fn drop_all(&mut self) {
        let role = std::mem::take(&mut self.role);
        if role.is_empty() {
            return;
        }
        let databases = self.databases.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_URL).await {
                    for db in databases {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                    }
                    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\"")).execute(&mut admin).await;
                }
            });
        })
        .join();
    }
}

impl Drop for PlainRole {
    fn drop(&mut self) {
        self.drop_all();
    }
}

/// `control-plane migrate` as a role that may not read `shared_preload_libraries`: both
/// databases are migrated and the storage mode is decided without an error. The time-series
/// database is made to offer TimescaleDB (a `pg_available_extensions` listing it, found before
/// pg_catalog's through the role's search_path), so the check goes on to the preload, as on a
/// server with the package installed but not preloaded: plain mode, no permission error.
#[tokio::test]
async fn a_role_that_is_not_a_superuser_migrates_both_databases() {
    let role = PlainRole::create().await;
    let ts_admin = format!("postgres://postgres@127.0.0.1:5432/{}", role.databases[1]);
    let mut admin = sqlx::PgConnection::connect(&ts_admin).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA offered; \
         CREATE VIEW offered.pg_available_extensions AS \
             SELECT 'timescaledb'::name AS name, '2.28.3'::text AS default_version, \
                    NULL::text AS installed_version, 'fake'::text AS comment; \
         GRANT USAGE ON SCHEMA offered TO \"{role}\"; \
         GRANT SELECT ON offered.pg_available_extensions TO \"{role}\"; \
         ALTER ROLE \"{role}\" IN DATABASE \"{db}\" SET search_path = public, offered, pg_catalog",
        role = role.role,
        db = role.databases[1],
    ))
    .execute(&mut admin)
    .await
    .expect("offer TimescaleDB");
    admin.close().await.unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CROSSCHECK_") {
            command.env_remove(key);
        }
    }
    let output = command
        .arg("migrate")
        .env("CROSSCHECK_DATABASE_URL", role.url(0))
        .env("CROSSCHECK_TIMESERIES_URL", role.url(1))
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("run control-plane");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "migrate failed: {stdout}{stderr}");
    assert!(stdout.contains("migrated the transactional database"), "{stdout}");
    assert!(stdout.contains("migrated the time-series database (plain storage)"), "{stdout}");
    // The log says what the server offers, the preload list being unreadable for this role.
    assert!(stderr.contains("available=yes installed=no loader_setting=no preload=unreadable"), "{stderr}");

    let pool = PgPool::connect(&role.url(1)).await.unwrap();
    let denied = sqlx::query("SELECT current_setting('shared_preload_libraries')").execute(&pool).await;
    assert!(denied.is_err(), "the role may not read the preload list, so the check must not either");
    let facts = timeseries::timescale_facts(&pool).await.expect("any role reads the facts");
    assert_eq!(facts.preload, None);
    assert!(facts.available && !facts.installed && !facts.loader_setting, "{facts:?}");
    let mode: String = sqlx::query_scalar("SELECT mode FROM storage_meta").fetch_one(&pool).await.unwrap();
    assert_eq!(mode, "plain");
    pool.close().await;

    // Serving as the same role: the store opens (migrations already applied) in plain mode.
    let ts = Timeseries::connect(&ts_config(&role.url(1)), &mut Registry::default()).await.expect("connects");
    assert_eq!(ts.mode(), StorageMode::Plain);
    ts.close().await;
}

/// A database migrated by the released 0001 (its preload check) keeps migrating.
#[tokio::test]
async fn the_released_0001_checksum_is_accepted() {
    let db = ScratchDb::create("tsck").await;
    let config = ts_config(&db.url);
    timeseries::migrate_database(&config).await.expect("first migration");
    let pool = PgPool::connect(&db.url).await.unwrap();
    let released =
        "284e4615c9f3a0485dcc7379b4254531a5bdd1985db74bff0df586986863a7caa674c6889fb72dead386b98f8e59971a";
    sqlx::query("UPDATE _sqlx_migrations SET checksum = decode($1, 'hex') WHERE version = 1")
        .bind(released)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(timeseries::migrate_database(&config).await.expect("migrates again"), StorageMode::Plain);
    let current = timeseries::MIGRATOR.iter().find(|m| m.version == 1).unwrap().checksum.to_vec();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, current);
    // Any other checksum is still refused: 0001 was really changed.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    assert!(timeseries::migrate_database(&config).await.is_err());
    pool.close().await;
    db.drop_now().await;
}

/// The parts of TimescaleDB's catalog this control plane reads and calls, as plain tables and
/// functions that record each call in `fake_calls`. The continuous aggregates' jobs show their
/// materialization hypertables, as some TimescaleDB versions do.
const FAKE_CATALOG: &str = r#"
CREATE SCHEMA timescaledb_information;
CREATE TABLE fake_calls (n bigint GENERATED ALWAYS AS IDENTITY, call text NOT NULL);
CREATE TABLE timescaledb_information.jobs (
    job_id            serial PRIMARY KEY,
    proc_name         name NOT NULL,
    hypertable_schema name,
    hypertable_name   name,
    schedule_interval interval NOT NULL,
    config            jsonb
);
SELECT setval('timescaledb_information.jobs_job_id_seq', 1000);
CREATE TABLE timescaledb_information.continuous_aggregates (
    view_schema name, view_name name,
    materialization_hypertable_schema name, materialization_hypertable_name name
);
INSERT INTO timescaledb_information.continuous_aggregates VALUES
    ('public', 'rollup_hourly', '_timescaledb_internal', '_materialized_hypertable_2'),
    ('public', 'rollup_daily', '_timescaledb_internal', '_materialized_hypertable_3');
CREATE TABLE timescaledb_information.job_stats (
    job_id integer, last_run_status text, job_status text, next_start timestamptz,
    last_successful_finish timestamptz, total_failures bigint
);

CREATE FUNCTION fake_add_job(proc name, relation regclass, schedule interval, config jsonb)
RETURNS integer LANGUAGE sql AS $$
    INSERT INTO timescaledb_information.jobs (proc_name, hypertable_schema, hypertable_name, schedule_interval, config)
    SELECT proc, coalesce(c.materialization_hypertable_schema, 'public'),
           coalesce(c.materialization_hypertable_name, relation::text), schedule, config
    FROM (SELECT 1) AS one
    LEFT JOIN timescaledb_information.continuous_aggregates c ON c.view_name = relation::text
    RETURNING job_id
$$;
CREATE FUNCTION add_retention_policy(relation regclass, drop_after interval) RETURNS integer
LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO fake_calls (call) VALUES (format('add_retention_policy %s %s', relation, drop_after));
    RETURN fake_add_job('policy_retention', relation, '1 day', jsonb_build_object('drop_after', drop_after::text, 'hypertable_id', 1));
END $$;
CREATE FUNCTION add_compression_policy(hypertable regclass, compress_after interval) RETURNS integer
LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO fake_calls (call) VALUES (format('add_compression_policy %s %s', hypertable, compress_after));
    RETURN fake_add_job('policy_compression', hypertable, '12 hours', jsonb_build_object('compress_after', compress_after::text, 'hypertable_id', 1));
END $$;
CREATE FUNCTION add_continuous_aggregate_policy(continuous_aggregate regclass, start_offset interval,
    end_offset interval, schedule_interval interval) RETURNS integer
LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO fake_calls (call) VALUES (format('add_continuous_aggregate_policy %s', continuous_aggregate));
    RETURN fake_add_job('policy_refresh_continuous_aggregate', continuous_aggregate, schedule_interval,
        jsonb_build_object('start_offset', start_offset::text, 'end_offset', end_offset::text, 'mat_hypertable_id', 2));
END $$;
CREATE FUNCTION alter_job(job_id integer, schedule_interval interval DEFAULT NULL, config jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO fake_calls (call) VALUES (format('alter_job %s', job_id));
    UPDATE timescaledb_information.jobs j
    SET config = coalesce(alter_job.config, j.config),
        schedule_interval = coalesce(alter_job.schedule_interval, j.schedule_interval)
    WHERE j.job_id = alter_job.job_id;
END $$;
CREATE FUNCTION remove_retention_policy(relation regclass, if_exists boolean DEFAULT false) RETURNS void
LANGUAGE sql AS $$ INSERT INTO fake_calls (call) VALUES ('remove_retention_policy') $$;
-- A procedure that commits is refused inside a transaction block, as the real refresh is.
CREATE PROCEDURE refresh_continuous_aggregate(continuous_aggregate regclass, window_start timestamptz,
    window_end timestamptz)
LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO fake_calls (call) VALUES (format('refresh %s %s %s', continuous_aggregate,
        to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), to_char(window_end AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')));
    COMMIT;
END $$;
"#;

/// A plain-mode database with the fake catalog.
async fn fake_timescale(label: &str) -> (ScratchDb, PgPool) {
    let db = ScratchDb::create(label).await;
    timeseries::migrate_database(&ts_config(&db.url)).await.expect("migrates");
    let pool = PgPool::connect(&db.url).await.unwrap();
    sqlx::raw_sql(FAKE_CATALOG).execute(&pool).await.expect("the fake catalog");
    (db, pool)
}

async fn calls(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT call FROM fake_calls ORDER BY n").fetch_all(pool).await.unwrap()
}

async fn jobs(pool: &PgPool) -> Vec<(i32, String, String)> {
    sqlx::query_as(
        "SELECT job_id, proc_name::text, config::text FROM timescaledb_information.jobs ORDER BY job_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn retention(raw_days: u32) -> Retention {
    Retention { raw_days, rollup_days: 730, partitions_ahead_days: 3 }
}

#[tokio::test]
async fn policies_are_created_once_and_altered_in_place() {
    let (db, pool) = fake_timescale("tspol").await;

    let actions = policies::reconcile(&pool, retention(90)).await.expect("first start");
    assert_eq!(actions.len(), 6, "{actions:?}");
    let created = jobs(&pool).await;
    assert_eq!(created.len(), 6);
    assert_eq!(
        calls(&pool).await,
        [
            "add_retention_policy probe_results 90 days",
            "add_retention_policy rollup_hourly 730 days",
            "add_retention_policy rollup_daily 730 days",
            "add_compression_policy probe_results 7 days",
            "add_continuous_aggregate_policy rollup_hourly",
            "add_continuous_aggregate_policy rollup_daily",
        ]
    );

    // A restart with the same settings touches nothing.
    let actions = policies::reconcile(&pool, retention(90)).await.expect("second start");
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(jobs(&pool).await, created);
    assert_eq!(calls(&pool).await.len(), 6);

    // A shorter raw retention alters that one job: same id, new drop_after, nothing removed.
    let actions = policies::reconcile(&pool, retention(30)).await.expect("changed settings");
    assert_eq!(actions.len(), 1, "{actions:?}");
    let after = jobs(&pool).await;
    assert_eq!(
        after.iter().map(|j| j.0).collect::<Vec<_>>(),
        created.iter().map(|j| j.0).collect::<Vec<_>>()
    );
    let raw = &after[0];
    assert_eq!(raw.1, "policy_retention");
    let config: serde_json::Value = serde_json::from_str(&raw.2).unwrap();
    assert_eq!(config, serde_json::json!({"drop_after": "30 days", "hypertable_id": 1}));
    let all = calls(&pool).await;
    assert_eq!(all[6..], [format!("alter_job {}", raw.0)]);
    assert!(!all.iter().any(|c| c.starts_with("remove")), "{all:?}");

    // A refresh policy whose window was changed by hand is put back, in place.
    let hourly = after[4].0;
    sqlx::query(
        "UPDATE timescaledb_information.jobs SET config = config || '{\"start_offset\": \"1 day\"}', \
         schedule_interval = '1 hour' WHERE job_id = $1",
    )
    .bind(hourly)
    .execute(&pool)
    .await
    .unwrap();
    let actions = policies::reconcile(&pool, retention(30)).await.expect("repair");
    assert_eq!(actions.len(), 1, "{actions:?}");
    let (schedule, start): (String, String) = sqlx::query_as(
        "SELECT schedule_interval::text, config->>'start_offset' FROM timescaledb_information.jobs WHERE job_id = $1",
    )
    .bind(hourly)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((schedule.as_str(), start.as_str()), ("00:05:00", "3 days"));

    // Too short a raw retention is refused before anything is touched.
    let error = policies::reconcile(&pool, retention(3)).await.unwrap_err();
    assert!(error.to_string().contains("retention_raw_days must be at least 7"), "{error}");

    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn late_marks_are_refreshed_once_outside_a_transaction() {
    let (db, pool) = fake_timescale("tslate").await;
    let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    for (oldest, newest, results) in [
        ("2026-11-15T07:00:00Z", "2026-11-15T09:00:00Z", 2),
        ("2026-11-10T22:00:00Z", "2026-11-11T01:00:00Z", 1),
        ("2026-08-01T00:00:00Z", "2026-08-01T00:00:00Z", 4),
    ] {
        sqlx::query(late::NOTE_LATE)
            .bind(at(oldest))
            .bind(at(newest))
            .bind(results)
            .execute(&pool)
            .await
            .unwrap();
    }
    let report = late::refresh(&pool, now, 90).await.expect("refreshes");
    assert_eq!((report.marks, report.results, report.plan.skipped_results), (3, 3, 4));
    assert_eq!(
        calls(&pool).await,
        [
            "refresh rollup_hourly 2026-11-10 22:00 2026-11-15 10:00",
            "refresh rollup_daily 2026-11-10 00:00 2026-11-16 00:00"
        ]
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM late_results").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0);
    // Nothing noted since: nothing refreshed.
    assert_eq!(late::refresh(&pool, now, 90).await.unwrap(), late::LateReport::default());

    // A failing refresh keeps the marks for the next round.
    sqlx::raw_sql(
        "CREATE OR REPLACE PROCEDURE refresh_continuous_aggregate(continuous_aggregate regclass, \
         window_start timestamptz, window_end timestamptz) LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'cannot drop portal \"\" while it is being set up'; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(late::NOTE_LATE)
        .bind(at("2026-11-15T07:00:00Z"))
        .bind(at("2026-11-15T07:00:00Z"))
        .bind(1)
        .execute(&pool)
        .await
        .unwrap();
    let error = late::refresh(&pool, now, 90).await.unwrap_err();
    assert!(error.to_string().contains("cannot drop portal"), "{error}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM late_results").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 1);
    // The lock was released: the next round runs (and fails the same way).
    assert!(late::refresh(&pool, now, 90).await.is_err());

    pool.close().await;
    db.drop_now().await;
}

fn result(domain: Uuid, at: DateTime<Utc>) -> ProbeResult {
    ProbeResult {
        domain_id: domain.as_bytes().to_vec(),
        started_at_unix_us: at.timestamp_micros(),
        config_version: 1,
        ok: true,
        status_code: 200,
        total_us: 12_000,
        resolved_ip: "192.0.2.1".into(),
        ..Default::default()
    }
}

/// The store in TimescaleDB mode over the fake catalog: policies reconciled at start, a late
/// result noted by the writer and refreshed by the next round, and the jobs' health read from
/// `timescaledb_information.job_stats`.
#[tokio::test]
async fn timescale_mode_notes_late_results_and_reads_job_health() {
    let (db, pool) = fake_timescale("tsmode").await;
    sqlx::query("UPDATE storage_meta SET mode = 'timescale'").execute(&pool).await.unwrap();
    let mut registry = Registry::default();
    let ts = Timeseries::connect(&ts_config(&db.url), &mut registry).await.expect("connects");
    assert_eq!(ts.mode(), StorageMode::Timescale);
    assert_eq!(jobs(&pool).await.len(), 6, "the policies were added at start");

    let d = Uuid::now_v7();
    let now = Utc::now();
    let five_days = now - Duration::days(5);
    let batch = IngestBatch {
        region: "eu".into(),
        agent_id: "eu-1".into(),
        batch_id: Uuid::now_v7(),
        results: vec![
            result(d, now - Duration::minutes(1)),
            result(d, five_days),
            result(d, now - Duration::hours(2)),
        ],
    };
    ts.ingest(batch).await.expect("stored");
    let marks: Vec<(DateTime<Utc>, i32)> =
        sqlx::query_as("SELECT oldest, results FROM late_results").fetch_all(&pool).await.unwrap();
    let hour = five_days.timestamp() - five_days.timestamp().rem_euclid(3_600);
    assert_eq!(marks, [(DateTime::from_timestamp(hour, 0).unwrap(), 1)]);
    assert_eq!(ts.metrics().late_results_noted.get(), 1);

    ts.refresh_rollups().await.expect("refreshes the late range");
    let refreshes: Vec<String> =
        calls(&pool).await.into_iter().filter(|c| c.starts_with("refresh")).collect();
    assert_eq!(refreshes.len(), 2, "{refreshes:?}");
    assert!(refreshes[0].starts_with("refresh rollup_hourly"), "{refreshes:?}");
    assert_eq!(ts.metrics().late_refreshes.get(), 2);
    assert_eq!(ts.metrics().late_results_refreshed.get(), 1);

    // Job health: one refresh failing, one retention overdue.
    assert_eq!(ts.jobs_detail(), None, "nothing checked yet");
    let ids: Vec<i32> = jobs(&pool).await.into_iter().map(|j| j.0).collect();
    sqlx::query(
        "INSERT INTO timescaledb_information.job_stats \
         SELECT job_id, 'Success', 'Scheduled', now() + interval '1 minute', now(), 0 \
         FROM timescaledb_information.jobs",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE timescaledb_information.job_stats SET last_run_status = 'Failed', total_failures = 12 \
         WHERE job_id = $1",
    )
    .bind(ids[4])
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE timescaledb_information.job_stats SET next_start = now() - interval '3 days' WHERE job_id = $1")
        .bind(ids[0])
        .execute(&pool)
        .await
        .unwrap();
    let health = ts.check_jobs(Utc::now()).await.expect("reads job_stats").expect("TimescaleDB mode");
    assert_eq!(health.detail(), "timeseries jobs: 1 failed (refresh 1), 1 overdue (retention 1)");
    assert_eq!(
        ts.jobs_detail().as_deref(),
        Some("timeseries jobs: 1 failed (refresh 1), 1 overdue (retention 1)")
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("control_plane_timeseries_jobs_failed{kind=\"refresh\"} 1"), "{text}");
    assert!(text.contains("control_plane_timeseries_jobs_overdue{kind=\"retention\"} 1"), "{text}");
    assert!(text.contains("control_plane_timeseries_jobs_failed{kind=\"compression\"} 0"), "{text}");

    ts.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// The whole control plane over a fake TimescaleDB whose refresh job fails: `/readyz` stays
/// ready and says so, once the maintenance task (its first round runs at start) read the jobs.
#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn readyz_names_failing_timescaledb_jobs(pool: PgPool) {
    let (db, ts_pool) = fake_timescale("tsready").await;
    sqlx::query("UPDATE storage_meta SET mode = 'timescale'").execute(&ts_pool).await.unwrap();
    // The policies as a previous start left them, one of them failing.
    policies::reconcile(&ts_pool, retention(90)).await.unwrap();
    sqlx::query(
        "INSERT INTO timescaledb_information.job_stats \
         SELECT job_id, CASE WHEN proc_name = 'policy_refresh_continuous_aggregate' \
                             AND hypertable_name = '_materialized_hypertable_2' THEN 'Failed' ELSE 'Success' END, \
                'Scheduled', now() + interval '1 minute', now(), 0 \
         FROM timescaledb_information.jobs",
    )
    .execute(&ts_pool)
    .await
    .unwrap();

    let mut config =
        crate::helpers::test_config(&shared::testing::random_prefix("cp"), "redis://127.0.0.1:6379");
    config.timeseries_url = db.url.clone();
    let app = control_plane::Application::build_with_clock(config, pool, control_plane::clock::system())
        .await
        .expect("control plane builds");
    let url = format!("http://{}/readyz", app.local_addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run_until(shutdown.clone()));
    let body = shared::testing::eventually(crate::helpers::WAIT, "the jobs line in /readyz", || async {
        let response = reqwest::get(&url).await.ok()?;
        let ok = response.status() == reqwest::StatusCode::OK;
        let body = response.text().await.ok()?;
        (ok && body.contains("timeseries jobs:")).then_some(body)
    })
    .await;
    assert_eq!(body, "ready\ntimeseries jobs: 1 failed (refresh 1)\n");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    ts_pool.close().await;
    db.drop_now().await;
}
