//! One thin handler per console page and form. Reads call the REST API's own handlers (or the
//! store functions they call) with the viewer's principal and turn their answers into page
//! data; writes get an [`Admin`](crate::api::Admin) only through the
//! [`Write`](super::viewer::Write) extractor (that is, [`Viewer::writer`]) and call the API's
//! write handlers with it. Every write answers with a redirect (post, redirect, get).
//!
//! By page: [`sign_in`] (sessions), [`domains`] (the list, a domain's page, pause and resume),
//! [`incidents`] (acknowledge, operator updates), [`status_pages`] (editing the public pages),
//! [`channels`] (test button, dead letters and their retry) and [`digests`].

mod channels;
mod digests;
mod domains;
mod incidents;
mod sign_in;
mod status_pages;

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use shared::DomainId;
use uuid::Uuid;

pub use channels::{channels, retry_notification, test_channel};
pub use digests::{digest, digests};
pub use domains::{domain, domains, pause, resume};
pub use incidents::{acknowledge, incident, incidents, post_update};
pub use sign_in::{sign_in, sign_in_page, sign_out};
pub use status_pages::{
    create_status_page, delete_status_page, new_status_page, status_page, status_pages, update_status_page,
};

use super::viewer::page;
use super::{ConsoleError, Viewer};
use crate::api::{self, ApiError, AppState};
use crate::domains::{store, Domain};

/// Domains a tenant's list loads at most (in pages of the API's largest page).
const MAX_DOMAINS: usize = 10_000;

type Result<T, E = ConsoleError> = std::result::Result<T, E>;

/// An API handler's JSON answer as the page's typed view of it.
fn read<T: DeserializeOwned>(Json(value): Json<Value>) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| ConsoleError::Internal(anyhow::Error::new(e).context("reading an API answer")))
}

/// A query string as the API's handlers take it.
fn params(pairs: &[(&str, String)]) -> api::query::Params {
    Ok(Query(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<HashMap<_, _>>()))
}

fn html(template: &impl askama::Template) -> Response {
    page(StatusCode::OK, template)
}

pub async fn home() -> Redirect {
    Redirect::to("/console/domains")
}

/// The live stream a page subscribes to: the tenant's events (one domain's on its page) after
/// the position the page was rendered at, so nothing committed in between is missed.
fn live_url(state: &AppState, domain: Option<&str>) -> String {
    let after = state.live.position();
    match domain {
        Some(id) => format!("/console/events?domain={id}&after={after}"),
        None => format!("/console/events?after={after}"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    domain: Option<String>,
    after: Option<String>,
}

/// `GET /console/events`: the viewer's tenant's live events as Server-Sent Events (the same
/// stream as `GET /v1/events`), resumed from `Last-Event-ID` or `after`.
pub async fn events(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    query: std::result::Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let tenant = viewer.principal.tenant_id;
    let view = match query.domain.as_deref() {
        None => crate::live::TenantView::new(tenant),
        Some(raw) => {
            let id: DomainId = raw.parse().map_err(|_| ConsoleError::NotFound)?;
            store::get(&state.pool, tenant, id).await.map_err(ApiError::from)?;
            crate::live::TenantView::domain(tenant, id.0)
        }
    };
    let resume = crate::live::resume_point(&headers, query.after.as_deref());
    Ok(state.live.sse(view, resume).unwrap_or_else(IntoResponse::into_response))
}

#[derive(Debug, Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// Every domain of the tenant, through the store function the API's list calls.
async fn all_domains(state: &AppState, tenant_id: Uuid) -> Result<Vec<Domain>> {
    let mut all: Vec<Domain> = Vec::new();
    loop {
        let after = all.last().map(|d| d.id);
        let page = store::list(&state.pool, tenant_id, after, None, 500).await.map_err(ApiError::from)?;
        let done = page.len() < 500;
        all.extend(page);
        if done || all.len() >= MAX_DOMAINS {
            return Ok(all);
        }
    }
}

fn display_name(domain: &Domain) -> String {
    domain.spec.name.clone().unwrap_or_else(|| domain.spec.url.to_string())
}

/// Display names of the tenant's domains among `ids` (an incident outlives its domain).
async fn domain_names(state: &AppState, tenant_id: Uuid, ids: &[Uuid]) -> Result<HashMap<Uuid, String>> {
    let found = store::get_many(&state.pool, tenant_id, ids).await.map_err(ApiError::from)?;
    let mut names: HashMap<Uuid, String> = found.iter().map(|d| (d.id.0, display_name(d))).collect();
    for id in ids {
        names.entry(*id).or_insert_with(|| format!("deleted domain {id}"));
    }
    Ok(names)
}
#[derive(Debug, Deserialize)]
struct IncidentView {
    id: Uuid,
    domain_id: Uuid,
    state: String,
    opened_at: DateTime<Utc>,
    duration_s: Option<i64>,
    ack_note: Option<String>,
    #[serde(default)]
    opened_regions: Value,
}
