//! Keeps the Fly.io deployment files under `fly/` in step with the code, without Docker or
//! flyctl: both `*.fly.toml` files are parsed and their `[env]` tables loaded through each
//! binary's own environment mapping into its `Config` (which refuses unknown keys), ports are
//! compared with the listen addresses those settings produce, the ingest service is checked to
//! pass TLS through untouched, the Dockerfiles are read for stages, user, binaries and exposed
//! ports, and `fly/README.md` is checked against the `certs` command line in `certs/src/main.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use shared::config::EnvSource;
use toml::{Table, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench lives in the workspace").to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn fly_toml(name: &str) -> Table {
    let relative = format!("fly/{name}.fly.toml");
    read(&relative).parse().unwrap_or_else(|e| panic!("{relative} is not valid TOML: {e}"))
}

fn table<'a>(t: &'a Table, key: &str) -> &'a Table {
    t.get(key).and_then(Value::as_table).unwrap_or_else(|| panic!("[{key}] missing or not a table"))
}

fn array_of_tables<'a>(t: &'a Table, key: &str) -> Vec<&'a Table> {
    match t.get(key) {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_table().unwrap_or_else(|| panic!("{key}: not a table"))).collect()
        }
        Some(other) => panic!("{key} must be an array of tables, found {other}"),
    }
}

fn str_of<'a>(t: &'a Table, key: &str) -> &'a str {
    t.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("`{key}` missing or not a string"))
}

fn port_of(t: &Table, key: &str) -> u16 {
    let port = t.get(key).and_then(Value::as_integer).unwrap_or_else(|| panic!("`{key}` missing"));
    u16::try_from(port).unwrap_or_else(|_| panic!("`{key}` = {port} is not a port"))
}

/// `app`, `primary_region` and `[build] dockerfile` (resolved like flyctl does: relative to the
/// fly.toml's directory); returns the Dockerfile's path relative to the root.
fn check_app_and_build(name: &str, fly: &Table) -> String {
    let app = str_of(fly, "app");
    assert!(
        !app.is_empty() && app.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{name}: app {app:?} is not a valid Fly app name"
    );
    let region = str_of(fly, "primary_region");
    assert!(
        region.len() == 3 && region.chars().all(|c| c.is_ascii_lowercase()),
        "{name}: primary_region {region:?} is not a Fly region code"
    );
    let dockerfile = format!("fly/{}", str_of(table(fly, "build"), "dockerfile"));
    assert!(root().join(&dockerfile).is_file(), "{name}: [build] dockerfile {dockerfile} does not exist");
    assert!(!array_of_tables(fly, "vm").is_empty(), "{name}: no [[vm]] sizing");
    dockerfile
}

/// The `[env]` table as variables; every value must be a string (what a process receives).
fn env_vars(name: &str, fly: &Table) -> BTreeMap<String, String> {
    table(fly, "env")
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_else(|| panic!("{name}: [env] {k} must be a string, found {v}"));
            (k.clone(), v.to_owned())
        })
        .collect()
}

/// Loads a configuration from exactly `vars` with the binary's own figment (defaults, then the
/// environment mapping of `source`), in a jail that clears the process environment first.
/// Keys the mapping would skip silently (excluded prefixes, `…CONFIG`) are refused here, and
/// unknown keys fail the extraction (`deny_unknown_fields`).
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
fn load_from_env<T>(name: &str, vars: &BTreeMap<String, String>, source: EnvSource) -> T
where
    T: Serialize + DeserializeOwned + Default,
{
    for key in vars.keys() {
        let Some(rest) = key.strip_prefix(source.prefix) else {
            panic!("{name}: [env] {key} does not start with {}", source.prefix);
        };
        let rest = rest.to_ascii_lowercase();
        assert!(
            rest != "config" && !source.exclude.iter().any(|x| rest.starts_with(x)),
            "{name}: [env] {key} would be ignored by the binary"
        );
    }
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        for (key, value) in vars {
            jail.set_env(key, value);
        }
        loaded = Some(shared::config::figment::<T>(None, source).extract::<T>()?);
        Ok(())
    });
    loaded.expect("the jail ran")
}

