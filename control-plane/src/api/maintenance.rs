//! `/v1/maintenance`: maintenance windows (create, list, get, update, delete; admins write) and
//! `/v1/maintenance/{id}/occurrences?from=&to=`. Tenant-scoped: another tenant's window is a
//! 404, and a scope may name only the tenant's own domains.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::query::{invalid, limit, params, time, Params};
use super::schema::{OccurrenceList, WindowBody, WindowPage, WindowView};
use super::{Admin, ApiError, AppState, Auth, Id, JsonObject};
use crate::maintenance::schedule::{self, Occurrence};
use crate::maintenance::store::{self, StoreError, Window};
use crate::maintenance::WindowSpec;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// Longest span `occurrences` lists.
const MAX_SPAN: Duration = Duration::days(366);
/// The span `occurrences` lists when `to` is not given.
const DEFAULT_SPAN: Duration = Duration::days(30);

/// The maintenance routes, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
        .routes(routes!(occurrences))
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(fields) => ApiError::Validation(fields),
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Database(e) => e.into(),
        }
    }
}

fn occurrence(o: &Occurrence) -> Value {
    json!({ "starts_at": o.starts_at, "ends_at": o.ends_at })
}

/// A window as the API shows it: its definition (the request form), the occurrence under way
/// at `now` (`active`) and the next one to start within a year (`next`).
fn view(window: &Window, now: DateTime<Utc>) -> Value {
    let spec = &window.spec;
    let found = schedule::occurrences(&spec.schedule, spec.time_zone, now, now + MAX_SPAN);
    let active = found.iter().find(|o| o.covers(now));
    let next = found.iter().find(|o| o.starts_at > now);
    let mut body = json!({ "id": window.id });
    if let Some(map) = body.as_object_mut() {
        map.extend(spec.to_request());
        map.insert("active".into(), active.map_or(Value::Null, occurrence));
        map.insert("next".into(), next.map_or(Value::Null, occurrence));
        map.insert("created_at".into(), json!(window.created_at));
        map.insert("updated_at".into(), json!(window.updated_at));
    }
    body
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

#[utoipa::path(post, path = "/maintenance", tag = "maintenance", security(("bearer" = ["admin"])), request_body = WindowBody,
    responses((status = 201, description = "The window", body = WindowView)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(p): Admin,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = WindowSpec::parse(&body).map_err(ApiError::Validation)?;
    let now = state.clock.now();
    let window = store::create(&state.pool, p.tenant_id, &spec, now).await?;
    tracing::info!(window_id = %window.id, tenant_id = %p.tenant_id, "maintenance window created");
    Ok((StatusCode::CREATED, Json(view(&window, now))))
}

#[utoipa::path(get, path = "/maintenance", tag = "maintenance",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, default 50"),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`"),
    ),
    responses((status = 200, description = "A page of windows", body = WindowPage)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["limit", "cursor"])?;
    let limit = limit(&map, DEFAULT_PAGE, MAX_PAGE)?;
    let after = match map.get("cursor").map(String::as_str) {
        None | Some("") => None,
        Some(c) => Some(c.parse::<Uuid>().map_err(|_| invalid("cursor", "invalid cursor"))?),
    };
    let mut page = store::list(&state.pool, p.tenant_id, after, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = if more { page.last().map(|w| w.id.to_string()) } else { None };
    let now = state.clock.now();
    let items: Vec<Value> = page.iter().map(|w| view(w, now)).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[utoipa::path(get, path = "/maintenance/{id}", tag = "maintenance", params(("id" = Uuid, Path, description = "The window's id")),
    responses((status = 200, description = "The window", body = WindowView)))]
pub async fn show(State(state): State<AppState>, Auth(p): Auth, Id(id): Id) -> Result<Json<Value>, ApiError> {
    let window = store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?;
    Ok(Json(view(&window, state.clock.now())))
}

#[utoipa::path(patch, path = "/maintenance/{id}", tag = "maintenance", params(("id" = Uuid, Path, description = "The window's id")), security(("bearer" = ["admin"])), request_body = WindowBody,
    responses((status = 200, description = "The window as updated", body = WindowView)))]
pub async fn update(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
    JsonObject(patch): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let window = store::update(&state.pool, p.tenant_id, parse_id(&id)?, &patch, now).await?;
    tracing::info!(window_id = %window.id, "maintenance window updated");
    Ok(Json(view(&window, now)))
}

#[utoipa::path(delete, path = "/maintenance/{id}", tag = "maintenance", params(("id" = Uuid, Path, description = "The window's id")), security(("bearer" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    store::delete(&state.pool, p.tenant_id, id, state.clock.now()).await?;
    tracing::info!(window_id = %id, "maintenance window deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The window's occurrences overlapping `[from, to)` (RFC 3339; default from now, for 30
/// days; at most 366 days), at most `limit` (default and maximum 1000).
#[utoipa::path(get, path = "/maintenance/{id}/occurrences", tag = "maintenance",
    params(("id" = Uuid, Path, description = "The window's id"),
        ("from" = Option<String>, Query, format = DateTime, description = "Default now (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Default 30 days after `from`; at most 366 days after"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Default 1000"),
    ),
    responses((status = 200, description = "The occurrences overlapping [from, to)", body = OccurrenceList)))]
pub async fn occurrences(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["from", "to", "limit"])?;
    let window = store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?;
    let from = time(&map, "from")?.unwrap_or_else(|| state.clock.now());
    let to = time(&map, "to")?.unwrap_or(from + DEFAULT_SPAN);
    if to <= from {
        return Err(invalid("to", "must be after from"));
    }
    if to - from > MAX_SPAN {
        return Err(invalid("to", format!("at most {} days after from", MAX_SPAN.num_days())));
    }
    let max = u32::from(schedule::MAX_OCCURRENCES);
    let limit = limit(&map, max, max)? as usize;
    let spec = &window.spec;
    let found = schedule::occurrences(&spec.schedule, spec.time_zone, from, to);
    let items: Vec<Value> = found.iter().take(limit).map(occurrence).collect();
    Ok(Json(json!({
        "window_id": window.id,
        "time_zone": spec.time_zone.name(),
        "from": from,
        "to": to,
        "items": items,
        "truncated": found.len() > limit || found.len() >= max as usize,
    })))
}
