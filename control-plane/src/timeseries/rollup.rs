//! Plain-mode roll-ups and maintenance (TimescaleDB does both itself through its policies).
//!
//! **Added from a queue.** The writer appends each stored result's roll-up inputs (time,
//! domain, region, success, latency bucket per phase) to `rollup_queue`, and one mark per UTC
//! hour to `rollup_queued_hours`, in the transaction that stores the raw rows (see
//! [`super::writer`]). [`refresh`] moves the queue into `rollup_hourly` and `rollup_daily` in
//! one REPEATABLE READ transaction: it deletes the marks and the queue rows its snapshot sees
//! and adds their counts and histogram cells in one statement ([`add_queue`]): one update per
//! roll-up row that exists (only the cells that changed are touched), one insert per row that
//! does not, however many results each carries, so the cost follows the roll-up rows a pass
//! touches rather than the results. Rows and marks committed after the snapshot stay for the
//! next pass. So in every snapshot each stored result is either in the roll-ups or still
//! queued, and every hour holding a queued result is marked: reads roll the marked hours up
//! from the raw rows ([`pending_hours`]), and results count as soon as they are stored.
//! Roll-ups are sums, so late results simply land in their own hour and day. Queued results
//! older than the roll-up retention are discarded (counted).
//!
//! **Recomputed, for hours an older control plane marked.** Control planes before roll-ups
//! were added at ingest appended the hours they wrote to `rollup_dirty` instead. The same
//! transaction deletes those marks, leaves those hours' queued results out of the additions,
//! recomputes the hours of `rollup_hourly` from the raw rows and then the days holding them in
//! `rollup_daily` from the hourly rows. Hours older than raw retention are not recomputed
//! (their raw rows are gone).
//!
//! One refresher works at a time across replicas (a transaction-level advisory lock, tried
//! without waiting: a replica that finds it taken skips the pass).
//!
//! **Maintenance.** Daily partitions `probe_results_pYYYYMMDD` from yesterday to
//! `partitions_ahead_days` ahead (rows already in the DEFAULT partition for that day are moved
//! into the new partition before it is attached), whole partitions dropped after
//! `retention_raw_days`, old rows deleted from the DEFAULT partition, roll-ups deleted after
//! `retention_rollup_days`, and batch ids older than [`KEEP_BATCH_IDS`] forgotten.

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};

use super::StorageMode;

/// How long batch ids are remembered for de-duplication (agents resend within minutes, at
/// most hours).
pub const KEEP_BATCH_IDS: TimeDelta = TimeDelta::days(2);

/// Advisory lock key of the refresher and of maintenance (one of each runs at a time across
/// replicas).
const REFRESH_LOCK: i64 = 0x7473_726f_6c6c_7570; // "tsrollup"
const MAINTENANCE_LOCK: i64 = 0x7473_6d61_696e_7400; // "tsmaint"

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Another replica was refreshing: this pass did nothing.
    pub skipped: bool,
    /// Queued results added to the roll-ups.
    pub results_added: u64,
    /// Queued results older than the roll-up retention, discarded.
    pub results_discarded: u64,
    /// `rollup_hourly` rows the additions updated or inserted.
    pub hourly_rows: u64,
    /// `rollup_daily` rows the additions updated or inserted.
    pub daily_rows: u64,
    /// Hours an older control plane marked, recomputed from the raw rows.
    pub hours: Vec<DateTime<Utc>>,
    /// The days holding them, recomputed from the hourly rows.
    pub days: Vec<DateTime<Utc>>,
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub partitions_created: Vec<String>,
    pub partitions_dropped: Vec<String>,
    /// Rows moved out of the DEFAULT partition into a newly created one.
    pub rows_moved: u64,
    /// Rows older than retention deleted from the DEFAULT partition.
    pub default_rows_deleted: u64,
    pub rollup_rows_deleted: u64,
    pub batch_ids_forgotten: u64,
}

