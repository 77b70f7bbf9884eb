//! The hourly flap digests: the list and one digest's text.

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{html, params, read, Items, Result};
use crate::api::{self, AppState, Auth};
use crate::console::pages;
use crate::console::Viewer;

#[derive(Debug, Deserialize)]
struct DigestListed {
    id: Uuid,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    domain_count: i64,
    summary: String,
}

#[derive(Debug, Deserialize)]
struct DigestStored {
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    text: String,
}

fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!("{} to {}", pages::time(start), end.format("%H:%M UTC"))
}

pub async fn digests(State(state): State<AppState>, viewer: Viewer) -> Result<Response> {
    let list: Items<DigestListed> = read(
        api::digests::list(
            State(state.clone()),
            Auth(viewer.principal.clone()),
            params(&[("limit", "100".into())]),
        )
        .await?,
    )?;
    Ok(html(&pages::DigestsPage {
        layout: viewer.layout("Digests", "digests"),
        rows: list
            .items
            .into_iter()
            .map(|d| pages::DigestRow {
                id: d.id.to_string(),
                period: period(d.period_start, d.period_end),
                domain_count: format!(
                    "{} domain{}",
                    d.domain_count,
                    if d.domain_count == 1 { "" } else { "s" }
                ),
                summary: d.summary,
            })
            .collect(),
    }))
}

pub async fn digest(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let stored: DigestStored =
        read(api::digests::show(State(state.clone()), Auth(viewer.principal.clone()), api::Id(id)).await?)?;
    Ok(html(&pages::DigestPage {
        layout: viewer.layout("Digest", "digests"),
        period: period(stored.period_start, stored.period_end),
        text: stored.text,
    }))
}
