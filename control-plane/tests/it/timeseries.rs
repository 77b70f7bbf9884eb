//! The time-series store against real PostgreSQL (plain mode here: TimescaleDB is not
//! installed), each test on a scratch database: idempotent ingest, roll-ups against the raw
//! rows, partitions and retention, outage behaviour, validation, and the history API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use control_plane::timeseries::buckets::{bucket_index, upper_bound_us};
use control_plane::timeseries::{IngestBatch, IngestError, IngestOutcome, StorageMode, Timeseries, Window};
use control_plane::Config;
use prometheus_client::registry::Registry;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::proto::{CertProblem, Certificate, ChainCertificate, ProbeResult};
use shared::testing::{eventually, free_port};
use sqlx::{Connection, PgPool};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{domain, ScratchDb, TestApp, WAIT};

fn ts_config(url: &str) -> Config {
    Config {
        timeseries_url: url.to_owned(),
        timeseries_write_connections: 2,
        timeseries_read_connections: 1,
        ingest_wait_ms: 500,
        ..Config::default()
    }
}

async fn open(url: &str) -> Timeseries {
    Timeseries::connect(&ts_config(url), &mut Registry::default()).await.expect("time-series store connects")
}

fn result(domain: Uuid, at: DateTime<Utc>, ok: bool, total_us: u32) -> ProbeResult {
    ProbeResult {
        domain_id: domain.as_bytes().to_vec(),
        started_at_unix_us: at.timestamp_micros(),
        config_version: 3,
        ok,
        status_code: if ok { 200 } else { 503 },
        dns_us: Some(total_us / 10),
        connect_us: Some(total_us / 5),
        total_us,
        resolved_ip: "192.0.2.1".into(),
        ..Default::default()
    }
}

fn batch(region: &str, results: Vec<ProbeResult>) -> IngestBatch {
    IngestBatch { region: region.into(), agent_id: format!("{region}-1"), batch_id: Uuid::now_v7(), results }
}

async fn raw_count(ts: &Timeseries) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM probe_results").fetch_one(ts.pool()).await.unwrap()
}

#[tokio::test]
async fn plain_mode_is_recorded() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    assert_eq!(ts.mode(), StorageMode::Plain);
    // Connecting again (another replica, a restart) migrates nothing and keeps the mode.
    let again = open(&db.url).await;
    assert_eq!(again.mode(), StorageMode::Plain);
    again.close().await;
    ts.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn duplicate_batch_is_stored_once() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let d = Uuid::now_v7();
    let now = Utc::now();
    let first = batch("ams", (0..3).map(|i| result(d, now - TimeDelta::seconds(i), true, 1_000)).collect());

    let stored = ts.ingest(first.clone()).await.unwrap();
    assert_eq!(stored, IngestOutcome { stored: 3, duplicate: false });
    let again = ts.ingest(first.clone()).await.unwrap();
    assert_eq!(again, IngestOutcome { stored: 0, duplicate: true });
    // The same batch id from another agent is another batch.
    let other_agent = IngestBatch { agent_id: "ams-2".into(), ..first.clone() };
    assert_eq!(ts.ingest(other_agent).await.unwrap().stored, 3);
    assert_eq!(raw_count(&ts).await, 6);

    // Two concurrent sends of one new batch: exactly one stores it.
    for _ in 0..5 {
        let b = batch("iad", vec![result(d, now, true, 2_000), result(d, now, false, 4_000)]);
        let (a, c) = tokio::join!(ts.ingest(b.clone()), ts.ingest(b));
        let (a, c) = (a.unwrap(), c.unwrap());
        assert!(a.duplicate != c.duplicate, "{a:?} {c:?}");
        assert_eq!(a.stored + c.stored, 2);
    }
    assert_eq!(raw_count(&ts).await, 16);
    ts.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn invalid_result_is_refused_with_its_index() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let d = Uuid::now_v7();
    let now = Utc::now();
    let bad_id = ProbeResult { domain_id: vec![1; 15], ..result(d, now, true, 1) };
    let err = ts.ingest(batch("ams", vec![result(d, now, true, 1), bad_id])).await.unwrap_err();
    assert!(matches!(&err, IngestError::Invalid(m) if m.contains("result 1")), "{err:?}");
    let future = result(d, now + TimeDelta::days(3), true, 1);
    assert!(matches!(ts.ingest(batch("ams", vec![future])).await, Err(IngestError::Invalid(_))));
    let slow = ProbeResult { tls_us: Some(u32::MAX), ..result(d, now, true, 1) };
    assert!(
        matches!(ts.ingest(batch("ams", vec![slow])).await, Err(IngestError::Invalid(m)) if m.contains("tls_us"))
    );
    assert_eq!(raw_count(&ts).await, 0, "nothing of an invalid batch is stored");
    ts.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn sql_and_rust_latency_buckets_agree() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let mut values: Vec<u32> = (0..300).collect();
    for i in 0..128 {
        let edge = upper_bound_us(i);
        values.extend([edge.saturating_sub(1), edge, edge + 1].map(|v| v.min(u64::from(u32::MAX)) as u32));
    }
    values.extend([1_000_000, 59_999_999, u32::MAX]);
    let sql: Vec<i16> = sqlx::query_scalar("SELECT latency_bucket(v) FROM unnest($1::bigint[]) AS v")
        .bind(values.iter().map(|v| i64::from(*v)).collect::<Vec<_>>())
        .fetch_all(ts.pool())
        .await
        .unwrap();
    for (v, s) in values.iter().zip(sql) {
        assert_eq!(bucket_index(*v), s, "{v} µs");
    }
    ts.close().await;
    db.drop_now().await;
}

