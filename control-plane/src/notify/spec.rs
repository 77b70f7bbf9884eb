//! Parsing a channel request into a [`ChannelSpec`]: every field is checked and every problem
//! is reported at once, by field name (the same rules as domains). `PATCH` overlays the patch on
//! the current channel's request form and parses the result.
//!
//! Webhook, Slack, Teams and Discord URLs (and the overridable PagerDuty, Telegram and ntfy
//! endpoints) are `http` or `https`, without credentials or fragment; a host that is a literal
//! address in a blocked range (or `localhost`) is refused unless the deployment allows private
//! targets or `notify_allow_private` covers it. Names are checked again at delivery, where every
//! resolved address goes through the same policy.
//!
//! Provider credentials (a PagerDuty `routing_key`, a Telegram `bot_token`, an ntfy `token`) are
//! write-only: stored in the channel's `secret`, never shown; a `PATCH` without them keeps them.

use lettre::Address;
use serde_json::{Map, Value};
use shared::netguard::TargetPolicy;
use url::Url;

use crate::domains::FieldErrors;

use super::subscriptions::{self, Subscriptions};

const KNOWN_FIELDS: [&str; 14] = [
    "name",
    "kind",
    "url",
    "to",
    "enabled",
    "storm_window_s",
    "storm_threshold",
    "events",
    "tags",
    "routing_key",
    "bot_token",
    "chat_id",
    "topic",
    "token",
];
/// The PagerDuty Events API v2 endpoint used when a channel names none.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// The Telegram Bot API base used when a channel names none.
pub const TELEGRAM_URL: &str = "https://api.telegram.org";
/// The ntfy server used when a channel names none.
pub const NTFY_URL: &str = "https://ntfy.sh";
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
    PagerDuty,
    Teams,
    Discord,
    Telegram,
    Ntfy,
}

impl ChannelKind {
    /// Every kind, in the order the API lists them.
    pub const ALL: [ChannelKind; 8] = [
        ChannelKind::Webhook,
        ChannelKind::Slack,
        ChannelKind::Email,
        ChannelKind::PagerDuty,
        ChannelKind::Teams,
        ChannelKind::Discord,
        ChannelKind::Telegram,
        ChannelKind::Ntfy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Email => "email",
            ChannelKind::PagerDuty => "pagerduty",
            ChannelKind::Teams => "teams",
            ChannelKind::Discord => "discord",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Ntfy => "ntfy",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The request field holding this kind's write-only credential, if it has one given by the
    /// user (a webhook's signing secret is made by the server).
    pub fn secret_field(self) -> Option<&'static str> {
        match self {
            ChannelKind::PagerDuty => Some("routing_key"),
            ChannelKind::Telegram => Some("bot_token"),
            ChannelKind::Ntfy => Some("token"),
            _ => None,
        }
    }

    /// The fields this kind takes besides the common ones.
    fn fields(self) -> &'static [&'static str] {
        match self {
            ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Teams | ChannelKind::Discord => &["url"],
            ChannelKind::Email => &["to"],
            ChannelKind::PagerDuty => &["url", "routing_key"],
            ChannelKind::Telegram => &["url", "bot_token", "chat_id"],
            ChannelKind::Ntfy => &["url", "topic", "token"],
        }
    }
}

/// A Telegram chat: a numeric id (users, groups, supergroups: negative) or a public
/// `@channelusername`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatId {
    Id(i64),
    Username(String),
}

impl ChatId {
    pub fn to_json(&self) -> Value {
        match self {
            ChatId::Id(id) => Value::from(*id),
            ChatId::Username(name) => Value::from(name.clone()),
        }
    }
}

