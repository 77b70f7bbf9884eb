//! `/v1/incidents` (list, get with events, acknowledge) and `/v1/domains/{id}/status` (the
//! consensus state, every region's vote, the flap mode and the maintenance window under way
//! or next). Tenant-scoped: another tenant's incident or
//! domain is a 404.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shared::DomainId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::query::{invalid, limit, params, time, Params};
use super::schema::{AckBody, DomainStatus, IncidentDetail, IncidentList, UpdateBody, UpdateList};
use super::{Admin, ApiError, AppState, Auth, Id};
use crate::consensus::{self, decide};
use crate::flap;
use crate::incidents::{self, AckError, Filter};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// Longest acknowledgement note, in characters.
pub const MAX_NOTE_CHARS: usize = 2_000;

/// The incident routes, to be merged into `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(ack))
        .routes(routes!(updates, post_update))
        .routes(routes!(status))
}

/// The tenant's incidents, newest first.
#[utoipa::path(get, path = "/incidents", tag = "incidents",
    params(
        ("state" = Option<String>, Query, description = "`open`, `acknowledged` or `resolved`"),
        ("domain" = Option<Uuid>, Query, description = "Only this domain's"),
        ("since" = Option<String>, Query, format = DateTime, description = "Opened at or after (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "Opened before (RFC 3339)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50"),
    ),
    responses((status = 200, description = "Incidents", body = IncidentList)))]
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

/// An incident with its events and updates.
#[utoipa::path(get, path = "/incidents/{id}", tag = "incidents", params(("id" = Uuid, Path, description = "The incident's id")),
    responses((status = 200, description = "The incident", body = IncidentDetail)))]
pub async fn show(State(state): State<AppState>, Auth(p): Auth, Id(id): Id) -> Result<Json<Value>, ApiError> {
    let incident =
        incidents::get(&state.pool, p.tenant_id, parse_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    let events = incidents::events(&state.pool, incident.id).await?;
    let updates = incidents::updates::list(&state.pool, p.tenant_id, incident.id).await?.unwrap_or_default();
    let mut body = json!(incident);
    body["events"] = json!(events);
    body["updates"] = json!(updates);
    Ok(Json(body))
}

/// Acknowledges an open incident (admin). Body: a JSON object, `{"note": "..."}` or `{}`. A
/// resolved or already acknowledged incident answers 409.
#[utoipa::path(post, path = "/incidents/{id}/ack", tag = "incidents", params(("id" = Uuid, Path, description = "The incident's id")), security(("bearer" = ["admin"])), request_body = AckBody,
    responses(
        (status = 200, description = "The incident, acknowledged", body = crate::incidents::Incident),
        (status = 409, description = "Already acknowledged or resolved", body = super::schema::ErrorBody),
    ))]
pub async fn ack(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
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
            state.publish(crate::live::Event::incident(
                crate::live::Kind::Incident,
                p.tenant_id,
                incident.domain_id,
                id,
                "acknowledged",
                note,
                incident.acknowledged_at.unwrap_or_else(chrono::Utc::now),
            ));
            tracing::info!(incident_id = %id, token_id = %p.token_id, "incident acknowledged");
            Ok(Json(json!(incident)))
        }
        Err(AckError::NotFound) => Err(ApiError::NotFound),
        Err(AckError::Conflict(state)) => Err(ApiError::Conflict(format!("the incident is already {state}"))),
        Err(AckError::Database(error)) => Err(error.into()),
    }
}

/// Longest update message, in characters.
pub const MAX_UPDATE_CHARS: usize = 5_000;

/// `GET /v1/incidents/{id}/updates`: the operators' updates, oldest first.
#[utoipa::path(get, path = "/incidents/{id}/updates", tag = "incidents", params(("id" = Uuid, Path, description = "The incident's id")),
    responses((status = 200, description = "The updates, oldest first", body = UpdateList)))]
