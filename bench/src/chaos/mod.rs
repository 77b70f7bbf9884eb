//! `chaos`: steady load from three regions (two agents each) while, in turn, an agent, a
//! control-plane replica, Redis and the time-series PostgreSQL are killed and restarted, each
//! on a private instance of this run:
//!
//! - a `redis-server` on a free port (it persists nothing: it comes back empty);
//! - a PostgreSQL cluster of its own for the time-series database (`initdb` in a temporary
//!   directory; as `postgres` when the bench runs as root), stopped with `-m immediate`; the
//!   transactional database is a scratch database on the shared server;
//! - two control-plane replicas (this binary's `control-plane-child`) behind a TCP proxy for
//!   ingest and one for the API;
//! - six agents (this binary's `agent-child`, the agent's own code configured by
//!   `CROSSCHECK_AGENT_*` like the `probe-agent` binary: `cargo run -p bench` builds only this
//!   binary, so a `probe-agent` next to it could be stale), two per region sharing its domains,
//!   each with a spool directory of its own under the run's directory (`spool-<agent id>`),
//!   which the killed agent finds again when it is restarted.
//!
//! Every domain probes a local target that counts the requests it receives per domain: each
//! HTTP probe is one request, so the count is the results the agents produced, whatever
//! happened to the agent afterwards. A few domains are switched down and up on a schedule, and
//! a webhook receiver counts the notifications per domain and transition. Every `seconds/5`
//! one fault: an agent (SIGKILL), a replica (SIGKILL), Redis (SIGKILL), the time-series
//! PostgreSQL (immediate stop), each restarted after `down_ms`. At the end the agents stop
//! gracefully (flushing what they hold) and the stored rows are compared with the ledger.

mod ledger;
mod services;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use shared::testing::{free_port, random_prefix, RedisServer};
use sqlx::{Connection, PgConnection};

use self::ledger::CountedTarget;
use self::services::{Postgres, Process, Proxy};
use crate::env::ScratchDb;
use crate::fleet::Receiver;
use crate::ingest::wait_ready;
use crate::pki::Pki;

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];
const AGENTS_PER_REGION: usize = 2;
const TIMESERIES_DB: &str = "crosscheck_chaos_ts";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Length of the load, in seconds (at least 20); a fault every fifth of it.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Domains, each probed from every region.
    #[arg(long, default_value_t = 30)]
    domains: usize,
    /// Probe interval of every domain, in seconds.
    #[arg(long, default_value_t = 1)]
    interval: u32,
    /// Domains switched down and up once each, one after another, over the run.
    #[arg(long, default_value_t = 3)]
    flips: usize,
    /// How long a killed service stays down before it is restarted, in milliseconds. The
    /// default outlasts the membership TTL, so the killed agent's region-mate takes its
    /// domains over before it comes back.
    #[arg(long, default_value_t = 5_000)]
    down_ms: u64,
    /// The agents' `heartbeat_interval_ms`.
    #[arg(long, default_value_t = 1_000)]
    heartbeat_ms: u64,
    /// The agents' `membership_ttl_ms`: how long a killed agent keeps its domains.
    #[arg(long, default_value_t = 3_000)]
    membership_ttl_ms: u64,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.seconds >= 20, "--seconds must be at least 20 (a fault every fifth of it)");
        anyhow::ensure!(
            self.flips >= 1 && self.flips < self.domains,
            "--flips must be at least 1 and below --domains (some domains stay up)"
        );
        anyhow::ensure!((1..=60).contains(&self.interval), "--interval must be 1 to 60 seconds");
        Ok(())
    }
}

/// The faults, in the order they happen.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Agent,
    Replica,
    Redis,
    Timeseries,
}

const FAULTS: [Fault; 4] = [Fault::Agent, Fault::Replica, Fault::Redis, Fault::Timeseries];

pub async fn run(args: Args) -> anyhow::Result<Value> {
    args.check()?;
    let db = ScratchDb::create("chaos").await?;
    let result = measure(&args, &db).await;
    db.drop_now().await?;
    result
}

