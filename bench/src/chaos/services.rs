//! The private services a chaos run kills and restarts: a PostgreSQL cluster of its own (the
//! time-series database), a TCP proxy in front of the control-plane replicas, and child
//! processes (control-plane replicas and probe agents, both this binary's hidden subcommands).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether this process runs as root (`initdb` refuses to: the cluster then runs as `postgres`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("Uid:").and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
            })
        })
        .is_some_and(|uid| uid == "0")
}

/// A PostgreSQL 15 cluster of this run: its own data directory in a temporary directory, trust
/// authentication, listening on 127.0.0.1 at a free port. `kill` is an immediate stop (no
/// checkpoint, crash recovery at the next start), `start` brings it back on the same port.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

impl Postgres {
    /// Creates the cluster (`initdb`) and starts it.
    pub async fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("crosscheck-chaos-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir), "chown of the cluster directory").await?;
        }
        let mut pg = Self { dir, port: shared::testing::free_port(), as_postgres, running: false };
        let data = pg.data();
        run(
            pg.command("initdb")
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "-D"])
                .arg(&data),
            "initdb",
        )
        .await?;
        pg.start().await?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A PostgreSQL program, run as `postgres` when this process is root.
    fn command(&self, program: &str) -> Command {
        let path = Path::new(PG_BIN).join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.stdin(Stdio::null());
        command
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the server and waits until it accepts connections (crash recovery included).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .args(["-w", "-t", "120", "-o", &options, "start"]),
            "pg_ctl start",
        )
        .await?;
        self.running = true;
        Ok(())
    }

    /// Immediate stop: every backend ends at once, nothing is flushed (what a crash does to
    /// the server's clients).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        run(
            self.command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop -m immediate",
        )
        .await?;
        self.running = false;
        Ok(())
    }

    /// The server's log (for a failure message).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let path = Path::new(PG_BIN).join("pg_ctl");
            let mut command = if self.as_postgres {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(path);
                command
            } else {
                std::process::Command::new(path)
            };
            let _ = command
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `command` to completion; an error carries its output.
async fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().await.with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A TCP proxy on 127.0.0.1: each connection goes to the next backend in turn that accepts it,
/// and ends when either side does (a killed backend closes its clients, which reconnect
/// through the proxy to a live one). TLS passes through untouched.
pub struct Proxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        anyhow::ensure!(!backends.is_empty(), "a proxy needs at least one backend");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let first = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(forward(client, backends.clone(), first));
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, backends: Arc<Vec<SocketAddr>>, first: usize) {
    let _ = client.set_nodelay(true);
    for k in 0..backends.len() {
        let backend = backends[(first + k) % backends.len()];
        if let Ok(Ok(mut upstream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(backend)).await
        {
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            return;
        }
    }
    // No backend accepts: dropping the client closes it, and it retries.
}

/// A child process of this binary (`subcommand`) configured by `env`, its output in `log`, and
/// the ports it was told to listen on.
pub struct Process {
    pub name: String,
    subcommand: &'static str,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    pub fn new(name: &str, subcommand: &'static str, env: Vec<(String, String)>, log: PathBuf) -> Self {
        Self { name: name.into(), subcommand, env, log, child: None }
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg(self.subcommand)
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and waits for the exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().with_context(|| format!("killing {}", self.name))?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM (the graceful stop: an agent flushes what it holds), and waits up to `timeout`
    /// for the exit; then SIGKILL.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        if let Some(pid) = child.id() {
            let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await?;
            anyhow::ensure!(status.success(), "kill -TERM {pid} ({}) failed", self.name);
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?.success()),
            Err(_) => {
                child.start_kill()?;
                child.wait().await?;
                Ok(false)
            }
        }
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}
