//! Flap digests against a real database: content built from recorded transitions and flap
//! periods, exactly once across replicas and restarts, late after downtime, nothing for a quiet
//! period, the `/v1/digests` API and an email digest. Time is a `ManualClock` moved by the test;
//! the rows the flap detector writes are inserted directly (the schema is the contract). The
//! default `digest_grace_s` (60 s) applies: a period is built from a minute after its end.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use control_plane::clock::{Clock, ManualClock};
use control_plane::digests::Scheduler;
use control_plane::metrics::{Metrics, ReasonLabels};
use control_plane::{tenants, Config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::{eventually, random_prefix};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp, WAIT};
use crate::notify::{smtp_config, smtp_receiver};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

/// `10:20:00` on the test day.
fn t(time: &str) -> DateTime<Utc> {
    at(&format!("2026-03-14T{time}Z"))
}

fn scheduler_with(pool: &PgPool, clock: &ManualClock, config: &Config, metrics: &Metrics) -> Scheduler {
    Scheduler::new(pool.clone(), config, Arc::new(clock.clone()), metrics.clone())
}

fn scheduler(pool: &PgPool, clock: &ManualClock) -> Scheduler {
    scheduler_with(pool, clock, &Config::default(), &Metrics::default())
}

/// Runs one step at the clock's time.
async fn step(scheduler: &Scheduler) -> usize {
    scheduler.run_due(scheduler.clock().now()).await.unwrap()
}

async fn tenant(pool: &PgPool) -> Uuid {
    tenants::create_tenant(pool, &format!("tenant-{}", Uuid::new_v4())).await.unwrap().tenant_id
}

async fn domain(pool: &PgPool, tenant_id: Uuid, url: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO domains (id, tenant_id, url, method, status_min, status_max, interval_s, timeout_ms, version)
         VALUES ($1, $2, $3, 'GET', 200, 299, 60, 10000, 1)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(url)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn set_state(pool: &PgPool, domain_id: Uuid, state: &str, since: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO domain_state (domain_id, state, since) VALUES ($1, $2, $3)
         ON CONFLICT (domain_id) DO UPDATE SET state = $2, since = $3",
    )
    .bind(domain_id)
    .bind(state)
    .bind(since)
    .execute(pool)
    .await
    .unwrap();
}

async fn channel(pool: &PgPool, tenant_id: Uuid, kind: &str) -> Uuid {
    let id = Uuid::new_v4();
    let config = match kind {
        "email" => json!({"to": ["oncall@example.com"]}),
        _ => json!({"url": format!("https://hooks.example.com/{id}")}),
    };
    let secret = (kind == "webhook").then_some("whsec_test");
    sqlx::query(
        "INSERT INTO channels (id, tenant_id, name, kind, config, secret) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(format!("{kind} channel"))
    .bind(kind)
    .bind(config)
    .bind(secret)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// A transition; a `down` one names its regions with an error.
async fn transition(
    pool: &PgPool,
    tenant_id: Uuid,
    domain_id: Uuid,
    when: DateTime<Utc>,
    from: &str,
    to: &str,
    regions: &[&str],
) {
    let regions: Vec<Value> = regions
        .iter()
        .map(|r| {
            if to == "down" {
                json!({"region": r, "error_kind": "status", "status_code": 503, "observed_at": when})
            } else {
                json!({"region": r, "error_kind": null, "status_code": 200, "observed_at": when})
            }
        })
        .collect();
    sqlx::query(
        "INSERT INTO domain_transitions (tenant_id, domain_id, at, from_state, to_state, regions, notified)
         VALUES ($1, $2, $3, $4, $5, $6, false)",
    )
    .bind(tenant_id)
    .bind(domain_id)
    .bind(when)
    .bind(from)
    .bind(to)
    .bind(Value::Array(regions))
    .execute(pool)
    .await
    .unwrap();
}

/// Alternating transitions every `minutes` from `from` (exclusive) to `to` (exclusive),
/// starting from `first_from`.
async fn flapping(
    pool: &PgPool,
    tenant_id: Uuid,
    domain_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    minutes: i64,
) -> usize {
    let mut state = "up";
    let mut when = from + chrono::Duration::minutes(minutes);
    let mut n = 0;
    while when < to {
        let next = if state == "up" { "down" } else { "up" };
        transition(pool, tenant_id, domain_id, when, state, next, &["ams", "iad"]).await;
        state = next;
        when += chrono::Duration::minutes(minutes);
        n += 1;
    }
    n
}

async fn flap(
    pool: &PgPool,
    tenant_id: Uuid,
    domain_id: Uuid,
    entered: DateTime<Utc>,
    left: Option<(DateTime<Utc>, &str)>,
) {
    sqlx::query(
        "INSERT INTO flap_periods (id, tenant_id, domain_id, entered_at, entered_score, left_at, settled)
         VALUES ($1, $2, $3, $4, 6, $5, $6)",
    )
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(domain_id)
    .bind(entered)
    .bind(left.map(|l| l.0))
    .bind(left.map(|l| l.1))
    .execute(pool)
    .await
    .unwrap();
}

#[derive(Debug)]
struct Queued {
    tenant_id: Uuid,
    channel_id: Uuid,
    dedup_key: String,
    kind: String,
    payload: Value,
}

async fn outbox(pool: &PgPool) -> Vec<Queued> {
    let rows: Vec<(Uuid, Uuid, String, String, Value)> = sqlx::query_as(
        "SELECT tenant_id, channel_id, dedup_key, kind, payload FROM notifications ORDER BY dedup_key, channel_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(tenant_id, channel_id, dedup_key, kind, payload)| Queued {
            tenant_id,
            channel_id,
            dedup_key,
            kind,
            payload,
        })
        .collect()
}

#[derive(Debug)]
struct StoredDigest {
    id: Uuid,
    tenant_id: Uuid,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    created_at: DateTime<Utc>,
    content: Value,
    text: String,
    html: String,
}

async fn digests(pool: &PgPool) -> Vec<StoredDigest> {
    type Row = (Uuid, Uuid, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, Value, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, tenant_id, period_start, period_end, created_at, content, text, html
         FROM digests ORDER BY period_start, tenant_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, tenant_id, period_start, period_end, created_at, content, text, html)| StoredDigest {
            id,
            tenant_id,
            period_start,
            period_end,
            created_at,
            content,
            text,
            html,
        })
        .collect()
}

