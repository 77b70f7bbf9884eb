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
