//! `degraded-detect`: how fast a latency step becomes the `degraded` state, and whether noisy
//! but normal latency ever does. An in-process control plane with ingest, one in-process
//! agent per region delivering over mutual TLS, and a local target whose answer time is set
//! per path.
//!
//! - **Trials**: a domain each, all at once (each its own detector, so they do not disturb one
//!   another, and the baselines warm up together). Once every trial domain is up with a full
//!   baseline, each one's latency steps from about 20 ms to about 400 ms at a random moment
//!   within the next minute; the detection time is the step to the `degraded` transition's
//!   stamp (`domain_transitions.at`).
//! - **Control**: domains answering in 20–30 ms with occasional single slow answers
//!   (`--spike-percent`, 150–400 ms), for `--control-s` from the end of the warm-up, in
//!   parallel with the trials. `false_degraded` counts their transitions to `degraded`.
//!
//! Target: `false_degraded` 0 and `p95_detect_ms` ≤ (K + 1) × interval / regions + 1 s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::alerting::{percentile, start_agents, until, Plane, REGIONS};
use crate::env::Scratch;
use crate::pki::Pki;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Probe interval of every domain, in seconds.
    #[arg(long, default_value_t = 10)]
    interval: u32,
    /// Latency steps measured (a domain each, run together).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Length of the control run with noisy but normal latency, in seconds.
    #[arg(long, default_value_t = 600)]
    control_s: u64,
    /// Domains in the control run.
    #[arg(long, default_value_t = 5)]
    control_domains: usize,
    /// Share of the control domains' answers that are a single slow spike, percent.
    #[arg(long, default_value_t = 3.0)]
    spike_percent: f64,
}

/// The target's per-path latency: a stepped trial answers slowly.
#[derive(Default)]
struct Latencies {
    stepped: HashMap<String, AtomicBool>,
    spike_percent: f64,
}

impl Latencies {
    /// How long `path` takes now.
    fn delay(&self, path: &str) -> Duration {
        let mut rng = rand::thread_rng();
        if self.stepped.get(path).is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Duration::from_millis(rng.gen_range(390..=420));
        }
        if path.starts_with("control/") && rng.gen_bool(self.spike_percent / 100.0) {
            return Duration::from_millis(rng.gen_range(150..=400));
        }
        Duration::from_millis(rng.gen_range(20..=30))
    }
}

async fn serve(latencies: Arc<Latencies>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::get(|State(l): State<Arc<Latencies>>, Path(path): Path<String>| async move {
                tokio::time::sleep(l.delay(&path)).await;
                "ok"
            }),
        )
        .with_state(latencies);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!((1..=REGIONS.len()).contains(&args.regions), "--regions must be 1 to 3");
    anyhow::ensure!(args.trials > 0, "--trials must be positive");
    let scratch = Scratch::create("degraded").await?;
    let result = detect(&args, &scratch).await;
    scratch.cleanup().await?;
    result
}

async fn create(plane: &Plane, url: String, interval: u32, regions: &[&str]) -> anyhow::Result<Uuid> {
    let body = json!({"url": url, "interval": interval, "regions": regions});
    let created = plane.call(reqwest::Method::POST, "/v1/domains", Some(body)).await?;
    Ok(created["id"].as_str().context("domain id")?.parse()?)
}