/// The destination of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Webhook, Slack, Teams and Discord: the URL posted to.
    Url(Url),
    /// Email recipients, deduplicated in the order given.
    Email(Vec<Address>),
    /// PagerDuty: the Events API v2 enqueue endpoint ([`PAGERDUTY_URL`] unless overridden).
    PagerDuty { endpoint: Url },
    /// Telegram: the Bot API base ([`TELEGRAM_URL`] unless overridden) and the chat.
    Telegram { api: Url, chat_id: ChatId },
    /// ntfy: the server ([`NTFY_URL`] unless overridden) and the topic.
    Ntfy { server: Url, topic: String },
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
    /// The kinds and tags the channel wants.
    pub subscriptions: Subscriptions,
    /// The user-given credential ([`ChannelKind::secret_field`]): required for PagerDuty and
    /// Telegram, optional for ntfy, `None` for the other kinds.
    pub secret: Option<String>,
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
            let kinds: Vec<String> = ChannelKind::ALL.iter().map(|k| format!("\"{}\"", k.as_str())).collect();
            add(&mut errors, "kind", format!("required: one of {}", kinds.join(", ")));
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
        let mut subscriptions = Subscriptions::default();
        if let Some(v) = field("events") {
            match subscriptions::parse_events(v) {
                Ok(events) => subscriptions.events = Some(events),
                Err(m) => add(&mut errors, "events", m),
            }
        }
        if let Some(v) = field("tags") {
            match subscriptions::parse_tags(v) {
                Ok(tags) => subscriptions.tags = Some(tags),
                Err(m) => add(&mut errors, "tags", m),
            }
        }
        let (target, secret) = match kind {
            None => (None, None),
            Some(kind) => {
                for key in ["url", "to", "routing_key", "bot_token", "chat_id", "topic", "token"] {
                    if field(key).is_some() && !kind.fields().contains(&key) {
                        add(&mut errors, key, format!("not a field of {} channels", kind.as_str()));
                    }
                }
                parse_target(kind, &field, policy, &mut errors)
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
            ) if errors.is_empty() => Ok(ChannelSpec {
                name,
                kind,
                target,
                enabled,
                storm_window_s,
                storm_threshold,
                subscriptions,
                secret,
            }),
            _ => Err(errors),
        }
    }

    /// The request form of this spec, secret included; `PATCH` overlays its fields on this.
    pub fn to_request(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("name".into(), Value::from(self.name.clone()));
        map.insert("kind".into(), Value::from(self.kind.as_str()));
        map.insert("enabled".into(), Value::from(self.enabled));
        map.insert("storm_window_s".into(), Value::from(self.storm_window_s));
        map.insert("storm_threshold".into(), Value::from(self.storm_threshold));
        if let Some(events) = &self.subscriptions.events {
            map.insert("events".into(), Value::from(events.clone()));
        }
        if let Some(tags) = &self.subscriptions.tags {
            map.insert("tags".into(), Value::from(tags.clone()));
        }
        if let (Some(field), Some(secret)) = (self.kind.secret_field(), &self.secret) {
            map.insert(field.into(), Value::from(secret.clone()));
        }
        for (key, value) in self.config_json().as_object().into_iter().flatten() {
            map.insert(key.clone(), value.clone());
        }
        map
    }

    /// The kind-specific settings as stored in `channels.config` (never the secret).
    pub fn config_json(&self) -> Value {
        match &self.target {
            Target::Url(url) => serde_json::json!({ "url": url.as_str() }),
            Target::Email(to) => {
                serde_json::json!({ "to": to.iter().map(ToString::to_string).collect::<Vec<_>>() })
            }
            Target::PagerDuty { endpoint } => serde_json::json!({ "url": endpoint.as_str() }),
            Target::Telegram { api, chat_id } => {
                serde_json::json!({ "url": api.as_str(), "chat_id": chat_id.to_json() })
            }
            Target::Ntfy { server, topic } => serde_json::json!({ "url": server.as_str(), "topic": topic }),
        }
    }
}

