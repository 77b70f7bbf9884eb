//! `/v1/channels` (create, list, get, update, delete, test) and `/v1/notifications` (the
//! outbox: list by state, retry a dead one). Every query is scoped by the caller's tenant;
//! another tenant's channel or notification is a 404. A webhook's secret appears once, in the
//! creation response.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::netguard::TargetPolicy;
use uuid::Uuid;

use super::{Admin, ApiError, AppState, Auth, JsonObject};
use crate::notify::spec::{ChannelPolicy, ChannelSpec};
use crate::notify::store::{self, Retry};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/channels", get(list).post(create))
        .route("/channels/{id}", get(get_one).patch(update).delete(delete))
        .route("/channels/{id}/test", post(test))
        .route("/notifications", get(list_notifications))
        .route("/notifications/{id}/retry", post(retry))
}

fn policy(state: &AppState) -> ChannelPolicy {
    ChannelPolicy {
        allow_private_targets: state.config.allow_private_targets,
        targets: TargetPolicy::allowing(state.config.notify_allow_private.clone()),
        email_enabled: state.config.smtp_host.is_some(),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    Ok(limit)
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(p): Admin,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = ChannelSpec::parse(&body, &policy(&state)).map_err(ApiError::validation)?;
    let (channel, secret) = store::create(&state.pool, p.tenant_id, &spec).await?;
    tracing::info!(channel_id = %channel.id, kind = channel.kind, tenant_id = %p.tenant_id, "channel created");
    let mut view = channel.view();
    if let Some(secret) = secret {
        view["secret"] = Value::from(secret);
    }
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<Uuid>().map_err(|_| ApiError::BadRequest("invalid cursor".into()))?),
    };
    let mut page = store::list(&state.pool, p.tenant_id, after, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = if more { page.last().map(|c| c.id.to_string()) } else { None };
    let items: Vec<Value> = page.iter().map(store::Channel::view).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?.view()))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Admin(p): Admin,
    Path(id): Path<String>,
    JsonObject(patch): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let channel = store::update(&state.pool, p.tenant_id, parse_id(&id)?, &patch, &policy(&state)).await?;
    tracing::info!(channel_id = %channel.id, "channel updated");
    Ok(Json(channel.view()))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Admin(p): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if store::delete(&state.pool, p.tenant_id, id).await? {
        tracing::info!(channel_id = %id, "channel deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Queues a `test` notification for this one channel and answers 202 with its id at once; the
/// outcome shows in `GET /v1/notifications` (and the receiver).
pub(crate) async fn test(
    State(state): State<AppState>,
    Admin(p): Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let channel = store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?;
    let notification_id = store::enqueue_test(&state.pool, &channel).await?;
    state.notify_wake.notify_one();
    tracing::info!(channel_id = %channel.id, %notification_id, "test notification queued");
    Ok((StatusCode::ACCEPTED, Json(json!({ "notification_id": notification_id, "state": "pending" }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotificationQuery {
    pub(crate) state: Option<String>,
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{id}", created_at.timestamp_micros())
}

fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = raw.split_once('_')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.parse().ok()?))
}

pub(crate) async fn list_notifications(
    State(state): State<AppState>,
    Admin(p): Admin,
    query: Result<Query<NotificationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let wanted = match query.state.as_deref() {
        None | Some("") => None,
        Some(s @ ("pending" | "delivered" | "dead")) => Some(s),
        Some(_) => return Err(ApiError::BadRequest("state must be pending, delivered or dead".into())),
    };
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?),
    };
    let mut page = store::list_notifications(&state.pool, p.tenant_id, wanted, before, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = if more { page.last().map(|n| encode_cursor(n.created_at, n.id)) } else { None };
    let items: Vec<Value> = page.iter().map(store::NotificationRow::view).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

pub(crate) async fn retry(
    State(state): State<AppState>,
    Admin(p): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match store::retry(&state.pool, p.tenant_id, parse_id(&id)?).await? {
        Retry::Retried(row) => {
            state.notify_wake.notify_one();
            tracing::info!(notification_id = %row.id, "dead notification queued again");
            Ok(Json(row.view()))
        }
        Retry::NotDead(current) => {
            Err(ApiError::Conflict(format!("only a dead notification can be retried; this one is {current}")))
        }
        Retry::NotFound => Err(ApiError::NotFound),
    }
}
