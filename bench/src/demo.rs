//! The demo: starts the real binaries (`control-plane` and three `probe-agent`s named for three
//! regions) as child processes on loopback, against a scratch database and a private Redis
//! prefix, plus local probe targets (healthy, slow, failing, TLS, expired certificate). It
//! creates a tenant, registers the targets, shows every agent's catalog following a create, an
//! update and a delete made through the REST API, and prints each agent's latest results with
//! their timing breakdown. Logs go to `.demo/logs/`. Everything is stopped and the
//! scratch database dropped at the end (`--keep` leaves it all running until ctrl-c).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use shared::testing::free_port;
use tokio::process::{Child, Command};

use crate::env::{redis_url, Scratch, ScratchDb};

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep everything running after the walkthrough, until ctrl-c.
    #[arg(long)]
    keep: bool,
}

struct Agent {
    region: &'static str,
    base: String,
    _child: Child,
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?.parent().context("binary directory")?.to_path_buf();
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found; build the workspace first (cargo build --release)",
        path.display()
    );
    Ok(path)
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let scratch = Scratch::create("demo").await?;
    let result = walkthrough(&args, &scratch.db, &scratch.prefix).await;
    scratch.cleanup().await?;
    result
}

async fn walkthrough(args: &Args, db: &ScratchDb, prefix: &str) -> anyhow::Result<Value> {
    let logs = PathBuf::from(".demo/logs");
    std::fs::create_dir_all(&logs)?;
    let api_port = free_port();
    let control_env = [
        ("CROSSCHECK_DATABASE_URL", db.url.clone()),
        ("CROSSCHECK_REDIS_URL", redis_url()),
        ("CROSSCHECK_REDIS_PREFIX", prefix.to_owned()),
        ("CROSSCHECK_LISTEN", format!("127.0.0.1:{api_port}")),
        ("CROSSCHECK_REGIONS", format!("[{}]", REGIONS.join(","))),
        // The demo's targets live on 127.0.0.1 and probe every few seconds.
        ("CROSSCHECK_ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ("CROSSCHECK_MIN_INTERVAL_S", "2".to_owned()),
    ];

    step("1. create a tenant (control-plane create-tenant)");
    let output = Command::new(binary("control-plane")?)
        .args(["create-tenant", "--name", "demo"])
        .envs(control_env.iter().cloned())
        .stderr(Stdio::null())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "create-tenant failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token="))
        .context("token in create-tenant output")?
        .to_owned();
    println!("   admin token: {}…", &token[..12]);

    let targets = crate::target::start(1).await?;
    let ca_path = std::fs::canonicalize(".demo")?.join("demo-ca.pem");
    std::fs::write(&ca_path, &targets.ca_pem)?;

    step("2. start the control plane and three regional agents");
    let _control = Command::new(binary("control-plane")?)
        .envs(control_env.iter().cloned())
        .stdout(log_file(&logs, "control-plane")?)
        .stderr(log_file(&logs, "control-plane.err")?)
        .kill_on_drop(true)
        .spawn()?;
    let api = format!("http://127.0.0.1:{api_port}");
    wait_ready(&format!("{api}/readyz")).await.context("control plane did not become ready")?;
    println!("   control plane  {api}   (logs in .demo/logs/)");
    let mut agents = Vec::new();
    for region in REGIONS {
        let port = free_port();
        let child = Command::new(binary("probe-agent")?)
            .env("CROSSCHECK_AGENT_REGION", region)
            .env("CROSSCHECK_AGENT_AGENT_ID", format!("{region}-1"))
            .env("CROSSCHECK_AGENT_REDIS_URL", redis_url())
            .env("CROSSCHECK_AGENT_REDIS_PREFIX", prefix)
            .env("CROSSCHECK_AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("CROSSCHECK_AGENT_ALLOW_PRIVATE", "[\"127.0.0.0/8\"]")
            .env("CROSSCHECK_AGENT_EXTRA_ROOTS_PEM", &ca_path)
            .stdout(log_file(&logs, &format!("agent-{region}"))?)
            .stderr(log_file(&logs, &format!("agent-{region}.err"))?)
            .kill_on_drop(true)
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{base}/readyz"))
            .await
            .with_context(|| format!("agent {region} did not become ready"))?;
        println!("   agent {region:<4}     {base}");
        agents.push(Agent { region, base, _child: child });
    }
    show(&agents).await?;

    let http = reqwest::Client::new();
    let web = targets.http[0];
    let tls = targets.https[0];
    step("3. register local targets: healthy, slow, failing, TLS, bad certificate (one in ams only)");
    let mut ids = Vec::new();
    let mut version = 0;
    for body in [
        json!({"url": format!("http://{web}/ok"), "keyword": "ok", "interval": 5}),
        json!({"url": format!("http://{web}/slow"), "interval": 5, "timeout_ms": 3000}),
        json!({"url": format!("http://{web}/fail"), "interval": 5}),
        json!({"url": format!("https://{tls}/ok"), "interval": 5}),
        json!({"url": format!("https://{}/ok", targets.bad_tls), "interval": 5, "regions": ["ams"]}),
    ] {
        let (created, t) = call(&http, "POST", &format!("{api}/v1/domains"), &token, body).await?;
        version = created["config_version"].as_u64().unwrap_or(0);
        follow(&agents, version, t).await?;
        ids.push(created["id"].as_str().context("id")?.to_owned());
    }
    show(&agents).await?;

    step("4. update: probe the healthy target every 3 s");
    let (updated, t) =
        call(&http, "PATCH", &format!("{api}/v1/domains/{}", ids[0]), &token, json!({"interval": 3})).await?;
    version = updated["config_version"].as_u64().unwrap_or(version);
    follow(&agents, version, t).await?;
    show(&agents).await?;

    step("5. every agent probes on its own schedule; their latest results (times in ms)");
    wait_for_results(&agents, 5).await?;
    results_table(&agents).await?;

    step("6. delete the failing target");
    let started = Instant::now();
    let response = http.delete(format!("{api}/v1/domains/{}", ids[2])).bearer_auth(&token).send().await?;
    anyhow::ensure!(response.status().is_success(), "delete failed: {}", response.status());
    println!("   DELETE /v1/domains/{} -> {}", ids[2], response.status());
    follow(&agents, version + 1, started).await?;
    show(&agents).await?;

    step("7. a bad request is refused with every problem named");
    let response = http
        .post(format!("{api}/v1/domains"))
        .bearer_auth(&token)
        .json(&json!({"url": "ftp://files.example.com/", "interval": 1, "colour": "blue"}))
        .send()
        .await?;
    println!("   POST /v1/domains -> {}\n   {}", response.status(), response.text().await?);

    if args.keep {
        step("running; try the API with the token above. ctrl-c stops everything");
        println!("   curl -H 'authorization: Bearer {token}' {api}/v1/domains");
        shared::shutdown::signal().await;
    }
    Ok(json!({"scenario": "demo", "agents": agents.len(), "ok": true}))
}

