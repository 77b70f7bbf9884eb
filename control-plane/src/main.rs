//! The `control-plane` binary: parse the command line and configuration, then serve or run an
//! operator command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use control_plane::config::{Config, ENV};
use control_plane::tenants::{self, Role};
use control_plane::{startup, Application};
use shared::config::EXIT_CONFIG;

#[derive(Debug, Parser)]
#[command(name = "control-plane", version, about = "Crosscheck control plane")]
struct Cli {
    /// TOML configuration file (environment variables CROSSCHECK_* override it).
    #[arg(long, short, env = "CROSSCHECK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and publish configuration (the default).
    Serve,
    /// Create the transactional and time-series databases when they do not exist, apply both
    /// databases' migrations, and exit.
    Migrate,
    /// Create a tenant and print its first admin API token.
    CreateTenant {
        #[arg(long)]
        name: String,
    },
    /// Create another API token for a tenant and print it.
    CreateToken {
        #[arg(long)]
        tenant: uuid::Uuid,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "read_only"], default_value = "read_only")]
        role: String,
    },
    /// Set a tenant's time zone (an IANA name such as Europe/Berlin): its SLO periods and
    /// monthly SLA reports are calendar months there.
    SetTimeZone {
        #[arg(long)]
        tenant: uuid::Uuid,
        /// An IANA time zone name, e.g. Europe/Berlin, America/New_York or UTC.
        #[arg(long)]
        time_zone: String,
    },
    /// Set a tenant's quotas (each a number, or `none` for unlimited; those not given are kept)
    /// and print them all. Example:
    /// `control-plane set-quota --tenant ID --max-domains 100 --min-interval-s 30 --requests-per-minute none`
    SetQuota {
        #[arg(long)]
        tenant: uuid::Uuid,
        /// At most this many domains (0: none); `none`: unlimited.
        #[arg(long, value_parser = quota_value(0))]
        max_domains: Option<Limit>,
        /// No domain may be probed more often (seconds, at least 1); `none`: no minimum beyond
        /// the configured `min_interval_s`.
        #[arg(long, value_parser = quota_value(1))]
        min_interval_s: Option<Limit>,
        /// At most this many notification channels (0: none); `none`: unlimited.
        #[arg(long, value_parser = quota_value(0))]
        max_channels: Option<Limit>,
        /// At most this many /v1 requests a minute, per replica (at least 1); `none`: unlimited.
        #[arg(long, value_parser = quota_value(1))]
        requests_per_minute: Option<Limit>,
    },
    /// Revoke every certificate an agent has connected with; every replica refuses them within
    /// seconds. Issue the agent a new certificate to let it back in.
    RevokeAgent {
        #[arg(long)]
        region: String,
        #[arg(long)]
        agent_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// A quota as given on the command line: a number, or `None` for `none` (unlimited).
#[derive(Debug, Clone, Copy)]
struct Limit(Option<u32>);

/// Parses a quota: `none`, or an integer from `min` to 2147483647.
fn quota_value(min: u32) -> impl Fn(&str) -> Result<Limit, String> + Clone {
    move |raw: &str| {
        if raw.eq_ignore_ascii_case("none") {
            return Ok(Limit(None));
        }
        raw.parse::<u32>()
            .ok()
            .filter(|n| *n >= min && *n <= i32::MAX as u32)
            .map(|n| Limit(Some(n)))
            .ok_or_else(|| format!("must be `none` or an integer from {min} to {}", i32::MAX))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return shared::config::exit_for_usage(error),
    };
    let config = match shared::config::load_checked(cli.config.as_deref(), ENV, Config::preflight) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("control-plane: invalid configuration: {message}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    shared::telemetry::init(config.log_format);
    match shared::limits::raise_open_files() {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Said once, through the log (stderr), like everything after tracing is set up.
            tracing::error!(error = %shared::error::Chain(&*error), "control plane failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run_until(shared::shutdown::on_signal()).await
        }
        Command::Migrate => {
            for (what, url) in
                [("transactional", &config.database_url), ("time-series", &config.timeseries_url)]
            {
                if startup::ensure_database(what, url).await? {
                    println!("created the {what} database");
                }
            }
            let pool = startup::connect_database(&config).await?;
            startup::migrate(&pool).await?;
            println!("migrated the transactional database");
            let mode = control_plane::timeseries::migrate_database(&config).await?;
            println!("migrated the time-series database ({} storage)", mode.as_str());
            Ok(())
        }
        Command::CreateTenant { name } => {
            let pool = startup::connect_database(&config).await?;
            startup::migrate(&pool).await?;
            let issued = tenants::create_tenant(&pool, &name).await.context("creating the tenant")?;
            println!("tenant_id={}", issued.tenant_id);
            println!("token={}", issued.token);
            eprintln!("keep this token: it is shown only once");
            Ok(())
        }
        Command::CreateToken { tenant, name, role } => {
            let pool = startup::connect_database(&config).await?;
            let role = Role::parse(&role).context("role must be admin or read_only")?;
            let issued =
                tenants::create_token(&pool, tenant, &name, role).await.context("creating the token")?;
            println!("token={}", issued.token);
            Ok(())
        }
        Command::SetTimeZone { tenant, time_zone } => {
            let zone = control_plane::sla::period::parse_time_zone(&time_zone).with_context(|| {
                format!("unknown time zone {time_zone:?}: give an IANA name such as Europe/Berlin or UTC")
            })?;
            let pool = startup::connect_database(&config).await?;
            let info = tenants::set_time_zone(&pool, tenant, zone)
                .await
                .context("setting the time zone")?
                .with_context(|| format!("no tenant {tenant}"))?;
            println!("tenant_id={} time_zone={}", info.id, info.time_zone);
            Ok(())
        }
        Command::SetQuota { tenant, max_domains, min_interval_s, max_channels, requests_per_minute } => {
            let change = control_plane::quotas::Change {
                max_domains: max_domains.map(|l| l.0),
                min_interval_s: min_interval_s.map(|l| l.0),
                max_channels: max_channels.map(|l| l.0),
                requests_per_minute: requests_per_minute.map(|l| l.0),
            };
            let pool = startup::connect_database(&config).await?;
            let quotas = control_plane::quotas::set(&pool, tenant, change)
                .await
                .context("setting the quotas")?
                .with_context(|| format!("no tenant {tenant}"))?;
            let show = |v: Option<u32>| v.map_or_else(|| "none".to_owned(), |n| n.to_string());
            println!(
                "tenant_id={tenant} max_domains={} min_interval_s={} max_channels={} requests_per_minute={}",
                show(quotas.max_domains),
                show(quotas.min_interval_s),
                show(quotas.max_channels),
                show(quotas.requests_per_minute),
            );
            Ok(())
        }
        Command::RevokeAgent { region, agent_id, reason } => {
            let pool = startup::connect_database(&config).await?;
            let serials = control_plane::agents::revoke(&pool, &region, &agent_id, &reason).await?;
            if serials.is_empty() {
                anyhow::bail!(
                    "no agent {region}/{agent_id} has connected yet; revoke its certificate with `certs revoke` instead"
                );
            }
            for serial in serials {
                println!("revoked certificate serial={serial} of agent {region}/{agent_id}");
            }
            Ok(())
        }
    }
}