/// Internal: a probe agent configured from `CROSSCHECK_AGENT_*` variables, as the
/// `probe-agent` binary runs it.
pub async fn agent_child() -> anyhow::Result<()> {
    let config: probe_agent::Config =
        shared::config::load_checked(None, probe_agent::config::ENV, probe_agent::Config::preflight)
            .map_err(anyhow::Error::msg)?;
    shared::telemetry::init(config.log_format);
    shared::limits::raise_open_files()?;
    let agent = probe_agent::Agent::build(config).await?;
    agent.run_until(shared::shutdown::on_signal()).await
}

/// A probe agent child and the port of its operational endpoints.
struct AgentChild {
    process: Process,
    port: u16,
}

impl AgentChild {
    async fn start(&mut self) -> anyhow::Result<()> {
        self.process.spawn()?;
        wait_ready(&format!("http://127.0.0.1:{}/readyz", self.port), Duration::from_secs(60))
            .await
            .with_context(|| {
                format!("{} not ready (log: {})", self.process.name, self.process.log().display())
            })
    }
}

/// A control-plane replica child and its API port.
struct Replica {
    process: Process,
    api: u16,
}

impl Replica {
    async fn start(&mut self) -> anyhow::Result<()> {
        self.process.spawn()?;
        wait_ready(&format!("http://127.0.0.1:{}/readyz", self.api), Duration::from_secs(120))
            .await
            .with_context(|| {
                format!("{} not ready (log: {})", self.process.name, self.process.log().display())
            })
    }
}

/// Everything the run started, so it can be stopped in order.
struct System {
    redis: RedisServer,
    postgres: Postgres,
    replicas: Vec<Replica>,
    agents: Vec<AgentChild>,
    _ingest: Proxy,
    api: Proxy,
    dir: PathBuf,
}

