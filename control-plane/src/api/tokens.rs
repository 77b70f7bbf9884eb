//! `/v1/tokens`: an admin lists, creates and revokes its tenant's API tokens. A token's secret
//! appears once, in the creation response.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Admin, ApiError, AppState, JsonObject};
use crate::tenants::{self, Role};

pub async fn list(State(state): State<AppState>, Admin(p): Admin) -> Result<Json<Value>, ApiError> {
    let tokens = tenants::list_tokens(&state.pool, p.tenant_id).await?;
    Ok(Json(json!({ "items": tokens })))
}

pub async fn create(
    State(state): State<AppState>,
    Admin(p): Admin,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut fields = std::collections::BTreeMap::new();
    for key in body.keys() {
        if key != "name" && key != "role" {
            fields.insert(key.clone(), "unknown field".to_owned());
        }
    }
    let name = match body.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 200 => Some(n.trim().to_owned()),
        _ => {
            fields.insert("name".into(), "required: a string of 1 to 200 characters".into());
            None
        }
    };
    let role = match body.get("role") {
        None => Some(Role::ReadOnly),
        Some(Value::String(r)) => Role::parse(r).or_else(|| {
            fields.insert("role".into(), "must be \"admin\" or \"read_only\"".into());
            None
        }),
        Some(_) => {
            fields.insert("role".into(), "must be \"admin\" or \"read_only\"".into());
            None
        }
    };
    let (Some(name), Some(role)) = (name, role) else {
        return Err(ApiError::Validation(fields));
    };
    if !fields.is_empty() {
        return Err(ApiError::Validation(fields));
    }
    let issued = tenants::create_token(&state.pool, p.tenant_id, &name, role).await?;
    Ok((StatusCode::CREATED, Json(json!(issued))))
}

pub async fn revoke(
    State(state): State<AppState>,
    Admin(p): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    if tenants::revoke_token(&state.pool, p.tenant_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