/// The retention and partitioning settings maintenance needs.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub raw_days: u32,
    pub rollup_days: u32,
    pub partitions_ahead_days: u32,
}

/// Hourly roll-up rows computed from raw results: for the hours in the `timestamptz[]`
/// parameter `hours`, optionally only of the domain in the `uuid` parameter `domain` (an SQL
/// expression such as `$1`). The refresher stores them; plain-mode reads use them for hours not
/// refreshed yet.
pub(crate) fn hours_from_raw(hours: &str, domain: Option<&str>) -> String {
    let domain = domain.map(|d| format!(" AND p.domain_id = {d}")).unwrap_or_default();
    format!(
        "
WITH raw AS (
    SELECT p.time, p.domain_id, p.region, p.ok, p.total_b, p.dns_b, p.connect_b, p.tls_b, p.ttfb_b
    FROM unnest({hours}::timestamptz[]) AS h(hour)
    JOIN probe_results p ON p.time >= h.hour AND p.time < h.hour + INTERVAL '1 hour'{domain}
), counts AS (
    SELECT date_trunc('hour', time, 'UTC') AS bucket, domain_id, region,
           count(*) AS probes, count(*) FILTER (WHERE ok) AS successes
    FROM raw GROUP BY 1, 2, 3
), cells AS (
    SELECT date_trunc('hour', r.time, 'UTC') AS bucket, r.domain_id, r.region, c.phase, c.idx,
           count(*) AS n
    FROM raw r
    CROSS JOIN LATERAL (VALUES (0, r.total_b), (1, r.dns_b), (2, r.connect_b), (3, r.tls_b), (4, r.ttfb_b))
        AS c(phase, idx)
    WHERE c.idx IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
), hists AS (
    SELECT bucket, domain_id, region, phase, hist_from_counts(array_agg(idx), array_agg(n)) AS hist
    FROM cells GROUP BY 1, 2, 3, 4
)
SELECT c.bucket, c.domain_id, c.region, c.probes, c.successes,
       hist_sum(h.hist) FILTER (WHERE h.phase = 0) AS total_hist,
       hist_sum(h.hist) FILTER (WHERE h.phase = 1) AS dns_hist,
       hist_sum(h.hist) FILTER (WHERE h.phase = 2) AS connect_hist,
       hist_sum(h.hist) FILTER (WHERE h.phase = 3) AS tls_hist,
       hist_sum(h.hist) FILTER (WHERE h.phase = 4) AS ttfb_hist
FROM counts c
LEFT JOIN hists h USING (bucket, domain_id, region)
GROUP BY c.bucket, c.domain_id, c.region, c.probes, c.successes"
    )
}

/// The hours from `since` on whose results are not all in the roll-ups yet: hours holding
/// queued results, and hours an older control plane marked for a recomputation (plain mode;
/// reads compute these hours from the raw rows).
pub(crate) async fn pending_hours(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT hour FROM rollup_queued_hours WHERE hour >= $1 \
         UNION SELECT hour FROM rollup_dirty WHERE hour >= $1 ORDER BY 1",
    )
    .bind(since)
    .fetch_all(conn)
    .await
}

const ROLL_DAYS: &str = "
INSERT INTO rollup_daily (bucket, domain_id, region, probes, successes,
                          total_hist, dns_hist, connect_hist, tls_hist, ttfb_hist)
SELECT d.day, r.domain_id, r.region, sum(r.probes)::bigint, sum(r.successes)::bigint,
       hist_sum(r.total_hist), hist_sum(r.dns_hist), hist_sum(r.connect_hist),
       hist_sum(r.tls_hist), hist_sum(r.ttfb_hist)
FROM unnest($1::timestamptz[]) AS d(day)
JOIN rollup_hourly r ON r.bucket >= d.day AND r.bucket < d.day + INTERVAL '1 day'
GROUP BY d.day, r.domain_id, r.region";

