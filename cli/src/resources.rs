//! The four kinds of resource the file declares, in one vocabulary: the *file form*.
//!
//! Both sides of a plan are brought to a **canonical file form** before they are compared:
//! the file's resource (after its values are normalized the way the server normalizes them)
//! and the server's view (after its read-only fields are dropped, domain ids are turned into
//! domain keys and secrets into `*_env` references). A field equal to the server's default is
//! left out of the canonical form, so a field missing from the file means "the default", and
//! `export` writes only what differs from the defaults.
//!
//! Secrets never appear in a canonical form: a `*_env` key holds the environment variable's
//! name on the file side and [`SECRET`] on the server side (the API never shows a secret);
//! [`compare_form`] masks both alike. The one exception is a Slack, Teams or Discord channel's
//! `url_env`, whose URL the API does show: it is compared by value, so a changed URL in the
//! environment is a planned update.
//!
//! [`request`] turns a canonical form back into the API's request body, reading secrets from
//! the environment and domain keys into ids.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use url::Url;

/// The environment: a variable's value by name.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a secret's value is shown as (it is never shown).
pub const SECRET: &str = "(secret)";

/// A kind of resource, in the order a plan lists and creates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Domain,
    Channel,
    StatusPage,
    Maintenance,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Domain, Kind::Channel, Kind::StatusPage, Kind::Maintenance];

    /// The file's top-level section.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Domain => "domains",
            Kind::Channel => "channels",
            Kind::StatusPage => "status_pages",
            Kind::Maintenance => "maintenance",
        }
    }

    /// The word a plan uses.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Domain => "domain",
            Kind::Channel => "channel",
            Kind::StatusPage => "status page",
            Kind::Maintenance => "maintenance window",
        }
    }

    /// The collection's API path under `/v1`.
    pub fn api_path(self) -> &'static str {
        match self {
            Kind::Domain => "/v1/domains",
            Kind::Channel => "/v1/channels",
            Kind::StatusPage => "/v1/status-pages",
            Kind::Maintenance => "/v1/maintenance",
        }
    }

    /// The field that identifies a resource of this kind (for domains: `name`, else `url`).
    pub fn key_field(self) -> &'static str {
        match self {
            Kind::Domain => "name",
            Kind::Channel => "name",
            Kind::StatusPage => "slug",
            Kind::Maintenance => "title",
        }
    }

    /// Every key the file form of this kind may have, in the order `export` writes them.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Domain => &DOMAIN_FIELDS,
            Kind::Channel => &CHANNEL_FIELDS,
            Kind::StatusPage => &["slug", "title", "description", "hostnames", "components"],
            Kind::Maintenance => &[
                "title",
                "description",
                "time_zone",
                "scope",
                "starts_at",
                "ends_at",
                "dtstart",
                "duration",
                "rrule",
            ],
        }
    }
}

const DOMAIN_FIELDS: [&str; 25] = [
    "name",
    "url",
    "check",
    "json",
    "method",
    "headers",
    "auth",
    "body",
    "body_env",
    "expected_status",
    "keyword",
    "keyword_mode",
    "keyword_case_insensitive",
    "interval",
    "timeout_ms",
    "regions",
    "quorum",
    "paused",
    "tls_verify",
    "http_version",
    "tags",
    "flap",
    "dns_drift",
    "slo",
    "degraded",
];

/// The fields only an `http` check has.
pub const HTTP_ONLY: [&str; 12] = [
    "url",
    "method",
    "headers",
    "auth",
    "body",
    "body_env",
    "expected_status",
    "keyword",
    "keyword_mode",
    "keyword_case_insensitive",
    "http_version",
    "json",
];

const CHANNEL_FIELDS: [&str; 15] = [
    "name",
    "kind",
    "enabled",
    "url",
    "url_env",
    "to",
    "chat_id",
    "topic",
    "routing_key_env",
    "bot_token_env",
    "token_env",
    "events",
    "tags",
    "storm_window_s",
    "storm_threshold",
];

/// Channel kinds whose URL is itself a credential (it embeds the token): only `url_env`.
pub const URL_IS_SECRET: [&str; 3] = ["slack", "teams", "discord"];

/// The default endpoint of the channel kinds that have one.
fn default_channel_url(kind: &str) -> Option<&'static str> {
    match kind {
        "pagerduty" => Some("https://events.pagerduty.com/v2/enqueue"),
        "telegram" => Some("https://api.telegram.org"),
        "ntfy" => Some("https://ntfy.sh"),
        _ => None,
    }
}

