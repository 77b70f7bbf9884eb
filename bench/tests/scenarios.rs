//! Every benchmark scenario in its short form (seconds, tiny sizes), through the `bench`
//! binary as a user runs it: each must end with a `RESULT {json}` line whose outcome holds
//! (nothing lost, no duplicate, no false incident, targets met). The figures themselves are
//! not checked here (the machine running the tests may be busy); the point is that a
//! scenario broken by a later change fails here instead of at the next measurement.
//!
//! Needs PostgreSQL and Redis on 127.0.0.1, like the scenarios themselves. The scenarios run
//! one at a time (they measure, and some start many tasks).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Longest a short form may take before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(300);

/// Runs `bench <args>` and returns its `RESULT` JSON.
fn run(args: &str) -> Value {
    let _one = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args.split_whitespace())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the bench binary starts");
    // Read both pipes on threads so a chatty scenario never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the bench binary") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`bench {args}` did not finish within {DEADLINE:?}:\n{}", err.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    assert!(status.success(), "`bench {args}` failed ({status}):\n{err}\n{out}");
    let line = out.lines().last().unwrap_or_default();
    let json =
        line.strip_prefix("RESULT ").unwrap_or_else(|| panic!("`bench {args}` ended without RESULT:\n{out}"));
    let result: Value = serde_json::from_str(json).expect("RESULT is JSON");
    eprintln!("bench {args} ({:.1} s): {result}", started.elapsed().as_secs_f64());
    result
}

/// The scenarios with a short form below. `demo` is the walkthrough `./demo.sh` runs (the
/// `control-plane`, `probe-agent` and `certs` binaries as child processes, for minutes), not a
/// measurement.
const SHORT_FORMS: [&str; 16] = [
    "config-propagation",
    "catalog-cold-load",
    "probe-throughput",
    "probe-compare",
    "schedule-lag",
    "ingest",
    "ingest-fanin",
    "restart-loss",
    "detect-latency",
    "degraded-detect",
    "alert-storm",
    "flap-hour",
    "live-latency",
    "status-page",
    "chaos",
    "capacity",
];

#[test]
fn every_scenario_has_a_short_form_here() {
    let help = Command::new(env!("CARGO_BIN_EXE_bench")).arg("--help").output().expect("bench --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !["demo", "help"].contains(name))
        .collect();
    assert_eq!(listed, SHORT_FORMS, "a scenario was added or renamed: give it a short form in this file");
}

#[test]
fn config_propagation() {
    let r = run("config-propagation --agents 2 --updates 20 --domains 5");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["updates"], 20, "{r}");
}

#[test]
fn catalog_cold_load() {
    let r = run("catalog-cold-load --domains 1000");
    assert_eq!(r["domains"], 1000, "{r}");
    assert!(r["load_ms"].as_f64().is_some(), "{r}");
}

