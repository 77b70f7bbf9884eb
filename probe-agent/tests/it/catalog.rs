//! Catalog sync: bulk load, notices, gaps, lost notices, flushed Redis, bad data.

use std::time::Duration;

use fred::prelude::*;
use probe_agent::catalog::sync::CatalogHandle;
use probe_agent::metrics::{Metrics, ReasonLabels};
use shared::testing::{delete_prefix, eventually, random_prefix};
use shared::{ChangeNotice, ChangeOp, DomainConfig, DomainId};
use tokio_util::sync::CancellationToken;

/// The deadline of every "eventually" wait: generous, since a busy two-core machine can stretch
/// seconds of background work many times over, and it only matters when a test is failing.
const WAIT: Duration = Duration::from_secs(60);

/// A test's private slice of the shared Redis, written like the publisher writes it.
struct Fixture {
    redis: Client,
    prefix: String,
}

impl Fixture {
    async fn new(label: &str) -> Self {
        let redis =
            shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
        redis.init().await.unwrap();
        Self { redis, prefix: random_prefix(label) }
    }

    fn config(&self, regions: &[&str], version: u64) -> DomainConfig {
        DomainConfig {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            timeout_ms: 5000,
            ..shared::testing::sample_domain(60, version)
        }
    }

    /// Writes a config and the version; announces it only when `announce`.
    async fn put(&self, config: &DomainConfig, announce: bool) {
        let _: () = self
            .redis
            .hset(
                format!("{}:domains", self.prefix),
                (config.id.to_string(), serde_json::to_string(config).unwrap()),
            )
            .await
            .unwrap();
        let _: () = self
            .redis
            .set(format!("{}:domains:version", self.prefix), config.version, None, None, false)
            .await
            .unwrap();
        if announce {
            self.announce(ChangeNotice {
                version: config.version,
                id: Some(config.id),
                op: ChangeOp::Upsert,
            })
            .await;
        }
    }

    async fn remove(&self, id: DomainId, version: u64) {
        let _: () = self.redis.hdel(format!("{}:domains", self.prefix), id.to_string()).await.unwrap();
        let _: () = self
            .redis
            .set(format!("{}:domains:version", self.prefix), version, None, None, false)
            .await
            .unwrap();
        self.announce(ChangeNotice { version, id: Some(id), op: ChangeOp::Delete }).await;
    }

    async fn announce(&self, notice: ChangeNotice) {
        let _: () = self
            .redis
            .publish(format!("{}:domains:changes", self.prefix), serde_json::to_string(&notice).unwrap())
            .await
            .unwrap();
    }

    async fn agent(&self, region: &str) -> TestAgent {
        self.agent_checking_every(region, 1).await
    }

    async fn agent_checking_every(&self, region: &str, version_check_interval_s: u64) -> TestAgent {
        let config = probe_agent::Config {
            region: region.to_owned(),
            redis_prefix: self.prefix.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            version_check_interval_s,
            redis_min_backoff_ms: 20,
            redis_max_backoff_ms: 200,
            ..probe_agent::Config::default()
        };
        let agent = probe_agent::Agent::build(config).await.unwrap();
        let out = TestAgent {
            catalog: agent.catalog(),
            metrics: agent.metrics.clone(),
            addr: agent.local_addr(),
            shutdown: CancellationToken::new(),
        };
        tokio::spawn(agent.run_until(out.shutdown.clone()));
        out
    }

    async fn cleanup(self) {
        delete_prefix(&self.redis, &self.prefix).await.unwrap();
    }
}