/// Nearest-rank percentile of raw durations, reported as its bucket's upper bound.
fn expected_percentile(mut values: Vec<u32>, p: f64) -> u64 {
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).max(1);
    upper_bound_us(bucket_index(values[rank - 1]) as usize)
}

async fn raw_totals(ts: &Timeseries, d: Uuid) -> BTreeMap<String, (Vec<u32>, u64)> {
    let rows: Vec<(String, i32, bool)> =
        sqlx::query_as("SELECT region, total_us, ok FROM probe_results WHERE domain_id = $1")
            .bind(d)
            .fetch_all(ts.pool())
            .await
            .unwrap();
    let mut by_region: BTreeMap<String, (Vec<u32>, u64)> = BTreeMap::new();
    for (region, total, ok) in rows {
        let entry = by_region.entry(region).or_default();
        entry.0.push(total as u32);
        entry.1 += u64::from(ok);
    }
    by_region
}

async fn check_against_raw(ts: &Timeseries, d: Uuid) {
    let raw = raw_totals(ts, d).await;
    let uptime = ts.uptime(d, Window::Day).await.unwrap();
    let latency = ts.latency(d, Window::Day).await.unwrap();
    let mut all = Vec::new();
    let mut all_ok = 0;
    assert_eq!(uptime.regions.len(), raw.len());
    for ((region, (totals, ok)), (u, l)) in raw.iter().zip(uptime.regions.iter().zip(&latency.regions)) {
        assert_eq!(&u.region, region);
        assert_eq!(u.counts.probes, totals.len() as u64, "{region}");
        assert_eq!(u.counts.successes, *ok, "{region}");
        let percent = *ok as f64 * 100.0 / totals.len() as f64;
        assert!((u.counts.uptime_percent.unwrap() - percent).abs() < 1e-9);
        let total = l.phases.total.unwrap();
        assert_eq!(total.samples, totals.len() as u64);
        assert_eq!(total.p95_us, expected_percentile(totals.clone(), 0.95), "{region} p95");
        assert_eq!(total.p50_us, expected_percentile(totals.clone(), 0.50), "{region} p50");
        assert!(l.phases.tls.is_none(), "no TLS phase was recorded");
        all.extend(totals);
        all_ok += ok;
    }
    assert_eq!(uptime.probes.probes, all.len() as u64);
    assert_eq!(uptime.probes.successes, all_ok);
    let overall = latency.overall.total.unwrap();
    assert_eq!(overall.p95_us, expected_percentile(all.clone(), 0.95), "overall p95");
    assert_eq!(overall.p99_us, expected_percentile(all, 0.99), "overall p99");
}

/// A roll-up row: probes, successes, and the five phase histograms (130 counts, or none).
type RollupRow = (i64, i64, [Option<Vec<i32>>; 5]);

/// Every row of a roll-up table, by (bucket, domain, region).
async fn rollup_table(ts: &Timeseries, table: &str) -> BTreeMap<(DateTime<Utc>, Uuid, String), RollupRow> {
    type Row = (
        DateTime<Utc>,
        Uuid,
        String,
        i64,
        i64,
        Option<Vec<i32>>,
        Option<Vec<i32>>,
        Option<Vec<i32>>,
        Option<Vec<i32>>,
        Option<Vec<i32>>,
    );
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT bucket, domain_id, region, probes, successes, total_hist, dns_hist, connect_hist, tls_hist, ttfb_hist
         FROM {table}"
    ))
    .fetch_all(ts.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(b, d, r, p, s, t, dn, c, tl, tt)| ((b, d, r), (p, s, [t, dn, c, tl, tt])))
        .collect()
}

