//! The config path end to end: API → Postgres change log → publisher → Redis → agents' memory,
//! including the failure cases (lost state in Redis, Redis down, publisher crash, replicas).

use control_plane::domains::{store, DomainSpec};
use control_plane::publisher::Publisher;
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::json;
use shared::testing::{delete_prefix, eventually, random_prefix, RedisServer};
use shared::DomainConfig;
use sqlx::PgPool;
use std::collections::BTreeMap;

use crate::helpers::{agents_config, domain, TestAgent, TestApp, WAIT};

/// Redis's hash as a map of domain id → config.
async fn redis_domains(redis: &Client, prefix: &str) -> BTreeMap<String, DomainConfig> {
    let raw: BTreeMap<String, String> = redis.hgetall(format!("{prefix}:domains")).await.unwrap();
    raw.into_iter().map(|(k, v)| (k, serde_json::from_str(&v).unwrap())).collect()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn changes_reach_running_agents_of_the_right_regions(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool).await;
    let ams = app.agent("ams").await;
    let sin = app.agent("sin").await;

    let everywhere = app.create_domain(domain("https://192.0.2.1/a")).await;
    let ams_only = app.create_domain(json!({"url": "https://192.0.2.1/b", "regions": ["ams"]})).await;
    ams.wait_for("both domains in ams", |c| c.len() == 2).await;
    sin.wait_for("the all-regions domain in sin", |c| c.len() == 1).await;
    assert!(sin.has(&everywhere) && !sin.has(&ams_only));

    // An update reaches the agent with its new values.
    app.patch(&format!("/v1/domains/{everywhere}"), &app.token, &json!({"interval": 15})).await;
    let id = everywhere.parse().unwrap();
    sin.wait_for("interval update", |c| c.get(&id).is_some_and(|d| d.interval_s == 15)).await;
    sin.wait_for("verification on by default", |c| c.get(&id).is_some_and(|d| d.tls_verify)).await;

    // Insecure mode reaches the agent, and the API shows it.
    let patched =
        app.patch(&format!("/v1/domains/{everywhere}"), &app.token, &json!({"tls_verify": false})).await;
    let patched: serde_json::Value = patched.json().await.unwrap();
    assert_eq!(patched["tls_verify"], false, "{patched}");
    sin.wait_for("insecure mode", |c| c.get(&id).is_some_and(|d| !d.tls_verify)).await;

    // So does a forced HTTP version.
    assert_eq!(patched["http_version"], "auto", "{patched}");
    let patched =
        app.patch(&format!("/v1/domains/{everywhere}"), &app.token, &json!({"http_version": "http2"})).await;
    let patched: serde_json::Value = patched.json().await.unwrap();
    assert_eq!(patched["http_version"], "http2", "{patched}");
    sin.wait_for("http/2 forced", |c| {
        c.get(&id).is_some_and(|d| d.http_version == shared::HttpVersion::Http2)
    })
    .await;

    // Moving a domain out of a region removes it there.
    app.patch(&format!("/v1/domains/{everywhere}"), &app.token, &json!({"regions": ["ams"]})).await;
    sin.wait_for("domain moved away from sin", |c| c.is_empty()).await;

    // Pausing is visible to agents (they keep the config and do not probe it).
    app.post(&format!("/v1/domains/{ams_only}/pause"), &app.token, &json!({})).await;
    let paused = ams_only.parse().unwrap();
    ams.wait_for("paused flag", |c| c.get(&paused).is_some_and(|d| d.paused)).await;

    let version = app.pg_version().await;
    ams.wait_for("ams at the latest version", |c| c.version() == version).await;
    assert_eq!(
        ams.metrics
            .catalog_resyncs
            .get_or_create(&probe_agent::metrics::ReasonLabels { reason: "gap".into() })
            .get(),
        0
    );
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn delete_removes_the_domain_from_every_agent(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool).await;
    let agents = [app.agent("ams").await, app.agent("iad").await, app.agent("sin").await];
    let id = app.create_domain(domain("https://192.0.2.1")).await;
    let keep = app.create_domain(domain("https://192.0.2.2")).await;
    for agent in &agents {
        agent.wait_for("both domains", |c| c.len() == 2).await;
    }
    assert_eq!(app.delete(&format!("/v1/domains/{id}"), &app.token).await.status(), StatusCode::NO_CONTENT);
    for agent in &agents {
        agent.wait_for("deletion", |c| c.len() == 1).await;
        assert!(agent.has(&keep) && !agent.has(&id));
    }
    assert!(!redis_domains(&app.redis, app.prefix()).await.contains_key(&id));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn flushed_redis_is_rebuilt_and_agents_keep_their_catalog_meanwhile(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool).await;
    let agent = app.agent("ams").await;
    for i in 0..5 {
        app.create_domain(domain(&format!("https://192.0.2.1/{i}"))).await;
    }
    agent.wait_for("five domains", |c| c.len() == 5).await;

    delete_prefix(&app.redis, app.prefix()).await.unwrap();
    // The agent's own version check sees no version and must not empty its catalog.
    eventually(WAIT, "reconciler to restore redis", || async {
        assert_eq!(agent.catalog.current().len(), 5, "the agent kept its catalog");
        let pg = app.pg_version().await;
        app.redis_version().await.filter(|v| *v == pg)
    })
    .await;
    assert_eq!(redis_domains(&app.redis, app.prefix()).await.len(), 5);

    // After the rebuild, changes flow again and the agent converges.
    app.create_domain(domain("https://192.0.2.1/after")).await;
    agent.wait_for("change after rebuild", |c| c.len() == 6).await;
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn drifted_hash_is_repaired_by_the_reconciler(pool: PgPool) {
    let app = TestApp::spawn_with(pool, quiet_config()).await;
    let id = app.create_domain(domain("https://192.0.2.1")).await;
    app.wait_published(1).await;
    let _: () = app.redis.hdel(format!("{}:domains", app.prefix()), &id).await.unwrap();
    let outcome = app.publisher.reconcile().await.unwrap();
    assert!(outcome.rebuilt);
    assert!(redis_domains(&app.redis, app.prefix()).await.contains_key(&id));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn redis_outage_keeps_agents_probing_and_converges_after_restart(pool: PgPool) {
    let mut redis = RedisServer::start().await;
    let prefix = random_prefix("outage");
    let app = TestApp::spawn_with(pool, agents_config(&prefix, &redis.url())).await;
    let agent = TestAgent::spawn(&redis.url(), &prefix, "ams").await;
    let first = app.create_domain(domain("https://192.0.2.1/1")).await;
    agent.wait_for("first domain", |c| c.len() == 1).await;

    redis.stop();
    // The API keeps accepting changes: Postgres is the source of truth.
    let second = app.create_domain(domain("https://192.0.2.1/2")).await;
    eventually(WAIT, "the agent to notice the outage", || async {
        (agent.metrics.redis_up.get() == 0).then_some(())
    })
    .await;
    assert!(agent.has(&first), "the agent kept its catalog while redis was down");

    // Redis comes back empty (it persists nothing): the control plane rebuilds it and the
    // agent reconnects, resyncs and sees the change made during the outage.
    redis.restart().await;
    agent.wait_for("convergence after restart", |c| c.len() == 2).await;
    assert!(agent.has(&first) && agent.has(&second));
    assert!(agent.metrics.redis_reconnects.get() >= 1);
    app.stop().await;
}

/// A control plane whose background publisher only runs at start and on commits, so a test
/// can damage Redis and drive the repair itself.
fn quiet_config() -> control_plane::Config {
    control_plane::Config {
        publish_poll_ms: 3_600_000,
        reconcile_interval_s: 3_600,
        ..agents_config(&random_prefix("quiet"), "redis://127.0.0.1:6379")
    }
}

/// Commits a domain straight to Postgres (change log included) without waking any publisher.
async fn commit_directly(pool: &PgPool, tenant: uuid::Uuid, url: &str) -> String {
    let policy = control_plane::domains::Policy {
        min_interval_s: 1,
        max_interval_s: 3600,
        max_timeout_ms: 60_000,
        allow_private_targets: true,
        regions: ["ams".to_owned()].into(),
        flap: control_plane::flap::Settings::from_config(&control_plane::Config::default()),
        degraded: control_plane::degraded::Settings::from_config(&control_plane::Config::default()),
    };
    let request = json!({ "url": url });
    let spec = DomainSpec::parse(request.as_object().unwrap(), &policy).unwrap();
    store::create(pool, tenant, &spec).await.unwrap().domain.id.to_string()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn changes_committed_while_no_publisher_ran_are_published_at_start(pool: PgPool) {
    // Commit changes straight to Postgres, as if the control plane crashed after commit and
    // before publishing: the change log holds them and Redis knows nothing.
    control_plane::startup::migrate(&pool).await.unwrap();
    control_plane::regions::seed(&pool, &["ams".to_owned()]).await.unwrap();
    let tenant = control_plane::tenants::create_tenant(&pool, "crashed").await.unwrap().tenant_id;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(commit_directly(&pool, tenant, &format!("https://192.0.2.1/{i}")).await);
    }
    store::delete(&pool, tenant, ids[0].parse().unwrap(), "test").await.unwrap();

    let prefix = random_prefix("crash");
    let agent = TestAgent::spawn("redis://127.0.0.1:6379", &prefix, "ams").await;
    let app = TestApp::spawn_with(pool, agents_config(&prefix, "redis://127.0.0.1:6379")).await;
    agent.wait_for("the two surviving domains", |c| c.len() == 2 && c.version() == 4).await;
    assert!(!agent.has(&ids[0]) && agent.has(&ids[1]) && agent.has(&ids[2]));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn publisher_resumes_from_redis_version_after_a_crash(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool.clone()).await;
    let agent = app.agent("ams").await;
    app.create_domain(domain("https://192.0.2.1/1")).await;
    agent.wait_for("first", |c| c.len() == 1).await;
    let prefix = app.prefix().to_owned();
    app.shutdown().await;

    // Commits while no publisher runs.
    let tenant = control_plane::tenants::create_tenant(&pool, "later").await.unwrap().tenant_id;
    commit_directly(&pool, tenant, "https://192.0.2.1/2").await;

    // A fresh publisher on the same prefix applies exactly the missing change, incrementally.
    let redis =
        shared::redis::builder("redis://127.0.0.1:6379", Default::default()).unwrap().build().unwrap();
    redis.init().await.unwrap();
    let publisher =
        Publisher::new(pool, redis.clone(), shared::RedisKeys::new(prefix.clone()), Default::default(), 1000);
    let outcome = publisher.catch_up().await.unwrap();
    assert_eq!((outcome.applied, outcome.rebuilt), (1, false));
    agent.wait_for("second", |c| c.len() == 2 && c.version() == 2).await;
    delete_prefix(&redis, &prefix).await.unwrap();
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn two_replicas_publish_every_version_once_in_order(pool: PgPool) {
    let prefix = random_prefix("replicas");
    let a = TestApp::spawn_with(pool.clone(), agents_config(&prefix, "redis://127.0.0.1:6379")).await;
    let b = TestApp::spawn_with(pool, agents_config(&prefix, "redis://127.0.0.1:6379")).await;
    let agent = a.agent("ams").await;

    // Watch the notices: versions must arrive strictly increasing by one.
    let subscriber = shared::redis::builder("redis://127.0.0.1:6379", Default::default())
        .unwrap()
        .build_subscriber_client()
        .unwrap();
    subscriber.init().await.unwrap();
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(format!("{prefix}:domains:changes")).await.unwrap();

    let writes = (0..40).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move { app.create_domain(domain(&format!("https://192.0.2.1/{i}"))).await }
    });
    let ids = futures::future::join_all(writes).await;
    let final_version = a.pg_version().await;
    assert_eq!(final_version, 40);

    let mut seen = Vec::new();
    while seen.last() != Some(&final_version) {
        let message = tokio::time::timeout(WAIT, messages.recv()).await.expect("notice").unwrap();
        let notice: shared::ChangeNotice = serde_json::from_str(&message.value.as_string().unwrap()).unwrap();
        seen.push(notice.version);
    }
    // The first notice is the start-up rebuild (version 0) unless it went out before the
    // subscription; after it, every version once, in order.
    assert!(seen[0] <= 1, "{seen:?}");
    let expected: Vec<u64> = (seen[0]..=final_version).collect();
    assert_eq!(seen, expected, "each version published once, in order");

    agent.wait_for("all forty domains", |c| c.len() == 40 && c.version() == 40).await;
    let in_redis = redis_domains(&a.redis, &prefix).await;
    for id in &ids {
        assert!(in_redis.contains_key(id));
    }
    let _ = subscriber.quit().await;
    b.stop().await;
    a.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn agent_metrics_and_debug_catalog_are_served(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool).await;
    let agent = app.agent("iad").await;
    app.create_domain(domain("https://192.0.2.1")).await;
    agent.wait_for("one domain", |c| c.len() == 1).await;
    let base = format!("http://{}", agent.addr);
    assert_eq!(reqwest::get(format!("{base}/readyz")).await.unwrap().status(), StatusCode::OK);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "probe_agent_catalog_domains 1",
        "probe_agent_catalog_version 1",
        "probe_agent_redis_reconnects_total",
        "probe_agent_catalog_resyncs_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let catalog: serde_json::Value =
        reqwest::get(format!("{base}/debug/catalog")).await.unwrap().json().await.unwrap();
    assert_eq!(catalog["region"], "iad");
    assert_eq!(catalog["domains"][0]["url"], "https://192.0.2.1/");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn redis_ahead_of_postgres_or_behind_a_pruned_log_is_rebuilt(pool: PgPool) {
    let app = TestApp::spawn_with(pool, quiet_config()).await;
    let id = app.create_domain(domain("https://192.0.2.1")).await;
    app.wait_published(1).await;
    let version_key = format!("{}:domains:version", app.prefix());

    // Ahead: e.g. Postgres restored from a backup older than what Redis saw.
    let _: () = app.redis.set(&version_key, 999, None, None, false).await.unwrap();
    let _: () = app.redis.hset(format!("{}:domains", app.prefix()), ("ghost", "{}")).await.unwrap();
    let outcome = app.publisher.catch_up().await.unwrap();
    // The app's own publisher task may get there first (a wake-up from the write above that
    // arrives late on a busy machine): either way Redis is rebuilt once, for being ahead.
    let metrics =
        app.http.get(format!("http://{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
    assert!(
        outcome.rebuilt || metrics.contains("config_rebuilds_total{reason=\"ahead\"} 1"),
        "no rebuild: {metrics}"
    );
    assert_eq!(app.redis_version().await, Some(1));
    let domains = redis_domains(&app.redis, app.prefix()).await;
    assert_eq!(domains.keys().collect::<Vec<_>>(), [&id]);

    // Behind a pruned log: the change log no longer reaches Redis's version.
    app.create_domain(domain("https://192.0.2.2")).await;
    app.wait_published(2).await;
    let (redis, pool, prefix) = (app.redis.clone(), app.pool.clone(), app.prefix().to_owned());
    app.shutdown().await;
    // The stopped application closed its Redis client; a restarted publisher brings its own.
    let publisher = Publisher::new(
        pool.clone(),
        redis.clone(),
        shared::RedisKeys::new(prefix.clone()),
        Default::default(),
        1000,
    );
    let _: () = redis.set(&version_key, 0, None, None, false).await.unwrap();
    sqlx::query("DELETE FROM config_changes WHERE version = 1").execute(&pool).await.unwrap();
    let outcome = publisher.catch_up().await.unwrap();
    assert!(outcome.rebuilt);
    let version: Option<u64> = redis.get(&version_key).await.unwrap();
    assert_eq!(version, Some(2));
    assert_eq!(redis_domains(&redis, &prefix).await.len(), 2);
    delete_prefix(&redis, &prefix).await.unwrap();
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn two_replicas_starting_on_an_empty_redis_rebuild_once(pool: PgPool) {
    let prefix = random_prefix("startrace");
    let subscriber = shared::redis::builder("redis://127.0.0.1:6379", Default::default())
        .unwrap()
        .build_subscriber_client()
        .unwrap();
    subscriber.init().await.unwrap();
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(format!("{prefix}:domains:changes")).await.unwrap();
    let config = agents_config(&prefix, "redis://127.0.0.1:6379");
    let (a, b) =
        tokio::join!(TestApp::spawn_with(pool.clone(), config.clone()), TestApp::spawn_with(pool, config));
    eventually(WAIT, "initial publication", || async { a.redis_version().await }).await;
    // A later change proves the publishers are past start-up; count the resync notices before it.
    a.create_domain(domain("https://192.0.2.1")).await;
    let mut resyncs = 0;
    loop {
        let message = tokio::time::timeout(WAIT, messages.recv()).await.expect("notice").unwrap();
        let notice: shared::ChangeNotice = serde_json::from_str(&message.value.as_string().unwrap()).unwrap();
        match notice.op {
            shared::ChangeOp::Resync => resyncs += 1,
            _ => break,
        }
    }
    assert_eq!(resyncs, 1);
    let _ = subscriber.quit().await;
    b.stop().await;
    a.stop().await;
}
