//! `crosscheck`: Crosscheck's configuration as code. A YAML file declares a tenant's domains,
//! notification channels (with their subscriptions), status pages and maintenance windows;
//! `plan` shows how the server differs from it, `apply` makes the server match it, `export`
//! writes what the server has as such a file. The client talks only to the REST API.
//!
//! [`run`] is the whole program with its inputs injected (arguments, environment, output), so
//! tests drive it in-process; `main` only wires it to the process.

pub mod api;
pub mod file;
pub mod plan;
pub mod resources;
pub mod yaml;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};

use crate::api::{ApiError, Client};
use crate::file::{File, Problem, Problems};
use crate::plan::{Action, Change, Options, Plan, State, StateError};
use crate::resources::{Kind, Resolver};

/// Exit status: success; for `plan`, no changes.
pub const EXIT_OK: i32 = 0;
/// Exit status: an error (the file, the API, the network); nothing more was done.
pub const EXIT_ERROR: i32 = 1;
/// Exit status of `plan` when there are changes (like `terraform plan -detailed-exitcode`).
pub const EXIT_CHANGES: i32 = 2;
/// Exit status: the command line is wrong (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

/// The default control plane address (the control plane's default `listen`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

const AFTER_HELP: &str = "\
Environment:
  CROSSCHECK_URL    the control plane's address when --url is not given (default http://127.0.0.1:8080)
  CROSSCHECK_TOKEN  the API token (an admin token for apply); read only from the environment
  and every variable the file names in a *_env key (secrets never appear in the file)

Exit status:
  0   success; for plan, the server already matches the file
  1   error (the file, the API or the network); the message names the file's line and field
  2   plan only: there are changes to apply
  64  the command line is wrong

Examples:
  crosscheck export -o crosscheck.yaml
  crosscheck plan -f crosscheck.yaml
  crosscheck apply -f crosscheck.yaml --yes
  crosscheck apply -f crosscheck.yaml --prune --yes";

/// Crosscheck configuration as code: plan, apply and export a tenant's domains, channels,
/// status pages and maintenance windows from a YAML file, through the REST API.
#[derive(Debug, Parser)]
#[command(name = "crosscheck", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The control plane's base URL [env: CROSSCHECK_URL; default: http://127.0.0.1:8080].
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show how the server differs from the file; exit 0 when it matches, 2 when there are changes.
    Plan {
        /// The configuration file.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Also plan deleting what the server has and the file does not.
        #[arg(long)]
        prune: bool,
        /// Also plan sending every secret again (a rotated value in the same variable).
        #[arg(long)]
        resend_secrets: bool,
    },
    /// Make the server match the file (creates and updates; deletes only with --prune).
    Apply {
        /// The configuration file.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Delete what the server has and the file does not.
        #[arg(long)]
        prune: bool,
        /// Send every secret again: the API never shows a secret, so a new value in the same
        /// environment variable is not seen otherwise.
        #[arg(long)]
        resend_secrets: bool,
        /// Apply without asking for confirmation (required when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Write what the server has as a configuration file (secrets as *_env references).
    Export {
        /// Where to write the file (default: standard output).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// What a run reads and writes besides the API.
pub struct Io<'a> {
    /// The environment (`CROSSCHECK_TOKEN`, `CROSSCHECK_URL`, the file's `*_env` variables).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The answer to `apply`'s confirmation question.
    pub stdin: &'a mut dyn BufRead,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

/// Runs the command line `args` (`args[0]` is the program name); returns the exit status.
pub async fn run<I, T>(args: I, io: Io<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // --help and --version are not errors: their text goes to standard output.
        Err(e) if !e.use_stderr() => {
            let _ = write!(io.stdout, "{}", e.render());
            return EXIT_OK;
        }
        Err(e) => {
            let _ = write!(io.stderr, "{}", e.render());
            return EXIT_USAGE;
        }
    };
    let Io { env, stdin, stdout, stderr } = io;
    match execute(cli, env, stdin, stdout, stderr).await {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(stderr, "{e}");
            EXIT_ERROR
        }
    }
}

