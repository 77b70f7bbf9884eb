//! The dispatcher: takes due notifications from the outbox and delivers them, on every replica
//! that runs one.
//!
//! - **Claim** in one short statement: due `pending` rows are locked with `FOR UPDATE SKIP
//!   LOCKED` (so replicas never claim the same row at once), their `attempts` incremented,
//!   `first_attempt_at` set on the first claim, and `next_attempt_at` pushed past the attempt's
//!   time limit. That push is a lease: if this replica dies mid-delivery, the row becomes due
//!   again when the lease runs out and another dispatcher takes it.
//! - **In order per channel and domain**: a row is not claimed while an earlier (`seq`) row of
//!   the same channel and domain is still `pending` (waiting for a retry, or claimed and in
//!   flight), so a recovery never reaches a channel before the outage it ends. Rows of other
//!   domains, and rows without a domain (tests, digests), do not wait for each other: one
//!   domain's stuck notification never holds up the rest of the channel. `seq` is taken at
//!   insert, in the transaction holding the cause's lock, so it follows the causes' order.
//! - **Deliver** outside any transaction, at most `notify_concurrency` at once, each bounded by
//!   `notify_timeout_ms`.
//! - **Record** the outcome only if the row is still the one claimed (same `attempts`, still
//!   `pending`): `delivered` with `delivered_at`, or a retry after exponential backoff with full
//!   jitter capped at `notify_max_backoff_ms` (never sooner than a 429's `Retry-After`), or
//!   `dead` ([`is_dead`]: retried for `notify_max_age_s` since its first attempt, or
//!   `notify_max_attempts` when set; at once when a provider refused it for good, see
//!   [`super::channels`]), with `last_error`. A dead row no longer holds back the rows after it.
//!
//! - **Storm control** ([`super::storm`]): rows about a domain on a channel with
//!   `storm_window_s` > 0 are taken by [`Dispatcher::claim_storms`] instead, one channel at a
//!   time under that channel's `channel_storms` row (`FOR UPDATE SKIP LOCKED`: one dispatcher
//!   decides for a channel at a time, the others pass it by): the storm plan sends some one by
//!   one, holds others to the window's end (`next_attempt_at`, `storm_held_at`) or claims
//!   them together as one grouped message. Rows of such a channel are locked only under that
//!   lock, so two dispatchers never group or send the same rows. A grouped message is one
//!   delivery: its rows share its outcome (delivered with its `group_id`, or each retried or
//!   dead by its own attempts and age), and a retry groups whatever is due then.
//!
//! Delivery is at least once: a notification delivered just before a crash (or whose outcome
//! could not be recorded) is sent again when its lease expires, so a receiver may see one id
//! twice. The id (body and `X-Crosscheck-Id`, the email's Message-ID) and the dedup key let it
//! deduplicate. A committed notification is never lost: it stays `pending` until an outcome is
//! recorded.
//!
//! Wake-ups: `LISTEN crosscheck_notifications` (notified at commit by `enqueue`), the in-process
//! [`Dispatcher::waker`], a poll tick (`notify_poll_ms`), the earliest retry this replica
//! scheduled itself, and the end of each delivery (which may free the next row of its domain).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::channels::{Deliverer, DeliveryError, Outgoing};
use super::storm::{self, Group, Member};
use super::{Notification, WAKE_CHANNEL};
use crate::config::Config;
use crate::metrics::{KindLabels, Metrics};
use crate::timeseries::Timeseries;

/// The wait before retry number `attempt` (1 = after the first failure): uniform in
/// `[0, min(max, min · 2^(attempt-1))]`.
pub fn backoff(attempt: u32, min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = min.saturating_mul(1u32 << exponent).min(max.max(min));
    Duration::from_millis(rng.gen_range(0..=ceiling.as_millis() as u64))
}

/// Whether a notification whose attempt number `attempts` just failed, `age` after its first
/// attempt, is dead: `age` reached `max_age`, or `attempts` reached `max_attempts` when that is
/// set (non-zero).
pub fn is_dead(attempts: u32, age: Duration, max_attempts: u32, max_age: Duration) -> bool {
    age >= max_age || (max_attempts > 0 && attempts >= max_attempts)
}

