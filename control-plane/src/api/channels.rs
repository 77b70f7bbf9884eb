//! `/v1/channels` (create, list, get, update, delete, test) and `/v1/notifications` (the
//! outbox: list by state, retry a dead one). Every query is scoped by the caller's tenant;
//! another tenant's channel or notification is a 404. A webhook's secret appears once, in the
//! creation response.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shared::netguard::TargetPolicy;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::query::{invalid, limit, params, Params};
use super::schema::{ChannelBody, ChannelPage, ChannelView, NotificationPage, NotificationView, TestQueued};
use super::{Admin, ApiError, AppState, Auth, Id, JsonObject};
use crate::notify::spec::{ChannelPolicy, ChannelSpec};
use crate::notify::store::{self, Retry};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(test))
        .routes(routes!(list_notifications))
        .routes(routes!(retry))
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

#[utoipa::path(post, path = "/channels", tag = "channels", security(("bearer" = ["admin"])), request_body = ChannelBody,
    responses((status = 201, description = "The channel; a webhook's signing `secret` shown this once", body = ChannelView)))]
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

/// `?limit=` (1–500, default 50), `?cursor=` (the `next_cursor` of the previous page).
#[utoipa::path(get, path = "/channels", tag = "channels",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, default 50"),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`"),
    ),
    responses((status = 200, description = "A page of channels", body = ChannelPage)))]
pub(crate) async fn list(
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
    let next_cursor = if more { page.last().map(|c| c.id.to_string()) } else { None };
    let items: Vec<Value> = page.iter().map(store::Channel::view).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[utoipa::path(get, path = "/channels/{id}", tag = "channels", params(("id" = Uuid, Path, description = "The channel's id")),
    responses((status = 200, description = "The channel", body = ChannelView)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?.view()))
}

#[utoipa::path(patch, path = "/channels/{id}", tag = "channels", params(("id" = Uuid, Path, description = "The channel's id")), security(("bearer" = ["admin"])), request_body = ChannelBody,
    responses((status = 200, description = "The channel as updated", body = ChannelView)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
    JsonObject(patch): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let channel = store::update(&state.pool, p.tenant_id, parse_id(&id)?, &patch, &policy(&state)).await?;
    tracing::info!(channel_id = %channel.id, "channel updated");
    Ok(Json(channel.view()))
}

#[utoipa::path(delete, path = "/channels/{id}", tag = "channels", params(("id" = Uuid, Path, description = "The channel's id")), security(("bearer" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
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
#[utoipa::path(post, path = "/channels/{id}/test", tag = "channels", params(("id" = Uuid, Path, description = "The channel's id")), security(("bearer" = ["admin"])),
    responses((status = 202, description = "A test notification queued", body = TestQueued)))]
pub(crate) async fn test(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let channel = store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?;
    let notification_id = store::enqueue_test(&state.pool, &channel).await?;
    state.notify_wake.notify_one();
    tracing::info!(channel_id = %channel.id, %notification_id, "test notification queued");
    Ok((StatusCode::ACCEPTED, Json(json!({ "notification_id": notification_id, "state": "pending" }))))
}

fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{id}", created_at.timestamp_micros())
}

fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = raw.split_once('_')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.parse().ok()?))
}

/// `?state=pending|delivered|dead`, `?limit=` (1–500, default 50), `?cursor=` (the
/// `next_cursor` of the previous page); newest first.
#[utoipa::path(get, path = "/notifications", tag = "channels", security(("bearer" = ["admin"])),
    params(
        ("state" = Option<String>, Query, description = "`pending`, `delivered` or `dead`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, default 50"),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`"),
    ),
    responses((status = 200, description = "A page of notifications, newest first", body = NotificationPage)))]
pub(crate) async fn list_notifications(
    State(state): State<AppState>,
    Admin(p): Admin,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["state", "limit", "cursor"])?;
    let limit = limit(&map, DEFAULT_PAGE, MAX_PAGE)?;
    let wanted = match map.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s @ ("pending" | "delivered" | "dead")) => Some(s),
        Some(_) => return Err(invalid("state", "must be pending, delivered or dead")),
    };
    let before = match map.get("cursor").map(String::as_str) {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| invalid("cursor", "invalid cursor"))?),
    };
    let mut page = store::list_notifications(&state.pool, p.tenant_id, wanted, before, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = if more { page.last().map(|n| encode_cursor(n.created_at, n.id)) } else { None };
    let items: Vec<Value> = page.iter().map(store::NotificationRow::view).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// Queues a dead notification again.
#[utoipa::path(post, path = "/notifications/{id}/retry", tag = "channels", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "The notification, pending again", body = NotificationView),
        (status = 409, description = "Only a dead notification can be retried", body = super::schema::ErrorBody),
    ))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
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
