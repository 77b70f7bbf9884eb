//! The agent-facing domain configuration and the change notices that announce it.
//!
//! This is the JSON the control plane writes into the `<prefix>:domains` hash and every agent
//! keeps in memory. It carries only what probing needs: no tenant, no tokens, no channel
//! secrets. Unknown fields are ignored on read so a newer control plane can add fields while
//! older agents are still running (rolling deploys).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::check::{CheckConfig, JsonAssertion};
use crate::request::RequestConfig;

/// A domain's identity: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DomainId(pub Uuid);

impl DomainId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for DomainId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DomainId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The HTTP method a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl HttpMethod {
    pub const ALL: [HttpMethod; 7] = [
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
        HttpMethod::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
        }
    }

    /// The method named `name`, in any letter case.
    pub fn parse(name: &str) -> Option<HttpMethod> {
        Self::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether a request body may be configured: POST, PUT and PATCH.
    pub fn takes_body(self) -> bool {
        matches!(self, HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch)
    }
}

/// The HTTP version a probe may speak (JSON `"auto"`, `"http1"`, `"http2"`).
///
/// - `auto` (the default): over TLS, offer `h2` and `http/1.1` by ALPN and speak what the server
///   picks; plain `http://` speaks HTTP/1.1.
/// - `http1`: offer and speak only HTTP/1.1.
/// - `http2`: offer only `h2` over TLS (a server that does not select it fails the probe, kind
///   `http`); plain `http://` speaks HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    #[default]
    Auto,
    Http1,
    Http2,
}

impl HttpVersion {
    pub const ALL: [HttpVersion; 3] = [HttpVersion::Auto, HttpVersion::Http1, HttpVersion::Http2];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Auto => "auto",
            HttpVersion::Http1 => "http1",
            HttpVersion::Http2 => "http2",
        }
    }

    pub fn parse(text: &str) -> Option<HttpVersion> {
        HttpVersion::ALL.into_iter().find(|v| v.as_str() == text)
    }

    fn is_auto(&self) -> bool {
        *self == HttpVersion::Auto
    }
}

/// An inclusive range of acceptable HTTP status codes (a single code is `min == max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    pub const SUCCESS: StatusRange = StatusRange { min: 200, max: 299 };

    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

impl FromStr for StatusRange {
    type Err = String;

    /// A status code (`200`), an inclusive range (`200-299`) or a class (`2xx`), with codes from
    /// 100 to 599; the error says which forms are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const HELP: &str = "must be a status code (200), a range (\"200-299\") or a class (\"2xx\")";
        let s = s.trim();
        let range = if let Some(class) = s.strip_suffix("xx").and_then(|d| d.parse::<u16>().ok()) {
            Some(StatusRange { min: class * 100, max: class * 100 + 99 })
        } else if let Some((lo, hi)) = s.split_once('-') {
            match (lo.trim().parse(), hi.trim().parse()) {
                (Ok(min), Ok(max)) => Some(StatusRange { min, max }),
                _ => None,
            }
        } else {
            s.parse().ok().map(|c| StatusRange { min: c, max: c })
        };
        match range {
            Some(r) if (100..=599).contains(&r.min) && (100..=599).contains(&r.max) && r.min <= r.max => {
                Ok(r)
            }
            _ => Err(HELP.into()),
        }
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// How a domain's keyword is checked against the response body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeywordMode {
    /// The body must contain the keyword.
    #[default]
    Contains,
    /// The body must not contain the keyword (the check fails when it is present).
    NotContains,
    /// The body must match the keyword as a regular expression (`regex` crate syntax).
    Regex,
}

impl KeywordMode {
    pub const ALL: [KeywordMode; 3] = [KeywordMode::Contains, KeywordMode::NotContains, KeywordMode::Regex];

    /// The name used in JSON (`contains`, `not_contains`, `regex`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeywordMode::Contains => "contains",
            KeywordMode::NotContains => "not_contains",
            KeywordMode::Regex => "regex",
        }
    }
}

/// The largest compiled regular expression a keyword may become, in bytes of the compiled
/// program (the `regex` crate's `size_limit`); larger patterns are refused.
pub const KEYWORD_REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A body check: a keyword (or pattern), how it is matched and whether letter case matters.
/// Matching runs on the body after content decoding (gzip, br, …) and charset decoding to
/// UTF-8 text, never on raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordCheck {
    /// The keyword, or the regular expression in [`KeywordMode::Regex`]. Never empty.
    pub pattern: String,
    #[serde(default)]
    pub mode: KeywordMode,
    /// Compare with Unicode simple case folding (`É` matches `é`).
    #[serde(default)]
    pub case_insensitive: bool,
}

