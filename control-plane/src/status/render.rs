//! A page's three forms, each a pure function of [`Page`]: the HTML (askama template
//! `status.html`, readable without JavaScript), the JSON, and the Atom feed of its incidents.

use askama::Template;
use atom_syndication::{Content, Entry, Feed, FixedDateTime, Link, Person, Text};
use chrono::{DateTime, Utc};

use super::model::{percent, Component, Incident, Page};

/// A group of components as the page lists them (components without a group form one
/// unnamed group, in page order).
pub struct Group<'a> {
    pub name: Option<&'a str>,
    pub components: Vec<&'a Component>,
}

/// The HTML page.
#[derive(Template)]
#[template(path = "status.html")]
pub struct StatusHtml<'a> {
    pub page: &'a Page,
    pub groups: Vec<Group<'a>>,
    /// The path of the page's event stream, resuming after the content's position.
    pub events: String,
    pub feed: String,
    pub json: String,
}

impl<'a> StatusHtml<'a> {
    pub fn new(page: &'a Page) -> Self {
        let mut groups: Vec<Group<'a>> = Vec::new();
        for component in &page.components {
            let name = component.group.as_deref();
            match groups.iter_mut().find(|g| g.name == name) {
                Some(group) => group.components.push(component),
                None => groups.push(Group { name, components: vec![component] }),
            }
        }
        let base = format!("/status/{}", page.slug);
        Self {
            page,
            groups,
            events: format!("{base}/events?after={}", page.last_event_id),
            feed: format!("{base}/feed.atom"),
            json: format!("{base}.json"),
        }
    }

    fn uptime(component: &Component) -> String {
        match component.uptime_percent {
            Some(p) => format!("{} uptime", percent(p)),
            None => "no data".to_owned(),
        }
    }

    fn when(at: &DateTime<Utc>) -> String {
        at.format("%Y-%m-%d %H:%M UTC").to_string()
    }