async fn measure(args: &Args, db: &ScratchDb) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("crosscheck-chaos-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("chaos: logs in {}", dir.display());
    let pki = Pki::create("chaos")?;
    let redis = RedisServer::start().await;
    let postgres = Postgres::create().await?;
    let mut admin = PgConnection::connect(&postgres.url("postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {TIMESERIES_DB}")).execute(&mut admin).await?;
    admin.close().await?;
    let timeseries_url = postgres.url(TIMESERIES_DB);
    let prefix = random_prefix("chaos");

    let mut env = vec![
        ("CROSSCHECK_DATABASE_URL".to_owned(), db.url.clone()),
        ("CROSSCHECK_TIMESERIES_URL".to_owned(), timeseries_url.clone()),
        ("CROSSCHECK_REDIS_URL".to_owned(), redis.url()),
        ("CROSSCHECK_REDIS_PREFIX".to_owned(), prefix.clone()),
        ("CROSSCHECK_REGIONS".to_owned(), format!("[{}]", REGIONS.join(","))),
        ("CROSSCHECK_ALLOW_PRIVATE_TARGETS".to_owned(), "true".to_owned()),
        ("CROSSCHECK_MIN_INTERVAL_S".to_owned(), "1".to_owned()),
        ("CROSSCHECK_NOTIFY_ALLOW_PRIVATE".to_owned(), "[\"127.0.0.0/8\"]".to_owned()),
        // Load spikes on a shared machine are not what this run counts notifications for.
        ("CROSSCHECK_DEGRADED_ANOMALY".to_owned(), "false".to_owned()),
    ];
    env.extend(pki.env());
    let mut replicas = Vec::new();
    let (mut api_backends, mut ingest_backends): (Vec<SocketAddr>, Vec<SocketAddr>) =
        (Vec::new(), Vec::new());
    for n in 0..2 {
        let (api, ingest) = (free_port(), free_port());
        let mut env = env.clone();
        env.push(("CROSSCHECK_LISTEN".into(), format!("127.0.0.1:{api}")));
        env.push(("CROSSCHECK_INGEST_LISTEN".into(), format!("127.0.0.1:{ingest}")));
        let name = format!("replica-{n}");
        let log = dir.join(format!("{name}.log"));
        let mut replica = Replica { process: Process::new(&name, "control-plane-child", env, log), api };
        replica.start().await?;
        replicas.push(replica);
        api_backends.push(([127, 0, 0, 1], api).into());
        ingest_backends.push(([127, 0, 0, 1], ingest).into());
    }
    let api = Proxy::start(api_backends).await?;
    let ingest = Proxy::start(ingest_backends).await?;
    let mut agents = Vec::new();
    for region in REGIONS {
        for n in 1..=AGENTS_PER_REGION {
            let id = format!("{region}-{n}");
            let issued = pki.store.issue_agent(
                &shared::identity::AgentIdentity::new(region, &id).map_err(anyhow::Error::msg)?,
                2,
            )?;
            let port = free_port();
            let env: Vec<(String, String)> = [
                ("REGION", region.to_owned()),
                ("AGENT_ID", id.clone()),
                ("REDIS_URL", redis.url()),
                ("REDIS_PREFIX", prefix.clone()),
                ("LISTEN", format!("127.0.0.1:{port}")),
                ("ALLOW_PRIVATE", "[\"127.0.0.0/8\"]".to_owned()),
                ("CONTROL_PLANE_URL", format!("https://localhost:{}", ingest.port)),
                ("TLS_CA", pki.store.ca_cert().display().to_string()),
                ("TLS_CERT", issued.cert.display().to_string()),
                ("TLS_KEY", issued.key.display().to_string()),
                ("HEARTBEAT_INTERVAL_MS", args.heartbeat_ms.to_string()),
                ("MEMBERSHIP_TTL_MS", args.membership_ttl_ms.to_string()),
                ("REDIS_MAX_BACKOFF_MS", "1000".to_owned()),
                ("RESEND_MIN_BACKOFF_MS", "50".to_owned()),
                ("RESEND_MAX_BACKOFF_MS", "1000".to_owned()),
                ("SHUTDOWN_FLUSH_TIMEOUT_MS", "30000".to_owned()),
                // Its own spool under the run's directory, kept across the kill: the restarted
                // agent sends what the killed one had not had acknowledged.
                ("SPOOL_DIR", dir.join(format!("spool-{id}")).display().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (format!("CROSSCHECK_AGENT_{k}"), v))
            .collect();
            let log = dir.join(format!("agent-{id}.log"));
            agents.push(AgentChild {
                process: Process::new(&format!("agent {id}"), "agent-child", env, log),
                port,
            });
        }
    }
    let mut system = System { redis, postgres, replicas, agents, _ingest: ingest, api, dir };
    let result = drive(args, db, &mut system, &timeseries_url).await;
    let stopped = stop(&mut system).await;
    if result.is_err() {
        // Keep the logs of a failed run, the time-series server's with them.
        let _ = std::fs::copy(system.postgres.log_path(), system.dir.join("timeseries-postgres.log"));
        eprintln!("chaos: failed; logs kept in {}", system.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&system.dir);
    }
    drop(system);
    stopped?;
    result
}

/// Stops what is still running: agents (gracefully), then the replicas.
async fn stop(system: &mut System) -> anyhow::Result<()> {
    for agent in &mut system.agents {
        agent.process.terminate(Duration::from_secs(60)).await?;
    }
    for replica in &mut system.replicas {
        replica.process.terminate(Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// The API through the proxy, as the run's tenant.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        crate::pages::call_api(&self.http, &self.base, &self.token, reqwest::Method::POST, path, body).await
    }
}

async fn drive(
    args: &Args,
    db: &ScratchDb,
    system: &mut System,
    timeseries_url: &str,
) -> anyhow::Result<Value> {
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let token = control_plane::tenants::create_tenant(&pool, "chaos").await?.token;
    pool.close().await;
    let api =
        Api { base: format!("http://127.0.0.1:{}", system.api.port), token, http: reqwest::Client::new() };
    let receiver = Receiver::start().await?;
    api.post(
        "/v1/channels",
        json!({"name": "chaos", "kind": "webhook", "url": receiver.url, "storm_window_s": 0}),
    )
    .await?;
    let target = CountedTarget::start(args.domains).await?;
    let mut ids = Vec::new();
    for n in 0..args.domains {
        let created =
            api.post("/v1/domains", json!({"url": target.url(n), "interval": args.interval})).await?;
        ids.push(created["id"].as_str().context("domain id")?.to_owned());
    }
    for agent in &mut system.agents {
        agent.start().await?;
    }
    let mut ts = PgConnection::connect(timeseries_url).await?;
    let warm = Instant::now();
    let all = (args.domains * REGIONS.len()) as i64;
    loop {
        let seen: i64 = sqlx::query_scalar("SELECT count(DISTINCT (domain_id, region)) FROM probe_results")
            .fetch_one(&mut ts)
            .await?;
        if seen == all {
            break;
        }
        anyhow::ensure!(
            warm.elapsed() < Duration::from_secs(120),
            "only {seen} of {all} (domain, region) stored after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ts.close().await?;
    eprintln!(
        "chaos: every domain stored from every region after {:.1} s; load starts",
        warm.elapsed().as_secs_f64()
    );

    let load_start = chrono::Utc::now();
    let started = Instant::now();
    let seconds = Duration::from_secs(args.seconds);
    // Flips: domain j down at 10 % + j × period, up half a period later.
    let period = seconds.mul_f64(0.8) / args.flips as u32;
    let flips = tokio::spawn({
        let target = target.clone();
        let count = args.flips;
        async move {
            for j in 0..count {
                let down = started + seconds.mul_f64(0.1) + period * j as u32;
                tokio::time::sleep_until(down.into()).await;
                target.set_down(j, true);
                eprintln!("{:>6.1} s: domain {j} down", started.elapsed().as_secs_f64());
                tokio::time::sleep_until((down + period / 2).into()).await;
                target.set_down(j, false);
                eprintln!("{:>6.1} s: domain {j} up", started.elapsed().as_secs_f64());
            }
        }
    });
    let progress = tokio::spawn({
        let (target, receiver) = (target.clone(), receiver.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let hits: u64 = target.hits().iter().sum();
                eprintln!(
                    "{:>6.1} s: {hits} probes received by the target, {} webhook deliveries",
                    started.elapsed().as_secs_f64(),
                    receiver.with(<[_]>::len)
                );
            }
        }
    });
    let down = Duration::from_millis(args.down_ms);
    let mut fault_at = Vec::new();
    for (k, fault) in FAULTS.iter().enumerate() {
        tokio::time::sleep_until((started + seconds / 5 * (k as u32 + 1)).into()).await;
        let at = started.elapsed().as_secs_f64();
        fault_at.push((format!("{fault:?}").to_lowercase(), at));
        inject(*fault, system, down, started).await?;
    }
    tokio::time::sleep_until((started + seconds).into()).await;
    flips.await?;

    let expected: HashMap<String, usize> = ids[..args.flips].iter().map(|id| (id.clone(), 1)).collect();
    eprintln!(
        "{:>6.1} s: load over; waiting for the expected notifications",
        started.elapsed().as_secs_f64()
    );
    let waited = Instant::now();
    while receiver.with(|all| ledger::tally(all, &expected).lost) > 0
        && waited.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stragglers (a repeated delivery) have a moment to arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    progress.abort();
    let load_end = chrono::Utc::now();

    eprintln!("chaos: stopping the agents (each flushes what it holds)");
    let mut flushed = true;
    for agent in &mut system.agents {
        flushed &= agent.process.terminate(Duration::from_secs(60)).await?;
    }
    let hits = target.hits();
    let produced: u64 = hits.iter().sum();
    let mut ts = PgConnection::connect(timeseries_url).await?;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (agent_id, domain_id, time)) FROM probe_results")
            .fetch_one(&mut ts)
            .await?;
    let per_domain: Vec<(String, i64)> = sqlx::query_as(
        "SELECT domain_id::text, count(DISTINCT (agent_id, time)) FROM probe_results GROUP BY domain_id",
    )
    .fetch_all(&mut ts)
    .await?;
    let stored: HashMap<String, i64> = per_domain.into_iter().collect();
    let (mut lost, mut unrequested) = (0i64, 0i64);
    for (n, id) in ids.iter().enumerate() {
        let difference = hits[n] as i64 - stored.get(id).copied().unwrap_or(0);
        if difference > 0 {
            lost += difference;
        } else {
            unrequested -= difference;
        }
    }
    // Consecutive stored probes of a domain from a region, during the load.
    let gaps: Vec<(String, String, f64, f64)> = sqlx::query_as(
        "SELECT domain_id::text, region, extract(epoch FROM time - $1)::float8 AS at, gap FROM (
             SELECT domain_id, region, time,
                    extract(epoch FROM time - lag(time) OVER (PARTITION BY domain_id, region ORDER BY time))::float8 AS gap
             FROM (SELECT DISTINCT domain_id, region, time FROM probe_results WHERE time BETWEEN $1 AND $2) r
         ) g WHERE gap IS NOT NULL ORDER BY gap DESC LIMIT 8",
    )
    .bind(load_start)
    .bind(load_end)
    .fetch_all(&mut ts)
    .await?;
    ts.close().await?;
    for (domain, region, at, gap) in &gaps {
        eprintln!("chaos: gap of {gap:.2} s before the probe at {at:.1} s ({region}, domain {domain})");
    }
    let max_gap = gaps.first().map_or(0.0, |g| g.3);
    let tally = receiver.with(|all| ledger::tally(all, &expected));
    let target_gap = f64::from(args.interval) + args.membership_ttl_ms as f64 / 1000.0;
    Ok(json!({
        "seconds": args.seconds,
        "domains": args.domains,
        "regions": REGIONS.len(),
        "agents_per_region": AGENTS_PER_REGION,
        "interval_s": args.interval,
        "faults": fault_at.iter().map(|(f, at)| json!({"fault": f, "at_s": (at * 10.0).round() / 10.0})).collect::<Vec<_>>(),
        "down_ms": args.down_ms,
        "results_produced": produced,
        "results_stored": distinct,
        "results_lost": lost,
        "results_duplicated": rows - distinct,
        "results_stored_without_request": unrequested,
        "notifications_expected": tally.expected,
        "notifications_lost": tally.lost,
        "notifications_duplicated": tally.duplicated,
        "notifications_unexpected": tally.unexpected,
        "notifications_by_kind": tally.by_kind,
        "max_probe_gap_s": (max_gap * 100.0).round() / 100.0,
        "max_probe_gap_target_s": target_gap,
        "agents_flushed": flushed,
    }))
}

/// Kills one service, waits `down`, restarts it and waits until it serves again.
async fn inject(fault: Fault, system: &mut System, down: Duration, started: Instant) -> anyhow::Result<()> {
    let elapsed = || started.elapsed().as_secs_f64();
    match fault {
        Fault::Agent => {
            let agent = &mut system.agents[2];
            agent.process.kill().await?;
            eprintln!("{:>6.1} s: {} killed", elapsed(), agent.process.name);
            tokio::time::sleep(down).await;
            agent.start().await?;
            eprintln!("{:>6.1} s: {} back", elapsed(), agent.process.name);
        }
        Fault::Replica => {
            let replica = &mut system.replicas[0];
            replica.process.kill().await?;
            eprintln!("{:>6.1} s: {} killed", elapsed(), replica.process.name);
            tokio::time::sleep(down).await;
            replica.start().await?;
            eprintln!("{:>6.1} s: {} back", elapsed(), replica.process.name);
        }
        Fault::Redis => {
            system.redis.stop();
            eprintln!("{:>6.1} s: redis killed", elapsed());
            tokio::time::sleep(down).await;
            system.redis.restart().await;
            eprintln!("{:>6.1} s: redis back (empty)", elapsed());
        }
        Fault::Timeseries => {
            system.postgres.kill().await?;
            eprintln!("{:>6.1} s: time-series postgres stopped (immediate)", elapsed());
            tokio::time::sleep(down).await;
            system.postgres.start().await?;
            eprintln!("{:>6.1} s: time-series postgres back", elapsed());
        }
    }
    Ok(())
}
