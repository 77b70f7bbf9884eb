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
//!   jitter capped at `notify_max_backoff_ms`, or `dead` ([`is_dead`]: retried for
//!   `notify_max_age_s` since its first attempt, or `notify_max_attempts` when set), with
//!   `last_error`. A dead row no longer holds back the rows after it.
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
use super::WAKE_CHANNEL;
use crate::config::Config;
use crate::metrics::{KindLabels, Metrics};

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
}

/// A claimed row: what to send, the attempt number that identifies this claim, and how long
/// ago its first attempt was made.
struct Claimed {
    out: Outgoing,
    attempts: i32,
    age: Duration,
}

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
        })
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
                match self.claim(free).await {
                    Ok(rows) => {
                        let full = rows.len() == free;
                        for row in rows {
                            let permit =
                                permits.clone().acquire_owned().await.expect("semaphore is never closed");
                            let this = self.clone();
                            tasks.spawn(async move {
                                let _permit = permit;
                                this.attempt(row).await
                            });
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "claiming notifications failed");
                        self.metrics.notify_error("claim");
                    }
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
    /// none with an earlier pending row of the same channel and domain.
    async fn claim(&self, limit: usize) -> sqlx::Result<Vec<Claimed>> {
        type Row = (Uuid, String, Value, i32, f64, String, Value, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "WITH due AS (
                 SELECT n.id FROM notifications n
                 WHERE n.state = 'pending' AND n.next_attempt_at <= now()
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
        if is_dead(row.attempts as u32, row.age, self.settings.max_attempts, self.settings.max_age) {
            self.metrics.notify_delivery(kind, "dead");
            tracing::error!(notification_id = %id, kind, attempts = row.attempts, failing_for_s = row.age.as_secs(), reason = error.reason, error = %error.message, "notification dead after its last attempt");
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
        );
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
