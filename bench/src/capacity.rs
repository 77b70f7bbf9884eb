//! `capacity`: the inputs of the capacity model, measured briefly on this machine, and the model
//! they give for a large fleet (by default 1,000,000 domains × 30 regions every 60 s, that is
//! 500,000 results a second). `docs/capacity.md` explains every line.
//!
//! Inputs, each measured for `--seconds`:
//!
//! - **probes per agent core**: the agent's scheduler and prober at saturation against local
//!   targets (a child process), as in `probe-throughput`, divided by the CPU time this process
//!   spent (`/proc/self/stat`, user + system; the targets' CPU is not counted);
//! - **ingest rows per writer**: simulated mTLS agents into an in-process control plane, as in
//!   `ingest`, divided by its time-series writers (`timeseries_write_connections`);
//! - **consensus evaluations per second**: `evaluate_many` in batches of `EVALUATE_BATCH`, two at
//!   a time as `Consensus::run` does, over the domains the ingest run observed in three regions;
//! - **Redis bytes per 1,000 configurations**: `--configs` agent-facing configurations written
//!   into a hash under a private prefix, `MEMORY USAGE … SAMPLES 0` and the `INFO memory`
//!   difference, then deleted;
//! - **bytes per stored result**: the time-series table's total size (heap, indexes, TOAST, every
//!   partition) over its rows after the ingest run, and the hourly roll-up's bytes per row. The
//!   TimescaleDB compression ratio is measured when the extension is present, otherwise the
//!   published figure is used (see [`PUBLISHED_COMPRESSION`]).

use std::time::{Duration, Instant};

use anyhow::Context;
use fred::prelude::*;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::env::{redis_client, Scratch};
use crate::ingest;
use crate::probing;
use crate::target::spawn_child;

/// TimescaleDB's published compression ratio, used when the extension is absent: "91%-96%
/// compression" (Timescale, *Building columnar compression in a row-oriented database*), "up to
/// 10-20x" in its later edition. The low end, 10×, is taken.
pub const PUBLISHED_COMPRESSION: f64 = 10.0;
const PUBLISHED_COMPRESSION_SOURCE: &str =
    "https://www.timescale.com/blog/building-columnar-compression-in-a-row-oriented-database/ (91-96%, 10-20x; 10x taken)";

/// Share of measured capacity the model plans to use: room for a failed agent or replica, a
/// takeover's catch-up probes and a mass outage's burst of batches.
const HEADROOM: f64 = 0.5;

/// Linux's `USER_HZ`: `/proc/<pid>/stat` counts CPU time in these ticks per second.
const CLOCK_TICKS_PER_S: f64 = 100.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds each input is measured for.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Probe slots of the measured agent (`max_in_flight`).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Configurations written to measure Redis memory.
    #[arg(long, default_value_t = 20_000)]
    configs: usize,
    /// Domains the ingest and consensus measurements spread over.
    #[arg(long, default_value_t = 2_000)]
    observed_domains: usize,
    /// Model: domains.
    #[arg(long, default_value_t = 1_000_000)]
    domains: u64,
    /// Model: regions every domain runs in.
    #[arg(long, default_value_t = 30)]
    regions: u64,
    /// Model: seconds between two probes of a domain from one region.
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// Model: CPU cores of one agent machine.
    #[arg(long, default_value_t = 2)]
    agent_cores: u64,
    /// Model: mean duration of a real probe over the internet, milliseconds (sets how many
    /// probes are in flight at once, bounded per agent by `max_in_flight`).
    #[arg(long, default_value_t = 300)]
    probe_ms: u64,
    /// Model: `max_in_flight` of one agent.
    #[arg(long, default_value_t = 256)]
    agent_in_flight: u64,
    /// Model: time-series writers of one control-plane replica.
    #[arg(long, default_value_t = 4)]
    writers_per_replica: u64,
    /// Model: days of raw results kept.
    #[arg(long, default_value_t = 30)]
    raw_days: u64,
}

