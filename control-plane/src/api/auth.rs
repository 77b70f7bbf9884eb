//! Bearer-token authentication. [`Auth`] admits any valid token of a tenant; [`Admin`] also
//! requires the `admin` role. Every `/v1` handler takes one of them, so no route is reachable
//! without a token, and handlers scope every query by the principal's tenant. Failures are
//! throttled, logged and counted, and a token's last use recorded, by [`super::auth_guard`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::auth_guard::Failure;
use super::{ApiError, AppState};
use crate::console::client::{client_addr, peer};
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
        let guard = &state.auth_guard;
        let client = client_addr(peer(parts), &parts.headers, &state.config.trusted_proxies);
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            guard.admit(client, None)?;
            return Err(guard.failed(client, None, Failure::Missing));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(token) = token else {
            guard.admit(client, None)?;
            return Err(guard.failed(client, None, Failure::Malformed));
        };
        guard.admit(client, Some(token))?;
        let Some(principal) = tenants::authenticate(&state.pool, token).await? else {
            return Err(guard.failed(client, Some(token), Failure::InvalidToken));
        };
        guard.used(&state.pool, principal.token_id, state.clock.now()).await;
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
