//! The control plane's HTML face: server-rendered pages from askama templates compiled into
//! the binary (`control-plane/templates/`, HTML-escaped by default), the static stylesheet and
//! scripts served from the binary ([`assets`]), and the headers every page carries.
//!
//! Rules every page follows (see ARCHITECTURE.md, *Pages*):
//! - **Escaping**: every value reaches the HTML through askama's default HTML escaping; no
//!   template uses `|safe` on data. Attribute values are quoted.
//! - **Content-Security-Policy** ([`CSP`]): nothing but this origin's own scripts, styles,
//!   images and connections; no inline script or style (not even `style=` attributes), no
//!   frames, forms post only here. No external fonts, scripts or images anywhere.
//! - **Readable without JavaScript**: scripts only improve a page that is complete as served.
//!
//! A page is a pure function of its data: a template struct is filled by a handler and
//! rendered by [`render`]; tests render known data and read the HTML.

pub mod assets;

use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::api::AppState;

/// The Content-Security-Policy of every response of the HTML surface.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The routes of the HTML surface that need no authentication: the static assets (the status
/// pages add theirs in [`crate::status`]).
pub fn routes() -> Router<AppState> {
    Router::new().route("/static/{name}", axum::routing::get(assets::serve))
}

/// Middleware adding the security headers of the HTML surface to every response that does not
/// set them itself: [`CSP`], `X-Content-Type-Options: nosniff`, `Referrer-Policy:
/// no-referrer`, `X-Frame-Options: DENY`, and `Cache-Control: no-store` on pages that set no
/// caching of their own (a signed-in page must never be cached by a shared cache).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let defaults = [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    response
}

/// Renders `template` as a `200 text/html` response; a template that fails to render (a
/// formatting error of a value) is logged and answered with the opaque error page.
pub fn render<T: Template>(template: &T) -> Response {
    render_with(StatusCode::OK, template)
}

/// [`render`] with another status.
pub fn render_with<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => html_response(status, html),
        Err(error) => {
            PageError::Internal(anyhow::Error::from(error).context("rendering a page")).into_response()
        }
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], html)
        .into_response()
}

/// The error page: a status, a short title and one sentence, in the common layout.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

/// What an HTML route answers when it cannot show its page. Internal causes are logged with
/// their chain and never shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    #[error("temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for PageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => PageError::Unavailable(error.into()),
            _ => PageError::Internal(error.into()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            PageError::NotFound => (StatusCode::NOT_FOUND, "Not found", "There is no page at this address."),
            PageError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "This page cannot be shown right now. Please try again in a moment.",
            ),
            PageError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "This page cannot be shown right now. Please try again in a moment.",
            ),
        };
        if let PageError::Internal(cause) | PageError::Unavailable(cause) = &self {
            tracing::error!(error = %shared::error::Chain(cause.as_ref()), status = status.as_u16(), "page failed");
        }
        let page = ErrorPage { title, message };
        match page.render() {
            Ok(html) => html_response(status, html),
            // The error page has no data that could fail to format; this is a last resort.
            Err(_) => (status, title.to_owned()).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Template)]
    #[template(source = "<p title=\"{{ text }}\">{{ text }}</p>", ext = "html")]
    struct Probe<'a> {
        text: &'a str,
    }

    #[test]
    fn values_are_escaped_in_text_and_attributes() {
        let html = Probe { text: "<script>alert(1)</script>\"&'" }.render().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{html}");
        assert!(!html.contains("\"&'\""), "a quote would end the attribute: {html}");
    }

    #[test]
    fn the_error_page_uses_the_layout_and_its_assets() {
        let html = ErrorPage { title: "Not found", message: "nothing <here>" }.render().unwrap();
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(html.contains(&assets::url("crosscheck.css")), "{html}");
        assert!(html.contains("nothing &#60;here&#62;"), "{html}");
        assert!(!html.contains("style="), "no inline style: {html}");
        assert!(!html.contains("<script>"), "no inline script: {html}");
    }

    #[test]
    fn the_policy_allows_nothing_from_elsewhere_and_nothing_inline() {
        assert!(CSP.starts_with("default-src 'none'"));
        for directive in CSP.split(';').map(str::trim) {
            assert!(!directive.contains("unsafe"), "{directive}");
            assert!(!directive.contains("http"), "{directive}");
            assert!(!directive.contains('*'), "{directive}");
        }
    }
}