/// What was measured on this machine.
#[derive(Debug, Clone, serde::Serialize)]
struct Inputs {
    probes_per_s: f64,
    probes_per_core_s: f64,
    probe_errors: u64,
    ingest_rows_per_s: f64,
    ingest_writers: u32,
    ingest_rows_per_writer_s: f64,
    copy_baseline_rows_per_s: f64,
    evaluations_per_s: f64,
    evaluation_batches: u64,
    observed_regions: i64,
    redis_bytes_per_1000_configs: f64,
    redis_used_memory_delta_per_1000_configs: f64,
    config_json_bytes: f64,
    bytes_per_result: f64,
    result_rows: i64,
    rollup_bytes_per_row: f64,
    timescaledb: bool,
    compression_ratio: f64,
    compression_source: String,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    anyhow::ensure!(args.interval > 0 && args.regions > 0, "--interval and --regions must be positive");
    anyhow::ensure!(
        args.agent_cores > 0 && args.agent_in_flight > 0,
        "--agent-cores and --agent-in-flight must be positive"
    );
    anyhow::ensure!(args.writers_per_replica > 0, "--writers-per-replica must be positive");
    let seconds = Duration::from_secs(args.seconds);

    eprintln!("1/4 probes per agent core ({} s)", args.seconds);
    let (probes_per_s, probes_per_core_s, probe_errors) = probes(args.concurrency, seconds).await?;

    eprintln!("2/4 ingest rows per writer and consensus evaluations ({} s each)", args.seconds);
    let scratch = Scratch::create("capacity").await?;
    let stored = storage(&args, &scratch).await;
    let cleaned = scratch.cleanup().await;
    let stored = stored?;
    cleaned?;

    eprintln!("3/4 redis bytes per 1,000 configurations ({} configurations)", args.configs);
    let (redis_per_1000, used_per_1000, json_bytes) = redis_memory(args.configs.max(1)).await?;

