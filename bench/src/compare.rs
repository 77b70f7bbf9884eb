//! `probe-compare`: the agent's prober against the field's reference prober, Prometheus'
//! blackbox_exporter, on the same local targets in the same run.
//!
//! - **Targets**: the HTTP and HTTPS servers of `bench target` (a child process, 8 loopback
//!   addresses), `GET /ok` answering 200 "ok". Both sides check the status (2xx) and that the
//!   body contains `ok`, and both open a fresh connection per probe; over HTTPS each probe is a
//!   full handshake verifying the chain to the bench's CA (the agent never resumes a session;
//!   the exporter builds a new HTTP client, TLS configuration included, with keep-alives off
//!   for every probe, and sets no session cache).
//! - **The agent**: its scheduler and prober, the code path production runs, over 60,000
//!   domains on a 1 s interval so the schedule always has more work than `--concurrency`
//!   probe slots (as in `probe-throughput`).
//! - **blackbox_exporter**: driven the way Prometheus drives it: `GET
//!   /probe?module=…&target=…` with Prometheus' scrape headers, from `--concurrency`
//!   keep-alive connections each waiting for its answer before asking again. A probe counts
//!   when the answer says `probe_success 1`. The configuration is generated: `http_2xx`, and
//!   `https_2xx`, which trusts the bench's CA through `tls_config.ca_file`. The exporter is the
//!   Debian package `prometheus-blackbox-exporter` (`--exporter` names another binary); when it
//!   is missing the bench installs it with `apt-get`, or exits saying what to install.
//! - **Phases, never at once**: for each protocol the two sides alternate, `--rounds` times
//!   each, in slices of `--seconds / --rounds` (agent, exporter, agent, exporter, …), so they
//!   never share the CPU and a change in the machine's load hits both alike. The exporter
//!   process stays up, idle, while the agent runs. A side's rate is its successful probes over
//!   its slices' time.
//!
//! The load generator runs in this process on the same two cores as the exporter and the
//! targets, as Prometheus would on a shared host; the agent's side has no such client. The
//! machine's load average at the start is in the result: a busy machine lowers both rates.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::probing;
use crate::target::{spawn_child, TargetAddrs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured seconds per side and protocol (split into `--rounds` slices).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// The agent's probe slots, and the load generator's connections to the exporter.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Slices per side and protocol; the sides alternate slice by slice.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// The blackbox_exporter binary (default: the Debian package's, else one on the PATH).
    #[arg(long)]
    exporter: Option<PathBuf>,
}

/// The Debian package and the binary it installs.
const PACKAGE: &str = "prometheus-blackbox-exporter";
const DEBIAN_BINARY: &str = "/usr/bin/prometheus-blackbox-exporter";
/// Names the exporter goes by on a `PATH` (the Debian one, upstream's release archives).
const NAMES: [&str; 2] = ["prometheus-blackbox-exporter", "blackbox_exporter"];

/// How long the exporter may take to answer its first probe of each module.
const START_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Http,
    Https,
}

impl Protocol {
    fn module(self) -> &'static str {
        match self {
            Protocol::Http => "http_2xx",
            Protocol::Https => "https_2xx",
        }
    }
}

/// One side's tally over its slices.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    first_failure: Option<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    fn per_s(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    if !args.seconds.is_finite() || args.seconds <= 0.0 || args.concurrency == 0 || args.rounds == 0 {
        bail!("--seconds, --concurrency and --rounds must be positive");
    }
    let load_avg_start = load_average()?;
    let binary = locate_exporter(args.exporter.as_deref()).await?;
    let (_targets, addrs) = spawn_child(8).await?;
    let dir = ScratchDir::create()?;
    let mut exporter = Exporter::start(&binary, &dir.0, &addrs).await?;
    let version = exporter_version(&binary).await;
    eprintln!("blackbox_exporter {version} at {} ({})", exporter.addr, binary.display());

    let slice = Duration::from_secs_f64(args.seconds / f64::from(args.rounds));
    let mut rates = serde_json::Map::new();
    for protocol in [Protocol::Http, Protocol::Https] {
        let urls = target_urls(&addrs, protocol);
        exporter.ready(protocol, &urls[0]).await?;
        let (mut agent, mut blackbox) = (Tally::default(), Tally::default());
        for round in 1..=args.rounds {
            eprintln!("{protocol:?} round {round}/{}: agent for {slice:?}", args.rounds);
            agent.add(agent_slice(&urls, &addrs, args.concurrency, slice).await?);
            eprintln!("{protocol:?} round {round}/{}: blackbox_exporter for {slice:?}", args.rounds);
            blackbox.add(exporter.load(protocol, &urls, args.concurrency, slice).await?);
        }
        for (side, tally) in [("agent", &agent), ("blackbox", &blackbox)] {
            if let Some(failure) = &tally.first_failure {
                eprintln!("{side} {protocol:?}: {} probes failed; first: {failure}", tally.failed);
            }
        }
        let name = match protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
        };
        let (a, b) = (agent.per_s(), blackbox.per_s());
        rates.insert(format!("agent_{name}_per_s"), json!(a.round()));
        rates.insert(format!("blackbox_{name}_per_s"), json!(b.round()));
        rates.insert(
            format!("{name}_ratio"),
            json!(if b > 0.0 { (a / b * 100.0).round() / 100.0 } else { 0.0 }),
        );
        rates.insert(format!("agent_{name}_errors"), json!(agent.failed));
        rates.insert(format!("blackbox_{name}_errors"), json!(blackbox.failed));
    }
    let mut result = json!({
        "scenario": "probe-compare",
        "seconds": args.seconds,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "load_avg_start": load_avg_start,
        "load_avg_end": load_average()?,
        "blackbox_exporter_version": version,
    });
    result.as_object_mut().expect("an object").extend(rates);
    Ok(result)
}

