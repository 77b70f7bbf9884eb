//! Public status pages: a tenant puts chosen domains on a page (`/v1/status-pages`, in
//! [`crate::api`]), and anyone may read it at `/status/<slug>` (or `/` of a custom hostname)
//! as HTML that reads fully without JavaScript, as JSON (`/status/<slug>.json`), as an Atom
//! feed of its incidents (`/status/<slug>/feed.atom`), and follow it live
//! (`/status/<slug>/events`, Server-Sent Events through [`crate::live`]).
//!
//! - [`spec`]: parsing a page request, naming every bad field.
//! - [`store`]: pages in the database; the rows a page is built from.
//! - [`model`]: what a page shows, pure (states, banner, daily bars, incidents; what a page may
//!   reveal).
//! - [`render`]: the HTML, JSON and Atom forms, pure functions of a [`model::Page`].
//! - [`view`]: the live view of a page: its components' state changes and incident updates,
//!   nothing else.
//!
//! **Caching**: a page's content is built at most once per `status_page_cache_ms` per replica
//! (then served from memory; a stale one is served while one request rebuilds it). A page's
//! content records the live position it reflects, and its script resumes the event stream from
//! there (`?after=`), so a cached page is brought up to date at once. A page edit or a deleted
//! component drops the cached content on every replica (a live-event hook) before its
//! streams' browsers are told to reload.

pub mod model;
pub mod render;
pub mod spec;
pub mod store;
pub mod view;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::AppState;
use crate::live::{Event, Hub, Kind};
use crate::web::PageError;

/// A page's content as served, with its forms made once each.
pub struct Entry {
    pub page_id: Uuid,
    pub tenant_id: Uuid,
    pub page: model::Page,
    /// The components with their domains (for the live view; never shown).
    pub components: Vec<model::ComponentRow>,
    built: Instant,
    html: OnceLock<Result<Bytes, String>>,
    gzip: OnceLock<Bytes>,
    json: OnceLock<Bytes>,
}

impl Entry {
    fn html(&self) -> Result<Bytes, PageError> {
        self.html
            .get_or_init(|| {
                use askama::Template;
                render::StatusHtml::new(&self.page).render().map(Bytes::from).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| PageError::Internal(anyhow::anyhow!(e).context("rendering a status page")))
    }

    fn gzip(&self) -> Result<Bytes, PageError> {
        let html = self.html()?;
        Ok(self
            .gzip
            .get_or_init(|| {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                // Writing to memory cannot fail.
                let _ = encoder.write_all(&html);
                Bytes::from(encoder.finish().unwrap_or_default())
            })
            .clone())
    }

    fn json(&self) -> Bytes {
        self.json.get_or_init(|| Bytes::from(render::json(&self.page))).clone()
    }
}

/// What a cached page is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Slug(String),
    Host(String),
}

#[derive(Default)]
struct Slot {
    current: RwLock<Option<Arc<Entry>>>,
    building: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Entry>> {
        self.current.read().expect("status slot lock").clone()
    }

    fn set(&self, entry: Option<Arc<Entry>>) {
        *self.current.write().expect("status slot lock") = entry;
    }
}

/// The cached pages, by what names them.
type Slots = Mutex<HashMap<Key, Arc<Slot>>>;

/// Drops the cached pages a stream event makes stale.
fn on_event(slots: &Slots, event: &Event) {
    let drop_page = match (event.kind, event.page, event.domain, event.state.as_deref()) {
        (Kind::Page, Some(page), _, _) => Some((Some(page), None)),
        (Kind::Domain, _, Some(domain), Some("deleted" | "updated")) => Some((None, Some(domain))),
        _ => None,
    };
    if let Some((page, domain)) = drop_page {
        forget(slots, |entry| {
            Some(entry.page_id) == page
                || domain.is_some_and(|d| entry.components.iter().any(|c| c.domain_id == d))
        });
    }
}

fn forget(slots: &Slots, matches: impl Fn(&Entry) -> bool) {
    let mut slots = slots.lock().expect("status slots lock");
    slots.retain(|_, slot| !slot.current().is_some_and(|entry| matches(&entry)));
}

/// The status pages of this replica: their cache and what building them needs. Cheap to
/// clone.
#[derive(Clone)]
pub struct Pages {
    pool: PgPool,
    live: Hub,
    ttl: Duration,
    regional_failure_observations: u32,
    slots: Arc<Slots>,
}

impl Pages {
    /// Pages built from `pool`, following `live`: a page edit or a component's deletion drops
    /// the cached content (on every replica, through the hub's hook).
    pub fn new(pool: PgPool, live: Hub, ttl: Duration, regional_failure_observations: u32) -> Self {
        let pages =
            Self { pool, live: live.clone(), ttl, regional_failure_observations, slots: Arc::default() };
        // The hook holds only the cache: holding `pages` (and so the hub) would make a cycle
        // that keeps the hub and its database pool alive for ever.
        let slots = Arc::downgrade(&pages.slots);
        live.on_event(Box::new(move |event| {
            if let Some(slots) = slots.upgrade() {
                on_event(&slots, event);
            }
        }));
        pages
    }

    /// Drops every cached page `matches` says (this replica only; see [`Pages::new`]).
    pub fn forget(&self, matches: impl Fn(&Entry) -> bool) {
        forget(&self.slots, matches);
    }