    let inputs = Inputs {
        probes_per_s,
        probes_per_core_s,
        probe_errors,
        ingest_rows_per_s: stored.rows_per_s,
        ingest_writers: stored.writers,
        ingest_rows_per_writer_s: stored.rows_per_s / f64::from(stored.writers.max(1)),
        copy_baseline_rows_per_s: stored.copy_baseline,
        evaluations_per_s: stored.evaluations_per_s,
        evaluation_batches: stored.evaluation_batches,
        observed_regions: stored.observed_regions,
        redis_bytes_per_1000_configs: redis_per_1000,
        redis_used_memory_delta_per_1000_configs: used_per_1000,
        config_json_bytes: json_bytes,
        bytes_per_result: stored.bytes_per_result,
        result_rows: stored.result_rows,
        rollup_bytes_per_row: stored.rollup_bytes_per_row,
        timescaledb: stored.timescaledb,
        compression_ratio: stored.compression_ratio,
        compression_source: stored.compression_source,
    };
    eprintln!("4/4 the model");
    let model = model(&args, &inputs);
    print_model(&args, &inputs, &model);
    Ok(json!({
        "scenario": "capacity",
        "seconds_per_input": args.seconds,
        "inputs": inputs,
        "model": model,
    }))
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest =
        stat.rsplit_once(')').map(|(_, rest)| rest).context("/proc/self/stat without a command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("field {} of /proc/self/stat", index + 3))
    };
    // utime is field 14, stime field 15.
    Ok((ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_S)
}

/// The agent at saturation: probes per second and per CPU second of this process.
async fn probes(concurrency: usize, duration: Duration) -> anyhow::Result<(f64, f64, u64)> {
    let (_child, addrs) = spawn_child(8).await?;
    let urls: Vec<String> = addrs.http.iter().map(|a| format!("http://{a}/ok")).collect();
    let domains = probing::domains(probing::SATURATING_DOMAINS, 1, &urls);
    let settings = probing::settings(&addrs)?;
    let cpu_before = cpu_seconds()?;
    let run = probing::run_scheduler(domains, settings, concurrency, duration).await?;
    let cpu = (cpu_seconds()? - cpu_before).max(1.0 / CLOCK_TICKS_PER_S);
    if let Some(error) = &run.first_error {
        eprintln!("  {} probes failed; first: {error}", run.errors);
    }
    let per_s = run.done as f64 / run.elapsed.as_secs_f64();
    let per_core = run.done as f64 / cpu;
    eprintln!(
        "  {per_s:.0} probes/s using {:.2} cores: {per_core:.0} probes per core-second",
        cpu / run.elapsed.as_secs_f64()
    );
    Ok((per_s, per_core, run.errors))
}

/// What the storage measurements found.
struct Stored {
    rows_per_s: f64,
    writers: u32,
    copy_baseline: f64,
    evaluations_per_s: f64,
    evaluation_batches: u64,
    observed_regions: i64,
    bytes_per_result: f64,
    result_rows: i64,
    rollup_bytes_per_row: f64,
    timescaledb: bool,
    compression_ratio: f64,
    compression_source: String,
}

async fn storage(args: &Args, scratch: &Scratch) -> anyhow::Result<Stored> {
    let ingest_args = ingest::Args::brief(args.seconds, args.observed_domains.max(1));
    let measured = ingest::measure(&ingest_args, scratch, &scratch.timeseries).await?;
    let number = |key: &str| {
        measured[key].as_f64().with_context(|| format!("ingest result without {key}: {measured}"))
    };
    let rows_per_s = number("rows_per_s")?;
    let copy_baseline = number("copy_baseline_rows_per_s")?;
    let lost = measured["lost"].as_i64().unwrap_or_default();
    anyhow::ensure!(lost == 0, "the ingest run lost {lost} rows: {measured}");
    let pki = crate::pki::Pki::create("capacity")?;
    let config = ingest::control_config(scratch, &scratch.timeseries, &pki);
    let writers = config.timeseries_write_connections;
    eprintln!("  {rows_per_s:.0} rows/s with {writers} writers (bare COPY {copy_baseline:.0} rows/s)");

    let (evaluations_per_s, evaluation_batches, observed_regions) = evaluations(config, args.seconds).await?;
    eprintln!("  {evaluations_per_s:.0} consensus evaluations/s over {observed_regions} observed regions");

    let (bytes_per_result, result_rows, rollup_bytes_per_row) = table_sizes(&scratch.timeseries.url).await?;
    let (timescaledb, compression_ratio, compression_source) = compression(&scratch.timeseries.url).await;
    eprintln!("  {bytes_per_result:.0} bytes per stored result ({result_rows} rows), {rollup_bytes_per_row:.0} per hourly roll-up row");
    Ok(Stored {
        rows_per_s,
        writers,
        copy_baseline,
        evaluations_per_s,
        evaluation_batches,
        observed_regions,
        bytes_per_result,
        result_rows,
        rollup_bytes_per_row,
        timescaledb,
        compression_ratio,
        compression_source,
    })
}

/// Consensus evaluations per second over every domain of the scratch database, in batches of
/// `EVALUATE_BATCH`, two at a time; and how many regions observed them.
async fn evaluations(config: control_plane::Config, seconds: u64) -> anyhow::Result<(f64, u64, i64)> {
    use control_plane::consensus::{Claim, EVALUATE_BATCH};
    let app = control_plane::Application::build(config).await?;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM domains ORDER BY id").fetch_all(app.pool()).await?;
    let regions: i64 = sqlx::query_scalar("SELECT count(DISTINCT region) FROM region_observations")
        .fetch_one(app.pool())
        .await?;
    anyhow::ensure!(!ids.is_empty(), "no domains to evaluate");
    let chunks: Vec<Vec<Uuid>> = ids.chunks(EVALUATE_BATCH).map(<[Uuid]>::to_vec).collect();
    let consensus = app.consensus();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut lanes = Vec::new();
    for lane in 0..2usize {
        let consensus = consensus.clone();
        // Lane 0 takes the even batches, lane 1 the odd ones: never the same rows at once.
        let mine: Vec<Vec<Uuid>> = chunks.iter().skip(lane).step_by(2).cloned().collect();
        lanes.push(tokio::spawn(async move {
            let (mut evaluated, mut batches) = (0usize, 0u64);
            if mine.is_empty() {
                return Ok::<_, anyhow::Error>((evaluated, batches));
            }
            for chunk in mine.iter().cycle() {
                if Instant::now() >= deadline {
                    break;
                }
                let now = chrono::Utc::now();
                let items: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
                    chunk.iter().map(|id| (*id, now)).collect();
                evaluated += consensus.evaluate_many(&items, Claim::Wait).await?.evaluated.len();
                batches += 1;
            }
            Ok((evaluated, batches))
        }));
    }
    let (mut evaluated, mut batches) = (0usize, 0u64);
    for lane in lanes {
        let (e, b) = lane.await??;
        evaluated += e;
        batches += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    app.pool().close().await;
    Ok((evaluated as f64 / elapsed, batches, regions))
}

/// Bytes per row of the results table (every partition or chunk, indexes and TOAST included)
/// and of the hourly roll-up, and the results' row count.
async fn table_sizes(url: &str) -> anyhow::Result<(f64, i64, f64)> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    let size = |table: &'static str| {
        format!(
            "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             WHERE c.oid = '{table}'::regclass
                OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = '{table}'::regclass)"
        )
    };
    let timescaledb = has_timescaledb(&mut conn).await;
    let results_bytes: i64 = if timescaledb {
        sqlx::query_scalar("SELECT hypertable_size('probe_results')::bigint").fetch_one(&mut conn).await?
    } else {
        sqlx::query_scalar(&size("probe_results")).fetch_one(&mut conn).await?
    };
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM probe_results").fetch_one(&mut conn).await?;
    anyhow::ensure!(rows > 0, "no results stored to measure");
    // A continuous aggregate (TimescaleDB) is not a plain table: only plain mode's roll-up is
    // measured directly; the model then uses the plain figure for both.
    let (rollup_bytes, rollup_rows): (i64, i64) = if timescaledb {
        (0, 0)
    } else {
        let bytes: i64 = sqlx::query_scalar(&size("rollup_hourly")).fetch_one(&mut conn).await?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM rollup_hourly").fetch_one(&mut conn).await?;
        (bytes, rows)
    };
    let rollup_per_row = if rollup_rows > 0 { rollup_bytes as f64 / rollup_rows as f64 } else { 0.0 };
    Ok((results_bytes as f64 / rows as f64, rows, rollup_per_row))
}