/// Start of the UTC day holding `time`.
pub(crate) fn day_of(time: DateTime<Utc>) -> DateTime<Utc> {
    let secs = time.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(86_400), 0).unwrap_or(time)
}

/// The CTEs adding the queued results of `source` (a CTE of queue rows with a `bucket`
/// column) to `table`, named with `prefix`: per roll-up row the count, the successes and the
/// histogram cells as codes `phase * 1000 + position` with their counts; an update of the rows
/// that exist, an insert of the others (with a conflict arm adding whole histograms, for a row
/// a writer of an older control plane inserted meanwhile).
fn add_to(prefix: &str, table: &str, source: &str) -> String {
    let hists = ["total_hist", "dns_hist", "connect_hist", "tls_hist", "ttfb_hist"];
    let update: Vec<String> = hists
        .iter()
        .enumerate()
        .map(|(phase, h)| format!("{h} = hist_add_cells(r.{h}, {prefix}.cells, {prefix}.n, {phase})"))
        .collect();
    let insert: Vec<String> =
        (0..hists.len()).map(|phase| format!("hist_add_cells(NULL, cells, n, {phase})")).collect();
    let conflict: Vec<String> =
        hists.iter().map(|h| format!("{h} = hist_add(r.{h}, excluded.{h})")).collect();
    format!(
        "{prefix} AS (
    SELECT c.bucket, c.domain_id, c.region, c.probes, c.successes, x.cells, x.n
    FROM (SELECT bucket, domain_id, region, count(*) AS probes, count(*) FILTER (WHERE ok) AS successes
          FROM {source} GROUP BY 1, 2, 3) AS c
    LEFT JOIN (
        SELECT bucket, domain_id, region, array_agg(code ORDER BY code) AS cells, array_agg(n ORDER BY code) AS n
        FROM (SELECT bucket, domain_id, region, v.code, count(*)::int AS n
              FROM {source}
              CROSS JOIN LATERAL (VALUES (total_b + 2), (dns_b + 1002), (connect_b + 2002), (tls_b + 3002),
                                         (ttfb_b + 4002)) AS v(code)
              WHERE v.code IS NOT NULL
              GROUP BY 1, 2, 3, 4) AS per_cell
        GROUP BY 1, 2, 3
    ) AS x USING (bucket, domain_id, region)
), {prefix}_updated AS (
    UPDATE {table} AS r SET probes = r.probes + {prefix}.probes, successes = r.successes + {prefix}.successes,
        {update}
    FROM {prefix}
    WHERE r.domain_id = {prefix}.domain_id AND r.bucket = {prefix}.bucket AND r.region = {prefix}.region
    RETURNING r.domain_id, r.bucket, r.region
), {prefix}_inserted AS (
    INSERT INTO {table} AS r (bucket, domain_id, region, probes, successes,
                              total_hist, dns_hist, connect_hist, tls_hist, ttfb_hist)
    SELECT bucket, domain_id, region, probes, successes, {insert}
    FROM {prefix}
    WHERE NOT EXISTS (SELECT 1 FROM {prefix}_updated AS u
                      WHERE u.domain_id = {prefix}.domain_id AND u.bucket = {prefix}.bucket
                        AND u.region = {prefix}.region)
    ORDER BY domain_id, bucket, region
    ON CONFLICT (domain_id, bucket, region) DO UPDATE SET
        probes = r.probes + excluded.probes, successes = r.successes + excluded.successes,
        {conflict}
    RETURNING 1
)",
        update = update.join(",\n        "),
        insert = insert.join(", "),
        conflict = conflict.join(",\n        "),
    )
}

