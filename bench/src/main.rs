//! Benchmark scenarios and the demo. Each scenario starts what it needs on loopback (a scratch
//! database, a private Redis prefix, in-process or child-process services), runs bounded,
//! cleans up, and prints one final line `RESULT {json}`.
//!
//! `cargo run --release -p bench -- <scenario> [--flags]`

mod alerting;
mod capacity;
mod chaos;
mod cold_load;
mod compare;
mod degraded;
mod demo;
mod env;
mod flapping;
mod fleet;
mod ingest;
mod pages;
mod pki;
mod probing;
mod propagation;
mod restart;
mod screenshots;
mod stats;
mod target;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Crosscheck benchmarks and demo")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Time from an API change's 2xx to every agent having applied it.
    ConfigPropagation(propagation::Args),
    /// An agent's start-up load of a large catalog: time and memory.
    CatalogColdLoad(cold_load::Args),
    /// Probes per second through the agent's scheduler and prober versus a bare loop.
    ProbeThroughput(probing::ThroughputArgs),
    /// The agent's prober versus Prometheus' blackbox_exporter on the same targets, HTTP and
    /// HTTPS, a fresh connection per probe.
    ProbeCompare(compare::Args),
    /// Schedule lag and memory with many domains.
    ScheduleLag(probing::LagArgs),
    /// Batches from simulated mTLS agents into storage versus a bare binary COPY.
    Ingest(ingest::Args),
    /// Thousands of concurrent agent connections against one control plane.
    IngestFanin(ingest::FaninArgs),
    /// Agents deliver while the control plane is killed and restarted twice: nothing lost.
    RestartLoss(restart::Args),
    /// Target down → incident and webhook, over trials; plus a one-region control run.
    DetectLatency(alerting::DetectArgs),
    /// Latency steps 20 ms → 400 ms → the degraded state, over trials; plus a control run of
    /// noisy but normal latency that must never be degraded.
    DegradedDetect(degraded::Args),
    /// Every target down at once, then up: one incident and notification per domain.
    AlertStorm(alerting::StormArgs),
    /// A simulated hour (compressed clock) of flapping domains and real outages: flap mode,
    /// held alerts, digests.
    FlapHour(flapping::Args),
    /// A state change's commit to its arrival at every SSE stream of a status page.
    LiveLatency(pages::LatencyArgs),
    /// The public status page with many components under concurrent load.
    StatusPage(pages::PageArgs),
    /// The end-to-end demo: control plane and three regional agents following live changes.
    Demo(demo::Args),
    /// Steady load from three regions (two agents each) while an agent, a control-plane replica,
    /// Redis and the time-series PostgreSQL are killed and restarted in turn: results and
    /// notifications lost or duplicated, and the longest gap between stored probes.
    Chaos(chaos::Args),
    /// The capacity model: probes per agent core, ingest rows per writer, consensus
    /// evaluations, Redis and storage bytes, measured briefly here, and what they give for
    /// 1,000,000 domains × 30 regions (docs/capacity.md).
    Capacity(capacity::Args),
    /// Internal: serve local probe targets (used by the probing scenarios and the demo).
    #[command(hide = true)]
    Target(target::Args),
    /// Internal: run a control plane configured by CROSSCHECK_* variables.
    #[command(hide = true)]
    ControlPlaneChild,
    /// Internal: run a probe agent configured by CROSSCHECK_AGENT_* variables (chaos).
    #[command(hide = true)]
    AgentChild,
    /// Internal: run a probe agent in this process (used by catalog-cold-load).
    #[command(hide = true)]
    Agent(cold_load::AgentArgs),
}

/// The agent's allocator (see `probe-agent/src/main.rs`): the scenarios run the agent's code in
/// this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        match cli.scenario {
            Scenario::ConfigPropagation(args) => propagation::run(args).await,
            Scenario::CatalogColdLoad(args) => cold_load::run(args).await,
            Scenario::ProbeThroughput(args) => probing::throughput(args).await,
            Scenario::ProbeCompare(args) => compare::run(args).await,
            Scenario::ScheduleLag(args) => probing::schedule_lag(args).await,
            Scenario::Ingest(args) => ingest::run(args).await,
            Scenario::IngestFanin(args) => ingest::fanin(args).await,
            Scenario::ControlPlaneChild => {
                ingest::control_plane_child().await.map(|()| serde_json::Value::Null)
            }
            Scenario::RestartLoss(args) => restart::run(args).await,
            Scenario::DetectLatency(args) => alerting::detect_latency(args).await,
            Scenario::DegradedDetect(args) => degraded::run(args).await,
            Scenario::AlertStorm(args) => alerting::alert_storm(args).await,
            Scenario::FlapHour(args) => flapping::run(args).await,
            Scenario::LiveLatency(args) => pages::live_latency(args).await,
            Scenario::StatusPage(args) => pages::status_page(args).await,
            Scenario::Demo(args) => demo::run(args).await,
            Scenario::Chaos(args) => chaos::run(args).await,
            Scenario::AgentChild => chaos::agent_child().await.map(|()| serde_json::Value::Null),
            Scenario::Capacity(args) => capacity::run(args).await,
            Scenario::Target(args) => target::run_child(args).await.map(|()| serde_json::Value::Null),
            Scenario::Agent(args) => cold_load::agent(args).await.map(|()| serde_json::Value::Null),
        }
    })?;
    if !result.is_null() {
        println!("RESULT {result}");
    }
    Ok(())
}
