//! `/v1/digests` (the tenant's flap digests, newest period first) and `/v1/digests/{id}` (one
//! digest: its content, text and HTML). Tenant-scoped: another tenant's digest is a 404.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::query::{limit, params, time, Params};
use super::{ApiError, AppState, Auth};
use crate::digests::store::{self, Filter};

pub const DEFAULT_LIMIT: u32 = 24;
pub const MAX_LIMIT: u32 = 500;

pub fn routes() -> Router<AppState> {
    Router::new().route("/digests", get(list)).route("/digests/{id}", get(show))
}

/// `?since=&until=` bound `period_start` (`since` inclusive, `until` exclusive); `limit` 1–500,
/// default 24.
pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["since", "until", "limit"])?;
    let limit = limit(&map, DEFAULT_LIMIT, MAX_LIMIT)?;
    let filter = Filter { since: time(&map, "since")?, until: time(&map, "until")?, limit };
    let items = store::list(&state.pool, p.tenant_id, &filter).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn show(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let digest = store::get(&state.pool, p.tenant_id, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!(digest)))
}
