//! A digest as plain text (Slack, the email text part) and as HTML (the email HTML part): the
//! summary line, then one block per domain with its figures, its timeline and its transitions.
//! The HTML needs no external resources (the timeline is a row of coloured table cells) and
//! escapes every value.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::build::{
    period_label, Digest, DomainDigest, SLOT_DOWN, SLOT_FUTURE, STOPPED_DELETED, STOPPED_PAUSED,
};
use crate::notify::channels::escape;

/// Transitions listed per domain; the rest are counted (all are in the JSON content).
pub const MAX_LISTED: usize = 30;
/// Domains shown in the renderings (most state changes first), which keeps a message within
/// what Slack and mail clients take; all are in the JSON content.
pub const MAX_DOMAINS: usize = 50;

fn more_domains(digest: &Digest) -> Option<String> {
    let hidden = digest.domains.len().saturating_sub(MAX_DOMAINS);
    (hidden > 0).then(|| format!("… and {hidden} more domains: the full digest is at /v1/digests"))
}

const TEXT_DOWN: char = '█';
const TEXT_UP: char = '▁';
const TEXT_FUTURE: char = ' ';

const COLOUR_DOWN: &str = "#d93025";
const COLOUR_UP: &str = "#34a853";
const COLOUR_FUTURE: &str = "#dadce0";

/// The timeline with block characters: `▁▁█▁██▁…`.
pub fn text_timeline(timeline: &str) -> String {
    timeline
        .chars()
        .map(|c| match c {
            SLOT_DOWN => TEXT_DOWN,
            SLOT_FUTURE => TEXT_FUTURE,
            _ => TEXT_UP,
        })
        .collect()
}

/// `1h 02m`, `23m 10s`, `45s`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// The length of a timeline slot: `1m`, `30s`, `500ms`.
fn slot_label(slot_seconds: f64) -> String {
    if slot_seconds >= 1.0 && slot_seconds.fract() == 0.0 {
        duration(slot_seconds as i64)
    } else {
        format!("{}ms", (slot_seconds * 1000.0).round() as i64)
    }
}