/// The roll-ups computed here, from the raw rows, with `bucket_of` cutting time into hours or
/// days: what the tables must hold.
async fn rollups_from_raw(
    ts: &Timeseries,
    bucket_of: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
) -> BTreeMap<(DateTime<Utc>, Uuid, String), RollupRow> {
    type Raw = (DateTime<Utc>, Uuid, String, bool, i16, Option<i16>, Option<i16>, Option<i16>, Option<i16>);
    let raw: Vec<Raw> = sqlx::query_as(
        "SELECT time, domain_id, region, ok, total_b, dns_b, connect_b, tls_b, ttfb_b FROM probe_results",
    )
    .fetch_all(ts.pool())
    .await
    .unwrap();
    let mut expected: BTreeMap<(DateTime<Utc>, Uuid, String), RollupRow> = BTreeMap::new();
    for (time, domain, region, ok, total, dns, connect, tls, ttfb) in raw {
        let row = expected.entry((bucket_of(time), domain, region)).or_default();
        row.0 += 1;
        row.1 += i64::from(ok);
        for (hist, idx) in row.2.iter_mut().zip([Some(total), dns, connect, tls, ttfb]) {
            if let Some(idx) = idx {
                hist.get_or_insert_with(|| vec![0; 130])[idx as usize + 1] += 1;
            }
        }
    }
    expected
}

/// Both roll-up tables hold exactly what the raw rows add up to.
async fn check_rollups_against_raw(ts: &Timeseries) {
    let hour = |t: DateTime<Utc>| chrono::DurationRound::duration_trunc(t, TimeDelta::hours(1)).unwrap();
    let day = |t: DateTime<Utc>| chrono::DurationRound::duration_trunc(t, TimeDelta::days(1)).unwrap();
    assert_eq!(rollup_table(ts, "rollup_hourly").await, rollups_from_raw(ts, hour).await, "hourly");
    assert_eq!(rollup_table(ts, "rollup_daily").await, rollups_from_raw(ts, day).await, "daily");
}