impl KeywordCheck {
    /// The plain check: the body must contain `keyword`, letter case counts.
    pub fn contains(keyword: impl Into<String>) -> Self {
        Self { pattern: keyword.into(), mode: KeywordMode::Contains, case_insensitive: false }
    }

    /// Whether this check means the same to agents that only know the `keyword` field.
    pub fn is_plain(&self) -> bool {
        self.mode == KeywordMode::Contains && !self.case_insensitive
    }

    /// The regular expression this check runs, when it needs one: the pattern itself in regex
    /// mode, the escaped keyword for a case-insensitive keyword; `None` for a case-sensitive
    /// keyword (matched as bytes). Errors name what is wrong with the pattern, including a
    /// pattern whose compiled form exceeds [`KEYWORD_REGEX_SIZE_LIMIT`].
    pub fn regex(&self) -> Result<Option<regex::Regex>, regex::Error> {
        let source = match (self.mode, self.case_insensitive) {
            (KeywordMode::Regex, _) => self.pattern.clone(),
            (_, true) => regex::escape(&self.pattern),
            (_, false) => return Ok(None),
        };
        regex::RegexBuilder::new(&source)
            .case_insensitive(self.case_insensitive)
            .size_limit(KEYWORD_REGEX_SIZE_LIMIT)
            .dfa_size_limit(4 * KEYWORD_REGEX_SIZE_LIMIT)
            .build()
            .map(Some)
    }
}

/// The keyword fields of [`DomainConfig`] in its JSON. A plain check is written as the
/// `keyword` string every agent understands; any other check as a `keyword_check` object and
/// no `keyword`, so an agent too old to know the object probes without a body check during a
/// rolling deploy instead of applying the wrong one (an inverted or literal-regex check would
/// report healthy sites down). Reading accepts either; the object wins when both are present.
mod keyword_json {
    use super::KeywordCheck;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Default, Serialize, Deserialize)]
    struct Fields {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyword: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyword_check: Option<KeywordCheck>,
    }

    pub fn serialize<S: Serializer>(value: &Option<KeywordCheck>, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = match value {
            None => Fields::default(),
            Some(check) if check.is_plain() => {
                Fields { keyword: Some(check.pattern.clone()), keyword_check: None }
            }
            Some(check) => Fields { keyword: None, keyword_check: Some(check.clone()) },
        };
        fields.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<KeywordCheck>, D::Error> {
        let fields = Fields::deserialize(deserializer)?;
        Ok(fields.keyword_check.or(fields.keyword.map(KeywordCheck::contains)))
    }
}

/// The request fields of [`DomainConfig`] in its JSON. A plain request (GET or HEAD and
/// nothing else) is written as the `method` string every agent understands; any other as a
/// `request` object and no `method`, so an agent too old to know the object cannot read the
/// domain and skips it (counted as a decode error) during a rolling deploy instead of probing
/// without the headers, credentials or body it needs (a false "down"). A check other than
/// `http` writes neither (`None`), for the same reason. Reading accepts either; the object
/// wins when both are present.
mod request_json {
    use crate::request::RequestConfig;
    use crate::HttpMethod;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Default, Serialize, Deserialize)]
    struct Fields {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<HttpMethod>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestConfig>,
    }

    pub fn serialize<S: Serializer>(value: &Option<RequestConfig>, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = match value {
            None => Fields::default(),
            Some(value) if value.is_plain() => Fields { method: Some(value.method), request: None },
            Some(value) => Fields { method: None, request: Some(value.clone()) },
        };
        fields.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<RequestConfig>, D::Error> {
        let fields = Fields::deserialize(deserializer)?;
        Ok(fields.request.or(fields.method.map(RequestConfig::new)))
    }
}