#[test]
fn probe_throughput() {
    for tls in ["", " --tls"] {
        let r = run(&format!("probe-throughput --concurrency 16 --seconds 2{tls}"));
        assert_eq!(r["probe_errors"], 0, "{r}");
        assert!(r["probes_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["baseline_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// Needs Prometheus' blackbox_exporter (the Debian package `prometheus-blackbox-exporter`,
/// which `.ci/run` installs; the scenario installs it itself when it can).
#[test]
fn probe_compare() {
    let r = run("probe-compare --seconds 1 --rounds 1 --concurrency 16");
    for key in ["agent_http_per_s", "blackbox_http_per_s", "agent_https_per_s", "blackbox_https_per_s"] {
        assert!(r[key].as_f64().is_some_and(|rate| rate > 0.0), "{key}: {r}");
    }
    for key in ["agent_http_errors", "blackbox_http_errors", "agent_https_errors", "blackbox_https_errors"] {
        assert_eq!(r[key], 0, "{key}: {r}");
    }
    assert!(r["http_ratio"].as_f64().is_some() && r["https_ratio"].as_f64().is_some(), "{r}");
    assert_eq!(r["concurrency"], 16, "{r}");
}

#[test]
fn schedule_lag() {
    let r = run("schedule-lag --domains 1000 --interval 2 --seconds 3 --concurrency 16");
    assert_eq!(r["probe_errors"], 0, "{r}");
    assert!(r["probes"].as_u64().unwrap() >= 1000, "every domain probed at least once: {r}");
}

#[test]
fn ingest() {
    let r = run("ingest --agents 2 --seconds 2 --batch 50 --domains 50");
    assert_eq!((r["lost"].as_u64(), r["duplicated"].as_u64()), (Some(0), Some(0)), "{r}");
    assert!(r["rows"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn capacity() {
    let r = run("capacity --seconds 1 --configs 1000 --observed-domains 100");
    let inputs = &r["inputs"];
    for key in [
        "probes_per_core_s",
        "ingest_rows_per_writer_s",
        "evaluations_per_s",
        "redis_bytes_per_1000_configs",
        "bytes_per_result",
        "compression_ratio",
    ] {
        assert!(inputs[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    assert_eq!(inputs["probe_errors"], 0, "{r}");
    assert_eq!(inputs["observed_regions"], 3, "{r}");
    let model = &r["model"];
    assert_eq!(model["results_per_s"], 500_000.0, "{r}");
    for key in ["agents_per_region", "ingest_replicas", "consensus_replicas_storm"] {
        assert!(model[key].as_u64().is_some_and(|n| n >= 1), "{key}: {r}");
    }
    assert!(model["raw_gb_per_day"].as_f64() > model["compressed_gb_per_day"].as_f64(), "{r}");
}

#[test]
fn ingest_fanin() {
    let r = run("ingest-fanin --agents 50 --batches 2 --batch 5");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["batches"], 100, "{r}");
    assert!(r["max_db_connections"].as_i64() <= r["db_pool"].as_i64(), "{r}");
    assert!(r["max_control_db_connections"].as_i64() <= r["control_db_pool"].as_i64(), "{r}");
}

#[test]
fn restart_loss() {
    let r = run("restart-loss --domains 10 --seconds 6 --down-ms 500");
    assert_eq!((r["lost"].as_u64(), r["duplicated"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!(r["restarts"], 2, "{r}");
    assert!(r["stored"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn detect_latency() {
    // Four trials on one-second probes: each trial's outage must be notified (one domain for
    // every trial would reach flap mode's six changes in the third and have its alerts held
    // from then on), and the region failing alone opens nothing.
    let r = run("detect-latency --regions 3 --interval 1 --trials 4");
    assert_eq!(r["trials"], 4, "{r}");
    assert_eq!(r["control_incidents"], 0, "{r}");
    assert_eq!(r["held_notifications"], 0, "{r}");
}

#[test]
fn degraded_detect() {
    // Three steps on one-second probes, a short control run: every step is detected, the
    // noisy control domains never are.
    let r = run("degraded-detect --regions 3 --interval 1 --trials 3 --control-s 20 --control-domains 2");
    assert_eq!(r["trials"], 3, "{r}");
    assert_eq!(r["missed"], 0, "{r}");
    assert_eq!(r["false_degraded"], 0, "{r}");
}

#[test]
fn alert_storm() {
    let r = run("alert-storm --domains 30 --interval 2");
    assert_eq!(r["incidents_opened"], 30, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["transitions_delivered"], 60, "one opened and one resolved per domain: {r}");
    assert_eq!(r["storm_control"], "default", "{r}");
    let messages = r["messages_delivered"].as_u64().unwrap();
    assert!(messages < 60, "the channel's default storm control groups the burst: {r}");
    let r = run("alert-storm --domains 10 --interval 2 --ungrouped");
    assert_eq!(r["incidents_opened"], 10, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert!(r["seconds_to_all_notified_ungrouped"].as_f64().is_some(), "{r}");
    assert_eq!(
        r["messages_delivered"], r["transitions_delivered"],
        "storm control off: one message each: {r}"
    );
}

#[test]
fn flap_hour() {
    let r = run("flap-hour --domains 20 --outages 5 --tenants 2");
    assert_eq!(r["targets_met"], true, "{r}");
    assert_eq!(r["digests"], 2, "{r}");
    assert_eq!(r["down_alerts"], 5, "{r}");
}

#[test]
fn live_latency() {
    let r = run("live-latency --subscribers 20 --changes 3 --gap-ms 50");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["deliveries"], 60, "{r}");
    assert!(r["p95_ms"].as_f64().is_some(), "{r}");
}

#[test]
fn status_page() {
    let r = run("status-page --components 10 --clients 4 --seconds 2");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert!(r["p99_ms"].as_f64().is_some(), "{r}");
}

#[test]
fn chaos() {
    // Every fault once in 20 s on a few domains: nothing stored twice, every transition the run
    // caused notified once, and the ledger and the storage agree on what they both saw.
    let r = run("chaos --seconds 20 --domains 6 --flips 1 --down-ms 500");
    assert_eq!(r["faults"].as_array().map(Vec::len), Some(4), "{r}");
    assert_eq!(r["results_duplicated"], 0, "{r}");
    assert_eq!(r["notifications_expected"], 2, "{r}");
    assert_eq!(r["notifications_lost"], 0, "{r}");
    assert_eq!(r["notifications_duplicated"], 0, "{r}");
    assert_eq!(r["notifications_unexpected"], 0, "{r}");
    assert!(r["results_stored"].as_u64().unwrap() > 0, "{r}");
}
