//! The SLA monitor: every `sla_check_interval_ms`, on every replica, (1) each domain with an SLO
//! has its current period's budget computed and its due notices (`sla_budget_low`,
//! `sla_breach`) sent, and (2) each tenant whose previous month (in its time zone) ended at
//! least `sla_report_grace_s` ago gets its monthly report (`sla_report`).
//!
//! Exactly once per period across replicas and restarts, by a row, not by a timer: a notice is
//! sent by the transaction that inserts its `sla_notices` row (primary key domain, period start,
//! kind; `ON CONFLICT DO NOTHING`), a report by the one that inserts its `sla_reports` row
//! (`UNIQUE (tenant_id, month)`). Two replicas may compute the same figures; only the one whose
//! insert lands enqueues, in the same transaction, and the outbox's dedup keys back this up.
//! A replica that was down catches up at its next step: the current period's notices are still
//! due, and the previous month's report is built late, never skipped (older months are not
//! sent: the monitor looks one month back).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::budget::{Budget, Notice};
use super::period::Month;
use super::{report, store, REPORT_KIND};
use crate::clock::Clock;
use crate::config::Config;
use crate::digests::render::duration;
use crate::metrics::{KindLabels, Metrics};
use crate::notify::{self, Notification};

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Notices enqueued (one per domain, period and kind, whatever the number of channels).
    pub notices: usize,
    /// Reports stored and enqueued.
    pub reports: usize,
}

/// The SLA monitor of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    check_interval: StdDuration,
    grace: Duration,
    metrics: Metrics,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("clock", &self.clock)
            .field("check_interval", &self.check_interval)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// A domain with an SLO, as listed for a step.
#[derive(sqlx::FromRow)]
struct Watched {
    id: Uuid,
    tenant_id: Uuid,
    url: String,
    name: Option<String>,
    slo: Value,
    time_zone: String,
}

