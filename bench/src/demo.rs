//! The demo: starts the real binaries (`control-plane` and three `probe-agent`s named for three
//! regions) as child processes on loopback, against scratch databases (transactional and
//! time-series) and a private Redis prefix, plus local probe targets (healthy, slow, failing,
//! TLS, expired certificate). It issues the certificates with the `certs` tool, creates a
//! tenant, registers the targets, shows every agent's catalog following a create, an update and
//! a delete made through the REST API, prints each agent's latest results with their timing
//! breakdown, then shows the results arriving over mutual TLS: agents per region, and uptime
//! and latency percentiles read back through the API. Logs go to `.demo/logs/`. Everything is
//! stopped and the scratch databases dropped at the end (`--keep` leaves it all running until
//! ctrl-c).

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
    /// After the walkthrough, take screenshots of the console and the status page with
    /// headless Chromium (Debian's `chromium` and `chromium-driver`) into this directory
    /// (the README's images: `--screenshots docs/screenshots`).
    #[arg(long, value_name = "DIR")]
    screenshots: Option<PathBuf>,
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
        "{} not found; build the binaries first (cargo build --bins, or ./demo.sh)",
        path.display()
    );
    Ok(path)
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let scratch = Scratch::create("demo").await?;
    let result = walkthrough(&args, &scratch.db, &scratch.timeseries, &scratch.prefix).await;
    scratch.cleanup().await?;
    result
}

