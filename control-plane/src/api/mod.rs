//! The REST API under `/v1`: routing, shared state, the JSON body extractor and request metrics.
//! `router(state)` builds the whole HTTP surface without binding anything, so tests can call it
//! directly; `startup` serves it.

mod audit;
mod auth;
pub mod auth_guard;
pub(crate) mod channels;
mod checks;
pub(crate) mod digests;
mod dns;
pub(crate) mod domains;
mod error;
mod events;
mod gate;
pub(crate) mod history;
pub(crate) mod incidents;
mod maintenance;
pub mod openapi;
pub(crate) mod query;
mod regions;
pub(crate) mod schema;
pub(crate) mod sla;
pub(crate) mod status_pages;
pub mod text;
mod tokens;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use shared::ops::ReadyCheck;
use sqlx::PgPool;
use tokio::sync::Notify;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Admin, Auth};
pub use error::ApiError;

use crate::config::Config;
use crate::domains::Policy;
use crate::metrics::{HttpLabels, Metrics};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    /// Wakes the config publisher right after a committed change.
    pub publisher_wake: Arc<Notify>,
    /// Probe results and their roll-ups (the history routes read them).
    pub timeseries: crate::timeseries::Timeseries,
    /// Wakes this replica's notification dispatcher (other replicas hear the NOTIFY).
    pub notify_wake: Arc<Notify>,
    /// Where "now" comes from for consensus status and flap scores (the system clock, or the
    /// `ManualClock` of tests and benchmarks).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Check tests: Redis to publish requests, this replica's waiting requests, the rate limit.
    pub checks: Checks,
    /// Failed API authentications throttled per client and token prefix; tokens' last use.
    pub auth_guard: auth_guard::AuthGuard,
    /// Console sign-in attempts per client address.
    pub sign_in_limiter: crate::console::limit::SignInLimiter,
    /// Live events: publish after a commit (`live.publisher()`), stream to browsers
    /// (`live.sse(view, resume)`).
    pub live: crate::live::Hub,
    /// The public status pages (their cache).
    pub pages: crate::status::Pages,
    /// The tenants' request-rate quotas, per replica.
    pub quotas: crate::quotas::RateLimits,
}

/// What `POST /v1/checks/test` needs besides the pool. Cheap to clone.
#[derive(Clone)]
pub struct Checks {
    pub redis: fred::prelude::Client,
    pub keys: shared::RedisKeys,
    pub waiters: crate::checks::Waiters,
    pub limiter: crate::checks::limit::TenantLimiter,
}

impl AppState {
    /// The validation policy for domains, with the region list as committed now.
    pub async fn domain_policy(&self) -> Result<Policy, ApiError> {
        let regions: BTreeSet<String> = crate::regions::list(&self.pool).await?.into_iter().collect();
        Ok(Policy {
            min_interval_s: self.config.min_interval_s,
            max_interval_s: self.config.max_interval_s,
            max_timeout_ms: self.config.max_timeout_ms,
            allow_private_targets: self.config.allow_private_targets,
            regions,
            flap: crate::flap::Settings::from_config(&self.config),
            degraded: crate::degraded::Settings::from_config(&self.config),
        })
    }

    /// Called after a config change committed.
    pub fn changed(&self) {
        self.publisher_wake.notify_one();
    }

    /// Publishes a live event; call after the commit that made it true.
    pub fn publish(&self, event: crate::live::Event) {
        self.live.publisher().publish(event);
    }
}

/// Every `/v1` route and its OpenAPI description, registered together (`routes!`): a new
/// route module adds its `routes()` here, and nowhere else.
pub(crate) fn v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(domains::routes())
        .merge(regions::routes())
        .merge(checks::routes())
        .merge(tokens::routes())
        .merge(events::routes())
        .merge(history::routes())
        .merge(incidents::routes())
        .merge(channels::routes())
        .merge(digests::routes())
        .merge(dns::routes())
        .merge(status_pages::routes())
        .merge(maintenance::routes())
        .merge(sla::routes())
        .merge(audit::routes())
        .routes(routes!(openapi::serve))
}

/// The complete HTTP surface: `/v1` API, the HTML surface ([`crate::web`]: the console under
/// `/console`, status pages, static files), `/metrics`,
/// `/healthz`, `/readyz`.
pub fn router(state: AppState, registry: Arc<Registry>) -> Router {
    let ready = readiness(state.pool.clone(), state.timeseries.clone());
    let (v1, _) = v1().split_for_parts();
    let v1 = v1
        // A path served with another method: the JSON error, like every other `/v1` error.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Writes are audited (inner), after the token and the tenant's rate (outer).
        .route_layer(middleware::from_fn_with_state(state.clone(), audit::record_api))
        .route_layer(middleware::from_fn_with_state(state.clone(), gate::authenticate_and_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .fallback(|| async { ApiError::NotFound });
    // The HTML surface (the console, status pages, static files): its own security headers on
    // every response.
    let web = crate::web::routes()
        .merge(
            crate::console::routes()
                .route_layer(middleware::from_fn_with_state(state.clone(), audit::record_console)),
        )
        .merge(crate::status::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(middleware::from_fn(crate::web::security_headers));
    Router::new()
        .nest("/v1", v1)
        .merge(web)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
        .merge(shared::ops::router(registry, ready))
}

/// Ready when the transactional database answers; the details carry the state of
/// TimescaleDB's background jobs (TimescaleDB mode, after the first check), which does not
/// decide readiness.
fn readiness(pool: PgPool, timeseries: crate::timeseries::Timeseries) -> ReadyCheck {
    Arc::new(move || {
        let pool = pool.clone();
        let detail = timeseries.jobs_detail();
        Box::pin(async move {
            let ping = sqlx::query("SELECT 1").execute(&pool);
            match tokio::time::timeout(Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => Ok(detail.into_iter().collect()),
                Ok(Err(e)) => Err(format!("postgres: {e}")),
                Err(_) => Err("postgres: timed out".into()),
            }
        })
    })
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = crate::metrics::method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let labels = HttpLabels { method, route, status: response.status().as_u16() };
    state.metrics.http_requests.get_or_create(&labels).inc();
    response
}

/// A JSON object request body, screened by [`text`] (NUL and control characters, lengths). The
/// extractor rejects a wrong content type (415), an oversized body (413), anything that is not
/// a JSON object (400) and text the screen refuses (422 naming each field), all as JSON errors.
/// Only [`JsonObject::checked`] makes one outside this module, so every body a handler sees has
/// passed the screen.
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    /// `body` once [`text::screen_body`] passes it; else 422 naming each field.
    pub fn checked(body: Map<String, Value>) -> Result<Self, ApiError> {
        let errors = text::screen_body(&body);
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(JsonObject(body))
    }
}

/// A resource id from the path (`/v1/domains/{id}`), as the client wrote it; a segment axum
/// cannot decode (bad percent-encoding, not UTF-8) is a JSON 404 like any unknown id.
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(_) => Err(ApiError::NotFound),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("cannot read the request body".into())
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => JsonObject::checked(map),
            Ok(_) => Err(ApiError::BadRequest("request body must be a JSON object".into())),
            Err(e) => Err(ApiError::BadRequest(format!("request body is not valid JSON: {e}"))),
        }
    }
}