/// The write-only credential field of a channel kind, in file form.
pub fn channel_secret_field(kind: &str) -> Option<&'static str> {
    match kind {
        "pagerduty" => Some("routing_key_env"),
        "telegram" => Some("bot_token_env"),
        "ntfy" => Some("token_env"),
        _ => None,
    }
}

/// The named intervals and their seconds (the server's tiers).
const TIERS: [(&str, u64); 3] = [("fast", 30), ("standard", 60), ("relaxed", 300)];

fn interval_seconds(interval: Option<&Value>) -> Option<u64> {
    match interval {
        None => Some(60),
        Some(Value::String(name)) => TIERS.iter().find(|(t, _)| t == name).map(|(_, s)| *s),
        Some(v) => v.as_u64(),
    }
}

/// The server's default `timeout_ms` for an interval: half of it, at most 10 s, at least 100 ms.
pub fn default_timeout_ms(interval: Option<&Value>) -> Option<u64> {
    interval_seconds(interval).map(|s| (s * 1000 / 2).clamp(100, 10_000))
}

/// The display URL the server gives a non-HTTP check (`tcp://host:port`, `tls://…`,
/// `dns://name/TYPE`), which identifies an unnamed domain of that check.
pub fn check_display_url(check: &Map<String, Value>) -> Option<String> {
    let host = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_owned() };
    let text = |k: &str| check.get(k).and_then(Value::as_str);
    match text("type")? {
        kind @ ("tcp" | "tls") => {
            Some(format!("{kind}://{}:{}", host(text("host")?.trim()), check.get("port")?))
        }
        "dns" => Some(format!(
            "dns://{}/{}",
            text("name")?.trim().trim_end_matches('.').to_ascii_lowercase(),
            text("record_type")?.to_ascii_uppercase()
        )),
        _ => None,
    }
}

/// The key of a canonical resource (see [`Kind::key_field`]); `None` when it has none.
pub fn key_of(kind: Kind, fields: &Map<String, Value>) -> Option<String> {
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    match kind {
        Kind::Domain => text("name")
            .or_else(|| text("url"))
            .or_else(|| fields.get("check").and_then(Value::as_object).and_then(check_display_url)),
        other => text(other.key_field()),
    }
}

// ---------------------------------------------------------------------------------------------
// Normalizing and dropping defaults: the same function for both sides.

/// The canonical file form of a resource given in file form (either side).
pub fn canonical(kind: Kind, fields: &Map<String, Value>) -> Map<String, Value> {
    let mut out = match kind {
        Kind::Domain => canonical_domain(fields),
        Kind::Channel => canonical_channel(fields),
        Kind::StatusPage => canonical_page(fields),
        Kind::Maintenance => canonical_window(fields),
    };
    out.retain(|_, v| !v.is_null());
    // The export order, whatever order the file had.
    let mut ordered = Map::new();
    for key in kind.fields() {
        if let Some(v) = out.remove(*key) {
            ordered.insert((*key).to_owned(), v);
        }
    }
    ordered.extend(out);
    ordered
}

fn trimmed(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::from(s.trim()),
        other => other.clone(),
    }
}

fn normalize_url(v: &Value) -> Value {
    match v.as_str().map(|s| Url::parse(s.trim())) {
        Some(Ok(url)) => Value::from(url.as_str()),
        _ => v.clone(),
    }
}

/// A tag as the server stores it (trimmed, lowercased).
fn tag(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::from(s.trim().to_ascii_lowercase()),
        other => other.clone(),
    }
}

/// Sorted, deduplicated (a list of strings; anything else is left for the server to refuse).
fn sorted_set(v: &Value, each: fn(&Value) -> Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut out: Vec<Value> = items.iter().map(each).collect();
            out.sort_by_key(|a| a.to_string());
            out.dedup();
            Value::Array(out)
        }
        other => other.clone(),
    }
}

/// Deduplicated in the order given.
fn ordered_set(v: &Value, each: fn(&Value) -> Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut out: Vec<Value> = Vec::new();
            for item in items.iter().map(each) {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
}

fn is_empty_collection(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.is_empty()) || matches!(v, Value::Object(m) if m.is_empty())
}

