//! `probe-throughput` and `schedule-lag`: the agent's scheduler and prober against local
//! targets running in a child process, with the SSRF allow-list opened for loopback.
//!
//! - `probe-throughput`: many domains on a 1 s interval, so the schedule always has more work
//!   than `--concurrency` slots; counts probes finished per second. The same run measures a
//!   bare baseline: `--concurrency` loops that each open a new connection, send the same request
//!   and read the same response.
//! - `schedule-lag`: `--domains` domains at `--interval` for `--seconds`; reports the schedule
//!   lag of every probe started (exact, from each result) and this process's memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use probe_agent::catalog::Catalog;
use probe_agent::probe::{ProbeSettings, Prober};
use probe_agent::results;
use probe_agent::scheduler::{Scheduler, SchedulerSettings};
use serde_json::{json, Value};
use shared::{DomainConfig, DomainId, RequestConfig, StatusRange};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::stats::percentile_ms;
use crate::target::{spawn_child, TargetAddrs};

#[derive(Debug, clap::Args)]
pub struct ThroughputArgs {
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Probe the HTTPS target instead of the HTTP one.
    #[arg(long)]
    tls: bool,
}

#[derive(Debug, clap::Args)]
pub struct LagArgs {
    #[arg(long, default_value_t = 100_000)]
    domains: usize,
    #[arg(long, default_value_t = 60)]
    interval: u32,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

fn urls(addrs: &TargetAddrs, tls: bool) -> Vec<String> {
    if tls {
        addrs.https.iter().map(|a| format!("https://{a}/ok")).collect()
    } else {
        addrs.http.iter().map(|a| format!("http://{a}/ok")).collect()
    }
}

pub(crate) fn settings(addrs: &TargetAddrs) -> anyhow::Result<ProbeSettings> {
    use rustls_pki_types::pem::PemObject;
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(addrs.ca_pem.as_bytes()).context("bench CA")?;
    Ok(ProbeSettings {
        policy: shared::netguard::TargetPolicy::allowing(vec!["127.0.0.0/8".parse()?]),
        extra_roots: vec![ca],
        ..ProbeSettings::default()
    })
}

pub(crate) fn domains(count: usize, interval_s: u32, urls: &[String]) -> Vec<DomainConfig> {
    (0..count)
        .map(|i| DomainConfig {
            id: DomainId::new(),
            url: urls[i % urls.len()].clone(),
            request: RequestConfig::default(),
            check: shared::CheckConfig::Http,
            json_check: None,
            expected_status: StatusRange::SUCCESS,
            keyword: Some(shared::KeywordCheck::contains("ok")),
            interval_s,
            timeout_ms: 5_000,
            regions: vec![],
            paused: false,
            tls_verify: true,
            http_version: shared::HttpVersion::Auto,
            agents_per_region: shared::domain::DEFAULT_AGENTS_PER_REGION,
            version: 1,
        })
        .collect()
}

/// Enough domains on a 1 s interval that the schedule always exceeds what the probe slots can
/// do: the agent runs at saturation.
pub(crate) const SATURATING_DOMAINS: usize = 60_000;

/// What [`run_scheduler`] saw.
pub(crate) struct SchedulerRun {
    /// Results received before the deadline, failures included.
    pub done: u64,
    pub errors: u64,
    pub lags: Vec<Duration>,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

/// Runs the agent's scheduler and prober over `domains` for `duration`.
pub(crate) async fn run_scheduler(
    domains: Vec<DomainConfig>,
    settings: ProbeSettings,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<SchedulerRun> {
    let metrics = probe_agent::metrics::Metrics::default();
    let (_tx, rx) = watch::channel(Arc::new(Catalog::from_snapshot(1, domains, "bench")));
    let (sink, mut results_rx) = results::queue(1_000_000, metrics.clone());
    let prober = Prober::new(settings).context("prober")?;
    let (scheduler, _probe_now) = Scheduler::new(
        SchedulerSettings { region: "bench".into(), max_in_flight: concurrency },
        rx,
        Arc::new(prober),
        sink,
        metrics,
    );
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(scheduler.run(cancel.clone()));
    let deadline = tokio::time::Instant::now() + duration;
    // The results are read by a task on the runtime's workers, as the agent's batcher reads
    // them, not by the thread blocked in `main` (waking that thread per result costs a futex).
    let consumer = tokio::spawn(async move {
        let (mut done, mut errors, mut lags) = (0u64, 0u64, Vec::new());
        let mut first_error: Option<String> = None;
        let mut batch = Vec::with_capacity(1024);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                received = results_rx.recv_many(&mut batch, 1024) => {
                    if received == 0 {
                        break;
                    }
                    for result in batch.drain(..) {
                        done += 1;
                        if !result.report.ok {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{:?}: {:?}", result.report.error, result.report.error_detail));
                        }
                        lags.push(Duration::from_secs_f64(result.lag_ms / 1000.0));
                    }
                }
            }
        }
        (done, errors, lags, first_error)
    });
    let (done, errors, lags, first_error) = consumer.await?;
    let elapsed = started.elapsed();
    cancel.cancel();
    task.await?;
    Ok(SchedulerRun { done, errors, lags, elapsed, first_error })
}

pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<Value> {
    let (_child, addrs) = spawn_child(8).await?;
    let urls = urls(&addrs, args.tls);
    eprintln!("baseline: {} loops for {} s", args.concurrency, args.seconds);
    let baseline = baseline(&urls, &addrs, args.concurrency, args.seconds).await?;
    let count = SATURATING_DOMAINS;
    eprintln!("agent: {count} domains every 1 s, {} probe slots, {} s", args.concurrency, args.seconds);
    let run = run_scheduler(
        domains(count, 1, &urls),
        settings(&addrs)?,
        args.concurrency,
        Duration::from_secs(args.seconds),
    )
    .await?;
    report_errors(&run);
    let (done, errors) = (run.done, run.errors);
    let probes_per_s = done as f64 / run.elapsed.as_secs_f64();
    Ok(json!({
        "scenario": "probe-throughput",
        "tls": args.tls,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "probes_per_s": probes_per_s.round(),
        "probe_errors": errors,
        "baseline_per_s": baseline.round(),
        "ratio": ((probes_per_s / baseline) * 1000.0).round() / 1000.0,
    }))
}

fn report_errors(run: &SchedulerRun) {
    if let Some(error) = &run.first_error {
        eprintln!("{} probes failed; first: {error}", run.errors);
    }
}

/// The simplest loop doing the same work: new connection, same request, read the response.
async fn baseline(
    urls: &[String],
    addrs: &TargetAddrs,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let tls = urls[0].starts_with("https");
    let connector = if tls {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from_pem_slice(addrs.ca_pem.as_bytes())?)?;
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        // Like the agent: a full handshake every time (a probe measures what a new visitor gets).
        config.resumption = rustls::client::Resumption::disabled();
        Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
    } else {
        None
    };
    let targets: Vec<_> = if tls { addrs.https.clone() } else { addrs.http.clone() };
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let target = targets[i % targets.len()];
        let connector = connector.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let Ok(stream) = tokio::net::TcpStream::connect(target).await else { continue };
                let _ = stream.set_nodelay(true);
                let ok = match &connector {
                    None => exchange(stream, target).await,
                    Some(connector) => {
                        let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
                        match connector.connect(name, stream).await {
                            Ok(stream) => exchange(stream, target).await,
                            Err(_) => false,
                        }
                    }
                };
                if ok {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn exchange<S>(stream: S, target: std::net::SocketAddr) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(connection);
    let request = hyper::Request::get("/ok")
        .header("host", target.to_string())
        .header("user-agent", "Crosscheck/0.1.0")
        .header("connection", "close")
        .header("accept", "*/*")
        .body(Empty::<Bytes>::new())
        .expect("static request");
    match sender.send_request(request).await {
        Ok(response) => response.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

pub async fn schedule_lag(args: LagArgs) -> anyhow::Result<Value> {
    let (_child, addrs) = spawn_child(8).await?;
    let urls = urls(&addrs, false);
    eprintln!("{} domains every {} s for {} s", args.domains, args.interval, args.seconds);
    // Resident memory every 10 s: a steady load must keep it steady.
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = tokio::spawn({
        let samples = samples.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                if let Ok((rss_kb, _)) = crate::cold_load::memory_kb(std::process::id()) {
                    samples.lock().expect("samples").push((rss_kb as f64 / 1024.0).round());
                }
            }
        }
    });
    let run = run_scheduler(
        domains(args.domains, args.interval, &urls),
        settings(&addrs)?,
        args.concurrency,
        Duration::from_secs(args.seconds),
    )
    .await?;
    report_errors(&run);
    let (done, errors, mut lags) = (run.done, run.errors, run.lags);
    sampler.abort();
    let samples = samples.lock().expect("samples").clone();
    let (rss_kb, peak_kb) = crate::cold_load::memory_kb(std::process::id())?;
    Ok(json!({
        "scenario": "schedule-lag",
        "domains": args.domains,
        "interval_s": args.interval,
        "seconds": args.seconds,
        "probes": done,
        "probe_errors": errors,
        "lag_p50_ms": percentile_ms(&mut lags, 50.0),
        "lag_p99_ms": percentile_ms(&mut lags, 99.0),
        "lag_max_ms": percentile_ms(&mut lags, 100.0),
        "rss_mb": (rss_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "peak_rss_mb": (peak_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "rss_every_10s_mb": samples,
    }))
}
