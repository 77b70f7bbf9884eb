//! `certs`: creates the development CA, the control plane's server certificate, agent
//! certificates per region, and the revocation list. See the README for the walkthrough.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use certs::{Issued, Overwrite, Store};
use clap::{Parser, Subcommand};
use shared::identity::AgentIdentity;

const EXAMPLES: &str = "\
Examples:
  certs ca --name \"Crosscheck CA\"                        create the CA (once)
  certs server --dns cp.example.com --ip 203.0.113.7     the control plane's server certificate
  certs server --dev                                     the same for one machine (localhost, 127.0.0.1, ::1)
  certs agent --region ams --agent-id ams-1              an agent's client certificate
  certs revoke --serial 5f0c…                            revoke a certificate, rewrite crl.pem
  certs crl                                              re-sign crl.pem before its next update (7 days)

Files go to --out (default certs/out): ca.pem/ca.key, server.pem/server.key,
agents/<region>-<agent-id>.pem/.key, revoked.txt and crl.pem. Keys are written owner-only.";

const SERVER_EXAMPLES: &str = "\
Examples:
  certs server --dns crosscheck-cp.internal --dns crosscheck-cp.fly.dev
  certs server --dev         localhost, 127.0.0.1 and ::1, for one machine";

#[derive(Debug, Parser)]
#[command(name = "certs", version, about = "Crosscheck certificate tool", after_help = EXAMPLES)]
struct Cli {
    /// Directory the CA, certificates, keys and CRL are read from and written to.
    #[arg(long, default_value = "certs/out", global = true, value_name = "DIR")]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the certificate authority (ca.pem, ca.key) every other certificate chains to.
    #[command(after_help = "Example:\n  certs ca --name \"Crosscheck CA\" --days 3650")]
    Ca {
        /// Common name of the CA certificate.
        #[arg(long, default_value = "Crosscheck CA")]
        name: String,
        /// Validity in days from now.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA (every certificate it issued stops being accepted).
        #[arg(long)]
        force: bool,
    },
    /// Issue the control plane's server certificate (server.pem, server.key) with exactly the
    /// names given; prints the subject alternative names it got.
    #[command(after_help = SERVER_EXAMPLES)]
    Server {
        /// DNS name agents connect to (repeat for several).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// IP address agents connect to (repeat for several).
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// Also name this machine: DNS localhost, IP 127.0.0.1 and ::1 (development only).
        #[arg(long)]
        dev: bool,
        /// Validity in days from now.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Issue an agent's client certificate (agents/<region>-<agent-id>.pem, .key); the region
    /// and agent id in it are the agent's identity at the control plane.
    #[command(after_help = "Example:\n  certs agent --region ams --agent-id ams-1 --days 30")]
    Agent {
        /// Region the agent probes from (lowercase, for example ams).
        #[arg(long)]
        region: String,
        /// The agent's name within its region (for example ams-1).
        #[arg(long)]
        agent_id: String,
        /// Validity in days from now.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Revoke a certificate by serial number: adds it to revoked.txt and rewrites crl.pem
    /// (valid 7 days).
    #[command(after_help = "Example:\n  certs revoke --serial 5f0c3a…")]
    Revoke {
        /// Serial number in hex, as `certs agent` printed it.
        #[arg(long, value_name = "HEX")]
        serial: String,
    },
    /// Re-sign crl.pem from revoked.txt. Run it before the CRL's next update (for example
    /// daily from cron), or the control plane logs that its CRL has lapsed.
    #[command(after_help = "Example:\n  certs crl --days 7")]
    Crl {
        /// Days until the CRL's next update.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
}

/// The development names `--dev` adds: this machine by name and loopback address.
fn dev_names(dns: &mut Vec<String>, ips: &mut Vec<IpAddr>) {
    if !dns.iter().any(|d| d == "localhost") {
        dns.push("localhost".to_owned());
    }
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
}

fn describe(kind: &str, issued: &Issued) -> String {
    let mut text =
        format!("{kind}: {} (key {}, serial {})", issued.cert.display(), issued.key.display(), issued.serial);
    if !issued.sans.is_empty() {
        text.push_str(&format!("\nsubject alternative names: {}", issued.sans.join(", ")));
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let store = Store::new(cli.out);
    let result = match cli.command {
        Command::Ca { name, days, force } => {
            let overwrite = if force { Overwrite::Replace } else { Overwrite::Refuse };
            store.create_ca(&name, days, overwrite).map(|i| describe("CA", &i))
        }
        Command::Server { mut dns, mut ips, dev, days } => {
            if dev {
                dev_names(&mut dns, &mut ips);
            }
            store.issue_server(&dns, &ips, days).map(|i| describe("server certificate", &i))
        }
        Command::Agent { region, agent_id, days } => AgentIdentity::new(&region, &agent_id)
            .map_err(anyhow::Error::msg)
            .and_then(|identity| store.issue_agent(&identity, days))
            .map(|i| describe("agent certificate", &i)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_option_has_a_help_text_and_examples_close_the_help() {
        let mut cli = Cli::command();
        cli.build();
        assert!(cli.get_after_help().is_some_and(|h| h.to_string().contains("Examples:")));
        for arg in cli.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
            assert!(arg.get_help().is_some(), "certs --{} has no help text", arg.get_id());
        }
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            assert!(sub.get_about().is_some(), "certs {} has no description", sub.get_name());
            assert!(sub.get_after_help().is_some(), "certs {} shows no example", sub.get_name());
            for arg in sub.get_arguments().filter(|a| a.get_id() != "help") {
                assert!(
                    arg.get_help().is_some(),
                    "certs {} --{} has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn server_names_are_only_the_ones_asked_for() {
        let parse = |args: &[&str]| match Cli::try_parse_from(["certs", "server"].iter().chain(args)) {
            Ok(Cli { command: Command::Server { dns, ips, dev, .. }, .. }) => (dns, ips, dev),
            other => panic!("{other:?}"),
        };
        let (dns, ips, dev) = parse(&["--dns", "example.com"]);
        assert_eq!((dns, ips, dev), (vec!["example.com".to_owned()], vec![], false));
        let (mut dns, mut ips, dev) = parse(&["--dev", "--ip", "127.0.0.1"]);
        assert!(dev);
        dev_names(&mut dns, &mut ips);
        assert_eq!(dns, ["localhost"]);
        assert_eq!(ips, ["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
    }
}
