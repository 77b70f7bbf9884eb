//! Parsing a domain request into a [`DomainSpec`]: every field is checked and every problem is
//! reported at once, by field name, so an operator fixes a request in one round trip.
//!
//! Requests are JSON objects. Creation parses the object as it is; an update (`PATCH`) overlays
//! the patch on the current domain's request form and parses the result, so both paths share
//! one set of rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Map, Value};
use shared::domain::{DEFAULT_AGENTS_PER_REGION, MAX_AGENTS_PER_REGION};
use shared::netguard;
use shared::{
    CheckConfig, DomainConfig, DomainId, HttpMethod, HttpVersion, JsonAssertion, KeywordCheck, KeywordMode,
    RequestConfig, StatusRange,
};
use url::Url;

use super::{check, request};
use crate::flap;

/// Named probe intervals, for operators who prefer a tier to a number of seconds.
pub const TIERS: [(&str, u32); 3] = [("fast", 30), ("standard", 60), ("relaxed", 300)];

const KNOWN_FIELDS: [&str; 26] = [
    "name",
    "check",
    "json",
    "url",
    "method",
    "headers",
    "auth",
    "body",
    "body_secret",
    "expected_status",
    "keyword",
    "keyword_mode",
    "keyword_case_insensitive",
    "interval",
    "timeout_ms",
    "regions",
    "quorum",
    "paused",
    "flap",
    "dns_drift",
    "slo",
    "degraded",
    "tls_verify",
    "http_version",
    "tags",
    "agents_per_region",
];
/// The fields only an `http` check has: a request with another check type that sets one is
/// refused naming it, and a `PATCH` that changes the type drops those it does not set.
pub(super) const HTTP_ONLY: [&str; 12] = [
    "url",
    "method",
    "headers",
    "auth",
    "body",
    "body_secret",
    "expected_status",
    "keyword",
    "keyword_mode",
    "keyword_case_insensitive",
    "http_version",
    "json",
];
const MAX_URL_LEN: usize = 2048;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
const MAX_KEYWORD_LEN: usize = 256;
/// A regular expression may be longer than a keyword; its compiled size is bounded too
/// ([`shared::domain::KEYWORD_REGEX_SIZE_LIMIT`]).
const MAX_PATTERN_LEN: usize = 1024;
const DEFAULT_TIMEOUT_MS: u32 = 10_000;

/// The rules a domain is checked against; built from the configuration and the region table.
#[derive(Debug, Clone)]
pub struct Policy {
    pub min_interval_s: u32,
    pub max_interval_s: u32,
    pub max_timeout_ms: u32,
    pub allow_private_targets: bool,
    /// Every known region.
    pub regions: BTreeSet<String>,
    /// The global flap settings a domain's `flap` overrides are merged over and checked against.
    pub flap: flap::Settings,
    /// The global degraded settings a domain's `degraded` overrides are merged over and
    /// checked against.
    pub degraded: crate::degraded::Settings,
}

/// The interval as the operator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interval {
    Tier(&'static str, u32),
    Seconds(u32),
}

impl Interval {
    pub fn seconds(&self) -> u32 {
        match self {
            Interval::Tier(_, s) | Interval::Seconds(s) => *s,
        }
    }

    pub fn tier(&self) -> Option<&'static str> {
        match self {
            Interval::Tier(name, _) => Some(name),
            Interval::Seconds(_) => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Interval::Tier(name, _) => Value::from(*name),
            Interval::Seconds(s) => Value::from(*s),
        }
    }
}

