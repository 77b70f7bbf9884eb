//! The public face under load: `live-latency` (a state change's commit to its arrival at
//! every one of many Server-Sent Event streams of a status page) and `status-page` (the
//! rendered page with many components and their 90-day bars, many clients at once).
//!
//! Both run the control plane in this process (no ingest: observations are recorded and
//! evaluated directly, as ingest would hand them to consensus) against scratch databases and a
//! private Redis prefix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args as ClapArgs;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::env::{redis_url, Scratch};
use crate::stats::percentile_ms;

#[derive(Debug, ClapArgs)]
pub struct LatencyArgs {
    /// Concurrent SSE streams of the status page.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// State changes (down, up, down, …) timed.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Pause between two changes, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub gap_ms: u64,
}

#[derive(Debug, ClapArgs)]
pub struct PageArgs {
    /// Components on the page (each its own domain with 90 days of history).
    #[arg(long, default_value_t = 200)]
    pub components: usize,
    /// Clients requesting the page back to back.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long they do.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// A control plane in this process with one tenant.
struct Plane {
    api: String,
    token: String,
    app_consensus: control_plane::consensus::Consensus,
    pool: sqlx::PgPool,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl Plane {
    async fn start(scratch: &Scratch, tune: impl FnOnce(&mut control_plane::Config)) -> anyhow::Result<Self> {
        let mut config = control_plane::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            database_url: scratch.db.url.clone(),
            redis_url: redis_url(),
            redis_prefix: scratch.prefix.clone(),
            timeseries_url: scratch.timeseries.url.clone(),
            regions: vec!["ams".into(), "iad".into(), "sin".into()],
            // Evaluations are driven here; the sweep would only add noise.
            consensus_sweep_interval_ms: 3_600_000,
            database_max_connections: 20,
            ..control_plane::Config::default()
        };
        tune(&mut config);
        let app = control_plane::Application::build(config).await?;
        let api = format!("http://{}", app.local_addr());
        let pool = app.pool().clone();
        let app_consensus = app.consensus();
        let token = control_plane::tenants::create_tenant(&pool, "pages").await?.token;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until(shutdown.clone()));
        Ok(Self { api, token, app_consensus, pool, shutdown, task, http: reqwest::Client::new() })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        call_api(&self.http, &self.api, &self.token, method, path, body).await
    }

    /// `n` domains (documentation addresses: nothing probes them here) on page `slug`.
    async fn page(&self, slug: &str, n: usize) -> anyhow::Result<Vec<Uuid>> {
        let mut domains = Vec::with_capacity(n);
        for i in 0..n {
            let body = json!({"url": format!("https://service-{i}.example.com/health"), "interval": 60});
            let created = self.call(reqwest::Method::POST, "/v1/domains", body).await?;
            domains.push(created["id"].as_str().context("domain id")?.parse()?);
        }
        let components: Vec<Value> = domains
            .iter()
            .enumerate()
            .map(|(i, d)| json!({"domain": d, "name": format!("Service {i}"), "group": format!("Group {}", i % 5)}))
            .collect();
        let body = json!({"slug": slug, "title": "Bench", "components": components});
        self.call(reqwest::Method::POST, "/v1/status-pages", body).await?;
        Ok(domains)
    }

    /// Records every region's observation of `domain` (as ingest would) without evaluating.
    async fn observe(&self, domain: Uuid, ok: bool) -> anyhow::Result<()> {
        use control_plane::consensus::{DomainObservation, ObservedBatch, Run};
        let at = Utc::now();
        for region in ["ams", "iad", "sin"] {
            let batch = ObservedBatch {
                region: region.into(),
                agent_id: format!("{region}-1"),
                health: None,
                received_at: at,
                observations: vec![DomainObservation {
                    domain_id: domain,
                    ok,
                    error_kind: (!ok).then(|| "connect".to_owned()),
                    status_code: ok.then_some(200),
                    observed_at: at,
                    run: Run::of(ok, at),
                    latencies: Vec::new(),
                }],
                certificates: Vec::new(),
                dns: Vec::new(),
            };
            self.app_consensus.record(&batch).await?;
        }
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// One SSE stream of the page: sends the arrival time of each `component` event.
async fn subscriber(
    http: reqwest::Client,
    url: String,
    index: usize,
    ready: mpsc::UnboundedSender<usize>,
    arrivals: mpsc::UnboundedSender<(usize, Instant)>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut response = http.get(&url).send().await?;
    anyhow::ensure!(response.status().is_success(), "stream {index}: {}", response.status());
    let mut buffer = String::new();
    let mut said_ready = false;
    loop {
        let chunk = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            chunk = response.chunk() => chunk?,
        };
        let Some(chunk) = chunk else { return Ok(()) };
        let now = Instant::now();
        buffer.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !said_ready {
                said_ready = true;
                let _ = ready.send(index);
            }
            if block.lines().any(|l| l == "event: component") {
                let _ = arrivals.send((index, now));
            }
        }
    }
}

