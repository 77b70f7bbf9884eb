//! The operational HTTP endpoints every Crosscheck binary serves: `GET /metrics` (Prometheus
//! text format), `GET /healthz` (the process is alive) and `GET /readyz` (its dependencies
//! answer and it can do useful work).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;

/// A readiness probe: resolves to `Ok(details)` when ready (lines shown under `ready`, such as
/// the state of background work that does not decide readiness), or to a short reason when not.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<String>, String>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    ready: ReadyCheck,
}

/// Routes for `/metrics`, `/healthz` and `/readyz`, to be merged into a binary's router.
pub fn router<S>(registry: Arc<Registry>, ready: ReadyCheck) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState { registry, ready })
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match (state.ready)().await {
        Ok(details) => {
            let mut body = String::from("ready\n");
            for line in details {
                body.push_str(&line);
                body.push('\n');
            }
            (StatusCode::OK, body).into_response()
        }
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}
