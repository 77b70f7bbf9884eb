//! Ingest benchmarks.
//!
//! - `ingest`: simulated agents with real mutual-TLS certificates send batches to an in-process
//!   control plane as fast as they are acknowledged; then the same number of rows is written
//!   with a bare binary COPY into the same table as the baseline. Reports throughput, the ratio
//!   to the baseline, and rows lost or duplicated (checked in the database). Then one roll-up
//!   pass adds everything the run queued (plain mode), timed, and the hourly roll-ups are
//!   checked against the raw rows.
//! - `ingest-fanin`: thousands of agent connections (a separate control-plane process, so each
//!   side has its own open-files limit) all sending at once. Reports errors, acknowledgement
//!   latency and the most database connections seen, against the configured pools.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use shared::proto::v1::ingest_client::IngestClient;
use shared::proto::{Batch, ProbeResult};
use shared::testing::free_port;
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::env::{redis_url, Scratch, ScratchDb};
use crate::pki::{self, Pki};
use crate::stats::percentile_ms;

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated agents, each with its own certificate and connection.
    #[arg(long, default_value_t = 8)]
    agents: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Results per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Distinct domains the results are spread over.
    #[arg(long, default_value_t = 1000)]
    domains: usize,
}

impl Args {
    /// The run the capacity model measures ingest with: 8 agents, batches of 500 over
    /// `domains` domains, for `seconds`.
    pub(crate) fn brief(seconds: u64, domains: usize) -> Self {
        Self { agents: 8, seconds, batch: 500, domains }
    }
}

#[derive(Debug, clap::Args)]
pub struct FaninArgs {
    /// Concurrent agent connections.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Batches each agent sends, one after another.
    #[arg(long, default_value_t = 3)]
    batches: usize,
    /// Results per batch.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Distinct certificates shared among the agents (0: one per agent).
    #[arg(long, default_value_t = 0)]
    certificates: usize,
}

/// The control-plane configuration of a benchmark run.
pub fn control_config(scratch: &Scratch, ts: &ScratchDb, pki: &Pki) -> control_plane::Config {
    let mut config = control_plane::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        ingest_listen: "127.0.0.1:0".parse().expect("address"),
        database_url: scratch.db.url.clone(),
        redis_url: redis_url(),
        redis_prefix: scratch.prefix.clone(),
        timeseries_url: ts.url.clone(),
        regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
        ..control_plane::Config::default()
    };
    pki.configure(&mut config);
    config
}

/// `n` results of `domains`, unique per (agent, time): `seq` advances by one microsecond each.
pub fn results(domains: &[Uuid], seq: &mut i64, base_us: i64, n: usize) -> Vec<ProbeResult> {
    (0..n)
        .map(|i| {
            *seq += 1;
            let ok = *seq % 50 != 0;
            ProbeResult {
                domain_id: domains[(*seq as usize + i) % domains.len()].as_bytes().to_vec(),
                started_at_unix_us: base_us + *seq,
                config_version: 1,
                ok,
                error: if ok { 0 } else { shared::proto::ErrorKind::Connect as i32 },
                status_code: if ok { 200 } else { 0 },
                dns_us: Some(300 + (*seq % 700) as u32),
                connect_us: Some(500 + (*seq % 1500) as u32),
                tls_us: Some(2_000 + (*seq % 3000) as u32),
                ttfb_us: Some(8_000 + (*seq % 20_000) as u32),
                total_us: 12_000 + (*seq % 40_000) as u32,
                resolved_ip: "192.0.2.10".into(),
                body_bytes: 1_024,
                ..Default::default()
            }
        })
        .collect()
}

pub fn batch_of(results: Vec<ProbeResult>, region: &str) -> Batch {
    Batch {
        batch_id: Uuid::now_v7().as_bytes().to_vec(),
        agent_version: "bench".into(),
        claimed_region: region.into(),
        results,
        health: None,
    }
}