async fn detect(args: &Args, scratch: &Scratch) -> anyhow::Result<Value> {
    let pki = Pki::create("degraded")?;
    let defaults = control_plane::Config::default();
    let plane = Plane::start(scratch, &pki, args.regions).await?;
    let trial_paths: Vec<String> = (0..args.trials).map(|i| format!("trial/{i}")).collect();
    let latencies = Arc::new(Latencies {
        stepped: trial_paths.iter().map(|p| (p.clone(), AtomicBool::new(false))).collect(),
        spike_percent: args.spike_percent,
    });
    let addr = serve(latencies.clone()).await?;
    let regions = &REGIONS[..args.regions];
    let agents = start_agents(&pki, regions, scratch, plane.ingest_port).await?;

    // Naming the regions staggers them evenly over the interval (see the agent's scheduler).
    let mut trials = Vec::new();
    for path in &trial_paths {
        trials.push(create(&plane, format!("http://{addr}/{path}"), args.interval, regions).await?);
    }
    let mut controls = Vec::new();
    for i in 0..args.control_domains {
        controls.push(create(&plane, format!("http://{addr}/control/{i}"), args.interval, regions).await?);
    }

    // Warm-up: every domain up, every region's baseline able to judge.
    let needed = defaults.degraded_min_samples.min(defaults.degraded_window) as i64;
    let all: Vec<Uuid> = trials.iter().chain(&controls).copied().collect();
    let warm_up = Duration::from_secs(u64::from(args.interval) * (needed as u64 + 4) + 30);
    let wanted = (all.len() * regions.len()) as i64;
    until(warm_up, "every baseline to fill", || async {
        let (ready, up): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM latency_baselines WHERE domain_id = ANY($1)
                         AND cardinality(samples) >= $2),
                    (SELECT count(*) FROM domain_state WHERE domain_id = ANY($1) AND state = 'up')",
        )
        .bind(&all)
        .bind(needed as i32)
        .fetch_one(&plane.pool)
        .await?;
        Ok((ready >= wanted && up == all.len() as i64).then_some(()))
    })
    .await?;
    let control_started = Utc::now();
    let control_until = Instant::now() + Duration::from_secs(args.control_s);
    eprintln!("warmed up: {} trial and {} control domains", trials.len(), controls.len());

    // Each trial steps at a random moment within the next minute.
    let mut steps: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
    let mut order: Vec<(Duration, usize)> = (0..trials.len())
        .map(|i| (Duration::from_millis(rand::thread_rng().gen_range(0..60_000)), i))
        .collect();
    order.sort();
    let started = Instant::now();
    for (after, i) in order {
        tokio::time::sleep_until((started + after).into()).await;
        latencies.stepped[&trial_paths[i]].store(true, Ordering::Relaxed);
        steps.push((trials[i], Utc::now()));
    }
    let deadline = Duration::from_secs(u64::from(args.interval) * 6 + 30);
    let detected: HashMap<Uuid, DateTime<Utc>> =
        match until(deadline, "every trial to be degraded", || async {
            let rows = degraded_at(&plane, &trials, control_started).await?;
            Ok((rows.len() == trials.len()).then_some(rows))
        })
        .await
        {
            Ok(rows) => rows,
            Err(error) => {
                eprintln!("{error}");
                degraded_at(&plane, &trials, control_started).await?
            }
        };
    let mut detect_ms = Vec::new();
    let mut missed = 0;
    // A trial degraded before its step is a false alarm (its latency was still normal).
    let early =
        steps.iter().filter(|(d, stepped_at)| detected.get(d).is_some_and(|at| at < stepped_at)).count();
    let detected: HashMap<Uuid, DateTime<Utc>> = if early == 0 {
        detected
    } else {
        let mut after = HashMap::new();
        for (domain, stepped_at) in &steps {
            after.extend(degraded_at(&plane, &[*domain], *stepped_at).await?);
        }
        after
    };
    for (domain, stepped_at) in &steps {
        match detected.get(domain) {
            Some(at) => {
                let ms = (*at - *stepped_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                eprintln!("trial {domain}: degraded {ms:.0} ms after the step");
                detect_ms.push(ms);
            }
            None => missed += 1,
        }
    }
    // Trials are over: stop probing them, so only the control domains load the agents.
    for domain in &trials {
        plane.call(reqwest::Method::DELETE, &format!("/v1/domains/{domain}"), None).await?;
    }

    tokio::time::sleep_until(control_until.into()).await;
    let false_degraded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM domain_transitions WHERE domain_id = ANY($1) AND to_state = 'degraded' AND at >= $2",
    )
    .bind(&controls)
    .bind(control_started)
    .fetch_one(&plane.pool)
    .await?;
    let anomalous_at_end: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM latency_baselines WHERE domain_id = ANY($1) AND cardinality(anomalies) > 0",
    )
    .bind(&controls)
    .fetch_one(&plane.pool)
    .await?;

    for agent in agents {
        agent.stop().await?;
    }
    plane.stop().await?;
    let k = defaults.degraded_consecutive;
    let target_ms = f64::from(k + 1) * f64::from(args.interval) * 1000.0 / args.regions as f64 + 1000.0;
    let p95 = percentile(&mut detect_ms, 95.0);
    Ok(json!({
        "regions": args.regions,
        "interval_s": args.interval,
        "trials": args.trials,
        "control_s": args.control_s,
        "control_domains": args.control_domains,
        "spike_percent": args.spike_percent,
        "window": defaults.degraded_window,
        "z": defaults.degraded_z,
        "consecutive": k,
        "p50_detect_ms": percentile(&mut detect_ms, 50.0),
        "p95_detect_ms": p95,
        "max_detect_ms": detect_ms.iter().copied().fold(0.0, f64::max),
        "missed": missed,
        "false_degraded": false_degraded,
        "trials_degraded_before_step": early,
        "control_anomalous_runs_at_end": anomalous_at_end,
        "target_p95_ms": target_ms,
        "target_met": missed == 0 && early == 0 && false_degraded == 0 && p95 <= target_ms,
    }))
}

/// The first `degraded` transition at or after `since` of each of `domains` that has one.
async fn degraded_at(
    plane: &Plane,
    domains: &[Uuid],
    since: DateTime<Utc>,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT domain_id, min(at) FROM domain_transitions
         WHERE domain_id = ANY($1) AND to_state = 'degraded' AND at >= $2 GROUP BY domain_id",
    )
    .bind(domains)
    .bind(since)
    .fetch_all(&plane.pool)
    .await?;
    Ok(rows.into_iter().collect())
}
