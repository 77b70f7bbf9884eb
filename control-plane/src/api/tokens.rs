//! `/v1/tokens`: an admin lists, creates and revokes its tenant's API tokens. A token's secret
//! appears once, in the creation response.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{params, Params};
use super::schema::{TokenBody, TokenList};
use super::{Admin, ApiError, AppState, Id, JsonObject};
use crate::tenants::{self, Role};

/// The token routes, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(revoke))
}

#[utoipa::path(get, path = "/tokens", tag = "tenant", security(("bearer" = ["admin"])),
    responses((status = 200, description = "The tenant's tokens (never their secrets)", body = TokenList)))]
pub async fn list(
    State(state): State<AppState>,
    Admin(p): Admin,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    let tokens = tenants::list_tokens(&state.pool, p.tenant_id).await?;
    Ok(Json(json!({ "items": tokens })))
}

#[utoipa::path(post, path = "/tokens", tag = "tenant", security(("bearer" = ["admin"])), request_body = TokenBody,
    responses((status = 201, description = "The token with its secret, shown this once", body = crate::tenants::IssuedToken)))]
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

#[utoipa::path(delete, path = "/tokens/{id}", tag = "tenant", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    if tenants::revoke_token(&state.pool, p.tenant_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
