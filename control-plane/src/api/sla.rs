//! `/v1/domains/{id}/sla` (a domain's SLO figures for a period), `/v1/reports/sla` (the
//! tenant's monthly report as JSON, text or HTML) and `/v1/tenant` (the tenant, and its time
//! zone for admins to set). Tenant-scoped: another tenant's domain is a 404.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use shared::DomainId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{invalid, params, Params};
use super::{Admin, ApiError, AppState, Auth, Id, JsonObject};
use crate::sla::{period, report, store, Month};
use crate::tenants;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(domain_sla))
        .routes(routes!(sla_report))
        .routes(routes!(tenant, update_tenant))
}

/// The month named by `key` (`YYYY-MM`) in `tz`, or `default`; a month that has not begun is
/// refused by name.
fn month_param(
    map: &std::collections::HashMap<String, String>,
    key: &str,
    tz: chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
    default: Month,
) -> Result<Month, ApiError> {
    let Some(raw) = map.get(key) else { return Ok(default) };
    let month =
        Month::parse(raw, tz).ok_or_else(|| invalid(key, "must be a month as YYYY-MM, e.g. 2026-11"))?;
    if month.start() > now {
        return Err(invalid(key, "has not begun yet"));
    }
    Ok(month)
}

/// `?period=YYYY-MM` (default: the current month in the tenant's time zone). 404 `not_recorded`
/// when the domain has no SLO.
#[utoipa::path(get, path = "/domains/{id}/sla", tag = "reports",
    params(("id" = Uuid, Path, description = "The domain's id"), ("period" = Option<String>, Query, pattern = "^[0-9]{4}-[0-9]{2}$", description = "`YYYY-MM`; default the current month")),
    responses(
        (status = 200, description = "The SLO's figures for the period", body = crate::sla::store::SlaStatus),
        (status = 404, description = "No such domain, or it has no SLO (`not_recorded`)", body = super::schema::ErrorBody),
    ))]
pub async fn domain_sla(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["period"])?;
    let id: DomainId = id.parse().map_err(|_| ApiError::NotFound)?;
    let mut conn = state.pool.acquire().await?;
    let slo = store::domain_slo(&mut conn, p.tenant_id, id.0).await?.ok_or(ApiError::NotFound)?;
    let Some(slo) = slo else {
        return Err(ApiError::NotRecorded(
            "this domain has no slo: set one with PATCH /v1/domains/{id}".into(),
        ));
    };
    let tz = tenants::time_zone(&mut conn, p.tenant_id).await?;
    let now = state.clock.now();
    let month = month_param(&map, "period", tz, now, Month::containing(now, tz))?;
    let status = store::status(&mut conn, p.tenant_id, id.0, &slo, &month, now).await?;
    Ok(Json(json!(status)))
}

/// `?month=YYYY-MM` (default: the last month that has ended) and `format=json|text|html`
/// (default `json`). The report as it was sent when it was; else built now (`complete` false
/// while the month runs).
#[utoipa::path(get, path = "/reports/sla", tag = "reports",
    params(
        ("month" = Option<String>, Query, pattern = "^[0-9]{4}-[0-9]{2}$", description = "`YYYY-MM`; default the last month that has ended"),
        ("format" = Option<String>, Query, description = "`json` (default), `text` or `html`"),
    ),
    responses((status = 200, description = "The monthly report", content(
        (crate::sla::report::Report = "application/json"),
        (String = "text/plain"),
        (String = "text/html"),
    ))))]
pub async fn sla_report(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["month", "format"])?;
    let format = match map.get("format").map(String::as_str) {
        None | Some("json") => "json",
        Some("text") => "text",
        Some("html") => "html",
        Some(_) => return Err(invalid("format", "must be json, text or html")),
    };
    let mut conn = state.pool.acquire().await?;
    let tz = tenants::time_zone(&mut conn, p.tenant_id).await?;
    let now = state.clock.now();
    let month = month_param(&map, "month", tz, now, Month::containing(now, tz).previous())?;
    let (built, text, html) = match store::stored(&state.pool, p.tenant_id, month.first_day()).await? {
        Some(stored) => (stored.report, stored.text, stored.html),
        None => {
            let inputs = store::report_inputs(&mut conn, p.tenant_id, &month, now).await?;
            let built = report::build(p.tenant_id, &month, now, &inputs);
            let (text, html) = (report::text(&built), report::html(&built));
            (built, text, html)
        }
    };
    Ok(match format {
        "text" => ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], text)
            .into_response(),
        "html" => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                // The report's own inline styles and nothing else: no script, no fetch.
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
                ),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            ],
            html,
        )
            .into_response(),
        _ => Json(json!(built)).into_response(),
    })
}

#[utoipa::path(get, path = "/tenant", tag = "tenant",
    responses((status = 200, description = "The tenant", body = crate::tenants::TenantInfo)))]
pub async fn tenant(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    let info = tenants::get(&state.pool, p.tenant_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!(info)))
}

/// `{"time_zone": "Europe/Berlin"}`: an IANA name; the tenant's SLO periods and reports are
/// taken there from now on.
#[utoipa::path(patch, path = "/tenant", tag = "tenant", security(("bearer" = ["admin"])), request_body = super::schema::TenantBody,
    responses((status = 200, description = "The tenant", body = crate::tenants::TenantInfo)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    Admin(p): Admin,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    if let Some(unknown) = body.keys().find(|k| k.as_str() != "time_zone") {
        return Err(invalid(unknown, "unknown field"));
    }
    let zone = match body.get("time_zone") {
        None => return Err(invalid("time_zone", "is required")),
        Some(Value::String(name)) => period::parse_time_zone(name).ok_or_else(|| {
            invalid("time_zone", "must be an IANA time zone name, e.g. Europe/Berlin or UTC")
        })?,
        Some(_) => {
            return Err(invalid("time_zone", "must be an IANA time zone name, e.g. Europe/Berlin or UTC"))
        }
    };
    let info = tenants::set_time_zone(&state.pool, p.tenant_id, zone).await?.ok_or(ApiError::NotFound)?;
    tracing::info!(tenant_id = %p.tenant_id, time_zone = %info.time_zone, "tenant time zone set");
    Ok(Json(json!(info)))
}
