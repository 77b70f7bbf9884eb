//! The scheduler driven under paused tokio time with a fake prober that records when each
//! domain was probed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use shared::{DomainConfig, DomainId};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::Anchor;
use super::{Probe, ProbeNow, Scheduler, SchedulerSettings};
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::probe::{ProbeReport, Timings};
use crate::results::{self, ProbeResult};

#[derive(Default)]
struct FakeProber {
    calls: Mutex<Vec<(DomainId, Instant)>>,
    takes: Duration,
}

impl Probe for FakeProber {
    fn probe(&self, config: Arc<DomainConfig>) -> BoxFuture<'static, ProbeReport> {
        self.calls.lock().unwrap().push((config.id, Instant::now()));
        let takes = self.takes;
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            ProbeReport {
                ok: true,
                error: None,
                error_detail: None,
                timings: Timings { total_ms: takes.as_secs_f64() * 1000.0, ..Timings::default() },
                status: Some(200),
                status_matched: Some(true),
                keyword_matched: None,
                resolved_ip: None,
                resolved_addrs: vec![],
                dns: None,
                dns_error: None,
                connect_attempts: Vec::new(),
                http_version: None,
                redirects: vec![],
                body_bytes: 0,
                body_wire_bytes: 0,
                certificate: None,
                redirect_certificates: Vec::new(),
                earliest_expiry: None,
            }
        })
    }
}

impl FakeProber {
    fn times(&self) -> HashMap<DomainId, Vec<Instant>> {
        let mut map: HashMap<DomainId, Vec<Instant>> = HashMap::new();
        for (id, at) in self.calls.lock().unwrap().iter() {
            map.entry(*id).or_default().push(*at);
        }
        map
    }
}

fn config(interval_s: u32, version: u64) -> DomainConfig {
    shared::testing::sample_domain(interval_s, version)
}

struct Harness {
    prober: Arc<FakeProber>,
    catalog: watch::Sender<Arc<Catalog>>,
    probe_now: ProbeNow,
    metrics: Metrics,
    results: mpsc::Receiver<ProbeResult>,
    cancel: CancellationToken,
    start: Instant,
    saturation: super::Saturation,
}

fn start(initial: Vec<DomainConfig>, max_in_flight: usize, takes: Duration) -> Harness {
    let prober = Arc::new(FakeProber { takes, ..Default::default() });
    let (tx, rx) = watch::channel(Arc::new(Catalog::from_snapshot(1, initial, "ams")));
    let metrics = Metrics::default();
    let (sink, results) = results::queue(100_000, metrics.clone());
    let settings = SchedulerSettings { region: "ams".into(), max_in_flight };
    let (scheduler, probe_now) = Scheduler::new(settings, rx, prober.clone(), sink, metrics.clone());
    let start = Instant::now();
    let scheduler = scheduler.with_anchor(Anchor { instant: start, wall_ms: 1_800_000_000_000 });
    let saturation = scheduler.saturation();
    let cancel = CancellationToken::new();
    tokio::spawn(scheduler.run(cancel.clone()));
    Harness { prober, catalog: tx, probe_now, metrics, results, cancel, start, saturation }
}

#[tokio::test(start_paused = true)]
async fn first_probes_are_spread_and_intervals_are_honoured() {
    let domains: Vec<_> = (0..200).map(|_| config(10, 1)).collect();
    let h = start(domains.clone(), 64, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(35)).await;
    let times = h.prober.times();
    assert_eq!(times.len(), 200, "every domain probed");
    let mut first_by_second = [0u32; 10];
    for (id, at) in &times {
        let first = at[0].duration_since(h.start);
        assert!(first < Duration::from_secs(10), "{id} first probed after {first:?}");
        first_by_second[first.as_secs() as usize] += 1;
        assert!((3..=4).contains(&at.len()), "{id} probed {} times in 35 s", at.len());
        for pair in at.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(10), "interval honoured exactly");
        }
    }
    assert!(
        first_by_second.iter().all(|n| *n > 5),
        "first probes spread over the interval: {first_by_second:?}"
    );
    let mut results = h.results;
    let mut count = 0;
    while let Ok(result) = results.try_recv() {
        assert_eq!(result.lag_ms, 0.0, "an idle scheduler starts probes exactly on time");
        count += 1;
    }
    let in_flight = h.metrics.probes_in_flight.get() as usize;
    assert_eq!(count + in_flight, h.prober.calls.lock().unwrap().len(), "every finished probe has a result");
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_interval_change_takes_effect_at_once_and_a_removed_domain_is_never_probed_again() {
    let slow = config(3600, 1);
    let doomed = config(10, 1);
    let h = start(vec![slow.clone(), doomed.clone()], 8, Duration::from_millis(1));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(h.prober.times().contains_key(&doomed.id));

    let mut faster = slow.clone();
    faster.interval_s = 10;
    faster.version = 2;
    let current = h.catalog.borrow().clone();
    let next = current.with_change(2, slow.id, Some(faster), "ams").with_change(3, doomed.id, None, "ams");
    h.catalog.send_replace(Arc::new(next));
    let changed_at = Instant::now();
    let doomed_before = h.prober.times()[&doomed.id].len();

    tokio::time::sleep(Duration::from_secs(3600)).await;
    let times = h.prober.times();
    assert_eq!(times[&doomed.id].len(), doomed_before, "removed domain probed again");
    let slow_times: Vec<_> = times[&slow.id].iter().filter(|t| **t >= changed_at).collect();
    assert!(*slow_times[0] - changed_at <= Duration::from_secs(10), "new interval applied at once");
    assert!(slow_times.len() >= 359, "probed every 10 s after the change: {}", slow_times.len());
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn probe_now_runs_immediately_and_unknown_domains_are_ignored() {
    let d = config(3600, 1);
    let h = start(vec![d.clone()], 8, Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = h.prober.calls.lock().unwrap().len();
    h.probe_now.request(d.id).unwrap();
    h.probe_now.request(DomainId::new()).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let calls = h.prober.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), before + 1);
    assert_eq!(calls.last().unwrap().0, d.id);
    assert_eq!(h.metrics.on_demand_probes.get(), 1);
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn saturation_is_reported_and_shows_as_lag() {
    // Ten domains due within the first minute, one slot, each probe takes 20 s: the fifth
    // probe cannot start before 80 s although it was planned before 60 s.
    let domains: Vec<_> = (0..10).map(|_| config(60, 1)).collect();
    let mut h = start(domains, 1, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert!(h.metrics.scheduler_saturated.get() > 0);
    let mut worst_lag = 0.0f64;
    let report = h.saturation.report(chrono::Utc::now());
    let window = report.window.expect("a saturation window");
    assert!(report.queue_full_total > 0 && report.lag_p95_ms >= 20_000.0, "{report:?}");
    let mut late = 0;
    while let Ok(result) = h.results.try_recv() {
        worst_lag = worst_lag.max(result.lag_ms);
        let started = result.planned_at + chrono::Duration::microseconds((result.lag_ms * 1000.0) as i64);
        if result.lag_ms >= 1_000.0 {
            late += 1;
            assert!(window.covers(started), "a late probe's start is inside {window:?}");
        }
    }
    assert!(late > 0);
    assert!(worst_lag >= 20_000.0, "lag must reflect waiting for a slot: {worst_lag}");
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn paused_domains_are_not_probed() {
    let mut d = config(10, 1);
    d.paused = true;
    let h = start(vec![d], 8, Duration::from_millis(1));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(h.prober.calls.lock().unwrap().is_empty());
    assert_eq!(h.metrics.scheduled_domains.get(), 0);
    h.cancel.cancel();
}