async fn cursor(pool: &PgPool) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT next_period_start FROM digest_cursor WHERE id = 1")
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_digest_reports_the_recorded_transitions_down_time_and_regions(pool: PgPool) {
    let clock = ManualClock::new(t("10:20:00"));
    let metrics = Metrics::default();
    let scheduler = scheduler_with(&pool, &clock, &Config::default(), &metrics);
    // First run: the cursor starts at the current period.
    assert_eq!(step(&scheduler).await, 0);
    assert_eq!(cursor(&pool).await, Some(t("10:00:00")));

    let tenant_a = tenant(&pool).await;
    let webhook = channel(&pool, tenant_a, "webhook").await;
    let slack = channel(&pool, tenant_a, "slack").await;
    let api = domain(&pool, tenant_a, "https://api.example.com/health").await;
    // Down since before the period; four changes in it; one exactly at its end (not counted).
    transition(&pool, tenant_a, api, t("09:50:00"), "up", "down", &["ams"]).await;
    flap(&pool, tenant_a, api, t("09:55:00"), None).await;
    transition(&pool, tenant_a, api, t("10:10:00"), "down", "up", &["ams", "iad"]).await;
    transition(&pool, tenant_a, api, t("10:20:00"), "up", "down", &["iad", "sin"]).await;
    transition(&pool, tenant_a, api, t("10:35:00"), "down", "up", &["sin"]).await;
    transition(&pool, tenant_a, api, t("10:50:00"), "up", "down", &["ams"]).await;
    transition(&pool, tenant_a, api, t("11:00:00"), "down", "up", &["ams"]).await;
    set_state(&pool, api, "up", t("11:00:00")).await;
    // A domain deleted since: no row in `domains`, its history stays.
    let gone = Uuid::new_v4();
    flap(&pool, tenant_a, gone, t("10:05:00"), Some((t("10:40:00"), "deleted"))).await;
    transition(&pool, tenant_a, gone, t("10:06:00"), "unknown", "down", &["ams"]).await;
    transition(&pool, tenant_a, gone, t("10:30:00"), "down", "up", &["ams"]).await;
    // Another tenant flapping, and one with a channel but nothing flapping.
    let tenant_b = tenant(&pool).await;
    channel(&pool, tenant_b, "webhook").await;
    let b_domain = domain(&pool, tenant_b, "https://b.example.net/").await;
    flap(&pool, tenant_b, b_domain, t("10:30:00"), None).await;
    transition(&pool, tenant_b, b_domain, t("10:31:00"), "up", "down", &["sin"]).await;
    let quiet = tenant(&pool).await;
    channel(&pool, quiet, "webhook").await;
    let calm = domain(&pool, quiet, "https://calm.example.org/").await;
    transition(&pool, quiet, calm, t("10:15:00"), "up", "down", &["ams"]).await;

    // Not before the period has ended.
    clock.set(t("10:59:59"));
    assert_eq!(step(&scheduler).await, 0);
    assert!(digests(&pool).await.is_empty());

    clock.set(t("11:01:05"));
    assert_eq!(step(&scheduler).await, 2);
    assert_eq!(cursor(&pool).await, Some(t("11:00:00")));
    let stored = digests(&pool).await;
    assert_eq!(stored.len(), 2);
    let a = stored.iter().find(|d| d.tenant_id == tenant_a).unwrap();
    assert_eq!((a.period_start, a.period_end), (t("10:00:00"), t("11:00:00")));
    assert_eq!(a.created_at, t("11:01:05"));
    let c = &a.content;
    assert_eq!(c["summary"], "Flap digest 10:00–11:00 UTC: 2 domains flapped, 6 state changes");
    assert_eq!(c["domain_count"], 2);
    assert_eq!(c["transition_count"], 6);
    let first = &c["domains"][0];
    assert_eq!(first["url"], "https://api.example.com/health");
    assert_eq!(first["transition_count"], 4);
    // 10:00–10:10, 10:20–10:35, 10:50–11:00.
    assert_eq!(first["down_seconds"], 35 * 60);
    assert_eq!(first["regions"], json!(["ams", "iad", "sin"]));
    assert_eq!(first["first_transition_at"], "2026-03-14T10:10:00Z");
    assert_eq!(first["last_transition_at"], "2026-03-14T10:50:00Z");
    assert_eq!(first["state_at_start"], "down");
    assert_eq!(first["state_at_end"], "down");
    assert_eq!(first["current_state"], "up");
    assert_eq!(first["still_flapping"], true);
    let timeline = first["timeline"].as_str().unwrap();
    assert_eq!(
        timeline,
        format!("{}{}{}{}{}", "#".repeat(10), ".".repeat(10), "#".repeat(15), ".".repeat(15), "#".repeat(10))
    );
    let second = &c["domains"][1];
    assert_eq!(second["url"], gone.to_string());
    assert_eq!(second["deleted"], true);
    assert_eq!(second["down_seconds"], 24 * 60);
    assert_eq!(second["settled"], "deleted");
    assert_eq!(second["current_state"], "deleted");
    assert_eq!(second["still_flapping"], false);
    assert!(a.text.starts_with("Flap digest 10:00–11:00 UTC: 2 domains flapped, 6 state changes\n"));
    assert!(a.text.contains("█"), "{}", a.text);
    assert!(a.html.contains("https://api.example.com/health"));

    let b = stored.iter().find(|d| d.tenant_id == tenant_b).unwrap();
    assert_eq!(b.content["domain_count"], 1);
    assert_eq!(b.content["domains"][0]["down_seconds"], 29 * 60);

    // One outbox row per channel of each digest's tenant; none for the quiet tenant.
    let queued = outbox(&pool).await;
    assert_eq!(queued.len(), 3);
    assert!(queued.iter().all(|q| q.tenant_id != quiet && q.kind == "flap_digest"));
    let key_a = format!("digest:{tenant_a}:{}", t("10:00:00").timestamp());
    let mut a_channels: Vec<Uuid> =
        queued.iter().filter(|q| q.dedup_key == key_a).map(|q| q.channel_id).collect();
    a_channels.sort();
    let mut expected = vec![webhook, slack];
    expected.sort();
    assert_eq!(a_channels, expected);
    let payload = &queued.iter().find(|q| q.dedup_key == key_a).unwrap().payload;
    assert_eq!(payload["kind"], "flap_digest");
    assert_eq!(payload["summary"], c["summary"]);
    assert_eq!(payload["occurred_at"], "2026-03-14T11:00:00Z");
    let details = &payload["details"];
    assert_eq!(details["digest_id"], a.id.to_string());
    assert_eq!(details["period_start"], "2026-03-14T10:00:00Z");
    assert_eq!(details["period_end"], "2026-03-14T11:00:00Z");
    assert_eq!(details["domains"], c["domains"]);
    assert_eq!(details["text"], a.text.as_str());
    assert_eq!(details["html"], a.html.as_str());

    assert_eq!(metrics.digests_built.get(), 2);
    assert_eq!(metrics.digest_notifications.get(), 3);
    // Nothing more to do.
    assert_eq!(step(&scheduler).await, 0);
    assert_eq!(outbox(&pool).await.len(), 3);
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_quiet_period_sends_nothing_and_a_fresh_install_skips_the_past(pool: PgPool) {
    let tenant_a = tenant(&pool).await;
    channel(&pool, tenant_a, "webhook").await;
    let d = domain(&pool, tenant_a, "https://a.example.com/").await;
    // Flapping from 08:10 to 09:40: before the first run of the scheduler, at 10:30.
    flap(&pool, tenant_a, d, t("08:10:00"), Some((t("09:40:00"), "up"))).await;
    flapping(&pool, tenant_a, d, t("08:00:00"), t("09:40:00"), 7).await;
    let clock = ManualClock::new(t("10:30:00"));
    let scheduler = scheduler(&pool, &clock);
    assert_eq!(step(&scheduler).await, 0);
    assert_eq!(cursor(&pool).await, Some(t("10:00:00")), "a fresh install starts at the current period");

    // A transition in 10:00–11:00 but no flap mode: a quiet period.
    transition(&pool, tenant_a, d, t("10:45:00"), "up", "down", &["ams"]).await;
    clock.set(t("11:01:01"));
    assert_eq!(step(&scheduler).await, 0);
    assert_eq!(cursor(&pool).await, Some(t("11:00:00")), "the period is done, with nothing to send");
    assert!(digests(&pool).await.is_empty());
    assert!(outbox(&pool).await.is_empty());
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn two_replicas_build_each_digest_exactly_once(pool: PgPool) {
    // A second pool onto the same database: another replica.
    let options = pool.connect_options().as_ref().clone();
    let other = PgPoolOptions::new().max_connections(4).connect_with(options).await.unwrap();
    let clock = ManualClock::new(t("10:00:30"));
    let (metrics_a, metrics_b) = (Metrics::default(), Metrics::default());
    let a = scheduler_with(&pool, &clock, &Config::default(), &metrics_a);
    let b = scheduler_with(&other, &clock, &Config::default(), &metrics_b);
    assert_eq!(step(&a).await + step(&b).await, 0);

    let mut tenants_ids = Vec::new();
    for n in 0..3 {
        let tenant_id = tenant(&pool).await;
        channel(&pool, tenant_id, "webhook").await;
        channel(&pool, tenant_id, "slack").await;
        let d = domain(&pool, tenant_id, &format!("https://t{n}.example.com/")).await;
        flap(&pool, tenant_id, d, t("09:30:00"), None).await;
        flapping(&pool, tenant_id, d, t("10:00:00"), t("14:00:00"), 6 + n).await;
        tenants_ids.push(tenant_id);
    }

    // While one replica holds the cursor, the other leaves at once.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM digest_cursor WHERE id = 1 FOR UPDATE").execute(&mut *holder).await.unwrap();
    clock.set(t("14:01:01"));
    assert_eq!(step(&b).await, 0);
    holder.rollback().await.unwrap();
    assert_eq!(metrics_b.digest_periods.get(), 0);

    // Both at once, four periods due: every period built by one replica only. `ON CONFLICT` and
    // the dedup keys would hide a period built twice from the stored rows, so what each replica
    // attempted is counted: periods done and digests found already stored.
    let now = clock.now();
    let (x, y) = tokio::join!(a.run_due(now), b.run_due(now));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x + y, 12, "3 tenants × 4 periods in the concurrent round");
    let (x2, y2) = tokio::join!(b.run_due(now), a.run_due(now));
    assert_eq!((x2.unwrap(), y2.unwrap()), (0, 0), "nothing left for a second round");
    assert_eq!(
        metrics_a.digest_periods.get() + metrics_b.digest_periods.get(),
        4,
        "each period built by exactly one replica"
    );
    for (name, metrics) in [("a", &metrics_a), ("b", &metrics_b)] {
        assert_eq!(duplicates(metrics), 0, "replica {name} found a digest it was building already stored");
    }
    assert_eq!(cursor(&pool).await, Some(t("14:00:00")));
    let stored = digests(&pool).await;
    assert_eq!(stored.len(), 12);
    let queued = outbox(&pool).await;
    assert_eq!(queued.len(), 24, "one row per channel and digest");
    let mut keys: Vec<(String, Uuid)> = queued.iter().map(|q| (q.dedup_key.clone(), q.channel_id)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 24);
    for tenant_id in &tenants_ids {
        let starts: Vec<DateTime<Utc>> =
            stored.iter().filter(|d| d.tenant_id == *tenant_id).map(|d| d.period_start).collect();
        assert_eq!(starts, [t("10:00:00"), t("11:00:00"), t("12:00:00"), t("13:00:00")]);
        // Exactly one outbox row per channel of the tenant and period.
        for start in &starts {
            let key = format!("digest:{tenant_id}:{}", start.timestamp());
            let rows: Vec<&Queued> = queued.iter().filter(|q| q.dedup_key == key).collect();
            assert_eq!(rows.len(), 2, "{key}");
            assert!(rows.iter().all(|q| q.tenant_id == *tenant_id));
            assert_ne!(rows[0].channel_id, rows[1].channel_id, "{key}");
        }
    }
    assert_eq!(metrics_a.digests_built.get() + metrics_b.digests_built.get(), 12);
    assert_eq!(metrics_a.digest_notifications.get() + metrics_b.digest_notifications.get(), 24);
    other.close().await;
}

async fn starts_of(pool: &PgPool, tenant_id: Uuid) -> Vec<DateTime<Utc>> {
    digests(pool).await.into_iter().filter(|d| d.tenant_id == tenant_id).map(|d| d.period_start).collect()
}

fn errors(metrics: &Metrics, reason: &str) -> u64 {
    metrics.digest_errors.get_or_create(&ReasonLabels { reason: reason.into() }).get()
}

fn duplicates(metrics: &Metrics) -> u64 {
    errors(metrics, "duplicate")
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_period_is_built_only_after_its_grace_so_late_commits_are_included(pool: PgPool) {
    let tenant_a = tenant(&pool).await;
    channel(&pool, tenant_a, "webhook").await;
    let d = domain(&pool, tenant_a, "https://a.example.com/").await;
    let clock = ManualClock::new(t("10:00:10"));
    let config = Config { digest_grace_s: 45, ..Config::default() };
    let scheduler = scheduler_with(&pool, &clock, &config, &Metrics::default());
    assert_eq!(step(&scheduler).await, 0);
    flap(&pool, tenant_a, d, t("10:02:00"), None).await;
    flapping(&pool, tenant_a, d, t("10:00:00"), t("10:59:00"), 5).await;

    // The period has ended but the grace has not passed: nothing yet.
    for now in [t("11:00:00"), t("11:00:30"), at("2026-03-14T11:00:44.999Z")] {
        clock.set(now);
        assert_eq!(step(&scheduler).await, 0, "{now}");
        assert_eq!(cursor(&pool).await, Some(t("10:00:00")), "{now}");
    }
    // A transition stamped just before the end whose transaction committed after it.
    transition(&pool, tenant_a, d, at("2026-03-14T10:59:59.500Z"), "down", "up", &["ams"]).await;

    clock.set(t("11:00:45"));
    assert_eq!(step(&scheduler).await, 1);
    assert_eq!(cursor(&pool).await, Some(t("11:00:00")));
    let stored = digests(&pool).await;
    assert_eq!(stored.len(), 1);
    let first = &stored[0].content["domains"][0];
    assert_eq!(first["transition_count"], 12, "11 every 5 minutes and the late one");
    assert_eq!(first["last_transition_at"], "2026-03-14T10:59:59.500Z");
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_tenant_whose_digest_fails_holds_back_neither_the_others_nor_the_next_period(pool: PgPool) {
    let clock = ManualClock::new(t("10:00:10"));
    let metrics = Metrics::default();
    let scheduler = scheduler_with(&pool, &clock, &Config::default(), &metrics);
    assert_eq!(step(&scheduler).await, 0);
    let (bad, good) = (tenant(&pool).await, tenant(&pool).await);
    for tenant_id in [bad, good] {
        channel(&pool, tenant_id, "webhook").await;
        let d = domain(&pool, tenant_id, &format!("https://{tenant_id}.example.com/")).await;
        flap(&pool, tenant_id, d, t("09:30:00"), None).await;
        flapping(&pool, tenant_id, d, t("10:00:00"), t("12:00:00"), 7).await;
    }
    // A data error storing one tenant's digests.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_digest() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.tenant_id = '{bad}' THEN RAISE EXCEPTION 'refused for the test'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_digest BEFORE INSERT ON digests FOR EACH ROW EXECUTE FUNCTION refuse_digest();"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let stored_for = |tenant_id: Uuid| starts_of(&pool, tenant_id);

    // The good tenant's digest is stored and sent; the period stays to try the bad one again.
    clock.set(t("11:01:00"));
    assert_eq!(step(&scheduler).await, 1);
    assert_eq!(stored_for(good).await, [t("10:00:00")]);
    assert!(stored_for(bad).await.is_empty());
    assert_eq!(cursor(&pool).await, Some(t("10:00:00")));
    assert_eq!(errors(&metrics, "store"), 1);
    // Tried again: the good tenant's digest is neither built nor sent twice.
    clock.set(t("11:30:00"));
    assert_eq!(step(&scheduler).await, 0);
    assert_eq!(errors(&metrics, "store"), 2);
    assert_eq!(outbox(&pool).await.len(), 1);
    assert_eq!(duplicates(&metrics), 0);
    assert_eq!(cursor(&pool).await, Some(t("10:00:00")));

    // Fixed before the next period is due: the bad tenant's digest is built late, not skipped.
    sqlx::query("DROP TRIGGER refuse_digest ON digests").execute(&pool).await.unwrap();
    clock.set(t("11:40:00"));
    assert_eq!(step(&scheduler).await, 1);
    assert_eq!(stored_for(bad).await, [t("10:00:00")]);
    assert_eq!(cursor(&pool).await, Some(t("11:00:00")));
    assert_eq!(outbox(&pool).await.len(), 2);

    // Failing until the next period is due: given up (logged and counted), and the next period
    // is built for the others in the same step.
    sqlx::query(
        "CREATE TRIGGER refuse_digest BEFORE INSERT ON digests FOR EACH ROW EXECUTE FUNCTION refuse_digest()",
    )
    .execute(&pool)
    .await
    .unwrap();
    clock.set(t("12:01:00"));
    assert_eq!(step(&scheduler).await, 1);
    assert_eq!(cursor(&pool).await, Some(t("11:00:00")));
    assert_eq!(errors(&metrics, "skipped"), 0);
    clock.set(t("13:01:00"));
    assert_eq!(step(&scheduler).await, 1, "the good tenant's 12:00 digest");
    assert_eq!(errors(&metrics, "skipped"), 1);
    assert_eq!(stored_for(good).await, [t("10:00:00"), t("11:00:00"), t("12:00:00")]);
    assert_eq!(stored_for(bad).await, [t("10:00:00")]);
    // 12:00 is now held for the bad tenant in turn, until 14:01.
    assert_eq!(cursor(&pool).await, Some(t("12:00:00")));
    assert_eq!(metrics.digest_periods.get(), 2);
    assert_eq!(duplicates(&metrics), 0);
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_restart_at_the_top_of_the_hour_sends_one_digest(pool: PgPool) {
    let tenant_a = tenant(&pool).await;
    let webhook = channel(&pool, tenant_a, "webhook").await;
    let email = channel(&pool, tenant_a, "email").await;
    let d = domain(&pool, tenant_a, "https://a.example.com/").await;
    flap(&pool, tenant_a, d, t("10:02:00"), None).await;
    flapping(&pool, tenant_a, d, t("10:00:00"), t("11:00:00"), 5).await;

    let clock = ManualClock::new(t("10:00:10"));
    let before = scheduler(&pool, &clock);
    assert_eq!(step(&before).await, 0);
    clock.set(at("2026-03-14T11:00:59.999Z"));
    assert_eq!(step(&before).await, 0);
    drop(before);

    // A new instance, the moment the period is due (its end plus the grace).
    clock.set(t("11:01:00"));
    let after = scheduler(&pool, &clock);
    assert_eq!(step(&after).await, 1);
    assert_eq!(step(&after).await, 0);
    // And yet another one a little later.
    clock.set(t("11:01:03"));
    assert_eq!(step(&scheduler(&pool, &clock)).await, 0);

    assert_eq!(digests(&pool).await.len(), 1);
    let queued = outbox(&pool).await;
    let mut channels: Vec<Uuid> = queued.iter().map(|q| q.channel_id).collect();
    channels.sort();
    let mut expected = vec![webhook, email];
    expected.sort();
    assert_eq!(channels, expected, "one outbox row per channel");
}

/// The cause of a restart's missed digest: a step that found nothing due used to leave its
/// `FOR UPDATE` transaction to the pool's background rollback, so right after it the cursor was
/// still locked and the next replica's `SKIP LOCKED` built nothing. Every step ends its
/// transaction before returning: the cursor is free at once.
#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_step_leaves_the_cursor_unlocked_when_it_returns(pool: PgPool) {
    let tenant_a = tenant(&pool).await;
    let d = domain(&pool, tenant_a, "https://a.example.com/").await;
    flap(&pool, tenant_a, d, t("10:02:00"), None).await;
    let clock = ManualClock::new(t("10:00:10"));
    let scheduler = scheduler(&pool, &clock);
    let free = || async {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        let locked = sqlx::query("SELECT 1 FROM digest_cursor WHERE id = 1 FOR UPDATE NOWAIT")
            .execute(&mut *tx)
            .await
            .is_err();
        tx.rollback().await.unwrap();
        !locked
    };
    for now in [t("10:00:10"), t("10:59:59"), t("11:00:30"), t("11:01:00"), t("11:01:05")] {
        clock.set(now);
        step(&scheduler).await;
        assert!(free().await, "the cursor is still locked right after the step at {now}");
    }
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn periods_missed_while_down_are_sent_late_and_a_changed_period_is_aligned(pool: PgPool) {
    let tenant_a = tenant(&pool).await;
    channel(&pool, tenant_a, "webhook").await;
    let d = domain(&pool, tenant_a, "https://a.example.com/").await;
    let clock = ManualClock::new(t("10:30:00"));
    assert_eq!(step(&scheduler(&pool, &clock)).await, 0);
    // Flapping from 10:10 to 12:30 while no control plane runs.
    flap(&pool, tenant_a, d, t("10:10:00"), Some((t("12:30:00"), "up"))).await;
    flapping(&pool, tenant_a, d, t("10:00:00"), t("12:30:00"), 4).await;

    // Back at 13:15: the three finished periods are built now, the current one is not.
    clock.set(t("13:15:00"));
    let back = scheduler(&pool, &clock);
    assert_eq!(step(&back).await, 3);
    let stored = digests(&pool).await;
    let starts: Vec<DateTime<Utc>> = stored.iter().map(|d| d.period_start).collect();
    assert_eq!(starts, [t("10:00:00"), t("11:00:00"), t("12:00:00")]);
    assert!(stored.iter().all(|d| d.created_at == t("13:15:00")), "sent late, not skipped");
    assert_eq!(stored[2].content["domains"][0]["still_flapping"], false);
    assert_eq!(stored[2].content["domains"][0]["settled"], "up");
    let keys: Vec<String> = outbox(&pool).await.into_iter().map(|q| q.dedup_key).collect();
    assert_eq!(
        keys,
        ["10:00:00", "11:00:00", "12:00:00"]
            .map(|s| format!("digest:{tenant_a}:{}", t(s).timestamp()))
            .to_vec()
    );
    assert_eq!(cursor(&pool).await, Some(t("13:00:00")));

    // The flap period ended at 12:30: 13:00–14:00 is quiet.
    clock.set(t("14:01:00"));
    assert_eq!(step(&back).await, 0);
    assert_eq!(cursor(&pool).await, Some(t("14:00:00")));

    // Restarted with 90-minute periods: the cursor (14:00) is aligned down to 13:30.
    flap(&pool, tenant_a, d, t("13:40:00"), Some((t("14:20:00"), "down"))).await;
    transition(&pool, tenant_a, d, t("13:45:00"), "up", "down", &["ams"]).await;
    let config = Config { digest_period_s: 5_400, ..Config::default() };
    let ninety = scheduler_with(&pool, &clock, &config, &Metrics::default());
    clock.set(t("15:00:59"));
    assert_eq!(step(&ninety).await, 0);
    clock.set(t("15:01:00"));
    assert_eq!(step(&ninety).await, 1);
    let last = digests(&pool).await.pop().unwrap();
    assert_eq!((last.period_start, last.period_end), (t("13:30:00"), t("15:00:00")));
    assert_eq!(last.content["summary"], "Flap digest 13:30–15:00 UTC: 1 domain flapped, 1 state change");
    assert_eq!(cursor(&pool).await, Some(t("15:00:00")));
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn the_digests_api_shows_a_tenant_only_its_own_digests(pool: PgPool) {
    let clock = ManualClock::new(t("10:05:00"));
    let config = test_config(&random_prefix("cp"), "redis://127.0.0.1:6379");
    let app = TestApp::spawn_with_clock(pool.clone(), config.clone(), Arc::new(clock.clone())).await;
    let tenant_a = tenants::authenticate(&pool, &app.token).await.unwrap().unwrap().tenant_id;
    let token_b = app.other_tenant().await;
    let tenant_b = tenants::authenticate(&pool, &token_b).await.unwrap().unwrap().tenant_id;
    // Another replica's scheduler next to the application's own (both read the manual clock).
    let scheduler = scheduler_with(&pool, &clock, &config, &Metrics::default());
    step(&scheduler).await;
    assert_eq!(cursor(&pool).await, Some(t("10:00:00")));
    for (tenant_id, url) in [(tenant_a, "https://a.example.com/"), (tenant_b, "https://b.example.com/")] {
        let d = domain(&pool, tenant_id, url).await;
        flap(&pool, tenant_id, d, t("10:10:00"), None).await;
        flapping(&pool, tenant_id, d, t("10:00:00"), t("11:00:00"), 10).await;
    }
    clock.set(t("11:01:02"));
    step(&scheduler).await;
    // The application's scheduler may have taken the period first: wait until it is stored.
    eventually(WAIT, "two digests", || async { (digests(&pool).await.len() == 2).then_some(()) }).await;
    let stored = digests(&pool).await;
    let a_id = stored.iter().find(|d| d.tenant_id == tenant_a).unwrap().id;
    let b_id = stored.iter().find(|d| d.tenant_id == tenant_b).unwrap().id;

    let listed: Value = app.get("/v1/digests", &app.token).await.json().await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["id"], a_id.to_string());
    assert_eq!(items[0]["period_start"], "2026-03-14T10:00:00Z");
    assert_eq!(items[0]["period_end"], "2026-03-14T11:00:00Z");
    assert_eq!(items[0]["created_at"], "2026-03-14T11:01:02Z");
    assert_eq!(items[0]["domain_count"], 1);
    assert_eq!(items[0]["summary"], "Flap digest 10:00–11:00 UTC: 1 domain flapped, 5 state changes");

    let full: Value = app.get(&format!("/v1/digests/{a_id}"), &app.token).await.json().await.unwrap();
    assert_eq!(full["content"]["domains"][0]["url"], "https://a.example.com/");
    assert!(full["text"].as_str().unwrap().starts_with("Flap digest 10:00–11:00 UTC"));
    assert!(full["html"].as_str().unwrap().contains("<table"));

    // Tenant isolation: B sees only its own, and A's digest is a 404 for B.
    let b_listed: Value = app.get("/v1/digests", &token_b).await.json().await.unwrap();
    assert_eq!(b_listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(b_listed["items"][0]["id"], b_id.to_string());
    assert_eq!(app.get(&format!("/v1/digests/{a_id}"), &token_b).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("/v1/digests/{b_id}"), &app.token).await.status(), StatusCode::NOT_FOUND);

    // Filters on period_start: since inclusive, until exclusive.
    for (query, n) in [
        ("since=2026-03-14T10:00:00Z", 1),
        ("since=2026-03-14T10:00:01Z", 0),
        ("until=2026-03-14T10:00:00Z", 0),
        ("until=2026-03-14T10:00:01Z&limit=1", 1),
    ] {
        let got: Value = app.get(&format!("/v1/digests?{query}"), &app.token).await.json().await.unwrap();
        assert_eq!(got["items"].as_array().unwrap().len(), n, "{query}: {got}");
    }
    for bad in ["limit=0", "limit=501", "since=yesterday", "tenant=x"] {
        let response = app.get(&format!("/v1/digests?{bad}"), &app.token).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(app.get("/v1/digests/not-an-id", &app.token).await.status(), StatusCode::NOT_FOUND);
    let anonymous = app.http.get(app.url("/v1/digests")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// The parts of a MIME message as (headers, decoded body).
fn mime_parts(message: &str) -> Vec<(String, String)> {
    // Undo SMTP dot-stuffing.
    let message: String = message
        .split("\r\n")
        .map(|line| line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\r\n");
    let boundary = message
        .split("boundary=")
        .nth(1)
        .map(|rest| rest.trim_start_matches('"').split(['"', '\r', ';']).next().unwrap().to_owned())
        .expect("a multipart message");
    let delimiter = format!("--{boundary}");
    message
        .split(&delimiter)
        .skip(1)
        .filter(|part| !part.starts_with("--"))
        .map(|part| {
            let (headers, body) = part.split_once("\r\n\r\n").unwrap();
            let body = body.trim_end_matches("\r\n");
            let lower = headers.to_ascii_lowercase();
            let decoded = if lower.contains("content-transfer-encoding: base64") {
                let compact: String = body.split_whitespace().collect();
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(compact).unwrap()).unwrap()
            } else if lower.contains("content-transfer-encoding: quoted-printable") {
                quoted_printable(body)
            } else {
                body.to_owned()
            };
            (headers.to_owned(), decoded.replace("\r\n", "\n"))
        })
        .collect()
}

fn quoted_printable(body: &str) -> String {
    let bytes = body.replace("=\r\n", "").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn an_email_digest_arrives_as_text_and_html(pool: PgPool) {
    let (smtp, messages) = smtp_receiver().await;
    let config = smtp_config(smtp);
    let clock = ManualClock::new(t("10:05:00"));
    let app = TestApp::spawn_with_clock(pool.clone(), config.clone(), Arc::new(clock.clone())).await;
    let created = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": "on call", "kind": "email", "to": ["oncall@example.com"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let tenant_a = tenants::authenticate(&pool, &app.token).await.unwrap().unwrap().tenant_id;
    let scheduler = scheduler_with(&pool, &clock, &config, &Metrics::default());
    step(&scheduler).await;
    let d = domain(&pool, tenant_a, "https://shop.example.com/?a=<b>&c").await;
    flap(&pool, tenant_a, d, t("10:10:00"), None).await;
    flapping(&pool, tenant_a, d, t("10:00:00"), t("11:00:00"), 8).await;

    clock.set(t("11:01:01"));
    step(&scheduler).await;
    let message =
        eventually(WAIT, "the digest email", || async { messages.lock().unwrap().first().cloned() }).await;
    let stored = digests(&pool).await;
    assert_eq!(stored.len(), 1);
    assert!(message.contains("multipart/alternative"), "{message}");
    assert!(message.contains("Subject: "), "{message}");
    let parts = mime_parts(&message);
    assert_eq!(parts.len(), 2, "{message}");
    let text = parts.iter().find(|(h, _)| h.contains("text/plain")).expect("a text part");
    let html = parts.iter().find(|(h, _)| h.contains("text/html")).expect("an HTML part");
    assert_eq!(text.1.trim_end(), stored[0].text.trim_end(), "the text part is the digest text");
    assert_eq!(html.1.trim_end(), stored[0].html.trim_end(), "the HTML part is the digest HTML");
    assert!(text.1.contains("Flap digest 10:00–11:00 UTC: 1 domain flapped, 7 state changes"));
    assert!(text.1.contains('█') && text.1.contains('▁'));
    assert!(html.1.contains("https://shop.example.com/?a=&lt;b&gt;&amp;c"));
    app.stop().await;
}
