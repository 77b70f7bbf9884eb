//! Alerting benchmarks, end to end: an in-process control plane with ingest, three in-process
//! agents delivering over mutual TLS, switchable local targets and a local webhook receiver.
//!
//! - `detect-latency`: a target goes down at a random moment; time to the incident and to the
//!   webhook, over several trials, each with a domain of its own (created for the trial and
//!   deleted after it, so no trial inherits the last one's transitions: a domain that changed
//!   state at every trial would enter flap mode and have its alerts held); then a control run
//!   in which one region alone fails (its agent cannot reach the target) and no incident may
//!   open.
//! - `alert-storm`: every domain's target goes down at once, then comes back: one incident and
//!   one notification per domain and transition, no duplicates. A webhook body that groups
//!   several transitions (a JSON object with a `transitions` array, each element the body one
//!   notification would have had) counts as one message carrying that many transitions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::env::Scratch;
use crate::fleet::{Delivery, Receiver, RunningAgent, Switch};
use crate::ingest::control_config;
use crate::pki::Pki;

pub(crate) const REGIONS: [&str; 3] = ["ams", "iad", "sin"];

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Probe interval of the domain, in seconds.
    #[arg(long, default_value_t = 30)]
    interval: u32,
    #[arg(long, default_value_t = 20)]
    trials: usize,
}

#[derive(Debug, clap::Args)]
pub struct StormArgs {
    #[arg(long, default_value_t = 10_000)]
    domains: usize,
    /// Probe interval of every domain, in seconds.
    #[arg(long, default_value_t = 10)]
    interval: u32,
    /// Create the webhook channel with storm control off (`"storm_window_s": 0`), so every
    /// transition is its own message. Without it the channel's default applies. A control
    /// plane that does not know the setting refuses it; the run then goes on without it and
    /// says so (`storm_control: "unsupported"`).
    #[arg(long)]
    ungrouped: bool,
}

/// A control plane in this process with its API, ingest and webhook-friendly settings.
pub(crate) struct Plane {
    api: String,
    token: String,
    pub(crate) ingest_port: u16,
    pub(crate) pool: PgPool,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl Plane {
    pub(crate) async fn start(scratch: &Scratch, pki: &Pki, regions: usize) -> anyhow::Result<Self> {
        let mut config = control_config(scratch, &scratch.timeseries, pki);
        config.regions = REGIONS[..regions].iter().map(|r| (*r).to_owned()).collect();
        config.allow_private_targets = true;
        config.min_interval_s = 1;
        config.notify_allow_private = vec!["127.0.0.0/8".parse()?];
        let app = control_plane::Application::build(config).await?;
        let api = format!("http://{}", app.local_addr());
        let ingest_port = app.ingest_addr().context("ingest enabled")?.port();
        let pool = app.pool().clone();
        let token = control_plane::tenants::create_tenant(&pool, "alerting").await?.token;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until(shutdown.clone()));
        Ok(Self { api, token, ingest_port, pool, shutdown, task, http: reqwest::Client::new() })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request =
            self.http.request(method.clone(), format!("{}{path}", self.api)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path} -> {status}: {text}");
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    /// A webhook channel without storm control: each notification is its own POST, which is
    /// what these scenarios count.
    async fn webhook(&self, url: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            "/v1/channels",
            Some(json!({"name": "bench", "kind": "webhook", "url": url, "storm_window_s": 0})),
        )
        .await?;
        Ok(())
    }

    /// A webhook channel with the control plane's default storm control (`storm_window_s` not
    /// given): bursts arrive as grouped messages.
    async fn grouped_webhook(&self, url: &str) -> anyhow::Result<()> {
        let body = json!({"name": "bench", "kind": "webhook", "url": url});
        self.call(reqwest::Method::POST, "/v1/channels", Some(body)).await?;
        Ok(())
    }

