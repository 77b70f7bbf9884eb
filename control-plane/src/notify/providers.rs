//! The payloads of the provider channels, as pure functions of a notification (or a storm
//! group): PagerDuty Events API v2, Microsoft Teams (an Adaptive Card), Discord (an embed),
//! Telegram (`sendMessage`) and ntfy (a JSON publish). Each respects its provider's documented
//! shape and limits; [`super::channels`] sends them.
//!
//! **Severity** ([`severity`]): an opened incident is `critical`, or `warning` when the
//! incident is a `degraded` one (its `details.incident.kind`, or a `details.incident.severity`
//! given outright); resolutions, acknowledgements and every other kind are `info`.
//!
//! **Grouped messages** (storm control): Teams, Discord, Telegram and ntfy get one message with
//! the group's summary and its first [`super::storm::LISTED`] notifications; PagerDuty gets
//! each notification's own event in order (PagerDuty groups alerts itself, and an incident's
//! trigger and resolve must keep their dedup key).

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::channels::render_text;
use super::storm::{Group, LISTED};
use super::Notification;

/// PagerDuty's limit on `payload.summary`, in characters.
pub const PAGERDUTY_SUMMARY_MAX: usize = 1024;
/// Discord's limits: message `content`, embed title, description, field name and value, and
/// the characters of all embeds together.
pub const DISCORD_CONTENT_MAX: usize = 2000;
pub const DISCORD_TITLE_MAX: usize = 256;
pub const DISCORD_DESCRIPTION_MAX: usize = 4096;
pub const DISCORD_FIELDS_MAX: usize = 25;
pub const DISCORD_FIELD_NAME_MAX: usize = 256;
pub const DISCORD_FIELD_VALUE_MAX: usize = 1024;
pub const DISCORD_EMBED_TOTAL_MAX: usize = 6000;
/// Telegram's limit on a message's text, in UTF-16 code units.
pub const TELEGRAM_TEXT_MAX: usize = 4096;
/// ntfy's default message limit in bytes (longer messages become attachments).
pub const NTFY_MESSAGE_MAX_BYTES: usize = 4096;

/// How urgent a notification is, in PagerDuty's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// ntfy's priority (1 min … 5 max): critical is urgent, warning high, info default.
    pub fn ntfy_priority(self) -> u8 {
        match self {
            Severity::Info => 3,
            Severity::Warning => 4,
            Severity::Critical => 5,
        }
    }

    /// Discord embed colour (RGB).
    fn colour(self, kind: &str) -> u32 {
        match (self, kind) {
            (Severity::Critical, _) => 0xD7_26_3D,
            (Severity::Warning, _) => 0xF2_A9_00,
            (_, "incident_resolved" | "domain_stabilized") => 0x2E_B8_6E,
            _ => 0x5B_7B_D5,
        }
    }
}

/// The incident object of a notification's details, if any.
fn incident(n: &Notification) -> Option<&Map<String, Value>> {
    n.details.get("incident").and_then(Value::as_object)
}

/// A notification's severity (see the module documentation).
pub fn severity(n: &Notification) -> Severity {
    if n.kind != "incident_opened" {
        return Severity::Info;
    }
    let incident = incident(n);
    match incident.and_then(|i| i.get("severity")).and_then(Value::as_str) {
        Some("warning") => return Severity::Warning,
        Some("info") => return Severity::Info,
        Some("critical") => return Severity::Critical,
        _ => {}
    }
    match incident.and_then(|i| i.get("kind")).and_then(Value::as_str) {
        Some("degraded") => Severity::Warning,
        _ => Severity::Critical,
    }
}

