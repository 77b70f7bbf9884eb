//! The domain list (live per-region status, filter and search, worst first) and a domain's
//! page (uptime, latency chart, recent results, certificate, incidents); pause and resume.

use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::DomainId;

use super::{all_domains, display_name, html, live_url, params, read, IncidentView, Items, Result};
use crate::api::{self, ApiError, AppState, Auth};
use crate::console::pages::{self, Badge};
use crate::console::viewer::Write;
use crate::console::{chart, ConsoleError, Viewer};
use crate::domains::{store, Domain};

/// Rows a filtered domain list shows at most.
const MAX_ROWS: usize = 1_000;
/// Recent results on a domain's page.
const RECENT_RESULTS: u32 = 20;

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
                "degraded" => 1,
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
        read(api::incidents::status(State(state.clone()), Auth(p.clone()), api::Id(id.clone())).await?)?;
    let mut uptime = Vec::new();
    for window in ["24h", "7d", "30d"] {
        let answer = api::history::uptime(
            State(state.clone()),
            Auth(p.clone()),
            api::Id(id.clone()),
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
            api::Id(id.clone()),
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
            api::Id(id.clone()),
            params(&[("limit", RECENT_RESULTS.to_string())]),
        )
        .await?,
    )?;
    let certificate =
        match api::history::certificate(State(state.clone()), Auth(p.clone()), api::Id(id.clone())).await {
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
                            format!(
                                "invalid: {}",
                                c.validation_error.unwrap_or_else(|| "unknown reason".into())
                            )
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

pub async fn pause(Path(id): Path<String>, write: Write) -> Result<Redirect> {
    let _answer = api::domains::pause(State(write.state), write.admin, api::Id(id.clone())).await?;
    Ok(Redirect::to(&format!("/console/domains/{id}")))
}

pub async fn resume(Path(id): Path<String>, write: Write) -> Result<Redirect> {
    let _answer = api::domains::resume(State(write.state), write.admin, api::Id(id.clone())).await?;
    Ok(Redirect::to(&format!("/console/domains/{id}")))
}
