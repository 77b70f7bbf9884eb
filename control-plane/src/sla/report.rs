//! A tenant's monthly SLA report, built from rows already loaded (no I/O), and its text and
//! HTML renderings (askama templates `sla/report.txt` and `sla/report.html`).
//!
//! Per domain: its consensus uptime over the month, whether its SLO was met (not breached, see
//! [`super::budget`]; `null` without an SLO), the incidents opened in the month, the mean time
//! to acknowledge (over those acknowledged) and the mean time to resolve (over those resolved).

use askama::Template;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::budget::Budget;
use super::period::Month;
use super::slo::Slo;
use crate::digests::render::duration;
use crate::uptime::ConsensusUptime;

/// Domains listed in the renderings (all are in the JSON content), which keeps a message within
/// what chat services and mail clients take.
pub const MAX_LISTED: usize = 100;

/// An incident's times, for the means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IncidentTimes {
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// What the report knows of one domain.
#[derive(Debug, Clone)]
pub struct DomainInput {
    pub domain_id: Uuid,
    pub name: Option<String>,
    pub url: String,
    pub slo: Option<Slo>,
    /// Its consensus uptime over the month (up to now for the current month).
    pub uptime: ConsensusUptime,
    /// Incidents opened in the month.
    pub incidents: Vec<IncidentTimes>,
}

/// One domain's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SlaDomainReport)]
pub struct DomainReport {
    pub domain_id: Uuid,
    /// Its display name (the URL when it has none).
    pub name: String,
    pub url: String,
    /// The SLO target in percent; `None` without an SLO.
    pub target: Option<f64>,
    /// Consensus uptime over the month; `None` when nothing was monitored.
    pub uptime_percent: Option<f64>,
    pub monitored_s: f64,
    pub down_s: f64,
    /// Whether the SLO was met (for the current month: not breached so far); `None` without an
    /// SLO.
    pub slo_met: Option<bool>,
    /// Incidents opened in the month.
    pub incidents: usize,
    /// Mean seconds from opening to acknowledgement, over the acknowledged ones.
    pub mtta_s: Option<f64>,
    /// Mean seconds from opening to resolution, over the resolved ones.
    pub mttr_s: Option<f64>,
}

/// A tenant's report of one month: the `content` of `sla_reports`, the API's JSON and the
/// webhook's `details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SlaReport)]
pub struct Report {
    pub tenant_id: Uuid,
    /// `2026-11`.
    pub month: String,
    /// The tenant's IANA time zone the month is taken in.
    pub time_zone: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    /// False while the month is still running (figures up to `generated_at`).
    pub complete: bool,
    /// "SLA report 2026-11 (Europe/Berlin): 3 domains, 1 of 2 SLOs met, 4 incidents".
    pub summary: String,
    pub slos: usize,
    pub slos_met: usize,
    pub incidents: usize,
    /// In the order of their names.
    pub domains: Vec<DomainReport>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    (n > 0).then(|| (sum / n as f64 * 1000.0).round() / 1000.0)
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// The report of `month` for `tenant_id` as of `now`.
pub fn build(tenant_id: Uuid, month: &Month, now: DateTime<Utc>, domains: &[DomainInput]) -> Report {
    let (start, end) = (month.start(), month.end());
    let mut lines: Vec<DomainReport> = domains
        .iter()
        .map(|d| {
            let slo_met = d.slo.map(|slo| !Budget::compute(&slo, &d.uptime, start, end, now).breached);
            DomainReport {
                domain_id: d.domain_id,
                name: d.name.clone().unwrap_or_else(|| d.url.clone()),
                url: d.url.clone(),
                target: d.slo.map(|s| s.target),
                uptime_percent: d.uptime.uptime_percent,
                monitored_s: d.uptime.monitored_s,
                down_s: d.uptime.down_s,
                slo_met,
                incidents: d.incidents.len(),
                mtta_s: mean(
                    d.incidents.iter().filter_map(|i| Some(seconds(i.opened_at, i.acknowledged_at?))),
                ),
                mttr_s: mean(d.incidents.iter().filter_map(|i| Some(seconds(i.opened_at, i.resolved_at?)))),
            }
        })
        .collect();
    lines.sort_by(|a, b| a.name.cmp(&b.name).then(a.domain_id.cmp(&b.domain_id)));
    let slos = lines.iter().filter(|d| d.slo_met.is_some()).count();
    let slos_met = lines.iter().filter(|d| d.slo_met == Some(true)).count();
    let incidents = lines.iter().map(|d| d.incidents).sum();
    let time_zone = month.tz.name().to_owned();
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let summary = format!(
        "SLA report {month} ({time_zone}): {}, {slos_met} of {} met, {}",
        plural(lines.len(), "domain", "domains"),
        plural(slos, "SLO", "SLOs"),
        plural(incidents, "incident", "incidents"),
    );
    Report {
        tenant_id,
        month: month.to_string(),
        time_zone,
        period_start: start,
        period_end: end,
        generated_at: now,
        complete: now >= end,
        summary,
        slos,
        slos_met,
        incidents,
        domains: lines,
    }
}

/// `99.953 %`, or `no data`.
fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "no data".into(), |p| format!("{:.3} %", (p * 1000.0).floor() / 1000.0))
}

