//! `flap-hour`: a simulated hour, on a compressed clock, of many flapping domains and a few
//! real outages, through the control plane's own consensus, flap detection and digest code
//! against a scratch database.
//!
//! Every region's observations are written with simulated timestamps and each domain is
//! evaluated at its simulated instant; the flap sweeper and the digest scheduler read the same
//! manual clock. Changes reach consensus in rounds of `--round-s` simulated seconds, as the
//! observation queue hands consensus whatever arrived since its last round: one upsert per
//! region for the round's observations, then one evaluation transaction per
//! [`EVALUATE_BATCH`] domains, each domain at its own instant. Domains are inserted directly (no agent reads them) and nothing is delivered:
//! what would be sent is the outbox (one webhook channel per tenant), counted per kind.
//!
//! Targets: no individual alert for a flapping domain once it is in flap mode, one digest per
//! tenant for the hour (and none more on a second pass), one down alert per real outage.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use fred::interfaces::ClientLike;
use rand::Rng;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use control_plane::clock::{Clock, ManualClock};
use control_plane::consensus::{Claim, Consensus, DomainObservation, ObservedBatch, Run, EVALUATE_BATCH};

use crate::env::{redis_client, Scratch};
use crate::stats::percentile_ms;

const REGIONS: [&str; 3] = ["ams", "iad", "sin"];
const HOUR: i64 = 3_600;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Domains that flap (every 2 to 5 minutes).
    #[arg(long, default_value_t = 1_000)]
    domains: usize,
    /// Domains that go down once and come back.
    #[arg(long, default_value_t = 100)]
    outages: usize,
    /// Tenants the domains are spread over (one webhook channel each).
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Simulated seconds of changes that reach consensus together (one round); 1 evaluates
    /// every second's changes on their own. The flap check runs every 30 simulated seconds.
    #[arg(long, default_value_t = 30)]
    round_s: i64,
}

/// One domain's planned changes: (second of the hour, up?).
struct Plan {
    id: Uuid,
    flapping: bool,
    changes: Vec<(i64, bool)>,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(args.tenants >= 1 && args.domains + args.outages >= args.tenants, "too few domains");
    anyhow::ensure!((1..=30).contains(&args.round_s), "--round-s must be 1 to 30");
    let scratch = Scratch::create("flap").await?;
    let result = simulate(&args, &scratch).await;
    scratch.cleanup().await?;
    result
}

fn plans(args: &Args, ids: &[Uuid]) -> Vec<Plan> {
    let mut rng = rand::thread_rng();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let flapping = i < args.domains;
            let mut changes = vec![(0, true)];
            if flapping {
                let (mut at, mut up) = (rng.gen_range(60..300), false);
                while at < HOUR {
                    changes.push((at, up));
                    up = !up;
                    at += rng.gen_range(120..=300);
                }
            } else {
                let down = rng.gen_range(300..2_400);
                changes.push((down, false));
                changes.push((down + rng.gen_range(300..900), true));
            }
            Plan { id: *id, flapping, changes }
        })
        .collect()
}

