//! `/v1/domains/{id}/{uptime,latency,results,certificate}`: a domain's history from the
//! time-series store. The domain must belong to the caller's tenant (checked in the
//! transactional database); another tenant's domain is a 404 like every domain route.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use shared::DomainId;
use uuid::Uuid;

use super::query::{invalid, limit, params, Params};
use super::{ApiError, AppState, Auth};
use crate::timeseries::Window;

pub const DEFAULT_RESULTS: u32 = 50;
pub const MAX_RESULTS: u32 = 1_000;

/// The history routes, to be merged into `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains/{id}/uptime", get(uptime))
        .route("/domains/{id}/latency", get(latency))
        .route("/domains/{id}/results", get(results))
        .route("/domains/{id}/certificate", get(certificate))
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
pub async fn uptime(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
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

pub async fn latency(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let (domain, window) = windowed(&state, p.tenant_id, &id, query).await?;
    Ok(Json(json!(state.timeseries.latency(domain, window).await?)))
}

pub async fn results(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["limit"])?;
    let limit = limit(&map, DEFAULT_RESULTS, MAX_RESULTS)?;
    let domain = owned(&state, p.tenant_id, &id).await?;
    let items = state.timeseries.recent_results(domain, limit).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn certificate(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let domain = owned(&state, p.tenant_id, &id).await?;
    let regions = state.timeseries.certificate(domain).await?;
    if regions.is_empty() {
        return Err(ApiError::NotRecorded("no certificate has been recorded for this domain yet".into()));
    }
    Ok(Json(json!({ "regions": regions })))
}
