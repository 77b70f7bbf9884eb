//! Parsing a channel request into a [`ChannelSpec`]: every field is checked and every problem
//! is reported at once, by field name (the same rules as domains). `PATCH` overlays the patch on
//! the current channel's request form and parses the result.
//!
//! Webhook and Slack URLs are `http` or `https`, without credentials or fragment; a host that is
//! a literal address in a blocked range (or `localhost`) is refused unless the deployment allows
//! private targets or `notify_allow_private` covers it. Names are checked again at delivery,
//! where every resolved address goes through the same policy.

use lettre::Address;
use serde_json::{Map, Value};
use shared::netguard::TargetPolicy;
use url::Url;

use crate::domains::FieldErrors;

const KNOWN_FIELDS: [&str; 7] = ["name", "kind", "url", "to", "enabled", "storm_window_s", "storm_threshold"];
/// Default `storm_window_s` (see [`crate::notify::storm`] for why).
pub const DEFAULT_STORM_WINDOW_S: u32 = 10;
/// Default `storm_threshold`: the first notification of a burst goes out alone at once.
pub const DEFAULT_STORM_THRESHOLD: u32 = 1;
const MAX_STORM_WINDOW_S: u64 = 3600;
const MAX_STORM_THRESHOLD: u64 = 1000;
const MAX_NAME_LEN: usize = 200;
/// Recipients of one email channel at most.
pub const MAX_RECIPIENTS: usize = 20;

/// Where a channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Webhook,
    Slack,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Email => "email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "webhook" => Some(ChannelKind::Webhook),
            "slack" => Some(ChannelKind::Slack),
            "email" => Some(ChannelKind::Email),
            _ => None,
        }
    }
}

/// The destination of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Webhook and Slack.
    Url(Url),
    /// Email recipients, deduplicated in the order given.
    Email(Vec<Address>),
}

/// The rules channels are checked against, from the configuration.
#[derive(Debug, Clone)]
pub struct ChannelPolicy {
    /// `allow_private_targets`: literal private hosts are accepted at creation.
    pub allow_private_targets: bool,
    /// `notify_allow_private`: the networks deliveries may reach although blocked.
    pub targets: TargetPolicy,
    /// Whether an SMTP server is configured (email channels are refused without one).
    pub email_enabled: bool,
}

/// A valid channel definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    pub name: String,
    pub kind: ChannelKind,
    pub target: Target,
    pub enabled: bool,
    /// Storm control: notifications following the first within this many seconds are held to
    /// the window's end and sent as one grouped message; 0 sends each alone.
    pub storm_window_s: u32,
    /// How many notifications of a window go out one by one before the rest are grouped.
    pub storm_threshold: u32,
}

fn add(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    errors.0.entry(field.to_owned()).or_insert_with(|| message.into());
}

impl ChannelSpec {
    /// Parses a request object against `policy`.
    pub fn parse(request: &Map<String, Value>, policy: &ChannelPolicy) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        for key in request.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                add(&mut errors, key, "unknown field");
            }
        }
        let field = |name: &str| request.get(name).filter(|v| !v.is_null());

        let name = match field("name") {
            Some(Value::String(n)) if !n.trim().is_empty() && n.trim().chars().count() <= MAX_NAME_LEN => {
                Some(n.trim().to_owned())
            }
            _ => {
                add(&mut errors, "name", format!("required: a string of 1 to {MAX_NAME_LEN} characters"));
                None
            }
        };
        let kind = match field("kind") {
            Some(Value::String(k)) => ChannelKind::parse(k),
            _ => None,
        };
        if kind.is_none() {
            add(&mut errors, "kind", "required: \"webhook\", \"slack\" or \"email\"");
        }
        let enabled = match field("enabled") {
            None => Some(true),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                add(&mut errors, "enabled", "must be true or false");
                None
            }
        };
        let mut bounded = |name: &str, default: u32, min: u64, max: u64| match field(name) {
            None => Some(default),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Some(n as u32),
                _ => {
                    add(&mut errors, name, format!("must be an integer from {min} to {max}"));
                    None
                }
            },
        };
        let storm_window_s = bounded("storm_window_s", DEFAULT_STORM_WINDOW_S, 0, MAX_STORM_WINDOW_S);
        let storm_threshold = bounded("storm_threshold", DEFAULT_STORM_THRESHOLD, 1, MAX_STORM_THRESHOLD);
        let target = match kind {
            None => None,
            Some(ChannelKind::Webhook | ChannelKind::Slack) => {
                if field("to").is_some() {
                    add(&mut errors, "to", "only email channels have recipients");
                }
                match field("url") {
                    None => {
                        add(&mut errors, "url", "required");
                        None
                    }
                    Some(v) => {
                        parse_url(v, policy).map(Target::Url).map_err(|m| add(&mut errors, "url", m)).ok()
                    }
                }
            }
            Some(ChannelKind::Email) => {
                if field("url").is_some() {
                    add(&mut errors, "url", "email channels have recipients (`to`), not a URL");
                }
                if !policy.email_enabled {
                    add(&mut errors, "kind", "email is not configured on this deployment (smtp_host)");
                }
                match field("to") {
                    None => {
                        add(&mut errors, "to", "required: a list of email addresses");
                        None
                    }
                    Some(v) => {
                        parse_recipients(v).map(Target::Email).map_err(|m| add(&mut errors, "to", m)).ok()
                    }
                }
            }
        };
        match (name, kind, target, enabled, storm_window_s, storm_threshold) {
            (
                Some(name),
                Some(kind),
                Some(target),
                Some(enabled),
                Some(storm_window_s),
                Some(storm_threshold),
            ) if errors.is_empty() => {
                Ok(ChannelSpec { name, kind, target, enabled, storm_window_s, storm_threshold })
            }
            _ => Err(errors),
        }
    }

    /// The request form of this spec; `PATCH` overlays its fields on this.
    pub fn to_request(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("name".into(), Value::from(self.name.clone()));
        map.insert("kind".into(), Value::from(self.kind.as_str()));
        map.insert("enabled".into(), Value::from(self.enabled));
        map.insert("storm_window_s".into(), Value::from(self.storm_window_s));
        map.insert("storm_threshold".into(), Value::from(self.storm_threshold));
        for (key, value) in self.config_json().as_object().into_iter().flatten() {
            map.insert(key.clone(), value.clone());
        }
        map
    }

    /// The kind-specific settings as stored in `channels.config`.
    pub fn config_json(&self) -> Value {
        match &self.target {
            Target::Url(url) => serde_json::json!({ "url": url.as_str() }),
            Target::Email(to) => {
                serde_json::json!({ "to": to.iter().map(ToString::to_string).collect::<Vec<_>>() })
            }
        }
    }
}