/// The target and credential of a `kind` channel, every problem added to `errors`.
fn parse_target<'a>(
    kind: ChannelKind,
    field: &dyn Fn(&str) -> Option<&'a Value>,
    policy: &ChannelPolicy,
    errors: &mut FieldErrors,
) -> (Option<Target>, Option<String>) {
    let url = |default: Option<&str>, errors: &mut FieldErrors| match (field("url"), default) {
        (None, Some(default)) => Some(Url::parse(default).expect("the default URLs parse")),
        (None, None) => {
            add(errors, "url", "required");
            None
        }
        (Some(v), _) => parse_url(v, policy).map_err(|m| add(errors, "url", m)).ok(),
    };
    let secret = |name: &str, check: fn(&str) -> bool, help: &str, errors: &mut FieldErrors| match field(name)
    {
        Some(Value::String(s)) if check(s) => Some(s.clone()),
        _ => {
            add(errors, name, help.to_owned());
            None
        }
    };
    match kind {
        ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Teams | ChannelKind::Discord => {
            (url(None, errors).map(Target::Url), None)
        }
        ChannelKind::Email => {
            if !policy.email_enabled {
                add(errors, "kind", "email is not configured on this deployment (smtp_host)");
            }
            let target = match field("to") {
                None => {
                    add(errors, "to", "required: a list of email addresses");
                    None
                }
                Some(v) => parse_recipients(v).map(Target::Email).map_err(|m| add(errors, "to", m)).ok(),
            };
            (target, None)
        }
        ChannelKind::PagerDuty => {
            let endpoint = url(Some(PAGERDUTY_URL), errors);
            let key = secret(
                "routing_key",
                is_routing_key,
                "required: the 32-character integration key of an Events API v2 integration",
                errors,
            );
            (endpoint.map(|endpoint| Target::PagerDuty { endpoint }), key)
        }
        ChannelKind::Telegram => {
            let api = url(Some(TELEGRAM_URL), errors);
            let token = secret(
                "bot_token",
                is_bot_token,
                "required: the bot's token from @BotFather (\"<bot id>:<secret>\")",
                errors,
            );
            let chat_id = match field("chat_id") {
                Some(v) => parse_chat_id(v).map_err(|m| add(errors, "chat_id", m)).ok(),
                None => {
                    add(
                        errors,
                        "chat_id",
                        "required: a chat id (integer) or a public channel's \"@username\"",
                    );
                    None
                }
            };
            match (api, chat_id) {
                (Some(api), Some(chat_id)) => (Some(Target::Telegram { api, chat_id }), token),
                _ => (None, token),
            }
        }
        ChannelKind::Ntfy => {
            let server = url(Some(NTFY_URL), errors);
            let topic = match field("topic") {
                Some(Value::String(t)) if is_topic(t) => Some(t.clone()),
                _ => {
                    add(errors, "topic", "required: 1 to 64 characters from A-Z, a-z, 0-9, _ and -");
                    None
                }
            };
            let token = match field("token") {
                None => None,
                Some(_) => secret(
                    "token",
                    is_ntfy_token,
                    "must be an access token: 1 to 200 visible ASCII characters",
                    errors,
                ),
            };
            match (server, topic) {
                (Some(server), Some(topic)) => (Some(Target::Ntfy { server, topic }), token),
                _ => (None, token),
            }
        }
    }
}

