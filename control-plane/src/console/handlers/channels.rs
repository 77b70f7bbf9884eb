//! Channels with their test button, and the dead letters (admin tokens only, as in the API)
//! with their retry.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{html, read, Items, Result};
use crate::api::{self, AppState, Auth};
use crate::console::pages;
use crate::console::viewer::Write;
use crate::console::{ConsoleError, Viewer};
use crate::tenants;

#[derive(Debug, Deserialize)]
struct ChannelView {
    id: Uuid,
    name: String,
    kind: String,
    enabled: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    to: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct NotificationView {
    id: Uuid,
    channel_id: Uuid,
    kind: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub struct ChannelsQuery {
    #[serde(default)]
    tested: Option<String>,
    #[serde(default)]
    retried: Option<String>,
}

pub async fn channels(
    State(state): State<AppState>,
    viewer: Viewer,
    query: std::result::Result<Query<ChannelsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let p = viewer.principal.clone();
    let list: Items<ChannelView> = read(
        api::channels::list(
            State(state.clone()),
            Auth(p.clone()),
            Ok(Query([("limit".to_owned(), "500".to_owned())].into())),
        )
        .await?,
    )?;
    let names: BTreeMap<Uuid, String> = list.items.iter().map(|c| (c.id, c.name.clone())).collect();
    // The outbox is an admin's view in the API; the console shows what the API would.
    let dead = match crate::api::Admin::check(p.clone()) {
        Ok(admin) => {
            let dead: Items<NotificationView> = read(
                api::channels::list_notifications(
                    State(state.clone()),
                    admin,
                    Ok(Query(
                        [("state".to_owned(), "dead".to_owned()), ("limit".to_owned(), "200".to_owned())]
                            .into(),
                    )),
                )
                .await?,
            )?;
            dead.items
        }
        Err(_) => Vec::new(),
    };
    let flash = match (query.tested, query.retried) {
        (Some(_), _) => Some("A test notification was queued; its delivery shows in the outbox.".to_owned()),
        (_, Some(_)) => Some("The notification was queued again.".to_owned()),
        _ => None,
    };
    Ok(html(&pages::ChannelsPage {
        layout: viewer.layout("Channels", "channels"),
        channels: list
            .items
            .into_iter()
            .map(|c| pages::ChannelRow {
                id: c.id.to_string(),
                target: match (&c.url, &c.to) {
                    (Some(url), _) => url.clone(),
                    (None, Some(Value::Array(to))) => {
                        to.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
                    }
                    _ => String::new(),
                },
                name: c.name,
                kind: c.kind,
                enabled: c.enabled,
            })
            .collect(),
        dead: dead
            .into_iter()
            .map(|n| pages::DeadRow {
                id: n.id.to_string(),
                created_at: pages::time(n.created_at),
                channel: names.get(&n.channel_id).cloned().unwrap_or_else(|| n.channel_id.to_string()),
                kind: n.kind,
                attempts: n.attempts,
                last_error: n.last_error.unwrap_or_default(),
            })
            .collect(),
        flash: if viewer.principal.role == tenants::Role::Admin {
            flash
        } else {
            Some("The dead-letter list is shown to admin tokens only, as in the API.".to_owned())
        },
        can_write: viewer.can_write(),
        csrf: viewer.csrf(),
    }))
}

pub async fn test_channel(Path(id): Path<String>, write: Write) -> Result<Redirect> {
    let _answer = api::channels::test(State(write.state), write.admin, api::Id(id)).await?;
    Ok(Redirect::to("/console/channels?tested=1"))
}

pub async fn retry_notification(Path(id): Path<String>, write: Write) -> Result<Redirect> {
    let _answer = api::channels::retry(State(write.state), write.admin, api::Id(id)).await?;
    Ok(Redirect::to("/console/channels?retried=1"))
}