/// A valid domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// A display name for people (the console, the default name on status pages); the URL
    /// when absent. Any text: every page escapes it. Not part of what agents receive.
    pub name: Option<String>,
    /// The URL an `http` check probes; for other checks their display URL
    /// (`tcp://host:port`, `tls://host:port`, `dns://name/TYPE`).
    pub url: Url,
    /// The check type and its settings (`check`; `http` when absent).
    pub check: CheckConfig,
    /// An `http` check's assertion on its JSON body (`json`).
    pub json_check: Option<JsonAssertion>,
    /// What the probe sends: `method`, `headers`, `auth`, `body` and `body_secret` of the
    /// request (see [`super::request`]). Holds secrets: show [`RequestConfig::redacted`].
    pub request: RequestConfig,
    pub expected_status: StatusRange,
    /// The body check: `keyword`, `keyword_mode` and `keyword_case_insensitive` of the request.
    pub keyword: Option<KeywordCheck>,
    pub interval: Interval,
    pub timeout_ms: u32,
    /// Sorted, deduplicated; empty = every region.
    pub regions: Vec<String>,
    pub quorum: Option<u32>,
    pub paused: bool,
    /// Whether an invalid certificate fails the probe (default `true`); `false` is insecure
    /// mode: the probe passes despite an invalid certificate, and every certificate fact and
    /// expiry notice keeps working.
    pub tls_verify: bool,
    /// The HTTP version the probe may speak (default `auto`: ALPN decides).
    pub http_version: HttpVersion,
    /// How many agents of each region probe the domain when a region runs several: 1 (the
    /// default) or 2 ([`shared::domain::MAX_AGENTS_PER_REGION`]). Consensus still counts one
    /// vote per region.
    pub agents_per_region: u32,
    /// Flap settings overriding the global ones (`None`: the global settings). Not part of
    /// what agents receive.
    pub flap: Option<flap::Overrides>,
    /// Labels maintenance windows and channel subscriptions select the domain by: normalized,
    /// deduplicated and sorted ([`super::tags`]). Not part of what agents receive.
    pub tags: Vec<String>,
    /// DNS drift settings (`None`: the defaults, see [`crate::dns_drift::Settings`]). Not part
    /// of what agents receive.
    pub dns_drift: Option<crate::dns_drift::Settings>,
    /// The domain's service level objective (`None`: none). Not part of what agents receive.
    pub slo: Option<crate::sla::Slo>,
    /// Latency anomaly settings overriding the global ones (`None`: the global settings). Not
    /// part of what agents receive.
    pub degraded: Option<crate::degraded::Overrides>,
}

