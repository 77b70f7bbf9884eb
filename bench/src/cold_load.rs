//! `catalog-cold-load`: fills a private Redis prefix with N domain configurations, starts a probe
//! agent in a child process (so its memory is measured alone) and times spawn → ready (the whole
//! catalog loaded). Reports the child's resident memory after the load and its peak.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use fred::prelude::*;
use serde_json::{json, Value};
use shared::testing::{delete_prefix, free_port, random_prefix};
use shared::{DomainConfig, DomainId, RequestConfig, StatusRange};

use crate::env::{redis_client, redis_url};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of domains in the catalog.
    #[arg(long, default_value_t = 100_000)]
    domains: usize,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[arg(long)]
    redis_prefix: String,
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[arg(long, default_value = "ams")]
    region: String,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let prefix = random_prefix("coldload");
    let redis = redis_client().await?;
    let result = measure(&args, &redis, &prefix).await;
    delete_prefix(&redis, &prefix).await?;
    result
}

async fn measure(args: &Args, redis: &Client, prefix: &str) -> anyhow::Result<Value> {
    let fill_started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..args.domains {
        let config = DomainConfig {
            id: DomainId::new(),
            url: format!("https://192.0.2.{}/site-{i}", i % 250 + 1),
            request: RequestConfig::default(),
            check: shared::CheckConfig::Http,
            json_check: None,
            expected_status: StatusRange::SUCCESS,
            keyword: (i % 4 == 0).then(|| shared::KeywordCheck::contains("ok")),
            interval_s: 60,
            timeout_ms: 10_000,
            regions: Vec::new(),
            paused: false,
            tls_verify: true,
            http_version: shared::HttpVersion::Auto,
            agents_per_region: shared::domain::DEFAULT_AGENTS_PER_REGION,
            version: 1,
        };
        batch.push((config.id.to_string(), serde_json::to_string(&config)?));
        if batch.len() == 1000 || i + 1 == args.domains {
            let _: () = redis.hset(format!("{prefix}:domains"), std::mem::take(&mut batch)).await?;
        }
    }
    let _: () = redis.set(format!("{prefix}:domains:version"), 1, None, None, false).await?;
    eprintln!("filled {} domains in {:?}", args.domains, fill_started.elapsed());

    let port = free_port();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["agent", "--redis-prefix", prefix, "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the agent")?;
    let pid = child.id().context("child pid")?;
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = http.get(&ready).send().await {
            if response.status().is_success() {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "agent not ready within 120 s");
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("agent exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let load = started.elapsed();
    let metrics = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await?.text().await?;
    let loaded: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("probe_agent_catalog_domains "))
        .and_then(|v| v.trim().parse().ok())
        .context("catalog size metric")?;
    anyhow::ensure!(loaded == args.domains, "agent loaded {loaded} of {} domains", args.domains);
    let (rss_kb, peak_kb) = memory_kb(pid)?;
    child.kill().await?;
    Ok(json!({
        "scenario": "catalog-cold-load",
        "domains": args.domains,
        "load_ms": load.as_millis() as u64,
        "rss_mb": (rss_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "peak_rss_mb": (peak_kb as f64 / 1024.0 * 10.0).round() / 10.0,
    }))
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn memory_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The child side: one probe agent, until killed.
pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    shared::telemetry::init(Default::default());
    let agent = probe_agent::Agent::build(probe_agent::Config {
        region: args.region,
        redis_url: redis_url(),
        redis_prefix: args.redis_prefix,
        listen: args.listen,
        ..probe_agent::Config::default()
    })
    .await?;
    agent.run_until(shared::shutdown::on_signal()).await
}