/// Cuts `text` to at most `max` characters, ending with "…" when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Cuts `text` to at most `max` UTF-16 code units (Telegram's measure), ending with "…" when cut.
pub fn truncate_utf16(text: &str, max: usize) -> String {
    if text.encode_utf16().count() <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf16() > max - 1 {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// Cuts `text` to at most `max` bytes on a character boundary, ending with "…" when cut.
pub fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

// PagerDuty -----------------------------------------------------------------------------------

/// The Events API v2 action: `trigger` for an opened incident and every other kind,
/// `acknowledge` and `resolve` for an incident's acknowledgement and resolution.
pub fn pagerduty_action(kind: &str) -> &'static str {
    match kind {
        "incident_resolved" => "resolve",
        "incident_acknowledged" => "acknowledge",
        _ => "trigger",
    }
}

/// The PagerDuty dedup key: `crosscheck-incident-<id>` for everything about an incident (its
/// trigger, acknowledgement and resolve land on the same PagerDuty alert), otherwise
/// `crosscheck-<outbox dedup key>`; at most 255 characters.
pub fn pagerduty_dedup_key(n: &Notification, outbox_key: &str) -> String {
    let key = match n.incident_id {
        Some(id) if n.kind.starts_with("incident_") => format!("crosscheck-incident-{id}"),
        _ => format!("crosscheck-{outbox_key}"),
    };
    truncate_chars(&key, 255)
}

/// The Events API v2 body: `routing_key`, `event_action`, `dedup_key`, and for a trigger the
/// `payload` (`summary` ≤ 1024 characters, `source`, `severity`, `timestamp`, `component`,
/// `group`, `class`, `custom_details`) with `client` and `client_url`-less links to the
/// probed URL.
pub fn pagerduty_event(n: &Notification, routing_key: &str, outbox_key: &str, id: Uuid) -> Value {
    let action = pagerduty_action(&n.kind);
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": pagerduty_dedup_key(n, outbox_key),
    });
    if action != "trigger" {
        return event;
    }
    let host =
        n.url.as_deref().and_then(|u| url::Url::parse(u).ok()).and_then(|u| u.host_str().map(str::to_owned));
    let mut custom = Map::new();
    custom.insert("notification_id".into(), Value::from(id.to_string()));
    custom.insert("kind".into(), Value::from(n.kind.clone()));
    if let Some(domain) = n.domain_id {
        custom.insert("domain_id".into(), Value::from(domain.to_string()));
    }
    if let Some(incident) = n.incident_id {
        custom.insert("incident_id".into(), Value::from(incident.to_string()));
    }
    if let Some(url) = &n.url {
        custom.insert("url".into(), Value::from(url.clone()));
    }
    custom.insert("details".into(), n.details.clone());
    event["payload"] = json!({
        "summary": truncate_chars(&n.summary, PAGERDUTY_SUMMARY_MAX),
        "source": host.clone().unwrap_or_else(|| "crosscheck".into()),
        "severity": severity(n).as_str(),
        "timestamp": n.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "component": n.url.clone().unwrap_or_else(|| "crosscheck".into()),
        "group": host.unwrap_or_else(|| "crosscheck".into()),
        "class": n.kind,
        "custom_details": custom,
    });
    event["client"] = Value::from("Crosscheck");
    if let Some(url) = &n.url {
        event["links"] = json!([{ "href": url, "text": "Probed URL" }]);
    }
    event
}

// Microsoft Teams -----------------------------------------------------------------------------