async fn simulate(args: &Args, scratch: &Scratch) -> anyhow::Result<Value> {
    let mut config = control_plane::Config {
        database_url: scratch.db.url.clone(),
        redis_prefix: scratch.prefix.clone(),
        regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
        allow_private_targets: true,
        ..control_plane::Config::default()
    };
    config.redis_url = crate::env::redis_url();
    let pool = control_plane::startup::connect_database(&config).await?;
    control_plane::startup::migrate(&pool).await?;
    control_plane::regions::seed(&pool, &config.regions).await?;

    // The hour simulated: the last full hour before now, so every timestamp is in the past.
    let now = Utc::now().timestamp();
    let start = Utc.timestamp_opt((now / HOUR - 2) * HOUR, 0).single().context("start")?;
    let clock = ManualClock::new(start);
    let metrics = control_plane::metrics::Metrics::default();
    let redis = redis_client().await?;
    let consensus = Consensus::new(
        pool.clone(),
        redis.clone(),
        shared::keys::RedisKeys::new(&config.redis_prefix),
        metrics.clone(),
        control_plane::consensus::Settings::from_config(&config),
    )
    .with_clock(Arc::new(clock.clone()));
    let sweeper =
        control_plane::flap::Sweeper::new(pool.clone(), metrics.clone(), &config, Arc::new(clock.clone()));
    let digests = control_plane::digests::Scheduler::new(
        pool.clone(),
        &config,
        Arc::new(clock.clone()),
        metrics.clone(),
    );

    eprintln!(
        "creating {} tenants, {} flapping and {} outage domains",
        args.tenants, args.domains, args.outages
    );
    let ids = create_domains(&pool, args).await?;
    let plans = plans(args, &ids);
    let flapping: HashSet<Uuid> = plans.iter().filter(|p| p.flapping).map(|p| p.id).collect();
    let mut due: BTreeMap<i64, Vec<(Uuid, bool)>> = BTreeMap::new();
    for plan in &plans {
        for (at, up) in &plan.changes {
            due.entry(*at).or_default().push((plan.id, *up));
        }
    }
    let changes: usize = due.values().map(Vec::len).sum();
    eprintln!("simulating {changes} status changes over one hour");

    // The digest scheduler starts before the hour, so the hour is its first full period.
    digests.run_due(clock.now()).await?;
    let wall = Instant::now();
    let mut rounds = Vec::new();
    let mut evaluations = 0;
    let mut last_sweep = 0;
    let mut progress = Instant::now();
    // The round being gathered: (domain, up, second), each domain once.
    let mut round: Vec<(Uuid, bool, i64)> = Vec::new();
    for second in 0..=HOUR {
        if let Some(batch) = due.get(&second) {
            if batch.iter().any(|(id, _)| round.iter().any(|(r, _, _)| r == id)) {
                // A domain changing twice within a round: the earlier change goes first.
                let (took, n) = consensus_round(&consensus, &round, start).await?;
                rounds.push(took);
                evaluations += n;
                round.clear();
            }
            round.extend(batch.iter().map(|(id, up)| (*id, *up, second)));
        }
        if second % args.round_s == 0 || second == HOUR {
            clock.set(start + chrono::Duration::seconds(second));
            let (took, n) = consensus_round(&consensus, &round, start).await?;
            if n > 0 {
                rounds.push(took);
            }
            evaluations += n;
            round.clear();
        }
        if second - last_sweep >= 30 {
            let now = start + chrono::Duration::seconds(second);
            clock.set(now);
            sweeper.check(now).await?;
            last_sweep = second;
        }
        if progress.elapsed() > Duration::from_secs(5) {
            eprintln!("  simulated {:>2} min, {evaluations} evaluations", second / 60);
            progress = Instant::now();
        }
    }
    let evaluate_wall = wall.elapsed();
    // The top of the next hour, then `digest_grace_s` later: the hour's digests are built (not
    // before the grace, which lets transitions stamped before the end finish committing).
    let end = start + chrono::Duration::seconds(HOUR);
    clock.set(end);
    sweeper.check(end).await?;
    let due = end + chrono::Duration::seconds(config.digest_grace_s as i64);
    clock.set(due);
    let built = digests.run_due(due).await?;
    // A second pass (another replica, or a restart) builds nothing more.
    let again = digests.run_due(due).await?;

    let counts = count(&pool, &flapping, start, end).await?;
    let evaluate_ms = evaluate_wall.as_secs_f64() * 1000.0;
    let round_count = rounds.len();
    let p99 = percentile_ms(&mut rounds, 99.0);
    redis.quit().await.ok();
    pool.close().await;
    let targets_met = counts.individual_after_flap == 0
        && counts.digests == args.tenants as i64
        && again == 0
        && counts.down_alerts == args.outages as i64;
    Ok(json!({
        "targets_met": targets_met,
        "domains": args.domains,
        "outages": args.outages,
        "tenants": args.tenants,
        "status_changes": changes,
        "transitions": counts.transitions,
        "flapping_domains": counts.flapping_domains,
        "individual_alerts_for_flapping": counts.individual_after_flap,
        "individual_alerts_before_flap_mode": counts.individual_before_flap,
        "flap_notices": counts.flap_notices,
        "digests": counts.digests,
        "digests_built_by_scheduler": built,
        "digests_built_on_second_pass": again,
        "down_alerts": counts.down_alerts,
        "evaluate_ms": (evaluate_ms).round(),
        "round_s": args.round_s,
        "rounds": round_count,
        "evaluations": evaluations,
        "p99_round_ms": p99,
    }))
}