/// An HTTP status range as the server writes it: `200-299`, `204`.
fn status_range(v: &Value) -> Value {
    let raw = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        other => return other.clone(),
    };
    let range = if let Some(class) = raw.strip_suffix("xx").and_then(|d| d.parse::<u16>().ok()) {
        Some((class * 100, class * 100 + 99))
    } else if let Some((a, b)) = raw.split_once('-') {
        a.trim().parse::<u16>().ok().zip(b.trim().parse::<u16>().ok())
    } else {
        raw.parse::<u16>().ok().map(|n| (n, n))
    };
    match range {
        Some((a, b)) if a == b => Value::from(a.to_string()),
        Some((a, b)) => Value::from(format!("{a}-{b}")),
        None => Value::from(raw),
    }
}

/// An object with its null entries dropped, `None` when nothing is left.
fn object_without_nulls(v: &Value) -> Option<Value> {
    match v {
        Value::Object(map) => {
            let map: Map<String, Value> =
                map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        Value::Null => None,
        other => Some(other.clone()),
    }
}

fn canonical_domain(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let check = fields.get("check").and_then(|c| match c {
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("http") && map.len() == 1 => {
            None
        }
        Value::Object(map) => {
            let mut map = map.clone();
            map.retain(|_, v| !(v.is_null() || *v == Value::Bool(false) || is_empty_collection(v)));
            if let Some(Value::String(t)) = map.get("record_type") {
                let upper = t.to_ascii_uppercase();
                map.insert("record_type".into(), Value::from(upper));
            }
            Some(Value::Object(map))
        }
        Value::Null => None,
        other => Some(other.clone()),
    });
    let http = check.is_none();
    for (key, value) in fields {
        if value.is_null() || (!http && HTTP_ONLY.contains(&key.as_str())) {
            continue;
        }
        let kept = match key.as_str() {
            "check" => continue,
            "name" => Some(trimmed(value)),
            "url" => Some(normalize_url(value)),
            "json" => object_without_nulls(value),
            "method" => match value.as_str().map(str::to_ascii_uppercase) {
                Some(m) if m == "GET" => None,
                Some(m) => Some(Value::from(m)),
                None => Some(value.clone()),
            },
            "headers" => (!is_empty_collection(value)).then(|| value.clone()),
            "auth" => Some(value.clone()),
            "body" | "body_env" => Some(value.clone()),
            "expected_status" => Some(status_range(value)).filter(|v| v != "200-299"),
            "keyword" => Some(value.clone()),
            "keyword_mode" => (fields.get("keyword").is_some_and(|k| !k.is_null()) && value != "contains")
                .then(|| value.clone()),
            "keyword_case_insensitive" => (fields.get("keyword").is_some_and(|k| !k.is_null())
                && *value != Value::Bool(false))
            .then(|| value.clone()),
            "interval" => (value != "standard").then(|| value.clone()),
            "timeout_ms" => {
                let default = default_timeout_ms(fields.get("interval").filter(|v| !v.is_null()));
                (value.as_u64() != default || default.is_none()).then(|| value.clone())
            }
            "regions" => Some(sorted_set(value, trimmed)).filter(|v| !is_empty_collection(v)),
            "quorum" => Some(value.clone()),
            "paused" => (*value != Value::Bool(false)).then(|| value.clone()),
            "tls_verify" => (*value != Value::Bool(true)).then(|| value.clone()),
            "http_version" => (value != "auto").then(|| value.clone()),
            "tags" => Some(sorted_set(value, tag)).filter(|v| !is_empty_collection(v)),
            "flap" | "degraded" => object_without_nulls(value),
            "dns_drift" => match value {
                Value::Object(map) => {
                    let defaults = json!({"notify": false, "stable_probes": 3, "allowed_networks": [], "same_network": false});
                    let kept: Map<String, Value> = map
                        .iter()
                        .filter(|(k, v)| !v.is_null() && defaults.get(k.as_str()) != Some(*v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    (!kept.is_empty()).then_some(Value::Object(kept))
                }
                other => Some(other.clone()),
            },
            "slo" => match value {
                Value::Object(map) => {
                    let mut map = map.clone();
                    map.retain(|k, v| {
                        !(v.is_null()
                            || (k == "period" && v == "month")
                            || (k == "budget_alert_fraction" && v.as_f64() == Some(0.25)))
                    });
                    Some(Value::Object(map))
                }
                other => Some(other.clone()),
            },
            _ => Some(value.clone()),
        };
        if let Some(v) = kept {
            out.insert(key.clone(), v);
        }
    }
    if let Some(check) = check {
        out.insert("check".into(), check);
    }
    out
}

/// The fields `canonical` keeps, each as `keep` rewrites it (`None`: left out).
fn keep_fields(
    fields: &Map<String, Value>,
    keep: impl Fn(&str, &Value) -> Option<Value>,
) -> Map<String, Value> {
    fields.iter().filter_map(|(key, value)| Some((key.clone(), keep(key, value)?))).collect()
}

fn canonical_channel(fields: &Map<String, Value>) -> Map<String, Value> {
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("");
    keep_fields(fields, |key, value| match key {
        "name" => Some(trimmed(value)),
        "enabled" => (*value != Value::Bool(true)).then(|| value.clone()),
        "storm_window_s" => (value.as_u64() != Some(10)).then(|| value.clone()),
        "storm_threshold" => (value.as_u64() != Some(1)).then(|| value.clone()),
        "events" => Some(ordered_set(value, trimmed)),
        "tags" => Some(ordered_set(value, tag)),
        "url" => {
            let url = normalize_url(value);
            (default_channel_url(kind).map(|d| normalize_url(&Value::from(d))) != Some(url.clone()))
                .then_some(url)
        }
        _ => Some(value.clone()),
    })
}

fn canonical_page(fields: &Map<String, Value>) -> Map<String, Value> {
    keep_fields(fields, |key, value| match key {
        "title" | "description" => Some(trimmed(value)),
        "hostnames" => Some(ordered_set(value, tag)).filter(|v| !is_empty_collection(v)),
        "components" => Some(match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|c| match c {
                        Value::Object(map) => {
                            let mut map = map.clone();
                            if let Some(reveal) = map.get("reveal") {
                                map.insert("reveal".into(), sorted_set(reveal, trimmed));
                            }
                            map.retain(|_, v| !(v.is_null() || is_empty_collection(v)));
                            Value::Object(map)
                        }
                        other => other.clone(),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }),
        _ => Some(value.clone()),
    })
}

fn canonical_window(fields: &Map<String, Value>) -> Map<String, Value> {
    keep_fields(fields, |key, value| match key {
        "title" | "description" | "rrule" | "dtstart" => Some(trimmed(value)).filter(|v| v != ""),
        "time_zone" => (value != "UTC").then(|| value.clone()),
        "scope" => match value {
            Value::Object(map) => {
                let mut map = map.clone();
                if let Some(d) = map.get("domains") {
                    map.insert("domains".into(), sorted_set(d, trimmed));
                }
                if let Some(t) = map.get("tags") {
                    map.insert("tags".into(), sorted_set(t, tag));
                }
                map.retain(|_, v| !(v.is_null() || is_empty_collection(v)));
                Some(Value::Object(map))
            }
            other => Some(other.clone()),
        },
        "starts_at" | "ends_at" => Some(instant(value)),
        "duration" => Some(iso_duration(value)),
        _ => Some(value.clone()),
    })
}

/// An RFC 3339 instant as the server writes it (UTC, `Z`).
fn instant(v: &Value) -> Value {
    match v.as_str().map(|s| chrono::DateTime::parse_from_rfc3339(s.trim())) {
        Some(Ok(t)) => serde_json::to_value(t.with_timezone(&chrono::Utc)).unwrap_or_else(|_| v.clone()),
        _ => v.clone(),
    }
}

/// An ISO 8601 duration (or a number of seconds) as the server writes it: `P1DT2H30M`.
fn iso_duration(v: &Value) -> Value {
    let parsed = match v {
        Value::Number(n) => n.as_u64().map(|s| (0, s)),
        Value::String(s) => parse_iso_duration(s.trim()),
        _ => None,
    };
    let Some((days, seconds)) = parsed else { return v.clone() };
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if seconds > 0 {
        out.push('T');
        for (n, unit) in [(seconds / 3600, 'H'), (seconds / 60 % 60, 'M'), (seconds % 60, 'S')] {
            if n > 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
    }
    Value::from(out)
}

/// `PnWnDTnHnMnS` (weeks as 7 days) into days and seconds; `None` for anything else.
fn parse_iso_duration(s: &str) -> Option<(u64, u64)> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut days = 0;
    let mut seconds = 0;
    for (part, units) in [(date, "WD"), (time, "HMS")] {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            if !units.contains(c) || number.is_empty() {
                return None;
            }
            let n: u64 = number.parse().ok()?;
            number.clear();
            match c {
                'W' => days += 7 * n,
                'D' => days += n,
                'H' => seconds += 3600 * n,
                'M' => seconds += 60 * n,
                _ => seconds += n,
            }
        }
        if !number.is_empty() {
            return None;
        }
    }
    Some((days, seconds))
}

// ---------------------------------------------------------------------------------------------
// The server's view into file form.

/// The file form of a resource as the API shows it: read-only fields dropped, domain ids as
/// keys (`keys`: id → domain key), secrets as `*_env: "(secret)"` (a secret URL as its value).
pub fn from_view(
    kind: Kind,
    view: &Map<String, Value>,
    keys: &BTreeMap<String, String>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let key_of_id =
        |v: &Value| v.as_str().and_then(|id| keys.get(id)).map_or(Value::Null, |k| Value::from(k.as_str()));
    match kind {
        Kind::Domain => {
            let http = view
                .get("check")
                .and_then(|c| c.get("type"))
                .and_then(Value::as_str)
                .is_none_or(|t| t == "http");
            for key in DOMAIN_FIELDS {
                let Some(value) = view.get(key) else { continue };
                match key {
                    "url" if !http => {}
                    "headers" => {
                        let headers: Vec<Value> = value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|h| {
                                if h.get("secret") == Some(&Value::Bool(true)) {
                                    json!({"name": h["name"], "value_env": SECRET})
                                } else {
                                    json!({"name": h["name"], "value": h["value"]})
                                }
                            })
                            .collect();
                        out.insert(key.into(), Value::from(headers));
                    }
                    "auth" => {
                        let auth = match value.get("kind").and_then(Value::as_str) {
                            Some("basic") => {
                                json!({"kind": "basic", "username": value["username"], "password_env": SECRET})
                            }
                            Some("bearer") => json!({"kind": "bearer", "token_env": SECRET}),
                            _ => Value::Null,
                        };
                        out.insert(key.into(), auth);
                    }
                    "body" if view.get("body_secret") == Some(&Value::Bool(true)) => {
                        out.insert("body_env".into(), Value::from(SECRET));
                    }
                    _ => {
                        out.insert(key.into(), value.clone());
                    }
                }
            }
        }
        Kind::Channel => {
            let kind_name = view.get("kind").and_then(Value::as_str).unwrap_or("");
            for key in CHANNEL_FIELDS {
                let Some(value) = view.get(key) else { continue };
                if key == "url" && URL_IS_SECRET.contains(&kind_name) {
                    out.insert("url_env".into(), value.clone());
                } else {
                    out.insert(key.into(), value.clone());
                }
            }
            // The API never shows the credential; PagerDuty and Telegram channels always have
            // one (ntfy's is optional and cannot be seen, so it is not compared).
            if let Some(field) = channel_secret_field(kind_name).filter(|f| *f != "token_env") {
                out.insert(field.into(), Value::from(SECRET));
            }
        }
        Kind::StatusPage => {
            for key in ["slug", "title", "description", "hostnames"] {
                if let Some(v) = view.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            let components: Vec<Value> = view
                .get("components")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| json!({"domain": key_of_id(&c["domain"]), "name": c["name"], "group": c["group"], "reveal": c["reveal"]}))
                .collect();
            out.insert("components".into(), Value::from(components));
        }
        Kind::Maintenance => {
            for key in Kind::Maintenance.fields() {
                if let Some(v) = view.get(*key) {
                    out.insert((*key).into(), v.clone());
                }
            }
            let scope = view.get("scope").cloned().unwrap_or(Value::Null);
            let domains: Vec<Value> = scope
                .get("domain_ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(key_of_id)
                .collect();
            out.insert(
                "scope".into(),
                json!({"domains": domains, "tags": scope.get("tags").cloned().unwrap_or(json!([]))}),
            );
        }
    }
    canonical(kind, &out)
}

// ---------------------------------------------------------------------------------------------
// Comparing.

/// The form two sides are compared in: every `*_env` value is [`SECRET`], except a secret
/// URL's (see the module doc): on the file side (`resolve` given) the environment's value of the
/// variable it names, on the server side the URL itself.
pub fn compare_form(fields: &Map<String, Value>, resolve: Option<Env<'_>>) -> Map<String, Value> {
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut out = Map::new();
    for (key, value) in fields {
        let v = match (key.as_str(), resolve) {
            ("url_env", Some(resolve)) if URL_IS_SECRET.contains(&kind) => value
                .as_str()
                .and_then(resolve)
                .map_or_else(|| Value::from(SECRET), |u| normalize_url(&Value::from(u))),
            ("url_env", None) if URL_IS_SECRET.contains(&kind) => normalize_url(value),
            _ => mask(key, value),
        };
        out.insert(key.clone(), v);
    }
    out
}

fn mask(key: &str, value: &Value) -> Value {
    if key.ends_with("_env") {
        return Value::from(SECRET);
    }
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), mask(k, v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(|v| mask("", v)).collect()),
        other => other.clone(),
    }
}