/// Rows in the roll-up queue and hour marks, as (queued results, marks).
async fn queued(ts: &Timeseries) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM rollup_queue), (SELECT count(*) FROM rollup_queued_hours)")
        .fetch_one(ts.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn queued_results_are_added_to_the_rollups_exactly_once_including_late_data() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let d = Uuid::now_v7();
    let other = Uuid::now_v7();
    // Ten minutes into an hour, so the late results below fall in that one hour whatever the time.
    let hour = chrono::DurationRound::duration_trunc(Utc::now() - TimeDelta::hours(3), TimeDelta::hours(1))
        .unwrap()
        + TimeDelta::minutes(10);
    // ams: 100 probes, 1 in 10 failing, latencies spread over three decades; iad: 40 probes
    // over the 40 minutes before, so across an hour (and maybe a day) boundary.
    let ams: Vec<ProbeResult> = (0..100u32)
        .map(|i| result(d, hour + TimeDelta::seconds(i as i64), i % 10 != 0, 1_000 + i * i * 37))
        .collect();
    let iad: Vec<ProbeResult> = (0..40u32)
        .map(|i| result(d, hour - TimeDelta::minutes(i as i64), i % 4 != 0, 90_000 - i * 1_000))
        .collect();
    ts.ingest(batch("ams", ams)).await.unwrap();
    ts.ingest(batch("iad", iad)).await.unwrap();
    ts.ingest(batch("ams", vec![result(other, hour, false, 5)])).await.unwrap();

    // Queued in the transaction that stored them, one mark per hour and transaction; the reads
    // count them already (their hours are read from the raw rows).
    let (results, marks) = queued(&ts).await;
    assert_eq!(results, 141);
    assert!((2..=4).contains(&marks), "one mark per hour per transaction: {marks}");
    assert!(rollup_table(&ts, "rollup_hourly").await.is_empty(), "nothing added before the refresh");
    check_against_raw(&ts, d).await;

    let report = ts.refresh_rollups().await.unwrap();
    assert_eq!((report.results_added, report.results_discarded), (141, 0), "{report:?}");
    assert!(report.hours.is_empty(), "nothing marked for a recomputation");
    assert_eq!(queued(&ts).await, (0, 0), "the queue and its marks are emptied together");
    check_rollups_against_raw(&ts).await;
    check_against_raw(&ts, d).await;
    let again = ts.refresh_rollups().await.unwrap();
    assert_eq!(again.results_added, 0, "an empty queue adds nothing");

    // Late results (an agent that buffered them) into an hour already rolled up, a resent
    // batch stored and queued once, and for the other domain a TLS phase no earlier result had.
    let late: Vec<ProbeResult> =
        (0..30u32).map(|i| result(d, hour + TimeDelta::seconds(200 + i as i64), false, 3_000_000)).collect();
    let late = batch("ams", late);
    ts.ingest(late.clone()).await.unwrap();
    assert!(ts.ingest(late).await.unwrap().duplicate);
    let tls =
        ProbeResult { tls_us: Some(40_000), ..result(other, hour + TimeDelta::seconds(300), true, 50_000) };
    ts.ingest(batch("ams", vec![tls])).await.unwrap();
    assert_eq!(queued(&ts).await.0, 31, "the resent batch is not queued twice");
    check_against_raw(&ts, d).await;
    assert_eq!(ts.uptime(d, Window::Day).await.unwrap().probes.probes, 170, "counted while queued");
    assert_eq!(ts.refresh_rollups().await.unwrap().results_added, 31);
    check_rollups_against_raw(&ts).await;
    check_against_raw(&ts, d).await;
    let uptime = ts.uptime(d, Window::Day).await.unwrap();
    assert_eq!(uptime.probes.probes, 170);

    // The daily roll-up holds the same totals as the hourly one, for every window.
    let daily: (i64, i64) = sqlx::query_as(
        "SELECT sum(probes)::bigint, sum(successes)::bigint FROM rollup_daily WHERE domain_id = $1",
    )
    .bind(d)
    .fetch_one(ts.pool())
    .await
    .unwrap();
    assert_eq!(daily, (uptime.probes.probes as i64, uptime.probes.successes as i64));
    for window in [Window::Week, Window::Month] {
        assert_eq!(ts.uptime(d, window).await.unwrap().probes, uptime.probes);
    }
    // Another domain's results are counted apart.
    assert_eq!(ts.uptime(other, Window::Day).await.unwrap().probes.probes, 2);

    // An hour marked by an older control plane (which stored results without adding them) is
    // read from the raw rows until the refresher re-aggregates it; results of that hour still
    // queued are left out of the additions (the recomputation reads them), so nothing is
    // counted twice.
    ts.ingest(batch("ams", vec![result(d, hour + TimeDelta::seconds(400), true, 2_000)])).await.unwrap();
    sqlx::query("INSERT INTO rollup_dirty (hour) VALUES ($1)")
        .bind(chrono::DurationRound::duration_trunc(hour, TimeDelta::hours(1)).unwrap())
        .execute(ts.pool())
        .await
        .unwrap();
    check_against_raw(&ts, d).await;
    let report = ts.refresh_rollups().await.unwrap();
    assert_eq!(report.hours.len(), 1);
    assert_eq!(report.results_added, 0, "the marked hour's queued result is recomputed, not added");
    check_rollups_against_raw(&ts).await;
    check_against_raw(&ts, d).await;
    assert_eq!(ts.uptime(d, Window::Day).await.unwrap().probes.probes, 171);
    ts.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn queued_results_older_than_the_rollup_retention_are_discarded_and_counted() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let d = Uuid::now_v7();
    // The scratch configuration keeps roll-ups 730 days; a result 800 days old is still stored
    // raw (the DEFAULT partition takes it) but has no roll-up to join.
    let old = Utc::now() - TimeDelta::days(800);
    let fresh = Utc::now() - TimeDelta::minutes(5);
    ts.ingest(batch("ams", vec![result(d, old, true, 1_000), result(d, fresh, true, 1_000)])).await.unwrap();
    let report = ts.refresh_rollups().await.unwrap();
    assert_eq!((report.results_added, report.results_discarded), (1, 1), "{report:?}");
    assert_eq!(queued(&ts).await, (0, 0));
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rollup_hourly").fetch_one(ts.pool()).await.unwrap();
    assert_eq!(rows, 1);
    ts.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn partitions_ahead_default_partition_and_retention() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let now = Utc::now();
    let partitions = control_plane::timeseries::rollup::partitions(ts.pool()).await.unwrap();
    let ahead = now + TimeDelta::days(i64::from(Config::default().partitions_ahead_days));
    for day in [now - TimeDelta::days(1), now, ahead] {
        let name = format!("probe_results_p{}", day.format("%Y%m%d"));
        assert!(partitions.contains(&name), "{name} missing from {partitions:?}");
    }

    // A result older than every partition lands in the DEFAULT partition and is kept.
    let d = Uuid::now_v7();
    let old = now - TimeDelta::days(20);
    let over_h2 = ProbeResult {
        http_version: shared::proto::HttpVersion::HttpVersion2 as i32,
        ..result(d, now, true, 20)
    };
    ts.ingest(batch("ams", vec![result(d, old, true, 10), over_h2])).await.unwrap();
    let in_default: i64 =
        sqlx::query_scalar("SELECT count(*) FROM probe_results_default").fetch_one(ts.pool()).await.unwrap();
    assert_eq!(in_default, 1);
    let recent = ts.recent_results(d, 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert!(recent[0].time > recent[1].time, "newest first");
    assert_eq!(recent[0].http_version.as_deref(), Some("HTTP/2"), "the version is kept");
    assert_eq!(recent[1].http_version, None, "no version sent, none stored");

    // Maintenance "20 days ago" creates that day's partition and moves the row into it.
    let report = ts.maintain(old).await.unwrap();
    assert!(report.rows_moved >= 1, "{report:?}");
    let in_default: i64 =
        sqlx::query_scalar("SELECT count(*) FROM probe_results_default").fetch_one(ts.pool()).await.unwrap();
    assert_eq!(in_default, 0);
    assert_eq!(ts.recent_results(d, 10).await.unwrap().len(), 2, "nothing lost by the move");

    // 200 days later: every partition holding today is past raw retention (90 days) and goes,
    // with its rows; partitions ahead of then exist; roll-ups (730 days) stay.
    ts.refresh_rollups().await.unwrap();
    let later = now + TimeDelta::days(200);
    let report = ts.maintain(later).await.unwrap();
    assert!(
        report.partitions_dropped.contains(&format!("probe_results_p{}", now.format("%Y%m%d"))),
        "{report:?}"
    );
    assert_eq!(ts.recent_results(d, 10).await.unwrap().len(), 0);
    let partitions = control_plane::timeseries::rollup::partitions(ts.pool()).await.unwrap();
    assert!(partitions.contains(&format!("probe_results_p{}", later.format("%Y%m%d"))));
    assert!(!partitions
        .iter()
        .any(|p| p < &format!("probe_results_p{}", (later - TimeDelta::days(90)).format("%Y%m%d"))));
    let rolled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rollup_hourly").fetch_one(ts.pool()).await.unwrap();
    assert_eq!(rolled, 2);
    assert!(report.batch_ids_forgotten >= 1);
    ts.close().await;
    db.drop_now().await;
}

/// A TCP proxy to the shared PostgreSQL that can cut every connection and refuse new ones,
/// like a database that went away (the shared server itself is never stopped).
struct Proxy {
    port: u16,
    state: Arc<Mutex<(bool, CancellationToken)>>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start() -> Self {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let state = Arc::new(Mutex::new((true, CancellationToken::new())));
        let stop = CancellationToken::new();
        let (shared, stopped) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else { continue };
                let (up, cut) = {
                    let s = shared.lock().unwrap();
                    (s.0, s.1.clone())
                };
                if !up {
                    continue; // dropped: the client sees the connection closed
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await else { return };
                    tokio::select! {
                        () = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Self { port, state, stop }
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = false;
        s.1.cancel();
        s.1 = CancellationToken::new();
    }

    fn restore(&self) {
        self.state.lock().unwrap().0 = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.lock().unwrap().1.cancel();
    }
}

#[tokio::test]
async fn unavailable_database_fails_fast_then_recovers() {
    let db = ScratchDb::create("ts").await;
    let proxy = Proxy::start().await;
    let ts = open(&proxy.url(&db.name)).await;
    let d = Uuid::now_v7();
    assert!(!ts.ingest(batch("ams", vec![result(d, Utc::now(), true, 1)])).await.unwrap().duplicate);

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let err = ts.ingest(batch("ams", vec![result(d, Utc::now(), true, 1)])).await.unwrap_err();
        assert!(matches!(err, IngestError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    }

    proxy.restore();
    let kept = batch("ams", vec![result(d, Utc::now(), true, 1)]);
    let outcome = eventually(WAIT, "ingest after the database is back", || {
        let (ts, kept) = (ts.clone(), kept.clone());
        async move { ts.ingest(kept).await.ok() }
    })
    .await;
    assert_eq!(outcome, IngestOutcome { stored: 1, duplicate: false });
    assert_eq!(raw_count(&ts).await, 2, "failed batches stored nothing");
    ts.close().await;
    drop(proxy);
    db.drop_now().await;
}

#[tokio::test]
async fn close_stores_what_is_queued() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let d = Uuid::now_v7();
    let sends: Vec<_> = (0..20)
        .map(|_| {
            let ts = ts.clone();
            tokio::spawn(async move { ts.ingest(batch("sin", vec![result(d, Utc::now(), true, 7)])).await })
        })
        .collect();
    let mut stored = 0;
    for send in sends {
        if let Ok(outcome) = send.await.unwrap() {
            stored += outcome.stored;
        }
    }
    ts.close().await;
    assert!(matches!(ts.ingest(batch("sin", vec![])).await, Err(IngestError::Unavailable(_))));
    let count: i64 = {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let count = sqlx::query_scalar("SELECT count(*) FROM probe_results").fetch_one(&pool).await.unwrap();
        pool.close().await;
        count
    };
    assert_eq!(count, i64::from(stored), "every acknowledged result is stored, nothing else");
    db.drop_now().await;
}

fn certificate() -> Certificate {
    let now = Utc::now().timestamp();
    Certificate {
        subject: "CN=example.com".into(),
        issuer: "CN=Test CA".into(),
        sans: vec!["example.com".into(), "www.example.com".into()],
        serial: "01ab".into(),
        not_before_unix_s: now - 86_400,
        not_after_unix_s: now + 30 * 86_400 + 3_600,
        valid: true,
        validation_error: String::new(),
        ..Default::default()
    }
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn history_api_is_tenant_scoped_and_validated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.create_domain(domain("https://example.com/")).await;
    let d: Uuid = id.parse().unwrap();
    let ts = open(&app.config.timeseries_url).await;

    let now = Utc::now();
    let mut results: Vec<ProbeResult> =
        (0..8).map(|i| result(d, now - TimeDelta::minutes(i), i != 3, 10_000 + i as u32)).collect();
    let response = app.get(&format!("/v1/domains/{id}/certificate"), &app.token).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "not_recorded");
    results[0].certificate = Some(certificate());
    ts.ingest(batch("ams", results)).await.unwrap();
    ts.refresh_rollups().await.unwrap();

    let uptime: Value = app.get(&format!("/v1/domains/{id}/uptime"), &app.token).await.json().await.unwrap();
    assert_eq!(uptime["window"], "24h");
    assert_eq!(uptime["probes"]["probes"], 8);
    assert_eq!(uptime["probes"]["successes"], 7);
    assert_eq!(uptime["regions"][0]["region"], "ams");
    let week: Value =
        app.get(&format!("/v1/domains/{id}/uptime?window=7d"), &app.token).await.json().await.unwrap();
    assert_eq!(week["window"], "7d");
    let latency: Value =
        app.get(&format!("/v1/domains/{id}/latency?window=30d"), &app.token).await.json().await.unwrap();
    assert_eq!(latency["overall"]["total"]["samples"], 8);
    assert!(latency["overall"]["total"]["p95_us"].as_u64().unwrap() >= 10_007);
    assert_eq!(latency["regions"][0]["tls"], Value::Null);

    let response = app.get(&format!("/v1/domains/{id}/latency?window=1y"), &app.token).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["fields"]["window"].is_string(), "{body}");

    let all: Value = app.get(&format!("/v1/domains/{id}/results"), &app.token).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 8);
    let two: Value =
        app.get(&format!("/v1/domains/{id}/results?limit=2"), &app.token).await.json().await.unwrap();
    let two = two["items"].as_array().unwrap();
    assert_eq!(two.len(), 2);
    assert!(two[0]["time"].as_str() > two[1]["time"].as_str(), "newest first");
    for bad in ["0", "1001", "x"] {
        let response = app.get(&format!("/v1/domains/{id}/results?limit={bad}"), &app.token).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "limit={bad}");
        assert!(response.json::<Value>().await.unwrap()["error"]["fields"]["limit"].is_string());
    }

    let cert: Value =
        app.get(&format!("/v1/domains/{id}/certificate"), &app.token).await.json().await.unwrap();
    assert_eq!(cert["regions"][0]["region"], "ams");
    assert_eq!(cert["regions"][0]["days_left"], 30);
    assert_eq!(cert["regions"][0]["sans"], json!(["example.com", "www.example.com"]));

    // Another tenant sees none of it; an unknown domain is the same 404.
    let other = app.other_tenant().await;
    for path in ["uptime", "latency", "results", "certificate"] {
        let response = app.get(&format!("/v1/domains/{id}/{path}"), &other).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "not_found");
        let unknown = app.get(&format!("/v1/domains/{}/{path}", Uuid::now_v7()), &app.token).await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(app.get(&format!("/v1/domains/{id}/uptime"), "nope").await.status(), StatusCode::UNAUTHORIZED);
    ts.close().await;
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn certificate_answer_carries_the_chain_the_fault_and_every_hop(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.create_domain(domain("https://example.com/")).await;
    let d: Uuid = id.parse().unwrap();
    let ts = open(&app.config.timeseries_url).await;
    let now = Utc::now().timestamp();
    let days = |n: i64| now + n * 86_400 + 3_600;

    // ams: the leaf (60 days) under an intermediate expiring in 10, then a redirect to a host
    // whose chain has an expired second intermediate.
    let mut ams = result(d, Utc::now(), false, 10_000);
    ams.certificate = Some(Certificate {
        chain_length: 2,
        chain_verified: true,
        chain_earliest: Some(ChainCertificate {
            position: 1,
            subject: String::new(),
            not_after_unix_s: days(10),
        }),
        not_after_unix_s: days(60),
        ..certificate()
    });
    ams.redirect_certificates = vec![Certificate {
        host: "landing.example.net".into(),
        subject: "CN=landing.example.net".into(),
        serial: "02".into(),
        not_after_unix_s: days(40),
        valid: false,
        validation_error: "certificate expired: intermediate 2 (CN=Old) expired at …".into(),
        chain_length: 3,
        chain_verified: true,
        chain_earliest: Some(ChainCertificate {
            position: 2,
            subject: "CN=Old".into(),
            not_after_unix_s: days(-3),
        }),
        problem: CertProblem::Expired as i32,
        problem_position: 2,
        problem_subject: "CN=Old".into(),
        problem_at_unix_s: Some(days(-3)),
        sans: Vec::new(),
        ..certificate()
    }];
    // iad: an agent that predates chains (length 0, no host).
    let mut iad = result(d, Utc::now(), true, 10_000);
    iad.certificate = Some(certificate());
    ts.ingest(batch("ams", vec![ams])).await.unwrap();
    ts.ingest(batch("iad", vec![iad])).await.unwrap();

    let cert: Value =
        app.get(&format!("/v1/domains/{id}/certificate"), &app.token).await.json().await.unwrap();
    let ams = &cert["regions"][0];
    assert_eq!((&ams["region"], &ams["host"]), (&json!("ams"), &json!("example.com")), "{cert:#}");
    assert_eq!((&ams["chain_length"], &ams["chain_verified"]), (&json!(2), &json!(true)));
    let chain = ams["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "{ams:#}");
    assert_eq!((&chain[1]["position"], &chain[1]["subject"]), (&json!(1), &json!("CN=Test CA")));
    assert_eq!(ams["earliest_chain_expiry"]["days_left"], 10);
    assert_eq!(ams["earliest_chain_expiry"]["subject"], "CN=Test CA");
    let hop = &ams["redirect_certificates"][0];
    assert_eq!((&hop["host"], &hop["days_left"]), (&json!("landing.example.net"), &json!(40)));
    assert_eq!(
        hop["problem"],
        json!({"kind": "expired", "position": 2, "subject": "CN=Old", "at": hop["chain"]["earliest"]["not_after"]})
    );
    let earliest = &ams["earliest_expiry"];
    assert_eq!(
        (&earliest["host"], &earliest["position"], &earliest["subject"]),
        (&json!("landing.example.net"), &json!(2), &json!("CN=Old"))
    );
    assert!(earliest["days_left"].as_i64().unwrap() < 0, "{earliest}");
    assert_eq!(cert["earliest_expiry"]["region"], "ams");
    assert_eq!(cert["earliest_expiry"]["certificate"], *earliest);

    let iad = &cert["regions"][1];
    assert_eq!((&iad["chain_length"], &iad["problem"]), (&json!(0), &Value::Null));
    assert_eq!(iad["chain"].as_array().unwrap().len(), 1, "only the leaf is known");
    assert_eq!(iad["earliest_expiry"]["days_left"], 30);
    assert_eq!(iad["redirect_certificates"], json!([]));
    ts.close().await;
    app.stop().await;
}

#[tokio::test]
async fn concurrent_writers_and_refreshes_add_every_result_exactly_once() {
    let db = ScratchDb::create("ts").await;
    let ts = open(&db.url).await;
    let d = Uuid::now_v7();
    let now = Utc::now();
    let hours: Vec<DateTime<Utc>> = (0..4)
        .map(|h| {
            chrono::DurationRound::duration_trunc(now - TimeDelta::hours(h), TimeDelta::hours(1)).unwrap()
        })
        .collect();
    // Four senders at once into the same rows (one domain, two regions, four hours), while
    // refreshes add the queue to the roll-ups and recompute marked hours: no result may be lost
    // or counted twice.
    let senders: Vec<_> = (0..4i64)
        .map(|sender| {
            let ts = ts.clone();
            tokio::spawn(async move {
                for i in 0..10i64 {
                    let results = (0..20)
                        .map(|j| {
                            result(
                                d,
                                now - TimeDelta::minutes((sender * 13 + i * 37 + j * 11) % 240),
                                j % 3 != 0,
                                500 + (i * j) as u32 * 40,
                            )
                        })
                        .collect();
                    ts.ingest(batch(if (i + sender) % 2 == 0 { "ams" } else { "sin" }, results))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // Meanwhile hours marked by an older control plane are re-aggregated again and again.
    let mut refreshes = 0;
    while senders.iter().any(|s| !s.is_finished()) {
        sqlx::query("INSERT INTO rollup_dirty (hour) SELECT unnest($1::timestamptz[])")
            .bind(&hours)
            .execute(ts.pool())
            .await
            .unwrap();
        ts.refresh_rollups().await.unwrap();
        refreshes += 1;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(refreshes > 1, "the refresher ran while results arrived");
    check_against_raw(&ts, d).await;
    ts.refresh_rollups().await.unwrap();
    assert_eq!(queued(&ts).await, (0, 0));
    check_rollups_against_raw(&ts).await;
    check_against_raw(&ts, d).await;
    assert_eq!(ts.uptime(d, Window::Day).await.unwrap().probes.probes, 800);
    ts.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_full_queue_answers_unavailable_after_the_wait() {
    let db = ScratchDb::create("ts").await;
    let config = Config {
        timeseries_write_connections: 1,
        ingest_queue_capacity: 1,
        ingest_wait_ms: 200,
        ..ts_config(&db.url)
    };
    let mut registry = Registry::default();
    let ts = Timeseries::connect(&config, &mut registry).await.unwrap();
    let d = Uuid::now_v7();

    // Stall the only writer (once connected and prepared): it blocks on the de-duplication insert.
    eventually(WAIT, "the writer to connect", || async {
        (ts.metrics().write_connections.get() == 1).then_some(())
    })
    .await;
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE ingested_batches IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let stalled = tokio::spawn({
        let ts = ts.clone();
        async move { ts.ingest(batch("ams", vec![result(d, Utc::now(), true, 1)])).await }
    });
    eventually(WAIT, "the writer to wait for the lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(ts.pool())
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;
    let queued = tokio::spawn({
        let ts = ts.clone();
        async move { ts.ingest(batch("ams", vec![result(d, Utc::now(), true, 2)])).await }
    });
    eventually(WAIT, "a batch in the queue", || async {
        (ts.metrics().queue_depth.get() == 1).then_some(())
    })
    .await;

    let started = Instant::now();
    let err = ts.ingest(batch("ams", vec![result(d, Utc::now(), true, 3)])).await.unwrap_err();
    assert!(matches!(&err, IngestError::Unavailable(m) if m.contains("queue")), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200) && started.elapsed() < Duration::from_secs(2));

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert_eq!(stalled.await.unwrap().unwrap().stored, 1);
    assert_eq!(queued.await.unwrap().unwrap().stored, 1);
    assert_eq!(raw_count(&ts).await, 2);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("control_plane_timeseries_rows_stored_total 2"), "{text}");
    assert!(text.contains("control_plane_timeseries_errors_total{reason=\"queue_full\"} 1"), "{text}");
    ts.close().await;
    db.drop_now().await;
}
