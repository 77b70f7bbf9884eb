//! Editing the public status pages: the list, the form over the tenant's domains, create,
//! update and delete through the API.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::{Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{all_domains, display_name, html, read, Items, Result};
use crate::api::{self, AppState, Auth, JsonObject};
use crate::console::pages;
use crate::console::viewer::{RawForm, Write};
use crate::console::{ConsoleError, Viewer};

#[derive(Debug, Deserialize)]
struct ComponentView {
    domain: Uuid,
    name: String,
    group: Option<String>,
    #[serde(default)]
    reveal: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PageView {
    id: Uuid,
    slug: String,
    title: String,
    description: Option<String>,
    #[serde(default)]
    hostnames: Vec<String>,
    components: Vec<ComponentView>,
    public_path: String,
}

pub async fn status_pages(State(state): State<AppState>, viewer: Viewer) -> Result<Response> {
    let list: Items<PageView> = read(
        api::status_pages::list(
            State(state.clone()),
            Auth(viewer.principal.clone()),
            Ok(axum::extract::Query(Default::default())),
        )
        .await?,
    )?;
    Ok(html(&pages::StatusPagesPage {
        layout: viewer.layout("Status pages", "status-pages"),
        pages: list
            .items
            .into_iter()
            .map(|p| pages::PageRow {
                id: p.id.to_string(),
                title: p.title,
                public_path: p.public_path,
                hostnames: p.hostnames,
                components: p.components.len(),
            })
            .collect(),
        can_write: viewer.can_write(),
    }))
}

/// The form of `page` (`None`: a new one) over every domain of the tenant.
async fn page_form(state: &AppState, viewer: &Viewer, page: Option<PageView>) -> Result<Response> {
    let domains = all_domains(state, viewer.principal.tenant_id).await?;
    let chosen: HashMap<Uuid, &ComponentView> =
        page.iter().flat_map(|p| p.components.iter().map(|c| (c.domain, c))).collect();
    let components = domains
        .iter()
        .map(|d| {
            let component = chosen.get(&d.id.0);
            pages::ComponentRow {
                domain: d.id.to_string(),
                label: display_name(d),
                included: component.is_some(),
                name: component.map(|c| c.name.clone()).unwrap_or_else(|| display_name(d)),
                group: component.and_then(|c| c.group.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let title = page.as_ref().map(|p| p.title.clone()).unwrap_or_default();
    Ok(html(&pages::StatusPageForm {
        layout: viewer.layout(
            if title.is_empty() { "New status page".to_owned() } else { title.clone() },
            "status-pages",
        ),
        id: page.as_ref().map(|p| p.id.to_string()),
        public_path: page.as_ref().map(|p| p.public_path.clone()),
        title,
        slug: page.as_ref().map(|p| p.slug.clone()).unwrap_or_default(),
        description: page.as_ref().and_then(|p| p.description.clone()).unwrap_or_default(),
        hostnames: page.as_ref().map(|p| p.hostnames.join("\n")).unwrap_or_default(),
        components,
        can_write: viewer.can_write(),
        csrf: viewer.csrf(),
    }))
}

pub async fn new_status_page(State(state): State<AppState>, viewer: Viewer) -> Result<Response> {
    if !viewer.can_write() {
        return Err(ConsoleError::Forbidden("creating a status page needs an admin token".into()));
    }
    page_form(&state, &viewer, None).await
}

pub async fn status_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let page: PageView = read(
        api::status_pages::show(State(state.clone()), Auth(viewer.principal.clone()), api::Id(id)).await?,
    )?;
    page_form(&state, &viewer, Some(page)).await
}

/// The API's request body from the posted form; `kept` (the page as stored) keeps what the form
/// does not edit (each component's reveals).
fn page_body(form: &[(String, String)], kept: Option<&PageView>) -> Map<String, Value> {
    let one = |name: &str| {
        form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default()
    };
    let mut body = Map::new();
    body.insert("title".into(), Value::from(one("title")));
    body.insert("slug".into(), Value::from(one("slug")));
    let description = one("description");
    body.insert(
        "description".into(),
        if description.is_empty() { Value::Null } else { Value::from(description) },
    );
    let hostnames: Vec<Value> =
        one("hostnames").lines().map(str::trim).filter(|h| !h.is_empty()).map(Value::from).collect();
    body.insert("hostnames".into(), Value::from(hostnames));
    let components: Vec<Value> = form
        .iter()
        .filter(|(k, _)| k == "include")
        .map(|(_, domain)| {
            let mut component = Map::new();
            component.insert("domain".into(), Value::from(domain.clone()));
            component.insert("name".into(), Value::from(one(&format!("name-{domain}"))));
            let group = one(&format!("group-{domain}"));
            if !group.is_empty() {
                component.insert("group".into(), Value::from(group));
            }
            let reveal = kept
                .and_then(|p| p.components.iter().find(|c| c.domain.to_string() == *domain))
                .map(|c| c.reveal.clone())
                .unwrap_or_default();
            component.insert("reveal".into(), Value::from(reveal));
            Value::Object(component)
        })
        .collect();
    body.insert("components".into(), Value::from(components));
    body
}

pub async fn create_status_page(
    State(state): State<AppState>,
    viewer: Viewer,
    form: RawForm,
) -> Result<Redirect> {
    let admin = viewer.writer(&form.form, &state)?;
    let (_, Json(created)) =
        api::status_pages::create(State(state), admin, JsonObject::checked(page_body(&form.pairs, None))?)
            .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    Ok(Redirect::to(&format!("/console/status-pages/{id}")))
}

pub async fn update_status_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: RawForm,
) -> Result<Redirect> {
    let admin = viewer.writer(&form.form, &state)?;
    let kept: PageView = read(
        api::status_pages::show(State(state.clone()), Auth(admin.0.clone()), api::Id(id.clone())).await?,
    )?;
    let body = page_body(&form.pairs, Some(&kept));
    let _answer =
        api::status_pages::update(State(state), admin, api::Id(id.clone()), JsonObject::checked(body)?)
            .await?;
    Ok(Redirect::to(&format!("/console/status-pages/{id}")))
}

pub async fn delete_status_page(Path(id): Path<String>, write: Write) -> Result<Redirect> {
    api::status_pages::delete(State(write.state), write.admin, api::Id(id)).await?;
    Ok(Redirect::to("/console/status-pages"))
}