/// The top-level fields whose values differ (a field missing on one side is its default).
pub fn changed_fields(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| before.get(*k) != after.get(*k)).cloned().collect()
}

// ---------------------------------------------------------------------------------------------
// Back to the API.

/// Why a request body cannot be built: the environment variable a `*_env` field names is not
/// set, or a domain key names no domain. `path` is relative to the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub path: String,
    pub message: String,
}

/// What [`request`] reads: the environment and the ids of domain keys.
pub struct Resolver<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub domain_ids: &'a BTreeMap<String, String>,
}

impl Resolver<'_> {
    fn secret(&self, path: &str, var: &Value) -> Result<Value, RequestError> {
        let name = var.as_str().unwrap_or("");
        match (self.env)(name) {
            Some(value) if !value.is_empty() => Ok(Value::from(value)),
            _ => Err(RequestError {
                path: path.into(),
                message: format!("environment variable {name} is not set"),
            }),
        }
    }

    fn domain(&self, path: &str, key: &Value) -> Result<Value, RequestError> {
        match key.as_str().and_then(|k| self.domain_ids.get(k)) {
            Some(id) => Ok(Value::from(id.as_str())),
            None => Err(RequestError { path: path.into(), message: format!("no domain {key} to refer to") }),
        }
    }
}

