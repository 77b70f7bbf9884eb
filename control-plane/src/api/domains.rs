//! `/v1/domains`: create, list (cursor pagination, `?tag=` filter), get, update (`PATCH`), delete, pause and
//! resume. Every query is scoped by the caller's tenant; another tenant's domain is a 404.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use shared::DomainId;

use chrono::Utc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{invalid, limit, params, Params};
use super::schema::{DomainBody, DomainPage, DomainView};
use super::{Admin, ApiError, AppState, Auth, Id, JsonObject};
use crate::domains::{store, Domain, DomainSpec};
use crate::live::Event;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The domain routes, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(pause))
        .routes(routes!(resume))
}

/// A domain as the API shows it: `check` is the check type with its settings
/// (`{"type": "http"}` for the URL's check) and `json` an http check's body assertion. The request fields (`method`, `headers`, `auth`, `body`,
/// `body_secret`) are in their redacted form: a secret is shown as set, never its value.
fn view(domain: &Domain) -> Value {
    let spec = &domain.spec;
    let mut view = json!({
        "id": domain.id,
        "name": spec.name,
        "url": spec.url.as_str(),
        "check": spec.check,
        "json": spec.json_check,
        "expected_status": spec.expected_status.to_string(),
        "keyword": spec.keyword.as_ref().map(|k| k.pattern.as_str()),
        "keyword_mode": spec.keyword.as_ref().map(|k| k.mode.as_str()),
        "keyword_case_insensitive": spec.keyword.as_ref().map(|k| k.case_insensitive),
        "interval": spec.interval.to_json(),
        "interval_s": spec.interval.seconds(),
        "timeout_ms": spec.timeout_ms,
        "regions": spec.regions,
        "quorum": spec.quorum,
        "paused": spec.paused,
        "tls_verify": spec.tls_verify,
        "http_version": spec.http_version.as_str(),
        "agents_per_region": spec.agents_per_region,
        "flap": spec.flap.as_ref().map(crate::flap::Overrides::to_json),
        "tags": spec.tags,
        "dns_drift": spec.dns_drift.as_ref().unwrap_or(&crate::dns_drift::Settings::default()).to_json(),
        "slo": spec.slo.as_ref().map(crate::sla::Slo::to_json),
        "degraded": spec.degraded.as_ref().map(crate::degraded::Overrides::to_json),
        "config_version": domain.version,
        "created_at": domain.created_at,
        "updated_at": domain.updated_at,
    });
    if let Some(map) = view.as_object_mut() {
        map.extend(spec.request.redacted());
    }
    view
}

fn parse_id(raw: &str) -> Result<DomainId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

#[utoipa::path(post, path = "/domains", tag = "domains", security(("bearer" = ["admin"])),
    request_body = DomainBody,
    responses((status = 201, description = "Created", body = DomainView)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(p): Admin,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let policy = state.domain_policy().await?;
    let spec = DomainSpec::parse(&body, &policy).map_err(ApiError::validation)?;
    let written = store::create(&state.pool, p.tenant_id, &spec).await?;
    state.changed();
    state.publish(Event::domain(p.tenant_id, written.domain.id.0, "created", Utc::now()));
    tracing::info!(domain_id = %written.domain.id, version = written.version, tenant_id = %p.tenant_id, "domain created");
    Ok((StatusCode::CREATED, Json(view(&written.domain))))
}