/// Moves every queued result the transaction's snapshot sees into both roll-up tables:
/// `$1` the hours and `$2` the days being recomputed (their results are left out: the
/// recomputation reads them from the raw rows), `$3` the roll-up retention cutoff (older
/// results are discarded). Answers the results added (those of recomputed hours not
/// included), the results discarded, and the hourly and daily rows touched.
pub(crate) fn add_queue() -> String {
    format!(
        "WITH queued AS (
    DELETE FROM rollup_queue
    RETURNING time, domain_id, region, ok, total_b, dns_b, connect_b, tls_b, ttfb_b
), kept AS (
    SELECT date_trunc('hour', time, 'UTC') AS hour, * FROM queued WHERE time >= $3
), hourly AS (
    SELECT hour AS bucket, * FROM kept WHERE hour <> ALL($1::timestamptz[])
), daily AS (
    SELECT * FROM (SELECT date_trunc('day', time, 'UTC') AS bucket, * FROM kept) AS d
    WHERE bucket <> ALL($2::timestamptz[])
), {}, {}
SELECT (SELECT count(*) FROM hourly), (SELECT count(*) FROM queued) - (SELECT count(*) FROM kept),
       (SELECT count(*) FROM h), (SELECT count(*) FROM d)",
        add_to("h", "rollup_hourly", "hourly"),
        add_to("d", "rollup_daily", "daily"),
    )
}

/// Adds the queued results to the roll-ups and recomputes the hours an older control plane
/// marked, with their days (plain mode); see the module documentation.
pub(crate) async fn refresh(
    pool: &PgPool,
    now: DateTime<Utc>,
    raw_days: u32,
    rollup_days: u32,
) -> Result<RefreshReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(REFRESH_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(RefreshReport { skipped: true, ..RefreshReport::default() });
    }
    sqlx::query("DELETE FROM rollup_queued_hours").execute(&mut *tx).await?;
    let marked: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "WITH d AS (DELETE FROM rollup_dirty RETURNING hour) SELECT DISTINCT hour FROM d ORDER BY hour",
    )
    .fetch_all(&mut *tx)
    .await?;
    let cutoff = day_of(now) - TimeDelta::days(i64::from(raw_days));
    let hours: Vec<DateTime<Utc>> = marked.into_iter().filter(|h| *h >= cutoff).collect();
    let mut days: Vec<DateTime<Utc>> = hours.iter().copied().map(day_of).collect();
    days.dedup();
    let rollup_cutoff = day_of(now) - TimeDelta::days(i64::from(rollup_days));
    let (added, discarded, hourly_rows, daily_rows): (i64, i64, i64, i64) =
        sqlx::query_as(&add_queue()).bind(&hours).bind(&days).bind(rollup_cutoff).fetch_one(&mut *tx).await?;
    if !hours.is_empty() {
        sqlx::query("DELETE FROM rollup_hourly WHERE bucket = ANY($1)")
            .bind(&hours)
            .execute(&mut *tx)
            .await?;
        let roll_hours = format!(
            "INSERT INTO rollup_hourly (bucket, domain_id, region, probes, successes, \
                                        total_hist, dns_hist, connect_hist, tls_hist, ttfb_hist) {}",
            hours_from_raw("$1", None)
        );
        sqlx::query(&roll_hours).bind(&hours).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM rollup_daily WHERE bucket = ANY($1)").bind(&days).execute(&mut *tx).await?;
        sqlx::query(ROLL_DAYS).bind(&days).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(RefreshReport {
        skipped: false,
        results_added: count(added),
        results_discarded: count(discarded),
        hourly_rows: count(hourly_rows),
        daily_rows: count(daily_rows),
        hours,
        days,
    })
}

fn partition_name(day: NaiveDate) -> String {
    format!("probe_results_p{}", day.format("%Y%m%d"))
}

fn partition_day(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix("probe_results_p")?, "%Y%m%d").ok()
}

/// The raw table's daily partitions (not the DEFAULT one).
pub async fn partitions<'e>(db: impl PgExecutor<'e>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'probe_results'::regclass AND c.relname <> 'probe_results_default' \
         ORDER BY c.relname",
    )
    .fetch_all(db)
    .await
}