    /// A webhook channel with storm control off; false when this control plane does not
    /// know `storm_window_s` (the channel is then created without it).
    async fn ungrouped_webhook(&self, url: &str) -> anyhow::Result<bool> {
        match self.webhook(url).await {
            Ok(()) => Ok(true),
            Err(error) if error.to_string().contains("storm_window_s") => {
                eprintln!("this control plane does not know storm_window_s: {error}");
                self.grouped_webhook(url).await?;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    async fn delete(&self, domain: Uuid) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/v1/domains/{domain}"), None).await?;
        Ok(())
    }

    /// Creates a domain; `regions` empty runs it everywhere.
    async fn domain(&self, url: &str, interval: u32, regions: &[&str]) -> anyhow::Result<Uuid> {
        let mut body = json!({"url": url, "interval": interval});
        if !regions.is_empty() {
            body["regions"] = json!(regions);
        }
        let created = self.call(reqwest::Method::POST, "/v1/domains", Some(body)).await?;
        Ok(created["id"].as_str().context("domain id")?.parse()?)
    }

    /// Up, and every region's latest observation a success: a clean start for a trial (a
    /// region still holding a failure from the last outage would not see the next one as a
    /// change of status, and its agent would not send it at once).
    async fn all_regions_up(&self, domain: Uuid) -> anyhow::Result<bool> {
        let status = self.call(reqwest::Method::GET, &format!("/v1/domains/{domain}/status"), None).await?;
        let regions = status["regions"].as_array().cloned().unwrap_or_default();
        Ok(status["state"] == "up" && !regions.is_empty() && regions.iter().all(|r| r["standing"] == "ok"))
    }

    async fn state(&self, domain: Uuid) -> anyhow::Result<String> {
        let status = self.call(reqwest::Method::GET, &format!("/v1/domains/{domain}/status"), None).await?;
        Ok(status["state"].as_str().unwrap_or("unknown").to_owned())
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        self.pool.close().await;
        Ok(())
    }
}

/// Polls `check` every 20 ms until it yields a value or `timeout` passes.
pub(crate) async fn until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The notification bodies one delivery carries: the elements of its `transitions` array when
/// it groups several, else the body itself.
fn carried(delivery: &Delivery) -> Vec<&Value> {
    match delivery.body.get("transitions").and_then(Value::as_array) {
        Some(transitions) => transitions.iter().collect(),
        None => vec![&delivery.body],
    }
}

pub(crate) fn percentile(samples: &mut [f64], p: f64) -> f64 {
    let mut durations: Vec<Duration> =
        samples.iter().map(|ms| Duration::from_secs_f64(ms / 1000.0)).collect();
    crate::stats::percentile_ms(&mut durations, p)
}

/// One agent per region (`<region>-1`) delivering to the plane, able to reach the targets.
pub(crate) async fn start_agents(
    pki: &Pki,
    regions: &[&str],
    scratch: &Scratch,
    ingest_port: u16,
) -> anyhow::Result<Vec<RunningAgent>> {
    let mut agents = Vec::new();
    for region in regions {
        agents.push(
            RunningAgent::start(pki, region, &format!("{region}-1"), &scratch.prefix, ingest_port, true)
                .await?,
        );
    }
    Ok(agents)
}

pub async fn detect_latency(args: DetectArgs) -> anyhow::Result<Value> {
    anyhow::ensure!((1..=REGIONS.len()).contains(&args.regions), "--regions must be 1 to 3");
    let scratch = Scratch::create("detect").await?;
    let result = detect(&args, &scratch).await;
    scratch.cleanup().await?;
    result
}

async fn detect(args: &DetectArgs, scratch: &Scratch) -> anyhow::Result<Value> {
    let pki = Pki::create("detect")?;
    let plane = Plane::start(scratch, &pki, args.regions).await?;
    let receiver = Receiver::start().await?;
    plane.webhook(&receiver.url).await?;
    let target = Switch::start().await?;
    let regions = &REGIONS[..args.regions];
    let mut agents = start_agents(&pki, regions, scratch, plane.ingest_port).await?;
    let interval = Duration::from_secs(u64::from(args.interval));
    let settle = interval * 4 + Duration::from_secs(10);
    // Naming the regions staggers them evenly over the interval (see the agent's scheduler).
    // Each trial has a domain of its own: one domain going down and up at every trial would
    // enter flap mode from the fourth and have its alerts held.
    let fresh = |name: String| {
        let plane = &plane;
        let target = &target;
        async move {
            let domain =
                plane.domain(&format!("http://{}/{name}", target.addr), args.interval, regions).await?;
            until(settle, "every region to see the new domain up", || async {
                Ok(plane.all_regions_up(domain).await?.then_some(()))
            })
            .await?;
            anyhow::Ok(domain)
        }
    };

    let (mut detect_ms, mut notify_ms, mut confirm_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_failure_notify_ms = Vec::new();
    for trial in 0..args.trials {
        target.set_up(true);
        let domain = fresh(format!("detect/{trial}")).await?;
        let wait = rand::thread_rng().gen_range(0..interval.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let seen = receiver.all().len();
        let down_wall = chrono::Utc::now();
        let down_at = Instant::now();
        target.set_up(false);
        let delivery = until(settle, "the incident webhook", || async {
            Ok(receiver.all()[seen..]
                .iter()
                .find(|d| {
                    carried(d)
                        .iter()
                        .any(|n| n["kind"] == "incident_opened" && n["domain_id"] == json!(domain))
                })
                .cloned())
        })
        .await?;
        let opened: (chrono::DateTime<chrono::Utc>,) = sqlx::query_as(
            "SELECT opened_at FROM incidents WHERE domain_id = $1 AND opened_at >= $2 ORDER BY opened_at LIMIT 1",
        )
        .bind(domain)
        .bind(down_wall)
        .fetch_one(&plane.pool)
        .await?;
        let first_failure = first_failure_at(&scratch.timeseries.url, domain, down_wall).await?;
        let detect = (opened.0 - down_wall).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let notify = delivery.at.duration_since(down_at).as_secs_f64() * 1000.0;
        let confirm = (opened.0 - first_failure).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let first_seen = (first_failure - down_wall).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        eprintln!("trial {trial}: detected after {detect:.0} ms, notified after {notify:.0} ms (first failed probe {first_seen:.0} ms after the outage began; first failed probe → incident {confirm:.0} ms)");
        first_failure_notify_ms.push(notify - first_seen);
        detect_ms.push(detect);
        notify_ms.push(notify);
        confirm_ms.push(confirm);
        target.set_up(true);
        until(settle, "the incident to resolve", || async {
            Ok((plane.state(domain).await? == "up").then_some(()))
        })
        .await?;
        // Resolved: deleting it now sends nothing, and its agents stop probing it.
        plane.delete(domain).await?;
    }

    // Control: the last region's agent cannot reach the target (its own network trouble)
    // while the target is up. No incident may open.
    let domain = fresh("detect/control".into()).await?;
    let last = agents.pop().context("at least one agent")?;
    let region = last.region.clone();
    last.stop().await?;
    let blocked = RunningAgent::start(
        &pki,
        &region,
        &format!("{region}-blocked"),
        &scratch.prefix,
        plane.ingest_port,
        false,
    )
    .await?;
    agents.push(blocked);
    let control_started = chrono::Utc::now();
    tokio::time::sleep(interval * 3).await;
    let control_incidents: i64 =
        sqlx::query_scalar("SELECT count(*) FROM incidents WHERE domain_id = $1 AND opened_at >= $2")
            .bind(domain)
            .bind(control_started)
            .fetch_one(&plane.pool)
            .await?;
    // Held notifications would mean a trial's domain entered flap mode: then it did not
    // measure what it names.
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM domain_transitions WHERE NOT notified")
        .fetch_one(&plane.pool)
        .await?;

    for agent in agents {
        agent.stop().await?;
    }
    plane.stop().await?;
    Ok(json!({
        "regions": args.regions,
        "interval_s": args.interval,
        "trials": args.trials,
        "p50_detect_ms": percentile(&mut detect_ms, 50.0),
        "p95_detect_ms": percentile(&mut detect_ms, 95.0),
        "p50_notify_ms": percentile(&mut notify_ms, 50.0),
        "p95_notify_ms": percentile(&mut notify_ms, 95.0),
        "p95_first_failure_to_incident_ms": percentile(&mut confirm_ms, 95.0),
        "p95_first_failure_to_notify_ms": percentile(&mut first_failure_notify_ms, 95.0),
        "control_incidents": control_incidents,
        "held_notifications": held,
    }))
}

/// When the first failed probe after `since` started.
async fn first_failure_at(
    ts_url: &str,
    domain: Uuid,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let pool = PgPool::connect(ts_url).await?;
    let first: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT min(time) FROM probe_results WHERE domain_id = $1 AND NOT ok AND time >= $2",
    )
    .bind(domain)
    .bind(since)
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    first.context("no failed probe stored")
}

pub async fn alert_storm(args: StormArgs) -> anyhow::Result<Value> {
    let scratch = Scratch::create("storm").await?;
    let result = storm(&args, &scratch).await;
    scratch.cleanup().await?;
    result
}

async fn storm(args: &StormArgs, scratch: &Scratch) -> anyhow::Result<Value> {
    let pki = Pki::create("storm")?;
    let plane = std::sync::Arc::new(Plane::start(scratch, &pki, REGIONS.len()).await?);
    let receiver = Receiver::start().await?;
    let storm_control = if !args.ungrouped {
        plane.grouped_webhook(&receiver.url).await?;
        "default"
    } else if plane.ungrouped_webhook(&receiver.url).await? {
        "off"
    } else {
        "unsupported"
    };
    let target = Switch::start().await?;
    eprintln!("creating {} domains", args.domains);
    let created = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..args.domains {
        let (plane, permit) = (plane.clone(), created.clone().acquire_owned().await?);
        let url = format!("http://{}/d{i}", target.addr);
        let interval = args.interval;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            plane.domain(&url, interval, &[]).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let agents = start_agents(&pki, &REGIONS, scratch, plane.ingest_port).await?;
    let settle = Duration::from_secs(u64::from(args.interval) * 6 + 60);
    let count_state = |state: &'static str| {
        let pool = plane.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM domain_state WHERE state = $1")
                .bind(state)
                .fetch_one(&pool)
                .await?;
            anyhow::Ok(n as usize)
        }
    };
    eprintln!("waiting for every domain to be up");
    until(settle, "every domain up", || async {
        Ok((count_state("up").await? == args.domains).then_some(()))
    })
    .await?;

    let mut phases = Vec::new();
    for (up, kind) in [(false, "incident_opened"), (true, "incident_resolved")] {
        let switched = Instant::now();
        target.set_up(up);
        eprintln!(
            "target {}; waiting for {} {kind} notifications",
            if up { "up" } else { "down" },
            args.domains
        );
        let progress = std::cell::Cell::new(Instant::now());
        until(settle * 8, kind, || async {
            let n: usize = receiver.with(|all| {
                all.iter().map(|d| carried(d).iter().filter(|n| n["kind"] == kind).count()).sum()
            });
            if progress.get().elapsed() > Duration::from_secs(5) {
                eprintln!("  {:>5.1} s: {n} {kind}", switched.elapsed().as_secs_f64());
                progress.set(Instant::now());
            }
            Ok((n >= args.domains).then_some(()))
        })
        .await?;
        phases.push(switched.elapsed().as_secs_f64());
    }
    // Let stragglers (duplicates, if any) arrive before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for agent in agents {
        agent.stop().await?;
    }
    let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents").fetch_one(&plane.pool).await?;
    let deliveries = receiver.all();
    let notifications: Vec<&Value> = deliveries.iter().flat_map(carried).collect();
    let field = |n: &Value, key: &str| n[key].as_str().unwrap_or_default().to_owned();
    let mut by_key: HashMap<(String, String, String), usize> = HashMap::new();
    for n in &notifications {
        *by_key.entry((field(n, "kind"), field(n, "domain_id"), field(n, "incident_id"))).or_default() += 1;
    }
    // A delivery repeated (same message id), or two notifications for one transition.
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for d in &deliveries {
        *by_id.entry(d.id.as_str()).or_default() += 1;
    }
    let repeated: usize = by_id.values().map(|n| n - 1).sum();
    let duplicates: usize = by_key.values().map(|n| n - 1).sum::<usize>().max(repeated);
    let mut by_kind: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for n in &notifications {
        *by_kind.entry(field(n, "kind")).or_default() += 1;
    }
    let plane = std::sync::Arc::into_inner(plane).context("plane still shared")?;
    let (evaluations, batches) = consensus_batches(&plane).await.unwrap_or((0.0, 0.0));
    plane.stop().await?;
    let notified = (phases[0] * 10.0).round() / 10.0;
    let mut result = json!({
        "domains": args.domains,
        "storm_control": storm_control,
        "incidents_opened": incidents,
        "messages_delivered": deliveries.len(),
        "transitions_delivered": notifications.len(),
        "notifications_by_kind": by_kind,
        "duplicates": duplicates,
        "seconds_to_all_notified": notified,
        "seconds_to_all_resolved_notified": (phases[1] * 10.0).round() / 10.0,
        "consensus_evaluations": evaluations,
        "consensus_batches": batches,
    });
    if args.ungrouped {
        result["seconds_to_all_notified_ungrouped"] = json!(notified);
    }
    Ok(result)
}

/// Domains evaluated and evaluation transactions, from the control plane's own metrics.
async fn consensus_batches(plane: &Plane) -> anyhow::Result<(f64, f64)> {
    let text = plane.http.get(format!("{}/metrics", plane.api)).send().await?.text().await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(0.0)
    };
    Ok((value("control_plane_consensus_batch_size_sum"), value("control_plane_consensus_batch_size_count")))
}