fn mean_duration(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |s| duration(s.round() as i64))
}

/// A domain's line as the templates show it: every figure already a string.
struct Row {
    name: String,
    url: String,
    uptime: String,
    target: String,
    /// `met`, `missed` or `no SLO`.
    verdict: &'static str,
    down: String,
    incidents: usize,
    mtta: String,
    mttr: String,
}

fn rows(report: &Report) -> Vec<Row> {
    report
        .domains
        .iter()
        .take(MAX_LISTED)
        .map(|d| Row {
            name: d.name.clone(),
            url: d.url.clone(),
            uptime: percent(d.uptime_percent),
            target: d.target.map_or_else(|| "–".into(), |t| format!("{t} %")),
            verdict: match d.slo_met {
                Some(true) => "met",
                Some(false) => "missed",
                None => "no SLO",
            },
            down: duration(d.down_s.round() as i64),
            incidents: d.incidents,
            mtta: mean_duration(d.mtta_s),
            mttr: mean_duration(d.mttr_s),
        })
        .collect()
}

fn local(report: &Report, at: DateTime<Utc>) -> String {
    match super::period::parse_time_zone(&report.time_zone) {
        Some(tz) => at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
        None => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

#[derive(Template)]
#[template(path = "sla/report.txt")]
struct TextReport<'a> {
    report: &'a Report,
    from: String,
    to: String,
    rows: Vec<Row>,
    hidden: usize,
}

#[derive(Template)]
#[template(path = "sla/report.html")]
struct HtmlReport<'a> {
    report: &'a Report,
    from: String,
    to: String,
    rows: Vec<Row>,
    hidden: usize,
}

/// The plain-text rendering (chat channels, the email text part, `format=text`).
pub fn text(report: &Report) -> String {
    TextReport {
        report,
        from: local(report, report.period_start),
        to: local(report, report.period_end),
        rows: rows(report),
        hidden: report.domains.len().saturating_sub(MAX_LISTED),
    }
    .render()
    .expect("the text template renders")
}