/// Tenants, one webhook channel each, and the domains spread over them, in domain order.
async fn create_domains(pool: &PgPool, args: &Args) -> anyhow::Result<Vec<Uuid>> {
    let mut tenants = Vec::new();
    for t in 0..args.tenants {
        let id = control_plane::tenants::create_tenant(pool, &format!("flap-{t}")).await?.tenant_id;
        sqlx::query(
            "INSERT INTO channels (id, tenant_id, name, kind, config, secret)
             VALUES ($1, $2, 'digest', 'webhook', '{\"url\": \"http://127.0.0.1:9/hook\"}', 'whsec_bench')",
        )
        .bind(Uuid::now_v7())
        .bind(id)
        .execute(pool)
        .await?;
        tenants.push(id);
    }
    let total = args.domains + args.outages;
    let ids: Vec<Uuid> = (0..total).map(|_| Uuid::now_v7()).collect();
    let owners: Vec<Uuid> = (0..total).map(|i| tenants[i % tenants.len()]).collect();
    let urls: Vec<String> = (0..total).map(|i| format!("https://d{i}.flap.test/")).collect();
    sqlx::query(
        "INSERT INTO domains (id, tenant_id, url, method, status_min, status_max, interval_s, timeout_ms, version)
         SELECT id, tenant, url, 'GET', 200, 299, 60, 5000, 1
         FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS u(id, tenant, url)",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&urls)
    .execute(pool)
    .await
    .context("inserting domains")?;
    Ok(ids)
}

/// One consensus round: every region observes each domain's new status at its second of the
/// hour (one upsert per region), then the domains are evaluated, each at its own instant, one
/// transaction per [`EVALUATE_BATCH`]. Returns its wall time and the domains evaluated.
async fn consensus_round(
    consensus: &Consensus,
    round: &[(Uuid, bool, i64)],
    start: DateTime<Utc>,
) -> anyhow::Result<(Duration, usize)> {
    if round.is_empty() {
        return Ok((Duration::ZERO, 0));
    }
    let started = Instant::now();
    let at = |second: i64| start + chrono::Duration::seconds(second);
    for region in REGIONS {
        let observations = round
            .iter()
            .map(|(id, up, second)| DomainObservation {
                domain_id: *id,
                ok: *up,
                error_kind: (!up).then(|| "connect".to_owned()),
                status_code: None,
                observed_at: at(*second),
                run: Run::of(*up, at(*second)),
                latencies: Vec::new(),
            })
            .collect();
        consensus
            .record(&ObservedBatch {
                region: region.to_owned(),
                agent_id: format!("{region}-1"),
                health: None,
                received_at: at(round[round.len() - 1].2),
                observations,
                certificates: Vec::new(),
                dns: Vec::new(),
            })
            .await?;
    }
    let mut evaluated = 0;
    for chunk in round.chunks(EVALUATE_BATCH) {
        let items: Vec<(Uuid, DateTime<Utc>)> =
            chunk.iter().map(|(id, _, second)| (*id, at(*second))).collect();
        let done = consensus.evaluate_many(&items, Claim::Wait).await?;
        anyhow::ensure!(done.evaluated.len() == items.len(), "a domain was not evaluated: {done:?}");
        evaluated += done.evaluated.len();
    }
    Ok((started.elapsed(), evaluated))
}

struct Counts {
    transitions: i64,
    flapping_domains: i64,
    individual_after_flap: i64,
    individual_before_flap: i64,
    flap_notices: i64,
    digests: i64,
    down_alerts: i64,
}

async fn count(
    pool: &PgPool,
    flapping: &HashSet<Uuid>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<Counts> {
    let flapping: Vec<Uuid> = flapping.iter().copied().collect();
    let transitions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM domain_transitions WHERE from_state <> 'unknown'")
            .fetch_one(pool)
            .await?;
    let flapping_domains: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT domain_id) FROM flap_periods").fetch_one(pool).await?;
    // Incident notifications of flapping domains, split at the domain's first flap entry.
    let (before, after): (i64, i64) = sqlx::query_as(
        "WITH entered AS (SELECT domain_id, min(entered_at) AS at FROM flap_periods GROUP BY domain_id)
         SELECT count(*) FILTER (WHERE e.at IS NULL OR (n.payload->>'occurred_at')::timestamptz < e.at),
                count(*) FILTER (WHERE (n.payload->>'occurred_at')::timestamptz >= e.at)
         FROM notifications n
         LEFT JOIN entered e ON e.domain_id = (n.payload->>'domain_id')::uuid
         WHERE n.kind IN ('incident_opened', 'incident_resolved')
           AND (n.payload->>'domain_id')::uuid = ANY($1)",
    )
    .bind(&flapping)
    .fetch_one(pool)
    .await?;
    let flap_notices: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE kind IN ('domain_flapping', 'domain_stabilized')",
    )
    .fetch_one(pool)
    .await?;
    let digests: i64 =
        sqlx::query_scalar("SELECT count(*) FROM digests WHERE period_start >= $1 AND period_end <= $2")
            .bind(start)
            .bind(end)
            .fetch_one(pool)
            .await?;
    let down_alerts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications
         WHERE kind = 'incident_opened' AND NOT ((payload->>'domain_id')::uuid = ANY($1))",
    )
    .bind(&flapping)
    .fetch_one(pool)
    .await?;
    Ok(Counts {
        transitions,
        flapping_domains,
        individual_after_flap: after,
        individual_before_flap: before,
        flap_notices,
        digests,
        down_alerts,
    })
}