/// Why a run failed; the message is for people and names the file's line where it can.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("error: CROSSCHECK_TOKEN is not set (the API token is read only from the environment)")]
    NoToken,
    #[error("error: cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("error: cannot write {0}: {1}")]
    Write(String, std::io::Error),
    #[error("{0}")]
    File(Problems),
    #[error("error: {0}")]
    State(StateError),
    #[error("error: {0}")]
    Api(ApiError),
    #[error("error: cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("apply cancelled: nothing was changed (answer \"yes\", or pass --yes)")]
    NotConfirmed,
}

impl From<StateError> for Error {
    fn from(error: StateError) -> Self {
        Error::State(error)
    }
}

impl From<ApiError> for Error {
    fn from(error: ApiError) -> Self {
        Error::Api(error)
    }
}

async fn execute(
    cli: Cli,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<i32, Error> {
    let url = cli
        .url
        .or_else(|| env("CROSSCHECK_URL").filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.into());
    let token = env("CROSSCHECK_TOKEN").filter(|t| !t.is_empty()).ok_or(Error::NoToken)?;
    let client = Client::new(&url, &token).map_err(Error::Client)?;
    let out = |e: std::io::Error| Error::Write("standard output".into(), e);
    match cli.command {
        Command::Plan { file, prune, resend_secrets } => {
            let file = read_file(&file, env)?;
            let state = State::fetch(&client).await?;
            let plan = Plan::make(&file, &state, env, Options { prune, resend_secrets });
            plan.render(stdout).map_err(out)?;
            Ok(if plan.is_empty() { EXIT_OK } else { EXIT_CHANGES })
        }
        Command::Apply { file, prune, resend_secrets, yes } => {
            let file = read_file(&file, env)?;
            let state = State::fetch(&client).await?;
            let plan = Plan::make(&file, &state, env, Options { prune, resend_secrets });
            plan.render(stdout).map_err(out)?;
            if plan.is_empty() {
                return Ok(EXIT_OK);
            }
            if !yes {
                write!(stdout, "Apply these changes? Only \"yes\" is accepted: ").map_err(out)?;
                stdout.flush().map_err(out)?;
                let mut answer = String::new();
                let _ = stdin.read_line(&mut answer);
                if answer.trim() != "yes" {
                    return Err(Error::NotConfirmed);
                }
            }
            apply(&client, &file, &plan, state.domain_ids, env, stdout, stderr).await?;
            // Anything still different is a value the server keeps in another form than the
            // file writes it: say so, so the file can be written in the server's form.
            let after = State::fetch(&client).await?;
            let again = Plan::make(&file, &after, env, Options { prune, resend_secrets: false });
            if !again.is_empty() {
                writeln!(stderr, "warning: the server keeps some values in another form than the file gives them; write them as the server shows them to make the next plan empty:").map_err(out)?;
                again.render(stderr).map_err(out)?;
            }
            Ok(EXIT_OK)
        }
        Command::Export { output } => {
            let state = State::fetch(&client).await?;
            let (text, vars) = export(&state);
            match &output {
                Some(path) => {
                    std::fs::write(path, &text).map_err(|e| Error::Write(path.display().to_string(), e))?
                }
                None => stdout.write_all(text.as_bytes()).map_err(out)?,
            }
            if !vars.is_empty() {
                writeln!(
                    stderr,
                    "The file reads {} secret(s) from the environment: {}",
                    vars.len(),
                    vars.join(", ")
                )
                .map_err(out)?;
            }
            Ok(EXIT_OK)
        }
    }
}

fn read_file(path: &std::path::Path, env: &dyn Fn(&str) -> Option<String>) -> Result<File, Error> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| Error::Read(name.clone(), e))?;
    let file = File::parse(&name, &source).map_err(Error::File)?;
    let missing = file.missing_env(env);
    if !missing.is_empty() {
        return Err(Error::File(Problems(missing)));
    }
    Ok(file)
}