/// Runs the `certs` tool with `args`, printing the command and its output.
async fn certs(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(binary("certs")?).arg("--out").arg(dir).args(args).output().await?;
    anyhow::ensure!(
        output.status.success(),
        "certs {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "   certs {}  ->  {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("")
    );
    Ok(())
}

async fn walkthrough(args: &Args, db: &ScratchDb, ts: &ScratchDb, prefix: &str) -> anyhow::Result<Value> {
    let logs = PathBuf::from(".demo/logs");
    std::fs::create_dir_all(&logs)?;
    let pki = std::fs::canonicalize(".demo")?.join("certs");
    let _ = std::fs::remove_dir_all(&pki);

    step("0. certificates: a CA, the control plane's server certificate, one client certificate per region");
    certs(&pki, &["ca", "--name", "Crosscheck demo CA"]).await?;
    certs(&pki, &["server", "--dns", "localhost", "--ip", "127.0.0.1"]).await?;
    for region in REGIONS {
        certs(&pki, &["agent", "--region", region, "--agent-id", &format!("{region}-1"), "--days", "7"])
            .await?;
    }
    let path = |name: &str| pki.join(name).display().to_string();

    let api_port = free_port();
    let ingest_port = free_port();
    let mut control_env = vec![
        ("CROSSCHECK_TIMESERIES_URL", ts.url.clone()),
        ("CROSSCHECK_INGEST_LISTEN", format!("127.0.0.1:{ingest_port}")),
        ("CROSSCHECK_TLS_CA", path("ca.pem")),
        ("CROSSCHECK_TLS_CERT", path("server.pem")),
        ("CROSSCHECK_TLS_KEY", path("server.key")),
        // Roll-ups are brought up to date every 2 s so the demo can read them back at once.
        ("CROSSCHECK_ROLLUP_REFRESH_INTERVAL_S", "2".to_owned()),
        ("CROSSCHECK_DATABASE_URL", db.url.clone()),
        ("CROSSCHECK_REDIS_URL", redis_url()),
        ("CROSSCHECK_REDIS_PREFIX", prefix.to_owned()),
        ("CROSSCHECK_LISTEN", format!("127.0.0.1:{api_port}")),
        ("CROSSCHECK_REGIONS", format!("[{}]", REGIONS.join(","))),
        // The demo's targets live on 127.0.0.1 and probe every few seconds.
        ("CROSSCHECK_ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ("CROSSCHECK_MIN_INTERVAL_S", "2".to_owned()),
        // The demo's webhook receiver listens on 127.0.0.1.
        ("CROSSCHECK_NOTIFY_ALLOW_PRIVATE", "[\"127.0.0.0/8\"]".to_owned()),
        // Flap mode and digests on a compressed clock: 4 changes in a minute is flapping, and
        // a digest covers 30 s instead of an hour, built 2 s after its end.
        ("CROSSCHECK_FLAP_WINDOW_S", "60".to_owned()),
        ("CROSSCHECK_FLAP_ENTER_TRANSITIONS", "4".to_owned()),
        ("CROSSCHECK_FLAP_LEAVE_TRANSITIONS", "1".to_owned()),
        ("CROSSCHECK_FLAP_QUIET_S", "20".to_owned()),
        ("CROSSCHECK_FLAP_CHECK_INTERVAL_MS", "1000".to_owned()),
        ("CROSSCHECK_DIGEST_PERIOD_S", "30".to_owned()),
        ("CROSSCHECK_DIGEST_GRACE_S", "2".to_owned()),
        ("CROSSCHECK_DIGEST_CHECK_INTERVAL_MS", "1000".to_owned()),
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
    let tenant_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tenant_id="))
        .context("tenant id in create-tenant output")?
        .to_owned();
    // The console of this tenant is open to anyone, read-only and marked as a demo.
    control_env.push(("CROSSCHECK_PUBLIC_DEMO", tenant_id));

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
    println!("   console        {api}/console   (the public demo: read-only, no token; watch it live)");
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
            .env("CROSSCHECK_AGENT_CONTROL_PLANE_URL", format!("https://localhost:{ingest_port}"))
            .env("CROSSCHECK_AGENT_TLS_CA", path("ca.pem"))
            .env("CROSSCHECK_AGENT_TLS_CERT", path(&format!("agents/{region}-{region}-1.pem")))
            .env("CROSSCHECK_AGENT_TLS_KEY", path(&format!("agents/{region}-{region}-1.key")))
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
    step("3. a webhook channel (a receiver in this process); its signing secret is shown once");
    let receiver = crate::fleet::Receiver::start().await?;
    let (channel, _) = call(
        &http,
        "POST",
        &format!("{api}/v1/channels"),
        &token,
        // Storm control off: each step shows (and verifies) its own notification's webhook.
        json!({"name": "demo hook", "kind": "webhook", "url": receiver.url, "storm_window_s": 0}),
    )
    .await?;
    let secret = channel["secret"].as_str().context("webhook secret")?.to_owned();
    println!("   secret {}…", &secret[..12.min(secret.len())]);

    step("3b. register local targets: healthy, slow, failing, TLS, bad certificate (one in ams only)");
    let mut ids = Vec::new();
    let mut version = 0;
    for body in [
        json!({"name": "Shop front", "url": format!("http://{web}/ok"), "keyword": "ok", "interval": 5}),
        json!({"name": "Search API", "url": format!("http://{web}/slow"), "interval": 5, "timeout_ms": 3000}),
        json!({"name": "Legacy login", "url": format!("http://{web}/fail"), "interval": 5}),
        json!({"name": "Payments", "url": format!("https://{tls}/ok"), "interval": 5}),
        json!({"name": "Old portal", "url": format!("https://{}/ok", targets.bad_tls), "interval": 5, "regions": ["ams"]}),
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

    step("8. results flow to the control plane over mutual TLS; agents per region (admin view)");
    let regions: Value =
        http.get(format!("{api}/v1/regions")).bearer_auth(&token).send().await?.json().await?;
    for region in regions["items"].as_array().into_iter().flatten() {
        for agent in region["agents"].as_array().into_iter().flatten() {
            println!(
                "   {:<4} {:<8} certificate {}…  last seen {}",
                region["name"].as_str().unwrap_or("?"),
                agent["agent_id"].as_str().unwrap_or("?"),
                &agent["cert_serial"].as_str().unwrap_or("?")
                    [..12.min(agent["cert_serial"].as_str().unwrap_or("?").len())],
                agent["last_seen"].as_str().unwrap_or("?")
            );
        }
    }

    step("9. uptime and latency over the last 24 h, read back from the roll-ups through the API");
    println!("   (percentiles are the upper bounds of log-scale histogram buckets, at most 19% high)");
    let mut live = ids.clone();
    live.remove(2);
    history(&http, &api, &token, &live).await?;

    step("10. down everywhere vs down in one region: consensus decides, the webhook hears only the first");
    let (everywhere, _) = call(
        &http,
        "POST",
        &format!("{api}/v1/domains"),
        &token,
        json!({"name": "Checkout", "url": format!("http://{web}/fail?outage"), "interval": 5}),
    )
    .await?;
    let (one_region, _) = call(
        &http,
        "POST",
        &format!("{api}/v1/domains"),
        &token,
        json!({"name": "Images", "url": format!("http://{web}/fail-in/sin"), "interval": 5}),
    )
    .await?;
    let (everywhere, one_region) = (
        everywhere["id"].as_str().context("id")?.to_owned(),
        one_region["id"].as_str().context("id")?.to_owned(),
    );
    let opened = alerted(&receiver, &everywhere).await?;
    println!(
        "   webhook: {} — signature {}",
        opened.body["summary"].as_str().unwrap_or("?"),
        if opened.verify(&secret) { "verified with the documented recipe" } else { "DOES NOT VERIFY" }
    );
    anyhow::ensure!(opened.verify(&secret), "the webhook signature does not verify");
    let incident: Value = http
        .get(format!("{api}/v1/incidents/{}", opened.body["incident_id"].as_str().unwrap_or("")))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    for event in incident["events"].as_array().into_iter().flatten() {
        let regions: Vec<String> = event["details"]["regions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["region"].as_str().unwrap_or("?"),
                    r["error_kind"].as_str().unwrap_or(""),
                    r["status_code"]
                )
            })
            .collect();
        println!(
            "   incident event: {} at {} ({})",
            event["kind"].as_str().unwrap_or("?"),
            event["at"].as_str().unwrap_or("?"),
            regions.join(", ")
        );
    }
    // Wait until every region has reported on the one-region failure, so its state is decided.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status: Value = http
            .get(format!("{api}/v1/domains/{one_region}/status"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let reported = status["regions"]
            .as_array()
            .is_some_and(|rs| rs.iter().all(|r| r["standing"] != "no_observation"));
        if reported && status["state"] != "unknown" {
            break status;
        }
        anyhow::ensure!(Instant::now() < deadline, "the one-region domain is still undecided: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("   /fail-in/sin (fails in sin only): state {}", status["state"]);
    for region in status["regions"].as_array().into_iter().flatten() {
        println!(
            "     {:<4} {:<10} votes: {}",
            region["region"].as_str().unwrap_or("?"),
            region["standing"].as_str().unwrap_or("?"),
            region["voting"]
        );
    }
    let incidents: Value = http
        .get(format!("{api}/v1/incidents?domain={one_region}"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let count = incidents["items"].as_array().map_or(0, Vec::len);
    println!("   incidents for it: {count} (one region alone never pages anyone)");
    anyhow::ensure!(count == 0, "a single region's failure opened an incident");

    step("11. a flapping target (up and down every 4 s): flap mode holds its alerts, a digest sums it up");
    flapping(&http, &api, &token, web, &receiver).await?;

    step("12. a public status page of five domains, and an operator's update on the outage");
    let mut components = Vec::new();
    let listed: Value =
        http.get(format!("{api}/v1/domains?limit=500")).bearer_auth(&token).send().await?.json().await?;
    for (name, group) in [
        ("Shop front", "Shop"),
        ("Checkout", "Shop"),
        ("Payments", "Shop"),
        ("Search API", "API"),
        ("Images", "API"),
    ] {
        if let Some(d) = listed["items"].as_array().into_iter().flatten().find(|d| d["name"] == name) {
            components.push(json!({"domain": d["id"], "name": name, "group": group}));
        }
    }
    let (page, _) = call(
        &http,
        "POST",
        &format!("{api}/v1/status-pages"),
        &token,
        json!({"slug": "demo", "title": "Demo Shop status", "components": components}),
    )
    .await?;
    let public = format!("{api}{}", page["public_path"].as_str().unwrap_or("/status/demo"));
    let open: Value = http
        .get(format!("{api}/v1/incidents?state=open&limit=50"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let checkout = listed["items"].as_array().into_iter().flatten().find(|d| d["name"] == "Checkout");
    if let Some(incident) = open["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| Some(&i["domain_id"]) == checkout.map(|d| &d["id"]))
    {
        call(
            &http,
            "POST",
            &format!("{api}/v1/incidents/{}/updates", incident["id"].as_str().unwrap_or_default()),
            &token,
            json!({"status": "investigating", "message": "Checkout fails in every region; we are looking into it."}),
        )
        .await?;
    }
    if let Some(dir) = &args.screenshots {
        step("screenshots of the console (headless Chromium)");
        crate::screenshots::take(dir, &api, &token, &public).await?;
    }
    step("the pages");
    println!("   status page    {public}   (public; also as .json and an Atom feed)");
    println!("   console        {api}/console   (read-only demo without a token)");
    println!("   sign in at     {api}/console/sign-in   with the admin token to change things");
    if args.keep {
        step("running; try the API and the console with the token above. ctrl-c stops everything");
        println!("   token          {token}");
        println!("   curl -H 'authorization: Bearer {token}' {api}/v1/domains");
        shared::shutdown::signal().await;
    }
    Ok(json!({"scenario": "demo", "agents": agents.len(), "ok": true}))
}

/// Waits for the webhook announcing an incident for `domain`.
async fn alerted(receiver: &crate::fleet::Receiver, domain: &str) -> anyhow::Result<crate::fleet::Delivery> {
    webhook(receiver, Duration::from_secs(60), "an incident webhook", |d| {
        d.body["kind"] == "incident_opened" && d.body["domain_id"].as_str() == Some(domain)
    })
    .await
}

/// Waits up to `limit` for the first webhook delivery matching `wanted`.
async fn webhook(
    receiver: &crate::fleet::Receiver,
    limit: Duration,
    what: &str,
    wanted: impl Fn(&crate::fleet::Delivery) -> bool,
) -> anyhow::Result<crate::fleet::Delivery> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(delivery) = receiver.all().into_iter().find(|d| wanted(d)) {
            return Ok(delivery);
        }
        anyhow::ensure!(Instant::now() < deadline, "no {what} after {} s", limit.as_secs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Step 11: a target that changes every 4 s enters flap mode; its individual alerts are held
/// and the next digest (30 s periods in the demo) sums it up.
async fn flapping(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    web: std::net::SocketAddr,
    receiver: &crate::fleet::Receiver,
) -> anyhow::Result<()> {
    let (created, _) = call(
        http,
        "POST",
        &format!("{api}/v1/domains"),
        token,
        json!({"name": "Flaky widget", "url": format!("http://{web}/flap/4"), "interval": 2}),
    )
    .await?;
    let domain = created["id"].as_str().context("id")?.to_owned();
    let for_domain = |d: &crate::fleet::Delivery, kind: &str| {
        d.body["kind"] == kind && d.body["domain_id"].as_str() == Some(domain.as_str())
    };
    let entered =
        webhook(receiver, Duration::from_secs(120), "flapping notice", |d| for_domain(d, "domain_flapping"))
            .await?;
    println!("   webhook: {}", entered.body["summary"].as_str().unwrap_or("?"));
    let individual =
        |d: &crate::fleet::Delivery| for_domain(d, "incident_opened") || for_domain(d, "incident_resolved");
    let before = receiver.all().iter().filter(|d| individual(d) && d.at < entered.at).count();
    println!("   individual alerts before flap mode: {before}; from now on they are held (the incidents are still recorded)");
    let digest = webhook(receiver, Duration::from_secs(120), "digest", |d| {
        d.body["kind"] == "flap_digest"
            && d.body["details"]["domains"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|x| x["domain_id"].as_str() == Some(domain.as_str())))
    })
    .await?;
    let after = receiver.all().iter().filter(|d| individual(d) && d.at > entered.at).count();
    println!(
        "   webhook: {} (individual alerts since flap mode: {after})",
        digest.body["summary"].as_str().unwrap_or("?")
    );
    let id = digest.body["details"]["digest_id"].as_str().context("digest id in the webhook")?;
    let stored: Value =
        http.get(format!("{api}/v1/digests/{id}")).bearer_auth(token).send().await?.json().await?;
    println!("   GET /v1/digests/{id} (text; the email carries it as text and HTML):");
    for line in stored["text"].as_str().unwrap_or("").lines() {
        println!("   | {line}");
    }
    anyhow::ensure!(after == 0, "{after} individual alerts went out for a flapping domain");
    // Stop the noise: pausing closes the flap period without more alerts (an open incident stays
    // open, with nothing sent).
    let (_, _) =
        call(http, "PATCH", &format!("{api}/v1/domains/{domain}"), token, json!({"paused": true})).await?;
    Ok(())
}

/// Waits until every domain has stored results, then prints uptime and latency per region.
async fn history(http: &reqwest::Client, api: &str, token: &str, ids: &[String]) -> anyhow::Result<()> {
    let get = |path: String| {
        let request = http.get(format!("{api}{path}")).bearer_auth(token);
        async move { anyhow::Ok(request.send().await?.json::<Value>().await?) }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let uptime = get(format!("/v1/domains/{id}/uptime?window=24h")).await?;
            // A few probes from every region it runs in, so the percentiles mean something.
            let regions = uptime["regions"].as_array().map_or(0, Vec::len) as u64;
            if regions > 0 && uptime["probes"]["probes"].as_u64().unwrap_or(0) >= 3 * regions {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "too few rolled-up probes for {id} after 60 s: {uptime}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!(
        "   {:<28} {:<7} {:>6} {:>8} {:>9} {:>9} {:>9}",
        "url", "region", "probes", "ok", "p50 ms", "p95 ms", "p99 ms"
    );
    for id in ids {
        let domain = get(format!("/v1/domains/{id}")).await?;
        let url = domain["url"]
            .as_str()
            .unwrap_or("?")
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let uptime = get(format!("/v1/domains/{id}/uptime?window=24h")).await?;
        let latency = get(format!("/v1/domains/{id}/latency?window=24h")).await?;
        let row = |label: &str, u: &Value, l: &Value| {
            println!(
                "   {:<28} {:<7} {:>6} {:>7.1}% {:>9} {:>9} {:>9}",
                url,
                label,
                u["probes"].as_u64().unwrap_or(0),
                u["uptime_percent"].as_f64().unwrap_or(0.0),
                us_as_ms(&l["total"]["p50_us"]),
                us_as_ms(&l["total"]["p95_us"]),
                us_as_ms(&l["total"]["p99_us"]),
            );
        };
        row("all", &uptime["probes"], &latency["overall"]);
        for region in uptime["regions"].as_array().into_iter().flatten() {
            let name = region["region"].as_str().unwrap_or("?");
            let l = latency["regions"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["region"] == name))
                .cloned()
                .unwrap_or(Value::Null);
            row(name, region, &l);
        }
        let consensus =
            uptime["uptime_percent"].as_f64().map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%"));
        let flagged: Vec<String> = uptime["regional_failures"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{} since {}",
                    f["region"].as_str().unwrap_or("?"),
                    f["since"].as_str().unwrap_or("?")
                )
            })
            .collect();
        println!(
            "   {:<28} uptime by consensus {consensus} (the rows above are probe success ratios){}",
            url,
            if flagged.is_empty() {
                String::new()
            } else {
                format!("; failing alone: {}", flagged.join(", "))
            }
        );
    }
    Ok(())
}

/// Microseconds shown as milliseconds.
fn us_as_ms(value: &Value) -> String {
    value.as_f64().map_or_else(|| "-".to_owned(), |v| format!("{:.1}", v / 1000.0))
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