/// What an agent needs to probe one domain.
///
/// Its JSON (see `wire`) follows the rules that keep older agents safe during a rolling deploy:
/// unknown fields are ignored; a field whose meaning would change an older agent's verdict is
/// written so that the older agent either drops a check it cannot apply (a body check, a JSON
/// assertion) or cannot decode the domain at all and skips it (a non-plain request, a check
/// type other than `http`: no `method` is written for them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "wire::Config", into = "wire::Config")]
pub struct DomainConfig {
    pub id: DomainId,
    /// The probed URL of an `http` check; for other checks their display URL
    /// ([`CheckConfig::display_url`]).
    pub url: String,
    /// What the probe sends (JSON: `method` or `request`, see `request_json`). Carries the
    /// domain's secrets in plain text: show [`RequestConfig::redacted`] instead. Not written
    /// for other check types.
    pub request: RequestConfig,
    /// The kind of check (JSON: `check`, absent for `http`).
    pub check: CheckConfig,
    /// An `http` check's assertion on a JSON body (JSON: `json_check`).
    pub json_check: Option<JsonAssertion>,
    pub expected_status: StatusRange,
    /// The body check, when set (JSON: `keyword` or `keyword_check`, see `keyword_json`).
    pub keyword: Option<KeywordCheck>,
    pub interval_s: u32,
    pub timeout_ms: u32,
    /// Regions that probe this domain; empty means every region.
    pub regions: Vec<String>,
    pub paused: bool,
    /// Whether an invalid certificate fails the probe (`true`, the default). With `false`
    /// (insecure mode) the probe goes on past an invalid certificate; every certificate fact
    /// (validity, the named problem, days left, expiry alerts) is still recorded.
    pub tls_verify: bool,
    /// The HTTP version the probe may speak; `auto` (ALPN decides) when absent.
    pub http_version: HttpVersion,
    /// How many agents of each region probe the domain when a region runs several: 1 (the
    /// default, absent from the JSON) or 2. The agents of a region pick them by rendezvous
    /// hashing over their live members; a region with fewer agents has them all probe it.
    /// Older agents ignore the field (each probes every domain of its region).
    pub agents_per_region: u32,
    /// The config version of the change that produced this configuration.
    pub version: u64,
}

/// The default of [`DomainConfig::agents_per_region`]: one agent of each region.
pub const DEFAULT_AGENTS_PER_REGION: u32 = 1;

/// The largest [`DomainConfig::agents_per_region`] the control plane accepts.
pub const MAX_AGENTS_PER_REGION: u32 = 2;

/// The JSON form of [`DomainConfig`].
mod wire {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub struct Config {
        id: DomainId,
        url: String,
        #[serde(flatten, with = "request_json")]
        request: Option<RequestConfig>,
        #[serde(default, skip_serializing_if = "CheckConfig::is_http")]
        check: CheckConfig,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        json_check: Option<JsonAssertion>,
        expected_status: StatusRange,
        #[serde(flatten, with = "keyword_json")]
        keyword: Option<KeywordCheck>,
        interval_s: u32,
        timeout_ms: u32,
        #[serde(default)]
        regions: Vec<String>,
        #[serde(default)]
        paused: bool,
        #[serde(default = "tls_verify_default", skip_serializing_if = "is_true")]
        tls_verify: bool,
        #[serde(default, skip_serializing_if = "HttpVersion::is_auto")]
        http_version: HttpVersion,
        #[serde(default = "agents_per_region_default", skip_serializing_if = "is_default_agents")]
        agents_per_region: u32,
        version: u64,
    }

    impl From<DomainConfig> for Config {
        fn from(c: DomainConfig) -> Self {
            Config {
                id: c.id,
                url: c.url,
                request: c.check.is_http().then_some(c.request),
                check: c.check,
                json_check: c.json_check,
                expected_status: c.expected_status,
                keyword: c.keyword,
                interval_s: c.interval_s,
                timeout_ms: c.timeout_ms,
                regions: c.regions,
                paused: c.paused,
                tls_verify: c.tls_verify,
                http_version: c.http_version,
                agents_per_region: c.agents_per_region,
                version: c.version,
            }
        }
    }

    impl TryFrom<Config> for DomainConfig {
        type Error = String;

        /// An `http` check needs its request (`method` or `request`); other checks have none.
        fn try_from(c: Config) -> Result<Self, String> {
            let request = match (c.request, c.check.is_http()) {
                (Some(request), _) => request,
                (None, false) => RequestConfig::default(),
                (None, true) => return Err("missing field `method`".to_owned()),
            };
            Ok(DomainConfig {
                id: c.id,
                url: c.url,
                request,
                check: c.check,
                json_check: c.json_check,
                expected_status: c.expected_status,
                keyword: c.keyword,
                interval_s: c.interval_s,
                timeout_ms: c.timeout_ms,
                regions: c.regions,
                paused: c.paused,
                tls_verify: c.tls_verify,
                http_version: c.http_version,
                agents_per_region: c.agents_per_region,
                version: c.version,
            })
        }
    }
}

