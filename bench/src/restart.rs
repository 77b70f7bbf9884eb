//! `restart-loss`: three agents probe local targets and deliver to a control plane that is
//! killed (SIGKILL) and restarted twice. At the end the agents stop gracefully (flushing what
//! they hold) and the stored rows are compared with what the agents produced.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use shared::testing::free_port;
use sqlx::{Connection, PgConnection};

use crate::env::{Scratch, ScratchDb};
use crate::fleet::RunningAgent;
use crate::ingest::{child_env, spawn_control_plane, wait_ready};
use crate::pki::Pki;

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Domains, each probed every second from every region.
    #[arg(long, default_value_t = 100)]
    domains: usize,
    /// Length of the run; the control plane is killed at one third and two thirds of it.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// How long the control plane stays down each time, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    down_ms: u64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let scratch = Scratch::create("restart").await?;
    let result = measure(&args, &scratch, &scratch.timeseries).await;
    scratch.cleanup().await?;
    result
}

/// Results an agent produced: every probe outcome counted by its metrics.
fn produced(metrics: &probe_agent::metrics::Metrics) -> u64 {
    let outcomes = std::iter::once("ok").chain(probe_agent::probe::ErrorKind::ALL.iter().map(|k| k.as_str()));
    outcomes
        .map(|outcome| {
            metrics
                .probes
                .get_or_create(&probe_agent::metrics::OutcomeLabels { outcome: outcome.into() })
                .get()
        })
        .sum()
}

async fn measure(args: &Args, scratch: &Scratch, ts: &ScratchDb) -> anyhow::Result<Value> {
    let pki = Pki::create("restart")?;
    let (api, ingest) = (free_port(), free_port());
    let mut env = child_env(scratch, ts, &pki, api, ingest);
    env.push(("CROSSCHECK_ALLOW_PRIVATE_TARGETS".into(), "true".into()));
    env.push(("CROSSCHECK_MIN_INTERVAL_S".into(), "1".into()));
    let mut control = spawn_control_plane(&env).await?;
    let ready = format!("http://127.0.0.1:{api}/readyz");
    wait_ready(&ready, Duration::from_secs(60)).await?;

    let targets = crate::target::start(1).await?;
    let web = targets.http[0];
    let pool = sqlx::PgPool::connect(&scratch.db.url).await?;
    let tenant = control_plane::tenants::create_tenant(&pool, "restart-loss").await?.token;
    pool.close().await;
    let http = reqwest::Client::new();
    for i in 0..args.domains {
        let path = if i % 10 == 0 { "fail" } else { "ok" };
        let response = http
            .post(format!("http://127.0.0.1:{api}/v1/domains"))
            .bearer_auth(&tenant)
            .json(&json!({"url": format!("http://{web}/{path}?d={i}"), "interval": 1}))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "creating a domain: {}", response.text().await?);
    }

    let mut agents = Vec::new();
    for region in REGIONS {
        let agent_id = format!("{region}-restart");
        agents.push(RunningAgent::start(&pki, region, &agent_id, &scratch.prefix, ingest, true).await?);
    }

    let started = Instant::now();
    let third = Duration::from_secs(args.seconds) / 3;
    for kill in 1..=2 {
        tokio::time::sleep_until((started + third * kill).into()).await;
        control.start_kill().context("killing the control plane")?;
        control.wait().await?;
        eprintln!("{:>5.1} s: control plane killed", started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(args.down_ms)).await;
        control = spawn_control_plane(&env).await?;
        wait_ready(&ready, Duration::from_secs(60)).await?;
        eprintln!("{:>5.1} s: control plane back", started.elapsed().as_secs_f64());
    }
    tokio::time::sleep_until((started + Duration::from_secs(args.seconds)).into()).await;

    eprintln!("stopping agents (they flush what they hold)");
    let mut total = 0u64;
    let mut dropped = 0u64;
    let (mut retried, mut duplicates) = (0u64, 0u64);
    for agent in agents {
        let metrics = agent.stop().await?;
        total += produced(&metrics);
        dropped += metrics.dropped_total();
        let sent = |outcome: &str| {
            metrics
                .delivery_batches_sent
                .get_or_create(&probe_agent::metrics::OutcomeLabels { outcome: outcome.into() })
                .get()
        };
        retried += sent("retry");
        duplicates += sent("duplicate");
    }
    let mut tsdb = PgConnection::connect(&ts.url).await?;
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (agent_id, domain_id, time)) FROM probe_results WHERE agent_id LIKE '%-restart'",
    )
    .fetch_one(&mut tsdb)
    .await?;
    let _ = control.start_kill();
    let _ = control.wait().await;
    Ok(json!({
        "produced": total,
        "stored": distinct,
        "lost": total as i64 - distinct,
        "duplicated": rows - distinct,
        "dropped_by_agents": dropped,
        "batches_retried": retried,
        "resends_answered_duplicate": duplicates,
        "restarts": 2,
    }))
}