fn is_routing_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_bot_token(token: &str) -> bool {
    let Some((id, secret)) = token.split_once(':') else { return false };
    (1..=20).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_digit())
        && (30..=64).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_ntfy_token(token: &str) -> bool {
    (1..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_chat_id(value: &Value) -> Result<ChatId, String> {
    const HELP: &str = "must be a chat id (a non-zero integer) or a public channel's \"@username\" (5 to 32 characters from A-Z, a-z, 0-9 and _)";
    match value {
        Value::Number(n) => n.as_i64().filter(|id| *id != 0).map(ChatId::Id).ok_or_else(|| HELP.to_owned()),
        Value::String(s) => match s.strip_prefix('@') {
            Some(name)
                if (5..=32).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Ok(ChatId::Username(s.clone()))
            }
            _ => s.parse::<i64>().ok().filter(|id| *id != 0).map(ChatId::Id).ok_or_else(|| HELP.to_owned()),
        },
        _ => Err(HELP.to_owned()),
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

    const KEY: &str = "R0UTINGKEY0123456789abcdefABCDEF";
    const BOT: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    #[test]
    fn provider_channels_parse_with_their_defaults() {
        let pd = parse(json!({"name": "pd", "kind": "pagerduty", "routing_key": KEY})).unwrap();
        assert_eq!(pd.target, Target::PagerDuty { endpoint: Url::parse(PAGERDUTY_URL).unwrap() });
        assert_eq!(pd.secret.as_deref(), Some(KEY));
        assert!(pd.config_json().get("routing_key").is_none(), "the key is not config");
        let tg =
            parse(json!({"name": "tg", "kind": "telegram", "bot_token": BOT, "chat_id": -1001234567890i64}))
                .unwrap();
        assert_eq!(
            tg.target,
            Target::Telegram { api: Url::parse(TELEGRAM_URL).unwrap(), chat_id: ChatId::Id(-1001234567890) }
        );
        let by_name =
            parse(json!({"name": "tg", "kind": "telegram", "bot_token": BOT, "chat_id": "@ops_alerts"}))
                .unwrap();
        assert!(
            matches!(by_name.target, Target::Telegram { chat_id: ChatId::Username(ref n), .. } if n == "@ops_alerts")
        );
        let ntfy = parse(json!({"name": "phone", "kind": "ntfy", "topic": "crosscheck-ops"})).unwrap();
        assert_eq!(
            ntfy.target,
            Target::Ntfy { server: Url::parse(NTFY_URL).unwrap(), topic: "crosscheck-ops".into() }
        );
        assert_eq!(ntfy.secret, None, "the token is optional");
        for kind in ["teams", "discord"] {
            let spec =
                parse(json!({"name": kind, "kind": kind, "url": "https://hooks.example.com/x"})).unwrap();
            assert_eq!(spec.target, Target::Url(Url::parse("https://hooks.example.com/x").unwrap()));
        }
        let subscribed = parse(json!({"name": "pd", "kind": "pagerduty", "routing_key": KEY,
            "events": ["incident_opened", "incident_resolved"], "tags": ["prod"]}))
        .unwrap();
        for spec in [pd, tg, by_name, ntfy, subscribed] {
            assert_eq!(ChannelSpec::parse(&spec.to_request(), &policy()).unwrap(), spec, "round trip");
        }
    }

    #[test]
    fn provider_fields_are_checked_by_name() {
        // (request, the field named, a word of its message)
        let cases: &[(Value, &str, &str)] = &[
            (json!({"name": "x", "kind": "pagerduty"}), "routing_key", "required"),
            (
                json!({"name": "x", "kind": "pagerduty", "routing_key": "short"}),
                "routing_key",
                "32-character",
            ),
            (
                json!({"name": "x", "kind": "pagerduty", "routing_key": KEY, "url": "http://10.1.2.3/v2/enqueue"}),
                "url",
                "address range",
            ),
            (
                json!({"name": "x", "kind": "pagerduty", "routing_key": KEY, "topic": "t"}),
                "topic",
                "not a field of pagerduty",
            ),
            (json!({"name": "x", "kind": "telegram", "chat_id": 1}), "bot_token", "required"),
            (
                json!({"name": "x", "kind": "telegram", "bot_token": "nope", "chat_id": 1}),
                "bot_token",
                "BotFather",
            ),
            (json!({"name": "x", "kind": "telegram", "bot_token": BOT}), "chat_id", "required"),
            (json!({"name": "x", "kind": "telegram", "bot_token": BOT, "chat_id": 0}), "chat_id", "non-zero"),
            (
                json!({"name": "x", "kind": "telegram", "bot_token": BOT, "chat_id": "@ab"}),
                "chat_id",
                "username",
            ),
            (
                json!({"name": "x", "kind": "telegram", "bot_token": BOT, "chat_id": true}),
                "chat_id",
                "chat id",
            ),
            (json!({"name": "x", "kind": "ntfy"}), "topic", "required"),
            (json!({"name": "x", "kind": "ntfy", "topic": "a/b"}), "topic", "A-Z"),
            (
                json!({"name": "x", "kind": "ntfy", "topic": "t", "token": "has space"}),
                "token",
                "access token",
            ),
            (
                json!({"name": "x", "kind": "ntfy", "topic": "t", "url": "ftp://ntfy.example"}),
                "url",
                "scheme",
            ),
            (json!({"name": "x", "kind": "teams"}), "url", "required"),
            (
                json!({"name": "x", "kind": "discord", "url": "https://d.example/x", "chat_id": 1}),
                "chat_id",
                "not a field",
            ),
            (
                json!({"name": "x", "kind": "webhook", "url": "https://d.example/x", "events": ["nope"]}),
                "events",
                "not a notification kind",
            ),
            (
                json!({"name": "x", "kind": "webhook", "url": "https://d.example/x", "events": []}),
                "events",
                "list",
            ),
            (
                json!({"name": "x", "kind": "webhook", "url": "https://d.example/x", "tags": ["a b"]}),
                "tags",
                "not a tag",
            ),
            (json!({"name": "x", "kind": "sms"}), "kind", "\"ntfy\""),
        ];
        for (request, field, word) in cases {
            let errors = parse(request.clone()).unwrap_err();
            let message =
                errors.0.get(*field).unwrap_or_else(|| panic!("{request}: {field} not named in {errors:?}"));
            assert!(message.contains(word), "{request}: {field}: {message}");
        }
    }
}