/// Carries out `plan`: creations and updates in the order domains, channels, status pages,
/// maintenance windows (references exist before they are used), then deletions in the reverse
/// order. Stops at the first failure; a 422 is reported at the file's lines.
async fn apply(
    client: &Client,
    file: &File,
    plan: &Plan,
    mut domain_ids: BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), Error> {
    let out = |e: std::io::Error| Error::Write("standard output".into(), e);
    let deletes = |c: &&Change| matches!(c.action, Action::Delete | Action::Replace);
    // Replaced channels go first, so the new one never meets the old one's name.
    let mut deletions: Vec<&Change> = plan.changes.iter().filter(deletes).collect();
    deletions.sort_by_key(|c| std::cmp::Reverse(c.kind));
    let (replaced, pruned): (Vec<&Change>, Vec<&Change>) =
        deletions.into_iter().partition(|c| c.action == Action::Replace);
    for change in &replaced {
        delete(client, change, stdout).await?;
    }
    for change in plan.changes.iter().filter(|c| !matches!(c.action, Action::Delete)) {
        let (Some(path), Some(fields)) = (&change.path, &change.after) else { continue };
        let resolver = Resolver { env, domain_ids: &domain_ids };
        let only = match &change.action {
            Action::Update(fields) => Some(fields.as_slice()),
            _ => None,
        };
        let body = resources::request(change.kind, fields, only, &resolver).map_err(|e| {
            Error::File(Problems(vec![file.problem(&format!("{path}.{}", e.path), e.message)]))
        })?;
        let result = match (&change.action, &change.id) {
            (Action::Update(_), Some(id)) => client.update(change.kind, id, &body).await,
            _ => client.create(change.kind, &body).await,
        };
        let view = result.map_err(|e| located(file, path, e))?;
        let verb = if matches!(change.action, Action::Update(_)) { "updated" } else { "created" };
        writeln!(stdout, "{} {:?} {verb}", change.kind.noun(), change.key).map_err(out)?;
        if change.kind == Kind::Domain {
            if let Some(id) = view.get("id").and_then(Value::as_str) {
                domain_ids.insert(change.key.clone(), id.to_owned());
            }
        }
        if let Some(secret) = view.get("secret").and_then(Value::as_str) {
            writeln!(stderr, "channel {:?}: its signing secret is {secret} (shown this once: give it to the receiver that checks the signatures)", change.key).map_err(out)?;
        }
    }
    for change in &pruned {
        delete(client, change, stdout).await?;
    }
    Ok(())
}

async fn delete(client: &Client, change: &Change, stdout: &mut dyn Write) -> Result<(), Error> {
    let Some(id) = &change.id else { return Ok(()) };
    client.delete(change.kind, id).await?;
    writeln!(stdout, "{} {:?} deleted", change.kind.noun(), change.key)
        .map_err(|e| Error::Write("standard output".into(), e))
}

/// A 422 as problems at the file's lines; any other failure as it is.
fn located(file: &File, resource_path: &str, error: ApiError) -> Error {
    match error {
        ApiError::Status { fields, .. } if !fields.is_empty() => {
            let mut problems: Vec<Problem> = fields
                .iter()
                .map(|(field, message)| file.problem(&file.locate(resource_path, field), message.clone()))
                .collect();
            problems.sort_by_key(|p| p.line);
            Error::File(Problems(problems))
        }
        other => Error::Api(other),
    }
}

