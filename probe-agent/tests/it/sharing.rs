//! Agents sharing a region: three agents of one region against 300 domains on a local target
//! that records every request by domain. In steady state each domain is probed by exactly one
//! agent; an agent killed with SIGKILL (a child process: it cannot leave) has its domains taken
//! over once its registration expires, and none is probed twice afterwards; a newcomer takes
//! its share; an agent stopping cleanly hands its domains over at the others' next heartbeat.
//! Across every handoff no domain goes unprobed longer than the interval plus the TTL: the
//! interval (3 s) is twice the TTL, so a taker waiting for the next slot instead of catching up
//! would leave gaps of two intervals (6 s) and fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use probe_agent::membership::Membership;
use shared::testing::{delete_prefix, eventually, free_port, random_prefix};
use shared::{DomainConfig, DomainId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const DOMAINS: usize = 300;
const INTERVAL: Duration = Duration::from_secs(3);
/// Six heartbeats per TTL: the agents under test share two cores with the target and whatever
/// else the machine runs, so a heartbeat can be late.
const HEARTBEAT_MS: u64 = 250;
const TTL_MS: u64 = 1_500;
/// How long the tests watch for double probing: two slots of every domain.
const WATCH: Duration = Duration::from_secs(6);
/// Room for a loaded two-core machine (probes start late, heartbeats run late) on top of a
/// bound; a domain never taken over would exceed any of them.
const SLACK: Duration = Duration::from_millis(1_000);

/// A local HTTP target recording when each path was requested.
#[derive(Clone, Default)]
struct Target {
    hits: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
}

impl Target {
    async fn start() -> (Self, u16) {
        let target = Target::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = target.hits.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let hits = hits.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    if let Some(path) = line.split_whitespace().nth(1) {
                        hits.lock().unwrap().entry(path.to_owned()).or_default().push(Instant::now());
                    }
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                });
            }
        });
        (target, port)
    }

    /// Each path's requests in `[from, to)`.
    fn between(&self, from: Instant, to: Instant) -> HashMap<String, Vec<Instant>> {
        let hits = self.hits.lock().unwrap();
        hits.iter()
            .map(|(path, at)| (path.clone(), at.iter().copied().filter(|t| *t >= from && *t < to).collect()))
            .collect()
    }

    /// The paths of `domains` probed more often in `[from, to)` than one agent probes them: a
    /// domain has one slot per interval, so one agent makes at most one request per interval in
    /// the window plus one at its edge, however late its probes start; two agents make twice
    /// that. And since a slot does not depend on the agent, two agents probe at nearly the same
    /// instant: two requests less than a third of an interval apart are a double too.
    fn doubles(&self, domains: &[DomainConfig], from: Instant, to: Instant) -> Vec<(String, usize)> {
        let slots = ((to - from).as_secs_f64() / INTERVAL.as_secs_f64()).ceil() as usize;
        let hits = self.between(from, to);
        domains
            .iter()
            .map(|d| path(&d.id))
            .filter_map(|p| {
                let mut at = hits.get(&p).cloned().unwrap_or_default();
                at.sort();
                let close = at.windows(2).any(|w| w[1] - w[0] < INTERVAL / 3);
                (at.len() > slots + 1 || close).then_some((p, at.len()))
            })
            .collect()
    }

    /// The longest time any of `domains` went unprobed within `[from, to)` (the window's edges
    /// count as probes, so a domain never probed in it has the window's length).
    fn longest_gap(&self, domains: &[DomainConfig], from: Instant, to: Instant) -> (Duration, String) {
        let hits = self.between(from, to);
        let mut worst = (Duration::ZERO, String::new());
        for d in domains {
            let p = path(&d.id);
            let mut times = vec![from];
            times.extend(hits.get(&p).into_iter().flatten().copied());
            times.push(to);
            times.sort();
            let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
            if gap > worst.0 {
                worst = (gap, p);
            }
        }
        worst
    }

    /// When every one of `domains` has been requested since `since`.
    async fn wait_all_probed_since(&self, domains: &[DomainConfig], since: Instant, what: &str) {
        eventually(WAIT, what, || {
            let hits = self.between(since, Instant::now() + WAIT);
            let done = domains.iter().all(|d| hits.get(&path(&d.id)).is_some_and(|at| !at.is_empty()));
            async move { done.then_some(()) }
        })
        .await;
    }
}