/// The configuration keys of a `Config`, from its serialized defaults.
fn config_keys<T: Serialize + Default>() -> BTreeSet<String> {
    match serde_json::to_value(T::default()).expect("config serializes") {
        serde_json::Value::Object(map) => map.into_iter().map(|(k, _)| k).collect(),
        other => panic!("config serialized to {other}"),
    }
}

/// Fly's private network is IPv6 only; its proxy and checks may come over IPv4: a listener must
/// be the IPv6 wildcard `[::]`, which the binaries bind dual-stack (`shared::listen`).
fn assert_reachable(name: &str, key: &str, addr: SocketAddr) {
    assert!(
        addr.is_ipv6() && addr.ip().is_unspecified(),
        "{name}: {key} = {addr} must listen on [::] (IPv6 and IPv4) to be reachable on Fly"
    );
}

/// Every check path under `[[http_service.checks]]`, `[[services.http_checks]]` and `[checks.*]`
/// with the port it is sent to.
fn check_paths(fly: &Table) -> BTreeSet<(u16, String)> {
    let mut paths = BTreeSet::new();
    if let Some(http) = fly.get("http_service").and_then(Value::as_table) {
        let port = port_of(http, "internal_port");
        for check in array_of_tables(http, "checks") {
            paths.insert((port, str_of(check, "path").to_owned()));
        }
    }
    for service in array_of_tables(fly, "services") {
        let port = port_of(service, "internal_port");
        for check in array_of_tables(service, "http_checks") {
            paths.insert((port, str_of(check, "path").to_owned()));
        }
    }
    if let Some(checks) = fly.get("checks").and_then(Value::as_table) {
        for (name, check) in checks {
            let check = check.as_table().unwrap_or_else(|| panic!("[checks.{name}] is not a table"));
            if str_of(check, "type") == "http" {
                paths.insert((port_of(check, "port"), str_of(check, "path").to_owned()));
            }
        }
    }
    paths
}

fn check_metrics(name: &str, fly: &Table, port: u16) {
    let metrics = table(fly, "metrics");
    assert_eq!(port_of(metrics, "port"), port, "{name}: [metrics] port is not the ops listener's");
    assert_eq!(str_of(metrics, "path"), "/metrics", "{name}: [metrics] path");
}

/// Ports the app's machines must accept on: services, the HTTP service, machine checks, metrics.
fn internal_ports(fly: &Table) -> BTreeSet<u16> {
    let mut ports: BTreeSet<u16> = check_paths(fly).into_iter().map(|(port, _)| port).collect();
    if let Some(http) = fly.get("http_service").and_then(Value::as_table) {
        ports.insert(port_of(http, "internal_port"));
    }
    ports.extend(array_of_tables(fly, "services").into_iter().map(|s| port_of(s, "internal_port")));
    if let Some(metrics) = fly.get("metrics").and_then(Value::as_table) {
        ports.insert(port_of(metrics, "port"));
    }
    ports
}