/// The server's state as a configuration file, and the environment variables it names. Secrets
/// become `*_env` references named `CROSSCHECK_<RESOURCE>_<FIELD>`.
pub fn export(state: &State) -> (String, Vec<String>) {
    let mut root = Map::new();
    let mut vars = Vec::new();
    for kind in Kind::ALL {
        let mut items: Vec<_> = state.resources.iter().filter(|r| r.kind == kind).collect();
        items.sort_by(|a, b| a.key.cmp(&b.key));
        let list: Vec<Value> = items
            .iter()
            .map(|r| {
                let mut fields = r.fields.clone();
                name_secrets(&r.key, "", &mut fields, &mut vars);
                Value::Object(fields)
            })
            .collect();
        if !list.is_empty() {
            root.insert(kind.section().into(), Value::from(list));
        }
    }
    let mut text = String::from(
        "# Crosscheck configuration, written by `crosscheck export`.\n\
         # Apply it with `crosscheck apply -f FILE`; `crosscheck plan -f FILE` shows the changes first.\n\
         # Secrets are never written here: each *_env key names the environment variable holding one.\n",
    );
    if !vars.is_empty() {
        text.push_str(&format!("# Set before apply: {}\n", vars.join(", ")));
    }
    text.push_str(&yaml::emit(&Value::Object(root)));
    (text, vars)
}

fn name_secrets(resource: &str, prefix: &str, map: &mut Map<String, Value>, vars: &mut Vec<String>) {
    for (key, value) in map.iter_mut() {
        if key.ends_with("_env") {
            let var = env_var_name(&[resource, prefix, key.trim_end_matches("_env")]);
            vars.push(var.clone());
            *value = Value::from(var);
            continue;
        }
        match value {
            Value::Object(inner) => name_secrets(resource, key, inner, vars),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        // A header is named by its name: CROSSCHECK_API_HEADER_X_API_KEY.
                        let label = inner
                            .get("name")
                            .and_then(Value::as_str)
                            .map(|n| format!("{key} {n}"))
                            .unwrap_or_else(|| key.clone());
                        name_secrets(resource, &label, inner, vars);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `CROSSCHECK_` and the parts, upper-case, every run of other characters one `_`.
fn env_var_name(parts: &[&str]) -> String {
    let mut out = String::from("CROSSCHECK");
    for part in parts.iter().filter(|p| !p.is_empty()) {
        let part =
            if part.contains("://") { part.split_once("://").map_or(*part, |(_, rest)| rest) } else { part };
        let part = part.strip_suffix("headers ").unwrap_or(part).replace("headers ", "header ");
        out.push('_');
        let mut last_underscore = true;
        for c in part.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_uppercase());
                last_underscore = false;
            } else if !last_underscore {
                out.push('_');
                last_underscore = true;
            }
        }
        while out.ends_with('_') {
            out.pop();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::SECRET;

    #[test]
    fn environment_variable_names_are_derived_from_the_resource_and_field() {
        assert_eq!(env_var_name(&["ops-pager", "", "routing_key"]), "CROSSCHECK_OPS_PAGER_ROUTING_KEY");
        assert_eq!(
            env_var_name(&["https://api.example.com/health", "headers X-Api-Key", "value"]),
            "CROSSCHECK_API_EXAMPLE_COM_HEALTH_HEADER_X_API_KEY_VALUE"
        );
        assert_eq!(env_var_name(&["api", "auth", "password"]), "CROSSCHECK_API_AUTH_PASSWORD");
    }

    #[test]
    fn export_names_every_secret_and_writes_no_secret_value() {
        let mut state = State::default();
        let fields = serde_json::json!({"name": "hooks", "kind": "slack", "url_env": "https://hooks.slack.com/services/T/B/secret"});
        state.resources.push(plan::Existing {
            kind: Kind::Channel,
            id: "1".into(),
            key: "hooks".into(),
            fields: fields.as_object().unwrap().clone(),
        });
        let (text, vars) = export(&state);
        assert_eq!(vars, ["CROSSCHECK_HOOKS_URL"]);
        assert!(text.contains("url_env: CROSSCHECK_HOOKS_URL"), "{text}");
        assert!(!text.contains("services/T/B/secret") && !text.contains(SECRET), "{text}");
    }
}
