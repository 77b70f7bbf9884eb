//! The rows behind SLOs, tenant-scoped: a domain's SLO, its incidents in a period, the figures
//! of `GET /v1/domains/{id}/sla`, a report's inputs and the stored reports.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::budget::Budget;
use super::period::Month;
use super::report::{DomainInput, IncidentTimes, Report};
use super::slo::Slo;

/// The domain's SLO: `None` when the tenant has no such domain, `Some(None)` when it has no SLO.
pub async fn domain_slo(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    domain_id: Uuid,
) -> sqlx::Result<Option<Option<Slo>>> {
    let row: Option<(Option<Value>,)> =
        sqlx::query_as("SELECT slo FROM domains WHERE id = $1 AND tenant_id = $2")
            .bind(domain_id)
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(slo,)| decode(domain_id, slo)).transpose()
}

/// A stored `slo` column, read by the API's own rules (so defaults apply to a field left out).
pub fn decode(domain_id: Uuid, slo: Option<Value>) -> sqlx::Result<Option<Slo>> {
    match slo {
        None | Some(Value::Null) => Ok(None),
        Some(value) => Slo::parse(&value)
            .map(Some)
            .map_err(|_| sqlx::Error::Decode(format!("domain {domain_id}: bad slo").into())),
    }
}

/// An incident overlapping a period, as `GET /v1/domains/{id}/sla` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PeriodIncident {
    pub id: Uuid,
    pub state: String,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The domain's incidents overlapping `[start, end)` (open at some moment of it), oldest first:
/// one spanning two periods is listed in both.
pub async fn incidents_overlapping(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    domain_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<Vec<PeriodIncident>> {
    sqlx::query_as(
        "SELECT id, state, opened_at, acknowledged_at, resolved_at FROM incidents
         WHERE tenant_id = $1 AND domain_id = $2 AND opened_at < $4 AND (resolved_at IS NULL OR resolved_at > $3)
         ORDER BY opened_at, id",
    )
    .bind(tenant_id)
    .bind(domain_id)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await
}

/// `GET /v1/domains/{id}/sla`: the SLO, the period's budget and its incidents.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SlaStatus {
    #[schema(value_type = crate::sla::Slo)]
    pub slo: Value,
    /// `2026-11`.
    pub period: String,
    pub time_zone: String,
    /// The period's bounds in the tenant's zone (RFC 3339 with its offset).
    pub period_start: String,
    pub period_end: String,
    #[serde(flatten)]
    pub budget: Budget,
    pub incidents: Vec<PeriodIncident>,
}

/// The SLA figures of the tenant's domain with `slo` over `month` as of `now`.
pub async fn status(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    domain_id: Uuid,
    slo: &Slo,
    month: &Month,
    now: DateTime<Utc>,
) -> sqlx::Result<SlaStatus> {
    let (start, end) = (month.start(), month.end());
    let uptime = crate::uptime::load(conn, domain_id, start, now.clamp(start, end)).await?;
    let budget = Budget::compute(slo, &uptime, start, end, now);
    let incidents = incidents_overlapping(conn, tenant_id, domain_id, start, end).await?;
    Ok(SlaStatus {
        slo: slo.to_json(),
        period: month.to_string(),
        time_zone: month.tz.name().to_owned(),
        period_start: start.with_timezone(&month.tz).to_rfc3339(),
        period_end: end.with_timezone(&month.tz).to_rfc3339(),
        budget,
        incidents,
    })
}

/// Every domain of the tenant with what its report line needs, for `month` as of `now`: one
/// uptime read per domain, one read for all incidents.
pub async fn report_inputs(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    month: &Month,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<DomainInput>> {
    let (start, end) = (month.start(), month.end());
    let domains: Vec<(Uuid, Option<String>, String, Option<Value>)> = sqlx::query_as(
        "SELECT id, name, url, slo FROM domains WHERE tenant_id = $1 AND created_at < $2 ORDER BY id",
    )
    .bind(tenant_id)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    // Domain id, opened, acknowledged, resolved.
    type IncidentRow = (Uuid, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let rows: Vec<IncidentRow> = sqlx::query_as(
        "SELECT domain_id, opened_at, acknowledged_at, resolved_at FROM incidents
         WHERE tenant_id = $1 AND opened_at >= $2 AND opened_at < $3 ORDER BY opened_at",
    )
    .bind(tenant_id)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    let mut incidents: HashMap<Uuid, Vec<IncidentTimes>> = HashMap::new();
    for (domain_id, opened_at, acknowledged_at, resolved_at) in rows {
        incidents.entry(domain_id).or_default().push(IncidentTimes {
            opened_at,
            acknowledged_at,
            resolved_at,
        });
    }
    let until = now.clamp(start, end);
    let mut inputs = Vec::with_capacity(domains.len());
    for (domain_id, name, url, slo) in domains {
        inputs.push(DomainInput {
            domain_id,
            name,
            url,
            slo: decode(domain_id, slo)?,
            uptime: crate::uptime::load(conn, domain_id, start, until).await?,
            incidents: incidents.remove(&domain_id).unwrap_or_default(),
        });
    }
    Ok(inputs)
}

/// A stored report with its renderings.
#[derive(Debug, Clone)]
pub struct StoredReport {
    pub id: Uuid,
    pub report: Report,
    pub text: String,
    pub html: String,
}

/// The tenant's stored report of the month starting on `month`, if it was sent.
pub async fn stored(pool: &PgPool, tenant_id: Uuid, month: NaiveDate) -> sqlx::Result<Option<StoredReport>> {
    let row: Option<(Uuid, Value, String, String)> =
        sqlx::query_as("SELECT id, content, text, html FROM sla_reports WHERE tenant_id = $1 AND month = $2")
            .bind(tenant_id)
            .bind(month)
            .fetch_optional(pool)
            .await?;
    row.map(|(id, content, text, html)| {
        let report = serde_json::from_value(content)
            .map_err(|_| sqlx::Error::Decode(format!("sla report {id}: bad content").into()))?;
        Ok(StoredReport { id, report, text, html })
    })
    .transpose()
}