fn step(title: &str) {
    println!("\n== {title}");
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} not ready after 30 s")
}

async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Value,
) -> anyhow::Result<(Value, Instant)> {
    let request = match method {
        "POST" => http.post(url),
        _ => http.patch(url),
    };
    let response = request.bearer_auth(token).json(&body).send().await?;
    let status = response.status();
    let answered = Instant::now();
    let value: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{method} {url} -> {status}: {value}");
    println!(
        "   {method} {} {} -> {status} (config version {})",
        url.trim_start_matches("http://"),
        body,
        value["config_version"]
    );
    Ok((value, answered))
}

async fn catalog(agent: &Agent) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{}/debug/catalog", agent.base)).await?.json().await?)
}

/// Waits until every agent's catalog reaches `version` and prints when each did.
async fn follow(agents: &[Agent], version: u64, since: Instant) -> anyhow::Result<()> {
    let mut line = String::from("   applied by");
    for agent in agents {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = catalog(agent).await?;
            if c["version"].as_u64().unwrap_or(0) >= version {
                line.push_str(&format!(
                    "  {} after {:.1} ms",
                    agent.region,
                    since.elapsed().as_secs_f64() * 1000.0
                ));
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "agent {} never reached version {version}",
                agent.region
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    println!("{line}");
    Ok(())
}

/// Waits until every agent has a result for each domain in its catalog (at least `min` in all).
async fn wait_for_results(agents: &[Agent], min: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for agent in agents {
        loop {
            let c = catalog(agent).await?;
            let wanted = c["domains"].as_array().map_or(0, Vec::len);
            let r: Value = reqwest::get(format!("{}/debug/results", agent.base)).await?.json().await?;
            let have = r["results"].as_array().map_or(0, Vec::len);
            if have >= wanted && have + 1 >= min.min(wanted + 1) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "agent {} has {have} of {wanted} results",
                agent.region
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn ms(value: &Value) -> String {
    value.as_f64().map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

async fn results_table(agents: &[Agent]) -> anyhow::Result<()> {
    println!(
        "   {:<4} {:<32} {:<15} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8}  certificate",
        "", "url", "outcome", "status", "dns", "connect", "tls", "ttfb", "total"
    );
    for agent in agents {
        let c = catalog(agent).await?;
        let urls: std::collections::HashMap<String, String> = c["domains"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .map(|d| {
                        (
                            d["id"].as_str().unwrap_or("").to_owned(),
                            d["url"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let r: Value = reqwest::get(format!("{}/debug/results", agent.base)).await?.json().await?;
        for result in r["results"].as_array().into_iter().flatten() {
            let report = &result["report"];
            let url = urls.get(result["domain_id"].as_str().unwrap_or("")).cloned().unwrap_or_default();
            let outcome = report["error"].as_str().unwrap_or("ok");
            let cert = match report["certificate"].as_object() {
                Some(cert) => format!(
                    "{} days left, {}",
                    cert.get("days_remaining").and_then(Value::as_i64).unwrap_or_default(),
                    cert.get("validation_error").and_then(Value::as_str).unwrap_or("valid")
                ),
                None => String::new(),
            };
            let t = &report["timings"];
            println!(
                "   {:<4} {:<32} {:<15} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8}  {}",
                agent.region,
                url.trim_start_matches("http://").trim_start_matches("https://"),
                outcome,
                report["status"].as_u64().map_or_else(|| "-".to_owned(), |s| s.to_string()),
                ms(&t["dns_ms"]),
                ms(&t["connect_ms"]),
                ms(&t["tls_ms"]),
                ms(&t["ttfb_ms"]),
                ms(&t["total_ms"]),
                cert
            );
        }
    }
    Ok(())
}

async fn show(agents: &[Agent]) -> anyhow::Result<()> {
    for agent in agents {
        let c = catalog(agent).await?;
        let domains: Vec<String> = c["domains"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .map(|d| format!("{} every {}s", d["url"].as_str().unwrap_or("?"), d["interval_s"]))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "   [{}] version {:<3} {} domain(s){}{}",
            agent.region,
            c["version"],
            domains.len(),
            if domains.is_empty() { "" } else { ": " },
            domains.join(", ")
        );
    }
    Ok(())
}
