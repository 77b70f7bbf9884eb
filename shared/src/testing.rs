//! Helpers for tests and benchmarks (feature `testing`): poll a condition with a deadline
//! instead of sleeping, private Redis prefixes, and a private `redis-server` on a free port for
//! tests that stop or restart Redis (the shared server is never stopped or flushed).

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;

/// Polls `check` every few milliseconds until it returns `Some`, or panics with `what` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Redis key prefix no other test uses.
pub fn random_prefix(label: &str) -> String {
    format!("cctest:{label}:{}", uuid::Uuid::new_v4().simple())
}

/// Deletes every key under `prefix` (never FLUSHALL: other tests share the server).
pub async fn delete_prefix(client: &Client, prefix: &str) -> Result<(), fred::error::Error> {
    let pattern = crate::RedisKeys::new(prefix).pattern();
    let mut cursor = "0".to_owned();
    loop {
        let (next, keys): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), pattern.clone(), "COUNT".into(), "1000".into()],
            )
            .await?;
        if !keys.is_empty() {
            let _: () = client.del(keys).await?;
        }
        if next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A private `redis-server` on a free loopback port, killed on drop. It persists nothing, so a
/// restart comes back empty, like a Redis that lost its data.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("crosscheck-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir for redis");
        let mut server = Self { port: free_port(), dir, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed to run this test");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), "private redis-server to accept connections", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
        })
        .await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A domain configuration for tests: GET, 2xx expected, no keyword, every region, pointing at a
/// documentation address (192.0.2.1) that the SSRF guard refuses, so an agent that happens to
/// probe it sends nothing.
pub fn sample_domain(interval_s: u32, version: u64) -> crate::DomainConfig {
    crate::DomainConfig {
        id: crate::DomainId::new(),
        url: format!("https://192.0.2.1/{version}"),
        request: crate::RequestConfig::default(),
        check: crate::CheckConfig::Http,
        json_check: None,
        expected_status: crate::StatusRange::SUCCESS,
        keyword: None,
        interval_s,
        timeout_ms: 1000,
        regions: Vec::new(),
        paused: false,
        tls_verify: true,
        http_version: crate::HttpVersion::Auto,
        agents_per_region: crate::domain::DEFAULT_AGENTS_PER_REGION,
        version,
    }
}

/// A Redis deployment behind Redis Sentinel for failover tests: one primary, one replica and
/// three sentinels (quorum 2), each a child process on a free loopback port with a directory of
/// its own under one temporary directory. Every process is killed on drop.
///
/// Sentinels run as `redis-server <conf> --sentinel` (the `redis-sentinel` binary is the same
/// program), with short timeouts: a primary is down after 1 s without answers, and a failover
/// may start 2 × 3 s after the previous one.
pub struct SentinelSet {
    dir: PathBuf,
    service: String,
    nodes: Vec<Process>,
    sentinels: Vec<Process>,
}

struct Process {
    port: u16,
    child: Option<Child>,
}