#[test]
fn control_plane_fly_toml_matches_the_control_plane() {
    let name = "control-plane.fly.toml";
    let fly = fly_toml("control-plane");
    let dockerfile = check_app_and_build(name, &fly);
    assert_eq!(dockerfile, "fly/control-plane.Dockerfile");

    let vars = env_vars(name, &fly);
    let config: control_plane::Config = load_from_env(name, &vars, control_plane::config::ENV);
    config.validate().unwrap_or_else(|e| panic!("{name}: [env] gives an invalid configuration: {e}"));
    assert!(vars.contains_key("CROSSCHECK_LISTEN") && vars.contains_key("CROSSCHECK_INGEST_LISTEN"));
    assert_reachable(name, "listen", config.listen);
    assert_reachable(name, "ingest_listen", config.ingest_listen);
    assert!(!config.ingest_enabled(), "{name}: TLS material belongs in secrets, not in [env]");

    // The API behind Fly's TLS.
    let http = table(&fly, "http_service");
    assert_eq!(port_of(http, "internal_port"), config.listen.port(), "{name}: http_service vs listen");
    assert_eq!(http.get("force_https").and_then(Value::as_bool), Some(true), "{name}: force_https");

    // The ingest: raw TCP, no Fly TLS termination, public port = listener port.
    let services = array_of_tables(&fly, "services");
    let ingest = services
        .iter()
        .find(|s| port_of(s, "internal_port") == config.ingest_listen.port())
        .unwrap_or_else(|| panic!("{name}: no [[services]] on the ingest port {}", config.ingest_listen));
    assert_eq!(str_of(ingest, "protocol"), "tcp", "{name}: the ingest service must be plain TCP");
    let ports = array_of_tables(ingest, "ports");
    assert!(!ports.is_empty(), "{name}: the ingest service publishes no port");
    for port in &ports {
        let handlers = port.get("handlers").and_then(Value::as_array).map_or(0, Vec::len);
        assert_eq!(handlers, 0, "{name}: the ingest port must have no handlers (mTLS must reach the app)");
        assert!(port.get("tls_options").is_none(), "{name}: the ingest port must not terminate TLS");
    }
    assert!(
        ports.iter().any(|p| port_of(p, "port") == config.ingest_listen.port()),
        "{name}: the ingest should be published on its own port {}",
        config.ingest_listen.port()
    );

    let paths = check_paths(&fly);
    for path in ["/healthz", "/readyz"] {
        assert!(
            paths.contains(&(config.listen.port(), path.to_owned())),
            "{name}: no check of {path} on {}; found {paths:?}",
            config.listen
        );
    }
    check_metrics(name, &fly, config.listen.port());

    let expected: BTreeSet<u16> = [config.listen.port(), config.ingest_listen.port()].into();
    assert_eq!(internal_ports(&fly), expected, "{name}: ports other than the two listeners");
    let image = Dockerfile::read(&dockerfile);
    image.check(&dockerfile, "control-plane", "control-plane", &expected);
}

#[test]
fn probe_agent_fly_toml_matches_the_probe_agent() {
    let name = "probe-agent.fly.toml";
    let fly = fly_toml("probe-agent");
    let dockerfile = check_app_and_build(name, &fly);
    assert_eq!(dockerfile, "fly/probe-agent.Dockerfile");

    let vars = env_vars(name, &fly);
    assert!(
        !vars.contains_key("CROSSCHECK_AGENT_REGION") && !vars.contains_key("FLY_REGION"),
        "{name}: the region comes from Fly's FLY_REGION, not from [env]"
    );
    let config: probe_agent::config::Config = load_from_env(name, &vars, probe_agent::config::ENV);
    config.validate().unwrap_or_else(|e| panic!("{name}: [env] gives an invalid configuration: {e}"));
    assert!(vars.contains_key("CROSSCHECK_AGENT_LISTEN"));
    assert_reachable(name, "listen", config.listen);

    assert!(fly.get("http_service").is_none(), "{name}: the agent must not be a public HTTP service");
    assert!(fly.get("services").is_none(), "{name}: the agent must not publish any service");
    let paths = check_paths(&fly);
    assert!(
        paths.contains(&(config.listen.port(), "/healthz".to_owned())),
        "{name}: no check of /healthz on {}; found {paths:?}",
        config.listen
    );
    check_metrics(name, &fly, config.listen.port());

    let expected: BTreeSet<u16> = [config.listen.port()].into();
    assert_eq!(internal_ports(&fly), expected, "{name}: ports other than the ops listener");
    let image = Dockerfile::read(&dockerfile);
    image.check(&dockerfile, "probe-agent", "probe-agent", &expected);

    // A graceful stop lets in-flight probes finish (at most the largest probe timeout the
    // control plane accepts) and then flushes the buffer: Fly must not SIGKILL before that.
    let kill = str_of(&fly, "kill_timeout");
    let kill_s: u64 = kill
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name}: kill_timeout {kill:?} is not a number of seconds like \"90s\""));
    let needed_ms =
        u64::from(control_plane::Config::default().max_timeout_ms) + config.shutdown_flush_timeout_ms;
    assert!(
        kill_s * 1000 >= needed_ms + 5_000,
        "{name}: kill_timeout {kill} is shorter than the longest probe plus the shutdown flush ({needed_ms} ms) plus 5 s"
    );
}

