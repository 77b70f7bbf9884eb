//! `POST /v1/checks/test`: probe a domain now from some regions and answer with what the agents
//! found, within the request (see [`crate::checks`] for the path of a test).
//!
//! The body is either a domain definition that is not saved (the body of `POST /v1/domains`,
//! checked by the same rules) or `{"domain_id": "<id>"}` of one of the tenant's domains (paused
//! or not); both take an optional `wait_ms` (100–60000, default 15000), and the second an
//! optional `regions` (default: the domain's regions). An empty region list means every region.
//! Admin only (it makes agents send traffic), rate-limited per tenant (429 with `Retry-After`).
//!
//! The answer is 200 with whatever arrived: `complete` says whether every region answered,
//! `missing_regions` lists those that did not within `wait_ms` (no agent connected, agent
//! overloaded, or the result lost on the way).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use fred::prelude::*;
use serde_json::{json, Map, Value};
use shared::{DomainConfig, DomainId, ProbeRequest};
use tokio::time::Instant;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::schema::{CheckTestAnswer, CheckTestBody};
use super::{Admin, ApiError, AppState, JsonObject};
use crate::checks::CheckResult;
use crate::domains::spec::parse_regions;
use crate::domains::{store, DomainSpec, FieldErrors, Policy};

/// How long a test waits for the agents by default, in milliseconds.
pub const DEFAULT_WAIT_MS: u64 = 15_000;
/// Bounds of `wait_ms`.
pub const MIN_WAIT_MS: u64 = 100;
pub const MAX_WAIT_MS: u64 = 60_000;

const SAVED_FIELDS: [&str; 3] = ["domain_id", "regions", "wait_ms"];

/// What to probe, where, and for how long to wait.
struct Target {
    config: DomainConfig,
    /// The tenant's domain, when testing a saved one.
    saved: Option<DomainId>,
    /// Sorted, never empty.
    regions: Vec<String>,
    wait: Duration,
}

/// The check test route, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(test))
}

#[utoipa::path(post, path = "/checks/test", tag = "domains", security(("bearer" = ["admin"])), request_body = CheckTestBody,
    responses(
        (status = 200, description = "What the agents found within `wait_ms`", body = CheckTestAnswer),
        (status = 404, description = "No such domain (`domain_id`)", body = super::schema::ErrorBody),
        (status = 429, description = "Too many check tests; see `Retry-After`", body = super::schema::ErrorBody),
    ))]
pub async fn test(
    State(state): State<AppState>,
    Admin(p): Admin,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let answer = run(&state, p.tenant_id, body).await;
    match &answer {
        Ok(_) => {}
        Err(ApiError::Validation(_) | ApiError::BadRequest(_)) => state.metrics.check_test("invalid"),
        Err(ApiError::NotFound) => state.metrics.check_test("not_found"),
        Err(ApiError::RateLimited(_)) => state.metrics.check_test("rate_limited"),
        Err(_) => state.metrics.check_test("error"),
    }
    answer
}

async fn run(
    state: &AppState,
    tenant_id: uuid::Uuid,
    mut body: Map<String, Value>,
) -> Result<Json<Value>, ApiError> {
    let policy = state.domain_policy().await?;
    let mut errors = FieldErrors::default();
    let wait = match body.remove("wait_ms") {
        None | Some(Value::Null) => Some(Duration::from_millis(DEFAULT_WAIT_MS)),
        Some(v) => match v.as_u64().filter(|ms| (MIN_WAIT_MS..=MAX_WAIT_MS).contains(ms)) {
            Some(ms) => Some(Duration::from_millis(ms)),
            None => {
                errors.0.insert(
                    "wait_ms".into(),
                    format!("must be a number of milliseconds from {MIN_WAIT_MS} to {MAX_WAIT_MS}"),
                );
                None
            }
        },
    };
    let target = if body.contains_key("domain_id") {
        saved(state, tenant_id, &body, &policy, errors, wait).await?
    } else {
        match (DomainSpec::parse(&body, &policy), wait) {
            (Ok(spec), Some(wait)) if errors.is_empty() => {
                let regions = every_if_empty(spec.regions.clone(), &policy);
                // Tested as given, also when the definition says `paused`.
                let config = DomainConfig { paused: false, ..spec.agent_config(DomainId::new(), 0) };
                Target { config, saved: None, regions, wait }
            }
            (parsed, _) => {
                if let Err(more) = parsed {
                    errors.0.extend(more.0);
                }
                return Err(ApiError::validation(errors));
            }
        }
    };

    if let Err(retry_after) = state.checks.limiter.check(tenant_id, Instant::now()) {
        tracing::info!(%tenant_id, retry_after_s = retry_after.as_secs(), "check test refused by the rate limit");
        return Err(ApiError::RateLimited(retry_after.as_secs()));
    }
    probe(state, tenant_id, target).await
}

