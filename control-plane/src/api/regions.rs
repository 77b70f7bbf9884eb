//! `GET /v1/regions`: the regions domains can be placed in.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState, Auth};

pub async fn list(State(state): State<AppState>, _auth: Auth) -> Result<Json<Value>, ApiError> {
    let regions = crate::regions::list(&state.pool).await?;
    let items: Vec<Value> = regions.into_iter().map(|name| json!({ "name": name })).collect();
    Ok(Json(json!({ "items": items })))
}