/// Problems found in a request, by field name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    pub(crate) fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_owned()).or_insert_with(|| message.into());
    }

    /// A settings object parsed by `parse` (`None` when the field is absent), or `None` with
    /// each of the problems `parse` names (`flap.enter_transitions`, `slo.target`, …) added.
    fn settings<T>(
        &mut self,
        value: Option<&Value>,
        parse: impl FnOnce(&Value) -> Result<T, Vec<(String, String)>>,
    ) -> Option<T> {
        match parse(value?) {
            Ok(settings) => Some(settings),
            Err(problems) => {
                for (name, message) in problems {
                    self.add(&name, message);
                }
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl DomainSpec {
    /// Parses a request object against `policy`.
    pub fn parse(request: &Map<String, Value>, policy: &Policy) -> Result<Self, FieldErrors> {
        Self::parse_update(request, policy, None)
    }

    /// Parses a request object against `policy` as an update of `kept` (the stored request
    /// of the domain): secrets the request leaves out are kept (see [`super::request`]).
    pub fn parse_update(
        request: &Map<String, Value>,
        policy: &Policy,
        kept: Option<&RequestConfig>,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        for key in request.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                errors.add(key, "unknown field");
            }
        }
        let field = |name: &str| request.get(name).filter(|v| !v.is_null());

        let name = match field("name") {
            None => None,
            Some(Value::String(s))
                if !s.trim().is_empty()
                    && s.trim().chars().count() <= MAX_NAME_CHARS
                    && !s.chars().any(char::is_control) =>
            {
                Some(s.trim().to_owned())
            }
            Some(_) => {
                errors.add(
                    "name",
                    format!(
                        "must be a string of 1 to {MAX_NAME_CHARS} characters without control characters"
                    ),
                );
                None
            }
        };
        let check = check::parse_check(field("check"), policy, &mut errors);
        if let Some(kind) = check.as_ref().filter(|c| !c.is_http()) {
            for name in HTTP_ONLY.iter().filter(|name| field(name).is_some()) {
                errors.add(name, format!("only an http check has it; this is a {} check", kind.type_name()));
            }
        }
        let json_check = field("json").and_then(|v| check::parse_json(v, &mut errors));
        let url = match (field("url"), &check) {
            (_, Some(other)) if !other.is_http() => {
                other.display_url().and_then(|shown| Url::parse(&shown).ok()).or_else(|| {
                    errors.add("check", "cannot be shown as a URL");
                    None
                })
            }
            // A bad check says nothing about the URL it needs.
            (_, None) => None,
            (None, Some(_)) => {
                errors.add("url", "required");
                None
            }
            (Some(v), Some(_)) => parse_url(v, policy).map_err(|m| errors.add("url", m)).ok(),
        };
        let method = request::parse_method(field("method"), &mut errors);
        let sent = request::parse(request, method, kept, &mut errors);
        let expected_status = match field("expected_status") {
            None => Some(StatusRange::SUCCESS),
            Some(v) => parse_status(v).map_err(|m| errors.add("expected_status", m)).ok(),
        };
        let keyword_mode = match field("keyword_mode") {
            None => Some(KeywordMode::Contains),
            Some(Value::String(s)) if KeywordMode::ALL.iter().any(|m| m.as_str() == s) => {
                KeywordMode::ALL.into_iter().find(|m| m.as_str() == s)
            }
            Some(_) => {
                errors.add("keyword_mode", "must be \"contains\", \"not_contains\" or \"regex\"");
                None
            }
        };
        let case_insensitive = match field("keyword_case_insensitive") {
            None => Some(false),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.add("keyword_case_insensitive", "must be true or false");
                None
            }
        };
        let max_len = match keyword_mode {
            Some(KeywordMode::Regex) => MAX_PATTERN_LEN,
            _ => MAX_KEYWORD_LEN,
        };
        let keyword = match field("keyword") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max_len => {
                if method == Some(HttpMethod::Head) {
                    errors.add("keyword", "a HEAD response has no body to search; use GET");
                }
                match (keyword_mode, case_insensitive) {
                    (Some(mode), Some(case_insensitive)) => {
                        let check = KeywordCheck { pattern: s.clone(), mode, case_insensitive };
                        match check.regex() {
                            Ok(_) => Some(check),
                            Err(e) => {
                                errors.add(
                                    "keyword",
                                    format!("not a valid regular expression: {}", regex_error(&e)),
                                );
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
            Some(_) => {
                errors.add("keyword", format!("must be a string of 1 to {max_len} characters"));
                None
            }
        };
        let interval = match field("interval") {
            None => Some(Interval::Tier("standard", 60)),
            Some(v) => parse_interval(v, policy).map_err(|m| errors.add("interval", m)).ok(),
        };
        let timeout_ms = match field("timeout_ms") {
            None => interval.as_ref().map(|i| DEFAULT_TIMEOUT_MS.min(i.seconds() * 1000 / 2).max(100)),
            Some(v) => match v.as_u64() {
                Some(ms) if (100..=u64::from(policy.max_timeout_ms)).contains(&ms) => {
                    let ms = ms as u32;
                    match &interval {
                        Some(i) if u64::from(ms) >= u64::from(i.seconds()) * 1000 => {
                            errors.add("timeout_ms", "must be shorter than the interval");
                            None
                        }
                        _ => Some(ms),
                    }
                }
                _ => {
                    errors.add(
                        "timeout_ms",
                        format!("must be an integer from 100 to {}", policy.max_timeout_ms),
                    );
                    None
                }
            },
        };
        let regions = match field("regions") {
            None => Some(Vec::new()),
            Some(v) => parse_regions(v, policy).map_err(|m| errors.add("regions", m)).ok(),
        };
        let quorum = match field("quorum") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(q) if q >= 1 => {
                    let voters = match &regions {
                        Some(r) if !r.is_empty() => r.len(),
                        _ => policy.regions.len(),
                    };
                    if q as usize > voters {
                        errors.add("quorum", format!("must not exceed the number of regions ({voters})"));
                    }
                    Some(q as u32)
                }
                _ => {
                    errors.add("quorum", "must be a positive integer");
                    None
                }
            },
        };
        let paused = match field("paused") {
            None => Some(false),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.add("paused", "must be true or false");
                None
            }
        };
        let tls_verify = match field("tls_verify") {
            None => Some(true),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.add("tls_verify", "must be true or false");
                None
            }
        };
        // Never `None`: a bad value is an error, which stops the parse below anyway.
        let http_version = match field("http_version") {
            None => HttpVersion::Auto,
            Some(v) => v.as_str().and_then(HttpVersion::parse).unwrap_or_else(|| {
                errors.add("http_version", "must be \"auto\", \"http1\" or \"http2\"");
                HttpVersion::Auto
            }),
        };
        // Never out of range: a bad value is an error, which stops the parse below anyway.
        let agents_per_region = match field("agents_per_region") {
            None => DEFAULT_AGENTS_PER_REGION,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=u64::from(MAX_AGENTS_PER_REGION)).contains(&n) => n as u32,
                _ => {
                    errors.add("agents_per_region", format!("must be 1 or {MAX_AGENTS_PER_REGION}"));
                    DEFAULT_AGENTS_PER_REGION
                }
            },
        };

        let flap = errors
            .settings(field("flap"), |v| flap::Overrides::parse(v, &policy.flap))
            .filter(|o| !o.is_empty());
        let tags = match field("tags") {
            None => Vec::new(),
            Some(v) => super::tags::parse("tags", v).unwrap_or_else(|(name, message)| {
                errors.add(&name, message);
                Vec::new()
            }),
        };
        let dns_drift = errors.settings(field("dns_drift"), crate::dns_drift::Settings::parse);
        let slo = errors.settings(field("slo"), crate::sla::Slo::parse);
        let degraded = errors
            .settings(field("degraded"), |v| crate::degraded::Overrides::parse(v, &policy.degraded))
            .filter(|o| !o.is_empty());
        if json_check.is_some() && keyword.is_some() {
            errors.add("json", "cannot be combined with keyword: choose one body check");
        }
        if json_check.is_some() && method == Some(HttpMethod::Head) {
            errors.add("json", "a HEAD response has no body to check; use GET");
        }

        match (check, url, sent, expected_status, interval, timeout_ms, regions, paused, tls_verify) {
            (
                Some(check),
                Some(url),
                Some(sent),
                Some(expected_status),
                Some(interval),
                Some(timeout_ms),
                Some(regions),
                Some(paused),
                Some(tls_verify),
            ) if errors.is_empty() => Ok(DomainSpec {
                name,
                url,
                check,
                json_check,
                request: sent,
                expected_status,
                keyword,
                interval,
                timeout_ms,
                regions,
                quorum,
                paused,
                tls_verify,
                http_version,
                agents_per_region,
                flap,
                tags,
                dns_drift,
                slo,
                degraded,
            }),
            _ => Err(errors),
        }
    }

    /// The configuration agents receive for this spec under `id` at config `version` (no
    /// tenant; the request's secrets, which agents send; flap overrides and quorum are the
    /// control plane's own).
    pub fn agent_config(&self, id: DomainId, version: u64) -> DomainConfig {
        DomainConfig {
            id,
            url: self.url.to_string(),
            request: self.request.clone(),
            check: self.check.clone(),
            json_check: self.json_check.clone(),
            expected_status: self.expected_status,
            keyword: self.keyword.clone(),
            interval_s: self.interval.seconds(),
            timeout_ms: self.timeout_ms,
            regions: self.regions.clone(),
            paused: self.paused,
            tls_verify: self.tls_verify,
            http_version: self.http_version,
            agents_per_region: self.agents_per_region,
            version,
        }
    }

    /// The request form of this spec: parsing it again gives the same spec. `PATCH` overlays
    /// its fields on this. It holds the request's secrets: it is never shown.
    pub fn to_request(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("name".into(), self.name.as_deref().map_or(Value::Null, Value::from));
        if !self.check.is_http() {
            map.insert("check".into(), check::check_to_request(&self.check));
            map.insert("interval".into(), self.interval.to_json());
            map.insert("timeout_ms".into(), Value::from(self.timeout_ms));
            map.insert("regions".into(), Value::from(self.regions.clone()));
            map.insert("quorum".into(), self.quorum.map_or(Value::Null, Value::from));
            map.insert("paused".into(), Value::from(self.paused));
            map.insert("tls_verify".into(), Value::from(self.tls_verify));
            map.insert("agents_per_region".into(), Value::from(self.agents_per_region));
            map.insert("flap".into(), self.flap.as_ref().map_or(Value::Null, flap::Overrides::to_json));
            self.insert_settings(&mut map);
            return map;
        }
        map.insert("url".into(), Value::from(self.url.as_str()));
        map.insert("json".into(), self.json_check.as_ref().map_or(Value::Null, check::json_to_request));
        request::to_request(&self.request, &mut map);
        map.insert("expected_status".into(), Value::from(self.expected_status.to_string()));
        map.insert(
            "keyword".into(),
            self.keyword.as_ref().map_or(Value::Null, |k| Value::from(k.pattern.as_str())),
        );
        // Only with a keyword, so clearing the keyword in a PATCH clears its options too.
        if let Some(check) = &self.keyword {
            map.insert("keyword_mode".into(), Value::from(check.mode.as_str()));
            map.insert("keyword_case_insensitive".into(), Value::from(check.case_insensitive));
        }
        map.insert("interval".into(), self.interval.to_json());
        map.insert("timeout_ms".into(), Value::from(self.timeout_ms));
        map.insert("regions".into(), Value::from(self.regions.clone()));
        map.insert("quorum".into(), self.quorum.map_or(Value::Null, Value::from));
        map.insert("paused".into(), Value::from(self.paused));
        map.insert("tls_verify".into(), Value::from(self.tls_verify));
        map.insert("http_version".into(), Value::from(self.http_version.as_str()));
        map.insert("agents_per_region".into(), Value::from(self.agents_per_region));
        map.insert("flap".into(), self.flap.as_ref().map_or(Value::Null, flap::Overrides::to_json));
        self.insert_settings(&mut map);
        map
    }

    /// The fields every check type has beside its own: `tags`, `dns_drift`, `slo`, `degraded`
    /// (a `PATCH` of a tcp, dns or tls check that does not name them keeps them).
    fn insert_settings(&self, map: &mut Map<String, Value>) {
        map.insert("tags".into(), Value::from(self.tags.clone()));
        map.insert(
            "dns_drift".into(),
            self.dns_drift.as_ref().map_or(Value::Null, crate::dns_drift::Settings::to_json),
        );
        map.insert("slo".into(), self.slo.as_ref().map_or(Value::Null, crate::sla::Slo::to_json));
        map.insert(
            "degraded".into(),
            self.degraded.as_ref().map_or(Value::Null, crate::degraded::Overrides::to_json),
        );
    }
}

