//! The diff an audit row keeps: the fields of a resource's API view that a write changed, before
//! and after, with secrets redacted. Pure.
//!
//! Views already leave out most secrets (a domain's request secrets are shown as set, a
//! channel's provider credential is never in its view); redaction here is the second line: any
//! string value under a secret-looking key (`secret`, `token`, `password`, `routing_key`,
//! `bot_token`, `api_key`, `authorization`, `cookie`, at any depth) becomes `"<redacted>"`, and
//! so does a channel's `url` (a Slack, Teams or Discord webhook URL is itself the credential).
//! Values are compared before they are redacted, so a changed secret still shows as changed.

use serde_json::{Map, Value};

/// What a redacted value reads as.
pub const REDACTED: &str = "<redacted>";

/// Keys whose string values are secrets in every resource.
const SECRET_KEYS: [&str; 8] =
    ["secret", "token", "password", "routing_key", "bot_token", "api_key", "authorization", "cookie"];

fn is_secret(resource_type: &str, key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str()) || (resource_type == "channel" && key == "url")
}

/// `value` with every secret replaced by [`REDACTED`] (strings, numbers and arrays under a
/// secret key; a boolean such as a header's `"secret": true` is not a secret and stays).
pub fn redact(resource_type: &str, value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| {
                    let hidden = is_secret(resource_type, key) && !matches!(v, Value::Null | Value::Bool(_));
                    (key.clone(), if hidden { Value::from(REDACTED) } else { redact(resource_type, v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact(resource_type, v)).collect()),
        other => other.clone(),
    }
}

/// `{"before": …, "after": …}`: for an update, the top-level fields whose values differ (a field
/// only one side has counts as changed, shown as `null` on the other); for a create (`before`
/// `None`) the whole new view, for a delete (`after` `None`) the whole old one. Redacted.
pub fn diff(resource_type: &str, before: Option<&Value>, after: Option<&Value>) -> Value {
    let (before_map, after_map) = match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut changed_before = Map::new();
            let mut changed_after = Map::new();
            for key in b.keys().chain(a.keys().filter(|k| !b.contains_key(*k))) {
                let (old, new) = (b.get(key).unwrap_or(&Value::Null), a.get(key).unwrap_or(&Value::Null));
                if old != new {
                    changed_before.insert(key.clone(), old.clone());
                    changed_after.insert(key.clone(), new.clone());
                }
            }
            (Value::Object(changed_before), Value::Object(changed_after))
        }
        (b, a) => (b.cloned().unwrap_or(Value::Null), a.cloned().unwrap_or(Value::Null)),
    };
    serde_json::json!({
        "before": redact(resource_type, &before_map),
        "after": redact(resource_type, &after_map),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_changed_fields_are_kept() {
        let before = json!({ "id": "d1", "name": "a", "interval_s": 60, "tags": ["x"], "gone": 1 });
        let after = json!({ "id": "d1", "name": "b", "interval_s": 60, "tags": ["x", "y"], "new": true });
        assert_eq!(
            diff("domain", Some(&before), Some(&after)),
            json!({
                "before": { "name": "a", "tags": ["x"], "gone": 1, "new": null },
                "after": { "name": "b", "tags": ["x", "y"], "gone": null, "new": true },
            })
        );
        assert_eq!(
            diff("domain", Some(&before), Some(&before)),
            json!({ "before": {}, "after": {} }),
            "nothing changed"
        );
    }

    #[test]
    fn creates_and_deletes_show_the_whole_view() {
        let view = json!({ "id": "c1", "name": "ops" });
        assert_eq!(diff("channel", None, Some(&view)), json!({ "before": null, "after": view }));
        assert_eq!(diff("channel", Some(&view), None), json!({ "before": view, "after": null }));
    }

    #[test]
    fn secrets_are_redacted_at_any_depth_but_still_show_as_changed() {
        let before = json!({
            "url": "https://hooks.slack.com/services/T0/B0/old",
            "secret": "whsec_old",
            "headers": [{ "name": "X-Api-Key", "secret": true, "value_set": true }],
            "nested": { "Password": "hunter2", "token": null },
        });
        let after = json!({
            "url": "https://hooks.slack.com/services/T0/B0/new",
            "secret": "whsec_new",
            "headers": [{ "name": "X-Api-Key", "secret": true, "value_set": true }],
            "nested": { "Password": "hunter3", "token": null },
        });
        let shown = diff("channel", Some(&before), Some(&after));
        assert_eq!(
            shown,
            json!({
                "before": { "url": REDACTED, "secret": REDACTED, "nested": { "Password": REDACTED, "token": null } },
                "after": { "url": REDACTED, "secret": REDACTED, "nested": { "Password": REDACTED, "token": null } },
            })
        );
        let text = shown.to_string();
        for secret in ["old", "new", "hunter"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        // A header's `secret` flag is not a secret, and a domain's URL is not one either.
        let domain = redact("domain", &json!({ "url": "https://example.com/", "headers": after["headers"] }));
        assert_eq!(domain, json!({ "url": "https://example.com/", "headers": after["headers"] }));
    }

    #[test]
    fn an_issued_token_is_redacted() {
        let issued = json!({ "id": "t1", "name": "ci", "role": "admin", "token": "cc_abc" });
        assert_eq!(
            diff("token", None, Some(&issued))["after"],
            json!({ "id": "t1", "name": "ci", "role": "admin", "token": REDACTED })
        );
    }
}