async fn has_timescaledb(conn: &mut PgConnection) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        .fetch_one(conn)
        .await
        .is_ok_and(|n| n > 0)
}

/// The compression ratio: measured by compressing every chunk when TimescaleDB is present,
/// the published figure otherwise (or when measuring fails, which is said).
async fn compression(url: &str) -> (bool, f64, String) {
    let published = (PUBLISHED_COMPRESSION, format!("published: {PUBLISHED_COMPRESSION_SOURCE}"));
    let Ok(mut conn) = PgConnection::connect(url).await else { return (false, published.0, published.1) };
    if !has_timescaledb(&mut conn).await {
        return (false, published.0, format!("{} (TimescaleDB absent)", published.1));
    }
    let measured: anyhow::Result<f64> = async {
        sqlx::query(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('probe_results') c",
        )
        .execute(&mut conn)
        .await?;
        let (before, after): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT sum(before_compression_total_bytes)::bigint, sum(after_compression_total_bytes)::bigint
             FROM chunk_compression_stats('probe_results')",
        )
        .fetch_one(&mut conn)
        .await?;
        match (before, after) {
            (Some(before), Some(after)) if after > 0 => Ok(before as f64 / after as f64),
            _ => anyhow::bail!("no compressed chunk"),
        }
    }
    .await;
    match measured {
        Ok(ratio) => (true, ratio, "measured: chunk_compression_stats after compress_chunk".into()),
        Err(error) => {
            eprintln!(
                "  measuring TimescaleDB compression failed ({}); using the published ratio",
                shared::error::Chain(&*error)
            );
            (true, published.0, published.1)
        }
    }
}