/// A regex error on one line: the crate's message is a multi-line picture of the pattern.
fn regex_error(error: &regex::Error) -> String {
    match error {
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled pattern exceeds the size limit of {limit} bytes")
        }
        other => {
            let text = other.to_string();
            let reason = text.lines().rev().find(|l| l.trim_start().starts_with("error:")).unwrap_or(&text);
            reason.trim().trim_start_matches("error:").trim().to_owned()
        }
    }
}

/// An `http`/`https` URL of at most 2048 characters without credentials or fragment, whose host
/// passes [`crate::hosts`]' rule, and the address its host names literally (`localhost` and
/// `*.localhost` count as 127.0.0.1). Shared by domain and notification-channel validation.
pub(crate) fn parse_http_url(value: &Value) -> Result<(Url, Option<IpAddr>), String> {
    let Value::String(raw) = value else {
        return Err("must be a string".into());
    };
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let host = crate::hosts::of_url(&url)?;
    Ok((url, host.address))
}

fn parse_url(value: &Value, policy: &Policy) -> Result<Url, String> {
    let (url, ip) = parse_http_url(value)?;
    if let Some(range) = ip.and_then(netguard::classify) {
        if !policy.allow_private_targets {
            return Err(format!("host is in a {range} address range, which this deployment does not probe"));
        }
    }
    Ok(url)
}