/// `n` domains of a new tenant `name`, running in every region, inserted directly (ingest
/// stores results only for domains that exist, run, and run in the agent's region). Their URLs
/// are documentation addresses: nothing here probes them.
pub async fn seed_domains(database_url: &str, name: &str, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let tenant = control_plane::tenants::create_tenant(&pool, &format!("bench-{name}")).await?.tenant_id;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let urls: Vec<String> = (0..n).map(|i| format!("http://192.0.2.10/d{i}")).collect();
    sqlx::query(
        "INSERT INTO domains (id, tenant_id, url, method, status_min, status_max, interval_s, timeout_ms, version)
         SELECT id, $1, url, 'GET', 200, 299, 60, 5000, 1 FROM unnest($2::uuid[], $3::text[]) AS u(id, url)",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&urls)
    .execute(&pool)
    .await
    .context("inserting the benchmark's domains")?;
    pool.close().await;
    Ok(ids)
}

/// Rows stored for agents whose id starts with `prefix`: (all, distinct by agent and time).
async fn stored(ts_url: &str, prefix: &str) -> anyhow::Result<(i64, i64)> {
    let mut conn = PgConnection::connect(ts_url).await?;
    let row: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (agent_id, time, domain_id)) FROM probe_results WHERE agent_id LIKE $1",
    )
    .bind(format!("{prefix}%"))
    .fetch_one(&mut conn)
    .await?;
    Ok(row)
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let scratch = Scratch::create("ingest").await?;
    let result = measure(&args, &scratch, &scratch.timeseries).await;
    scratch.cleanup().await?;
    result
}