#[test]
fn build_context_leaves_out_build_output_keys_and_history() {
    let ignore = read(".dockerignore");
    let entries: BTreeSet<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target/", "certs/out/", ".git"] {
        let bare = needed.trim_end_matches('/');
        assert!(
            entries.contains(needed) || entries.contains(bare),
            ".dockerignore must exclude {needed}; has {entries:?}"
        );
    }
}

/// A Dockerfile as a list of instructions (continuation lines joined, comments dropped).
struct Dockerfile {
    instructions: Vec<(String, String)>,
    syntax_directive: bool,
}

impl Dockerfile {
    fn read(relative: &str) -> Self {
        let text = read(relative);
        let syntax_directive =
            text.lines().next().is_some_and(|l| l.starts_with("# syntax=docker/dockerfile:1"));
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            if trimmed.starts_with('#') {
                continue; // a comment inside a continued instruction
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    let (op, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                    instructions.push((op.to_ascii_uppercase(), args.trim().to_owned()));
                    current.clear();
                }
            }
        }
        assert!(current.is_empty(), "{relative}: ends inside a continued line");
        Self { instructions, syntax_directive }
    }

    fn check(&self, relative: &str, package: &str, bin: &str, ports: &BTreeSet<u16>) {
        let froms: Vec<usize> = self
            .instructions
            .iter()
            .enumerate()
            .filter(|(_, (op, _))| op == "FROM")
            .map(|(i, _)| i)
            .collect();
        assert!(froms.len() >= 2, "{relative}: expected a multi-stage build, found {} FROM", froms.len());
        let final_stage = &self.instructions[*froms.last().expect("checked")..];

        // Runs as a non-root user.
        let user = final_stage
            .iter()
            .rev()
            .find(|(op, _)| op == "USER")
            .map(|(_, args)| args.as_str())
            .unwrap_or_else(|| panic!("{relative}: the final stage sets no USER (it would run as root)"));
        let uid = user.split(':').next().unwrap_or_default();
        assert!(!matches!(uid, "" | "0" | "root"), "{relative}: USER {user} is root");

        // Builds the right binary of the right package, reproducibly.
        let builds: Vec<&str> = self
            .instructions
            .iter()
            .filter(|(op, args)| op == "RUN" && args.contains("cargo build"))
            .map(|(_, args)| args.as_str())
            .collect();
        assert_eq!(builds.len(), 1, "{relative}: expected one cargo build");
        let words: Vec<&str> = builds[0].split_whitespace().collect();
        let after = |flag: &str| words.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
        assert!(
            words.contains(&"--release") && words.contains(&"--locked"),
            "{relative}: --release --locked"
        );
        assert_eq!(after("-p"), Some(package), "{relative}: cargo build -p");
        assert_eq!(after("--bin"), Some(bin), "{relative}: cargo build --bin");
        let binaries = workspace_binaries();
        assert!(
            binaries.get(package).is_some_and(|bins| bins.contains(bin)),
            "{relative}: {package} has no binary {bin}; the workspace has {binaries:?}"
        );
        let uses_cache_mounts = builds[0].contains("--mount=type=cache");
        assert!(
            !uses_cache_mounts || self.syntax_directive,
            "{relative}: cache mounts need the `# syntax=docker/dockerfile:1` line first"
        );

        // Starts that binary.
        let entrypoint = final_stage
            .iter()
            .find(|(op, _)| op == "ENTRYPOINT")
            .map(|(_, args)| args.as_str())
            .unwrap_or_else(|| panic!("{relative}: the final stage has no ENTRYPOINT"));
        assert!(
            entrypoint.contains(&format!("/{bin}\"")),
            "{relative}: ENTRYPOINT {entrypoint} is not {bin}"
        );

        // Exposes exactly the ports the fly.toml sends traffic and checks to.
        let exposed: BTreeSet<u16> = final_stage
            .iter()
            .filter(|(op, _)| op == "EXPOSE")
            .flat_map(|(_, args)| args.split_whitespace())
            .map(|p| p.trim_end_matches("/tcp").parse().unwrap_or_else(|_| panic!("{relative}: EXPOSE {p}")))
            .collect();
        assert_eq!(&exposed, ports, "{relative}: EXPOSE does not match the fly.toml's internal ports");
    }
}