    /// The page at `/status/<slug>`.
    pub async fn by_slug(&self, slug: &str) -> Result<Arc<Entry>, PageError> {
        self.get(Key::Slug(slug.to_owned())).await
    }

    /// The page of custom hostname `host`.
    pub async fn by_host(&self, host: &str) -> Result<Arc<Entry>, PageError> {
        self.get(Key::Host(host.to_owned())).await
    }

    async fn get(&self, key: Key) -> Result<Arc<Entry>, PageError> {
        let slot = self.slots.lock().expect("status slots lock").get(&key).cloned();
        let slot = match slot {
            Some(slot) => slot,
            None => {
                // Only pages that exist get a slot: unknown names cost a lookup, not memory.
                let found = self.find(&key).await?;
                if found.is_none() {
                    return Err(PageError::NotFound);
                }
                self.slots.lock().expect("status slots lock").entry(key.clone()).or_default().clone()
            }
        };
        if let Some(entry) = slot.current() {
            if entry.built.elapsed() < self.ttl {
                return Ok(entry);
            }
            // Stale: one request rebuilds it in the background, everyone is served this one.
            if let Ok(guard) = slot.building.clone().try_lock_owned() {
                let (this, slot, key) = (self.clone(), slot.clone(), key.clone());
                tokio::spawn(async move {
                    let _guard = guard;
                    match this.build(&key).await {
                        Ok(Some(entry)) => slot.set(Some(Arc::new(entry))),
                        Ok(None) => this.slots.lock().expect("status slots lock").retain(|k, _| *k != key),
                        Err(error) => {
                            tracing::warn!(error = %shared::error::Chain(&error), "rebuilding a status page failed; the previous content is served")
                        }
                    }
                });
            }
            return Ok(entry);
        }
        let _guard = slot.building.lock().await;
        if let Some(entry) = slot.current() {
            return Ok(entry);
        }
        match self.build(&key).await? {
            Some(entry) => {
                let entry = Arc::new(entry);
                if !self.ttl.is_zero() {
                    slot.set(Some(entry.clone()));
                }
                Ok(entry)
            }
            None => {
                self.slots.lock().expect("status slots lock").retain(|k, _| *k != key);
                Err(PageError::NotFound)
            }
        }
    }

    async fn find(&self, key: &Key) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
        match key {
            Key::Slug(slug) => store::by_slug(&self.pool, slug).await,
            Key::Host(host) => {
                Ok(store::by_hostname(&self.pool, host).await?.map(|(id, tenant, _)| (id, tenant)))
            }
        }
    }

    async fn build(&self, key: &Key) -> Result<Option<Entry>, sqlx::Error> {
        // The position first: every event after it is either in what is read next or replayed
        // to the page's stream.
        let position = self.live.position();
        let now = Utc::now();
        let Some((page_id, tenant_id)) = self.find(key).await? else { return Ok(None) };
        let since = model::window_start(now);
        let Some(inputs) =
            store::load(&self.pool, tenant_id, page_id, since, self.regional_failure_observations).await?
        else {
            return Ok(None);
        };
        let page = model::build(&inputs, now, &position.to_string());
        Ok(Some(Entry {
            page_id,
            tenant_id,
            page,
            components: inputs.components,
            built: Instant::now(),
            html: OnceLock::new(),
            gzip: OnceLock::new(),
            json: OnceLock::new(),
        }))
    }
}

/// The public routes: `/status/{slug}` (and `.json`), `/status/{slug}/feed.atom`,
/// `/status/{slug}/events`, and `/` of a custom hostname.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(by_host))
        .route("/status/{slug}", get(page))
        .route("/status/{slug}/feed.atom", get(feed))
        .route("/status/{slug}/events", get(events))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|e| e.split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip")))
    })
}

fn html_response(entry: &Entry, headers: &HeaderMap) -> Result<Response, PageError> {
    let gzip = accepts_gzip(headers);
    let body = if gzip { entry.gzip()? } else { entry.html()? };
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body)
        .into_response();
    let headers = response.headers_mut();
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // Public, but always asked again: a reload after a page edit must see the edit.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

async fn page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(slug) = slug.strip_suffix(".json") {
        let entry = state.pages.by_slug(slug).await?;
        let mut response =
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], entry.json())
                .into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        return Ok(response);
    }
    let entry = state.pages.by_slug(&slug).await?;
    html_response(&entry, &headers)
}

/// The hostname a request was sent to, lowercase, without a port.
fn host(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::HOST)?.to_str().ok()?;
    let name = raw
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(raw, |(h, _)| h);
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    spec::valid_hostname(&name).then_some(name)
}

async fn by_host(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let host = host(&headers).ok_or(PageError::NotFound)?;
    let entry = state.pages.by_host(&host).await?;
    html_response(&entry, &headers)
}

async fn feed(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let entry = state.pages.by_slug(&slug).await?;
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    let authority = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let base = format!("{scheme}://{authority}/status/{}", entry.page.slug);
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/atom+xml; charset=utf-8"))],
        render::atom(&entry.page, &base),
    )
        .into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

async fn events(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let entry = state.pages.by_slug(&slug).await?;
    let resume = crate::live::resume_point(&headers, query.get("after").map(String::as_str));
    let view = view::PageView::new(&entry);
    Ok(state.live.sse(view, resume).unwrap_or_else(IntoResponse::into_response))
}