/// A time of day within the period, or with its date when outside it.
fn when(t: DateTime<Utc>, digest: &Digest) -> String {
    if t >= digest.period_start && t < digest.period_end && digest.period_start.date_naive() == t.date_naive()
    {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

fn elapsed_seconds(digest: &Digest) -> i64 {
    (digest.period_end - digest.period_start).num_seconds().max(1)
}

/// `ams (connect), iad (status 503)`.
fn regions_of(regions: &Value) -> String {
    let parts: Vec<String> = regions
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let name = entry.get("region").and_then(Value::as_str).unwrap_or("?");
            let kind = entry.get("error_kind").and_then(Value::as_str);
            let code = entry.get("status_code").and_then(Value::as_i64);
            // A passing region's status code says nothing; a failing one's error does.
            match (kind, code) {
                (None, _) => name.to_owned(),
                (Some("status"), Some(code)) => format!("{name} (HTTP {code})"),
                (Some(kind), Some(code)) => format!("{name} ({kind}, HTTP {code})"),
                (Some(kind), None) => format!("{name} ({kind})"),
            }
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The figures of a domain as (label, value) lines, shared by both renderings.
fn figures(d: &DomainDigest, digest: &Digest) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    let changes = match (d.first_transition_at, d.last_transition_at) {
        (Some(first), Some(last)) => {
            format!("{} (first {}, last {})", d.transition_count, when(first, digest), when(last, digest))
        }
        _ => "none in this period".into(),
    };
    lines.push(("state changes", changes));
    let share = d.down_seconds * 100 / elapsed_seconds(digest);
    lines.push(("down", format!("{} ({share}% of the period)", duration(d.down_seconds))));
    let mut regions = if d.regions.is_empty() { "-".to_owned() } else { d.regions.join(", ") };
    if !d.error_kinds.is_empty() {
        regions.push_str(&format!(" ({})", d.error_kinds.join(", ")));
    }
    lines.push(("regions", regions));
    let flap = if d.still_flapping {
        format!("since {}, still flapping", when(d.flap_entered_at, digest))
    } else {
        let left = d.flap_left_at.map_or_else(|| "?".into(), |t| when(t, digest));
        let entered = when(d.flap_entered_at, digest);
        match d.settled.as_deref() {
            // Monitoring stopped: not a state the domain settled in.
            Some(STOPPED_PAUSED) => format!("from {entered} to {left}, when monitoring was paused"),
            Some(STOPPED_DELETED) => format!("from {entered} to {left}, when the domain was deleted"),
            Some(settled) => format!("from {entered} to {left}, settled {settled}"),
            None => format!("from {entered} to {left}"),
        }
    };
    lines.push(("flap mode", flap));
    lines.push((
        "state",
        format!("{} at the start, {} at the end, {} now", d.state_at_start, d.state_at_end, d.current_state),
    ));
    if d.deleted {
        lines.push(("note", "the domain has been deleted".into()));
    } else if d.current_state == STOPPED_PAUSED {
        lines.push(("note", "monitoring of the domain is paused".into()));
    }
    lines
}

/// The plain-text rendering.
pub fn text(digest: &Digest) -> String {
    let mut out = digest.summary.clone();
    out.push('\n');
    out.push_str(&format!(
        "Period {} to {} UTC. Timeline: one mark per {}, {TEXT_DOWN} down, {TEXT_UP} up.\n",
        digest.period_start.format("%Y-%m-%d %H:%M:%S"),
        digest.period_end.format("%Y-%m-%d %H:%M:%S"),
        slot_label(digest.slot_seconds),
    ));
    let label = period_label(digest.period_start, digest.period_end);
    let (from, to) = label.split_once('–').unwrap_or((&label, ""));
    for d in digest.domains.iter().take(MAX_DOMAINS) {
        out.push('\n');
        out.push_str(&d.url);
        out.push('\n');
        for (key, value) in figures(d, digest) {
            out.push_str(&format!("  {key:<15}{value}\n"));
        }
        out.push_str(&format!("  {:<15}{from} {} {to}\n", "timeline", text_timeline(&d.timeline)));
        for t in d.transitions.iter().take(MAX_LISTED) {
            out.push_str(&format!(
                "  {}  {:>7} → {:<5} {}\n",
                when(t.at, digest),
                t.from,
                t.to,
                regions_of(&t.regions)
            ));
        }
        if d.transitions.len() > MAX_LISTED {
            out.push_str(&format!("  … and {} more\n", d.transitions.len() - MAX_LISTED));
        }
    }
    if let Some(more) = more_domains(digest) {
        out.push_str(&format!("\n{more}\n"));
    }
    out
}

fn timeline_cells(d: &DomainDigest, digest: &Digest) -> String {
    let slot_ms = (digest.slot_seconds * 1000.0) as i64;
    let mut html = String::from(
        "<table role=\"presentation\" cellspacing=\"0\" cellpadding=\"0\" style=\"border-collapse:collapse\"><tr>",
    );
    for (i, c) in d.timeline.chars().enumerate() {
        let (colour, state) = match c {
            SLOT_DOWN => (COLOUR_DOWN, "down"),
            SLOT_FUTURE => (COLOUR_FUTURE, "not yet"),
            _ => (COLOUR_UP, "up"),
        };
        let at = digest.period_start + chrono::Duration::milliseconds(slot_ms * i as i64);
        html.push_str(&format!(
            "<td title=\"{} {state}\" style=\"width:6px;height:14px;padding:0;border-right:1px solid #ffffff;background:{colour}\"></td>",
            at.format("%H:%M:%S")
        ));
    }
    html.push_str("</tr></table>");
    html
}

/// The HTML rendering: one table per domain.
pub fn html(digest: &Digest) -> String {
    let mut out = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:14px\">",
    );
    out.push_str(&format!("<h2>{}</h2>", escape(&digest.summary)));
    out.push_str(&format!(
        "<p>Period {} to {} UTC. Timeline: one cell per {}, <span style=\"color:{COLOUR_DOWN}\">red</span> down, \
         <span style=\"color:{COLOUR_UP}\">green</span> up.</p>",
        escape(&digest.period_start.format("%Y-%m-%d %H:%M:%S").to_string()),
        escape(&digest.period_end.format("%Y-%m-%d %H:%M:%S").to_string()),
        escape(&slot_label(digest.slot_seconds)),
    ));
    let th = "style=\"text-align:left;vertical-align:top;padding:4px 12px 4px 0;white-space:nowrap\"";
    for d in digest.domains.iter().take(MAX_DOMAINS) {
        out.push_str(
            "<table cellspacing=\"0\" cellpadding=\"0\" style=\"border-collapse:collapse;margin:16px 0;\
             border-top:1px solid #dadce0\">",
        );
        out.push_str(&format!(
            "<tr><th colspan=\"2\" style=\"text-align:left;padding:8px 0;font-size:15px\">{}</th></tr>",
            escape(&d.url)
        ));
        for (key, value) in figures(d, digest) {
            out.push_str(&format!("<tr><th {th}>{}</th><td>{}</td></tr>", escape(key), escape(&value)));
        }
        out.push_str(&format!("<tr><th {th}>timeline</th><td>{}</td></tr>", timeline_cells(d, digest)));
        if !d.transitions.is_empty() {
            out.push_str(&format!(
                "<tr><th {th}>transitions</th><td><table cellspacing=\"0\" cellpadding=\"2\">"
            ));
            for t in d.transitions.iter().take(MAX_LISTED) {
                let colour = if t.to == "down" { COLOUR_DOWN } else { COLOUR_UP };
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{} &rarr; <span style=\"color:{colour}\">{}</span></td><td>{}</td></tr>",
                    escape(&when(t.at, digest)),
                    escape(&t.from),
                    escape(&t.to),
                    escape(&regions_of(&t.regions)),
                ));
            }
            if d.transitions.len() > MAX_LISTED {
                out.push_str(&format!(
                    "<tr><td colspan=\"3\">&hellip; and {} more</td></tr>",
                    d.transitions.len() - MAX_LISTED
                ));
            }
            out.push_str("</table></td></tr>");
        }
        out.push_str("</table>");
    }
    if let Some(more) = more_domains(digest) {
        out.push_str(&format!("<p>{}</p>", escape(&more)));
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::digests::build::tests::{at, span, tr};
    use crate::digests::build::{build, DomainFacts, Input, TransitionRow};

    /// A realistic hour: an API flapping on connection errors from two regions, a checkout page
    /// answering 503 now and then, and a status page that settled early in the hour.
    pub fn example() -> Digest {
        let tenant = Uuid::parse_str("0195a3c4-7d2e-7a10-9f00-000000000001").unwrap();
        let api = Uuid::parse_str("0195a3c4-7d2e-7a10-9f00-0000000000a1").unwrap();
        let shop = Uuid::parse_str("0195a3c4-7d2e-7a10-9f00-0000000000b2").unwrap();
        let status = Uuid::parse_str("0195a3c4-7d2e-7a10-9f00-0000000000c3").unwrap();
        let times = [
            ("10:03:12", "up", "down"),
            ("10:05:40", "down", "up"),
            ("10:11:02", "up", "down"),
            ("10:12:30", "down", "up"),
            ("10:18:45", "up", "down"),
            ("10:24:10", "down", "up"),
            ("10:31:00", "up", "down"),
            ("10:33:20", "down", "up"),
            ("10:41:55", "up", "down"),
            ("10:52:05", "down", "up"),
            ("10:55:30", "up", "down"),
        ];
        let mut transitions: Vec<TransitionRow> = times
            .iter()
            .map(|(t, from, to)| tr(api, &format!("2026-03-14T{t}Z"), from, to, &["ams", "iad"]))
            .collect();
        let shop_times = [
            ("10:07:00", "up", "down"),
            ("10:09:30", "down", "up"),
            ("10:27:15", "up", "down"),
            ("10:29:00", "down", "up"),
        ];
        for (t, from, to) in shop_times {
            let mut row = tr(shop, &format!("2026-03-14T{t}Z"), from, to, &["sin"]);
            if to == "down" {
                row.regions = json!([
                    {"region": "sin", "error_kind": "status", "status_code": 503, "observed_at": null},
                    {"region": "iad", "error_kind": "status", "status_code": 503, "observed_at": null}
                ]);
            }
            transitions.push(row);
        }
        transitions.push(tr(status, "2026-03-14T10:02:00Z", "down", "up", &["ams", "iad", "sin"]));
        let mut settled = span(status, "2026-03-14T09:12:40Z", Some("2026-03-14T10:17:00Z"));
        settled.settled = Some("up".into());
        let flaps =
            vec![span(api, "2026-03-14T09:48:20Z", None), span(shop, "2026-03-14T10:09:30Z", None), settled];
        let facts = HashMap::from([
            (
                api,
                DomainFacts {
                    url: Some("https://api.example.com/health".into()),
                    state_before: Some("up".into()),
                    current_state: Some("down".into()),
                },
            ),
            (
                shop,
                DomainFacts {
                    url: Some("https://shop.example.com/checkout".into()),
                    state_before: Some("up".into()),
                    current_state: Some("up".into()),
                },
            ),
            (
                status,
                DomainFacts {
                    url: Some("https://status.example.com/".into()),
                    state_before: Some("down".into()),
                    current_state: Some("up".into()),
                },
            ),
        ]);
        build(&Input {
            tenant_id: tenant,
            start: at("2026-03-14T10:00:00Z"),
            end: at("2026-03-14T11:00:00Z"),
            now: at("2026-03-14T11:00:04Z"),
            flaps: &flaps,
            transitions: &transitions,
            facts: &facts,
        })
        .unwrap()
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(23 * 60 + 5), "23m 05s");
        assert_eq!(duration(3600 + 2 * 60 + 9), "1h 02m");
        assert_eq!(duration(60), "1m");
        assert_eq!(slot_label(60.0), "1m");
        assert_eq!(slot_label(0.5), "500ms");
        assert_eq!(slot_label(1.5), "1500ms");
    }

    #[test]
    fn the_text_has_the_summary_figures_and_timeline_of_each_domain() {
        let digest = example();
        let text = text(&digest);
        // `cargo test -p control-plane --lib example_digest -- --nocapture` prints it (README).
        println!("{text}");
        assert!(
            text.starts_with("Flap digest 10:00–11:00 UTC: 3 domains flapped, 16 state changes\n"),
            "{text}"
        );
        let api = text.find("https://api.example.com/health").unwrap();
        let shop = text.find("https://shop.example.com/checkout").unwrap();
        let status = text.find("https://status.example.com/").unwrap();
        assert!(api < shop && shop < status, "most state changes first");
        assert!(text.contains("state changes  11 (first 10:03:12, last 10:55:30)"), "{text}");
        // api: down 10:03:12–10:05:40, 10:11:02–10:12:30, 10:18:45–10:24:10, 10:31:00–10:33:20,
        // 10:41:55–10:52:05, 10:55:30–11:00:00 = 148+88+325+140+610+270 = 1581 s.
        assert!(text.contains("down           26m 21s (43% of the period)"), "{text}");
        assert!(text.contains("regions        ams, iad (connect)"), "{text}");
        assert!(text.contains("flap mode      since 2026-03-14 09:48:20, still flapping"), "{text}");
        assert!(text.contains("10:52:05     down → up    ams, iad"), "{text}");
        assert!(text.contains("sin (HTTP 503), iad (HTTP 503)"), "{text}");
        assert!(text.contains("settled up"), "{text}");
        let line = text.lines().find(|l| l.contains("timeline") && l.contains('█')).unwrap();
        assert_eq!(line.chars().filter(|c| *c == '█' || *c == '▁').count(), 60, "{line}");
        assert!(line.trim_start().starts_with("timeline       10:00 ▁▁▁"), "{line}");
        assert!(line.ends_with(" 11:00"), "{line}");
    }

    #[test]
    fn long_transition_lists_are_cut_in_the_renderings() {
        let d = Uuid::new_v4();
        let transitions: Vec<TransitionRow> = (0..40)
            .map(|i| {
                let (from, to) = if i % 2 == 0 { ("up", "down") } else { ("down", "up") };
                tr(d, &format!("2026-03-14T10:{i:02}:00Z"), from, to, &["ams"])
            })
            .collect();
        let flaps = [span(d, "2026-03-14T09:00:00Z", None)];
        let facts = HashMap::new();
        let digest = build(&Input {
            tenant_id: Uuid::nil(),
            start: at("2026-03-14T10:00:00Z"),
            end: at("2026-03-14T11:00:00Z"),
            now: at("2026-03-14T11:00:00Z"),
            flaps: &flaps,
            transitions: &transitions,
            facts: &facts,
        })
        .unwrap();
        assert_eq!(digest.domains[0].transitions.len(), 40);
        assert!(text(&digest).contains("… and 10 more"));
        assert!(html(&digest).contains("&hellip; and 10 more"));
        assert!(!text(&digest).contains("more domains"));

        let mut many = digest.clone();
        many.domains = (0..MAX_DOMAINS + 3).map(|_| digest.domains[0].clone()).collect();
        let (text, html) = (text(&many), html(&many));
        assert_eq!(text.matches("state changes  40").count(), MAX_DOMAINS);
        assert!(text.ends_with("… and 3 more domains: the full digest is at /v1/digests\n"), "{text}");
        assert!(html.contains("… and 3 more domains"));
    }

    #[test]
    fn the_html_is_a_table_per_domain_with_a_cell_timeline_and_escapes_everything() {
        let mut digest = example();
        digest.domains[0].url = "https://evil.example/<script>alert(\"x\")</script>?a=1&b='2'".into();
        digest.domains[0].transitions[0].regions = json!([{"region": "<b>ams</b>", "error_kind": "a&b"}]);
        let html = html(&digest);
        assert!(html.contains("<h2>Flap digest 10:00–11:00 UTC: 3 domains flapped, 16 state changes</h2>"));
        assert!(!html.contains("<script>") && !html.contains("<b>ams"), "{html}");
        assert!(html.contains(
            "https://evil.example/&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;?a=1&amp;b=&#39;2&#39;"
        ));
        assert!(html.contains("&lt;b&gt;ams&lt;/b&gt; (a&amp;b)"), "{html}");
        // One table per domain plus the timeline and transitions tables inside.
        assert_eq!(html.matches("border-top:1px solid #dadce0").count(), 3);
        let cells = html.matches("background:").count();
        assert_eq!(cells, 3 * 60, "a cell per slot per domain");
        assert!(html.contains(&format!("background:{COLOUR_DOWN}")));
        assert!(!html.contains("<img") && !html.contains("src="), "no external resources");
    }

    #[test]
    fn a_paused_domain_reads_as_paused_not_as_down() {
        let d = Uuid::new_v4();
        let transitions = [tr(d, "2026-03-14T10:10:00Z", "up", "down", &["ams"])];
        let mut paused = span(d, "2026-03-14T09:30:00Z", Some("2026-03-14T10:20:00Z"));
        paused.settled = Some("paused".into());
        let flaps = [paused];
        let facts = HashMap::from([(
            d,
            DomainFacts {
                url: Some("https://p.example/".into()),
                state_before: Some("up".into()),
                current_state: None,
            },
        )]);
        let digest = build(&Input {
            tenant_id: Uuid::nil(),
            start: at("2026-03-14T10:00:00Z"),
            end: at("2026-03-14T11:00:00Z"),
            now: at("2026-03-14T11:00:05Z"),
            flaps: &flaps,
            transitions: &transitions,
            facts: &facts,
        })
        .unwrap();
        let text = text(&digest);
        assert!(text.contains("down           10m (16% of the period)"), "{text}");
        assert!(text.contains("from 2026-03-14 09:30:00 to 10:20:00, when monitoring was paused"), "{text}");
        assert!(text.contains("up at the start, paused at the end, paused now"), "{text}");
        assert!(text.contains("monitoring of the domain is paused"), "{text}");
        assert!(html(&digest).contains("paused at the end, paused now"));
    }

    #[test]
    fn example_digest() {
        // The README's example: run with --nocapture to print it.
        println!("{}", text(&example()));
    }
}