    fn iso(at: &DateTime<Utc>) -> String {
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn duration(incident: &Incident) -> String {
        let Some(end) = incident.resolved_at else { return String::new() };
        let minutes = (end - incident.opened_at).num_minutes().max(0);
        match minutes {
            0 => "lasted less than a minute".into(),
            m if m < 60 => format!("lasted {m} min"),
            m if m < 24 * 60 => format!("lasted {} h {} min", m / 60, m % 60),
            m => format!("lasted {} d {} h", m / (24 * 60), (m / 60) % 24),
        }
    }
}

/// The JSON form.
pub fn json(page: &Page) -> String {
    serde_json::to_string(page).expect("a page serializes")
}

/// The Atom feed of the page's incidents (active first, then the history), each entry's
/// content the operators' updates, newest first. `base` is the page's absolute URL.
pub fn atom(page: &Page, base: &str) -> String {
    let fixed = |at: DateTime<Utc>| -> FixedDateTime { at.fixed_offset() };
    let entries: Vec<Entry> = page
        .active_incidents
        .iter()
        .chain(&page.incident_history)
        .map(|incident| {
            let updated = incident
                .updates
                .first()
                .map(|u| u.at)
                .into_iter()
                .chain(incident.resolved_at)
                .chain([incident.opened_at])
                .max()
                .unwrap_or(incident.opened_at);
            let mut lines = Vec::new();
            let state = if incident.active { "Ongoing" } else { "Resolved" };
            lines.push(format!("{state}. Opened {}.", incident.opened_at.format("%Y-%m-%d %H:%M UTC")));
            if let Some(resolved) = incident.resolved_at {
                lines.push(format!("Recovered {}.", resolved.format("%Y-%m-%d %H:%M UTC")));
            }
            for update in &incident.updates {
                lines.push(format!(
                    "{} ({}): {}",
                    update.status,
                    update.at.format("%Y-%m-%d %H:%M UTC"),
                    update.message
                ));
            }
            Entry {
                id: format!("urn:uuid:{}", incident.id),
                title: Text::plain(incident.title.clone()),
                updated: fixed(updated),
                published: Some(fixed(incident.opened_at)),
                links: vec![Link {
                    href: format!("{base}#incident-{}", incident.id),
                    rel: "alternate".into(),
                    mime_type: Some("text/html".into()),
                    ..Link::default()
                }],
                content: Some(Content {
                    value: Some(lines.join("\n")),
                    content_type: Some("text".into()),
                    ..Content::default()
                }),
                ..Entry::default()
            }
        })
        .collect();
    let updated = entries.iter().map(|e| e.updated).max().unwrap_or_else(|| fixed(page.generated_at));
    let feed = Feed {
        id: base.to_owned(),
        title: Text::plain(format!("{}: incidents", page.title)),
        updated,
        authors: vec![Person { name: page.title.clone(), ..Person::default() }],
        links: vec![
            Link {
                href: base.to_owned(),
                rel: "alternate".into(),
                mime_type: Some("text/html".into()),
                ..Link::default()
            },
            Link {
                href: format!("{base}/feed.atom"),
                rel: "self".into(),
                mime_type: Some("application/atom+xml".into()),
                ..Link::default()
            },
        ],
        entries,
        ..Feed::default()
    };
    feed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::{build, ComponentRow, History, IncidentRow, Inputs, MaintenanceRow, Update};
    use chrono::TimeZone;
    use uuid::Uuid;

    fn known() -> Page {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let row = |domain, name: &str, group: Option<&str>, consensus: &str| ComponentRow {
            id: Uuid::now_v7(),
            domain_id: domain,
            name: name.into(),
            group_name: group.map(str::to_owned),
            reveal: Vec::new(),
            url: "https://hidden.example.com/".into(),
            paused: false,
            consensus: consensus.into(),
            since: Some(now),
            maintenance: false,
        };
        let mut histories = std::collections::HashMap::new();
        histories.insert(a, History { initial: "up".into(), ..History::default() });
        build(
            &Inputs {
                slug: "acme".into(),
                title: "Acme & Co".into(),
                description: Some("Our services".into()),
                components: vec![row(a, "API", Some("Core"), "up"), row(b, "Web <b>", None, "down")],
                histories,
                incidents: vec![IncidentRow {
                    id: Uuid::now_v7(),
                    domain_id: b,
                    opened_at: now - chrono::Duration::hours(1),
                    resolved_at: None,
                    opened_regions: serde_json::json!([{"region": "ams", "error_kind": "connect"}]),
                    updates: vec![Update {
                        status: "investigating".into(),
                        message: "On it <now>".into(),
                        at: now,
                    }],
                }],
                maintenance: vec![MaintenanceRow {
                    title: "Database <upgrade>".into(),
                    starts_at: now + chrono::Duration::hours(2),
                    ends_at: now + chrono::Duration::hours(3),
                    domain_ids: vec![a],
                }],
                regional_failure_observations: 3,
                ..Inputs::default()
            },
            now,
            "5-0",
        )
    }

    #[test]
    fn the_html_reads_without_script_and_escapes_everything() {
        let page = known();
        let html = StatusHtml::new(&page).render().unwrap();
        for expected in [
            "Acme &#38; Co",
            "Partial outage",
            "Web &#60;b&#62;",
            "On it &#60;now&#62;",
            "Web &#60;b&#62; unavailable",
            "data-events=\"/status/acme/events?after=5-0\"",
            "class=\"group\">Core",
            "100% uptime",
            "Scheduled maintenance",
            "Database &#60;upgrade&#62;",
            "2026-11-20 14:00 UTC</time> to <time datetime=\"2026-11-20T15:00:00Z\">2026-11-20 15:00 UTC</time> · API",
        ] {
            assert!(html.contains(expected), "{expected} missing");
        }
        assert!(!html.contains("hidden.example.com"), "no URL unless revealed");
        assert!(!html.contains("ams"), "no region unless revealed");
        assert!(!html.contains("style=") && !html.contains("<script>"), "no inline style or script");
        assert_eq!(html.matches("tabindex=\"0\"").count(), 2, "one focusable day per bar");
    }

    #[test]
    fn the_json_and_the_feed_carry_the_same_content() {
        let page = known();
        let json: serde_json::Value = serde_json::from_str(&json(&page)).unwrap();
        assert_eq!(json["status"], "partial_outage");
        assert_eq!(json["last_event_id"], "5-0");
        assert_eq!(json["active_incidents"][0]["updates"][0]["message"], "On it <now>");
        assert_eq!(
            json["maintenance"],
            serde_json::json!([{"title": "Database <upgrade>", "starts_at": "2026-11-20T14:00:00Z",
                                "ends_at": "2026-11-20T15:00:00Z", "active": false, "components": ["API"]}])
        );
        let feed: Feed = atom(&page, "https://status.acme.test/status/acme").parse().unwrap();
        assert_eq!(feed.entries().len(), 1);
        assert_eq!(feed.entries()[0].title().as_str(), "Web <b> unavailable");
        assert!(feed.entries()[0].content().unwrap().value().unwrap().contains("investigating"));
    }
}