/// The API request fields for the canonical file-form `fields` of `kind`, only those named in
/// `only` (all when `None`); a named field missing from `fields` is sent as its default, so a
/// field removed from the file is reset.
pub fn request(
    kind: Kind,
    fields: &Map<String, Value>,
    only: Option<&[String]>,
    resolver: &Resolver<'_>,
) -> Result<Map<String, Value>, RequestError> {
    let mut out = Map::new();
    let wanted = |k: &str| only.is_none_or(|only| only.iter().any(|o| o == k));
    for key in kind.fields() {
        if !wanted(key) {
            continue;
        }
        match fields.get(*key) {
            Some(value) => put(kind, key, value, resolver, &mut out)?,
            None if only.is_some() => reset(kind, key, fields, &mut out),
            None => {}
        }
    }
    if kind == Kind::Domain
        && only.is_some_and(|o| o.iter().any(|k| k == "interval"))
        && !out.contains_key("timeout_ms")
    {
        // A new interval with the old timeout may be refused: send the timeout it goes with.
        let timeout = fields
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .or_else(|| default_timeout_ms(fields.get("interval")));
        out.insert("timeout_ms".into(), timeout.map_or(Value::Null, Value::from));
    }
    if kind == Kind::Domain && only.is_some_and(|o| o.iter().any(|k| k == "keyword")) {
        for key in ["keyword_mode", "keyword_case_insensitive"] {
            if !out.contains_key(key) {
                out.insert(key.into(), fields.get(key).cloned().unwrap_or(Value::Null));
            }
        }
    }
    Ok(out)
}