pub async fn updates(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    let items = incidents::updates::list(&state.pool, p.tenant_id, parse_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/incidents/{id}/updates` (admin): `{"status": "investigating" | "identified" |
/// "monitoring" | "resolved", "message": "..."}`; shown on the status pages of the incident's
/// domain, live. Answers 201 with the update.
#[utoipa::path(post, path = "/incidents/{id}/updates", tag = "incidents", params(("id" = Uuid, Path, description = "The incident's id")), security(("bearer" = ["admin"])), request_body = UpdateBody,
    responses((status = 201, description = "The update", body = crate::incidents::updates::IncidentUpdate)))]
pub async fn post_update(
    State(state): State<AppState>,
    Admin(p): Admin,
    Id(id): Id,
    super::JsonObject(body): super::JsonObject,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let mut errors = std::collections::BTreeMap::new();
    for key in body.keys().filter(|k| !["status", "message"].contains(&k.as_str())) {
        errors.insert(key.clone(), "unknown field".to_owned());
    }
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| crate::status::model::UPDATE_STATUSES.contains(s));
    if status.is_none() {
        errors.insert("status".into(), "must be investigating, identified, monitoring or resolved".into());
    }
    let message = body.get("message").and_then(Value::as_str).map(str::trim).filter(|m| {
        !m.is_empty()
            && m.chars().count() <= MAX_UPDATE_CHARS
            && !m.chars().any(|c| c.is_control() && c != '\n')
    });
    if message.is_none() {
        errors.insert(
            "message".into(),
            format!("must be a non-empty text of at most {MAX_UPDATE_CHARS} characters without control characters"),
        );
    }
    let (Some(status), Some(message), true) = (status, message, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let (update, domain) =
        incidents::updates::post(&state.pool, p.tenant_id, id, status, message, &p.token_id.to_string())
            .await?
            .ok_or(ApiError::NotFound)?;
    state.publish(crate::live::Event::incident(
        crate::live::Kind::IncidentUpdate,
        p.tenant_id,
        domain,
        id,
        status,
        Some(message),
        update.posted_at,
    ));
    tracing::info!(incident_id = %id, status, token_id = %p.token_id, "incident update posted");
    Ok((axum::http::StatusCode::CREATED, Json(json!(update))))
}

/// The consensus state of a domain (`unknown`, `up`, `degraded`, `down`), its open incident,
/// every region's vote (with its latency detector: baseline median, anomalous probes in a
/// row, degraded), its flap mode and
/// its persistent regional failures (`regional_failures`: regions whose latest
/// `regional_failure_observations` observations all failed while the domain is up).
#[utoipa::path(get, path = "/domains/{id}/status", tag = "incidents", params(("id" = Uuid, Path, description = "The domain's id")),
    responses((status = 200, description = "The domain's consensus status", body = DomainStatus)))]
pub async fn status(
    State(state): State<AppState>,
    Auth(p): Auth,
    Id(id): Id,
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
    let latency = crate::degraded::latency_of(&mut conn, id.0).await?;
    let votes: Vec<Value> = decision
        .votes
        .iter()
        .map(|v| {
            json!({
                "region": v.region,
                "standing": v.standing,
                "voting": v.standing.votes(),
                "observation": v.observation,
                "latency": latency.get(&v.region),
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
    // The maintenance window under way (incidents opened now send nothing) and the next one.
    let (maintenance_active, maintenance_next) =
        crate::maintenance::store::for_domain(&mut conn, p.tenant_id, id.0, now).await?;
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
        "degraded": decision.degraded,
        "regions": votes,
        "flap": flap,
        "regional_failures": regional_failures,
        "maintenance": {"active": maintenance_active, "next": maintenance_next},
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

/// A domain's consensus state and each of its regions' standing, as the status answer has
/// them, for a list of domains at once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overview {
    pub domain_id: Uuid,
    /// `up`, `down` or `unknown`.
    pub state: String,
    pub since: Option<DateTime<Utc>>,
    pub open_incident_id: Option<Uuid>,
    /// Every region of the domain and its standing, in the domain's region order.
    pub regions: Vec<decide::Vote>,
}

/// [`Overview`]s of `domains` (already the caller's tenant's), in their order: the same decision
/// the status route makes for one domain, over a fixed number of round trips.
pub async fn overview(
    state: &AppState,
    domains: &[crate::domains::Domain],
) -> Result<Vec<Overview>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let ids: Vec<Uuid> = domains.iter().map(|d| d.id.0).collect();
    let rows: Vec<(Uuid, String, DateTime<Utc>, Option<Uuid>)> = sqlx::query_as(
        "SELECT domain_id, state, since, open_incident_id FROM domain_state WHERE domain_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let current: std::collections::HashMap<Uuid, (String, DateTime<Utc>, Option<Uuid>)> =
        rows.into_iter().map(|(id, s, since, incident)| (id, (s, since, incident))).collect();
    let mut observations = consensus::observations_of(&mut conn, &ids).await?;
    let health = consensus::health(&mut conn).await?;
    let all_regions = crate::regions::list(&mut *conn).await?;
    let now = state.clock.now();
    Ok(domains
        .iter()
        .map(|domain| {
            let spec = &domain.spec;
            let regions = if spec.regions.is_empty() { all_regions.clone() } else { spec.regions.clone() };
            let (state_name, since, open_incident_id) = match current.get(&domain.id.0) {
                Some((s, since, incident)) => (s.clone(), Some(*since), *incident),
                None => ("unknown".to_owned(), None, None),
            };
            let observed = observations.remove(&domain.id.0).unwrap_or_default();
            let decision = decide::decide(&decide::Inputs {
                regions: &regions,
                quorum: spec.quorum,
                freshness: decide::freshness(
                    spec.interval.seconds().max(1),
                    state.config.consensus_freshness_factor,
                ),
                now,
                observations: &observed,
                health: &health,
                current: decide::State::parse(&state_name),
            });
            Overview {
                domain_id: domain.id.0,
                state: state_name,
                since,
                open_incident_id,
                regions: decision.votes,
            }
        })
        .collect())
}
