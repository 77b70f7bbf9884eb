//! Static files of the HTML surface, compiled into the binary from `control-plane/static/`:
//! the stylesheet and the small scripts (plain JavaScript, no framework, no build step).
//!
//! Templates link them through [`url`], which appends the file's content hash (`?v=…`). A
//! request carrying the current hash is cacheable for a year (`immutable`): a new binary with a
//! changed file links a new URL. Without it (or with an old hash) the file is cacheable for five
//! minutes, and `ETag` / `If-None-Match` answer `304` when nothing changed.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::PageError;

/// One static file.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The first 16 hex digits of the SHA-256 of `body`.
    pub hash: String,
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        ($name, $type, include_bytes!(concat!("../../static/", $name)).as_slice())
    };
}

/// Every static file, by name.
static ASSETS: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    [
        asset!("crosscheck.css", "text/css; charset=utf-8"),
        asset!("console.css", "text/css; charset=utf-8"),
        asset!("console.js", "text/javascript; charset=utf-8"),
        asset!("live.js", "text/javascript; charset=utf-8"),
        asset!("status.js", "text/javascript; charset=utf-8"),
    ]
    .into_iter()
    .map(|(name, content_type, body)| {
        let hash = hex::encode(&Sha256::digest(body)[..8]);
        (name, Asset { name, content_type, body, hash })
    })
    .collect()
});

/// The file called `name`, if it exists.
pub fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.get(name)
}

/// The URL templates link `name` by: `/static/<name>?v=<hash>`.
///
/// # Panics
/// When `name` is not a static file (a template naming a file that does not exist is a bug
/// the rendering tests catch).
pub fn url(name: &str) -> String {
    let asset = get(name).unwrap_or_else(|| panic!("no static file {name}"));
    format!("/static/{}?v={}", asset.name, asset.hash)
}

/// `GET /static/{name}`.
pub async fn serve(
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let asset = get(&name).ok_or(PageError::NotFound)?;
    let etag = format!("\"{}\"", asset.hash);
    let cache = if query.get("v") == Some(&asset.hash) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_stable_hash_and_url() {
        for name in ["crosscheck.css", "console.css", "console.js", "live.js", "status.js"] {
            let asset = get(name).unwrap();
            assert_eq!(asset.hash.len(), 16);
            assert_eq!(url(name), format!("/static/{name}?v={}", asset.hash));
        }
        assert!(get("../Cargo.toml").is_none());
    }

    #[test]
    fn scripts_load_nothing_from_elsewhere() {
        for name in ["live.js", "status.js", "console.js"] {
            let text = std::str::from_utf8(get(name).unwrap().body).unwrap();
            assert!(!text.contains("http://") && !text.contains("https://"), "{name} names another origin");
            assert!(
                !text.contains("eval(") && !text.contains("innerHTML"),
                "{name} builds code or markup from text"
            );
        }
    }
}