fn tls_verify_default() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn agents_per_region_default() -> u32 {
    DEFAULT_AGENTS_PER_REGION
}

fn is_default_agents(value: &u32) -> bool {
    *value == DEFAULT_AGENTS_PER_REGION
}

impl DomainConfig {
    /// Whether an agent of `region` should keep this domain in its catalog.
    pub fn runs_in(&self, region: &str) -> bool {
        self.regions.is_empty() || self.regions.iter().any(|r| r == region)
    }

    /// The configuration as JSON without any secret, for display: the request fields become
    /// a `request` object in [`RequestConfig::redacted`] form.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("domain config serializes");
        if let Some(map) = value.as_object_mut().filter(|_| self.check.is_http()) {
            map.remove("method");
            map.insert("request".into(), serde_json::Value::Object(self.request.redacted()));
        }
        value
    }
}

/// The kind of change a notice announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// The domain's field in the hash was written (created, updated, paused or resumed).
    Upsert,
    /// The domain's field was removed from the hash.
    Delete,
    /// The whole hash was rebuilt; every agent must reload it in full.
    Resync,
}

/// The payload published on `<prefix>:domains:changes` after each applied change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<DomainId>,
    pub op: ChangeOp,
}

/// A request for an immediate probe, published on `<prefix>:probe-requests`. Agents of the
/// listed regions (every region when empty) probe the domain now, through the scheduler's
/// on-demand entry point.
///
/// Two kinds share the channel:
/// - a **confirmation** (`request_id` absent): probed only if the domain is in the agent's
///   catalog; the result is an ordinary on-demand result that is stored and counts in consensus;
/// - an operator's **test** (`request_id` present, `POST /v1/checks/test`): probed with
///   `config` when given (an unsaved domain, or the stored domain as the control plane reads
///   it), else with the catalog's configuration, paused or not; the result carries the request
///   id, and the control plane hands it to the waiting API request and never stores it.
///
/// Agents that predate `request_id` and `config` ignore them and treat a test of a catalog
/// domain as a confirmation (and skip an unknown one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub domain_id: DomainId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Why the probe is requested (`confirmation`, `test`), for logs and metrics.
    pub reason: String,
    /// The test's id, echoed in each result (`ProbeResult.request_id`); absent for confirmations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// The configuration to probe for a test (its `id` is `domain_id`); never added to the
    /// agent's catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<DomainConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_request_round_trips() {
        let request = ProbeRequest {
            domain_id: DomainId::new(),
            regions: vec!["iad".into()],
            reason: "confirmation".into(),
            request_id: None,
            config: None,
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<ProbeRequest>(&json).unwrap(), request);
        let every: ProbeRequest =
            serde_json::from_str(&format!(r#"{{"domain_id":"{}","reason":"x"}}"#, request.domain_id))
                .unwrap();
        assert!(every.regions.is_empty());
        assert_eq!(every.request_id, None);

        let test = ProbeRequest {
            domain_id: request.domain_id,
            regions: Vec::new(),
            reason: "test".into(),
            request_id: Some(Uuid::now_v7()),
            config: Some(DomainConfig { id: request.domain_id, ..sample() }),
        };
        let json = serde_json::to_string(&test).unwrap();
        assert_eq!(serde_json::from_str::<ProbeRequest>(&json).unwrap(), test);
    }

    fn sample() -> DomainConfig {
        DomainConfig {
            id: DomainId::new(),
            url: "https://example.com/health".into(),
            request: RequestConfig::default(),
            check: CheckConfig::Http,
            json_check: None,
            expected_status: StatusRange { min: 200, max: 299 },
            keyword: Some(KeywordCheck::contains("ok")),
            interval_s: 60,
            timeout_ms: 10_000,
            regions: vec!["ams".into()],
            paused: false,
            tls_verify: true,
            http_version: HttpVersion::Auto,
            agents_per_region: 1,
            version: 7,
        }
    }

    #[test]
    fn agents_per_region_is_written_only_when_not_the_default() {
        let value = serde_json::to_value(sample()).unwrap();
        assert!(value.get("agents_per_region").is_none(), "{value}");
        let two = DomainConfig { agents_per_region: 2, ..sample() };
        let value = serde_json::to_value(&two).unwrap();
        assert_eq!(value["agents_per_region"], 2);
        assert_eq!(serde_json::from_value::<DomainConfig>(value).unwrap(), two);
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = sample();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"method\":\"GET\""));
        let back: DomainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_fields_from_a_newer_control_plane_are_ignored() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["future_field"] = serde_json::json!(true);
        let back: DomainConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back.interval_s, 60);
    }

    #[test]
    fn a_plain_keyword_is_written_as_the_string_older_agents_read() {
        let cfg = sample();
        let value = serde_json::to_value(&cfg).unwrap();
        assert_eq!(value["keyword"], "ok");
        assert!(value.get("keyword_check").is_none());
        let mut none = sample();
        none.keyword = None;
        let value = serde_json::to_value(&none).unwrap();
        assert!(value.get("keyword").is_none() && value.get("keyword_check").is_none());
        assert_eq!(serde_json::from_value::<DomainConfig>(value).unwrap().keyword, None);
    }

    #[test]
    fn other_checks_are_written_only_as_the_object() {
        for (mode, case_insensitive) in [
            (KeywordMode::NotContains, false),
            (KeywordMode::Regex, false),
            (KeywordMode::Contains, true),
            (KeywordMode::Regex, true),
        ] {
            let mut cfg = sample();
            cfg.keyword = Some(KeywordCheck { pattern: "o+k".into(), mode, case_insensitive });
            let value = serde_json::to_value(&cfg).unwrap();
            assert!(value.get("keyword").is_none(), "an older agent must not see {mode:?} as contains");
            assert_eq!(value["keyword_check"]["mode"], mode.as_str());
            assert_eq!(serde_json::from_value::<DomainConfig>(value).unwrap(), cfg);
        }
    }

    #[test]
    fn the_check_object_wins_and_its_defaults_are_the_plain_check() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["keyword_check"] = serde_json::json!({"pattern": "absent", "mode": "not_contains"});
        let cfg: DomainConfig = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(
            cfg.keyword,
            Some(KeywordCheck {
                pattern: "absent".into(),
                mode: KeywordMode::NotContains,
                case_insensitive: false
            })
        );
        value["keyword_check"] = serde_json::json!({"pattern": "x"});
        let cfg: DomainConfig = serde_json::from_value(value).unwrap();
        assert_eq!(cfg.keyword, Some(KeywordCheck::contains("x")));
    }

    #[test]
    fn regexes_are_built_for_patterns_and_folded_keywords_only() {
        assert!(KeywordCheck::contains("a.b").regex().unwrap().is_none());
        let folded =
            KeywordCheck { pattern: "a.b".into(), mode: KeywordMode::Contains, case_insensitive: true };
        let regex = folded.regex().unwrap().unwrap();
        assert!(regex.is_match("xA.By") && !regex.is_match("axb"), "escaped, case-insensitive");
        let greek =
            KeywordCheck {
                pattern: "ΣΟΦΙΑ".into(), mode: KeywordMode::NotContains, case_insensitive: true
            };
        assert!(greek.regex().unwrap().unwrap().is_match("η σοφια"));
        let pattern = KeywordCheck {
            pattern: "v\\d+\\.\\d+".into(),
            mode: KeywordMode::Regex,
            case_insensitive: false,
        };
        assert!(pattern.regex().unwrap().unwrap().is_match("build v1.2"));
        let broken = KeywordCheck { pattern: "(".into(), mode: KeywordMode::Regex, case_insensitive: false };
        assert!(broken.regex().is_err());
        let huge = KeywordCheck {
            pattern: "\\w{1000}".repeat(10),
            mode: KeywordMode::Regex,
            case_insensitive: false,
        };
        assert!(huge.regex().unwrap_err().to_string().contains("size limit"));
    }

    #[test]
    fn a_plain_request_is_the_method_older_agents_read() {
        let value = serde_json::to_value(sample()).unwrap();
        assert_eq!(value["method"], "GET");
        assert!(value.get("request").is_none());
        let head = DomainConfig { request: RequestConfig::new(HttpMethod::Head), ..sample() };
        assert_eq!(serde_json::to_value(&head).unwrap()["method"], "HEAD");
    }

    #[test]
    fn any_other_request_is_only_the_object_so_older_agents_skip_the_domain() {
        use crate::request::{Auth, RequestHeader, Secret};
        /// The fields an agent before request options requires.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct OlderAgent {
            method: String,
            url: String,
        }
        let requests = [
            RequestConfig::new(HttpMethod::Post),
            RequestConfig {
                auth: Some(Auth::Bearer { token: Secret::new("t0ken") }),
                ..RequestConfig::default()
            },
            RequestConfig {
                headers: vec![RequestHeader { name: "X-A".into(), value: "1".into(), secret: false }],
                ..RequestConfig::new(HttpMethod::Head)
            },
        ];
        for request in requests {
            let cfg = DomainConfig { request: request.clone(), ..sample() };
            let value = serde_json::to_value(&cfg).unwrap();
            assert!(value.get("method").is_none(), "{value}");
            assert_eq!(value["request"]["method"], request.method.as_str());
            assert!(serde_json::from_value::<OlderAgent>(value.clone()).is_err());
            assert_eq!(serde_json::from_value::<DomainConfig>(value).unwrap(), cfg);
        }
        let mut value = serde_json::to_value(sample()).unwrap();
        value.as_object_mut().unwrap().remove("method");
        assert!(serde_json::from_value::<DomainConfig>(value).unwrap_err().to_string().contains("method"));
    }

    #[test]
    fn other_check_types_have_no_method_so_older_agents_skip_the_domain() {
        use crate::check::{DnsCheck, DnsRecordType, TcpCheck, TlsCheck};
        /// The fields an agent before check types requires (it reads `method` or `request`).
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct OlderAgent {
            method: String,
            url: String,
        }
        let checks = [
            CheckConfig::Tcp(TcpCheck {
                host: "db.example.com".into(),
                port: 5432,
                tls: true,
                send: Some("PING\r\n".into()),
                expect: Some("PONG".into()),
            }),
            CheckConfig::Tls(TlsCheck { host: "mail.example.com".into(), port: 465 }),
            CheckConfig::Dns(DnsCheck {
                name: "example.com".into(),
                record_type: DnsRecordType::A,
                servers: Vec::new(),
                expect: vec!["192.0.2.1".into()],
                dnssec: false,
            }),
        ];
        for check in checks {
            let cfg = DomainConfig {
                url: check.display_url().unwrap(),
                check: check.clone(),
                keyword: None,
                ..sample()
            };
            let value = serde_json::to_value(&cfg).unwrap();
            assert!(value.get("method").is_none() && value.get("request").is_none(), "{value}");
            assert_eq!(value["check"]["type"], check.type_name());
            assert!(serde_json::from_value::<OlderAgent>(value.clone()).is_err());
            assert_eq!(serde_json::from_value::<DomainConfig>(value).unwrap(), cfg);
            assert!(cfg.redacted_json().get("request").is_none());
        }
        let http = serde_json::to_value(sample()).unwrap();
        assert!(http.get("check").is_none(), "an http check is what every agent knows");
    }

    #[test]
    fn a_json_assertion_is_a_field_older_agents_ignore() {
        use crate::check::JsonOp;
        let cfg = DomainConfig {
            json_check: Some(JsonAssertion {
                path: "$.status".into(),
                op: JsonOp::Eq,
                value: Some(serde_json::json!("ok")),
            }),
            ..sample()
        };
        let value = serde_json::to_value(&cfg).unwrap();
        assert_eq!(value["json_check"]["op"], "==");
        assert_eq!(value["method"], "GET", "older agents still probe the domain");
        assert_eq!(serde_json::from_value::<DomainConfig>(value).unwrap(), cfg);
    }

    #[test]
    fn the_redacted_json_has_no_secret() {
        use crate::request::{Auth, Secret};
        let cfg = DomainConfig {
            request: RequestConfig {
                auth: Some(Auth::Basic { username: "u".into(), password: Secret::new("pa55word") }),
                ..RequestConfig::new(HttpMethod::Post)
            },
            ..sample()
        };
        assert!(serde_json::to_string(&cfg).unwrap().contains("pa55word"), "agents need it");
        let shown = cfg.redacted_json();
        assert!(!shown.to_string().contains("pa55word"), "{shown}");
        assert_eq!(shown["request"]["auth"]["password_set"], true);
        assert_eq!(shown["request"]["method"], "POST");
        assert!(shown.get("method").is_none());
        assert_eq!(shown["url"], cfg.url);
    }

    #[test]
    fn region_membership() {
        let mut cfg = sample();
        assert!(cfg.runs_in("ams"));
        assert!(!cfg.runs_in("sin"));
        cfg.regions.clear();
        assert!(cfg.runs_in("sin"));
    }

    #[test]
    fn notice_format() {
        let n = ChangeNotice { version: 3, id: None, op: ChangeOp::Resync };
        assert_eq!(serde_json::to_string(&n).unwrap(), r#"{"version":3,"op":"resync"}"#);
    }
}