#[derive(Debug, Clone)]
struct Settings {
    max_attempts: u32,
    max_age: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    concurrency: usize,
    poll: Duration,
    lease: Duration,
}

/// Claims and delivers due notifications. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pool: PgPool,
    deliverer: Deliverer,
    metrics: Metrics,
    settings: Arc<Settings>,
    wake: Arc<Notify>,
    /// Where a grouped message looks up what its domains' results have in common.
    results: Option<Timeseries>,
}

/// A claimed row: what to send, the attempt number that identifies this claim, and how long
/// ago its first attempt was made.
struct Claimed {
    out: Outgoing,
    attempts: i32,
    age: Duration,
}

/// One delivery: a notification alone, or a grouped message of one channel's notifications.
enum Work {
    One(Claimed),
    Group(Vec<Claimed>),
}

/// How far back a grouped message looks for its domains' results.
const FACTS_LOOKBACK: chrono::Duration = chrono::Duration::minutes(15);

impl Dispatcher {
    pub fn new(pool: PgPool, config: &Config, metrics: Metrics) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.notify_timeout_ms);
        let settings = Settings {
            max_attempts: config.notify_max_attempts,
            max_age: Duration::from_secs(config.notify_max_age_s),
            min_backoff: Duration::from_millis(config.notify_min_backoff_ms),
            max_backoff: Duration::from_millis(config.notify_max_backoff_ms),
            concurrency: config.notify_concurrency,
            poll: Duration::from_millis(config.notify_poll_ms),
            // Past the attempt's own limit, with room for recording the outcome.
            lease: timeout * 2 + Duration::from_secs(5),
        };
        Ok(Self {
            pool,
            deliverer: Deliverer::new(config)?,
            metrics,
            settings: Arc::new(settings),
            wake: Arc::new(Notify::new()),
            results: None,
        })
    }

    /// Grouped messages name what their domains' results have in common, read from `results`
    /// (without it only what the notifications themselves say is compared).
    pub fn with_results(mut self, results: Timeseries) -> Self {
        self.results = Some(results);
        self
    }

    /// Wakes this dispatcher (after an enqueue committed in this process).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `shutdown`, then waits for the deliveries in flight (each bounded by the
    /// timeout) so their outcomes are recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        let listener = tokio::spawn(listen(
            self.pool.clone(),
            self.wake.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut tasks: JoinSet<Option<Instant>> = JoinSet::new();
        let mut next_retry: Option<Instant> = None;
        let mut tick = tokio::time::interval(self.settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if next_retry.is_some_and(|at| at <= Instant::now()) {
                next_retry = None;
            }
            let free = permits.available_permits();
            if free > 0 {
                let mut work: Vec<Work> = Vec::new();
                match self.claim(free).await {
                    Ok(rows) => work.extend(rows.into_iter().map(Work::One)),
                    Err(error) => {
                        tracing::error!(error = %shared::error::Chain(&error), "claiming notifications failed");
                        self.metrics.notify_error("claim");
                    }
                }
                if work.len() < free {
                    match self.claim_storms(free - work.len()).await {
                        Ok((more, held_until)) => {
                            work.extend(more);
                            if let Some(at) = held_until {
                                next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                            }
                        }
                        Err(error) => {
                            tracing::error!(error = %shared::error::Chain(&error), "claiming storm-controlled notifications failed");
                            self.metrics.notify_error("claim_storm");
                        }
                    }
                }
                let full = work.len() == free;
                for item in work {
                    let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
                    let this = self.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        match item {
                            Work::One(row) => this.attempt(row).await,
                            Work::Group(rows) => this.attempt_group(rows).await,
                        }
                    });
                }
                if full {
                    continue;
                }
            }
            let retry_at = next_retry.map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tick.tick() => self.count_pending().await,
                _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                    Ok(Some(at)) => next_retry = Some(next_retry.map_or(at, |n| n.min(at))),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, "notification delivery task panicked");
                        self.metrics.notify_error("panic");
                    }
                },
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(error) = done {
                tracing::error!(%error, "notification delivery task panicked");
                self.metrics.notify_error("panic");
            }
        }
        if let Err(error) = listener.await {
            tracing::error!(%error, "notification listener task panicked");
        }
    }

    /// Claims up to `limit` due rows (leasing them) and returns them: the oldest due first, and
    /// none with an earlier pending row of the same channel and domain. Rows about a domain on a
    /// storm-controlled channel are left to [`Dispatcher::claim_storms`].
    async fn claim(&self, limit: usize) -> sqlx::Result<Vec<Claimed>> {
        type Row = (Uuid, String, Value, i32, f64, String, Value, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "WITH due AS (
                 SELECT n.id FROM notifications n
                 WHERE n.state = 'pending' AND n.next_attempt_at <= now()
                   AND NOT (n.domain_id IS NOT NULL AND EXISTS (
                       SELECT 1 FROM channels s WHERE s.id = n.channel_id AND s.storm_window_s > 0))
                   AND NOT EXISTS (
                       SELECT 1 FROM notifications e
                       WHERE e.channel_id = n.channel_id AND e.domain_id = n.domain_id
                         AND e.state = 'pending' AND e.seq < n.seq)
                 ORDER BY n.next_attempt_at LIMIT $1
                 FOR UPDATE OF n SKIP LOCKED)
             UPDATE notifications n
             SET attempts = n.attempts + 1, next_attempt_at = now() + make_interval(secs => $2),
                 first_attempt_at = COALESCE(n.first_attempt_at, now())
             FROM due, channels c
             WHERE n.id = due.id AND c.id = n.channel_id
             RETURNING n.id, n.dedup_key, n.payload, n.attempts,
                 extract(epoch FROM now() - n.first_attempt_at)::float8, c.kind, c.config, c.secret",
        )
        .bind(limit as i64)
        .bind(self.settings.lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, dedup_key, payload, attempts, age_s, kind, config, secret)| Claimed {
                out: Outgoing { id, dedup_key, kind, config, secret, payload },
                attempts,
                age: Duration::from_secs_f64(age_s.max(0.0)),
            })
            .collect())
    }

    /// Takes the due rows of storm-controlled channels, at most `limit` deliveries' worth:
    /// per channel, under its `channel_storms` row, the storm plan decides which rows go out
    /// alone, which are held to the window's end and which go out as one grouped message
    /// (claimed: leased like any claim). Returns the deliveries and the earliest end of a hold
    /// (when this dispatcher should look again).
    async fn claim_storms(&self, limit: usize) -> sqlx::Result<(Vec<Work>, Option<Instant>)> {
        let channels: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT n.channel_id FROM notifications n JOIN channels c ON c.id = n.channel_id
             WHERE n.state = 'pending' AND n.next_attempt_at <= now() AND n.domain_id IS NOT NULL
               AND c.storm_window_s > 0
             LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut work = Vec::new();
        let mut wake: Option<Instant> = None;
        for channel in channels {
            if work.len() >= limit {
                break;
            }
            let (more, held_until) = self.claim_storm(channel, limit - work.len()).await?;
            work.extend(more);
            if let Some(at) = held_until {
                let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                let at = Instant::now() + wait;
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        Ok((work, wake))
    }

    /// One channel's step of [`Dispatcher::claim_storms`], in one transaction.
    async fn claim_storm(
        &self,
        channel: Uuid,
        limit: usize,
    ) -> sqlx::Result<(Vec<Work>, Option<chrono::DateTime<chrono::Utc>>)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO channel_storms (channel_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        type StormRow =
            (chrono::DateTime<chrono::Utc>, Vec<Uuid>, bool, i32, i32, chrono::DateTime<chrono::Utc>);
        let storm: Option<StormRow> = sqlx::query_as(
            "SELECT s.window_end, s.domains, s.grouping, c.storm_window_s, c.storm_threshold, now()
             FROM channel_storms s JOIN channels c ON c.id = s.channel_id
             WHERE s.channel_id = $1 FOR UPDATE OF s SKIP LOCKED",
        )
        .bind(channel)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((window_end, domains, grouping, window_s, threshold, now)) = storm else {
            // Another dispatcher is deciding for this channel.
            tx.rollback().await?;
            return Ok((Vec::new(), None));
        };
        // The channel's pending rows in `seq` order; those whose earlier pending rows of the
        // same domain are all due too may be taken (see [`storm::takeable`]), and are locked
        // before the plan sees them.
        type Row = (Uuid, Uuid, bool, bool);
        let pending: Vec<Row> = sqlx::query_as(
            "SELECT n.id, n.domain_id, n.next_attempt_at <= $2, n.storm_held_at IS NOT NULL
             FROM notifications n
             WHERE n.channel_id = $1 AND n.state = 'pending' AND n.domain_id IS NOT NULL
             ORDER BY n.seq LIMIT $3",
        )
        .bind(channel)
        .bind(now)
        .bind(storm::SCAN as i64)
        .fetch_all(&mut *tx)
        .await?;
        let pending: Vec<storm::Pending<Uuid>> = pending
            .into_iter()
            .map(|(id, domain, due, held)| storm::Pending { id, domain, due, held })
            .collect();
        let takeable = storm::takeable(&pending, storm::MAX_GROUP + limit);
        let ids: Vec<Uuid> = takeable.iter().map(|r| r.id).collect();
        // Locked, and still pending and due (a row may have changed since the scan).
        let locked: std::collections::HashSet<Uuid> = sqlx::query_scalar(
            "SELECT id FROM notifications WHERE id = ANY($1) AND state = 'pending' AND next_attempt_at <= $2
             FOR UPDATE",
        )
        .bind(&ids)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let rows: Vec<(Uuid, Uuid, bool)> = storm::keep(takeable, |id| locked.contains(id))
            .into_iter()
            .map(|r| (r.id, r.domain, r.held))
            .collect();
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok((Vec::new(), None));
        }
        let settings = storm::Settings {
            window: chrono::Duration::seconds(i64::from(window_s)),
            threshold: u32::try_from(threshold).unwrap_or(1),
        };
        let window = storm::Window { end: window_end, domains, grouping };
        let due: Vec<storm::Due> = rows.iter().map(|r| storm::Due { domain: r.1, held: r.2 }).collect();
        let mut plan = storm::plan(settings, &window, now, &due);
        // Only as many one-by-one deliveries as there are free slots; the rest stay due (their
        // domains already count as sent in the window, so they go out alone next time).
        plan.individual.truncate(limit.saturating_sub(usize::from(!plan.group.is_empty())).max(1));
        let ids = |indexes: &[usize]| -> Vec<Uuid> { indexes.iter().map(|&i| rows[i].0).collect() };
        let individual = self.lease(&mut tx, &ids(&plan.individual)).await?;
        let group = self.lease(&mut tx, &ids(&plan.group)).await?;
        let hold = ids(&plan.hold);
        if !hold.is_empty() {
            sqlx::query(
                "UPDATE notifications SET next_attempt_at = $2, storm_held_at = COALESCE(storm_held_at, $3)
                 WHERE id = ANY($1)",
            )
            .bind(&hold)
            .bind(plan.hold_until)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE channel_storms SET window_end = $2, domains = $3, grouping = $4 WHERE channel_id = $1",
        )
        .bind(channel)
        .bind(plan.next.end)
        .bind(&plan.next.domains)
        .bind(plan.next.grouping)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if !hold.is_empty() {
            self.metrics.notify_storm_held.inc_by(hold.len() as u64);
            tracing::info!(%channel, held = hold.len(), until = %plan.hold_until, "notifications held for a grouped message");
        }
        let mut work: Vec<Work> = individual.into_iter().map(Work::One).collect();
        if !group.is_empty() {
            work.push(Work::Group(group));
        }
        Ok((work, (!hold.is_empty()).then_some(plan.hold_until)))
    }

    /// Leases `ids` inside `tx` (as [`Dispatcher::claim`] does) and returns them in `seq` order.
    async fn lease(&self, tx: &mut sqlx::PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Claimed>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        type Row = (Uuid, String, Value, i32, f64, String, Value, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "UPDATE notifications n
             SET attempts = n.attempts + 1, next_attempt_at = now() + make_interval(secs => $2),
                 first_attempt_at = COALESCE(n.first_attempt_at, now())
             FROM channels c
             WHERE n.id = ANY($1) AND c.id = n.channel_id
             RETURNING n.id, n.dedup_key, n.payload, n.attempts,
                 extract(epoch FROM now() - n.first_attempt_at)::float8, c.kind, c.config, c.secret",
        )
        .bind(ids)
        .bind(self.settings.lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed: Vec<Claimed> = rows
            .into_iter()
            .map(|(id, dedup_key, payload, attempts, age_s, kind, config, secret)| Claimed {
                out: Outgoing { id, dedup_key, kind, config, secret, payload },
                attempts,
                age: Duration::from_secs_f64(age_s.max(0.0)),
            })
            .collect();
        let order: std::collections::HashMap<Uuid, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        claimed.sort_by_key(|c| order.get(&c.out.id).copied());
        Ok(claimed)
    }

    /// Delivers a grouped message of claimed rows and records each row's outcome: delivered
    /// with the group's id, or each retried (all after the same wait) or dead by its own
    /// attempts and age.
    async fn attempt_group(&self, rows: Vec<Claimed>) -> Option<Instant> {
        let kind = rows[0].out.kind.clone();
        let notifications: Vec<Option<Notification>> =
            rows.iter().map(|r| serde_json::from_value(r.out.payload.clone()).ok()).collect();
        let mut facts: std::collections::HashMap<Uuid, storm::ResultFacts> = Default::default();
        if let Some(results) = &self.results {
            let domains: Vec<(Uuid, bool)> = notifications
                .iter()
                .flatten()
                .filter_map(|n| n.domain_id.map(|d| (d, n.kind == "incident_opened")))
                .collect();
            match results.result_facts(&domains, chrono::Utc::now() - FACTS_LOOKBACK).await {
                Ok(found) => facts.extend(found),
                Err(error) => {
                    // The message still goes out; it only names less.
                    tracing::warn!(error = %shared::error::Chain(&error), "reading results for a grouped message failed");
                    self.metrics.notify_error("group_facts");
                }
            }
        }
        let members: Vec<Member> = rows
            .iter()
            .zip(notifications)
            .map(|(row, notification)| {
                let facts = notification
                    .as_ref()
                    .and_then(|n| n.domain_id)
                    .and_then(|d| facts.get(&d).cloned())
                    .unwrap_or_default();
                Member { out: row.out.clone(), notification, facts }
            })
            .collect();
        let group = Group::new(Uuid::now_v7(), members);
        let started = Instant::now();
        let result = self.deliverer.deliver_group(&group).await;
        self.metrics
            .notify_delivery_seconds
            .get_or_create(&KindLabels { kind: kind.clone() })
            .observe(started.elapsed().as_secs_f64());
        let ids: Vec<Uuid> = rows.iter().map(|r| r.out.id).collect();
        let attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
        match result {
            Ok(()) => {
                self.metrics.notify_delivery(&kind, "delivered_grouped");
                self.metrics.notify_groups.inc();
                self.metrics.notify_grouped.inc_by(rows.len() as u64);
                tracing::info!(group_id = %group.id, kind, notifications = rows.len(), summary = %group.summary(), "grouped notification delivered");
                let recorded = sqlx::query(
                    "UPDATE notifications n SET state = 'delivered', delivered_at = now(), last_error = NULL,
                         group_id = $3
                     FROM unnest($1::uuid[], $2::int[]) AS c(id, attempts)
                     WHERE n.id = c.id AND n.state = 'pending' AND n.attempts = c.attempts",
                )
                .bind(&ids)
                .bind(&attempts)
                .bind(group.id)
                .execute(&self.pool)
                .await;
                self.recorded_group(recorded, rows.len(), group.id);
                None
            }
            Err(error) => {
                let message: String = error.to_string().chars().take(1000).collect();
                let dead: Vec<bool> = rows
                    .iter()
                    .map(|r| {
                        error.permanent
                            || is_dead(
                                r.attempts as u32,
                                r.age,
                                self.settings.max_attempts,
                                self.settings.max_age,
                            )
                    })
                    .collect();
                let attempt = rows.iter().map(|r| r.attempts).max().unwrap_or(1) as u32;
                let delay = backoff(
                    attempt,
                    self.settings.min_backoff,
                    self.settings.max_backoff,
                    &mut rand::thread_rng(),
                )
                .max(error.retry_after.unwrap_or_default());
                let dead_count = dead.iter().filter(|d| **d).count();
                self.metrics.notify_delivery(&kind, "failed_grouped");
                tracing::warn!(group_id = %group.id, kind, notifications = rows.len(), dead = dead_count, reason = error.reason, error = %error.message, retry_in_ms = delay.as_millis() as u64, "grouped notification delivery failed");
                let recorded = sqlx::query(
                    "UPDATE notifications n
                     SET state = CASE WHEN c.dead THEN 'dead' ELSE 'pending' END,
                         next_attempt_at = CASE WHEN c.dead THEN n.next_attempt_at
                                                ELSE now() + make_interval(secs => $4) END,
                         last_error = $5
                     FROM unnest($1::uuid[], $2::int[], $3::bool[]) AS c(id, attempts, dead)
                     WHERE n.id = c.id AND n.state = 'pending' AND n.attempts = c.attempts",
                )
                .bind(&ids)
                .bind(&attempts)
                .bind(&dead)
                .bind(delay.as_secs_f64())
                .bind(&message)
                .execute(&self.pool)
                .await;
                self.recorded_group(recorded, rows.len(), group.id);
                (dead_count < rows.len()).then(|| Instant::now() + delay)
            }
        }
    }

    /// Logs and counts a grouped outcome that changed fewer rows than were claimed.
    fn recorded_group(
        &self,
        recorded: sqlx::Result<sqlx::postgres::PgQueryResult>,
        claimed: usize,
        group_id: Uuid,
    ) {
        match recorded {
            Ok(done) if done.rows_affected() as usize == claimed => {}
            Ok(done) => {
                tracing::warn!(%group_id, claimed, recorded = done.rows_affected(), "notifications changed while delivering a group (lease expired); their outcome not recorded");
                self.metrics.notify_error("lease_lost");
            }
            Err(error) => {
                tracing::error!(%group_id, %error, "recording a grouped outcome failed; its notifications are retried when their leases expire");
                self.metrics.notify_error("record");
            }
        }
    }

    /// Delivers one claimed row and records the outcome. Returns when a retry is due, if one
    /// was scheduled.
    async fn attempt(&self, row: Claimed) -> Option<Instant> {
        let kind = row.out.kind.clone();
        let started = Instant::now();
        let result = self.deliverer.deliver(&row.out).await;
        self.metrics
            .notify_delivery_seconds
            .get_or_create(&KindLabels { kind: kind.clone() })
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.metrics.notify_delivery(&kind, "delivered");
                tracing::info!(notification_id = %row.out.id, kind, attempts = row.attempts, "notification delivered");
                self.record(
                    sqlx::query(
                        "UPDATE notifications SET state = 'delivered', delivered_at = now(), last_error = NULL
                         WHERE id = $1 AND state = 'pending' AND attempts = $2",
                    )
                    .bind(row.out.id)
                    .bind(row.attempts),
                    row.out.id,
                )
                .await;
                None
            }
            Err(error) => self.failed(&row, &kind, error).await,
        }
    }

    async fn failed(&self, row: &Claimed, kind: &str, error: DeliveryError) -> Option<Instant> {
        let message: String = error.to_string().chars().take(1000).collect();
        let id = row.out.id;
        if error.permanent
            || is_dead(row.attempts as u32, row.age, self.settings.max_attempts, self.settings.max_age)
        {
            self.metrics.notify_delivery(kind, "dead");
            tracing::error!(notification_id = %id, kind, attempts = row.attempts, failing_for_s = row.age.as_secs(), permanent = error.permanent, reason = error.reason, error = %error.message, "notification dead after its last attempt");
            self.record(
                sqlx::query(
                    "UPDATE notifications SET state = 'dead', last_error = $3
                     WHERE id = $1 AND state = 'pending' AND attempts = $2",
                )
                .bind(id)
                .bind(row.attempts)
                .bind(&message),
                id,
            )
            .await;
            return None;
        }
        let delay = backoff(
            row.attempts as u32,
            self.settings.min_backoff,
            self.settings.max_backoff,
            &mut rand::thread_rng(),
        )
        .max(error.retry_after.unwrap_or_default());
        self.metrics.notify_delivery(kind, "failed");
        tracing::warn!(notification_id = %id, kind, attempts = row.attempts, reason = error.reason, error = %error.message, retry_in_ms = delay.as_millis() as u64, "notification delivery failed; will retry");
        let recorded = self
            .record(
                sqlx::query(
                    "UPDATE notifications SET next_attempt_at = now() + make_interval(secs => $3), last_error = $4
                     WHERE id = $1 AND state = 'pending' AND attempts = $2",
                )
                .bind(id)
                .bind(row.attempts)
                .bind(delay.as_secs_f64())
                .bind(&message),
                id,
            )
            .await;
        recorded.then(|| Instant::now() + delay)
    }

    /// Runs an outcome update; `true` when it changed the claimed row. A row that changed
    /// meanwhile (the lease ran out and another dispatcher took it) is left alone.
    async fn record(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        id: Uuid,
    ) -> bool {
        match query.execute(&self.pool).await {
            Ok(done) if done.rows_affected() == 1 => true,
            Ok(_) => {
                tracing::warn!(notification_id = %id, "notification changed while delivering (lease expired); outcome not recorded");
                self.metrics.notify_error("lease_lost");
                false
            }
            Err(error) => {
                tracing::error!(notification_id = %id, %error, "recording a notification outcome failed; it will be retried when its lease expires");
                self.metrics.notify_error("record");
                false
            }
        }
    }

    async fn count_pending(&self) {
        match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notifications WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
        {
            Ok(n) => {
                self.metrics.notify_outbox_pending.set(n);
            }
            Err(error) => {
                tracing::warn!(%error, "counting pending notifications failed");
                self.metrics.notify_error("count");
            }
        }
    }
}

