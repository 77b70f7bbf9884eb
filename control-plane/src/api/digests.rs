//! `/v1/digests` (the tenant's flap digests, newest period first) and `/v1/digests/{id}` (one
//! digest: its content, text and HTML). Tenant-scoped: another tenant's digest is a 404.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ApiError, AppState, Auth};
use crate::digests::store::{self, Filter};

pub const DEFAULT_LIMIT: u32 = 24;
pub const MAX_LIMIT: u32 = 500;

pub fn routes() -> Router<AppState> {
    Router::new().route("/digests", get(list)).route("/digests/{id}", get(show))
}

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(BTreeMap::from([(field.to_owned(), message.into())]))
}

fn time(map: &HashMap<String, String>, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    map.get(key)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| invalid(key, "must be an RFC 3339 time"))
        })
        .transpose()
}

/// `?since=&until=` bound `period_start` (`since` inclusive, `until` exclusive); `limit` 1–500,
/// default 24.
pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let Query(map) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let known = ["since", "until", "limit"];
    let unknown: BTreeMap<String, String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| (k.clone(), "unknown query parameter".to_owned()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Validation(unknown));
    }
    let limit = match map.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| invalid("limit", format!("must be an integer between 1 and {MAX_LIMIT}")))?,
    };
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
