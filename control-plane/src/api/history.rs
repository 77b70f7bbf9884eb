//! `/v1/domains/{id}/{uptime,latency,results,certificate}`: a domain's history from the
//! time-series store. The domain must belong to the caller's tenant (checked in the
//! transactional database); another tenant's domain is a 404 like every domain route.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use shared::DomainId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::query::{invalid, limit, params, Params};
use super::schema::{CertificateAnswer, ResultList, UptimeAnswer};
use super::{ApiError, AppState, Auth, Id};
use crate::timeseries::Window;

pub const DEFAULT_RESULTS: u32 = 50;
pub const MAX_RESULTS: u32 = 1_000;

/// The history routes, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(uptime))
        .routes(routes!(latency))
        .routes(routes!(results))
        .routes(routes!(certificate))
}

/// The domain's id if it belongs to the caller's tenant, else 404.
async fn owned(state: &AppState, tenant_id: Uuid, raw: &str) -> Result<Uuid, ApiError> {
    let id: DomainId = raw.parse().map_err(|_| ApiError::NotFound)?;
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM domains WHERE id = $1 AND tenant_id = $2")
        .bind(id.0)
        .bind(tenant_id)
        .fetch_optional(&state.pool)
        .await?;
    found.map(|_| id.0).ok_or(ApiError::NotFound)
}

/// The caller's domain `raw` and the `?window=` asked for (24 h when absent).
async fn windowed(
    state: &AppState,
    tenant_id: Uuid,
    raw: &str,
    query: Params,
) -> Result<(Uuid, Window), ApiError> {
    let map = params(query, &["window"])?;
    let window = match map.get("window") {
        None => Window::Day,
        Some(raw) => raw.parse().map_err(|e: String| invalid("window", e))?,
    };
    Ok((owned(state, tenant_id, raw).await?, window))
}

/// The domain's uptime over the window, in two definitions named apart: `uptime_percent` (and
/// `consensus`) is the time consensus held it up over the time it was monitored (not paused,
/// decided), from the transition history; `probes` and `regions` are the raw probe success
/// ratios, every region together and per region. `regional_failures` lists regions failing
/// persistently while the domain is up.
#[utoipa::path(get, path = "/domains/{id}/uptime", tag = "history", params(("id" = Uuid, Path, description = "The domain's id"), ("window" = Option<String>, Query, description = "`24h` (default), `7d` or `30d`")),
    responses((status = 200, description = "Consensus uptime and probe success ratios over the window", body = UptimeAnswer)))]
pub async fn uptime(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let (domain, window) = windowed(&state, p.tenant_id, &id, query).await?;
    let probes = state.timeseries.uptime(domain, window).await?;
    let now = state.clock.now();
    let mut conn = state.pool.acquire().await?;
    let consensus = crate::uptime::load(&mut conn, domain, probes.since, now).await?;
    let regional_failures = super::incidents::regional_failures_of(&state, &mut conn, domain).await?;
    Ok(Json(json!({
        "window": probes.window,
        "since": probes.since,
        "until": now,
        "uptime_percent": consensus.uptime_percent,
        "consensus": consensus,
        "probes": probes.probes,
        "regions": probes.regions,
        "regional_failures": regional_failures,
    })))
}

/// Latency percentiles over the window, every region together and per region.
#[utoipa::path(get, path = "/domains/{id}/latency", tag = "history", params(("id" = Uuid, Path, description = "The domain's id"), ("window" = Option<String>, Query, description = "`24h` (default), `7d` or `30d`")),
    responses((status = 200, description = "Latency percentiles", body = crate::timeseries::Latency)))]
pub async fn latency(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let (domain, window) = windowed(&state, p.tenant_id, &id, query).await?;
    Ok(Json(json!(state.timeseries.latency(domain, window).await?)))
}

/// The most recent probe results, newest first.
#[utoipa::path(get, path = "/domains/{id}/results", tag = "history",
    params(("id" = Uuid, Path, description = "The domain's id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Default 50")),
    responses((status = 200, description = "Recent results", body = ResultList)))]
pub async fn results(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["limit"])?;
    let limit = limit(&map, DEFAULT_RESULTS, MAX_RESULTS)?;
    let domain = owned(&state, p.tenant_id, &id).await?;
    let items = state.timeseries.recent_results(domain, limit).await?;
    Ok(Json(json!({ "items": items })))
}

/// The certificates the regions saw, and the one that expires first.
#[utoipa::path(get, path = "/domains/{id}/certificate", tag = "history", params(("id" = Uuid, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "Certificates per region", body = CertificateAnswer),
        (status = 404, description = "No such domain, or no certificate recorded yet (`not_recorded`)", body = super::schema::ErrorBody),
    ))]
pub async fn certificate(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    let domain = owned(&state, p.tenant_id, &id).await?;
    let url: String = sqlx::query_scalar("SELECT url FROM domains WHERE id = $1")
        .bind(domain)
        .fetch_one(&state.pool)
        .await?;
    let host = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    let regions = state.timeseries.certificate(domain, &host).await?;
    if regions.is_empty() {
        return Err(ApiError::NotRecorded("no certificate has been recorded for this domain yet".into()));
    }
    // Over every region: the certificate that expires first, and which region saw it.
    let earliest = regions
        .iter()
        .filter_map(|r| r.earliest_expiry.as_ref().map(|e| (e, &r.region)))
        .min_by_key(|(e, _)| e.not_after)
        .map(|(e, region)| json!({ "region": region, "certificate": e }));
    Ok(Json(json!({ "regions": regions, "earliest_expiry": earliest })))
}