/// `?limit=` (1–500, default 50), `?cursor=` (the `next_cursor` of the previous page), `?tag=`
/// (only the domains carrying this tag).
#[utoipa::path(get, path = "/domains", tag = "domains",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, default 50"),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`"),
        ("tag" = Option<String>, Query, description = "Only the domains carrying this tag"),
    ),
    responses((status = 200, description = "A page of domains, oldest first", body = DomainPage)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["limit", "cursor", "tag"])?;
    let limit = limit(&map, DEFAULT_PAGE, MAX_PAGE)?;
    let after = match map.get("cursor").map(String::as_str) {
        None | Some("") => None,
        Some(c) => Some(c.parse::<DomainId>().map_err(|_| invalid("cursor", "invalid cursor"))?),
    };
    let tag = match map.get("tag") {
        None => None,
        Some(raw) => Some(crate::domains::tags::parse_tag(raw).map_err(|m| invalid("tag", m))?),
    };
    // One row more than asked tells whether another page exists.
    let mut page = store::list(&state.pool, p.tenant_id, after, tag.as_deref(), limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = if more { page.last().map(|d| d.id.to_string()) } else { None };
    let items: Vec<Value> = page.iter().map(view).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[utoipa::path(get, path = "/domains/{id}", tag = "domains", params(("id" = Uuid, Path, description = "The domain's id")),
    responses((status = 200, description = "The domain", body = DomainView)))]
pub async fn get(State(state): State<AppState>, Auth(p): Auth, Id(id): Id) -> Result<Json<Value>, ApiError> {
    let domain = store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?;
    Ok(Json(view(&domain)))
}

/// Overlays the patch on the domain's request form and parses the result by the creation
/// rules; `null` clears a field. Secrets left out are kept.
#[utoipa::path(patch, path = "/domains/{id}", tag = "domains", params(("id" = Uuid, Path, description = "The domain's id")), security(("bearer" = ["admin"])),
    request_body = DomainBody,
    responses((status = 200, description = "The domain as updated", body = DomainView)))]
pub async fn update(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
    JsonObject(patch): JsonObject,
) -> Result<Json<Value>, ApiError> {
    patch_domain(&state, &p, parse_id(&id)?, patch).await
}

async fn patch_domain(
    state: &AppState,
    p: &crate::tenants::Principal,
    id: DomainId,
    patch: Map<String, Value>,
) -> Result<Json<Value>, ApiError> {
    let policy = state.domain_policy().await?;
    let written =
        store::update(&state.pool, p.tenant_id, id, &patch, &policy, &p.token_id.to_string()).await?;
    if written.changed {
        state.changed();
        state.publish(Event::domain(p.tenant_id, id.0, "updated", Utc::now()));
        tracing::info!(domain_id = %id, version = written.version, "domain updated");
    } else if patch.contains_key("flap") || patch.contains_key("slo") {
        let spec = &written.domain.spec;
        tracing::info!(domain_id = %id, flap = ?spec.flap, slo = ?spec.slo, "domain flap settings or SLO written");
    }
    Ok(Json(view(&written.domain)))
}

#[utoipa::path(post, path = "/domains/{id}/pause", tag = "domains", params(("id" = Uuid, Path, description = "The domain's id")), security(("bearer" = ["admin"])),
    responses((status = 200, description = "The domain, paused", body = DomainView)))]
pub async fn pause(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &p, parse_id(&id)?, true).await
}

#[utoipa::path(post, path = "/domains/{id}/resume", tag = "domains", params(("id" = Uuid, Path, description = "The domain's id")), security(("bearer" = ["admin"])),
    responses((status = 200, description = "The domain, probed again", body = DomainView)))]
pub async fn resume(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &p, parse_id(&id)?, false).await
}

async fn set_paused(
    state: &AppState,
    p: &crate::tenants::Principal,
    id: DomainId,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let written = store::set_paused(&state.pool, p.tenant_id, id, paused, &p.token_id.to_string()).await?;
    if written.changed {
        state.changed();
        state.publish(Event::monitoring(p.tenant_id, id.0, paused, Utc::now()));
        tracing::info!(domain_id = %id, version = written.version, paused, "domain pause state changed");
    }
    Ok(Json(view(&written.domain)))
}

#[utoipa::path(delete, path = "/domains/{id}", tag = "domains", params(("id" = Uuid, Path, description = "The domain's id")), security(("bearer" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let version = store::delete(&state.pool, p.tenant_id, id, &p.token_id.to_string()).await?;
    state.changed();
    state.publish(Event::domain(p.tenant_id, id.0, "deleted", Utc::now()));
    tracing::info!(domain_id = %id, version, "domain deleted");
    Ok(StatusCode::NO_CONTENT)
}
