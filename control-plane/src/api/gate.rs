//! What every `/v1` route goes through before its handler: the bearer token is authenticated
//! once (through the [`Auth`] extractor, which keeps the principal for the handler's own
//! extractor) and the tenant's request-rate quota is taken ([`crate::quotas::RateLimits`], per
//! replica). An unauthenticated request gets the extractor's refusal here, as its handler would
//! have answered; a request over the rate gets 429 with `Retry-After`. Quota refusals (here and
//! the 422s of the count and interval quotas) are counted by quota.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Auth};

/// The quota a response refused a request for (set by [`ApiError`]'s response), for the
/// counter.
#[derive(Debug, Clone, Copy)]
pub struct QuotaRefusal(pub &'static str);

/// The `/v1` route layer: authenticate, take the request rate, run the handler, count quota
/// refusals.
pub async fn authenticate_and_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // The API's description is public (it says how to authenticate).
    if request.extensions().get::<MatchedPath>().is_some_and(|p| p.as_str() == super::openapi::PATH) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let principal = match Auth::from_request_parts(&mut parts, &state).await {
        Ok(Auth(principal)) => principal,
        Err(refusal) => return refusal.into_response(),
    };
    match state.quotas.check(&state.pool, principal.tenant_id).await {
        Ok(Ok(())) => {}
        Ok(Err(exceeded)) => {
            state.metrics.audit.quota_refused("requests_per_minute");
            tracing::info!(tenant_id = %principal.tenant_id, per_minute = exceeded.per_minute, "request over the tenant's rate quota");
            return ApiError::RequestRate(exceeded).into_response();
        }
        Err(error) => return ApiError::from(error).into_response(),
    }
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(QuotaRefusal(field)) = response.extensions().get::<QuotaRefusal>() {
        let quota = field.strip_prefix("quota.").unwrap_or(field);
        state.metrics.audit.quota_refused(quota);
        tracing::info!(tenant_id = %principal.tenant_id, quota, "write refused by a tenant quota");
    }
    response
}