/// Redis bytes per 1,000 agent-facing configurations: `MEMORY USAGE` of the hash holding them
/// and the `INFO memory` difference, both scaled to 1,000; and the mean JSON size.
async fn redis_memory(count: usize) -> anyhow::Result<(f64, f64, f64)> {
    let redis = redis_client().await?;
    let prefix = shared::testing::random_prefix("capacity");
    let measured = async {
        let key = format!("{prefix}:domains");
        let before = used_memory(&redis).await?;
        let urls: Vec<String> =
            (0..count).map(|i| format!("https://status.example-{i}.com/healthz")).collect();
        let mut json_bytes = 0usize;
        for chunk in probing::domains(count, 60, &urls).chunks(1_000) {
            let fields: Vec<(String, String)> = chunk
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    d.regions = vec!["ams".into(), "iad".into(), "sin".into()];
                    let text = serde_json::to_string(&d).expect("a configuration serializes");
                    json_bytes += text.len();
                    (d.id.to_string(), text)
                })
                .collect();
            let _: () = redis.hset(&key, fields).await?;
        }
        let usage: i64 = redis
            .custom(fred::cmd!("MEMORY"), vec!["USAGE".to_owned(), key.clone(), "SAMPLES".into(), "0".into()])
            .await?;
        let after = used_memory(&redis).await?;
        let per_1000 = |bytes: f64| bytes * 1_000.0 / count as f64;
        anyhow::Ok((
            per_1000(usage as f64),
            per_1000(after as f64 - before as f64),
            json_bytes as f64 / count as f64,
        ))
    }
    .await;
    shared::testing::delete_prefix(&redis, &prefix).await?;
    let _ = redis.quit().await;
    let measured = measured?;
    eprintln!(
        "  {:.0} bytes per 1,000 configurations (MEMORY USAGE), {:.0} (used_memory delta), {:.0} JSON bytes each",
        measured.0, measured.1, measured.2
    );
    Ok(measured)
}

/// `used_memory` from `INFO memory`.
async fn used_memory(redis: &Client) -> anyhow::Result<u64> {
    let info: String = redis.custom(fred::cmd!("INFO"), vec!["memory".to_owned()]).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("used_memory in INFO memory")
}

/// The model's outputs.
#[derive(Debug, Clone, serde::Serialize)]
struct Model {
    results_per_s: f64,
    probes_per_s_per_region: f64,
    agents_per_region_cpu: u64,
    agents_per_region_in_flight: u64,
    agents_per_region: u64,
    agents_total: u64,
    ingest_replicas: u64,
    observation_upserts_per_s: f64,
    evaluations_per_s_storm: f64,
    consensus_replicas_storm: u64,
    redis_config_mb: f64,
    raw_gb_per_day: f64,
    compressed_gb_per_day: f64,
    raw_tb_kept: f64,
    compressed_tb_kept: f64,
    rollup_hourly_rows_per_day: f64,
    rollup_hourly_gb_per_day: f64,
    rollup_daily_rows_per_day: f64,
    single_node_rows_per_s_here: f64,
    single_node_multiple_needed: f64,
}

