//! `GET /v1/regions`: the regions domains can be placed in. With an admin token each region
//! also lists its agents (certificate serial, version, first and last seen, revoked or not).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState, Auth};
use crate::tenants::Role;

pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
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
            json!({ "name": name, "last_seen": last_seen, "agents": agents })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}