fn path(id: &DomainId) -> String {
    format!("/d/{id}")
}

/// Waits until `duration` has passed since `from`, polling (no fixed sleep: the condition is
/// time itself, checked every few milliseconds).
async fn until(from: Instant, duration: Duration) {
    eventually(WAIT + duration, "time to pass", || async move { (from.elapsed() >= duration).then_some(()) })
        .await;
}

struct InProcess {
    membership: tokio::sync::watch::Receiver<Arc<Membership>>,
    metrics: probe_agent::metrics::Metrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    fn members(&self) -> Vec<String> {
        self.membership.borrow().members().into_iter().map(str::to_owned).collect()
    }

    fn owned(&self) -> i64 {
        self.metrics.scheduled_domains.get()
    }
}

struct Region {
    redis: Client,
    prefix: String,
    domains: Vec<DomainConfig>,
}

impl Region {
    async fn new(port: u16) -> Self {
        let redis =
            shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
        redis.init().await.unwrap();
        let prefix = random_prefix("sharing");
        let domains: Vec<DomainConfig> = (0..DOMAINS)
            .map(|_| {
                let mut config = shared::testing::sample_domain(INTERVAL.as_secs() as u32, 1);
                config.url = format!("http://127.0.0.1:{port}{}", path(&config.id));
                config.timeout_ms = 800;
                config
            })
            .collect();
        let fields: Vec<(String, String)> =
            domains.iter().map(|d| (d.id.to_string(), serde_json::to_string(d).unwrap())).collect();
        let _: () = redis.hset(format!("{prefix}:domains"), fields).await.unwrap();
        let _: () = redis.set(format!("{prefix}:domains:version"), 1, None, None, false).await.unwrap();
        Self { redis, prefix, domains }
    }

    async fn start(&self, agent_id: &str) -> InProcess {
        let config = probe_agent::Config {
            region: "ams".into(),
            agent_id: agent_id.into(),
            redis_prefix: self.prefix.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_private: vec!["127.0.0.0/8".parse().unwrap()],
            version_check_interval_s: 1,
            redis_min_backoff_ms: 20,
            redis_max_backoff_ms: 200,
            heartbeat_interval_ms: HEARTBEAT_MS,
            membership_ttl_ms: TTL_MS,
            ..probe_agent::Config::default()
        };
        let agent = probe_agent::Agent::build(config).await.unwrap();
        let membership = agent.membership();
        let metrics = agent.metrics.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run_until(shutdown.clone()));
        InProcess { membership, metrics, shutdown, task }
    }

    /// The agent binary as a child process, its operational listener on `listen`.
    fn spawn(&self, agent_id: &str, listen: u16) -> tokio::process::Child {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe-agent"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CROSSCHECK_AGENT_") {
                command.env_remove(key);
            }
        }
        command
            .env("CROSSCHECK_AGENT_REGION", "ams")
            .env("CROSSCHECK_AGENT_AGENT_ID", agent_id)
            .env("CROSSCHECK_AGENT_REDIS_PREFIX", &self.prefix)
            .env("CROSSCHECK_AGENT_LISTEN", format!("127.0.0.1:{listen}"))
            .env("CROSSCHECK_AGENT_ALLOW_PRIVATE", "[\"127.0.0.0/8\"]")
            .env("CROSSCHECK_AGENT_VERSION_CHECK_INTERVAL_S", "1")
            .env("CROSSCHECK_AGENT_HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string())
            .env("CROSSCHECK_AGENT_MEMBERSHIP_TTL_MS", TTL_MS.to_string())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start the probe-agent binary")
    }

    /// The region's registered members as Redis holds them, by name.
    async fn registered(&self) -> Vec<String> {
        let mut members: Vec<String> = self
            .redis
            .zrange(format!("{}:agents:ams", self.prefix), 0, -1, None, false, None, false)
            .await
            .unwrap();
        members.sort();
        members
    }

    /// The domains `agent` owns among `members`.
    fn share(&self, agent: &str, members: &[&str]) -> Vec<DomainConfig> {
        let view = Membership::seen(agent, members.iter().copied());
        self.domains.iter().filter(|d| view.owns(d)).cloned().collect()
    }
}