/// A Teams message holding one Adaptive Card (schema 1.4, as incoming webhooks and Workflows
/// accept): a bold title, optional lines of text and a fact set.
pub fn teams_card(title: &str, lines: &[String], facts: &[(String, String)]) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true,
    })];
    for line in lines {
        body.push(json!({ "type": "TextBlock", "text": line, "wrap": true, "spacing": "Small" }));
    }
    if !facts.is_empty() {
        let facts: Vec<Value> = facts.iter().map(|(k, v)| json!({ "title": k, "value": v })).collect();
        body.push(json!({ "type": "FactSet", "facts": facts }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

/// One notification as a Teams card: the summary, then its details as facts.
pub fn teams_message(n: &Notification, id: Uuid) -> Value {
    let mut facts = super::channels::detail_lines(n);
    facts.push(("notification".into(), id.to_string()));
    teams_card(&n.summary, &[], &facts)
}

/// A grouped message as a Teams card: the group's summary and one line per listed member.
pub fn teams_group(group: &Group) -> Value {
    teams_card(&group.summary(), &listed(group), &[("group".into(), group.id.to_string())])
}

/// The first [`LISTED`] members' summaries and a count of the rest.
fn listed(group: &Group) -> Vec<String> {
    let mut lines: Vec<String> = group
        .members
        .iter()
        .take(LISTED)
        .map(|m| m.notification.as_ref().map_or("(unreadable notification)".into(), |n| n.summary.clone()))
        .collect();
    if group.members.len() > LISTED {
        lines.push(format!("… and {} more", group.members.len() - LISTED));
    }
    lines
}

// Discord -------------------------------------------------------------------------------------

/// One notification as a Discord webhook message: one embed (title = summary, fields = details,
/// colour by severity, ISO 8601 timestamp), within Discord's limits, mentions disabled.
pub fn discord_message(n: &Notification, id: Uuid) -> Value {
    let mut fields: Vec<Value> = super::channels::detail_lines(n)
        .into_iter()
        .filter(|(key, _)| key != "occurred at")
        .take(DISCORD_FIELDS_MAX)
        .map(|(name, value)| {
            json!({
                "name": truncate_chars(&name, DISCORD_FIELD_NAME_MAX),
                "value": truncate_chars(if value.is_empty() { "-" } else { &value }, DISCORD_FIELD_VALUE_MAX),
                "inline": false,
            })
        })
        .collect();
    let title = truncate_chars(&n.summary, DISCORD_TITLE_MAX);
    let footer = format!("notification {id}");
    // Keep the embed's characters within the total limit: drop fields from the end.
    let size = |fields: &[Value]| {
        title.chars().count()
            + footer.chars().count()
            + fields
                .iter()
                .map(|f| {
                    f["name"].as_str().map_or(0, |s| s.chars().count())
                        + f["value"].as_str().map_or(0, |s| s.chars().count())
                })
                .sum::<usize>()
    };
    while size(&fields) > DISCORD_EMBED_TOTAL_MAX {
        fields.pop();
    }
    let mut embed = json!({
        "title": title,
        "color": severity(n).colour(&n.kind),
        "fields": fields,
        "timestamp": n.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "footer": { "text": footer },
    });
    if let Some(url) = n.url.as_deref().filter(|u| u.starts_with("http")) {
        embed["url"] = Value::from(url);
    }
    json!({
        "content": truncate_chars(&n.summary, DISCORD_CONTENT_MAX),
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    })
}

/// A grouped message for Discord: the summary as `content`, the listed members as the embed's
/// description.
pub fn discord_group(group: &Group) -> Value {
    let summary = group.summary();
    let description = truncate_chars(
        &listed(group).iter().map(|l| format!("• {l}")).collect::<Vec<_>>().join("\n"),
        DISCORD_DESCRIPTION_MAX - DISCORD_TITLE_MAX - 100,
    );
    json!({
        "content": truncate_chars(&summary, DISCORD_CONTENT_MAX),
        "embeds": [{
            "title": truncate_chars(&summary, DISCORD_TITLE_MAX),
            "description": description,
            "footer": { "text": format!("group {}", group.id) },
        }],
        "allowed_mentions": { "parse": [] },
    })
}

// Telegram ------------------------------------------------------------------------------------

/// The Bot API `sendMessage` body: plain text (no `parse_mode`, so nothing needs escaping),
/// at most 4096 UTF-16 code units, link previews off.
pub fn telegram_message(chat_id: &Value, text: &str) -> Value {
    json!({
        "chat_id": chat_id,
        "text": truncate_utf16(text, TELEGRAM_TEXT_MAX),
        "link_preview_options": { "is_disabled": true },
    })
}

// ntfy ----------------------------------------------------------------------------------------

/// ntfy tags (emoji short codes shown before the title) for a notification kind.
fn ntfy_tags(kind: &str, severity: Severity) -> Vec<&'static str> {
    match (kind, severity) {
        ("incident_opened", Severity::Warning) => vec!["warning"],
        ("incident_opened", _) => vec!["rotating_light"],
        ("incident_resolved" | "domain_stabilized", _) => vec!["white_check_mark"],
        ("incident_acknowledged", _) => vec!["eyes"],
        ("certificate_expiring" | "certificate_expired", _) => vec!["lock"],
        ("dns_changed", _) => vec!["globe_with_meridians"],
        _ => vec!["bell"],
    }
}

/// The JSON publish body (`POST` to the server's root): `topic`, `title`, `message` (at most
/// 4096 bytes), `priority` 1–5 by severity, `tags`, and `click` opening the probed URL.
pub fn ntfy_message(topic: &str, n: &Notification, id: Uuid) -> Value {
    let severity = severity(n);
    let mut body = json!({
        "topic": topic,
        "title": truncate_chars(&n.summary, 250),
        "message": truncate_bytes(&render_text(n, id), NTFY_MESSAGE_MAX_BYTES),
        "priority": severity.ntfy_priority(),
        "tags": ntfy_tags(&n.kind, severity),
    });
    if let Some(url) = n.url.as_deref().filter(|u| u.starts_with("http")) {
        body["click"] = Value::from(url);
    }
    body
}

/// A grouped message for ntfy: the summary as title, the list as message, the highest
/// priority of its members.
pub fn ntfy_group(topic: &str, group: &Group) -> Value {
    let severity = group.members.iter().filter_map(|m| m.notification.as_ref()).map(severity).max();
    let severity = severity.unwrap_or(Severity::Info);
    json!({
        "topic": topic,
        "title": truncate_chars(&group.summary(), 250),
        "message": truncate_bytes(&group.text(), NTFY_MESSAGE_MAX_BYTES),
        "priority": severity.ntfy_priority(),
        "tags": ["bell"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(kind: &str, details: Value) -> Notification {
        Notification {
            kind: kind.into(),
            tenant_id: Uuid::nil(),
            domain_id: Some(Uuid::from_u128(7)),
            url: Some("https://shop.example.com/health".into()),
            incident_id: Some(Uuid::from_u128(9)),
            summary: "https://shop.example.com/health is down (ams: connect)".into(),
            details,
            occurred_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn severity_follows_the_incident_kind() {
        let cases: &[(&str, Value, Severity)] = &[
            ("incident_opened", json!({"regions": []}), Severity::Critical),
            ("incident_opened", json!({"incident": {"kind": "down"}}), Severity::Critical),
            ("incident_opened", json!({"incident": {"kind": "degraded"}}), Severity::Warning),
            (
                "incident_opened",
                json!({"incident": {"kind": "degraded", "severity": "warning"}}),
                Severity::Warning,
            ),
            ("incident_opened", json!({"incident": {"severity": "critical"}}), Severity::Critical),
            ("incident_resolved", json!({"incident": {"kind": "down"}}), Severity::Info),
            ("certificate_expired", json!({}), Severity::Info),
            ("dns_changed", json!({}), Severity::Info),
        ];
        for (kind, details, want) in cases {
            assert_eq!(severity(&notification(kind, details.clone())), *want, "{kind} {details}");
        }
    }

    #[test]
    fn pagerduty_triggers_and_resolves_one_alert_per_incident() {
        let opened = notification("incident_opened", json!({"regions": ["ams"]}));
        let event = pagerduty_event(&opened, "KEY", "incident:9:opened", Uuid::nil());
        assert_eq!(event["event_action"], "trigger");
        assert_eq!(event["routing_key"], "KEY");
        assert_eq!(event["dedup_key"], format!("crosscheck-incident-{}", Uuid::from_u128(9)));
        let payload = &event["payload"];
        assert_eq!(payload["severity"], "critical");
        assert_eq!(payload["source"], "shop.example.com");
        assert_eq!(payload["component"], "https://shop.example.com/health");
        assert_eq!(payload["timestamp"], "2027-01-15T08:00:00.000Z");
        assert_eq!(payload["custom_details"]["details"]["regions"][0], "ams");
        let resolved = pagerduty_event(
            &notification("incident_resolved", json!({})),
            "KEY",
            "incident:9:resolved",
            Uuid::nil(),
        );
        assert_eq!(resolved["event_action"], "resolve");
        assert_eq!(resolved["dedup_key"], event["dedup_key"], "the same alert");
        assert!(resolved.get("payload").is_none());
        let mut cert = notification("certificate_expiring", json!({}));
        cert.incident_id = None;
        let cert = pagerduty_event(&cert, "KEY", "cert:x:0a:14", Uuid::nil());
        assert_eq!(
            (cert["event_action"].as_str(), cert["dedup_key"].as_str()),
            (Some("trigger"), Some("crosscheck-cert:x:0a:14"))
        );
        assert_eq!(cert["payload"]["severity"], "info");
        let mut long = notification("incident_opened", json!({}));
        long.summary = "x".repeat(5000);
        assert_eq!(
            pagerduty_event(&long, "K", "k", Uuid::nil())["payload"]["summary"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            1024
        );
    }

    #[test]
    fn discord_stays_within_its_limits() {
        let mut n = notification("incident_opened", json!({"incident": {"kind": "degraded"}}));
        n.summary = "s".repeat(3000);
        let details: Map<String, Value> =
            (0..40).map(|i| (format!("k{i}"), Value::from("v".repeat(2000)))).collect();
        n.details = Value::Object(details);
        n.details["incident"] = json!({"kind": "degraded"});
        let message = discord_message(&n, Uuid::nil());
        assert_eq!(message["content"].as_str().unwrap().chars().count(), DISCORD_CONTENT_MAX);
        let embed = &message["embeds"][0];
        assert_eq!(embed["title"].as_str().unwrap().chars().count(), DISCORD_TITLE_MAX);
        assert_eq!(embed["color"], 0xF2A900, "degraded is a warning");
        let fields = embed["fields"].as_array().unwrap();
        assert!(fields.len() <= DISCORD_FIELDS_MAX);
        let total: usize = fields
            .iter()
            .map(|f| {
                f["name"].as_str().unwrap().chars().count() + f["value"].as_str().unwrap().chars().count()
            })
            .sum::<usize>()
            + DISCORD_TITLE_MAX
            + embed["footer"]["text"].as_str().unwrap().chars().count();
        assert!(total <= DISCORD_EMBED_TOTAL_MAX, "{total}");
        assert!(fields
            .iter()
            .all(|f| f["value"].as_str().unwrap().chars().count() <= DISCORD_FIELD_VALUE_MAX));
        assert_eq!(message["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn truncation_counts_each_providers_unit() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        // An emoji is two UTF-16 code units.
        let emoji = "😀".repeat(3000);
        let cut = truncate_utf16(&emoji, TELEGRAM_TEXT_MAX);
        assert!(cut.encode_utf16().count() <= TELEGRAM_TEXT_MAX);
        assert!(cut.ends_with('…'));
        let cut = truncate_bytes(&"é".repeat(3000), NTFY_MESSAGE_MAX_BYTES);
        assert!(cut.len() <= NTFY_MESSAGE_MAX_BYTES && cut.ends_with('…'));
        assert_eq!(truncate_bytes("short", 10), "short");
    }

    #[test]
    fn ntfy_and_teams_carry_priority_and_facts() {
        let n = notification("incident_opened", json!({"regions": ["ams"]}));
        let body = ntfy_message("ops", &n, Uuid::nil());
        assert_eq!((body["topic"].as_str(), body["priority"].as_u64()), (Some("ops"), Some(5)));
        assert_eq!(body["tags"], json!(["rotating_light"]));
        assert_eq!(body["click"], "https://shop.example.com/health");
        let resolved = ntfy_message("ops", &notification("incident_resolved", json!({})), Uuid::nil());
        assert_eq!(resolved["priority"], 3);
        let card = teams_message(&n, Uuid::nil());
        let content = &card["attachments"][0]["content"];
        assert_eq!(card["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(content["type"], "AdaptiveCard");
        assert_eq!(content["body"][0]["text"], n.summary.as_str());
        let facts = content["body"][1]["facts"].as_array().unwrap();
        assert!(facts.iter().any(|f| f["title"] == "kind" && f["value"] == "incident_opened"));
    }

    #[test]
    fn grouped_messages_summarize_and_bound_the_list() {
        use super::super::channels::Outgoing;
        use super::super::storm::Member;
        let members: Vec<Member> = (0..30u128)
            .map(|i| {
                let mut n = notification("incident_opened", json!({}));
                n.domain_id = Some(Uuid::from_u128(100 + i));
                n.summary = format!("d{i}.example.com is down");
                Member {
                    out: Outgoing {
                        id: Uuid::from_u128(i),
                        dedup_key: format!("incident:{i}:opened"),
                        kind: "discord".into(),
                        config: json!({"url": "https://d.example/x", "topic": "ops"}),
                        secret: None,
                        payload: serde_json::to_value(&n).unwrap(),
                    },
                    notification: Some(n),
                    facts: Default::default(),
                }
            })
            .collect();
        let group = Group::new(Uuid::nil(), members);
        let discord = discord_group(&group);
        assert!(discord["content"].as_str().unwrap().starts_with("30 domains down"), "{discord}");
        let description = discord["embeds"][0]["description"].as_str().unwrap();
        assert_eq!(description.lines().count(), LISTED + 1, "{description}");
        assert!(description.ends_with("… and 10 more"));
        assert_eq!(discord["allowed_mentions"]["parse"], json!([]));
        let card = teams_group(&group);
        let body = card["attachments"][0]["content"]["body"].as_array().unwrap();
        assert_eq!(body[0]["text"], discord["content"]);
        assert_eq!(body.len(), 1 + LISTED + 1 + 1, "title, 20 lines, the rest counted, the group id");
        let ntfy = ntfy_group("ops", &group);
        assert_eq!((ntfy["priority"].as_u64(), ntfy["topic"].as_str()), (Some(5), Some("ops")));
        assert!(ntfy["message"].as_str().unwrap().contains("d19.example.com is down"));
    }
}