fn model(args: &Args, inputs: &Inputs) -> Model {
    let ceil = |x: f64| if x.is_finite() { x.ceil().max(1.0) as u64 } else { u64::MAX };
    let domains = args.domains as f64;
    let regions = args.regions as f64;
    let interval = args.interval as f64;
    let results_per_s = domains * regions / interval;
    let per_region = domains / interval;
    // CPU: each agent machine at HEADROOM of its cores; in flight: each agent's slots at
    // HEADROOM, a probe holding its slot for `probe_ms`.
    let per_agent_cpu = inputs.probes_per_core_s * args.agent_cores as f64 * HEADROOM;
    let in_flight = per_region * args.probe_ms as f64 / 1000.0;
    let agents_cpu = ceil(per_region / per_agent_cpu);
    let agents_in_flight = ceil(in_flight / (args.agent_in_flight as f64 * HEADROOM));
    // At least two per region: one can die.
    let agents_per_region = agents_cpu.max(agents_in_flight).max(2);
    let per_replica = inputs.ingest_rows_per_writer_s * args.writers_per_replica as f64 * HEADROOM;
    let ingest_replicas = ceil(results_per_s / per_replica);
    // A mass outage: every domain's vote changes once an interval.
    let storm = domains / interval;
    let consensus_replicas = ceil(storm / (inputs.evaluations_per_s * HEADROOM));
    let day = 86_400.0;
    let raw_gb_per_day = results_per_s * day * inputs.bytes_per_result / 1e9;
    let compressed_gb_per_day = raw_gb_per_day / inputs.compression_ratio;
    let rollup_rows = domains * regions * 24.0;
    Model {
        results_per_s,
        probes_per_s_per_region: per_region,
        agents_per_region_cpu: agents_cpu,
        agents_per_region_in_flight: agents_in_flight,
        agents_per_region,
        agents_total: agents_per_region.saturating_mul(args.regions),
        ingest_replicas,
        observation_upserts_per_s: results_per_s,
        evaluations_per_s_storm: storm,
        consensus_replicas_storm: consensus_replicas,
        redis_config_mb: domains / 1_000.0 * inputs.redis_bytes_per_1000_configs / 1e6,
        raw_gb_per_day,
        compressed_gb_per_day,
        raw_tb_kept: raw_gb_per_day * args.raw_days as f64 / 1_000.0,
        compressed_tb_kept: compressed_gb_per_day * args.raw_days as f64 / 1_000.0,
        rollup_hourly_rows_per_day: rollup_rows,
        rollup_hourly_gb_per_day: rollup_rows * inputs.rollup_bytes_per_row / 1e9,
        rollup_daily_rows_per_day: domains * regions,
        single_node_rows_per_s_here: inputs.ingest_rows_per_s,
        single_node_multiple_needed: results_per_s / inputs.ingest_rows_per_s.max(1.0),
    }
}