/// Binary names per workspace package, from the members' manifests (`[[bin]]` entries, or the
/// package name for a `src/main.rs` without them).
fn workspace_binaries() -> BTreeMap<String, BTreeSet<String>> {
    let workspace: Table = read("Cargo.toml").parse().expect("workspace manifest");
    let members = table(&workspace, "workspace").get("members").and_then(Value::as_array).expect("members");
    let mut binaries = BTreeMap::new();
    for member in members {
        let dir = member.as_str().expect("member path");
        let manifest: Table = read(&format!("{dir}/Cargo.toml")).parse().expect("member manifest");
        let package = str_of(table(&manifest, "package"), "name").to_owned();
        let mut bins: BTreeSet<String> =
            array_of_tables(&manifest, "bin").into_iter().map(|b| str_of(b, "name").to_owned()).collect();
        if bins.is_empty() && root().join(dir).join("src/main.rs").is_file() {
            bins.insert(package.clone());
        }
        binaries.insert(package, bins);
    }
    binaries
}

/// `#[arg(long = "x")]` renames an option; `#[arg(long)]` uses the field's name.
fn long_override(attr: &str) -> Option<&str> {
    attr.split("long = \"").nth(1).and_then(|r| r.split('"').next())
}

/// The `certs` subcommands and their `--long` options, read from the clap definitions in
/// `certs/src/main.rs` (variant `Agent { agent_id, … }` → `agent --agent-id`).
fn certs_cli() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let source = read("certs/src/main.rs");
    let kebab = |s: &str| {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(if c == '_' { '-' } else { c.to_ascii_lowercase() });
        }
        out
    };

    let mut global = BTreeSet::new();
    let cli = source.split("struct Cli {").nth(1).and_then(|r| r.split("\n}").next()).expect("struct Cli");
    let mut pending = None;
    for line in cli.lines().map(str::trim) {
        if line.starts_with("#[arg(") && line.contains("long") {
            pending = Some(line.to_owned());
        } else if line.starts_with('#') || line.starts_with("//") {
            continue;
        } else if let Some((field, _)) = line.split_once(':') {
            if let Some(attr) = pending.take() {
                global.insert(long_override(&attr).map_or_else(|| kebab(field), str::to_owned));
            }
        }
    }

    let body =
        source.split("enum Command {").nth(1).and_then(|r| r.split("\n}").next()).expect("enum Command");
    let mut commands: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut pending: Option<String> = None;
    for line in body.lines() {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if indent == 4 && line.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            let name = line.split(|c: char| !c.is_ascii_alphanumeric()).next().expect("variant");
            current = Some(kebab(name));
            commands.entry(kebab(name)).or_default();
        } else if indent == 8 && line.starts_with("#[arg(") {
            pending = Some(line.to_owned());
        } else if indent == 8 && line.contains(':') && !line.starts_with('#') && !line.starts_with("//") {
            let field = line.split(':').next().expect("field").trim();
            let option = match pending.take() {
                Some(attr) => long_override(&attr).map_or_else(|| kebab(field), str::to_owned),
                None => kebab(field),
            };
            commands
                .get_mut(current.as_deref().expect("field inside a variant"))
                .expect("known")
                .insert(option);
        }
    }
    assert!(commands.len() >= 5, "could not read the certs subcommands: {commands:?}");
    (commands, global)
}