fn put(
    kind: Kind,
    key: &str,
    value: &Value,
    resolver: &Resolver<'_>,
    out: &mut Map<String, Value>,
) -> Result<(), RequestError> {
    match (kind, key) {
        (Kind::Domain, "headers") => {
            let mut headers = Vec::new();
            for (i, h) in value.as_array().into_iter().flatten().enumerate() {
                match h.get("value_env") {
                    Some(var) => {
                        let secret = resolver.secret(&format!("headers[{i}].value_env"), var)?;
                        headers.push(json!({"name": h["name"], "value": secret, "secret": true}));
                    }
                    None => headers.push(json!({"name": h["name"], "value": h["value"], "secret": false})),
                }
            }
            out.insert("headers".into(), Value::from(headers));
        }
        (Kind::Domain, "auth") => {
            let mut auth = value.as_object().cloned().unwrap_or_default();
            for field in ["password", "token"] {
                if let Some(var) = auth.remove(&format!("{field}_env")) {
                    auth.insert(field.into(), resolver.secret(&format!("auth.{field}_env"), &var)?);
                }
            }
            out.insert("auth".into(), Value::Object(auth));
        }
        (Kind::Domain, "body") => {
            out.insert("body".into(), value.clone());
            out.insert("body_secret".into(), Value::Bool(false));
        }
        (Kind::Domain, "body_env") => {
            out.insert("body".into(), resolver.secret("body_env", value)?);
            out.insert("body_secret".into(), Value::Bool(true));
        }
        (Kind::Channel, "url_env" | "routing_key_env" | "bot_token_env" | "token_env") => {
            let field = key.trim_end_matches("_env");
            out.insert(field.into(), resolver.secret(key, value)?);
        }
        (Kind::StatusPage, "components") => {
            let mut components = Vec::new();
            for (i, c) in value.as_array().into_iter().flatten().enumerate() {
                let mut c = c.as_object().cloned().unwrap_or_default();
                if let Some(key) = c.get("domain").cloned() {
                    c.insert("domain".into(), resolver.domain(&format!("components[{i}].domain"), &key)?);
                }
                components.push(Value::Object(c));
            }
            out.insert("components".into(), Value::from(components));
        }
        (Kind::Maintenance, "scope") => {
            let mut scope = Map::new();
            let mut ids = Vec::new();
            for (i, key) in value.get("domains").and_then(Value::as_array).into_iter().flatten().enumerate() {
                ids.push(resolver.domain(&format!("scope.domains[{i}]"), key)?);
            }
            scope.insert("domain_ids".into(), Value::from(ids));
            scope.insert("tags".into(), value.get("tags").cloned().unwrap_or(json!([])));
            out.insert("scope".into(), Value::Object(scope));
        }
        _ => {
            out.insert(key.into(), value.clone());
        }
    }
    Ok(())
}