fn target_urls(addrs: &TargetAddrs, protocol: Protocol) -> Vec<String> {
    match protocol {
        Protocol::Http => addrs.http.iter().map(|a| format!("http://{a}/ok")).collect(),
        Protocol::Https => addrs.https.iter().map(|a| format!("https://{a}/ok")).collect(),
    }
}

/// The agent's scheduler and prober at saturation for one slice.
async fn agent_slice(
    urls: &[String],
    addrs: &TargetAddrs,
    concurrency: usize,
    slice: Duration,
) -> anyhow::Result<Tally> {
    let domains = probing::domains(probing::SATURATING_DOMAINS, 1, urls);
    let run = probing::run_scheduler(domains, probing::settings(addrs)?, concurrency, slice).await?;
    Ok(Tally {
        ok: run.done - run.errors,
        failed: run.errors,
        elapsed: run.elapsed,
        first_failure: run.first_error,
    })
}

/// The machine's 1, 5 and 15 minute load averages.
fn load_average() -> anyhow::Result<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || fields.next().and_then(Result::ok).context("unexpected /proc/loadavg");
    Ok([next()?, next()?, next()?])
}

/// `--exporter`, else the Debian package's binary, else one on the `PATH`; when there is none,
/// installs the Debian package.
async fn locate_exporter(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--exporter {}: no such file", path.display());
        }
        return Ok(path.to_owned());
    }
    if let Some(found) = find_exporter() {
        return Ok(found);
    }
    eprintln!("blackbox_exporter not found: installing it with `apt-get install -y {PACKAGE}`");
    // apt-get's progress goes to stderr with ours: stdout ends with the RESULT line.
    let progress = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned()?;
    let installed = tokio::process::Command::new("apt-get")
        .args(["install", "-y", "-o", "DPkg::Lock::Timeout=300", PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(progress)
        .status()
        .await;
    match installed {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("apt-get install {PACKAGE} failed ({status})"),
        Err(error) => eprintln!("apt-get could not be run: {error}"),
    }
    find_exporter().with_context(|| {
        format!(
            "probe-compare needs Prometheus' blackbox_exporter and could not install it: install the \
             Debian package {PACKAGE} (as root: `apt-get update && apt-get install -y {PACKAGE}`), or \
             pass --exporter <path to a blackbox_exporter binary>"
        )
    })
}

fn find_exporter() -> Option<PathBuf> {
    let debian = PathBuf::from(DEBIAN_BINARY);
    if debian.is_file() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| NAMES.map(|name| dir.join(name))).find(|p| p.is_file())
}

