//! The demo: starts the real binaries (`control-plane` and three `probe-agent`s named for three
//! regions) as child processes on loopback, against a scratch database and a private Redis
//! prefix, creates a tenant, and shows every agent's catalog following a create, an update and a
//! delete made through the REST API. Logs go to `.demo/logs/`. Everything is stopped and the
//! scratch database dropped at the end (`--keep` leaves it all running until ctrl-c).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use shared::testing::{delete_prefix, free_port, random_prefix};
use tokio::process::{Child, Command};

use crate::env::{redis_client, redis_url, ScratchDb};

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
    let db = ScratchDb::create("demo").await?;
    let prefix = random_prefix("demo");
    let result = walkthrough(&args, &db, &prefix).await;
    let redis = redis_client().await?;
    delete_prefix(&redis, &prefix).await?;
    db.drop_now().await?;
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
    step("3. create two domains: one for every region, one for ams only");
    let (everywhere, t) = call(
        &http,
        "POST",
        &format!("{api}/v1/domains"),
        &token,
        json!({"url": "https://status.example.com/health", "keyword": "ok"}),
    )
    .await?;
    follow(&agents, everywhere["config_version"].as_u64().unwrap_or(0), t).await?;
    let (ams_only, t) = call(
        &http,
        "POST",
        &format!("{api}/v1/domains"),
        &token,
        json!({"url": "https://shop.example.com/", "regions": ["ams"], "interval": "fast"}),
    )
    .await?;
    follow(&agents, ams_only["config_version"].as_u64().unwrap_or(0), t).await?;
    show(&agents).await?;

    step("4. update: probe status.example.com every 15 s");
    let id = everywhere["id"].as_str().context("id")?;
    let (updated, t) =
        call(&http, "PATCH", &format!("{api}/v1/domains/{id}"), &token, json!({"interval": 15})).await?;
    follow(&agents, updated["config_version"].as_u64().unwrap_or(0), t).await?;
    show(&agents).await?;

    step("5. delete shop.example.com");
    let id = ams_only["id"].as_str().context("id")?;
    let started = Instant::now();
    let response = http.delete(format!("{api}/v1/domains/{id}")).bearer_auth(&token).send().await?;
    anyhow::ensure!(response.status().is_success(), "delete failed: {}", response.status());
    println!("   DELETE /v1/domains/{id} -> {}", response.status());
    follow(&agents, updated["config_version"].as_u64().unwrap_or(0) + 1, started).await?;
    show(&agents).await?;

    step("6. a bad request is refused with every problem named");
    let response = http
        .post(format!("{api}/v1/domains"))
        .bearer_auth(&token)
        .json(&json!({"url": "http://10.0.0.1/", "interval": 1, "colour": "blue"}))
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
