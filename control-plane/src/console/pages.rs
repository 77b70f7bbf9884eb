//! The console's pages as data: one struct per page, rendered by its compiled askama template
//! (`templates/console/`, HTML-escaped by default). Pure: a page is a function of its data,
//! tested by rendering known data; the handlers gather the data.
//!
//! Every state is shown by text and an icon as well as a colour (the `key` is the CSS class).

use askama::Template;
use chrono::{DateTime, Utc};

use super::chart::Chart;

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// The navigation entry of this page.
    pub active: &'static str,
    /// The public demo (no session): a banner, and no write control anywhere.
    pub demo: bool,
    /// A read-only token's session.
    pub read_only: bool,
    /// The session's synchronizer token (for the sign-out form); none in the demo.
    pub csrf: Option<String>,
    /// The live event stream the page's script subscribes to (empty: none).
    pub live_url: String,
}

impl Layout {
    /// This layout with the live stream at `url`.
    pub fn live(self, url: String) -> Self {
        Self { live_url: url, ..self }
    }
}

/// A state as text, icon and CSS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Badge {
    pub key: &'static str,
    pub icon: &'static str,
    pub label: &'static str,
}

impl Badge {
    /// A domain's consensus state (`paused` wins over the last decided state).
    pub fn domain(state: &str, paused: bool) -> Badge {
        if paused {
            return Badge { key: "paused", icon: "⏸", label: "Paused" };
        }
        match state {
            "up" => Badge { key: "up", icon: "✔", label: "Up" },
            "down" => Badge { key: "down", icon: "✖", label: "Down" },
            "degraded" => Badge { key: "degraded", icon: "~", label: "Degraded" },
            _ => Badge { key: "unknown", icon: "?", label: "Unknown" },
        }
    }

    /// A region's standing in a domain's decision (see `consensus::decide::Standing`).
    pub fn standing(standing: &str) -> Badge {
        match standing {
            "ok" => Badge { key: "ok", icon: "✔", label: "passing" },
            "failing" => Badge { key: "failing", icon: "✖", label: "failing" },
            "degraded" => Badge { key: "degraded", icon: "~", label: "slow" },
            "stale" => Badge { key: "stale", icon: "…", label: "stale" },
            "unhealthy" => Badge { key: "unhealthy", icon: "!", label: "agent unhealthy" },
            "saturated" => Badge { key: "saturated", icon: "~", label: "agent saturated" },
            _ => Badge { key: "none", icon: "–", label: "no result" },
        }
    }

    /// An incident's state.
    pub fn incident(state: &str) -> Badge {
        match state {
            "open" => Badge { key: "down", icon: "✖", label: "Open" },
            "acknowledged" => Badge { key: "acked", icon: "✋", label: "Acknowledged" },
            _ => Badge { key: "up", icon: "✔", label: "Resolved" },
        }
    }

    /// One probe result.
    pub fn outcome(ok: bool) -> Badge {
        if ok {
            Badge { key: "up", icon: "✔", label: "ok" }
        } else {
            Badge { key: "down", icon: "✖", label: "failed" }
        }
    }

    /// A certificate's days left.
    pub fn days_left(days: i64) -> (Badge, String) {
        let text = match days {
            d if d < 0 => "expired".to_owned(),
            1 => "1 day left".to_owned(),
            d => format!("{d} days left"),
        };
        let badge = match days {
            d if d < 0 => Badge { key: "down", icon: "✖", label: "expired" },
            d if d < 14 => Badge { key: "warn", icon: "!", label: "expiring soon" },
            _ => Badge { key: "up", icon: "✔", label: "valid" },
        };
        (badge, text)
    }
}

/// A time as the console shows it: `2026-05-09 07:31:02 UTC`.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration in seconds as people read it: `42 s`, `3 min 5 s`, `2 h 4 min`, `3 d 1 h`.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min {} s", s / 60, s % 60),
        3_600..=86_399 => format!("{} h {} min", s / 3_600, (s % 3_600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3_600),
    }
}

#[derive(Debug, Clone)]
pub struct SelectOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

/// One region of a domain: its standing and what it last saw.
#[derive(Debug, Clone)]
pub struct RegionCell {
    pub region: String,
    pub key: &'static str,
    pub icon: &'static str,
    pub label: &'static str,
    /// What the region last saw, e.g. `timeout at 2026-… UTC`.
    pub title: String,
}

