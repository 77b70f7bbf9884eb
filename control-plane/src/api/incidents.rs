//! `/v1/incidents` (list, get with events, acknowledge) and `/v1/domains/{id}/status` (the
//! consensus state, every region's vote and the flap mode). Tenant-scoped: another tenant's incident or
//! domain is a 404.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shared::DomainId;
use uuid::Uuid;

use super::query::{invalid, limit, params, time, Params};
use super::{Admin, ApiError, AppState, Auth};
use crate::consensus::{self, decide};
use crate::flap;
use crate::incidents::{self, AckError, Filter};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// Longest acknowledgement note, in characters.
pub const MAX_NOTE_CHARS: usize = 2_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/incidents", get(list))
        .route("/incidents/{id}", get(show))
        .route("/incidents/{id}/ack", post(ack))
        .route("/domains/{id}/status", get(status))
}

pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let map = params(query, &["state", "domain", "since", "until", "limit"])?;
    let state_filter = match map.get("state").map(String::as_str) {
        None => None,
        Some(s @ ("open" | "acknowledged" | "resolved")) => Some(s.to_owned()),
        Some(_) => return Err(invalid("state", "must be open, acknowledged or resolved")),
    };
    let domain_id = map
        .get("domain")
        .map(|raw| raw.parse::<Uuid>().map_err(|_| invalid("domain", "must be a domain id")))
        .transpose()?;
    let limit = limit(&map, DEFAULT_LIMIT, MAX_LIMIT)?;
    let filter = Filter {
        state: state_filter,
        domain_id,
        since: time(&map, "since")?,
        until: time(&map, "until")?,
        limit,
    };
    let items = incidents::list(&state.pool, p.tenant_id, &filter).await?;
    Ok(Json(json!({ "items": items })))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

pub async fn show(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let incident =
        incidents::get(&state.pool, p.tenant_id, parse_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    let events = incidents::events(&state.pool, incident.id).await?;
    let mut body = json!(incident);
    body["events"] = json!(events);
    Ok(Json(body))
}

/// Acknowledges an open incident (admin). Body: a JSON object, `{"note": "..."}` or `{}`. A
/// resolved or already acknowledged incident answers 409.
pub async fn ack(
    State(state): State<AppState>,
    Admin(p): Admin,
    Path(id): Path<String>,
    super::JsonObject(body): super::JsonObject,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    if let Some(key) = body.keys().find(|k| k.as_str() != "note") {
        return Err(invalid(key, "unknown field"));
    }
    let note = match body.get("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_NOTE_CHARS => Some(s.as_str()),
        Some(Value::String(_)) => {
            return Err(invalid("note", format!("must be at most {MAX_NOTE_CHARS} characters")))
        }
        Some(_) => return Err(invalid("note", "must be a string")),
    };
    match incidents::acknowledge(&state.pool, p.tenant_id, id, p.token_id, note).await {
        Ok(incident) => {
            tracing::info!(incident_id = %id, token_id = %p.token_id, "incident acknowledged");
            Ok(Json(json!(incident)))
        }
        Err(AckError::NotFound) => Err(ApiError::NotFound),
        Err(AckError::Conflict(state)) => Err(ApiError::Conflict(format!("the incident is already {state}"))),
        Err(AckError::Database(error)) => Err(error.into()),
    }
}

/// The consensus state of a domain, its open incident, every region's vote, its flap mode and
/// its persistent regional failures (`regional_failures`: regions whose latest
/// `regional_failure_observations` observations all failed while the domain is up).
pub async fn status(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: DomainId = id.parse().map_err(|_| ApiError::NotFound)?;
    let mut conn = state.pool.acquire().await?;
    /// Regions, quorum, interval, paused, flap overrides.
    type DomainRow = (Vec<String>, Option<i32>, i32, bool, Option<Value>);
    let domain: Option<DomainRow> = sqlx::query_as(
        "SELECT regions, quorum, interval_s, paused, flap FROM domains WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id.0)
    .bind(p.tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (own, quorum, interval_s, paused, flap_overrides) = domain.ok_or(ApiError::NotFound)?;
    let current: Option<(String, DateTime<Utc>, Option<Uuid>)> =
        sqlx::query_as("SELECT state, since, open_incident_id FROM domain_state WHERE domain_id = $1")
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await?;
    let regions: Vec<String> = if own.is_empty() { crate::regions::list(&mut *conn).await? } else { own };
    let observations = consensus::observations(&mut conn, id.0).await?;
    let health = consensus::health(&mut conn).await?;
    let freshness = decide::freshness(interval_s.max(1) as u32, state.config.consensus_freshness_factor);
    let (state_name, since, open_incident) = match current {
        Some((s, since, incident)) => (s, Some(since), incident),
        None => ("unknown".to_owned(), None, None),
    };
    let now = state.clock.now();
    let flap_settings = flap::settings_for(
        &flap::Settings::from_config(&state.config),
        flap_overrides.as_ref(),
        id.0,
        &state.metrics,
    );
    let flap = flap::status(&mut conn, id.0, &flap_settings, now).await?;
    let decision = decide::decide(&decide::Inputs {
        regions: &regions,
        quorum: quorum.and_then(|q| u32::try_from(q).ok()),
        freshness,
        now,
        observations: &observations,
        health: &health,
        current: decide::State::parse(&state_name),
    });
    let votes: Vec<Value> = decision
        .votes
        .iter()
        .map(|v| {
            json!({
                "region": v.region,
                "standing": v.standing,
                "voting": v.standing.votes(),
                "observation": v.observation,
            })
        })
        .collect();
    let reason = if paused {
        "monitoring is paused".to_owned()
    } else {
        decision.explain(decide::State::parse(&state_name))
    };
    // A paused domain is not being probed: nothing it shows is current.
    let regional_failures = if paused {
        Vec::new()
    } else {
        consensus::regional_failures(
            &mut conn,
            id.0,
            &regions,
            decide::State::parse(&state_name),
            state.config.regional_failure_observations,
        )
        .await?
    };
    Ok(Json(json!({
        "state": state_name,
        "reason": reason,
        "since": since,
        "paused": paused,
        "open_incident_id": open_incident,
        "quorum": decision.quorum,
        "freshness_s": freshness.as_secs_f64(),
        "failing": decision.failing,
        "passing": decision.passing,
        "regions": votes,
        "flap": flap,
        "regional_failures": regional_failures,
    })))
}

/// The persistent regional failures of a domain of the caller's tenant (already checked), as
/// the status answer lists them: regions whose latest `regional_failure_observations`
/// observations or more all failed while consensus holds the domain up (none while paused).
pub async fn regional_failures_of(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    domain: Uuid,
) -> Result<Vec<consensus::RegionalFailure>, ApiError> {
    let (own, paused): (Vec<String>, bool) =
        sqlx::query_as("SELECT regions, paused FROM domains WHERE id = $1")
            .bind(domain)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(ApiError::NotFound)?;
    if paused {
        return Ok(Vec::new());
    }
    let regions = if own.is_empty() { crate::regions::list(&mut *conn).await? } else { own };
    let current: Option<String> = sqlx::query_scalar("SELECT state FROM domain_state WHERE domain_id = $1")
        .bind(domain)
        .fetch_optional(&mut *conn)
        .await?;
    let current = decide::State::parse(current.as_deref().unwrap_or("unknown"));
    Ok(consensus::regional_failures(
        conn,
        domain,
        &regions,
        current,
        state.config.regional_failure_observations,
    )
    .await?)
}
