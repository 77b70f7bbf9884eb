//! `GET /v1/domains/{id}/dns`: a domain's DNS drift record: its `dns_drift` settings, the known
//! answer set per region (with a candidate set being confirmed) and its recent confirmed
//! changes (`?limit=`, newest first). Another tenant's domain is a 404.

use axum::extract::State;
use axum::Json;
use serde_json::Value;
use shared::DomainId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{limit, params, Params};
use super::{ApiError, AppState, Auth, Id};

/// Changes listed by default and at most.
pub const DEFAULT_CHANGES: u32 = 50;
pub const MAX_CHANGES: u32 = 500;

/// The DNS route, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(dns))
}

/// `{"domain_id", "dns_drift": {...}, "regions": [{"region", "known", "known_since",
/// "candidate", "candidate_probes", "candidate_since", "observed_at"}], "changes": [{"id",
/// "region", "previous", "current", "added", "removed", "changed_at", "confirmed_at",
/// "rotation", "notified"}]}`.
#[utoipa::path(get, path = "/domains/{id}/dns", tag = "reports",
    params(("id" = Uuid, Path, description = "The domain's id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Changes listed, default 50")),
    responses((status = 200, description = "The domain's DNS drift record", body = super::schema::DnsAnswer)))]
pub async fn dns(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["limit"])?;
    let limit = limit(&map, DEFAULT_CHANGES, MAX_CHANGES)?;
    let id: DomainId = id.parse().map_err(|_| ApiError::NotFound)?;
    crate::dns_drift::view(&state.pool, p.tenant_id, id.0, i64::from(limit))
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}