fn every_if_empty(regions: Vec<String>, policy: &Policy) -> Vec<String> {
    if regions.is_empty() {
        policy.regions.iter().cloned().collect()
    } else {
        regions
    }
}

/// The target for `{"domain_id": …}`: the tenant's domain as stored (another tenant's is a 404).
async fn saved(
    state: &AppState,
    tenant_id: uuid::Uuid,
    body: &Map<String, Value>,
    policy: &Policy,
    mut errors: FieldErrors,
    wait: Option<Duration>,
) -> Result<Target, ApiError> {
    for key in body.keys() {
        if !SAVED_FIELDS.contains(&key.as_str()) {
            errors
                .0
                .insert(key.clone(), "unknown field; with domain_id only regions and wait_ms apply".into());
        }
    }
    let id = match body.get("domain_id").and_then(Value::as_str).map(str::parse::<DomainId>) {
        Some(Ok(id)) => Some(id),
        _ => {
            errors.0.insert("domain_id".into(), "must be a domain id (a UUID)".into());
            None
        }
    };
    let regions = match body.get("regions").filter(|v| !v.is_null()) {
        None => Some(None),
        Some(v) => match parse_regions(v, policy) {
            Ok(regions) => Some(Some(regions)),
            Err(message) => {
                errors.0.insert("regions".into(), message);
                None
            }
        },
    };
    let (Some(id), Some(regions), Some(wait)) = (id, regions, wait) else {
        return Err(ApiError::validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let domain = store::get(&state.pool, tenant_id, id).await?;
    let mut config = domain.agent_config();
    // An operator tests a paused domain on purpose.
    config.paused = false;
    let regions = every_if_empty(regions.unwrap_or_else(|| config.regions.clone()), policy);
    Ok(Target { config, saved: Some(id), regions, wait })
}

/// Publishes the request, then collects answers until every region answered once or the wait
/// ran out.
async fn probe(state: &AppState, tenant_id: uuid::Uuid, target: Target) -> Result<Json<Value>, ApiError> {
    let mut waiting = state.checks.waiters.register();
    let request_id = waiting.request_id;
    let url = target.config.url.clone();
    let request = ProbeRequest {
        domain_id: target.config.id,
        regions: target.regions.clone(),
        reason: "test".into(),
        request_id: Some(request_id),
        config: Some(target.config),
    };
    let payload = serde_json::to_string(&request).map_err(|e| ApiError::Internal(e.into()))?;
    let listeners: i64 =
        state.checks.redis.publish(state.checks.keys.probe_requests(), payload).await.map_err(|e| {
            ApiError::Unavailable(anyhow::Error::new(e).context("publishing a check test request"))
        })?;

    let deadline = Instant::now() + target.wait;
    let asked: BTreeSet<&str> = target.regions.iter().map(String::as_str).collect();
    let mut answered = BTreeSet::new();
    let mut agents = HashSet::new();
    let mut results: Vec<CheckResult> = Vec::new();
    // Nobody subscribed: no agent listens at all, so nobody can answer.
    while listeners > 0 && answered.len() < asked.len() {
        let Ok(Some(result)) = tokio::time::timeout_at(deadline, waiting.results.recv()).await else {
            break;
        };
        // A batch resent after a lost acknowledgement publishes its results again.
        if !asked.contains(result.region.as_str())
            || !agents.insert((result.region.clone(), result.agent_id.clone()))
        {
            continue;
        }
        answered.insert(result.region.clone());
        results.push(result);
    }
    drop(waiting);
    results.sort_by(|a, b| (&a.region, &a.agent_id).cmp(&(&b.region, &b.agent_id)));
    let missing: Vec<&str> = asked.iter().copied().filter(|r| !answered.contains(*r)).collect();
    let complete = missing.is_empty();
    state.metrics.check_test(if complete { "complete" } else { "partial" });
    tracing::info!(
        %tenant_id, %request_id, domain_id = ?target.saved, answered = results.len(), ?missing, listeners,
        "check test done"
    );
    Ok(Json(json!({
        "request_id": request_id,
        "domain_id": target.saved,
        "url": url,
        "complete": complete,
        "wait_ms": target.wait.as_millis() as u64,
        "results": results.iter().map(view).collect::<Vec<_>>(),
        "missing_regions": missing,
    })))
}

fn view(result: &CheckResult) -> Value {
    json!({
        "region": result.region,
        "agent_id": result.agent_id,
        "ok": result.ok,
        "error_kind": result.error_kind,
        "error_detail": result.error_detail,
        "status_code": result.status_code,
        "timings": result.timings,
        "resolved_ip": result.resolved_ip,
        "http_version": result.http_version,
        "certificate": result.certificate,
        "started_at": result.started_at,
    })
}