/// Creates missing partitions ahead and applies retention (plain mode); forgets old batch ids
/// (both modes).
pub(crate) async fn maintain(
    pool: &PgPool,
    mode: StorageMode,
    retention: Retention,
    now: DateTime<Utc>,
) -> Result<MaintenanceReport, sqlx::Error> {
    // One connection for everything: maintenance never needs a second one from the pool.
    let mut report = MaintenanceReport::default();
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)").bind(MAINTENANCE_LOCK).execute(&mut *conn).await?;
    let result = maintain_locked(&mut conn, mode, retention, now, &mut report).await;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(MAINTENANCE_LOCK).execute(&mut *conn).await?;
    result.map(|()| report)
}

async fn maintain_locked(
    conn: &mut PgConnection,
    mode: StorageMode,
    retention: Retention,
    now: DateTime<Utc>,
    report: &mut MaintenanceReport,
) -> Result<(), sqlx::Error> {
    report.batch_ids_forgotten = sqlx::query("DELETE FROM ingested_batches WHERE received_at < $1")
        .bind(now - KEEP_BATCH_IDS)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if mode == StorageMode::Timescale {
        return Ok(());
    }

    let today = now.date_naive();
    let existing = partitions(&mut *conn).await?;
    let first = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    let last = today.checked_add_days(Days::new(u64::from(retention.partitions_ahead_days))).unwrap_or(today);
    let raw_cutoff = today.checked_sub_days(Days::new(u64::from(retention.raw_days))).unwrap_or(today);
    let mut day = first.max(raw_cutoff);
    while day <= last {
        let name = partition_name(day);
        if !existing.contains(&name) {
            report.rows_moved += create_partition(conn, &name, day).await?;
            report.partitions_created.push(name);
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }

    // A partition holds [day, day + 1); it goes once all of it is older than the cutoff.
    for name in existing {
        if partition_day(&name).is_some_and(|d| d < raw_cutoff) {
            // Dropping a partition locks the parent exclusively for a moment; give up quickly
            // rather than queue ingest behind a long query (the next run retries).
            let mut tx = conn.begin().await?;
            sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
            sqlx::query(&format!("DROP TABLE IF EXISTS \"{name}\"")).execute(&mut *tx).await?;
            tx.commit().await?;
            report.partitions_dropped.push(name);
        }
    }
    let cutoff_time = raw_cutoff.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
    report.default_rows_deleted = sqlx::query("DELETE FROM probe_results_default WHERE time < $1")
        .bind(cutoff_time)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM rollup_dirty WHERE hour < $1").bind(cutoff_time).execute(&mut *conn).await?;

    let rollup_cutoff = day_of(now) - TimeDelta::days(i64::from(retention.rollup_days));
    for table in ["rollup_hourly", "rollup_daily"] {
        report.rollup_rows_deleted += sqlx::query(&format!("DELETE FROM {table} WHERE bucket < $1"))
            .bind(rollup_cutoff)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(())
}

/// Creates the partition of `day`, moving that day's rows out of the DEFAULT partition first
/// (attaching would fail otherwise). Returns the rows moved.
async fn create_partition(conn: &mut PgConnection, name: &str, day: NaiveDate) -> Result<u64, sqlx::Error> {
    let from = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_default();
    let to = from + TimeDelta::days(1);
    let mut tx = conn.begin().await?;
    sqlx::query(&format!(
        "CREATE TABLE \"{name}\" (LIKE probe_results INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    ))
    .execute(&mut *tx)
    .await?;
    let moved = sqlx::query(&format!(
        "WITH m AS (DELETE FROM probe_results_default WHERE time >= $1 AND time < $2 RETURNING *) \
         INSERT INTO \"{name}\" SELECT * FROM m"
    ))
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Bounds are literals in UTC ('YYYY-MM-DD 00:00:00+00'), built from a date, never from input.
    sqlx::query(&format!(
        "ALTER TABLE probe_results ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{}') TO ('{}')",
        from.format("%Y-%m-%d %H:%M:%S+00"),
        to.format("%Y-%m-%d %H:%M:%S+00")
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(moved)
}