fn parse_status(value: &Value) -> Result<StatusRange, String> {
    match value {
        Value::Number(n) => n.to_string().parse(),
        Value::String(s) => s.parse(),
        _ => "".parse(),
    }
}

fn parse_interval(value: &Value, policy: &Policy) -> Result<Interval, String> {
    let interval = match value {
        Value::String(name) => {
            TIERS.iter().find(|(tier, _)| tier == name).map(|(tier, s)| Interval::Tier(tier, *s)).ok_or_else(
                || {
                    let names: Vec<_> = TIERS.iter().map(|(t, s)| format!("{t} ({s} s)")).collect();
                    format!("unknown tier; use one of {} or a number of seconds", names.join(", "))
                },
            )?
        }
        Value::Number(n) => match n.as_u64().and_then(|s| u32::try_from(s).ok()) {
            Some(s) => Interval::Seconds(s),
            None => return Err("must be a tier name or a whole number of seconds".into()),
        },
        _ => return Err("must be a tier name or a whole number of seconds".into()),
    };
    let s = interval.seconds();
    if s < policy.min_interval_s || s > policy.max_interval_s {
        return Err(format!(
            "must be between {} and {} seconds",
            policy.min_interval_s, policy.max_interval_s
        ));
    }
    Ok(interval)
}

