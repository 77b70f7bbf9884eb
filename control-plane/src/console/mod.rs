//! The operator console at `/console`: server-rendered pages over the same functions the REST
//! API's handlers are (the console calls them with the viewer's principal, so tenant scoping,
//! validation and role checks are the API's own), readable without JavaScript; a small script
//! applies live events in place.
//!
//! - [`session`]: sessions in PostgreSQL, exchanged for an API token at sign-in.
//! - [`client`]: the client's address and HTTPS as trusted proxies report them; cookies.
//! - [`limit`]: the sign-in rate limit per client address.
//! - [`pages`]: the pages as data and their compiled templates; [`chart`]: the latency chart.
//! - `viewer`: who is looking (a session, or the public demo) and what they may change.
//! - `handlers`: one thin handler per page and per form.
//!
//! Rules: every page is escaped (askama), in the common layout of [`crate::web`], served with
//! its strict Content-Security-Policy and no external resource; every form carries the session's synchronizer token; a write needs a
//! session (never the demo), a matching token and the `admin` role, and is refused otherwise
//! whatever the page showed.

pub mod chart;
pub mod client;
mod handlers;
pub mod limit;
pub mod pages;
pub mod session;
mod viewer;

use axum::routing::{get, post};
use axum::Router;

pub use viewer::{ConsoleError, Viewer};

use crate::api::AppState;

/// The console's cookie holding the session id.
pub const SESSION_COOKIE: &str = "cc_session";
/// The sign-in form's own anti-forgery cookie (double submit: there is no session yet).
pub const SIGN_IN_COOKIE: &str = "cc_sign_in";

/// The console's routes, merged into the HTML surface (whose middleware adds the security
/// headers).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(handlers::home))
        .route("/console/", get(handlers::home))
        .route("/console/sign-in", get(handlers::sign_in_page).post(handlers::sign_in))
        .route("/console/sign-out", post(handlers::sign_out))
        .route("/console/events", get(handlers::events))
        .route("/console/domains", get(handlers::domains))
        .route("/console/domains/{id}", get(handlers::domain))
        .route("/console/domains/{id}/pause", post(handlers::pause))
        .route("/console/domains/{id}/resume", post(handlers::resume))
        .route("/console/incidents", get(handlers::incidents))
        .route("/console/incidents/{id}", get(handlers::incident))
        .route("/console/incidents/{id}/ack", post(handlers::acknowledge))
        .route("/console/incidents/{id}/updates", post(handlers::post_update))
        .route("/console/status-pages", get(handlers::status_pages).post(handlers::create_status_page))
        .route("/console/status-pages/new", get(handlers::new_status_page))
        .route("/console/status-pages/{id}", get(handlers::status_page).post(handlers::update_status_page))
        .route("/console/status-pages/{id}/delete", post(handlers::delete_status_page))
        .route("/console/channels", get(handlers::channels))
        .route("/console/channels/{id}/test", post(handlers::test_channel))
        .route("/console/notifications/{id}/retry", post(handlers::retry_notification))
        .route("/console/digests", get(handlers::digests))
        .route("/console/digests/{id}", get(handlers::digest))
}
