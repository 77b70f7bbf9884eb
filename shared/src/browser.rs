//! Headless Chromium for the browser tests and the README's screenshots: Debian's `chromium`
//! driven through `chromedriver` (WebDriver, [`fantoccini`]) on a free port of 127.0.0.1.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// What to say when a binary is missing.
pub const INSTALL_HINT: &str =
    "the browser tests and screenshots need Debian's `chromium` and `chromium-driver` \
     packages (`apt-get install chromium chromium-driver`; `.ci/run` installs them when missing)";

/// The arguments every session gets; callers add theirs (window size, colour profile).
const BASE_ARGS: [&str; 5] =
    ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"];

/// `name` on the `PATH`, or at one of Debian's `paths`.
///
/// # Errors
/// Neither has it: the error names the binary and says how to install it.
pub fn find(name: &str, debian: &[&str]) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(debian.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not installed: {INSTALL_HINT}"))
}

/// A Chromium session and the `chromedriver` serving it. The driver runs in its own process
/// group, so dropping this ends the driver and every browser process it started.
pub struct Chromium {
    pub client: Client,
    driver: tokio::process::Child,
}

impl Chromium {
    /// Starts `chromedriver` on a free port and opens a session with `args` added to the
    /// headless defaults, waiting up to `wait` for the driver to answer.
    ///
    /// # Errors
    /// A binary is missing, the driver cannot start, or no session opened within `wait`.
    pub async fn start(args: &[&str], wait: Duration) -> anyhow::Result<Self> {
        let chromedriver =
            find("chromedriver", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?;
        let chromium = find("chromium", &["/usr/bin/chromium", "/usr/lib/chromium/chromium"])?;
        let port = crate::testing::free_port();
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let mut all_args: Vec<&str> = BASE_ARGS.to_vec();
        all_args.extend_from_slice(args);
        let Value::Object(capabilities) = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": all_args },
        }) else {
            unreachable!("a JSON object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + wait;
        let client = connect(&url, &capabilities, deadline).await?;
        Ok(Self { client, driver })
    }
}

async fn connect(
    url: &str,
    capabilities: &serde_json::Map<String, Value>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Client> {
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(url).await {
            Ok(client) => return Ok(client),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "chromedriver not ready yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("opening a Chromium session through {url}"))
            }
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The whole group: the driver and the browser processes it started. A system call,
        // not `kill -TERM -<pid>` through procps' kill, which here ended far more than the group.
        let group =
            self.driver.id().and_then(|pid| i32::try_from(pid).ok()).and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            if let Err(error) = rustix::process::kill_process_group(group, rustix::process::Signal::TERM) {
                tracing::debug!(%error, "ending chromedriver's process group");
            }
        }
    }
}
