//! One thin handler per console page and form. Reads call the REST API's own handlers (or the
//! store functions they call) with the viewer's principal and turn their answers into page
//! data; writes get an [`Admin`](crate::api::Admin) only through [`Viewer::writer`] and call the
//! API's write handlers with it. Every write answers with a redirect (post, redirect, get).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::DomainId;
use uuid::Uuid;

use super::pages::{self, Badge};
use super::viewer::{page, Form, RawForm};
use super::{chart, client, session, ConsoleError, Viewer, SESSION_COOKIE, SIGN_IN_COOKIE};
use crate::api::{self, ApiError, AppState, Auth, JsonObject};
use crate::domains::{store, Domain};
use crate::tenants;

/// Domains a tenant's list loads at most (in pages of the API's largest page).
const MAX_DOMAINS: usize = 10_000;
/// Rows a filtered domain list shows at most.
const MAX_ROWS: usize = 1_000;
/// Recent results on a domain's page.
const RECENT_RESULTS: u32 = 20;

type Result<T, E = ConsoleError> = std::result::Result<T, E>;

/// An API handler's JSON answer as the page's typed view of it.
fn read<T: DeserializeOwned>(Json(value): Json<Value>) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| ConsoleError::Internal(anyhow::Error::new(e).context("reading an API answer")))
}

/// A query string as the API's handlers take it.
fn params(pairs: &[(&str, String)]) -> api::query::Params {
    Ok(Query(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<HashMap<_, _>>()))
}

fn html(template: &impl askama::Template) -> Response {
    page(StatusCode::OK, template)
}

pub async fn home() -> Redirect {
    Redirect::to("/console/domains")
}