impl Process {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One RESP2 reply, as [`SentinelSet::command`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR …`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$n` and its bytes (lossy UTF-8); `None` for the null bulk string.
    Bulk(Option<String>),
    /// `*n` and its items.
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Status(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// A flat array of field/value pairs (`SENTINEL MASTER`) or an array of them
    /// (`SENTINEL REPLICAS`), as maps.
    pub fn maps(&self) -> Vec<std::collections::HashMap<String, String>> {
        let pairs = |items: &[Reply]| {
            items
                .chunks(2)
                .filter_map(|kv| Some((kv.first()?.text()?.to_owned(), kv.get(1)?.text()?.to_owned())))
                .collect()
        };
        match self {
            Reply::Array(items) if items.iter().all(|i| matches!(i, Reply::Array(_))) => items
                .iter()
                .map(|i| match i {
                    Reply::Array(inner) => pairs(inner),
                    _ => unreachable!(),
                })
                .collect(),
            Reply::Array(items) => vec![pairs(items)],
            _ => Vec::new(),
        }
    }
}

fn read_reply(reader: &mut impl std::io::BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(rest.parse().map_err(|_| bad())?),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; len as usize + 2];
                reader.read_exact(&mut buf)?;
                buf.truncate(len as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                items.push(read_reply(reader)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}

fn spawn_redis(args: &[String]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed to run this test")
}

impl SentinelSet {
    /// Starts the primary and its replica, waits until the replica is in sync, then starts the
    /// sentinels and waits until each one knows the replica and the two other sentinels.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("crosscheck-sentinel-{}", uuid::Uuid::new_v4().simple()));
        let service = "crosscheck".to_owned();
        let mut set = Self { dir, service, nodes: Vec::new(), sentinels: Vec::new() };
        let primary = free_port();
        for (i, port) in [primary, free_port()].into_iter().enumerate() {
            let node_dir = set.dir.join(format!("node-{port}"));
            std::fs::create_dir_all(&node_dir).expect("temp dir for redis");
            let mut args: Vec<String> =
                ["--port", &port.to_string(), "--bind", "127.0.0.1"].into_iter().map(str::to_owned).collect();
            args.extend(["--save", "", "--appendonly", "no", "--dir"].map(str::to_owned));
            args.push(node_dir.display().to_string());
            if i > 0 {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), primary.to_string()]);
            }
            set.nodes.push(Process { port, child: Some(spawn_redis(&args)) });
        }
        let replica = set.nodes[1].port;
        set.wait_replicating(replica, primary).await;
        for _ in 0..3 {
            let port = free_port();
            let sentinel_dir = set.dir.join(format!("sentinel-{port}"));
            std::fs::create_dir_all(&sentinel_dir).expect("temp dir for sentinel");
            let conf = sentinel_dir.join("sentinel.conf");
            let name = &set.service;
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 3000\n\
                     sentinel parallel-syncs {name} 1\n",
                    sentinel_dir.display()
                ),
            )
            .expect("write sentinel.conf");
            let args = vec![conf.display().to_string(), "--sentinel".to_owned()];
            set.sentinels.push(Process { port, child: Some(spawn_redis(&args)) });
        }
        let this = &set;
        for port in set.sentinel_ports() {
            eventually(
                Duration::from_secs(60),
                "each sentinel to know the replica and the other sentinels",
                || async move {
                    let master = this.command(port, &["SENTINEL", "MASTER", &this.service]).await.ok()?;
                    let master = master.maps().pop()?;
                    let replicas = master.get("num-slaves")?.parse::<u32>().ok()?;
                    let others = master.get("num-other-sentinels")?.parse::<u32>().ok()?;
                    (replicas >= 1 && others >= 2).then_some(())
                },
            )
            .await;
        }
        set
    }

    /// The URL the binaries are configured with: every sentinel, comma-separated.
    pub fn url(&self) -> String {
        let addresses: Vec<String> =
            self.sentinel_ports().into_iter().map(|port| format!("127.0.0.1:{port}")).collect();
        format!("redis-sentinel://{}/0?sentinelServiceName={}", addresses.join(","), self.service)
    }

    fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// Sends one command to the Redis or Sentinel on `port` over a fresh connection (plain RESP:
    /// a sentinel answers only a few commands, fewer than a client library's handshake sends).
    pub async fn command(&self, port: u16, args: &[&str]) -> std::io::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            (&stream).write_all(request.as_bytes())?;
            read_reply(&mut std::io::BufReader::new(&stream))
        })
        .await
        .expect("blocking task")
    }

    /// The primary's port as the sentinels name it now (the first sentinel that answers).
    pub async fn primary_port(&self) -> Option<u16> {
        for port in self.sentinel_ports() {
            let Ok(Reply::Array(addr)) =
                self.command(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.service]).await
            else {
                continue;
            };
            if let Some(port) = addr.get(1).and_then(Reply::text).and_then(|p| p.parse().ok()) {
                return Some(port);
            }
        }
        None
    }

    /// Waits until every live sentinel names a primary other than `old`, and returns its port.
    pub async fn wait_new_primary(&self, old: u16) -> u16 {
        eventually(Duration::from_secs(60), "the sentinels to name a new primary", || async move {
            let mut named = None;
            for port in self.sentinel_ports() {
                let reply = self.command(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.service]).await;
                let Ok(Reply::Array(addr)) = reply else { return None };
                let primary: u16 = addr.get(1).and_then(Reply::text)?.parse().ok()?;
                if primary == old || named.is_some_and(|n| n != primary) {
                    return None;
                }
                named = Some(primary);
            }
            named
        })
        .await
    }

    /// Asks a sentinel for a failover (`SENTINEL FAILOVER`, no agreement needed), retrying while
    /// it has no replica it considers good yet; returns the new primary's port once every
    /// sentinel names it. The old primary keeps taking writes until Sentinel demotes it.
    pub async fn failover(&self) -> u16 {
        let old = self.primary_port().await.expect("a primary before the failover");
        let sentinel = self.sentinel_ports()[0];
        eventually(Duration::from_secs(60), "a sentinel to accept SENTINEL FAILOVER", || async move {
            let reply = self.command(sentinel, &["SENTINEL", "FAILOVER", &self.service]).await.ok()?;
            (reply.text() == Some("OK")).then_some(())
        })
        .await;
        self.wait_new_primary(old).await
    }

    /// Waits until the node on `port` is a replica of `primary` with its link up.
    pub async fn wait_replicating(&self, port: u16, primary: u16) {
        let wanted = format!("master_port:{primary}");
        eventually(Duration::from_secs(60), "a replica in sync with its primary", || {
            let wanted = wanted.clone();
            async move {
                let info = self.command(port, &["INFO", "replication"]).await.ok()?;
                let info = info.text()?.to_owned();
                (info.contains("role:slave")
                    && info.lines().any(|l| l.trim() == wanted)
                    && info.contains("master_link_status:up"))
                .then_some(())
            }
        })
        .await;
    }

    /// Waits until every sentinel lists the node on `port` as a healthy replica (a candidate
    /// for the next failover).
    pub async fn wait_known_replica(&self, port: u16) {
        let port_text = port.to_string();
        eventually(Duration::from_secs(60), "the sentinels to list a healthy replica", || {
            let port_text = port_text.clone();
            async move {
                for sentinel in self.sentinel_ports() {
                    let reply =
                        self.command(sentinel, &["SENTINEL", "REPLICAS", &self.service]).await.ok()?;
                    let healthy = reply.maps().iter().any(|r| {
                        r.get("port") == Some(&port_text)
                            && r.get("flags").map(String::as_str) == Some("slave")
                            && r.get("master-link-status").map(String::as_str) == Some("ok")
                    });
                    if !healthy {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
    }

    /// The data nodes' ports (primary and replica, in start order).
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Kills the data node on `port` (SIGKILL), as a crashed primary.
    pub fn kill_node(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for process in self.sentinels.iter_mut().chain(self.nodes.iter_mut()) {
            process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
