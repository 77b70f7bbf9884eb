//! `GET /v1/regions`: the regions domains can be placed in. With an admin token each region
//! also lists its agents (certificate serial, version, first and last seen, revoked or not, its
//! own latest canary verdict) and the region's verdict aggregated over them.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{params, Params};
use super::schema::RegionList;
use super::{ApiError, AppState, Auth};
use crate::tenants::Role;

/// The region route, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[utoipa::path(get, path = "/regions", tag = "tenant",
    responses((status = 200, description = "The regions; with an admin token each with its agents", body = RegionList)))]
pub async fn list(State(state): State<AppState>, auth: Auth, query: Params) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    let regions = crate::regions::list(&state.pool).await?;
    if auth.0.role != Role::Admin {
        let items: Vec<Value> = regions.into_iter().map(|name| json!({ "name": name })).collect();
        return Ok(Json(json!({ "items": items })));
    }
    let mut by_region: BTreeMap<String, Vec<crate::agents::AgentRow>> =
        regions.into_iter().map(|name| (name, Vec::new())).collect();
    for agent in crate::agents::list(&state.pool).await? {
        by_region.entry(agent.region.clone()).or_default().push(agent);
    }
    let items: Vec<Value> = by_region
        .into_iter()
        .map(|(name, agents)| {
            let last_seen = agents.iter().map(|a| a.last_seen).max();
            json!({ "name": name, "last_seen": last_seen, "healthy": region_healthy(&agents), "agents": agents })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// A region's canary verdict from its agents' own: `None` when none sends one, `false` only
/// when every agent that does reports itself unhealthy (as consensus aggregates it).
fn region_healthy(agents: &[crate::agents::AgentRow]) -> Option<bool> {
    let mut verdicts = agents.iter().filter_map(|a| a.healthy).peekable();
    verdicts.peek()?;
    Some(verdicts.any(|healthy| healthy))
}