pub async fn live_latency(args: LatencyArgs) -> anyhow::Result<Value> {
    anyhow::ensure!(args.subscribers > 0 && args.changes > 0, "--subscribers and --changes must be positive");
    let _ = rlimit::increase_nofile_limit(u64::from(u32::MAX));
    let scratch = Scratch::create("live").await?;
    let subscribers = args.subscribers;
    let plane = Plane::start(&scratch, |c| {
        c.live_max_clients = subscribers + 100;
    })
    .await?;
    let result = async {
        let domains = plane.page("bench", 2).await?;
        let (target, other) = (domains[0], domains[1]);
        // Both up first, so each change of the target flips the banner.
        for domain in [target, other] {
            plane.observe(domain, true).await?;
            plane.app_consensus.evaluate(domain, Utc::now()).await?;
        }
        let url = format!("{}/status/bench/events", plane.api);
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let (arrive_tx, mut arrive_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        // One connection per stream, as browsers have.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let mut tasks = Vec::with_capacity(subscribers);
        for index in 0..subscribers {
            tasks.push(tokio::spawn(subscriber(
                http.clone(),
                url.clone(),
                index,
                ready_tx.clone(),
                arrive_tx.clone(),
                stop.clone(),
            )));
        }
        let connect_started = Instant::now();
        let mut connected = 0;
        while connected < subscribers {
            tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
                .await
                .context("streams did not all open within a minute")?;
            connected += 1;
        }
        let connect_s = connect_started.elapsed().as_secs_f64();
        let mut samples = Vec::with_capacity(subscribers * args.changes);
        let mut lost = 0usize;
        let mut arrived_per_client = vec![0usize; subscribers];
        for change in 0..args.changes {
            let ok = change % 2 == 1;
            plane.observe(target, ok).await?;
            // From the start of the evaluation transaction: its commit is inside.
            let started = Instant::now();
            plane.app_consensus.evaluate(target, Utc::now()).await?;
            let deadline = started + Duration::from_secs(10);
            let mut got = 0;
            while got < subscribers {
                match tokio::time::timeout_at(deadline.into(), arrive_rx.recv()).await {
                    Ok(Some((index, at))) => {
                        arrived_per_client[index] += 1;
                        if arrived_per_client[index] == change + 1 {
                            samples.push(at.saturating_duration_since(started));
                            got += 1;
                        }
                    }
                    _ => break,
                }
            }
            lost += subscribers - got;
            for count in arrived_per_client.iter_mut() {
                *count = (*count).max(change + 1);
            }
            tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        }
        stop.cancel();
        for task in tasks {
            if let Ok(Err(error)) = task.await {
                tracing::warn!(%error, "a stream failed");
            }
        }
        Ok::<_, anyhow::Error>(json!({
            "scenario": "live-latency",
            "subscribers": subscribers,
            "changes": args.changes,
            "deliveries": samples.len(),
            "lost": lost,
            "p50_ms": percentile_ms(&mut samples, 50.0),
            "p95_ms": percentile_ms(&mut samples, 95.0),
            "p99_ms": percentile_ms(&mut samples, 99.0),
            "max_ms": percentile_ms(&mut samples, 100.0),
            "connect_s": (connect_s * 1000.0).round() / 1000.0,
        }))
    }
    .await;
    plane.stop().await?;
    scratch.cleanup().await?;
    result
}

/// 90 days of history for each domain: a few outages (transitions and incidents) spread over
/// the window, and the current state up.
async fn history(pool: &sqlx::PgPool, domains: &[Uuid]) -> anyhow::Result<()> {
    let now = Utc::now();
    let tenant: Uuid = sqlx::query_scalar("SELECT tenant_id FROM domains WHERE id = $1")
        .bind(domains[0])
        .fetch_one(pool)
        .await?;
    let start = now - chrono::Duration::days(92);
    for (i, domain) in domains.iter().enumerate() {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO domain_transitions (tenant_id, domain_id, at, from_state, to_state, notified) VALUES ($1, $2, $3, 'unknown', 'up', true)")
            .bind(tenant)
            .bind(domain)
            .bind(start)
            .execute(&mut *tx)
            .await?;
        for outage in 0..(i % 6) {
            let opened = now - chrono::Duration::hours(((outage * 17 + i * 5) % (89 * 24)) as i64 + 1);
            let resolved = opened + chrono::Duration::minutes(((i + outage) % 50 + 3) as i64);
            let incident = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO incidents (id, tenant_id, domain_id, state, opened_at, resolved_at, duration_s, opened_regions)
                 VALUES ($1, $2, $3, 'resolved', $4, $5, $6, '[{\"region\": \"ams\", \"error_kind\": \"connect\"}]')",
            )
            .bind(incident)
            .bind(tenant)
            .bind(domain)
            .bind(opened)
            .bind(resolved)
            .bind((resolved - opened).num_seconds())
            .execute(&mut *tx)
            .await?;
            for (at, from, to) in [(opened, "up", "down"), (resolved, "down", "up")] {
                sqlx::query("INSERT INTO domain_transitions (tenant_id, domain_id, at, from_state, to_state, notified, incident_id) VALUES ($1, $2, $3, $4, $5, true, $6)")
                    .bind(tenant)
                    .bind(domain)
                    .bind(at)
                    .bind(from)
                    .bind(to)
                    .bind(incident)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("INSERT INTO domain_state (domain_id, state, since) VALUES ($1, 'up', $2) ON CONFLICT (domain_id) DO UPDATE SET state = 'up'")
            .bind(domain)
            .bind(start)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

pub async fn status_page(args: PageArgs) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.components > 0 && args.clients > 0 && args.seconds > 0,
        "every count must be positive"
    );
    let scratch = Scratch::create("page").await?;
    let plane = Plane::start(&scratch, |_| {}).await?;
    let result = async {
        let domains = plane.page("bench", args.components).await?;
        history(&plane.pool, &domains).await?;
        let url = format!("{}/status/bench", plane.api);
        // The first request builds the page (cold), then it is served from memory until
        // `status_page_cache_ms` passes, rebuilt in the background while the old one is served.
        let http = reqwest::Client::new();
        let cold = Instant::now();
        let first = http.get(&url).header("accept-encoding", "gzip").send().await?;
        anyhow::ensure!(first.status().is_success(), "the page answered {}", first.status());
        let gzip_bytes = first.bytes().await?.len();
        let cold_ms = cold.elapsed().as_secs_f64() * 1000.0;
        let html_bytes = http.get(&url).send().await?.bytes().await?.len();
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let (http, url, errors) = (http.clone(), url.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    // As a browser asks: compressed. The body is read whole, not decoded.
                    let ok = match http.get(&url).header("accept-encoding", "gzip").send().await {
                        Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                latencies
            }));
        }
        let started = Instant::now();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await?);
        }
        let elapsed = started.elapsed().as_secs_f64();
        Ok::<_, anyhow::Error>(json!({
            "scenario": "status-page",
            "components": args.components,
            "clients": args.clients,
            "requests": latencies.len(),
            "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
            "requests_per_s": (latencies.len() as f64 / elapsed).round(),
            "p50_ms": percentile_ms(&mut latencies, 50.0),
            "p99_ms": percentile_ms(&mut latencies, 99.0),
            "max_ms": percentile_ms(&mut latencies, 100.0),
            "cold_render_ms": (cold_ms * 10.0).round() / 10.0,
            "html_bytes": html_bytes,
            "gzip_bytes": gzip_bytes,
        }))
    }
    .await;
    plane.stop().await?;
    scratch.cleanup().await?;
    result
}

/// One authenticated JSON request to a control plane at `base`; its JSON answer, or an error
/// with the status and body when it is not a success.
pub(crate) async fn call_api(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response =
        http.request(method.clone(), format!("{base}{path}")).bearer_auth(token).json(&body).send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "{method} {path} -> {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}
