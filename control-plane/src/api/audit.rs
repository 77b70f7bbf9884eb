//! The audit log's HTTP side: the route layers that append a row for every write (`POST`,
//! `PUT`, `PATCH`, `DELETE` under `/v1`, and the console's posted forms, which call the same
//! handlers), and `GET /v1/audit` (admins) to read them.
//!
//! A write's row says who (the token; a console session acts with its token), from where (the
//! client address, forwarded only by `trusted_proxies`), what (method, route template, the
//! resource's type and id, the status answered) and a redacted diff of the resource's API view
//! read just before and just after the handler ([`crate::audit::diff`]). The row is appended
//! after the handler's transaction committed and before the response leaves; a failure to
//! append is logged and counted and does not change the answer (ARCHITECTURE.md explains why
//! not in the same transaction).

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::query::{invalid, limit, params, time, Params};
use super::schema::AuditPage;
use super::{channels, domains, incidents, maintenance, sla, status_pages, Admin, ApiError, AppState, Auth};
use crate::audit::diff::diff;
use crate::audit::store::{self, Entry, Filter, Via};
use crate::console::client;
use crate::console::Viewer;
use crate::tenants::{self, Principal};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// `GET /v1/audit?since=&until=&actor=&resource_type=&resource_id=&route=&limit=&cursor=`:
/// the tenant's audit rows, newest first (admins only). `since`/`until` are RFC 3339 (`at >=
/// since`, `at < until`), `actor` a token id, `route` a route template exactly as stored
/// (`/v1/domains/{id}`); `limit` 1–1000 (default 100); `next_cursor` continues the list.
#[utoipa::path(get, path = "/audit", tag = "tenant", security(("bearer" = ["admin"])),
    params(
        ("since" = Option<String>, Query, format = DateTime, description = "Rows at or after this RFC 3339 time"),
        ("until" = Option<String>, Query, format = DateTime, description = "Rows before this RFC 3339 time"),
        ("actor" = Option<Uuid>, Query, description = "The token that wrote"),
        ("resource_type" = Option<String>, Query, description = "`domain`, `channel`, `token`, `maintenance_window`, `status_page`, `incident`, `notification`, `check_test`, `tenant` or `other`"),
        ("resource_id" = Option<String>, Query, description = "The resource's id"),
        ("route" = Option<String>, Query, description = "A route template, exactly (`/v1/domains/{id}`)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, default 100"),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`"),
    ),
    responses((status = 200, description = "A page of audit rows, newest first", body = AuditPage)))]
pub async fn list(
    State(state): State<AppState>,
    Admin(p): Admin,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(
        query,
        &["since", "until", "actor", "resource_type", "resource_id", "route", "limit", "cursor"],
    )?;
    let uuid = |key: &str| {
        map.get(key).map(|raw| raw.parse::<Uuid>().map_err(|_| invalid(key, "must be a UUID"))).transpose()
    };
    let text = |key: &str| map.get(key).filter(|v| !v.is_empty()).cloned();
    let filter = Filter {
        since: time(&map, "since")?,
        until: time(&map, "until")?,
        actor: uuid("actor")?,
        resource_type: text("resource_type"),
        resource_id: text("resource_id"),
        route: text("route"),
        before_id: match map.get("cursor").map(String::as_str) {
            None | Some("") => None,
            Some(c) => Some(c.parse::<Uuid>().map_err(|_| invalid("cursor", "invalid cursor"))?),
        },
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if until <= since {
            return Err(invalid("until", "must be after since"));
        }
    }
    let limit = limit(&map, DEFAULT_PAGE, MAX_PAGE)?;
    let mut page = store::list(&state.pool, p.tenant_id, &filter, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = if more { page.last().map(|r| r.id.to_string()) } else { None };
    Ok(Json(json!({ "items": page, "next_cursor": next_cursor })))
}

/// The method of a write, or `None` for a read.
fn write_method(method: &Method) -> Option<&'static str> {
    match *method {
        Method::POST => Some("POST"),
        Method::PUT => Some("PUT"),
        Method::PATCH => Some("PATCH"),
        Method::DELETE => Some("DELETE"),
        _ => None,
    }
}

/// The type of resource a route template acts on, by its first segment under `/v1` or
/// `/console` (`/v1/domains/{id}/pause` → `domain`); `other` for a route this list does not
/// know yet.
pub fn resource_of(route: &str) -> &'static str {
    let rest = route.strip_prefix("/v1/").or_else(|| route.strip_prefix("/console/")).unwrap_or(route);
    match rest.split('/').next().unwrap_or_default() {
        "domains" => "domain",
        "channels" => "channel",
        "notifications" => "notification",
        "tokens" => "token",
        "maintenance" => "maintenance_window",
        "status-pages" => "status_page",
        "incidents" => "incident",
        "checks" => "check_test",
        "tenant" => "tenant",
        _ => "other",
    }
}

/// Whether [`view`] can read a resource of this type.
fn has_view(resource_type: &str) -> bool {
    matches!(
        resource_type,
        "domain" | "channel" | "token" | "maintenance_window" | "status_page" | "incident" | "tenant"
    )
}

/// The resource's API view as its `GET` route shows it to `principal` (the same handler), or
/// `None` when it does not exist (or has no view).
async fn view(state: &AppState, principal: &Principal, resource_type: &str, id: &str) -> Option<Value> {
    let (state, auth, path) = (State(state.clone()), Auth(principal.clone()), super::Id(id.to_owned()));
    let read = match resource_type {
        "domain" => domains::get(state, auth, path).await,
        "channel" => channels::get_one(state, auth, path).await,
        "maintenance_window" => maintenance::show(state, auth, path).await,
        "status_page" => status_pages::show(state, auth, path).await,
        "incident" => incidents::show(state, auth, path).await,
        "tenant" => sla::tenant(state, auth).await,
        "token" => {
            let id: Uuid = id.parse().ok()?;
            let tokens = tenants::list_tokens(&state.pool, principal.tenant_id).await.ok()?;
            return tokens.into_iter().find(|t| t.id == id).map(|t| json!(t));
        }
        _ => return None,
    };
    read.ok().map(|Json(v)| v)
}

/// What is known about a write before its handler runs.
struct Write {
    principal: Principal,
    via: Via,
    client_addr: IpAddr,
    method: &'static str,
    route: String,
    resource_type: &'static str,
    /// From the path (`{id}`), or the tenant's own id for `/v1/tenant`.
    resource_id: Option<String>,
}

impl Write {
    fn from_parts(
        parts: &axum::http::request::Parts,
        state: &AppState,
        principal: Principal,
        via: Via,
        method: &'static str,
        id: Option<String>,
    ) -> Self {
        let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
        let resource_type = resource_of(&route);
        let resource_id = id.or_else(|| (resource_type == "tenant").then(|| principal.tenant_id.to_string()));
        let client_addr =
            client::client_addr(client::peer(parts), &parts.headers, &state.config.trusted_proxies);
        Self { principal, via, client_addr, method, route, resource_type, resource_id }
    }
}

/// The `{id}` of a matched route, if it has one.
async fn path_id(parts: &mut axum::http::request::Parts, state: &AppState) -> Option<String> {
    let params = RawPathParams::from_request_parts(parts, state).await.ok()?;
    params.iter().find(|(key, _)| *key == "id").map(|(_, value)| value.to_owned())
}

/// Runs the handler of `write` and appends its row.
async fn audited(state: &AppState, write: Write, request: Request, next: Next) -> Response {
    let before = match &write.resource_id {
        Some(id) if has_view(write.resource_type) => {
            view(state, &write.principal, write.resource_type, id).await
        }
        _ => None,
    };
    let response = next.run(request).await;
    let status = response.status();
    let succeeded = status.is_success() || status.is_redirection();
    // A create's id is in its JSON answer (API) or where it redirects to (console); a resource
    // without a view is shown as the handler's answer.
    let needs_body = succeeded
        && (write.resource_id.is_none() || !has_view(write.resource_type))
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
    let (response, answer) = if needs_body {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => {
                let answer = serde_json::from_slice::<Value>(&bytes).ok();
                (Response::from_parts(parts, Body::from(bytes)), answer)
            }
            Err(error) => {
                tracing::error!(%error, route = %write.route, "cannot read a write's answer for the audit log");
                return ApiError::Internal(anyhow::anyhow!("reading the answer: {error}")).into_response();
            }
        }
    } else {
        (response, None)
    };
    let resource_id = write.resource_id.clone().or_else(|| {
        if !succeeded {
            return None;
        }
        answer.as_ref().and_then(|a| a.get("id")).and_then(Value::as_str).map(str::to_owned).or_else(|| {
            let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
            let last = location.rsplit('/').next()?;
            last.parse::<Uuid>().ok().map(|id| id.to_string())
        })
    });
    let changed = if !succeeded {
        None
    } else if write.resource_type == "check_test" {
        // A check test changes nothing; its row says who tested what, not the results.
        Some(diff(write.resource_type, None, None))
    } else {
        let after = match (&resource_id, write.method) {
            (_, "DELETE") => None,
            (Some(id), _) if has_view(write.resource_type) => {
                view(state, &write.principal, write.resource_type, id).await
            }
            _ => answer,
        };
        Some(diff(write.resource_type, before.as_ref(), after.as_ref()))
    };
    let entry = Entry {
        tenant_id: write.principal.tenant_id,
        token_id: write.principal.token_id,
        via: write.via,
        client_addr: write.client_addr,
        method: write.method,
        route: write.route,
        resource_type: write.resource_type,
        resource_id,
        status: status.as_u16(),
        diff: changed,
    };
    match store::insert(&state.pool, &entry).await {
        Ok(_) => state.metrics.audit.appended(write.via),
        Err(error) => {
            state.metrics.audit.append_failed(write.via);
            tracing::error!(
                error = %shared::error::Chain(&error),
                tenant_id = %entry.tenant_id,
                route = %entry.route,
                resource_id = entry.resource_id.as_deref().unwrap_or(""),
                status = entry.status,
                "cannot append to the audit log"
            );
        }
    }
    response
}

/// The `/v1` route layer (inside [`super::gate`], which authenticated): a write is run through
/// [`audited`]; reads pass.
pub async fn record_api(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(method) = write_method(request.method()) else { return next.run(request).await };
    let (mut parts, body) = request.into_parts();
    let Some(principal) = parts.extensions.get::<Principal>().cloned() else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let id = path_id(&mut parts, &state).await;
    let write = Write::from_parts(&parts, &state, principal, Via::Api, method, id);
    audited(&state, write, Request::from_parts(parts, body), next).await
}

/// The console's route layer: a posted form of a signed-in session (not signing in or out) is
/// run through [`audited`] as its session's token; anything else passes.
pub async fn record_console(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(method) = write_method(request.method()) else { return next.run(request).await };
    let (mut parts, body) = request.into_parts();
    let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    if matches!(route.as_str(), "/console/sign-in" | "/console/sign-out") {
        return next.run(Request::from_parts(parts, body)).await;
    }
    // The handler's own `Viewer` extractor finds this one in the extensions.
    let viewer = match Viewer::from_request_parts(&mut parts, &state).await {
        Ok(viewer) => viewer,
        Err(refusal) => return refusal.into_response(),
    };
    if viewer.is_demo() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let id = path_id(&mut parts, &state).await;
    let write = Write::from_parts(&parts, &state, viewer.principal, Via::Console, method, id);
    audited(&state, write, Request::from_parts(parts, body), next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_resource() {
        for (route, resource) in [
            ("/v1/domains", "domain"),
            ("/v1/domains/{id}/pause", "domain"),
            ("/v1/channels/{id}/test", "channel"),
            ("/v1/notifications/{id}/retry", "notification"),
            ("/v1/tokens/{id}", "token"),
            ("/v1/maintenance/{id}", "maintenance_window"),
            ("/v1/status-pages", "status_page"),
            ("/v1/incidents/{id}/updates", "incident"),
            ("/v1/checks/test", "check_test"),
            ("/v1/tenant", "tenant"),
            ("/console/status-pages/{id}/delete", "status_page"),
            ("/console/incidents/{id}/ack", "incident"),
            ("/v1/something-new", "other"),
        ] {
            assert_eq!(resource_of(route), resource, "{route}");
        }
    }
}