impl RegionCell {
    pub fn new(region: String, standing: &str, title: String) -> Self {
        let badge = Badge::standing(standing);
        Self { region, key: badge.key, icon: badge.icon, label: badge.label, title }
    }
}

#[derive(Debug, Clone)]
pub struct DomainRow {
    pub id: String,
    /// The display name, or the URL when it has none.
    pub name: String,
    pub url: String,
    /// Whether the URL is shown under the name (not when the name is the URL).
    pub show_url: bool,
    pub state: Badge,
    pub since: String,
    pub regions: Vec<RegionCell>,
}

#[derive(Debug, Template)]
#[template(path = "console/domains.html")]
pub struct DomainsPage {
    pub layout: Layout,
    pub q: String,
    pub state_options: Vec<SelectOption>,
    pub summary: String,
    pub rows: Vec<DomainRow>,
}

#[derive(Debug, Clone)]
pub struct UptimeRow {
    pub window: &'static str,
    pub consensus: String,
    pub probes: String,
}

#[derive(Debug, Clone)]
pub struct ResultRow {
    pub time: String,
    pub region: String,
    pub outcome: Badge,
    pub error: Option<String>,
    pub status: String,
    pub dns: String,
    pub connect: String,
    pub tls: String,
    pub ttfb: String,
    pub total: String,
}

#[derive(Debug, Clone)]
pub struct CertificateView {
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub days: Badge,
    pub region: String,
    pub observed_at: String,
    /// `valid` or why not.
    pub validity: String,
}

