//! `/v1/status-pages`: a tenant's public status pages (create, list, get, update with
//! `PATCH`, delete). Tenant-scoped: another tenant's page is a 404. A component's domain must
//! be one of the tenant's. Every write publishes a `page` live event after its commit, which
//! drops the cached page on every replica and tells its open streams to reload.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::query::{params, Params};
use super::schema::{PageBody, PageList, PageView};
use super::{Admin, ApiError, AppState, Auth, Id, JsonObject};
use crate::live::Event;
use crate::status::spec::PageSpec;
use crate::status::store::{self, StoredPage};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(show, update, delete))
}

impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> Self {
        match error {
            store::Error::Invalid(fields) => ApiError::validation(fields),
            store::Error::NotFound => ApiError::NotFound,
            store::Error::Conflict(message) => ApiError::Conflict(message),
            store::Error::Database(e) => e.into(),
        }
    }
}

fn view(page: &StoredPage) -> Value {
    let components: Vec<Value> = page
        .spec
        .components
        .iter()
        .zip(&page.component_ids)
        .map(|(c, id)| json!({ "id": id, "domain": c.domain, "name": c.name, "group": c.group, "reveal": c.reveal }))
        .collect();
    json!({
        "id": page.id,
        "slug": page.spec.slug,
        "title": page.spec.title,
        "description": page.spec.description,
        "hostnames": page.spec.hostnames,
        "components": components,
        "public_path": format!("/status/{}", page.spec.slug),
        "created_at": page.created_at,
        "updated_at": page.updated_at,
    })
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

fn changed(state: &AppState, page: &StoredPage, op: &str) {
    state.publish(Event::page(page.tenant_id, page.id, op, Utc::now()));
    // This replica at once; every replica (this one again) when the event comes back.
    let id = page.id;
    state.pages.forget(|entry| entry.page_id == id);
}

#[utoipa::path(post, path = "/status-pages", tag = "status pages", security(("bearer" = ["admin"])), request_body = PageBody,
    responses(
        (status = 201, description = "The page", body = PageView),
        (status = 409, description = "The slug or a hostname is taken", body = super::schema::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Admin(p): Admin,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = PageSpec::parse(&body).map_err(ApiError::validation)?;
    let page = store::create(&state.pool, p.tenant_id, &spec).await?;
    changed(&state, &page, "created");
    tracing::info!(page_id = %page.id, slug = page.spec.slug, "status page created");
    Ok((StatusCode::CREATED, Json(view(&page))))
}

#[utoipa::path(get, path = "/status-pages", tag = "status pages",
    responses((status = 200, description = "The tenant's pages", body = PageList)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    let pages = store::list(&state.pool, p.tenant_id).await?;
    Ok(Json(json!({ "items": pages.iter().map(view).collect::<Vec<_>>() })))
}

#[utoipa::path(get, path = "/status-pages/{id}", tag = "status pages", params(("id" = Uuid, Path, description = "The page's id")),
    responses((status = 200, description = "The page", body = PageView)))]
pub async fn show(State(state): State<AppState>, Auth(p): Auth, Id(id): Id) -> Result<Json<Value>, ApiError> {
    let page = store::get(&state.pool, p.tenant_id, parse_id(&id)?).await?;
    Ok(Json(view(&page)))
}

#[utoipa::path(patch, path = "/status-pages/{id}", tag = "status pages", params(("id" = Uuid, Path, description = "The page's id")), security(("bearer" = ["admin"])), request_body = PageBody,
    responses(
        (status = 200, description = "The page as updated", body = PageView),
        (status = 409, description = "The slug or a hostname is taken", body = super::schema::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let page = store::update(&state.pool, p.tenant_id, parse_id(&id)?, &body).await?;
    changed(&state, &page, "updated");
    tracing::info!(page_id = %page.id, slug = page.spec.slug, "status page updated");
    Ok(Json(view(&page)))
}

#[utoipa::path(delete, path = "/status-pages/{id}", tag = "status pages", params(("id" = Uuid, Path, description = "The page's id")), security(("bearer" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    store::delete(&state.pool, p.tenant_id, id).await?;
    state.publish(Event::page(p.tenant_id, id, "deleted", Utc::now()));
    state.pages.forget(|entry| entry.page_id == id);
    tracing::info!(page_id = %id, "status page deleted");
    Ok(StatusCode::NO_CONTENT)
}