/// Every `certs` invocation in a text: `cargo run … -p certs -- <subcommand> <args>` up to the
/// end of the command (line end, `#`, `&&`, `;`, `|`, `)` or a backslash continuation).
fn certs_invocations(text: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for line in text.lines() {
        for (i, _) in line.match_indices("-p certs -- ") {
            let rest = &line[i + "-p certs -- ".len()..];
            let end = rest.find(['#', ';', '|', ')', '`', '\\']).unwrap_or(rest.len());
            let end = rest[..end].find("&&").unwrap_or(end);
            let mut words = rest[..end].split_whitespace().map(str::to_owned);
            if let Some(subcommand) = words.next() {
                found.push((subcommand, words.collect()));
            }
        }
    }
    found
}

#[test]
fn fly_readme_uses_the_real_certs_cli_and_settings() {
    let readme = read("fly/README.md");
    let (commands, global) = certs_cli();
    let invocations = certs_invocations(&readme);
    assert!(!invocations.is_empty(), "fly/README.md shows no certs command");

    // Each step of the certificate walkthrough is there: CA, server, per-region agents,
    // revocation and re-signing the CRL — every subcommand the tool has.
    let used: BTreeSet<&str> = invocations.iter().map(|(c, _)| c.as_str()).collect();
    for command in commands.keys() {
        assert!(used.contains(command.as_str()), "fly/README.md never shows `certs {command}`");
    }
    for (command, args) in &invocations {
        let options = commands
            .get(command)
            .unwrap_or_else(|| panic!("fly/README.md: `certs {command}` is not a certs subcommand"));
        for arg in args.iter().filter(|a| a.starts_with("--")) {
            let option = arg.trim_start_matches('-').split('=').next().unwrap_or_default();
            assert!(
                options.contains(option) || global.contains(option),
                "fly/README.md: `certs {command}` has no option --{option} (it has {options:?})"
            );
        }
    }

    // Every CROSSCHECK_* variable it names is a real setting (or one the uplink is adding).
    let control_plane = config_keys::<control_plane::Config>();
    let agent = config_keys::<probe_agent::config::Config>();
    let mut named = BTreeSet::new();
    for (i, _) in readme.match_indices("CROSSCHECK_") {
        let var: String = readme[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        named.insert(var);
    }
    // `CROSSCHECK_TLS_*` stands for a family: some setting must start with it.
    let known = |keys: &BTreeSet<String>, key: &str| {
        let mut all = keys.iter().map(String::as_str);
        if key.is_empty() || key.ends_with('_') {
            all.any(|k| k.starts_with(key))
        } else {
            all.any(|k| k == key)
        }
    };
    for var in &named {
        if let Some(key) = var.strip_prefix("CROSSCHECK_AGENT_") {
            let key = key.to_ascii_lowercase();
            assert!(known(&agent, &key), "fly/README.md: {var} is not an agent setting");
        } else {
            let key = var.trim_start_matches("CROSSCHECK_").to_ascii_lowercase();
            assert!(known(&control_plane, &key), "fly/README.md: {var} is not a control-plane setting");
        }
    }
    for needed in ["CROSSCHECK_TLS_CA", "CROSSCHECK_TLS_CRL", "CROSSCHECK_AGENT_TLS_CERT", "FLY_REGION"] {
        assert!(readme.contains(needed), "fly/README.md does not mention {needed}");
    }
    for config in ["fly/control-plane.fly.toml", "fly/probe-agent.fly.toml"] {
        assert!(readme.contains(&format!("--config {config}")), "fly/README.md never deploys {config}");
    }
}

#[test]
fn readme_parsers_read_what_they_should() {
    let text = "cargo run -p certs -- agent --region ams --agent-id ams-1   # note\n\
                x=$(cargo run -q -p certs -- revoke --serial \"$s\") && cargo run -p certs -- crl\n";
    let found = certs_invocations(text);
    assert_eq!(
        found,
        vec![
            ("agent".into(), vec!["--region".into(), "ams".into(), "--agent-id".into(), "ams-1".into()]),
            ("revoke".into(), vec!["--serial".into(), "\"$s\"".into()]),
            ("crl".into(), vec![]),
        ]
    );
    let (commands, global) = certs_cli();
    assert!(commands["agent"].contains("agent-id") && commands["agent"].contains("region"));
    assert!(commands["server"].contains("dns") && commands["server"].contains("ip"));
    assert!(global.contains("out"));
}