/// One `ingest` run against `scratch` (its results stored in `ts`): the JSON `ingest` reports.
pub(crate) async fn measure(args: &Args, scratch: &Scratch, ts: &ScratchDb) -> anyhow::Result<Value> {
    let pki = Pki::create("ingest")?;
    let app = control_plane::Application::build(control_config(scratch, ts, &pki)).await?;
    let addr = app.ingest_addr().context("ingest is enabled")?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until(shutdown.clone()));

    let domains = seed_domains(&scratch.db.url, "ingest", args.domains.max(1)).await?;
    let base_us = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    let acked = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..args.agents {
        let region = REGIONS[i % REGIONS.len()];
        let (cert, key) = pki.agent(region, &format!("bench-{i}"))?;
        clients.push((region, IngestClient::new(pki::channel(addr, &pki.ca_pem, &cert, &key).await?)));
    }
    eprintln!("{} agents connected; sending for {} s", args.agents, args.seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (i, (region, mut client)) in clients.into_iter().enumerate() {
        let (domains, acked, retries, batch) = (domains.clone(), acked.clone(), retries.clone(), args.batch);
        tasks.push(tokio::spawn(async move {
            // Each agent's rows are unique by time: agent i owns a 1,000 s slice of microseconds
            // (seq stays far below 10^9 in a run), all within today's and yesterday's partitions.
            let mut seq = 0i64;
            let base = base_us - (i as i64) * 1_000_000_000;
            while Instant::now() < deadline {
                let batch = batch_of(results(&domains, &mut seq, base, batch), region);
                let rows = batch.results.len() as u64;
                loop {
                    match client.send_batch(batch.clone()).await {
                        Ok(_) => break,
                        Err(status) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            eprintln!("agent {i}: {status:?}; resending the same batch");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                acked.fetch_add(rows, Ordering::Relaxed);
            }
        }));
    }
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    loop {
        tokio::select! {
            joined = &mut all => { for j in joined { j?; } break; }
            _ = progress.tick() => eprintln!("  {:>5.1} s: {} rows acknowledged", started.elapsed().as_secs_f64(), acked.load(Ordering::Relaxed)),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    shutdown.cancel();
    server.await??;

    let (rows, distinct) = stored(&ts.url, "bench-").await?;
    let rollup = drain_rollups(scratch, ts, &pki).await?;
    let baseline = copy_baseline(&ts.url, &domains, acked as usize).await?;
    let rows_per_s = acked as f64 / elapsed;
    Ok(json!({
        "agents": args.agents,
        "batch": args.batch,
        "rows": acked,
        "rows_per_s": rows_per_s.round(),
        "copy_baseline_rows_per_s": baseline.round(),
        "ratio": ((rows_per_s / baseline) * 1000.0).round() / 1000.0,
        "lost": acked as i64 - distinct,
        "duplicated": rows - distinct,
        "retries": retries.load(Ordering::Relaxed),
        "rollup_queued": rollup.queued,
        "rollup_seconds": (rollup.seconds * 1000.0).round() / 1000.0,
        "rollup_rows_per_s": (rollup.queued as f64 / rollup.seconds.max(1e-9)).round(),
        "rollup_missing": rollup.missing,
    }))
}

/// What adding the queued results to the roll-ups took after the run.
struct RollupDrain {
    /// Results waiting in the queue when the pass began (plain mode; 0 with TimescaleDB).
    queued: i64,
    seconds: f64,
    /// Stored results the hourly roll-ups do not count afterwards (must be 0).
    missing: i64,
}

/// Plain mode: one refresh pass over everything the run queued, timed, then the hourly
/// roll-ups' total checked against the raw rows.
async fn drain_rollups(scratch: &Scratch, ts: &ScratchDb, pki: &Pki) -> anyhow::Result<RollupDrain> {
    let config = control_config(scratch, ts, pki);
    let store = control_plane::timeseries::Timeseries::connect(
        &config,
        &mut prometheus_client::registry::Registry::default(),
    )
    .await?;
    let mut conn = PgConnection::connect(&ts.url).await?;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM rollup_queue").fetch_one(&mut conn).await?;
    eprintln!("adding {queued} queued results to the roll-ups");
    let started = Instant::now();
    store.refresh_rollups().await?;
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    let missing: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM probe_results) - (SELECT coalesce(sum(probes), 0)::bigint FROM rollup_hourly)",
    )
    .fetch_one(&mut conn)
    .await?;
    Ok(RollupDrain { queued, seconds, missing })
}

/// Rows per second of a bare binary COPY of `n` such rows (agent `baseline`) into the same
/// table, in transactions of 50,000 rows on one connection.
async fn copy_baseline(ts_url: &str, domains: &[Uuid], n: usize) -> anyhow::Result<f64> {
    let (client, connection) = tokio_postgres::connect(ts_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut client = client;
    let mut seq = 0i64;
    let base_us = chrono::Utc::now().timestamp_micros() - 7_200_000_000;
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        // 50,000 rows per transaction, written as COPY streams of at most a batch's size.
        let tx = client.transaction().await?;
        let mut in_tx = 0;
        while left > 0 && in_tx < 50_000 {
            let chunk = left.min(shared::proto::MAX_BATCH_RESULTS);
            let batch = control_plane::timeseries::IngestBatch {
                region: "ams".into(),
                agent_id: "baseline".into(),
                batch_id: Uuid::now_v7(),
                results: results(domains, &mut seq, base_us, chunk),
            };
            control_plane::timeseries::copy_batch(&tx, batch).await?;
            left -= chunk;
            in_tx += chunk;
        }
        tx.commit().await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Internal: a control plane configured from `CROSSCHECK_*` variables (ingest-fanin and
/// restart-loss run it as a separate process).
pub async fn control_plane_child() -> anyhow::Result<()> {
    let config: control_plane::Config =
        shared::config::load_checked(None, control_plane::config::ENV, control_plane::Config::validate)
            .map_err(anyhow::Error::msg)?;
    shared::limits::raise_open_files()?;
    let app = control_plane::Application::build(config).await?;
    app.run_until(shared::shutdown::on_signal()).await
}

/// Starts the control plane as a child process of this binary.
pub async fn spawn_control_plane(env: &[(String, String)]) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(std::env::temp_dir().join("crosscheck-bench-control-plane.log"))?;
    Ok(tokio::process::Command::new(std::env::current_exe()?)
        .arg("control-plane-child")
        .envs(env.iter().cloned())
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}

/// The environment of a control-plane child for a run.
pub fn child_env(
    scratch: &Scratch,
    ts: &ScratchDb,
    pki: &Pki,
    api: u16,
    ingest: u16,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("CROSSCHECK_DATABASE_URL".to_owned(), scratch.db.url.clone()),
        ("CROSSCHECK_TIMESERIES_URL".to_owned(), ts.url.clone()),
        ("CROSSCHECK_REDIS_URL".to_owned(), redis_url()),
        ("CROSSCHECK_REDIS_PREFIX".to_owned(), scratch.prefix.clone()),
        ("CROSSCHECK_LISTEN".to_owned(), format!("127.0.0.1:{api}")),
        ("CROSSCHECK_INGEST_LISTEN".to_owned(), format!("127.0.0.1:{ingest}")),
        ("CROSSCHECK_REGIONS".to_owned(), format!("[{}]", REGIONS.join(","))),
    ];
    env.extend(pki.env());
    env
}

/// Polls `url` until it answers 200.
pub async fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let http = reqwest::Client::new();
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} not ready after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn fanin(args: FaninArgs) -> anyhow::Result<Value> {
    let scratch = Scratch::create("fanin").await?;
    let result = measure_fanin(&args, &scratch, &scratch.timeseries).await;
    scratch.cleanup().await?;
    result
}

async fn connections(admin: &mut PgConnection, db: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .fetch_one(admin)
        .await?)
}

async fn measure_fanin(args: &FaninArgs, scratch: &Scratch, ts: &ScratchDb) -> anyhow::Result<Value> {
    let limit = shared::limits::raise_open_files()?;
    anyhow::ensure!(
        limit as usize > args.agents + 1_000,
        "the open-files limit {limit} is too low for {} connections",
        args.agents
    );
    let pki = Pki::create("fanin")?;
    let (api, ingest) = (free_port(), free_port());
    let env = child_env(scratch, ts, &pki, api, ingest);
    let defaults = control_plane::Config::default();
    let ts_pool = defaults.timeseries_write_connections + defaults.timeseries_read_connections;
    let control_pool = defaults.database_max_connections + defaults.consensus_db_connections;
    let mut child = spawn_control_plane(&env).await?;
    wait_ready(&format!("http://127.0.0.1:{api}/readyz"), Duration::from_secs(60)).await?;
    let addr: SocketAddr = format!("127.0.0.1:{ingest}").parse()?;

    let certificates = if args.certificates == 0 { args.agents } else { args.certificates.min(args.agents) };
    eprintln!("issuing {certificates} agent certificates");
    let mut identities = Vec::with_capacity(certificates);
    for i in 0..certificates {
        let region = REGIONS[i % REGIONS.len()];
        identities.push((region, pki.agent(region, &format!("fanin-{i}"))?));
    }

    // Sample database connections for the whole run.
    let sampling = CancellationToken::new();
    let sampler = {
        let (stop, ts_name, control_name) = (sampling.clone(), ts.name.clone(), scratch.db.name.clone());
        tokio::spawn(async move {
            let mut admin = PgConnection::connect(&crate::env::admin_url()).await?;
            let (mut max_ts, mut max_control) = (0i64, 0i64);
            while !stop.is_cancelled() {
                max_ts = max_ts.max(connections(&mut admin, &ts_name).await?);
                max_control = max_control.max(connections(&mut admin, &control_name).await?);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok((max_ts, max_control))
        })
    };

    eprintln!("connecting {} agents", args.agents);
    let connect_started = Instant::now();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(256));
    let mut connecting = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let (region, (cert, key)) = identities[i % certificates].clone();
        let (ca, handshakes) = (pki.ca_pem.clone(), handshakes.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = handshakes.acquire_owned().await?;
            anyhow::Ok((region, pki::channel(addr, &ca, &cert, &key).await?))
        }));
    }
    let mut channels = Vec::with_capacity(args.agents);
    let mut errors = 0u64;
    for c in connecting {
        match c.await? {
            Ok(pair) => channels.push(pair),
            Err(error) => {
                errors += 1;
                eprintln!("connect failed: {}", shared::error::Chain(&*error));
            }
        }
    }
    eprintln!("{} connected in {:.1} s; sending", channels.len(), connect_started.elapsed().as_secs_f64());

    let domains = seed_domains(&scratch.db.url, "fanin", 1000).await?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.agents * args.batches)));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(channels.len() + 1));
    let base_us = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    let mut tasks = Vec::with_capacity(channels.len());
    for (i, (region, channel)) in channels.into_iter().enumerate() {
        let (domains, latencies, failures, start) =
            (domains.clone(), latencies.clone(), failures.clone(), start.clone());
        let (batches, size) = (args.batches, args.batch);
        tasks.push(tokio::spawn(async move {
            let mut client = IngestClient::new(channel);
            let mut seq = 0i64;
            let base = base_us - (i as i64) * 100_000;
            let mut mine = Vec::with_capacity(batches);
            start.wait().await;
            for _ in 0..batches {
                let batch = batch_of(results(&domains, &mut seq, base, size), region);
                let sent = Instant::now();
                match client.send_batch(batch).await {
                    Ok(_) => mine.push(sent.elapsed()),
                    Err(status) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("agent {i}: {status:?}");
                    }
                }
            }
            latencies.lock().await.extend(mine);
        }));
    }
    let sending = Instant::now();
    start.wait().await;
    for t in tasks {
        t.await?;
    }
    let send_s = sending.elapsed().as_secs_f64();
    sampling.cancel();
    let (max_ts, max_control) = sampler.await??;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    errors += failures.load(Ordering::Relaxed);
    Ok(json!({
        "agents": args.agents,
        "batches": latencies.len(),
        "errors": errors,
        "send_seconds": (send_s * 10.0).round() / 10.0,
        "p50_ack_ms": percentile_ms(&mut latencies, 50.0),
        "p99_ack_ms": percentile_ms(&mut latencies, 99.0),
        "max_db_connections": max_ts,
        "db_pool": ts_pool,
        "max_control_db_connections": max_control,
        "control_db_pool": control_pool,
    }))
}