/// The HTML rendering (the email HTML part, `format=html`): one table, inline styles only, no
/// external resources; every value escaped.
pub fn html(report: &Report) -> String {
    HtmlReport {
        report,
        from: local(report, report.period_start),
        to: local(report, report.period_end),
        rows: rows(report),
        hidden: report.domains.len().saturating_sub(MAX_LISTED),
    }
    .render()
    .expect("the HTML template renders")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::period::parse_time_zone;
    use crate::sla::slo::SloPeriod;
    use crate::uptime::compute;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    fn incident(opened: &str, ack: Option<&str>, resolved: Option<&str>) -> IncidentTimes {
        IncidentTimes { opened_at: at(opened), acknowledged_at: ack.map(at), resolved_at: resolved.map(at) }
    }

    fn inputs(month: &Month) -> Vec<DomainInput> {
        let (start, end) = (month.start(), month.end());
        let slo = Slo { target: 99.9, period: SloPeriod::Month, budget_alert_fraction: 0.25 };
        vec![
            DomainInput {
                domain_id: Uuid::from_u128(2),
                name: Some("shop <main>".into()),
                url: "https://shop.example/".into(),
                slo: Some(slo),
                // Down 1 h: missed at 99.9 %.
                uptime: compute(
                    "up",
                    &[(at("2026-11-03T10:00:00Z"), "down"), (at("2026-11-03T11:00:00Z"), "up")],
                    &[],
                    start,
                    end,
                ),
                incidents: vec![
                    incident(
                        "2026-11-03T10:00:00Z",
                        Some("2026-11-03T10:04:00Z"),
                        Some("2026-11-03T11:00:00Z"),
                    ),
                    incident("2026-11-20T10:00:00Z", None, Some("2026-11-20T10:10:00Z")),
                    incident("2026-11-29T10:00:00Z", Some("2026-11-29T10:02:00Z"), None),
                ],
            },
            DomainInput {
                domain_id: Uuid::from_u128(1),
                name: None,
                url: "https://api.example/".into(),
                slo: Some(Slo { target: 99.0, ..slo }),
                uptime: compute(
                    "up",
                    &[(at("2026-11-03T10:00:00Z"), "down"), (at("2026-11-03T11:00:00Z"), "up")],
                    &[],
                    start,
                    end,
                ),
                incidents: vec![],
            },
            DomainInput {
                domain_id: Uuid::from_u128(3),
                name: Some("blog".into()),
                url: "https://blog.example/".into(),
                slo: None,
                uptime: compute("unknown", &[], &[], start, end),
                incidents: vec![],
            },
        ]
    }

    #[test]
    fn the_report_counts_slos_incidents_and_the_mean_times() {
        let month = Month::parse("2026-11", parse_time_zone("Europe/Berlin").unwrap()).unwrap();
        let report = build(Uuid::nil(), &month, at("2026-12-01T00:05:00Z"), &inputs(&month));
        assert!(report.complete);
        assert_eq!(
            report.summary,
            "SLA report 2026-11 (Europe/Berlin): 3 domains, 1 of 2 SLOs met, 3 incidents"
        );
        let names: Vec<&str> = report.domains.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["blog", "https://api.example/", "shop <main>"]);
        let shop = &report.domains[2];
        assert_eq!(shop.slo_met, Some(false));
        assert_eq!(shop.down_s, 3600.0);
        assert_eq!(shop.incidents, 3);
        // Acknowledged after 4 and 2 minutes; resolved after 60 and 10 minutes.
        assert_eq!(shop.mtta_s, Some(180.0));
        assert_eq!(shop.mttr_s, Some(2100.0));
        assert_eq!(report.domains[1].slo_met, Some(true), "1 h down is within 99 % of a month");
        assert_eq!((report.domains[0].slo_met, report.domains[0].uptime_percent), (None, None));
        assert_eq!((report.domains[1].mtta_s, report.domains[1].mttr_s), (None, None));
        // The month is Berlin's: it started at 23:00 UTC.
        assert_eq!(report.period_start, at("2026-10-31T23:00:00Z"));
        let running = build(Uuid::nil(), &month, at("2026-11-15T00:00:00Z"), &inputs(&month));
        assert!(!running.complete);
    }

    #[test]
    fn the_renderings_carry_every_figure_and_escape_html() {
        let month = Month::parse("2026-11", parse_time_zone("Europe/Berlin").unwrap()).unwrap();
        let report = build(Uuid::nil(), &month, at("2026-12-01T00:05:00Z"), &inputs(&month));
        let text = text(&report);
        assert!(text.starts_with(&report.summary), "{text}");
        assert!(text.contains("2026-11-01 00:00 to 2026-12-01 00:00 (Europe/Berlin)"), "{text}");
        for expected in [
            "shop <main>",
            "99.861 %",
            "SLO 99.9 % missed",
            "down 1h 00m",
            "incidents 3",
            "MTTA 3m",
            "MTTR 35m",
            "no SLO",
            "no data",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        let html = html(&report);
        assert!(html.contains("shop &#60;main&#62;") || html.contains("shop &lt;main&gt;"), "{html}");
        assert!(!html.contains("<main>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        for expected in ["99.861 %", "missed", "met", "3m", "35m"] {
            assert!(html.contains(expected), "{expected} in {html}");
        }
    }

    #[test]
    fn chat_and_email_channels_send_the_reports_own_renderings() {
        let month = Month::parse("2026-11", parse_time_zone("UTC").unwrap()).unwrap();
        let report = build(Uuid::nil(), &month, at("2026-12-01T00:05:00Z"), &inputs(&month));
        let n = crate::notify::Notification {
            kind: crate::sla::REPORT_KIND.into(),
            tenant_id: Uuid::nil(),
            domain_id: None,
            url: None,
            incident_id: None,
            summary: report.summary.clone(),
            details: serde_json::json!({"text": text(&report), "html": html(&report)}),
            occurred_at: report.period_end,
        };
        let (plain, rich) =
            crate::notify::channels::digest_parts(&n).expect("a report brings its renderings");
        assert_eq!((plain, rich), (text(&report).as_str(), html(&report).as_str()));
        let slack = crate::notify::channels::slack_text(&n, Uuid::nil());
        assert!(slack.starts_with(&report.summary) && slack.contains("```"), "{slack}");
    }
}