struct TestAgent {
    catalog: CatalogHandle,
    metrics: Metrics,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl TestAgent {
    async fn wait_for(&self, what: &str, check: impl Fn(&probe_agent::catalog::Catalog) -> bool) {
        eventually(WAIT, what, || {
            let ok = self.catalog.is_loaded() && check(&self.catalog.current());
            async move { ok.then_some(()) }
        })
        .await;
    }

    fn resyncs(&self, reason: &str) -> u64 {
        self.metrics.catalog_resyncs.get_or_create(&ReasonLabels { reason: reason.into() }).get()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn bulk_load_pages_through_a_large_hash_and_keeps_this_regions_domains() {
    let fx = Fixture::new("bulk").await;
    let mut fields = Vec::new();
    for i in 0..5000u64 {
        let regions: &[&str] = match i % 3 {
            0 => &[],
            1 => &["ams"],
            _ => &["sin"],
        };
        let config = fx.config(regions, 1);
        fields.push((config.id.to_string(), serde_json::to_string(&config).unwrap()));
    }
    let _: () = fx.redis.hset(format!("{}:domains", fx.prefix), fields).await.unwrap();
    let _: () = fx.redis.set(format!("{}:domains:version", fx.prefix), 1, None, None, false).await.unwrap();

    let agent = fx.agent("ams").await;
    agent.wait_for("the ams share of 5000 domains", |c| c.len() == 3334 && c.version() == 1).await;
    assert!(agent.catalog.current().iter().all(|d| d.runs_in("ams")));
    fx.cleanup().await;
}

#[tokio::test]
async fn notices_apply_single_changes_in_order() {
    let fx = Fixture::new("notices").await;
    let first = fx.config(&[], 1);
    fx.put(&first, false).await;
    let agent = fx.agent("ams").await;
    agent.wait_for("initial load", |c| c.len() == 1).await;

    let second = fx.config(&[], 2);
    fx.put(&second, true).await;
    agent.wait_for("second domain", |c| c.len() == 2 && c.version() == 2).await;
    let mut changed = first.clone();
    changed.version = 3;
    changed.interval_s = 15;
    fx.put(&changed, true).await;
    agent.wait_for("update", |c| c.get(&first.id).is_some_and(|d| d.interval_s == 15)).await;
    fx.remove(second.id, 4).await;
    agent.wait_for("removal", |c| c.len() == 1 && c.version() == 4).await;
    // A stale or duplicate notice changes nothing.
    fx.announce(ChangeNotice { version: 2, id: Some(second.id), op: ChangeOp::Upsert }).await;
    let fifth = fx.config(&[], 5);
    fx.put(&fifth, true).await;
    agent.wait_for("fifth", |c| c.len() == 2 && c.version() == 5 && c.get(&second.id).is_none()).await;
    assert_eq!(agent.resyncs("gap"), 0);
    assert!(agent.metrics.catalog_updates.get() >= 1);
    fx.cleanup().await;
}

#[tokio::test]
async fn a_skipped_version_triggers_a_full_resync() {
    let fx = Fixture::new("gap").await;
    fx.put(&fx.config(&[], 1), false).await;
    // No periodic check within the test: only gap detection can recover the lost change.
    let agent = fx.agent_checking_every("ams", 3600).await;
    agent.wait_for("initial load", |c| c.len() == 1).await;

    // Version 2 is written but its notice is lost; version 3 is announced.
    let lost = fx.config(&[], 2);
    fx.put(&lost, false).await;
    let announced = fx.config(&[], 3);
    fx.put(&announced, true).await;

    agent.wait_for("both changes", |c| c.len() == 3 && c.version() == 3).await;
    assert!(agent.catalog.current().get(&lost.id).is_some());
    assert_eq!(agent.resyncs("gap"), 1);
    fx.cleanup().await;
}

#[tokio::test]
async fn a_lost_last_notice_is_caught_by_the_version_check() {
    let fx = Fixture::new("lost").await;
    fx.put(&fx.config(&[], 1), false).await;
    let agent = fx.agent("ams").await;
    agent.wait_for("initial load", |c| c.len() == 1).await;

    let lost = fx.config(&[], 2);
    fx.put(&lost, false).await; // nothing announces it, and nothing follows it
    agent.wait_for("the unannounced change", |c| c.get(&lost.id).is_some()).await;
    assert!(agent.resyncs("version_check") >= 1);
    fx.cleanup().await;
}

#[tokio::test]
async fn a_flushed_redis_never_empties_the_catalog() {
    let fx = Fixture::new("flush").await;
    fx.put(&fx.config(&[], 1), false).await;
    fx.put(&fx.config(&[], 2), false).await;
    let agent = fx.agent("ams").await;
    agent.wait_for("initial load", |c| c.len() == 2).await;

    delete_prefix(&fx.redis, &fx.prefix).await.unwrap();
    let errors =
        || agent.metrics.catalog_errors.get_or_create(&ReasonLabels { reason: "version_check".into() }).get();
    eventually(WAIT, "the version check to notice the missing version", || async {
        (errors() >= 1).then_some(())
    })
    .await;
    assert_eq!(agent.catalog.current().len(), 2, "catalog kept while redis holds nothing");

    // The control plane rebuilds and announces a resync.
    let only = fx.config(&[], 7);
    fx.put(&only, false).await;
    fx.announce(ChangeNotice { version: 7, id: None, op: ChangeOp::Resync }).await;
    agent.wait_for("rebuilt catalog", |c| c.len() == 1 && c.version() == 7).await;
    fx.cleanup().await;
}

#[tokio::test]
async fn an_agent_waits_for_published_configuration_before_it_is_ready() {
    let fx = Fixture::new("ready").await;
    let agent = fx.agent("ams").await;
    let readyz = format!("http://{}/readyz", agent.addr);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    fx.put(&fx.config(&[], 1), false).await;
    agent.wait_for("first load", |c| c.len() == 1).await;
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), reqwest::StatusCode::OK);
    fx.cleanup().await;
}

#[tokio::test]
async fn unreadable_entries_are_skipped_and_counted() {
    let fx = Fixture::new("decode").await;
    let good = fx.config(&[], 1);
    fx.put(&good, false).await;
    let _: () = fx.redis.hset(format!("{}:domains", fx.prefix), ("garbage", "{not json")).await.unwrap();
    let agent = fx.agent("ams").await;
    agent.wait_for("the good entry", |c| c.len() == 1).await;
    assert_eq!(
        agent.metrics.catalog_errors.get_or_create(&ReasonLabels { reason: "decode".into() }).get(),
        1
    );
    fx.cleanup().await;
}

#[tokio::test]
async fn a_running_agent_probes_what_redis_publishes_and_refuses_private_targets_by_default() {
    let port = crate::local_target().await;

    let fx = Fixture::new("probing").await;
    let mut target = fx.config(&[], 1);
    target.url = format!("http://127.0.0.1:{port}/health");
    target.interval_s = 1;
    target.keyword = Some(shared::KeywordCheck::contains("ok"));
    fx.put(&target, false).await;

    // Without an allow-list the guard refuses the loopback target before connecting.
    let strict = fx.agent("ams").await;
    let blocked = || {
        strict
            .metrics
            .probes
            .get_or_create(&probe_agent::metrics::OutcomeLabels { outcome: "blocked_target".into() })
            .get()
    };
    eventually(WAIT, "a refused probe", || async { (blocked() >= 1).then_some(()) }).await;
    drop(strict);

    // With loopback allowed, the agent probes it and serves the result.
    let config = probe_agent::Config {
        region: "ams".into(),
        redis_prefix: fx.prefix.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_private: vec!["127.0.0.0/8".parse().unwrap()],
        ..probe_agent::Config::default()
    };
    let agent = probe_agent::Agent::build(config).await.unwrap();
    let addr = agent.local_addr();
    let latest = agent.latest();
    let shutdown = CancellationToken::new();
    tokio::spawn(agent.run_until(shutdown.clone()));
    let result = eventually(WAIT, "a successful probe", || {
        let result = latest.get(&target.id).filter(|r| r.report.ok);
        async move { result }
    })
    .await;
    assert_eq!(result.report.status, Some(200));
    assert_eq!(result.report.keyword_matched, Some(true));
    assert_eq!(result.config_version, 1);
    let body: serde_json::Value =
        reqwest::get(format!("http://{addr}/debug/results")).await.unwrap().json().await.unwrap();
    assert_eq!(body["results"][0]["domain_id"], target.id.to_string());
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "probe_agent_probes_total{outcome=\"ok\"}",
        "probe_agent_schedule_lag_seconds_bucket",
        "probe_agent_results_dropped_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    shutdown.cancel();
    fx.cleanup().await;
}
