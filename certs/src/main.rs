//! `certs`: creates the development CA, the control plane's server certificate, agent
//! certificates per region, and the revocation list. See the README for the walkthrough.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use certs::{Overwrite, Store};
use clap::{Parser, Subcommand};
use shared::identity::AgentIdentity;

#[derive(Debug, Parser)]
#[command(name = "certs", version, about = "Crosscheck certificate tool")]
struct Cli {
    /// Output directory (git-ignored by default).
    #[arg(long, default_value = "certs/out", global = true)]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the certificate authority.
    Ca {
        #[arg(long, default_value = "Crosscheck CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue the control plane's server certificate.
    Server {
        #[arg(long = "dns", default_values_t = ["localhost".to_owned()])]
        dns: Vec<String>,
        #[arg(long = "ip", default_values_t = ["127.0.0.1".parse::<IpAddr>().expect("literal")])]
        ips: Vec<IpAddr>,
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Issue an agent's client certificate for a region.
    Agent {
        #[arg(long)]
        region: String,
        #[arg(long)]
        agent_id: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Revoke a certificate by serial number (hex) and rewrite crl.pem.
    Revoke {
        #[arg(long)]
        serial: String,
    },
    /// Rewrite crl.pem (for example before its next-update date).
    Crl {
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let store = Store::new(cli.out);
    let result = match cli.command {
        Command::Ca { name, days, force } => {
            let overwrite = if force { Overwrite::Replace } else { Overwrite::Refuse };
            store
                .create_ca(&name, days, overwrite)
                .map(|i| format!("CA: {} (key {})", i.cert.display(), i.key.display()))
        }
        Command::Server { dns, ips, days } => store.issue_server(&dns, &ips, days).map(|i| {
            format!("server certificate: {} (key {}, serial {})", i.cert.display(), i.key.display(), i.serial)
        }),
        Command::Agent { region, agent_id, days } => AgentIdentity::new(&region, &agent_id)
            .map_err(anyhow::Error::msg)
            .and_then(|identity| store.issue_agent(&identity, days))
            .map(|i| {
                format!(
                    "agent certificate: {} (key {}, serial {})",
                    i.cert.display(),
                    i.key.display(),
                    i.serial
                )
            }),
        Command::Revoke { serial } => {
            store.revoke(&serial).map(|p| format!("revoked {serial}; CRL: {}", p.display()))
        }
        Command::Crl { days } => store.write_crl(days).map(|p| format!("CRL: {}", p.display())),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("certs: {}", shared::error::Chain(&*error));
            ExitCode::FAILURE
        }
    }
}
