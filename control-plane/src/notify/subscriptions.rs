//! What a channel subscribes to: chosen notification kinds (`events`) and domain tags (`tags`).
//! Absent means everything, as for a channel without subscriptions. The filter runs where
//! notifications are enqueued ([`super::enqueue_many`]), in the same set-based statement, so no
//! outbox row is written for a channel that does not want it.
//!
//! - `events`: a non-empty list from [`EVENT_KINDS`] (a closed set: a misspelt kind is refused,
//!   not silently never matched). `test` notifications are not filtered: a channel test always
//!   reaches the channel.
//! - `tags`: a non-empty list of tags; a notification about a domain is written when the domain
//!   has at least one of them. Notifications about no domain (digests, tenant reports) are not
//!   filtered by tags, only by `events`.

use serde_json::Value;

/// Every notification kind a channel can subscribe to. A new kind is one more line here.
pub const EVENT_KINDS: &[&str] = &[
    "incident_opened",
    "incident_acknowledged",
    "incident_resolved",
    "certificate_expiring",
    "certificate_expired",
    "domain_flapping",
    "domain_stabilized",
    "flap_digest",
    "dns_changed",
    "sla_breach",
    "sla_budget_low",
    "sla_report",
];

/// Entries in one subscription list at most.
pub const MAX_ENTRIES: usize = 50;

/// A channel's subscriptions; `None` is everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    pub events: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl Subscriptions {
    /// Whether a notification of `kind` about a domain tagged `domain_tags` (`None`: about no
    /// domain) is wanted. The same rule as the enqueue statement, for reads and tests.
    pub fn wants(&self, kind: &str, domain_tags: Option<&[String]>) -> bool {
        if kind == "test" {
            return true;
        }
        let kind_ok = self.events.as_ref().is_none_or(|events| events.iter().any(|e| e == kind));
        let tags_ok = match (&self.tags, domain_tags) {
            (None, _) | (Some(_), None) => true,
            (Some(wanted), Some(has)) => wanted.iter().any(|t| has.contains(t)),
        };
        kind_ok && tags_ok
    }
}

fn string_list(value: &Value, what: &str) -> Result<Vec<String>, String> {
    let help = format!("must be a list of 1 to {MAX_ENTRIES} {what}, or null for all");
    let Value::Array(items) = value else { return Err(help) };
    if items.is_empty() || items.len() > MAX_ENTRIES {
        return Err(help);
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(raw) = item else { return Err(help) };
        let text = raw.trim().to_owned();
        if !out.contains(&text) {
            out.push(text);
        }
    }
    Ok(out)
}

/// Parses `events`: kinds from [`EVENT_KINDS`], deduplicated in the order given.
pub fn parse_events(value: &Value) -> Result<Vec<String>, String> {
    let events = string_list(value, "notification kinds")?;
    for event in &events {
        if !EVENT_KINDS.contains(&event.as_str()) {
            return Err(format!("{event:?} is not a notification kind; one of: {}", EVENT_KINDS.join(", ")));
        }
    }
    Ok(events)
}

/// Parses `tags`: each a domain tag by the domains' own rule ([`crate::domains::tags`]),
/// normalized as a domain's tags are (trimmed, lowercased), deduplicated in the order given.
pub fn parse_tags(value: &Value) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::new();
    for raw in string_list(value, "tags")? {
        let tag = crate::domains::tags::parse_tag(&raw)
            .map_err(|rule| format!("{raw:?} is not a tag: it {rule}"))?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_are_a_closed_set() {
        let cases: &[(Value, Result<Vec<&str>, &str>)] = &[
            (
                json!(["incident_opened", "incident_resolved", "incident_opened"]),
                Ok(vec!["incident_opened", "incident_resolved"]),
            ),
            (
                json!(["dns_changed", "sla_breach", "sla_budget_low", "sla_report"]),
                Ok(vec!["dns_changed", "sla_breach", "sla_budget_low", "sla_report"]),
            ),
            (json!([]), Err("must be a list")),
            (json!("incident_opened"), Err("must be a list")),
            (json!([1]), Err("must be a list")),
            (json!(["incident_open"]), Err("\"incident_open\" is not a notification kind")),
            (json!(["test"]), Err("\"test\" is not a notification kind")),
        ];
        for (input, expected) in cases {
            match (parse_events(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{input}"),
                (Err(got), Err(want)) => assert!(got.starts_with(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let too_many: Vec<&str> = std::iter::repeat_n("incident_opened", MAX_ENTRIES + 1).collect();
        assert!(parse_events(&json!(too_many)).is_err());
    }

    #[test]
    fn tags_are_words() {
        assert_eq!(
            parse_tags(&json!([" prod ", "team:payments", "Prod"])).unwrap(),
            ["prod", "team:payments"]
        );
        for bad in [
            json!(["two words"]),
            json!([""]),
            json!(["x".repeat(41)]),
            json!(["-lead"]),
            json!(["a\u{7}"]),
            json!({}),
        ] {
            assert!(parse_tags(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wants_matches_kind_and_any_tag() {
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = Subscriptions::default();
        let opened_only = Subscriptions { events: Some(tags(&["incident_opened"])), tags: None };
        let prod = Subscriptions { events: None, tags: Some(tags(&["prod", "edge"])) };
        let prod_tags = tags(&["edge", "eu"]);
        let staging = tags(&["staging"]);
        let cases: &[(&Subscriptions, &str, Option<&[String]>, bool)] = &[
            (&all, "incident_opened", Some(&staging), true),
            (&all, "sla_report", None, true),
            (&opened_only, "incident_opened", None, true),
            (&opened_only, "incident_resolved", Some(&prod_tags), false),
            (&opened_only, "test", None, true),
            (&prod, "incident_opened", Some(&prod_tags), true),
            (&prod, "incident_opened", Some(&staging), false),
            (&prod, "incident_opened", Some(&[]), false),
            (&prod, "flap_digest", None, true),
        ];
        for (subscriptions, kind, domain_tags, want) in cases {
            assert_eq!(
                subscriptions.wants(kind, *domain_tags),
                *want,
                "{subscriptions:?} {kind} {domain_tags:?}"
            );
        }
    }
}