/// Wakes the dispatcher on `NOTIFY crosscheck_notifications`; reopens the listener after
/// errors, and wakes it after a reconnect too (notices may have been missed meanwhile).
async fn listen(pool: PgPool, wake: Arc<Notify>, metrics: Metrics, shutdown: CancellationToken) {
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let opened = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(WAKE_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match opened.await {
            Ok(listener) => listener,
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, "cannot listen for notification wake-ups; polling meanwhile");
                metrics.notify_error("listen");
                let pause = backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(30),
                    &mut rand::thread_rng(),
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        failures = 0;
        wake.notify_one();
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(_)) => wake.notify_one(),
                // The connection was lost; try_recv reconnects on the next call.
                Ok(None) => {
                    tracing::warn!("notification listener reconnecting");
                    metrics.notify_error("listen_lost");
                    wake.notify_one();
                }
                Err(error) => {
                    tracing::warn!(%error, "notification listener failed; reopening");
                    metrics.notify_error("listen");
                    break;
                }
            }
        }
        // Wake once more: notices sent while the listener was down were missed.
        wake.notify_one();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_retries_outlast_a_realistic_channel_outage() {
        let config = Config::default();
        let (attempts, age) = (config.notify_max_attempts, Duration::from_secs(config.notify_max_age_s));
        // A receiver answering 503 for 90 s (or an hour) does not kill anything, at any attempt.
        for failing_for in [Duration::from_secs(52), Duration::from_secs(90), Duration::from_secs(3_600)] {
            assert!(!is_dead(8, failing_for, attempts, age), "{failing_for:?}");
            assert!(!is_dead(1_000, failing_for, attempts, age), "no count limit by default");
        }
        assert!(is_dead(3, Duration::from_secs(6 * 3_600), attempts, age), "6 h: dead");
        // The wait between attempts is capped at 5 minutes: a receiver back up is reached soon.
        assert_eq!(config.notify_max_backoff_ms, 300_000);
        // With a count limit, whichever comes first.
        assert!(is_dead(3, Duration::from_secs(1), 3, age));
        assert!(!is_dead(2, Duration::from_secs(1), 3, age));
    }

    #[test]
    fn backoff_is_bounded_by_the_doubling_ceiling() {
        let mut rng = rand::thread_rng();
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1_000));
        for _ in 0..200 {
            assert!(backoff(1, min, max, &mut rng) <= min);
            assert!(backoff(3, min, max, &mut rng) <= Duration::from_millis(400));
            assert!(backoff(40, min, max, &mut rng) <= max);
        }
    }
}
