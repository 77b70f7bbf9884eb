//! The `probe-agent` binary: parse the command line and configuration, then run until SIGTERM
//! or ctrl-c.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use probe_agent::check::CheckArgs;
use probe_agent::config::{Config, ENV};
use probe_agent::Agent;
use shared::config::EXIT_CONFIG;

/// A prober frees on one worker thread what another allocated (a probe's buffers and its
/// report, thousands of times a second); glibc's allocator serialises that on its arena locks
/// (futex waits were most of the agent's system calls beside the probes' own). mimalloc frees
/// to the owning thread's heap without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "probe-agent", version, about = "Crosscheck regional probe agent")]
struct Cli {
    /// TOML configuration file (environment variables CROSSCHECK_AGENT_* override it).
    #[arg(long, short, env = "CROSSCHECK_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: sync the configuration from Redis, probe on schedule, deliver results (the
    /// default).
    Run,
    /// Probe one URL once from here and print the timing breakdown, the certificate and the
    /// verdict (exit status 0 when it passes, 1 when it fails).
    Check(Box<CheckArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return shared::config::exit_for_usage(error),
    };
    let config = match shared::config::load_checked(cli.config.as_deref(), ENV, Config::preflight) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("probe-agent: invalid configuration: {message}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if let Some(Command::Check(args)) = cli.command {
        return match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(probe_agent::check::run(config, *args)),
            Err(error) => {
                eprintln!("probe-agent: cannot start the runtime: {error}");
                ExitCode::FAILURE
            }
        };
    }
    shared::telemetry::init(config.log_format);
    match shared::limits::raise_open_files() {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
    // Checked here as well as in `Agent::build` so that a certificate for another region is a
    // configuration error (exit code 64), like any other invalid setting.
    let mut checked = config.clone();
    if let Err(message) = checked.adopt_certificate_identity() {
        tracing::error!(error = %message, "invalid configuration");
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let agent = Agent::build(config).await?;
        agent.run_until(shared::shutdown::on_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Said once, through the log (stderr), like everything after tracing is set up.
            tracing::error!(error = %shared::error::Chain(&*error), "probe agent failed");
            ExitCode::FAILURE
        }
    }
}
