//! `GET /v1/events`: the tenant's live events as Server-Sent Events (any token): every
//! [`crate::live::Event`] of the tenant, probe results included, each an SSE message named
//! after its kind with the event's JSON as data. `?domain=<id>` keeps one domain's events;
//! `Last-Event-ID` (or `?after=<id>`) resumes after an event.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::query::{invalid, params, Params};
use super::{ApiError, AppState, Auth};
use crate::live::{resume_point, TenantView};

/// The event stream route, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

#[utoipa::path(get, path = "/events", tag = "incidents",
    params(
        ("domain" = Option<Uuid>, Query, description = "Only this domain's events"),
        ("after" = Option<String>, Query, description = "Resume after this event id (like `Last-Event-ID`)"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: one message per event, named by its kind, its JSON as data", content_type = "text/event-stream", body = String),
        (status = 404, description = "Not a domain of this tenant", body = super::schema::ErrorBody),
        (status = 503, description = "Too many open streams on this replica (`unavailable`), or a dependency is unavailable; retry after `Retry-After` seconds", body = super::schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["domain", "after"])?;
    let view = match map.get("domain") {
        None => TenantView::new(p.tenant_id),
        Some(raw) => {
            let domain = raw.parse().map_err(|_| invalid("domain", "must be a domain id"))?;
            // Another tenant's domain: nothing of it would ever be sent, but say so plainly.
            let owned: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM domains WHERE id = $1 AND tenant_id = $2)")
                    .bind(domain)
                    .bind(p.tenant_id)
                    .fetch_one(&state.pool)
                    .await?;
            if !owned {
                return Err(ApiError::NotFound);
            }
            TenantView::domain(p.tenant_id, domain)
        }
    };
    let resume = resume_point(&headers, map.get("after").map(String::as_str));
    state.live.sse(view, resume).map_err(ApiError::StreamsBusy)
}
