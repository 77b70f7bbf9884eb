//! Bearer-token authentication. [`Auth`] admits any valid token of a tenant; [`Admin`] also
//! requires the `admin` role. Every `/v1` handler takes one of them, so no route is reachable
//! without a token, and handlers scope every query by the principal's tenant.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::tenants::{self, Principal, Role};

/// Any authenticated principal.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

/// An authenticated principal with the `admin` role.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Auth(principal.clone()));
        }
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let principal = tenants::authenticate(&state.pool, token).await?.ok_or(ApiError::Unauthorized)?;
        parts.extensions.insert(principal.clone());
        Ok(Auth(principal))
    }
}

impl Admin {
    /// `principal` as an admin, or [`ApiError::ReadOnly`]: the one way besides the extractor to
    /// get an `Admin` (the console calls the API's write handlers with it).
    pub fn check(principal: Principal) -> Result<Admin, ApiError> {
        if principal.role != Role::Admin {
            return Err(ApiError::ReadOnly);
        }
        Ok(Admin(principal))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        Admin::check(principal)
    }
}