#[derive(Debug, Clone)]
pub struct IncidentLine {
    pub id: String,
    pub state: Badge,
    pub opened_at: String,
    pub duration: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/domain.html")]
pub struct DomainPage {
    pub layout: Layout,
    pub id: String,
    pub name: String,
    pub url: String,
    pub paused: bool,
    pub state: Badge,
    pub since: String,
    pub reason: String,
    pub regions: Vec<RegionCell>,
    pub uptime: Vec<UptimeRow>,
    pub chart: Chart,
    pub results: Vec<ResultRow>,
    pub certificate: Option<CertificateView>,
    pub incidents: Vec<IncidentLine>,
    pub can_write: bool,
    pub csrf: String,
}

#[derive(Debug, Clone)]
pub struct Tab {
    pub label: &'static str,
    pub query: &'static str,
    pub selected: bool,
}

#[derive(Debug, Clone)]
pub struct IncidentRow {
    pub id: String,
    pub domain: String,
    pub state: Badge,
    pub opened_at: String,
    pub duration: String,
    pub can_ack: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/incidents.html")]
pub struct IncidentsPage {
    pub layout: Layout,
    pub tabs: Vec<Tab>,
    pub rows: Vec<IncidentRow>,
    pub can_write: bool,
    pub csrf: String,
}

#[derive(Debug, Clone)]
pub struct UpdateLine {
    pub status: String,
    pub at: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct OpenedRegion {
    pub region: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct EventLine {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub details: String,
}

#[derive(Debug, Template)]
#[template(path = "console/incident.html")]
pub struct IncidentPage {
    pub layout: Layout,
    pub id: String,
    pub domain_id: String,
    pub domain: String,
    pub state: Badge,
    pub opened_at: String,
    pub duration: Option<String>,
    pub ack_note: Option<String>,
    pub opened_regions: Vec<OpenedRegion>,
    pub events: Vec<EventLine>,
    pub updates: Vec<UpdateLine>,
    pub can_write: bool,
    pub can_ack: bool,
    pub can_post_updates: bool,
    pub csrf: String,
}

#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// The webhook or Slack URL, or the email recipients (never a secret).
    pub target: String,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct DeadRow {
    pub id: String,
    pub created_at: String,
    pub channel: String,
    pub kind: String,
    pub attempts: i64,
    pub last_error: String,
}

#[derive(Debug, Template)]
#[template(path = "console/channels.html")]
pub struct ChannelsPage {
    pub layout: Layout,
    pub channels: Vec<ChannelRow>,
    pub dead: Vec<DeadRow>,
    pub flash: Option<String>,
    pub can_write: bool,
    pub csrf: String,
}

#[derive(Debug, Clone)]
pub struct DigestRow {
    pub id: String,
    pub period: String,
    pub domain_count: String,
    pub summary: String,
}

#[derive(Debug, Template)]
#[template(path = "console/digests.html")]
pub struct DigestsPage {
    pub layout: Layout,
    pub rows: Vec<DigestRow>,
}

#[derive(Debug, Template)]
#[template(path = "console/digest.html")]
pub struct DigestPage {
    pub layout: Layout,
    pub period: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct PageRow {
    pub id: String,
    pub title: String,
    pub public_path: String,
    pub hostnames: Vec<String>,
    pub components: usize,
}

#[derive(Debug, Template)]
#[template(path = "console/status_pages.html")]
pub struct StatusPagesPage {
    pub layout: Layout,
    pub pages: Vec<PageRow>,
    pub can_write: bool,
}

/// One of the tenant's domains in a status page's form: on the page or not.
#[derive(Debug, Clone)]
pub struct ComponentRow {
    pub domain: String,
    /// The domain as the operator knows it (its name or URL).
    pub label: String,
    pub included: bool,
    /// The public name.
    pub name: String,
    pub group: String,
}

/// A status page's settings: a form for an admin, a read-only view otherwise.
#[derive(Debug, Template)]
#[template(path = "console/status_page.html")]
pub struct StatusPageForm {
    pub layout: Layout,
    /// `None` for a new page.
    pub id: Option<String>,
    pub public_path: Option<String>,
    pub title: String,
    pub slug: String,
    pub description: String,
    /// One per line.
    pub hostnames: String,
    pub components: Vec<ComponentRow>,
    pub can_write: bool,
    pub csrf: String,
}

#[derive(Debug, Template)]
#[template(path = "console/sign_in.html")]
pub struct SignInPage {
    pub csrf: String,
    pub error: Option<String>,
    /// Whether the public demo is on (a link to it).
    pub demo: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>";

    fn layout(demo: bool, read_only: bool) -> Layout {
        Layout {
            title: EVIL.into(),
            active: "domains",
            demo,
            read_only,
            csrf: (!demo).then(|| "csrf-token".to_owned()),
            live_url: "/console/events".into(),
        }
    }

    /// What every rendered page must satisfy: the hostile text only escaped, no inline script or
    /// style, nothing from another origin.
    fn check(html: &str) {
        assert!(!html.contains(EVIL), "unescaped: {html}");
        assert!(!html.contains("style="), "inline style: {html}");
        assert!(
            !html.contains("http://") && !html.contains("https://") || html.contains("example.com"),
            "{html}"
        );
        for (i, _) in html.match_indices("<script") {
            assert!(html[i..].starts_with("<script src=\"/"), "inline or foreign script: {html}");
        }
    }

    fn domain_row() -> DomainRow {
        DomainRow {
            id: "0190".into(),
            name: EVIL.into(),
            url: "https://example.com/".into(),
            show_url: true,
            state: Badge::domain("down", false),
            since: "2026-05-09 07:00:00 UTC".into(),
            regions: vec![
                RegionCell::new("ams".into(), "failing", "status at 2026-05-09 07:00:00 UTC".into()),
                RegionCell::new("sin".into(), "ok", "passed".into()),
            ],
        }
    }

    #[test]
    fn the_domain_list_escapes_names_and_shows_states_as_text() {
        let page = DomainsPage {
            layout: layout(false, false),
            q: EVIL.into(),
            state_options: vec![SelectOption { value: "down", label: "Down", selected: true }],
            summary: "1 of 2 domains match".into(),
            rows: vec![domain_row()],
        };
        let html = page.render().unwrap();
        check(&html);
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{html}");
        assert!(html.contains("data-domain=\"0190\""));
        assert!(html.contains("✖</span> <span class=\"label\">Down</span>"), "{html}");
        assert!(html.contains("data-region=\"ams\""));
        assert!(html.contains("<option value=\"down\" selected>Down</option>"), "{html}");
        assert!(html.contains("Sign out"), "a session can sign out");
        assert!(!html.contains("class=\"demo-banner\""));
    }

    #[test]
    fn the_demo_is_marked_and_has_no_form() {
        let page = DomainsPage {
            layout: layout(true, true),
            q: String::new(),
            state_options: Vec::new(),
            summary: String::new(),
            rows: vec![domain_row()],
        };
        let html = page.render().unwrap();
        check(&html);
        assert!(html.contains("class=\"demo-banner\""), "{html}");
        assert!(html.contains("Demo · read-only"));
        assert!(!html.contains("method=\"post\""), "no form in the demo: {html}");
    }

    fn domain_page(can_write: bool) -> DomainPage {
        DomainPage {
            layout: layout(false, !can_write),
            id: "0190".into(),
            name: EVIL.into(),
            url: "https://example.com/".into(),
            paused: false,
            state: Badge::domain("up", false),
            since: "2026-05-09 07:00:00 UTC".into(),
            reason: "3 of 3 regions pass (quorum 2)".into(),
            regions: domain_row().regions,
            uptime: vec![UptimeRow { window: "24h", consensus: "99.000 %".into(), probes: "99 %".into() }],
            chart: super::super::chart::latency(&[("ams".into(), [1_000, 2_000, 3_000])]),
            results: vec![ResultRow {
                time: "t".into(),
                region: "ams".into(),
                outcome: Badge::outcome(false),
                error: Some(EVIL.into()),
                status: "503".into(),
                dns: "1 ms".into(),
                connect: "2 ms".into(),
                tls: "—".into(),
                ttfb: "4 ms".into(),
                total: "5 ms".into(),
            }],
            certificate: Some(CertificateView {
                subject: EVIL.into(),
                issuer: "CN=issuer".into(),
                not_after: "2026-06-01".into(),
                days: Badge::days_left(20).0,
                region: "ams".into(),
                observed_at: "t".into(),
                validity: "valid".into(),
            }),
            incidents: vec![IncidentLine {
                id: "0191".into(),
                state: Badge::incident("open"),
                opened_at: "t".into(),
                duration: None,
            }],
            can_write,
            csrf: "csrf-token".into(),
        }
    }

    #[test]
    fn a_domain_page_has_its_chart_timings_certificate_and_incidents() {
        let html = domain_page(true).render().unwrap();
        check(&html);
        assert!(html.contains("<svg viewBox=\"0 0 640 "), "{html}");
        assert!(html.contains("class=\"lat-bar p99\""));
        assert!(html.contains("ams: p50 1.0 ms, p95 2.0 ms, p99 3.0 ms"), "{html}");
        assert!(html.contains("<td>4 ms</td>"), "first byte: {html}");
        assert!(html.contains("20 days") || html.contains("valid"), "{html}");
        assert!(html.contains("/console/incidents/0191"));
        assert!(html.contains("action=\"/console/domains/0190/pause\""), "{html}");
        assert!(html.contains("name=\"csrf\" value=\"csrf-token\""));
    }

    #[test]
    fn a_read_only_domain_page_has_no_write_control() {
        let html = domain_page(false).render().unwrap();
        check(&html);
        assert!(!html.contains("class=\"inline write\"") && !html.contains("/pause"), "{html}");
        assert!(html.contains("Read-only token"));
    }

    #[test]
    fn incident_pages_render_with_and_without_write_controls() {
        for can_write in [true, false] {
            let list = IncidentsPage {
                layout: layout(false, !can_write),
                tabs: vec![Tab { label: "Open", query: "", selected: true }],
                rows: vec![IncidentRow {
                    id: "0191".into(),
                    domain: EVIL.into(),
                    state: Badge::incident("open"),
                    opened_at: "t".into(),
                    duration: "5 s so far".into(),
                    can_ack: true,
                }],
                can_write,
                csrf: "csrf-token".into(),
            };
            let html = list.render().unwrap();
            check(&html);
            assert_eq!(html.contains("/console/incidents/0191/ack"), can_write, "{html}");
            let detail = IncidentPage {
                layout: layout(false, !can_write),
                id: "0191".into(),
                domain_id: "0190".into(),
                domain: EVIL.into(),
                state: Badge::incident("open"),
                opened_at: "t".into(),
                duration: None,
                ack_note: Some(EVIL.into()),
                opened_regions: vec![OpenedRegion { region: "ams".into(), detail: EVIL.into() }],
                events: vec![EventLine {
                    at: "t".into(),
                    kind: "opened".into(),
                    actor: "system".into(),
                    details: EVIL.into(),
                }],
                updates: vec![UpdateLine {
                    status: "investigating".into(),
                    at: "t".into(),
                    message: EVIL.into(),
                }],
                can_write,
                can_ack: true,
                can_post_updates: true,
                csrf: "csrf-token".into(),
            };
            let html = detail.render().unwrap();
            check(&html);
            assert_eq!(html.contains("id=\"ack-form\""), can_write);
            assert_eq!(html.contains("id=\"update-form\""), can_write);
            assert!(html.contains("investigating"));
        }
    }

    #[test]
    fn status_page_lists_and_forms_render_for_admins_and_readers() {
        let list = StatusPagesPage {
            layout: layout(false, false),
            pages: vec![PageRow {
                id: "p1".into(),
                title: EVIL.into(),
                public_path: "/status/acme".into(),
                hostnames: vec!["status.example.com".into()],
                components: 2,
            }],
            can_write: true,
        };
        let html = list.render().unwrap();
        check(&html);
        assert!(html.contains("/console/status-pages/new") && html.contains("href=\"/status/acme\""));
        for can_write in [true, false] {
            let form = StatusPageForm {
                layout: layout(false, !can_write),
                id: Some("p1".into()),
                public_path: Some("/status/acme".into()),
                title: EVIL.into(),
                slug: "acme".into(),
                description: EVIL.into(),
                hostnames: "status.example.com".into(),
                components: vec![ComponentRow {
                    domain: "d1".into(),
                    label: EVIL.into(),
                    included: true,
                    name: EVIL.into(),
                    group: "API".into(),
                }],
                can_write,
                csrf: "csrf-token".into(),
            };
            let html = form.render().unwrap();
            check(&html);
            assert_eq!(html.contains("id=\"page-form\""), can_write, "{html}");
            assert_eq!(html.contains("name=\"include\" value=\"d1\" checked"), can_write);
            assert!(html.contains("(API)") || can_write);
        }
    }

    #[test]
    fn channels_digests_sign_in_and_errors_render() {
        let channels = ChannelsPage {
            layout: layout(false, false),
            channels: vec![ChannelRow {
                id: "c1".into(),
                name: EVIL.into(),
                kind: "webhook".into(),
                target: "https://example.com/hook".into(),
                enabled: true,
            }],
            dead: vec![DeadRow {
                id: "n1".into(),
                created_at: "t".into(),
                channel: EVIL.into(),
                kind: "incident_opened".into(),
                attempts: 7,
                last_error: EVIL.into(),
            }],
            flash: None,
            can_write: true,
            csrf: "csrf-token".into(),
        };
        let html = channels.render().unwrap();
        check(&html);
        assert!(
            html.contains("/console/channels/c1/test") && html.contains("/console/notifications/n1/retry")
        );
        let digests = DigestsPage {
            layout: layout(false, true),
            rows: vec![DigestRow {
                id: "d1".into(),
                period: "p".into(),
                domain_count: "2 domains".into(),
                summary: EVIL.into(),
            }],
        };
        check(&digests.render().unwrap());
        let digest = DigestPage { layout: layout(false, true), period: "p".into(), text: EVIL.into() };
        check(&digest.render().unwrap());
        let sign_in = SignInPage { csrf: "x".into(), error: Some(EVIL.into()), demo: true };
        let html = sign_in.render().unwrap();
        check(&html);
        assert!(html.contains("type=\"password\"") && html.contains("name=\"csrf\" value=\"x\""));
        let error = crate::web::ErrorPage { title: "Not allowed", message: EVIL };
        check(&error.render().unwrap());
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(42), "42 s");
        assert_eq!(span(185), "3 min 5 s");
        assert_eq!(span(7_440), "2 h 4 min");
        assert_eq!(span(90_000), "1 d 1 h");
        assert_eq!(span(-5), "0 s");
    }

    #[test]
    fn every_state_has_text_and_an_icon() {
        for badge in [
            Badge::domain("up", false),
            Badge::domain("down", false),
            Badge::domain("unknown", false),
            Badge::domain("down", true),
            Badge::standing("ok"),
            Badge::standing("failing"),
            Badge::standing("no_observation"),
            Badge::incident("open"),
            Badge::incident("acknowledged"),
            Badge::incident("resolved"),
            Badge::outcome(false),
            Badge::days_left(3).0,
        ] {
            assert!(!badge.icon.is_empty() && !badge.label.is_empty(), "{badge:?}");
        }
        assert_eq!(Badge::domain("down", true).label, "Paused");
        assert_eq!(Badge::days_left(-1).1, "expired");
        assert_eq!(Badge::days_left(1).1, "1 day left");
    }
}
