//! The REST API client: list every resource of a kind (following `next_cursor`), create,
//! update (`PATCH`) and delete, with the caller's bearer token. Errors keep the API's JSON error
//! (`{"error": {"code", "message", "fields"}}`) so a 422's fields can be mapped to the file.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::resources::Kind;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error status.
    #[error("{method} {path}: {status} {message}{}", fields_suffix(.fields))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
        /// A 422's problems by field (`interval`, `flap.enter_transitions`).
        fields: BTreeMap<String, String>,
    },
    /// No answer, or an answer that is not the API's JSON; `detail` is the error with each
    /// of its causes, said once.
    #[error("{method} {path}: {detail}")]
    Transport { method: Method, path: String, detail: String },
}

/// An error and its causes, each said once (reqwest's message leaves out why a connection failed).
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

fn fields_suffix(fields: &BTreeMap<String, String>) -> String {
    if fields.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

/// A client of one control plane, as one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Items asked for per page when listing.
const PAGE: u32 = 500;

impl Client {
    /// A client of the control plane at `base` (`http://127.0.0.1:8080`) using `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("crosscheck/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), token: token.to_owned() })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Map<String, Value>>,
    ) -> Result<Option<Value>, ApiError> {
        let transport = |error: reqwest::Error| ApiError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            detail: chain(&error),
        };
        let mut request =
            self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return response.json().await.map(Some).map_err(transport);
        }
        let text = response.text().await.unwrap_or_default();
        let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = error["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| {
            let short: String = text.chars().take(200).collect();
            short
        });
        let fields = error["error"]["fields"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        Err(ApiError::Status { method, path: path.to_owned(), status, message, fields })
    }

    /// Every resource of `kind` the token's tenant has, as the API shows them.
    pub async fn list(&self, kind: Kind) -> Result<Vec<Map<String, Value>>, ApiError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match (&cursor, kind) {
                // Status pages are listed whole.
                (_, Kind::StatusPage) => kind.api_path().to_owned(),
                (None, _) => format!("{}?limit={PAGE}", kind.api_path()),
                (Some(c), _) => format!("{}?limit={PAGE}&cursor={c}", kind.api_path()),
            };
            let page = self.call(Method::GET, &path, None).await?.unwrap_or(Value::Null);
            out.extend(page["items"].as_array().into_iter().flatten().filter_map(|i| i.as_object().cloned()));
            match page["next_cursor"].as_str() {
                Some(next) if kind != Kind::StatusPage => cursor = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// Creates a resource; the API's view of it.
    pub async fn create(
        &self,
        kind: Kind,
        body: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ApiError> {
        let created = self.call(Method::POST, kind.api_path(), Some(body)).await?;
        Ok(created.and_then(|v| v.as_object().cloned()).unwrap_or_default())
    }

    /// Updates resource `id` with `patch`; the API's view of it.
    pub async fn update(
        &self,
        kind: Kind,
        id: &str,
        patch: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ApiError> {
        let path = format!("{}/{id}", kind.api_path());
        let updated = self.call(Method::PATCH, &path, Some(patch)).await?;
        Ok(updated.and_then(|v| v.as_object().cloned()).unwrap_or_default())
    }

    /// Deletes resource `id`.
    pub async fn delete(&self, kind: Kind, id: &str) -> Result<(), ApiError> {
        self.call(Method::DELETE, &format!("{}/{id}", kind.api_path()), None).await.map(|_| ())
    }
}
