//! `config-propagation`: a control plane and N agents in this process, against a scratch
//! database and a private Redis prefix. Each update is a `PATCH` through the API; the latency is
//! the time from its 2xx response until the last agent's catalog holds that change's version.
//! The same run measures the raw Redis Pub/Sub publish-to-receive time as a baseline.

use std::time::{Duration, Instant};

use anyhow::Context;
use control_plane::{tenants, Application};
use fred::prelude::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::env::{redis_client, redis_url, Scratch, ScratchDb};
use crate::stats::percentile_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of agents following the configuration.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Number of updates to time.
    #[arg(long, default_value_t = 1000)]
    updates: usize,
    /// Number of domains the updates cycle through.
    #[arg(long, default_value_t = 50)]
    domains: usize,
}

const APPLY_DEADLINE: Duration = Duration::from_secs(5);

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let scratch = Scratch::create("bench").await?;
    let result = measure(&args, &scratch.db, &scratch.timeseries, &scratch.prefix).await;
    scratch.cleanup().await?;
    result
}

async fn measure(args: &Args, db: &ScratchDb, timeseries: &ScratchDb, prefix: &str) -> anyhow::Result<Value> {
    let config = control_plane::Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: db.url.clone(),
        timeseries_url: timeseries.url.clone(),
        redis_url: redis_url(),
        redis_prefix: prefix.to_owned(),
        min_interval_s: 1,
        // The domains point at documentation addresses, which agents refuse to probe: the
        // benchmark measures the config path and sends nothing off the machine.
        allow_private_targets: true,
        ..control_plane::Config::default()
    };
    let app = Application::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    let token = tenants::create_tenant(app.pool(), "bench").await?.token;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until(shutdown.clone()));

    let mut catalogs = Vec::new();
    for i in 0..args.agents {
        let agent = probe_agent::Agent::build(probe_agent::Config {
            region: "ams".into(),
            agent_id: format!("bench-{i}"),
            redis_url: redis_url(),
            redis_prefix: prefix.to_owned(),
            listen: "127.0.0.1:0".parse()?,
            ..probe_agent::Config::default()
        })
        .await?;
        catalogs.push(agent.catalog());
        tokio::spawn(agent.run_until(shutdown.child_token()));
    }

    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..args.domains {
        let response = http
            .post(format!("{base}/v1/domains"))
            .bearer_auth(&token)
            .json(&json!({"url": format!("https://192.0.2.{}/bench-{i}", i % 250 + 1)}))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "creating a domain: {}", response.status());
        let body: Value = response.json().await?;
        ids.push(body["id"].as_str().context("domain id")?.to_owned());
    }
    let created_version = args.domains as u64;
    for catalog in &catalogs {
        let mut rx = catalog.catalog.clone();
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| c.version() >= created_version))
            .await
            .context("agents did not load the initial domains")??;
    }

    let mut latencies = Vec::with_capacity(args.updates);
    let mut lost = 0u64;
    for i in 0..args.updates {
        let id = &ids[i % ids.len()];
        let round = i / ids.len();
        let interval = 20 + (round % 2);
        let response = http
            .patch(format!("{base}/v1/domains/{id}"))
            .bearer_auth(&token)
            .json(&json!({ "interval": interval }))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "update failed: {}", response.status());
        let body: Value = response.json().await?;
        let answered = Instant::now();
        let version = body["config_version"].as_u64().context("config_version")?;
        let waits = catalogs.iter().map(|catalog| {
            let mut rx = catalog.catalog.clone();
            async move {
                tokio::time::timeout(APPLY_DEADLINE, rx.wait_for(|c| c.version() >= version)).await.is_ok()
            }
        });
        let applied = futures::future::join_all(waits).await;
        if applied.iter().all(|ok| *ok) {
            latencies.push(answered.elapsed());
        } else {
            lost += 1;
        }
    }

    let pubsub = pubsub_baseline(args.updates, prefix).await?;
    shutdown.cancel();
    server.await??;

    let mut samples = latencies.clone();
    let mut pubsub_samples = pubsub;
    Ok(json!({
        "scenario": "config-propagation",
        "agents": args.agents,
        "updates": args.updates,
        "p50_ms": percentile_ms(&mut samples, 50.0),
        "p99_ms": percentile_ms(&mut samples, 99.0),
        "max_ms": percentile_ms(&mut samples, 100.0),
        "lost": lost,
        "pubsub_p50_ms": percentile_ms(&mut pubsub_samples, 50.0),
        "pubsub_p99_ms": percentile_ms(&mut pubsub_samples, 99.0),
    }))
}

/// Raw Redis Pub/Sub: publish one message, wait until the subscriber has it, repeat.
async fn pubsub_baseline(count: usize, prefix: &str) -> anyhow::Result<Vec<Duration>> {
    let channel = format!("{prefix}:baseline");
    let publisher = redis_client().await?;
    let subscriber = shared::redis::builder(&redis_url(), Default::default())?.build_subscriber_client()?;
    subscriber.init().await?;
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(&channel).await?;
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let _: () = publisher.publish(&channel, i.to_string()).await?;
        tokio::time::timeout(APPLY_DEADLINE, messages.recv()).await.context("baseline message lost")??;
        samples.push(started.elapsed());
    }
    let _ = subscriber.quit().await;
    Ok(samples)
}