/// The live stream a page subscribes to: the tenant's events (one domain's on its page) after
/// the position the page was rendered at, so nothing committed in between is missed.
fn live_url(state: &AppState, domain: Option<&str>) -> String {
    let after = state.live.position();
    match domain {
        Some(id) => format!("/console/events?domain={id}&after={after}"),
        None => format!("/console/events?after={after}"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    domain: Option<String>,
    after: Option<String>,
}

/// `GET /console/events`: the viewer's tenant's live events as Server-Sent Events (the same
/// stream as `GET /v1/events`), resumed from `Last-Event-ID` or `after`.
pub async fn events(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    query: std::result::Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let tenant = viewer.principal.tenant_id;
    let view = match query.domain.as_deref() {
        None => crate::live::TenantView::new(tenant),
        Some(raw) => {
            let id: DomainId = raw.parse().map_err(|_| ConsoleError::NotFound)?;
            store::get(&state.pool, tenant, id).await.map_err(ApiError::from)?;
            crate::live::TenantView::domain(tenant, id.0)
        }
    };
    let resume = crate::live::resume_point(&headers, query.after.as_deref());
    Ok(state.live.sse(view, resume).unwrap_or_else(IntoResponse::into_response))
}

// ---------------------------------------------------------------------------------------------
// Sign-in and sign-out

/// Whether this request's cookies get `Secure` (see [`client::secure`]).
fn secure(state: &AppState, peer: std::net::IpAddr, headers: &HeaderMap) -> bool {
    client::secure(state.config.console_cookie_secure, peer, headers, &state.config.trusted_proxies)
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The sign-in form with a fresh anti-forgery value (cookie and hidden field).
fn sign_in_form(state: &AppState, secure: bool, status: StatusCode, error: Option<String>) -> Response {
    let csrf = session::random_token();
    let form = pages::SignInPage { csrf: csrf.clone(), error, demo: state.config.public_demo.is_some() };
    with_cookies(page(status, &form), &[client::set_cookie(SIGN_IN_COOKIE, &csrf, 3_600, secure)])
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response> {
    let (mut parts, _) = request.into_parts();
    let peer = client::peer(&parts);
    let signed_in =
        match <Viewer as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state)
            .await
        {
            Ok(viewer) => !viewer.is_demo(),
            Err(ConsoleError::SignIn) => false,
            Err(other) => return Err(other),
        };
    if signed_in {
        return Ok(Redirect::to("/console/domains").into_response());
    }
    Ok(sign_in_form(&state, secure(&state, peer, &parts.headers), StatusCode::OK, None))
}

pub async fn sign_in(State(state): State<AppState>, request: axum::extract::Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let peer = client::peer(&parts);
    let secure = secure(&state, peer, &parts.headers);
    let addr = client::client_addr(peer, &parts.headers, &state.config.trusted_proxies);
    if let Err(wait) = state.sign_in_limiter.check(addr) {
        state.metrics.console_sign_in("rate_limited");
        tracing::warn!(client = %addr, "console sign-in rate limited");
        let message =
            format!("too many sign-in attempts from this address: try again in {} s", wait.as_secs());
        let mut response = sign_in_form(&state, secure, StatusCode::TOO_MANY_REQUESTS, Some(message));
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        return Ok(response);
    }
    let cookie = client::cookie(&parts.headers, SIGN_IN_COOKIE).map(str::to_owned);
    let request = axum::extract::Request::from_parts(parts, body);
    let form = <Form as axum::extract::FromRequest<AppState>>::from_request(request, &state).await?;
    let posted = form.get("csrf").unwrap_or_default();
    if !cookie.as_deref().is_some_and(|c| !c.is_empty() && session::same_secret(c, posted)) {
        state.metrics.console_sign_in("csrf");
        let message = "the sign-in form expired or was not sent from this site: please try again".to_owned();
        return Ok(sign_in_form(&state, secure, StatusCode::FORBIDDEN, Some(message)));
    }
    let token = form.get("token").unwrap_or_default().trim();
    let Some(principal) = tenants::authenticate(&state.pool, token).await.map_err(ApiError::from)? else {
        state.metrics.console_sign_in("invalid_token");
        tracing::info!(client = %addr, "console sign-in with an unknown or revoked token");
        let message = "this token is not valid: it is unknown or revoked".to_owned();
        return Ok(sign_in_form(&state, secure, StatusCode::UNAUTHORIZED, Some(message)));
    };
    let ttl = Duration::from_secs(state.config.console_session_ttl_s);
    let (id, _) = session::create(&state.pool, &principal, ttl).await.map_err(ApiError::from)?;
    state.metrics.console_sign_in("ok");
    tracing::info!(tenant_id = %principal.tenant_id, token_id = %principal.token_id, role = principal.role.as_str(), "console session opened");
    Ok(with_cookies(
        Redirect::to("/console/domains").into_response(),
        &[
            client::set_cookie(SESSION_COOKIE, &id, ttl.as_secs(), secure),
            client::set_cookie(SIGN_IN_COOKIE, "", 0, secure),
        ],
    ))
}

pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    form: Form,
) -> Result<Response> {
    let Some(current) = &viewer.session else { return Ok(Redirect::to("/console/sign-in").into_response()) };
    if !session::same_secret(form.get("csrf").unwrap_or_default(), &current.csrf) {
        state.metrics.console_refusal("csrf");
        return Err(ConsoleError::Forbidden(
            "the form's security token does not match this session: reload the page and try again".into(),
        ));
    }
    if let Some(id) = client::cookie(&headers, SESSION_COOKIE) {
        session::delete(&state.pool, id).await.map_err(ApiError::from)?;
    }
    tracing::info!(token_id = %viewer.principal.token_id, "console session closed");
    // The cookie is cleared with the attributes it was set with; `Secure` does not matter for
    // a deletion, so none is claimed.
    Ok(with_cookies(
        Redirect::to("/console/sign-in").into_response(),
        &[client::set_cookie(SESSION_COOKIE, "", 0, false)],
    ))
}

// ---------------------------------------------------------------------------------------------
// Domains

#[derive(Debug, Deserialize)]
pub struct DomainsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
}

const STATE_FILTERS: [(&str, &str); 6] = [
    ("", "All"),
    ("down", "Down"),
    ("failing", "Failing in a region"),
    ("up", "Up"),
    ("unknown", "Unknown"),
    ("paused", "Paused"),
];

/// Every domain of the tenant, through the store function the API's list calls.
async fn all_domains(state: &AppState, tenant_id: Uuid) -> Result<Vec<Domain>> {
    let mut all: Vec<Domain> = Vec::new();
    loop {
        let after = all.last().map(|d| d.id);
        let page = store::list(&state.pool, tenant_id, after, 500).await.map_err(ApiError::from)?;
        let done = page.len() < 500;
        all.extend(page);
        if done || all.len() >= MAX_DOMAINS {
            return Ok(all);
        }
    }
}

fn display_name(domain: &Domain) -> String {
    domain.spec.name.clone().unwrap_or_else(|| domain.spec.url.to_string())
}

/// A region's cell from its vote as the API serializes it.
fn region_cell(vote: &VoteView) -> pages::RegionCell {
    let title = match &vote.observation {
        None => "no result yet".to_owned(),
        Some(o) if o.ok => format!("passed at {}", pages::time(o.observed_at)),
        Some(o) => {
            let what = match (&o.error_kind, o.status_code) {
                (Some(kind), _) => kind.clone(),
                (None, Some(code)) => format!("status {code}"),
                (None, None) => "failed".to_owned(),
            };
            format!("{what} at {}", pages::time(o.observed_at))
        }
    };
    pages::RegionCell::new(vote.region.clone(), &vote.standing, title)
}

#[derive(Debug, Deserialize)]
struct ObservationView {
    ok: bool,
    error_kind: Option<String>,
    status_code: Option<i32>,
    observed_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct VoteView {
    region: String,
    standing: String,
    observation: Option<ObservationView>,
}

pub async fn domains(
    State(state): State<AppState>,
    viewer: Viewer,
    query: std::result::Result<Query<DomainsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let filter =
        STATE_FILTERS.iter().find(|(value, _)| *value == query.state).map(|(value, _)| *value).ok_or_else(
            || ConsoleError::BadRequest("state must be one of down, failing, up, unknown, paused".into()),
        )?;
    let domains = all_domains(&state, viewer.principal.tenant_id).await?;
    let total = domains.len();
    let needle = query.q.trim().to_lowercase();
    let domains: Vec<Domain> = domains
        .into_iter()
        .filter(|d| {
            needle.is_empty()
                || d.spec.url.as_str().to_lowercase().contains(&needle)
                || d.spec.name.as_deref().is_some_and(|n| n.to_lowercase().contains(&needle))
        })
        .collect();
    let overviews = api::incidents::overview(&state, &domains).await?;
    let mut rows: Vec<(u8, pages::DomainRow)> = domains
        .iter()
        .zip(overviews)
        .filter_map(|(domain, overview)| {
            let votes: Vec<VoteView> = overview
                .regions
                .iter()
                .filter_map(|v| serde_json::to_value(v).ok().and_then(|v| serde_json::from_value(v).ok()))
                .collect();
            let paused = domain.spec.paused;
            let failing = votes.iter().any(|v| v.standing == "failing");
            let keep = match filter {
                "" => true,
                "paused" => paused,
                "failing" => !paused && failing,
                wanted => !paused && overview.state == wanted,
            };
            if !keep {
                return None;
            }
            let badge = Badge::domain(&overview.state, paused);
            let severity = match badge.key {
                "down" => 0,
                "unknown" => 1,
                "up" if failing => 2,
                "up" => 3,
                _ => 4,
            };
            let name = display_name(domain);
            let url = domain.spec.url.to_string();
            Some((
                severity,
                pages::DomainRow {
                    id: domain.id.to_string(),
                    show_url: name != url,
                    name,
                    url,
                    state: badge,
                    since: overview.since.map(pages::time).unwrap_or_else(|| "—".into()),
                    regions: votes.iter().map(region_cell).collect(),
                },
            ))
        })
        .collect();
    // Worst first (down, unknown, failing somewhere, up, paused), then in creation order.
    rows.sort_by_key(|(severity, _)| *severity);
    let matched = rows.len();
    let rows: Vec<pages::DomainRow> = rows.into_iter().take(MAX_ROWS).map(|(_, row)| row).collect();
    let summary = match (matched, total) {
        (m, t) if m == t => format!("{t} domain{}", if t == 1 { "" } else { "s" }),
        (m, t) if m > MAX_ROWS => format!("{m} of {t} domains match; the first {MAX_ROWS} are shown"),
        (m, t) => format!("{m} of {t} domains match"),
    };
    Ok(html(&pages::DomainsPage {
        layout: viewer.layout("Domains", "domains").live(live_url(&state, None)),
        q: query.q,
        state_options: STATE_FILTERS
            .iter()
            .map(|(value, label)| pages::SelectOption { value, label, selected: *value == filter })
            .collect(),
        summary,
        rows,
    }))
}

#[derive(Debug, Deserialize)]
struct StatusView {
    state: String,
    reason: String,
    since: Option<DateTime<Utc>>,
    regions: Vec<VoteView>,
}

#[derive(Debug, Deserialize)]
struct CountsView {
    probes: u64,
    successes: u64,
    uptime_percent: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct UptimeView {
    uptime_percent: Option<f64>,
    probes: CountsView,
}

#[derive(Debug, Deserialize)]
struct PercentilesView {
    p50_us: u64,
    p95_us: u64,
    p99_us: u64,
}

#[derive(Debug, Deserialize)]
struct RegionLatencyView {
    region: String,
    total: Option<PercentilesView>,
}

#[derive(Debug, Deserialize)]
struct LatencyView {
    regions: Vec<RegionLatencyView>,
}

#[derive(Debug, Deserialize)]
struct ResultView {
    time: DateTime<Utc>,
    region: String,
    ok: bool,
    error_kind: Option<String>,
    error_detail: Option<String>,
    status_code: Option<i32>,
    dns_us: Option<i64>,
    connect_us: Option<i64>,
    tls_us: Option<i64>,
    ttfb_us: Option<i64>,
    total_us: i64,
}

#[derive(Debug, Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct CertificateFactsView {
    region: String,
    subject: String,
    issuer: String,
    not_after: DateTime<Utc>,
    days_left: i64,
    valid: bool,
    validation_error: Option<String>,
    observed_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct CertificateView {
    regions: Vec<CertificateFactsView>,
}

#[derive(Debug, Deserialize)]
struct IncidentView {
    id: Uuid,
    domain_id: Uuid,
    state: String,
    opened_at: DateTime<Utc>,
    duration_s: Option<i64>,
    ack_note: Option<String>,
    #[serde(default)]
    opened_regions: Value,
}

fn phase(us: Option<i64>) -> String {
    us.map(|us| chart::duration(us.max(0) as u64)).unwrap_or_else(|| "—".into())
}

/// Floored like the status pages: an uptime short of 100 % never reads as 100 %.
fn percent(value: Option<f64>) -> String {
    value.map(crate::status::model::percent).unwrap_or_else(|| "—".into())
}

pub async fn domain(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let p = viewer.principal.clone();
    let domain_id: DomainId = id.parse().map_err(|_| ConsoleError::NotFound)?;
    let domain = store::get(&state.pool, p.tenant_id, domain_id).await.map_err(ApiError::from)?;
    let status: StatusView =
        read(api::incidents::status(State(state.clone()), Auth(p.clone()), Path(id.clone())).await?)?;
    let mut uptime = Vec::new();
    for window in ["24h", "7d", "30d"] {
        let answer = api::history::uptime(
            State(state.clone()),
            Auth(p.clone()),
            Path(id.clone()),
            params(&[("window", window.to_owned())]),
        )
        .await?;
        let view: UptimeView = read(answer)?;
        uptime.push(pages::UptimeRow {
            window,
            consensus: percent(view.uptime_percent),
            probes: match view.probes.uptime_percent {
                Some(p) => format!("{p:.2} % of {} ({} passed)", view.probes.probes, view.probes.successes),
                None => "no probe".into(),
            },
        });
    }
    let latency: LatencyView = read(
        api::history::latency(
            State(state.clone()),
            Auth(p.clone()),
            Path(id.clone()),
            params(&[("window", "24h".to_owned())]),
        )
        .await?,
    )?;
    let rows: Vec<(String, [u64; 3])> = latency
        .regions
        .into_iter()
        .filter_map(|r| r.total.map(|t| (r.region, [t.p50_us, t.p95_us, t.p99_us])))
        .collect();
    let results: Items<ResultView> = read(
        api::history::results(
            State(state.clone()),
            Auth(p.clone()),
            Path(id.clone()),
            params(&[("limit", RECENT_RESULTS.to_string())]),
        )
        .await?,
    )?;
    let certificate = match api::history::certificate(State(state.clone()), Auth(p.clone()), Path(id.clone()))
        .await
    {
        Ok(answer) => {
            read::<CertificateView>(answer)?.regions.into_iter().min_by_key(|c| c.not_after).map(|c| {
                let (days, text) = Badge::days_left(c.days_left);
                pages::CertificateView {
                    subject: c.subject,
                    issuer: c.issuer,
                    not_after: format!("{} ({text})", pages::time(c.not_after)),
                    days,
                    region: c.region,
                    observed_at: pages::time(c.observed_at),
                    validity: if c.valid {
                        "valid".into()
                    } else {
                        format!("invalid: {}", c.validation_error.unwrap_or_else(|| "unknown reason".into()))
                    },
                }
            })
        }
        Err(ApiError::NotRecorded(_)) => None,
        Err(other) => return Err(other.into()),
    };
    let incidents: Items<IncidentView> = read(
        api::incidents::list(
            State(state.clone()),
            Auth(p.clone()),
            params(&[("domain", id.clone()), ("limit", "10".into())]),
        )
        .await?,
    )?;
    let name = display_name(&domain);
    Ok(html(&pages::DomainPage {
        layout: viewer.layout(name.clone(), "domains").live(live_url(&state, Some(&domain.id.to_string()))),
        id: domain.id.to_string(),
        name,
        url: domain.spec.url.to_string(),
        paused: domain.spec.paused,
        state: Badge::domain(&status.state, domain.spec.paused),
        since: status.since.map(pages::time).unwrap_or_else(|| "—".into()),
        reason: status.reason,
        regions: status.regions.iter().map(region_cell).collect(),
        uptime,
        chart: chart::latency(&rows),
        results: results
            .items
            .into_iter()
            .map(|r| pages::ResultRow {
                time: pages::time(r.time),
                region: r.region,
                outcome: Badge::outcome(r.ok),
                error: r.error_kind.map(|kind| match r.error_detail {
                    Some(detail) if !detail.is_empty() => format!("{kind}: {detail}"),
                    _ => kind,
                }),
                status: r.status_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
                dns: phase(r.dns_us),
                connect: phase(r.connect_us),
                tls: phase(r.tls_us),
                ttfb: phase(r.ttfb_us),
                total: phase(Some(r.total_us)),
            })
            .collect(),
        certificate,
        incidents: incidents
            .items
            .into_iter()
            .map(|i| pages::IncidentLine {
                id: i.id.to_string(),
                state: Badge::incident(&i.state),
                opened_at: pages::time(i.opened_at),
                duration: i.duration_s.map(pages::span),
            })
            .collect(),
        can_write: viewer.can_write(),
        csrf: viewer.csrf(),
    }))
}

pub async fn pause(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Redirect> {
    let admin = viewer.writer(&form, &state)?;
    let _answer = api::domains::pause(State(state), admin, Path(id.clone())).await?;
    Ok(Redirect::to(&format!("/console/domains/{id}")))
}

pub async fn resume(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Redirect> {
    let admin = viewer.writer(&form, &state)?;
    let _answer = api::domains::resume(State(state), admin, Path(id.clone())).await?;
    Ok(Redirect::to(&format!("/console/domains/{id}")))
}

// ---------------------------------------------------------------------------------------------
// Incidents

/// Display names of the tenant's domains among `ids` (an incident outlives its domain).
async fn domain_names(state: &AppState, tenant_id: Uuid, ids: &[Uuid]) -> Result<HashMap<Uuid, String>> {
    let found = store::get_many(&state.pool, tenant_id, ids).await.map_err(ApiError::from)?;
    let mut names: HashMap<Uuid, String> = found.iter().map(|d| (d.id.0, display_name(d))).collect();
    for id in ids {
        names.entry(*id).or_insert_with(|| format!("deleted domain {id}"));
    }
    Ok(names)
}

#[derive(Debug, Deserialize)]
pub struct IncidentsQuery {
    #[serde(default)]
    state: String,
}

pub async fn incidents(
    State(state): State<AppState>,
    viewer: Viewer,
    query: std::result::Result<Query<IncidentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let (filter, tabs) = match query.state.as_str() {
        "" | "open" => (Some("open"), 0),
        "resolved" => (Some("resolved"), 1),
        "all" => (None, 2),
        _ => return Err(ConsoleError::BadRequest("state must be open, resolved or all".into())),
    };
    let mut pairs = vec![("limit", "200".to_owned())];
    if let Some(filter) = filter {
        pairs.push(("state", filter.to_owned()));
    }
    let p = viewer.principal.clone();
    let list: Items<IncidentView> =
        read(api::incidents::list(State(state.clone()), Auth(p.clone()), params(&pairs)).await?)?;
    let ids: Vec<Uuid> = list.items.iter().map(|i| i.domain_id).collect();
    let names = domain_names(&state, p.tenant_id, &ids).await?;
    let now = state.clock.now();
    let rows = list
        .items
        .into_iter()
        .map(|i| pages::IncidentRow {
            id: i.id.to_string(),
            domain: names.get(&i.domain_id).cloned().unwrap_or_default(),
            state: Badge::incident(&i.state),
            opened_at: pages::time(i.opened_at),
            duration: match i.duration_s {
                Some(s) => pages::span(s),
                None => format!("{} so far", pages::span((now - i.opened_at).num_seconds())),
            },
            can_ack: i.state == "open",
        })
        .collect();
    let tab = |label, query, i| pages::Tab { label, query, selected: tabs == i };
    Ok(html(&pages::IncidentsPage {
        layout: viewer.layout("Incidents", "incidents").live(live_url(&state, None)),
        tabs: vec![tab("Open", "", 0), tab("Resolved", "?state=resolved", 1), tab("All", "?state=all", 2)],
        rows,
        can_write: viewer.can_write(),
        csrf: viewer.csrf(),
    }))
}

#[derive(Debug, Deserialize)]
struct EventView {
    kind: String,
    at: DateTime<Utc>,
    actor: String,
    #[serde(default)]
    details: Value,
}

#[derive(Debug, Deserialize)]
struct UpdateView {
    status: String,
    message: String,
    posted_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct IncidentDetailView {
    #[serde(flatten)]
    incident: IncidentView,
    events: Vec<EventView>,
    #[serde(default)]
    updates: Vec<UpdateView>,
}

/// An event's details in one line: `key: value` pairs (values of nested objects as JSON).
fn details_line(details: &Value) -> String {
    match details {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(key, value)| match value {
                Value::String(s) => format!("{key}: {s}"),
                other => format!("{key}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(_) | Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub async fn incident(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let p = viewer.principal.clone();
    let detail: IncidentDetailView =
        read(api::incidents::show(State(state.clone()), Auth(p.clone()), Path(id)).await?)?;
    let incident = detail.incident;
    let names = domain_names(&state, p.tenant_id, &[incident.domain_id]).await?;
    let opened_regions = incident
        .opened_regions
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let region = r.get("region").and_then(Value::as_str).unwrap_or("?").to_owned();
            let mut rest = r.clone();
            if let Some(map) = rest.as_object_mut() {
                map.remove("region");
            }
            pages::OpenedRegion { region, detail: details_line(&rest) }
        })
        .collect();
    Ok(html(&pages::IncidentPage {
        layout: viewer.layout("Incident", "incidents").live(live_url(&state, None)),
        id: incident.id.to_string(),
        domain_id: incident.domain_id.to_string(),
        domain: names.get(&incident.domain_id).cloned().unwrap_or_default(),
        state: Badge::incident(&incident.state),
        opened_at: pages::time(incident.opened_at),
        duration: incident.duration_s.map(pages::span),
        ack_note: incident.ack_note.filter(|n| !n.is_empty()),
        opened_regions,
        events: detail
            .events
            .into_iter()
            .map(|e| pages::EventLine {
                at: pages::time(e.at),
                kind: e.kind,
                actor: e.actor,
                details: details_line(&e.details),
            })
            .collect(),
        updates: detail
            .updates
            .into_iter()
            .map(|u| pages::UpdateLine { status: u.status, at: pages::time(u.posted_at), message: u.message })
            .collect(),
        can_write: viewer.can_write(),
        can_ack: incident.state == "open",
        can_post_updates: true,
        csrf: viewer.csrf(),
    }))
}

pub async fn acknowledge(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Redirect> {
    let admin = viewer.writer(&form, &state)?;
    let mut body = Map::new();
    if let Some(note) = form.get("note").map(str::trim).filter(|n| !n.is_empty()) {
        body.insert("note".into(), Value::from(note));
    }
    let _answer = api::incidents::ack(State(state), admin, Path(id.clone()), JsonObject(body)).await?;
    Ok(match form.get("back") {
        Some("list") => Redirect::to("/console/incidents"),
        _ => Redirect::to(&format!("/console/incidents/{id}")),
    })
}

/// Posts an operator's update (`status`, `message`) through the API; it shows on the status
/// pages that list the incident's domain.
pub async fn post_update(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Redirect> {
    let admin = viewer.writer(&form, &state)?;
    let mut body = Map::new();
    body.insert("status".into(), Value::from(form.get("status").unwrap_or_default()));
    body.insert("message".into(), Value::from(form.get("message").unwrap_or_default()));
    let _answer =
        api::incidents::post_update(State(state), admin, Path(id.clone()), JsonObject(body)).await?;
    Ok(Redirect::to(&format!("/console/incidents/{id}")))
}

// ---------------------------------------------------------------------------------------------
// Status pages

#[derive(Debug, Deserialize)]
struct ComponentView {
    domain: Uuid,
    name: String,
    group: Option<String>,
    #[serde(default)]
    reveal: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PageView {
    id: Uuid,
    slug: String,
    title: String,
    description: Option<String>,
    #[serde(default)]
    hostnames: Vec<String>,
    components: Vec<ComponentView>,
    public_path: String,
}

pub async fn status_pages(State(state): State<AppState>, viewer: Viewer) -> Result<Response> {
    let list: Items<PageView> =
        read(api::status_pages::list(State(state.clone()), Auth(viewer.principal.clone())).await?)?;
    Ok(html(&pages::StatusPagesPage {
        layout: viewer.layout("Status pages", "status-pages"),
        pages: list
            .items
            .into_iter()
            .map(|p| pages::PageRow {
                id: p.id.to_string(),
                title: p.title,
                public_path: p.public_path,
                hostnames: p.hostnames,
                components: p.components.len(),
            })
            .collect(),
        can_write: viewer.can_write(),
    }))
}

/// The form of `page` (`None`: a new one) over every domain of the tenant.
async fn page_form(state: &AppState, viewer: &Viewer, page: Option<PageView>) -> Result<Response> {
    let domains = all_domains(state, viewer.principal.tenant_id).await?;
    let chosen: HashMap<Uuid, &ComponentView> =
        page.iter().flat_map(|p| p.components.iter().map(|c| (c.domain, c))).collect();
    let components = domains
        .iter()
        .map(|d| {
            let component = chosen.get(&d.id.0);
            pages::ComponentRow {
                domain: d.id.to_string(),
                label: display_name(d),
                included: component.is_some(),
                name: component.map(|c| c.name.clone()).unwrap_or_else(|| display_name(d)),
                group: component.and_then(|c| c.group.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let title = page.as_ref().map(|p| p.title.clone()).unwrap_or_default();
    Ok(html(&pages::StatusPageForm {
        layout: viewer.layout(
            if title.is_empty() { "New status page".to_owned() } else { title.clone() },
            "status-pages",
        ),
        id: page.as_ref().map(|p| p.id.to_string()),
        public_path: page.as_ref().map(|p| p.public_path.clone()),
        title,
        slug: page.as_ref().map(|p| p.slug.clone()).unwrap_or_default(),
        description: page.as_ref().and_then(|p| p.description.clone()).unwrap_or_default(),
        hostnames: page.as_ref().map(|p| p.hostnames.join("\n")).unwrap_or_default(),
        components,
        can_write: viewer.can_write(),
        csrf: viewer.csrf(),
    }))
}

pub async fn new_status_page(State(state): State<AppState>, viewer: Viewer) -> Result<Response> {
    if !viewer.can_write() {
        return Err(ConsoleError::Forbidden("creating a status page needs an admin token".into()));
    }
    page_form(&state, &viewer, None).await
}

pub async fn status_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let page: PageView =
        read(api::status_pages::show(State(state.clone()), Auth(viewer.principal.clone()), Path(id)).await?)?;
    page_form(&state, &viewer, Some(page)).await
}

/// The API's request body from the posted form; `kept` (the page as stored) keeps what the form
/// does not edit (each component's reveals).
fn page_body(form: &[(String, String)], kept: Option<&PageView>) -> Map<String, Value> {
    let one = |name: &str| {
        form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default()
    };
    let mut body = Map::new();
    body.insert("title".into(), Value::from(one("title")));
    body.insert("slug".into(), Value::from(one("slug")));
    let description = one("description");
    body.insert(
        "description".into(),
        if description.is_empty() { Value::Null } else { Value::from(description) },
    );
    let hostnames: Vec<Value> =
        one("hostnames").lines().map(str::trim).filter(|h| !h.is_empty()).map(Value::from).collect();
    body.insert("hostnames".into(), Value::from(hostnames));
    let components: Vec<Value> = form
        .iter()
        .filter(|(k, _)| k == "include")
        .map(|(_, domain)| {
            let mut component = Map::new();
            component.insert("domain".into(), Value::from(domain.clone()));
            component.insert("name".into(), Value::from(one(&format!("name-{domain}"))));
            let group = one(&format!("group-{domain}"));
            if !group.is_empty() {
                component.insert("group".into(), Value::from(group));
            }
            let reveal = kept
                .and_then(|p| p.components.iter().find(|c| c.domain.to_string() == *domain))
                .map(|c| c.reveal.clone())
                .unwrap_or_default();
            component.insert("reveal".into(), Value::from(reveal));
            Value::Object(component)
        })
        .collect();
    body.insert("components".into(), Value::from(components));
    body
}

pub async fn create_status_page(
    State(state): State<AppState>,
    viewer: Viewer,
    form: RawForm,
) -> Result<Redirect> {
    let admin = viewer.writer(&form.form, &state)?;
    let (_, Json(created)) =
        api::status_pages::create(State(state), admin, JsonObject(page_body(&form.pairs, None))).await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    Ok(Redirect::to(&format!("/console/status-pages/{id}")))
}

pub async fn update_status_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: RawForm,
) -> Result<Redirect> {
    let admin = viewer.writer(&form.form, &state)?;
    let kept: PageView =
        read(api::status_pages::show(State(state.clone()), Auth(admin.0.clone()), Path(id.clone())).await?)?;
    let body = page_body(&form.pairs, Some(&kept));
    let _answer = api::status_pages::update(State(state), admin, Path(id.clone()), JsonObject(body)).await?;
    Ok(Redirect::to(&format!("/console/status-pages/{id}")))
}

pub async fn delete_status_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Redirect> {
    let admin = viewer.writer(&form, &state)?;
    api::status_pages::delete(State(state), admin, Path(id)).await?;
    Ok(Redirect::to("/console/status-pages"))
}

// ---------------------------------------------------------------------------------------------
// Channels and the dead letters

#[derive(Debug, Deserialize)]
struct ChannelView {
    id: Uuid,
    name: String,
    kind: String,
    enabled: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    to: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct NotificationView {
    id: Uuid,
    channel_id: Uuid,
    kind: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub struct ChannelsQuery {
    #[serde(default)]
    tested: Option<String>,
    #[serde(default)]
    retried: Option<String>,
}

pub async fn channels(
    State(state): State<AppState>,
    viewer: Viewer,
    query: std::result::Result<Query<ChannelsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let p = viewer.principal.clone();
    let list: Items<ChannelView> = read(
        api::channels::list(
            State(state.clone()),
            Auth(p.clone()),
            Ok(Query(api::channels::ListQuery { limit: Some(500), cursor: None })),
        )
        .await?,
    )?;
    let names: BTreeMap<Uuid, String> = list.items.iter().map(|c| (c.id, c.name.clone())).collect();
    // The outbox is an admin's view in the API; the console shows what the API would.
    let dead = match crate::api::Admin::check(p.clone()) {
        Ok(admin) => {
            let dead: Items<NotificationView> = read(
                api::channels::list_notifications(
                    State(state.clone()),
                    admin,
                    Ok(Query(api::channels::NotificationQuery {
                        state: Some("dead".into()),
                        limit: Some(200),
                        cursor: None,
                    })),
                )
                .await?,
            )?;
            dead.items
        }
        Err(_) => Vec::new(),
    };
    let flash = match (query.tested, query.retried) {
        (Some(_), _) => Some("A test notification was queued; its delivery shows in the outbox.".to_owned()),
        (_, Some(_)) => Some("The notification was queued again.".to_owned()),
        _ => None,
    };
    Ok(html(&pages::ChannelsPage {
        layout: viewer.layout("Channels", "channels"),
        channels: list
            .items
            .into_iter()
            .map(|c| pages::ChannelRow {
                id: c.id.to_string(),
                target: match (&c.url, &c.to) {
                    (Some(url), _) => url.clone(),
                    (None, Some(Value::Array(to))) => {
                        to.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
                    }
                    _ => String::new(),
                },
                name: c.name,
                kind: c.kind,
                enabled: c.enabled,
            })
            .collect(),
        dead: dead
            .into_iter()
            .map(|n| pages::DeadRow {
                id: n.id.to_string(),
                created_at: pages::time(n.created_at),
                channel: names.get(&n.channel_id).cloned().unwrap_or_else(|| n.channel_id.to_string()),
                kind: n.kind,
                attempts: n.attempts,
                last_error: n.last_error.unwrap_or_default(),
            })
            .collect(),
        flash: if viewer.principal.role == tenants::Role::Admin {
            flash
        } else {
            Some("The dead-letter list is shown to admin tokens only, as in the API.".to_owned())
        },
        can_write: viewer.can_write(),
        csrf: viewer.csrf(),
    }))
}

pub async fn test_channel(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Redirect> {
    let admin = viewer.writer(&form, &state)?;
    let _answer = api::channels::test(State(state), admin, Path(id)).await?;
    Ok(Redirect::to("/console/channels?tested=1"))
}

pub async fn retry_notification(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Redirect> {
    let admin = viewer.writer(&form, &state)?;
    let _answer = api::channels::retry(State(state), admin, Path(id)).await?;
    Ok(Redirect::to("/console/channels?retried=1"))
}

// ---------------------------------------------------------------------------------------------
// Digests

#[derive(Debug, Deserialize)]
struct DigestListed {
    id: Uuid,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    domain_count: i64,
    summary: String,
}

#[derive(Debug, Deserialize)]
struct DigestStored {
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    text: String,
}

fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!("{} to {}", pages::time(start), end.format("%H:%M UTC"))
}

pub async fn digests(State(state): State<AppState>, viewer: Viewer) -> Result<Response> {
    let list: Items<DigestListed> = read(
        api::digests::list(
            State(state.clone()),
            Auth(viewer.principal.clone()),
            params(&[("limit", "100".into())]),
        )
        .await?,
    )?;
    Ok(html(&pages::DigestsPage {
        layout: viewer.layout("Digests", "digests"),
        rows: list
            .items
            .into_iter()
            .map(|d| pages::DigestRow {
                id: d.id.to_string(),
                period: period(d.period_start, d.period_end),
                domain_count: format!(
                    "{} domain{}",
                    d.domain_count,
                    if d.domain_count == 1 { "" } else { "s" }
                ),
                summary: d.summary,
            })
            .collect(),
    }))
}

pub async fn digest(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response> {
    let stored: DigestStored =
        read(api::digests::show(State(state.clone()), Auth(viewer.principal.clone()), Path(id)).await?)?;
    Ok(html(&pages::DigestPage {
        layout: viewer.layout("Digest", "digests"),
        period: period(stored.period_start, stored.period_end),
        text: stored.text,
    }))
}