fn print_model(args: &Args, inputs: &Inputs, m: &Model) {
    println!("Measured on this machine ({} s per input):", args.seconds);
    println!("  probes per agent core-second      {:>12.0}", inputs.probes_per_core_s);
    println!(
        "  ingest rows/s per writer          {:>12.0}  ({} writers: {:.0} rows/s; bare COPY {:.0})",
        inputs.ingest_rows_per_writer_s,
        inputs.ingest_writers,
        inputs.ingest_rows_per_s,
        inputs.copy_baseline_rows_per_s
    );
    println!("  consensus evaluations/s           {:>12.0}", inputs.evaluations_per_s);
    println!("  Redis bytes per 1,000 configs     {:>12.0}", inputs.redis_bytes_per_1000_configs);
    println!(
        "  bytes per stored result           {:>12.0}  (hourly roll-up row: {:.0})",
        inputs.bytes_per_result, inputs.rollup_bytes_per_row
    );
    println!(
        "  compression ratio                 {:>12.1}  ({})",
        inputs.compression_ratio, inputs.compression_source
    );
    println!();
    println!(
        "Model: {} domains x {} regions every {} s = {:.0} results/s (capacity used at {:.0}%)",
        args.domains,
        args.regions,
        args.interval,
        m.results_per_s,
        HEADROOM * 100.0
    );
    println!("  agents per region                 {:>12}  (CPU: {}, in flight: {}; {} cores, {} slots, {} ms probes)", m.agents_per_region, m.agents_per_region_cpu, m.agents_per_region_in_flight, args.agent_cores, args.agent_in_flight, args.probe_ms);
    println!("  agents in all                     {:>12}", m.agents_total);
    println!(
        "  control-plane replicas (ingest)   {:>12}  ({} writers each)",
        m.ingest_replicas, args.writers_per_replica
    );
    println!(
        "  consensus replicas (mass outage)  {:>12}  ({:.0} evaluations/s)",
        m.consensus_replicas_storm, m.evaluations_per_s_storm
    );
    println!(
        "  observation upserts/s             {:>12.0}  (transactional database, before coalescing)",
        m.observation_upserts_per_s
    );
    println!("  Redis for configurations          {:>9.0} MB", m.redis_config_mb);
    println!(
        "  results: GB/day raw / compressed  {:>12.0} / {:.0}",
        m.raw_gb_per_day, m.compressed_gb_per_day
    );
    println!(
        "  kept {} days: TB raw / compressed {:>10.1} / {:.1}",
        args.raw_days, m.raw_tb_kept, m.compressed_tb_kept
    );
    println!(
        "  hourly roll-ups: rows/day, GB/day {:>12.0} / {:.1}",
        m.rollup_hourly_rows_per_day, m.rollup_hourly_gb_per_day
    );
    println!("  daily roll-ups: rows/day          {:>12.0}", m.rollup_daily_rows_per_day);
    println!(
        "  one node here: rows/s, x needed   {:>12.0} / {:.1}",
        m.single_node_rows_per_s_here, m.single_node_multiple_needed
    );
    println!("  beyond one node: Citus (distribute by domain_id); TimescaleDB multi-node ended with 2.13; or ClickHouse for raw results (docs/capacity.md)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            probes_per_s: 2_000.0,
            probes_per_core_s: 2_000.0,
            probe_errors: 0,
            ingest_rows_per_s: 100_000.0,
            ingest_writers: 4,
            ingest_rows_per_writer_s: 25_000.0,
            copy_baseline_rows_per_s: 200_000.0,
            evaluations_per_s: 5_000.0,
            evaluation_batches: 10,
            observed_regions: 3,
            redis_bytes_per_1000_configs: 500_000.0,
            redis_used_memory_delta_per_1000_configs: 520_000.0,
            config_json_bytes: 400.0,
            bytes_per_result: 200.0,
            result_rows: 1_000,
            rollup_bytes_per_row: 300.0,
            timescaledb: false,
            compression_ratio: 10.0,
            compression_source: "published".into(),
        }
    }

    fn args() -> Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        Cli::parse_from(["capacity"]).args
    }

    #[test]
    fn the_model_follows_from_the_inputs() {
        let m = model(&args(), &inputs());
        assert_eq!(m.results_per_s, 500_000.0, "1M x 30 / 60 s");
        // 16,667 probes/s per region; 2 cores x 2,000 x 50% = 2,000 per agent: 9 agents; in
        // flight 5,000 over 128 usable slots: 40.
        assert_eq!(
            (m.agents_per_region_cpu, m.agents_per_region_in_flight, m.agents_per_region),
            (9, 40, 40)
        );
        assert_eq!(m.agents_total, 1_200);
        // 25,000 x 4 writers x 50% = 50,000 rows/s per replica.
        assert_eq!(m.ingest_replicas, 10);
        assert_eq!(m.consensus_replicas_storm, 7, "16,667 / 2,500");
        assert!((m.raw_gb_per_day - 8_640.0).abs() < 1e-6, "500,000 x 86,400 x 200 B");
        assert!((m.compressed_gb_per_day - 864.0).abs() < 1e-6);
        assert!((m.raw_tb_kept - 259.2).abs() < 1e-6);
        assert_eq!(m.rollup_hourly_rows_per_day, 720_000_000.0);
        assert!((m.redis_config_mb - 500.0).abs() < 1e-6);
        assert!((m.single_node_multiple_needed - 5.0).abs() < 1e-9);
    }
}