async fn exporter_version(binary: &Path) -> String {
    let output = tokio::process::Command::new(binary).arg("--version").output().await;
    let Ok(output) = output else { return "unknown".into() };
    // The version line goes to stderr (kingpin), to stdout in newer releases.
    let text = [output.stdout, output.stderr].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .and_then(|line| line.split("version ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("unknown")
        .to_owned()
}

/// A directory for the run's files (configuration, CA, the exporter's log), removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("crosscheck-probe-compare-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The exporter's `blackbox.yml`: the two modules, the HTTPS one trusting `ca_file`. Both check
/// what the agent's probes check: a 2xx status and `ok` in the body.
fn blackbox_config(ca_file: &Path) -> String {
    format!(
        "modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      method: GET
      preferred_ip_protocol: ip4
      fail_if_body_not_matches_regexp: [\"ok\"]
  https_2xx:
    prober: http
    timeout: 5s
    http:
      method: GET
      preferred_ip_protocol: ip4
      fail_if_not_ssl: true
      fail_if_body_not_matches_regexp: [\"ok\"]
      tls_config:
        ca_file: {}
",
        serde_json::to_string(&ca_file.display().to_string()).expect("a string")
    )
}

/// A running blackbox_exporter on loopback, killed on drop.
struct Exporter {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Exporter {
    async fn start(binary: &Path, dir: &Path, addrs: &TargetAddrs) -> anyhow::Result<Self> {
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &addrs.ca_pem).context("writing the CA file")?;
        let config = dir.join("blackbox.yml");
        std::fs::write(&config, blackbox_config(&ca_file)).context("writing blackbox.yml")?;
        // A free port: bound, read and released just before the exporter binds it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = dir.join("exporter.log");
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, addr, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the exporter answers a successful probe of `module` (its configuration
    /// loaded, the CA trusted); on failure says what the exporter logged.
    async fn ready(&mut self, protocol: Protocol, target: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("blackbox_exporter exited ({status}) before answering:\n{}", self.log_text());
            }
            match self.ask(&probe_path(protocol, target, true)).await {
                Ok((200, body)) if body.contains("\nprobe_success 1") => return Ok(()),
                Ok((status, body)) => last = format!("status {status}:\n{body}"),
                Err(error) => last = shared::error::Chain(&*error).to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "blackbox_exporter did not probe {target} successfully within {START_DEADLINE:?}; last answer: \
             {last}\nits log:\n{}",
            self.log_text()
        )
    }

    /// One request on a new connection: (status, body).
    async fn ask(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut connection = Connection::open(self.addr).await?;
        let (status, body) = connection.get(self.addr, path).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `concurrency` scrapers for `slice`, each on its own keep-alive connection, spread over
    /// the targets.
    async fn load(
        &self,
        protocol: Protocol,
        urls: &[String],
        concurrency: usize,
        slice: Duration,
    ) -> anyhow::Result<Tally> {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(Mutex::new(None::<String>));
        let started = Instant::now();
        let deadline = started + slice;
        let mut tasks = Vec::with_capacity(concurrency);
        for i in 0..concurrency {
            let path = probe_path(protocol, &urls[i % urls.len()], false);
            let (addr, ok, failed, first_failure) =
                (self.addr, ok.clone(), failed.clone(), first_failure.clone());
            tasks.push(tokio::spawn(async move {
                let mut connection = None;
                while Instant::now() < deadline {
                    let open = match connection.take() {
                        Some(open) => open,
                        None => match Connection::open(addr).await {
                            Ok(open) => open,
                            Err(error) => {
                                note_failure(
                                    &failed,
                                    &first_failure,
                                    format!("connecting to the exporter: {}", shared::error::Chain(&*error)),
                                );
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    let mut open = open;
                    let answer = open.get(addr, &path).await;
                    // Answers after the deadline are not counted: the slice is over.
                    if Instant::now() >= deadline {
                        break;
                    }
                    match answer {
                        Ok((200, body)) if contains(&body, b"\nprobe_success 1") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            connection = Some(open);
                        }
                        Ok((status, body)) => {
                            let body = String::from_utf8_lossy(&body);
                            note_failure(&failed, &first_failure, format!("status {status}: {body}"));
                            connection = Some(open);
                        }
                        Err(error) => {
                            note_failure(&failed, &first_failure, shared::error::Chain(&*error).to_string())
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        let first_failure = first_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        Ok(Tally {
            ok: ok.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            elapsed: slice,
            first_failure,
        })
    }
}

fn note_failure(failed: &AtomicU64, first: &Mutex<Option<String>>, what: String) {
    failed.fetch_add(1, Ordering::Relaxed);
    first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(what);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// `/probe?module=…&target=…` (`debug=true` for the probe's log, used when it fails).
fn probe_path(protocol: Protocol, target: &str, debug: bool) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("module", protocol.module()).append_pair("target", target);
    if debug {
        query.append_pair("debug", "true");
    }
    format!("/probe?{}", query.finish())
}

/// One HTTP/1.1 keep-alive connection to the exporter, as a Prometheus scraper holds.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    async fn get(&mut self, addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let request = hyper::Request::get(path)
            .header("host", addr.to_string())
            .header("user-agent", "Prometheus/2.53.0")
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
            )
            .header("x-prometheus-scrape-timeout-seconds", "10")
            .body(Empty::<Bytes>::new())?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_paths_encode_the_target() {
        assert_eq!(
            probe_path(Protocol::Https, "https://127.0.0.1:8443/ok", false),
            "/probe?module=https_2xx&target=https%3A%2F%2F127.0.0.1%3A8443%2Fok"
        );
        assert!(probe_path(Protocol::Http, "http://a/", true).ends_with("&debug=true"));
    }

    #[test]
    fn the_configuration_names_the_ca_file() {
        let config = blackbox_config(Path::new("/tmp/x y/ca.pem"));
        assert!(config.contains("ca_file: \"/tmp/x y/ca.pem\""), "{config}");
        assert!(config.contains("  http_2xx:\n") && config.contains("  https_2xx:\n"), "{config}");
    }

    #[test]
    fn rates_are_over_measured_time() {
        let mut tally = Tally { ok: 10, elapsed: Duration::from_secs(1), ..Tally::default() };
        tally.add(Tally {
            ok: 30,
            failed: 1,
            elapsed: Duration::from_secs(1),
            first_failure: Some("x".into()),
        });
        assert_eq!((tally.per_s(), tally.failed, tally.first_failure.as_deref()), (20.0, 1, Some("x")));
        assert_eq!(Tally::default().per_s(), 0.0);
    }
}