/// The child's `/debug/membership`.
async fn child_view(listen: u16) -> Option<serde_json::Value> {
    let url = format!("http://127.0.0.1:{listen}/debug/membership");
    reqwest::get(url).await.ok()?.json().await.ok()
}

async fn wait_members(agents: &[&InProcess], want: &[&str], what: &str) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(WAIT, what, || {
        let ok = agents.iter().all(|a| a.members() == want);
        async move { ok.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_share_a_region_and_hand_domains_over_on_crash_join_and_leave() {
    let (target, port) = Target::start().await;
    let region = Region::new(port).await;
    let a = region.start("ams-a").await;
    let b = region.start("ams-b").await;
    let c_listen = free_port();
    let mut c = region.spawn("ams-c", c_listen);

    // Steady state: every agent sees the three, the shares add up to every domain once.
    wait_members(&[&a, &b], &["ams-a", "ams-b", "ams-c"], "a and b to see three members").await;
    eventually(WAIT, "the child agent to see three members and load its catalog", || async {
        let view = child_view(c_listen).await?;
        (view["members"].as_array()?.len() == 3 && view["domains"] == DOMAINS)
            .then_some(view["owned"].as_i64()?)
    })
    .await;
    let all = ["ams-a", "ams-b", "ams-c"];
    let c_share = region.share("ams-c", &all);
    eventually(WAIT, "a and b to schedule exactly their shares", || {
        let ok = a.owned() == region.share("ams-a", &all).len() as i64
            && b.owned() == region.share("ams-b", &all).len() as i64;
        async move { ok.then_some(()) }
    })
    .await;
    let owned_c = eventually(WAIT, "the child to own its share", || async {
        let owned = child_view(c_listen).await?["owned"].as_i64()?;
        (owned == c_share.len() as i64).then_some(owned)
    })
    .await;
    assert_eq!(a.owned() + b.owned() + owned_c, DOMAINS as i64, "each domain has exactly one owner");
    for share in [a.owned(), b.owned(), owned_c] {
        assert!((50..=150).contains(&share), "uneven split: {} / {} / {owned_c}", a.owned(), b.owned());
    }
    // Let the probes planned before the last member was seen finish, then watch three intervals.
    let settled = Instant::now() + INTERVAL;
    until(settled, WATCH).await;
    let window_end = settled + WATCH;
    let doubles = target.doubles(&region.domains, settled, window_end);
    assert!(
        doubles.is_empty(),
        "probed twice in steady state: {} domains, e.g. {:?}",
        doubles.len(),
        doubles.first()
    );
    let (gap, worst) = target.longest_gap(&region.domains, settled, window_end);
    assert!(gap <= INTERVAL + SLACK, "{worst} unprobed for {gap:?} in steady state");

    // SIGKILL: ams-c cannot leave; its registration expires after the TTL and a and b take its
    // domains, catching up on the slots it may have missed: no gap beyond the interval plus the
    // TTL (waiting for the next slot would make it two intervals here).
    c.start_kill().unwrap();
    c.wait().await.unwrap();
    let killed = Instant::now();
    assert!(region.registered().await.contains(&"ams-c".to_owned()), "a killed agent stays registered");
    wait_members(&[&a, &b], &["ams-a", "ams-b"], "a and b to drop the killed agent").await;
    let noticed = killed.elapsed();
    assert!(
        noticed <= Duration::from_millis(TTL_MS) + SLACK,
        "the killed agent was dropped {noticed:?} after its death (ttl {TTL_MS} ms)"
    );
    target.wait_all_probed_since(&c_share, killed, "the killed agent's domains to be probed again").await;
    let bound = INTERVAL + Duration::from_millis(TTL_MS);
    let from = killed + Duration::from_millis(TTL_MS) + INTERVAL;
    let after_kill = from + WATCH;
    until(killed, after_kill - killed).await;
    // From two intervals before: every domain's last probe by ams-c is in the window.
    let (gap, worst) = target.longest_gap(&c_share, killed - INTERVAL * 2, after_kill);
    assert!(gap <= bound + SLACK, "{worst} of the killed agent unprobed for {gap:?} (bound {bound:?})");
    let doubles = target.doubles(&region.domains, from, after_kill);
    assert!(doubles.is_empty(), "probed twice after the takeover: {doubles:?}");
    assert_eq!(a.owned() + b.owned(), DOMAINS as i64);
    assert!(a.metrics.handoff_count("gained") + b.metrics.handoff_count("gained") >= c_share.len() as u64);
    let caught_up = a.metrics.membership_catch_ups.get() + b.metrics.membership_catch_ups.get();
    assert!(
        caught_up > 0 && caught_up <= c_share.len() as u64,
        "{caught_up} of the killed agent's {} domains caught up",
        c_share.len()
    );

    // A newcomer takes its share: a and b give up exactly what d takes.
    let d = region.start("ams-d").await;
    let joined = Instant::now();
    let abd = ["ams-a", "ams-b", "ams-d"];
    wait_members(&[&a, &b, &d], &abd, "every agent to see the newcomer").await;
    let d_share = region.share("ams-d", &abd);
    eventually(WAIT, "the newcomer's share to move", || {
        let ok = d.owned() == d_share.len() as i64 && a.owned() + b.owned() + d.owned() == DOMAINS as i64;
        async move { ok.then_some(()) }
    })
    .await;
    assert!((50..=150).contains(&d.owned()), "the newcomer owns {}", d.owned());
    let settled = Instant::now() + INTERVAL;
    until(settled, WATCH).await;
    let window_end = settled + WATCH;
    let doubles = target.doubles(&region.domains, settled, window_end);
    assert!(doubles.is_empty(), "probed twice after the join: {doubles:?}");
    let (gap, worst) = target.longest_gap(&region.domains, joined, window_end);
    assert!(gap <= INTERVAL + SLACK, "{worst} unprobed for {gap:?} across the join");

    // A clean stop leaves at once: a and b take d's domains at their next heartbeat.
    d.shutdown.cancel();
    d.task.await.unwrap().unwrap();
    let stopped = Instant::now();
    assert_eq!(region.registered().await, vec!["ams-a".to_owned(), "ams-b".to_owned()], "d left");
    wait_members(&[&a, &b], &["ams-a", "ams-b"], "a and b to see d gone").await;
    let from = stopped + Duration::from_millis(HEARTBEAT_MS) + INTERVAL;
    let after_leave = from + WATCH;
    until(stopped, after_leave - stopped).await;
    let bound = INTERVAL + Duration::from_millis(TTL_MS);
    let (gap, worst) = target.longest_gap(&d_share, stopped - INTERVAL * 2, after_leave);
    assert!(gap <= bound + SLACK, "{worst} of the leaving agent unprobed for {gap:?} (bound {bound:?})");
    let doubles = target.doubles(&region.domains, from, after_leave);
    assert!(doubles.is_empty(), "probed twice after the leave: {doubles:?}");
    assert_eq!(a.owned() + b.owned(), DOMAINS as i64);

    a.shutdown.cancel();
    b.shutdown.cancel();
    a.task.await.unwrap().unwrap();
    b.task.await.unwrap().unwrap();
    assert!(region.registered().await.is_empty(), "every agent left");
    delete_prefix(&region.redis, &region.prefix).await.unwrap();
}