impl Monitor {
    /// A monitor with `sla_check_interval_ms` and `sla_report_grace_s` from `config`, reading
    /// the time from `clock`.
    pub fn new(pool: PgPool, config: &Config, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        Self {
            pool,
            clock,
            check_interval: StdDuration::from_millis(config.sla_check_interval_ms.max(1)),
            grace: Duration::seconds(config.sla_report_grace_s as i64),
            metrics,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// One step at `now`: the notices due, then the reports due. A domain or tenant that fails
    /// is logged and counted and the others go on; only failing to list them is an error.
    pub async fn run_due(&self, now: DateTime<Utc>) -> anyhow::Result<Step> {
        let notices = self.notices(now).await;
        let reports = self.reports(now).await;
        for error in [notices.as_ref().err(), reports.as_ref().err()].into_iter().flatten() {
            self.metrics.sla_error("list");
            tracing::error!(error = %shared::error::Chain(error), "the SLA monitor could not list its work");
        }
        Ok(Step { notices: notices?, reports: reports? })
    }

    /// Calls [`Monitor::run_due`] with the clock's time every `sla_check_interval_ms` (the
    /// first time at once) until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // Logged and counted inside; the next tick tries again.
                    let _ = self.run_due(self.clock.now()).await;
                }
            }
        }
    }

    async fn notices(&self, now: DateTime<Utc>) -> sqlx::Result<usize> {
        let watched: Vec<Watched> = sqlx::query_as(
            "SELECT d.id, d.tenant_id, d.url, d.name, d.slo, t.time_zone FROM domains d
             JOIN tenants t ON t.id = d.tenant_id WHERE d.slo IS NOT NULL ORDER BY d.id",
        )
        .fetch_all(&self.pool)
        .await?;
        // Sent already: no need to compute those domains' figures again this period. Periods
        // are at most 31 days long.
        let sent: HashSet<(Uuid, DateTime<Utc>, String)> =
            sqlx::query_as("SELECT domain_id, period_start, kind FROM sla_notices WHERE period_start > $1")
                .bind(now - Duration::days(32))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        let mut enqueued = 0;
        for domain in watched {
            let month =
                Month::containing(now, crate::tenants::zone_or_utc(domain.tenant_id, &domain.time_zone));
            let start = month.start();
            let done = |notice: Notice| sent.contains(&(domain.id, start, notice.kind().to_owned()));
            if done(Notice::BudgetLow) && done(Notice::Breach) {
                continue;
            }
            match self.domain_notices(&domain, &month, now).await {
                Ok(n) => enqueued += n,
                Err(error) => {
                    self.metrics.sla_error("domain");
                    tracing::error!(
                        domain_id = %domain.id,
                        error = %shared::error::Chain(&error),
                        "evaluating a domain's SLO failed"
                    );
                }
            }
        }
        Ok(enqueued)
    }

    /// Computes the domain's budget and sends the notices due and not sent yet this period.
    async fn domain_notices(
        &self,
        domain: &Watched,
        month: &Month,
        now: DateTime<Utc>,
    ) -> sqlx::Result<usize> {
        let Some(slo) = store::decode(domain.id, Some(domain.slo.clone()))? else { return Ok(0) };
        let (start, end) = (month.start(), month.end());
        let mut conn = self.pool.acquire().await?;
        let uptime = crate::uptime::load(&mut conn, domain.id, start, now.clamp(start, end)).await?;
        drop(conn);
        let budget = Budget::compute(&slo, &uptime, start, end, now);
        let due = budget.notices(&slo);
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut enqueued = 0;
        for notice in due {
            let notification = notification(domain, month, &budget, notice, now);
            let inserted: Option<i32> = sqlx::query_scalar(
                "INSERT INTO sla_notices (tenant_id, domain_id, period_start, kind, sent_at, details)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1",
            )
            .bind(domain.tenant_id)
            .bind(domain.id)
            .bind(start)
            .bind(notice.kind())
            .bind(now)
            .bind(&notification.details)
            .fetch_optional(&mut *tx)
            .await?;
            if inserted.is_none() {
                continue;
            }
            let key = format!("sla:{}:{}:{}", domain.id, start.timestamp(), notice.kind());
            notify::enqueue(&mut tx, &notification, &key).await?;
            enqueued += 1;
            tracing::info!(
                domain_id = %domain.id,
                kind = notice.kind(),
                period = %month,
                budget_left_s = budget.budget_left_s,
                "SLA notice sent"
            );
            self.metrics.sla_notices.get_or_create(&KindLabels { kind: notice.kind().into() }).inc();
        }
        tx.commit().await?;
        Ok(enqueued)
    }

    async fn reports(&self, now: DateTime<Utc>) -> sqlx::Result<usize> {
        let tenants: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT t.id, t.time_zone, t.created_at FROM tenants t
             WHERE EXISTS (SELECT 1 FROM domains d WHERE d.tenant_id = t.id) ORDER BY t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let stored: HashSet<(Uuid, NaiveDate)> =
            sqlx::query_as("SELECT tenant_id, month FROM sla_reports WHERE period_end > $1")
                .bind(now - Duration::days(63))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        let mut sent = 0;
        for (tenant_id, zone, created_at) in tenants {
            let month = Month::containing(now, crate::tenants::zone_or_utc(tenant_id, &zone)).previous();
            // Not before the grace has passed, not for a month before the tenant existed, once.
            if now < month.end() + self.grace
                || created_at >= month.end()
                || stored.contains(&(tenant_id, month.first_day()))
            {
                continue;
            }
            match self.report(tenant_id, &month, now).await {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(error) => {
                    self.metrics.sla_error("report");
                    tracing::error!(
                        %tenant_id,
                        month = %month,
                        error = %shared::error::Chain(&error),
                        "building a tenant's SLA report failed"
                    );
                }
            }
        }
        Ok(sent)
    }

    /// Builds, stores and enqueues the tenant's report of `month`; false when there is nothing
    /// to report or another replica stored it first.
    async fn report(&self, tenant_id: Uuid, month: &Month, now: DateTime<Utc>) -> sqlx::Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let inputs = store::report_inputs(&mut conn, tenant_id, month, now).await?;
        drop(conn);
        if inputs.is_empty() {
            return Ok(false);
        }
        let built = report::build(tenant_id, month, now, &inputs);
        let (text, html) = (report::text(&built), report::html(&built));
        let content = serde_json::to_value(&built).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let mut tx = self.pool.begin().await?;
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO sla_reports (id, tenant_id, month, period_start, period_end, created_at, content, text, html)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, month) DO NOTHING RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(month.first_day())
        .bind(built.period_start)
        .bind(built.period_end)
        .bind(now)
        .bind(&content)
        .bind(&text)
        .bind(&html)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = inserted else {
            tx.rollback().await?;
            return Ok(false);
        };
        let mut details = content;
        if let Value::Object(map) = &mut details {
            map.insert("report_id".into(), Value::from(id.to_string()));
            map.insert("text".into(), Value::from(text));
            map.insert("html".into(), Value::from(html));
        }
        let notification = Notification {
            kind: REPORT_KIND.into(),
            tenant_id,
            domain_id: None,
            url: None,
            incident_id: None,
            summary: built.summary.clone(),
            details,
            occurred_at: built.period_end,
        };
        notify::enqueue(&mut tx, &notification, &format!("sla_report:{tenant_id}:{month}")).await?;
        tx.commit().await?;
        self.metrics.sla_reports.inc();
        tracing::info!(%tenant_id, month = %month, domains = built.domains.len(), "SLA report sent");
        Ok(true)
    }
}

/// The notice's notification: a summary line and the budget's figures.
fn notification(
    domain: &Watched,
    month: &Month,
    budget: &Budget,
    notice: Notice,
    now: DateTime<Utc>,
) -> Notification {
    let label = domain.name.clone().unwrap_or_else(|| domain.url.clone());
    let seconds = |s: f64| duration(s.round() as i64);
    let summary = match notice {
        Notice::BudgetLow => format!(
            "{label} has {} of its {} error budget left for {month} (SLO {} %)",
            seconds(budget.budget_left_s.max(0.0)),
            seconds(budget.allowed_downtime_s),
            budget.target,
        ),
        Notice::Breach => format!(
            "{label} breached its SLO of {} % for {month}: down {}, {} allowed",
            budget.target,
            seconds(budget.down_s),
            seconds(budget.allowed_downtime_s),
        ),
    };
    let mut details = serde_json::to_value(budget).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut details {
        map.insert("period".into(), Value::from(month.to_string()));
        map.insert("time_zone".into(), Value::from(month.tz.name()));
        map.insert(
            "period_start".into(),
            Value::from(budget.period_start.with_timezone(&month.tz).to_rfc3339()),
        );
        map.insert("period_end".into(), Value::from(budget.period_end.with_timezone(&month.tz).to_rfc3339()));
    }
    Notification {
        kind: notice.kind().into(),
        tenant_id: domain.tenant_id,
        domain_id: Some(domain.id),
        url: Some(domain.url.clone()),
        incident_id: None,
        summary,
        details,
        occurred_at: now,
    }
}