/// A list of known region names, sorted and deduplicated; the error names the unknown ones and
/// lists the known.
pub fn parse_regions(value: &Value, policy: &Policy) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err("must be an array of region names".into());
    };
    let mut regions = BTreeSet::new();
    let mut unknown = Vec::new();
    for item in items {
        let Value::String(name) = item else {
            return Err("must be an array of region names".into());
        };
        if policy.regions.contains(name) {
            regions.insert(name.clone());
        } else {
            unknown.push(name.clone());
        }
    }
    if !unknown.is_empty() {
        let known: Vec<_> = policy.regions.iter().cloned().collect();
        return Err(format!("unknown region(s) {}; known: {}", unknown.join(", "), known.join(", ")));
    }
    Ok(regions.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            min_interval_s: 10,
            max_interval_s: 3600,
            max_timeout_ms: 30_000,
            allow_private_targets: false,
            regions: ["ams", "iad", "sin"].iter().map(|s| s.to_string()).collect(),
            flap: flap::Settings::from_config(&crate::Config::default()),
            degraded: crate::degraded::Settings::from_config(&crate::Config::default()),
        }
    }

    fn parse(v: Value) -> Result<DomainSpec, FieldErrors> {
        DomainSpec::parse(v.as_object().unwrap(), &policy())
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let spec = parse(json!({"url": "https://example.com/"})).unwrap();
        assert_eq!(spec.request, RequestConfig::default());
        assert_eq!(spec.expected_status, StatusRange::SUCCESS);
        assert_eq!(spec.interval, Interval::Tier("standard", 60));
        assert_eq!(spec.timeout_ms, 10_000);
        assert!(spec.regions.is_empty());
        assert!(!spec.paused);
        assert!(spec.tls_verify, "certificates are verified unless insecure mode is asked for");
    }

    #[test]
    fn insecure_mode_is_a_boolean_that_reaches_the_request_form() {
        let spec = parse(json!({"url": "https://example.com/", "tls_verify": false})).unwrap();
        assert!(!spec.tls_verify);
        assert_eq!(spec.to_request()["tls_verify"], json!(false));
        assert_eq!(DomainSpec::parse(&spec.to_request(), &policy()).unwrap(), spec);
        let errors = parse(json!({"url": "https://example.com/", "tls_verify": "no"})).unwrap_err();
        assert_eq!(errors.0["tls_verify"], "must be true or false");
    }

    #[test]
    fn agents_per_region_is_one_or_two_and_reaches_agents() {
        let spec = parse(json!({"url": "https://example.com/"})).unwrap();
        assert_eq!(spec.agents_per_region, 1);
        assert_eq!(spec.agent_config(DomainId::new(), 1).agents_per_region, 1);
        let two = parse(json!({"url": "https://example.com/", "agents_per_region": 2})).unwrap();
        assert_eq!(two.agents_per_region, 2);
        assert_eq!(two.agent_config(DomainId::new(), 1).agents_per_region, 2);
        assert_eq!(DomainSpec::parse(&two.to_request(), &policy()).unwrap(), two);
        let tcp = parse(
            json!({"check": {"type": "tcp", "host": "db.example.com", "port": 5432}, "agents_per_region": 2}),
        )
        .unwrap();
        assert_eq!(
            DomainSpec::parse(&tcp.to_request(), &policy()).unwrap(),
            tcp,
            "other check types keep it"
        );
        for bad in [json!(0), json!(3), json!(1.5), json!("2"), json!(-1), json!(true)] {
            let errors = parse(json!({"url": "https://example.com/", "agents_per_region": bad})).unwrap_err();
            assert_eq!(errors.0["agents_per_region"], "must be 1 or 2", "{bad}");
        }
    }

    #[test]
    fn http_version_defaults_to_auto_and_names_bad_values() {
        let spec = parse(json!({"url": "https://example.com/"})).unwrap();
        assert_eq!(spec.http_version, HttpVersion::Auto);
        for version in HttpVersion::ALL {
            let spec =
                parse(json!({"url": "https://example.com/", "http_version": version.as_str()})).unwrap();
            assert_eq!(spec.http_version, version);
            assert_eq!(spec.to_request()["http_version"], json!(version.as_str()));
            assert_eq!(spec.agent_config(DomainId::new(), 1).http_version, version);
        }
        for bad in [json!("h2"), json!("HTTP2"), json!(2), json!(true)] {
            let errors = parse(json!({"url": "https://example.com/", "http_version": bad})).unwrap_err();
            assert_eq!(errors.0["http_version"], "must be \"auto\", \"http1\" or \"http2\"", "{bad}");
        }
    }

    #[test]
    fn full_request_round_trips_through_its_request_form() {
        let spec = parse(json!({
            "url": "http://example.com:8080/health?x=1", "method": "HEAD", "expected_status": "200-399",
            "interval": 15, "timeout_ms": 5000, "regions": ["sin", "ams", "sin"], "quorum": 2, "paused": true
        }))
        .unwrap();
        assert_eq!(spec.regions, vec!["ams", "sin"]);
        assert_eq!(spec.expected_status, StatusRange { min: 200, max: 399 });
        let again = DomainSpec::parse(&spec.to_request(), &policy()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = parse(json!({
            "url": "ftp://example.com", "method": "TRACE", "expected_status": "abc", "interval": 1,
            "timeout_ms": 0, "regions": ["mars"], "quorum": 0, "paused": "yes", "colour": "blue"
        }))
        .unwrap_err();
        let fields: Vec<_> = errors.0.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "colour",
                "expected_status",
                "interval",
                "method",
                "paused",
                "quorum",
                "regions",
                "timeout_ms",
                "url"
            ]
        );
        assert_eq!(errors.0["colour"], "unknown field");
    }

    #[test]
    fn tags_are_normalized_named_and_round_trip() {
        let spec = parse(json!({"url": "https://example.com", "tags": ["Prod", "eu", "prod"]})).unwrap();
        assert_eq!(spec.tags, ["eu", "prod"]);
        assert_eq!(DomainSpec::parse(&spec.to_request(), &policy()).unwrap(), spec);
        assert!(parse(json!({"url": "https://example.com"})).unwrap().tags.is_empty());
        let errors = parse(json!({"url": "https://example.com", "tags": ["ok", "not ok"]})).unwrap_err();
        assert_eq!(errors.0["tags[1]"], super::super::tags::RULE);
        let errors = parse(json!({"url": "https://example.com", "tags": "prod"})).unwrap_err();
        assert_eq!(errors.0["tags"], "must be an array of tags");
    }

    #[test]
    fn missing_url_is_required() {
        let errors = parse(json!({})).unwrap_err();
        assert_eq!(errors.0["url"], "required");
    }

    #[test]
    fn status_forms() {
        for (input, min, max) in [
            (json!(204), 204, 204),
            (json!("2xx"), 200, 299),
            (json!("301-302"), 301, 302),
            (json!("404"), 404, 404),
        ] {
            let spec = parse(json!({"url": "https://example.com", "expected_status": input})).unwrap();
            assert_eq!(spec.expected_status, StatusRange { min, max });
        }
        for bad in [json!("299-200"), json!(99), json!("6xx"), json!(true)] {
            assert!(parse(json!({"url": "https://example.com", "expected_status": bad})).is_err());
        }
    }

    #[test]
    fn literal_private_hosts_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://192.168.0.1/",
            "http://localhost:8080/",
            "http://[fe80::1]/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            let errors = parse(json!({"url": url})).unwrap_err();
            assert!(errors.0["url"].contains("address range"), "{url}: {errors:?}");
        }
        let mut allow = policy();
        allow.allow_private_targets = true;
        assert!(DomainSpec::parse(json!({"url": "http://127.0.0.1:9/"}).as_object().unwrap(), &allow).is_ok());
    }

    #[test]
    fn url_shapes() {
        for bad in [
            "example.com",
            "https://user:pw@example.com/",
            "https://intranet/",
            "https://example.com/#x",
            "javascript:alert(1)",
        ] {
            assert!(parse(json!({"url": bad})).is_err(), "{bad}");
        }
        assert!(parse(json!({"url": format!("https://example.com/{}", "a".repeat(3000))})).is_err());
    }

    #[test]
    fn interval_and_timeout_bounds() {
        assert!(parse(json!({"url": "https://example.com", "interval": "fast"})).is_ok());
        assert!(parse(json!({"url": "https://example.com", "interval": "hourly"})).is_err());
        assert!(parse(json!({"url": "https://example.com", "interval": 9})).is_err());
        assert!(parse(json!({"url": "https://example.com", "interval": 3601})).is_err());
        let e =
            parse(json!({"url": "https://example.com", "interval": 10, "timeout_ms": 10_000})).unwrap_err();
        assert!(e.0["timeout_ms"].contains("shorter"));
        assert!(parse(json!({"url": "https://example.com", "timeout_ms": 30_001})).is_err());
    }

    #[test]
    fn quorum_is_bounded_by_regions() {
        assert!(parse(json!({"url": "https://example.com", "quorum": 3})).is_ok());
        assert!(parse(json!({"url": "https://example.com", "quorum": 4})).is_err());
        assert!(parse(json!({"url": "https://example.com", "regions": ["ams"], "quorum": 2})).is_err());
    }

    #[test]
    fn keyword_rules() {
        let spec = parse(json!({"url": "https://example.com", "keyword": "ok"})).unwrap();
        assert_eq!(spec.keyword, Some(KeywordCheck::contains("ok")));
        assert!(parse(json!({"url": "https://example.com", "keyword": ""})).is_err());
        assert!(parse(json!({"url": "https://example.com", "method": "HEAD", "keyword": "ok"})).is_err());
    }

    #[test]
    fn keyword_modes_and_case() {
        let spec = parse(json!({
            "url": "https://example.com", "keyword": "Maintenance", "keyword_mode": "not_contains",
            "keyword_case_insensitive": true
        }))
        .unwrap();
        let check = spec.keyword.clone().unwrap();
        assert_eq!((check.mode, check.case_insensitive), (KeywordMode::NotContains, true));
        assert_eq!(parse(Value::Object(spec.to_request())).unwrap(), spec, "the request form round-trips");

        let regex = parse(json!({"url": "https://example.com", "keyword": "v\\d+", "keyword_mode": "regex"}))
            .unwrap();
        assert_eq!(regex.keyword.unwrap().mode, KeywordMode::Regex);

        let bad = parse(json!({"url": "https://example.com", "keyword": "(open", "keyword_mode": "regex"}))
            .unwrap_err();
        let message = &bad.0["keyword"];
        assert!(
            message.starts_with("not a valid regular expression") && !message.contains('\n'),
            "{message}"
        );
        let huge = parse(
            json!({"url": "https://example.com", "keyword": "\\w{500}\\w{500}", "keyword_mode": "regex"}),
        )
        .unwrap_err();
        assert!(huge.0["keyword"].contains("size limit"), "{:?}", huge.0);
        // A literal keyword is never a regex, whatever it holds.
        assert!(parse(
            json!({"url": "https://example.com", "keyword": "(open", "keyword_case_insensitive": true})
        )
        .is_ok());

        let errors = parse(json!({
            "url": "https://example.com", "keyword": "x", "keyword_mode": "fuzzy", "keyword_case_insensitive": "yes"
        }))
        .unwrap_err();
        assert!(errors.0.contains_key("keyword_mode") && errors.0.contains_key("keyword_case_insensitive"));
        let long = "k".repeat(MAX_KEYWORD_LEN + 1);
        assert!(parse(json!({"url": "https://example.com", "keyword": long})).is_err());
        assert!(
            parse(json!({"url": "https://example.com", "keyword": long, "keyword_mode": "regex"})).is_ok()
        );
        // Options without a keyword check nothing and are not kept.
        let none = parse(json!({"url": "https://example.com", "keyword_mode": "regex"})).unwrap();
        assert_eq!(none.keyword, None);
        assert!(!none.to_request().contains_key("keyword_mode"));
    }

    #[test]
    fn degraded_settings_are_parsed_and_named() {
        let spec =
            parse(json!({"url": "https://example.com", "degraded": {"latency_ms": 800, "consecutive": 4}}))
                .unwrap();
        let degraded = spec.degraded.clone().unwrap();
        assert_eq!((degraded.latency_ms, degraded.consecutive, degraded.z), (Some(800), Some(4), None));
        assert_eq!(spec.to_request()["degraded"], json!({"latency_ms": 800, "consecutive": 4}));
        let e =
            parse(json!({"url": "https://example.com", "degraded": {"z": "high", "window": 1}})).unwrap_err();
        assert_eq!(e.0["degraded.z"], "must be a number from 1 to 20");
        assert_eq!(e.0["degraded.window"], "must be an integer from 5 to 1000");
        assert!(parse(json!({"url": "https://example.com", "degraded": 3}))
            .unwrap_err()
            .0
            .contains_key("degraded"));
        assert_eq!(parse(json!({"url": "https://example.com", "degraded": null})).unwrap().degraded, None);
    }

    #[test]
    fn flap_overrides_are_checked_against_the_global_settings() {
        let spec = parse(
            json!({"url": "https://example.com", "flap": {"enter_transitions": 3, "leave_transitions": 1}}),
        )
        .unwrap();
        let flap = spec.flap.clone().unwrap();
        assert_eq!((flap.enter_transitions, flap.leave_transitions), (Some(3), Some(1)));
        assert_eq!(DomainSpec::parse(&spec.to_request(), &policy()).unwrap(), spec);
        let e = parse(json!({"url": "https://example.com", "flap": {"leave_transitions": 6}})).unwrap_err();
        assert_eq!(e.0["flap.leave_transitions"], "must be below enter_transitions (6)");
        assert!(parse(json!({"url": "https://example.com", "flap": 5})).unwrap_err().0.contains_key("flap"));
        assert_eq!(parse(json!({"url": "https://example.com", "flap": {}})).unwrap().flap, None);
        assert_eq!(parse(json!({"url": "https://example.com", "flap": null})).unwrap().flap, None);
    }
}