fn parse_url(value: &Value, policy: &ChannelPolicy) -> Result<Url, String> {
    let (url, ip) = crate::domains::spec::parse_http_url(value)?;
    if let Some(ip) = ip {
        if let Err(range) = policy.targets.check(ip) {
            if !policy.allow_private_targets || range == shared::netguard::BlockedRange::CloudMetadata {
                return Err(format!("host is in a {range} address range, which notifications may not reach"));
            }
        }
    }
    Ok(url)
}

fn parse_recipients(value: &Value) -> Result<Vec<Address>, String> {
    const HELP: &str = "must be a list of 1 to 20 email addresses";
    let Value::Array(items) = value else {
        return Err(HELP.into());
    };
    if items.is_empty() || items.len() > MAX_RECIPIENTS {
        return Err(HELP.into());
    }
    let mut out: Vec<Address> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(raw) = item else {
            return Err(HELP.into());
        };
        let address: Address = raw.trim().parse().map_err(|_| format!("{raw:?} is not an email address"))?;
        if !out.contains(&address) {
            out.push(address);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy() -> ChannelPolicy {
        ChannelPolicy { allow_private_targets: false, targets: TargetPolicy::default(), email_enabled: true }
    }

    fn parse(value: Value) -> Result<ChannelSpec, FieldErrors> {
        ChannelSpec::parse(value.as_object().unwrap(), &policy())
    }

    #[test]
    fn a_webhook_parses_and_round_trips() {
        let spec =
            parse(json!({"name": " ops ", "kind": "webhook", "url": "https://hooks.example.com/x"})).unwrap();
        assert_eq!(spec.name, "ops");
        assert!(spec.enabled);
        assert_eq!((spec.storm_window_s, spec.storm_threshold), (10, 1), "storm control on by default");
        let off = parse(json!({"name": "x", "kind": "webhook", "url": "https://hooks.example.com/x",
            "storm_window_s": 0}))
        .unwrap();
        assert_eq!(off.storm_window_s, 0);
        assert_eq!(ChannelSpec::parse(&spec.to_request(), &policy()).unwrap(), spec);
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = parse(json!({"kind": "pager", "extra": 1, "enabled": "yes"})).unwrap_err();
        let fields: Vec<_> = errors.0.keys().map(String::as_str).collect();
        assert_eq!(fields, ["enabled", "extra", "kind", "name"]);
        let errors = parse(json!({"name": "x", "kind": "webhook", "url": "https://hooks.example.com/x",
            "storm_window_s": -1, "storm_threshold": 0}))
        .unwrap_err();
        assert_eq!(errors.0["storm_window_s"], "must be an integer from 0 to 3600");
        assert_eq!(errors.0["storm_threshold"], "must be an integer from 1 to 1000");
        let errors =
            parse(json!({"name": "x", "kind": "slack", "url": "ftp://x.example", "to": []})).unwrap_err();
        assert!(errors.0["url"].contains("scheme"));
        assert!(errors.0.contains_key("to"));
    }

    #[test]
    fn literal_private_hosts_are_refused_unless_allowed() {
        for url in ["http://10.0.0.1/hook", "http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x"] {
            let errors = parse(json!({"name": "x", "kind": "webhook", "url": url})).unwrap_err();
            assert!(errors.0["url"].contains("address range"), "{url}");
        }
        let allowing = ChannelPolicy {
            targets: TargetPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]),
            ..policy()
        };
        let body = json!({"name": "x", "kind": "webhook", "url": "http://127.0.0.1:9/x"});
        ChannelSpec::parse(body.as_object().unwrap(), &allowing).unwrap();
        let metadata = json!({"name": "x", "kind": "webhook", "url": "http://169.254.169.254/"});
        let open = ChannelPolicy { allow_private_targets: true, ..policy() };
        assert!(ChannelSpec::parse(metadata.as_object().unwrap(), &open).is_err());
    }

    #[test]
    fn email_recipients_are_checked_and_deduplicated() {
        let spec =
            parse(json!({"name": "x", "kind": "email", "to": ["a@example.com", "a@example.com"]})).unwrap();
        assert_eq!(spec.target, Target::Email(vec!["a@example.com".parse().unwrap()]));
        let errors = parse(json!({"name": "x", "kind": "email", "to": ["nope"], "url": "https://x.example"}))
            .unwrap_err();
        assert!(errors.0.contains_key("to") && errors.0.contains_key("url"));
        let no_smtp = ChannelPolicy { email_enabled: false, ..policy() };
        let body = json!({"name": "x", "kind": "email", "to": ["a@example.com"]});
        assert!(
            ChannelSpec::parse(body.as_object().unwrap(), &no_smtp).unwrap_err().0["kind"].contains("smtp")
        );
    }
}
