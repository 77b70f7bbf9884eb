//! Incidents: the list, an incident's page with its events and updates, acknowledging and
//! posting an operator's update.

use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{domain_names, html, live_url, params, read, IncidentView, Items, Result};
use crate::api::{self, AppState, Auth, JsonObject};
use crate::console::pages::{self, Badge};
use crate::console::viewer::Write;
use crate::console::{ConsoleError, Viewer};

#[derive(Debug, Deserialize)]
pub struct IncidentsQuery {
    #[serde(default)]
    state: String,
}

pub async fn incidents(
    State(state): State<AppState>,
    viewer: Viewer,
    query: std::result::Result<Query<IncidentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let (filter, tabs) = match query.state.as_str() {
        "" | "open" => (Some("open"), 0),
        "resolved" => (Some("resolved"), 1),
        "all" => (None, 2),
        _ => return Err(ConsoleError::BadRequest("state must be open, resolved or all".into())),
    };
    let mut pairs = vec![("limit", "200".to_owned())];
    if let Some(filter) = filter {
        pairs.push(("state", filter.to_owned()));
    }
    let p = viewer.principal.clone();
    let list: Items<IncidentView> =
        read(api::incidents::list(State(state.clone()), Auth(p.clone()), params(&pairs)).await?)?;
    let ids: Vec<Uuid> = list.items.iter().map(|i| i.domain_id).collect();
    let names = domain_names(&state, p.tenant_id, &ids).await?;
    let now = state.clock.now();
    let rows = list
        .items
        .into_iter()
        .map(|i| pages::IncidentRow {
            id: i.id.to_string(),
            domain: names.get(&i.domain_id).cloned().unwrap_or_default(),
            state: Badge::incident(&i.state),
            opened_at: pages::time(i.opened_at),
            duration: match i.duration_s {
                Some(s) => pages::span(s),
                None => format!("{} so far", pages::span((now - i.opened_at).num_seconds())),
            },
            can_ack: i.state == "open",
        })
        .collect();
    let tab = |label, query, i| pages::Tab { label, query, selected: tabs == i };
    Ok(html(&pages::IncidentsPage {
        layout: viewer.layout("Incidents", "incidents").live(live_url(&state, None)),
        tabs: vec![tab("Open", "", 0), tab("Resolved", "?state=resolved", 1), tab("All", "?state=all", 2)],
        rows,
        can_write: viewer.can_write(),
        csrf: viewer.csrf(),
    }))
}

#[derive(Debug, Deserialize)]
struct EventView {
    kind: String,
    at: DateTime<Utc>,
    actor: String,
    #[serde(default)]
    details: Value,
}

#[derive(Debug, Deserialize)]
struct UpdateView {
    status: String,
    message: String,
    posted_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct IncidentDetailView {
    #[serde(flatten)]
    incident: IncidentView,
    events: Vec<EventView>,
    #[serde(default)]
    updates: Vec<UpdateView>,
}

/// An event's details in one line: `key: value` pairs (values of nested objects as JSON).
fn details_line(details: &Value) -> String {
    match details {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(key, value)| match value {
                Value::String(s) => format!("{key}: {s}"),
                other => format!("{key}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(_) | Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub async fn incident(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let p = viewer.principal.clone();
    let detail: IncidentDetailView =
        read(api::incidents::show(State(state.clone()), Auth(p.clone()), api::Id(id)).await?)?;
    let incident = detail.incident;
    let names = domain_names(&state, p.tenant_id, &[incident.domain_id]).await?;
    let opened_regions = incident
        .opened_regions
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let region = r.get("region").and_then(Value::as_str).unwrap_or("?").to_owned();
            let mut rest = r.clone();
            if let Some(map) = rest.as_object_mut() {
                map.remove("region");
            }
            pages::OpenedRegion { region, detail: details_line(&rest) }
        })
        .collect();
    Ok(html(&pages::IncidentPage {
        layout: viewer.layout("Incident", "incidents").live(live_url(&state, None)),
        id: incident.id.to_string(),
        domain_id: incident.domain_id.to_string(),
        domain: names.get(&incident.domain_id).cloned().unwrap_or_default(),
        state: Badge::incident(&incident.state),
        opened_at: pages::time(incident.opened_at),
        duration: incident.duration_s.map(pages::span),
        ack_note: incident.ack_note.filter(|n| !n.is_empty()),
        opened_regions,
        events: detail
            .events
            .into_iter()
            .map(|e| pages::EventLine {
                at: pages::time(e.at),
                kind: e.kind,
                actor: e.actor,
                details: details_line(&e.details),
            })
            .collect(),
        updates: detail
            .updates
            .into_iter()
            .map(|u| pages::UpdateLine { status: u.status, at: pages::time(u.posted_at), message: u.message })
            .collect(),
        can_write: viewer.can_write(),
        can_ack: incident.state == "open",
        can_post_updates: true,
        csrf: viewer.csrf(),
    }))
}

pub async fn acknowledge(Path(id): Path<String>, write: Write) -> Result<Redirect> {
    let Write { state, admin, form } = write;
    let mut body = Map::new();
    if let Some(note) = form.get("note").map(str::trim).filter(|n| !n.is_empty()) {
        body.insert("note".into(), Value::from(note));
    }
    let _answer =
        api::incidents::ack(State(state), admin, api::Id(id.clone()), JsonObject::checked(body)?).await?;
    Ok(match form.get("back") {
        Some("list") => Redirect::to("/console/incidents"),
        _ => Redirect::to(&format!("/console/incidents/{id}")),
    })
}

/// Posts an operator's update (`status`, `message`) through the API; it shows on the status
/// pages that list the incident's domain.
pub async fn post_update(Path(id): Path<String>, write: Write) -> Result<Redirect> {
    let Write { state, admin, form } = write;
    let mut body = Map::new();
    body.insert("status".into(), Value::from(form.get("status").unwrap_or_default()));
    body.insert("message".into(), Value::from(form.get("message").unwrap_or_default()));
    let _answer =
        api::incidents::post_update(State(state), admin, api::Id(id.clone()), JsonObject::checked(body)?)
            .await?;
    Ok(Redirect::to(&format!("/console/incidents/{id}")))
}
