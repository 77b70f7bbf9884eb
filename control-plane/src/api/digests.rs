//! `/v1/digests` (the tenant's flap digests, newest period first) and `/v1/digests/{id}` (one
//! digest: its content, text and HTML). Tenant-scoped: another tenant's digest is a 404.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::query::{limit, params, time, Params};
use super::{ApiError, AppState, Auth, Id};
use crate::digests::store::{self, Filter};

pub const DEFAULT_LIMIT: u32 = 24;
pub const MAX_LIMIT: u32 = 500;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(show))
}

/// `?since=&until=` bound `period_start` (`since` inclusive, `until` exclusive); `limit` 1–500,
/// default 24.
#[utoipa::path(get, path = "/digests", tag = "reports",
    params(
        ("since" = Option<String>, Query, format = DateTime, description = "Periods starting at or after (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "Periods starting before (RFC 3339)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 24"),
    ),
    responses((status = 200, description = "Digests, newest period first", body = super::schema::DigestList)))]
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

/// One digest: its content, text and HTML.
#[utoipa::path(get, path = "/digests/{id}", tag = "reports", params(("id" = Uuid, Path, description = "The digest's id")),
    responses((status = 200, description = "The digest", body = crate::digests::store::Stored)))]
pub async fn show(State(state): State<AppState>, Auth(p): Auth, Id(id): Id) -> Result<Json<Value>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let digest = store::get(&state.pool, p.tenant_id, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!(digest)))
}