/// The request value that puts `key` back to its default.
fn reset(kind: Kind, key: &str, fields: &Map<String, Value>, out: &mut Map<String, Value>) {
    let value = match (kind, key) {
        (Kind::Domain, "check") => json!({"type": "http"}),
        (Kind::Domain, "method") => Value::from("GET"),
        (Kind::Domain, "headers" | "regions" | "tags") => json!([]),
        (Kind::Domain, "body" | "body_env") => {
            if fields.contains_key("body") || fields.contains_key("body_env") {
                return;
            }
            out.insert("body_secret".into(), Value::Null);
            Value::Null
        }
        (Kind::Domain, "expected_status") => Value::from("200-299"),
        (Kind::Domain, "interval") => Value::from("standard"),
        (Kind::Domain, "timeout_ms") => {
            default_timeout_ms(fields.get("interval")).map_or(Value::Null, Value::from)
        }
        (Kind::Domain, "paused") => Value::Bool(false),
        (Kind::Domain, "tls_verify") => Value::Bool(true),
        (Kind::Domain, "http_version") => Value::from("auto"),
        (Kind::Domain, "url") => return,
        (Kind::Channel, "enabled") => Value::Bool(true),
        (Kind::Channel, "storm_window_s") => Value::from(10),
        (Kind::Channel, "storm_threshold") => Value::from(1),
        (Kind::Channel, "url_env") => {
            if fields.contains_key("url") {
                return;
            }
            Value::Null
        }
        (Kind::StatusPage, "hostnames") => json!([]),
        (Kind::Maintenance, "time_zone") => Value::from("UTC"),
        _ => Value::Null,
    };
    let key = match key {
        "body_env" => "body",
        "url_env" => "url",
        other => other,
    };
    out.insert(key.into(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_are_dropped_and_values_normalized() {
        let file = map(json!({
            "url": "https://Example.com", "interval": "standard", "timeout_ms": 10000, "regions": ["sin", "ams", "sin"],
            "tags": [" Prod", "eu"], "expected_status": "2xx", "method": "get", "paused": false, "tls_verify": true,
            "dns_drift": {"notify": false, "stable_probes": 5}, "slo": {"target": 99.9, "period": "month"},
            "keyword_mode": "regex", "flap": {}, "name": null
        }));
        assert_eq!(
            Value::Object(canonical(Kind::Domain, &file)),
            json!({"url": "https://example.com/", "regions": ["ams", "sin"], "tags": ["eu", "prod"],
                   "dns_drift": {"stable_probes": 5}, "slo": {"target": 99.9}})
        );
        assert_eq!(status_range(&json!(204)), json!("204"));
        assert_eq!(status_range(&json!("301-302")), json!("301-302"));
    }

    #[test]
    fn the_timeout_default_follows_the_interval() {
        let fast = canonical(
            Kind::Domain,
            &map(json!({"url": "https://a.example.com/", "interval": "fast", "timeout_ms": 10000})),
        );
        assert!(!fast.contains_key("timeout_ms"), "half of 30 s is more than 10 s: the default is 10 s");
        let fast = canonical(
            Kind::Domain,
            &map(json!({"url": "https://a.example.com/", "interval": "fast", "timeout_ms": 5000})),
        );
        assert_eq!(fast["timeout_ms"], json!(5000));
        let ten = canonical(
            Kind::Domain,
            &map(json!({"url": "https://a.example.com/", "interval": 10, "timeout_ms": 5000})),
        );
        assert!(!ten.contains_key("timeout_ms"));
        assert_eq!(default_timeout_ms(Some(&json!(1))), Some(500));
        assert_eq!(default_timeout_ms(Some(&json!("relaxed"))), Some(10_000));
    }

    #[test]
    fn a_non_http_check_keeps_no_http_fields_and_is_keyed_by_its_display_url() {
        let view = map(json!({
            "url": "tcp://db.example.com:5432", "check": {"type": "tcp", "host": "db.example.com", "port": 5432},
            "method": "GET", "headers": [], "expected_status": "200-299", "name": null, "interval": "standard"
        }));
        let form = from_view(Kind::Domain, &view, &BTreeMap::new());
        assert_eq!(
            Value::Object(form.clone()),
            json!({"check": {"type": "tcp", "host": "db.example.com", "port": 5432}})
        );
        assert_eq!(key_of(Kind::Domain, &form).as_deref(), Some("tcp://db.example.com:5432"));
        let dns = map(json!({"type": "dns", "name": "Example.com.", "record_type": "aaaa"}));
        assert_eq!(check_display_url(&dns).as_deref(), Some("dns://example.com/AAAA"));
    }

    #[test]
    fn secrets_compare_by_presence_and_a_secret_url_by_value() {
        let env = |name: &str| (name == "HOOK").then(|| "https://hooks.slack.com/services/T/B/x".to_owned());
        let file = canonical(Kind::Channel, &map(json!({"name": "s", "kind": "slack", "url_env": "HOOK"})));
        let server = from_view(
            Kind::Channel,
            &map(
                json!({"id": "1", "name": "s", "kind": "slack", "url": "https://hooks.slack.com/services/T/B/x", "enabled": true,
                        "storm_window_s": 10, "storm_threshold": 1, "events": null, "tags": null, "created_at": "x"}),
            ),
            &BTreeMap::new(),
        );
        assert_eq!(compare_form(&file, Some(&env)), compare_form(&server, None));
        let other = |_: &str| Some("https://hooks.slack.com/services/T/B/y".to_owned());
        assert_ne!(compare_form(&file, Some(&other)), compare_form(&server, None));

        let pd = canonical(
            Kind::Channel,
            &map(json!({"name": "p", "kind": "pagerduty", "routing_key_env": "PD"})),
        );
        let pd_server = from_view(
            Kind::Channel,
            &map(json!({"name": "p", "kind": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue"})),
            &BTreeMap::new(),
        );
        assert_eq!(compare_form(&pd, Some(&env)), compare_form(&pd_server, None));
    }

    #[test]
    fn durations_and_instants_take_the_servers_form() {
        assert_eq!(iso_duration(&json!("PT90M")), json!("PT1H30M"));
        assert_eq!(iso_duration(&json!("P1W")), json!("P7D"));
        assert_eq!(iso_duration(&json!(3600)), json!("PT1H"));
        assert_eq!(iso_duration(&json!("P1DT2H")), json!("P1DT2H"));
        assert_eq!(iso_duration(&json!("nonsense")), json!("nonsense"));
        assert_eq!(instant(&json!("2026-12-06T03:00:00+01:00")), json!("2026-12-06T02:00:00Z"));
    }

    #[test]
    fn a_patch_resets_removed_fields_and_carries_the_timeout_with_a_new_interval() {
        let env = |_: &str| None;
        let ids = BTreeMap::new();
        let resolver = Resolver { env: &env, domain_ids: &ids };
        let fields = map(json!({"url": "https://a.example.com/", "interval": 10}));
        let only = vec!["interval".to_owned(), "tags".to_owned(), "quorum".to_owned()];
        let patch = request(Kind::Domain, &fields, Some(&only), &resolver).unwrap();
        assert_eq!(
            Value::Object(patch),
            json!({"interval": 10, "timeout_ms": 5000, "tags": [], "quorum": null})
        );
        let secret = map(json!({"url": "https://a.example.com/", "body_env": "NOPE", "method": "POST"}));
        let e = request(Kind::Domain, &secret, None, &resolver).unwrap_err();
        assert_eq!(e.path, "body_env");
        assert_eq!(e.message, "environment variable NOPE is not set");
    }
}
