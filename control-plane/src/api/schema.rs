//! The shapes of the REST API's request and response bodies, for its OpenAPI description
//! ([`super::openapi`]). The handlers parse bodies by hand (every bad field named at once, see
//! [`crate::domains::spec`]) and build answers with `json!`; these types describe exactly what
//! those parsers accept and those answers hold, and are not used to parse or serialize. Where
//! an answer embeds a value the code serializes whole (a check, flap or latency overrides, an
//! SLO, uptime and latency figures, votes, certificates, SLA reports, digests), the schema is
//! that type's own derived `ToSchema`, so it cannot drift from it; the types here mirror only
//! what is assembled by hand. A `null` request field means the same as leaving it out. The
//! fuzzing test (`tests/it/openapi.rs`) checks every answer against these schemas, and another
//! test there that no schema is a free-form object but the few it lists with their reason.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Every error answer: `{"error": {"code", "message", "fields"}}`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "validation_failed", "message": "validation failed",
    "fields": {"interval": "must be between 30 and 86400 seconds"}}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    #[schema(value_type = String, example = "validation_failed")]
    pub code: ErrorCode,
    /// Human-readable, lowercase, never internal text.
    pub message: String,
    /// With `validation_failed`: each bad field (a path such as `components[2].name`, or a
    /// query parameter's name) and what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    NotRecorded,
    MethodNotAllowed,
    ValidationFailed,
    BadRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    Conflict,
    RateLimited,
    AuthThrottled,
    QuotaExceeded,
    Unavailable,
    Internal,
}

// ---------------------------------------------------------------- domains

/// A named probe interval.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 30 s.
    Fast,
    /// 60 s.
    Standard,
    /// 300 s.
    Relaxed,
}

/// A tier name or a whole number of seconds (within the deployment's `min_interval_s` and
/// `max_interval_s`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IntervalBody {
    Tier(Tier),
    Seconds(u32),
}

/// A status code (`200`), a class (`2xx`) or an inclusive range (`200-399`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum StatusBody {
    #[schema(example = "2xx")]
    Range(String),
    Code(u16),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeywordModeBody {
    Contains,
    NotContains,
    Regex,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersionBody {
    Auto,
    Http1,
    Http2,
}

#[derive(Serialize, ToSchema)]
pub enum MethodBody {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "OPTIONS")]
    Options,
}

/// A request header a probe sends. A `secret` one's value is write-only (shown as set).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderBody {
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Printable ASCII, spaces and tabs; may be left out of an update for a secret header.
    #[schema(max_length = 4096)]
    pub value: Option<String>,
    pub secret: Option<bool>,
}

/// A domain as `POST /v1/domains` (and `POST /v1/checks/test`) takes it, and what a `PATCH`
/// may change (fields left out are kept). `url` is required for the default `http` check;
/// the other check types (`check`) take their target there and refuse the http-only fields.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "shop", "url": "https://shop.example.com/health", "expected_status": "2xx",
    "keyword": "ok", "interval": "fast", "regions": ["ams", "iad"], "quorum": 2, "tags": ["prod"]}))]
pub struct DomainBody {
    /// A display name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// An `http(s)` URL on a public host (private targets only where the deployment allows).
    #[schema(format = "uri", max_length = 2048)]
    pub url: Option<String>,
    /// The check type and its settings, tagged by `type`: `http` (default; the other fields
    /// describe it), `tcp`, `tls` or `dns`.
    pub check: Option<shared::CheckConfig>,
    /// An http check's JSON body assertion: `{"path": "$.status", "op": "==", "value": "ok"}`.
    pub json: Option<shared::JsonAssertion>,
    pub method: Option<MethodBody>,
    #[schema(max_items = 32)]
    pub headers: Option<Vec<HeaderBody>>,
    /// Credentials the probe sends, tagged by `kind`; the secrets are write-only (left out
    /// of an update of the same kind: kept).
    pub auth: Option<AuthBody>,
    /// The request body a probe sends.
    #[schema(max_length = 16384)]
    pub body: Option<String>,
    /// Whether `body` is write-only.
    pub body_secret: Option<bool>,
    pub expected_status: Option<StatusBody>,
    /// Text the body must (or must not) contain, or a regular expression (`keyword_mode`).
    #[schema(min_length = 1, max_length = 1024)]
    pub keyword: Option<String>,
    pub keyword_mode: Option<KeywordModeBody>,
    pub keyword_case_insensitive: Option<bool>,
    pub interval: Option<IntervalBody>,
    /// Shorter than the interval, up to the deployment's `max_timeout_ms`.
    #[schema(minimum = 100)]
    pub timeout_ms: Option<u32>,
    /// Known region names; empty means every region.
    pub regions: Option<Vec<String>>,
    /// Regions that must agree; at most the number of regions.
    #[schema(minimum = 1)]
    pub quorum: Option<u32>,
    pub paused: Option<bool>,
    pub tls_verify: Option<bool>,
    pub http_version: Option<HttpVersionBody>,
    /// Agents of each region that probe the domain when a region runs several: 1 (default)
    /// or 2.
    #[schema(minimum = 1, maximum = 2)]
    pub agents_per_region: Option<u32>,
    /// Flap detection overrides; each key given replaces the global setting.
    pub flap: Option<crate::flap::Overrides>,
    /// DNS drift settings.
    pub dns_drift: Option<DnsDriftSettings>,
    /// A service level objective.
    pub slo: Option<crate::sla::Slo>,
    /// Latency anomaly overrides; each key given replaces the global setting.
    pub degraded: Option<crate::degraded::settings::Overrides>,
    /// Lowercase tags (`[a-z0-9][a-z0-9._:-]{0,39}`), normalized and deduplicated.
    #[schema(max_items = 20, inline)]
    pub tags: Option<Vec<TagBody>>,
}

#[derive(Serialize, ToSchema)]
#[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,39}$")]
pub struct TagBody(String);

/// A probe's credentials as a request sets them, tagged by `kind`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuthBody {
    /// HTTP Basic authentication.
    Basic {
        /// No `:`.
        #[schema(min_length = 1)]
        username: String,
        /// Write-only; may be left out of an update of a basic `auth` (kept).
        password: Option<String>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// Write-only; may be left out of an update of a bearer `auth` (kept).
        token: Option<String>,
    },
}

/// A probe's credentials as the API shows them: secrets only as set.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuthView {
    Basic {
        username: String,
        /// Always `true`.
        password_set: bool,
    },
    Bearer {
        /// Always `true`.
        token_set: bool,
    },
}

/// A request header as the API shows it: a plain header with its value, or a secret one
/// whose value is never shown.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum HeaderView {
    Plain {
        name: String,
        value: String,
        /// Always `false`.
        secret: bool,
    },
    Secret {
        name: String,
        /// Always `true`.
        secret: bool,
        /// Always `true`.
        value_set: bool,
    },
}

/// A domain's DNS drift settings (`dns_drift`), as taken and as shown (with the defaults
/// filled in).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"notify": true, "stable_probes": 3, "allowed_networks": ["192.0.2.0/24"], "same_network": false}))]
pub struct DnsDriftSettings {
    /// Send a `dns_changed` notification for a confirmed change outside the rotation rules
    /// (default `false`; the change is recorded either way).
    pub notify: Option<bool>,
    /// Probes in a row that must answer the same new set before it replaces the known one.
    #[schema(minimum = 1)]
    pub stable_probes: Option<u32>,
    /// Networks (CIDR) inside which a new address is rotation, recorded quietly.
    pub allowed_networks: Option<Vec<String>>,
    /// An address in the same /24 (IPv4) or /48 (IPv6) as a known one is rotation too.
    pub same_network: Option<bool>,
}

/// [`DnsDriftSettings`] as the API shows them: every field present.
#[derive(Serialize, ToSchema)]
pub struct DnsDriftView {
    pub notify: bool,
    pub stable_probes: u32,
    /// CIDR networks.
    pub allowed_networks: Vec<String>,
    pub same_network: bool,
}

/// A domain as the API shows it. Request secrets are shown as set, never their values.
#[derive(Serialize, ToSchema)]
pub struct DomainView {
    pub id: Uuid,
    pub name: Option<String>,
    /// The probed URL; for a `tcp`, `tls` or `dns` check its display form
    /// (`tcp://host:port`, `dns://name/TYPE`).
    pub url: String,
    pub check: shared::CheckConfig,
    pub json: Option<shared::JsonAssertion>,
    /// As a range: `200-299`.
    pub expected_status: String,
    pub keyword: Option<String>,
    pub keyword_mode: Option<KeywordModeBody>,
    pub keyword_case_insensitive: Option<bool>,
    pub interval: IntervalBody,
    /// The interval in seconds.
    pub interval_s: u32,
    /// Milliseconds.
    pub timeout_ms: u32,
    pub regions: Vec<String>,
    pub quorum: Option<u32>,
    pub paused: bool,
    pub tls_verify: bool,
    pub http_version: HttpVersionBody,
    pub agents_per_region: u32,
    /// The domain's flap overrides; `null`: the global settings.
    pub flap: Option<crate::flap::Overrides>,
    pub tags: Vec<String>,
    pub dns_drift: DnsDriftView,
    pub slo: Option<crate::sla::Slo>,
    /// The domain's latency overrides; `null`: the global settings.
    pub degraded: Option<crate::degraded::settings::Overrides>,
    /// The configuration version this domain was last written at.
    pub config_version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub method: MethodBody,
    pub headers: Vec<HeaderView>,
    pub auth: Option<AuthView>,
    /// `null` when secret.
    pub body: Option<String>,
    pub body_secret: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DomainPage {
    pub items: Vec<DomainView>,
    /// Pass as `?cursor=` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- regions, tokens, tenant

/// A region; with an admin token also its agents and when one was last seen.
#[derive(Serialize, ToSchema)]
pub struct RegionView {
    pub name: String,
    /// With an admin token: when an agent of the region was last seen (`null`: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// With an admin token: the region's canary verdict, false only when every agent sending
    /// one reports itself unhealthy; null when none sends one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// With an admin token: the region's agents, each with its own latest canary verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<crate::agents::AgentRow>>,
}

#[derive(Serialize, ToSchema)]
pub struct RegionList {
    pub items: Vec<RegionView>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleBody {
    Admin,
    ReadOnly,
}

/// `POST /v1/tokens`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci deploy", "role": "admin"}))]
pub struct TokenBody {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Default `read_only`.
    pub role: Option<RoleBody>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<crate::tenants::TokenInfo>,
}

/// `PATCH /v1/tenant`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"time_zone": "Europe/Berlin"}))]
pub struct TenantBody {
    /// An IANA time zone name.
    pub time_zone: String,
}

// ---------------------------------------------------------------- check tests

/// `POST /v1/checks/test`: either a domain definition (as `POST /v1/domains` takes it, not
/// saved) with `wait_ms`, or `{"domain_id", "regions", "wait_ms"}` of a saved domain.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum CheckTestBody {
    Saved(SavedCheckTest),
    Definition(Box<CheckDefinition>),
}

/// A domain definition to test once (not saved), with how long to wait.
#[derive(Serialize, ToSchema)]
pub struct CheckDefinition {
    #[serde(flatten)]
    pub domain: DomainBody,
    /// Milliseconds to wait for the regions' answers.
    #[schema(minimum = 100, maximum = 60000)]
    pub wait_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SavedCheckTest {
    pub domain_id: Uuid,
    /// Default: the domain's regions; empty means every region.
    pub regions: Option<Vec<String>>,
    #[schema(minimum = 100, maximum = 60000)]
    pub wait_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckTestAnswer {
    pub request_id: Uuid,
    pub domain_id: Option<Uuid>,
    pub url: String,
    /// Whether every region answered within `wait_ms`.
    pub complete: bool,
    pub wait_ms: u64,
    /// One per region that answered.
    pub results: Vec<CheckTestResult>,
    pub missing_regions: Vec<String>,
}

/// One region's answer to a check test.
#[derive(Serialize, ToSchema)]
pub struct CheckTestResult {
    pub region: String,
    pub agent_id: String,
    pub ok: bool,
    /// `dns`, `connect`, `tls`, `timeout`, `status`, … (`null` when ok).
    pub error_kind: Option<String>,
    pub error_detail: Option<String>,
    /// The final HTTP status; `null` when no response arrived.
    pub status_code: Option<u16>,
    pub timings: crate::checks::Timings,
    pub resolved_ip: Option<String>,
    /// `HTTP/1.1` or `HTTP/2`.
    pub http_version: Option<String>,
    pub certificate: Option<crate::checks::Certificate>,
    /// When the probe started (RFC 3339).
    pub started_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------- incidents

/// A region's vote as recorded with a state change: on an incident (`opened_regions`: the
/// regions failing, or degraded, when it opened) and on a digest's transitions.
#[derive(Serialize, ToSchema)]
pub struct RecordedVote {
    pub region: String,
    pub error_kind: Option<String>,
    pub status_code: Option<i32>,
    /// RFC 3339.
    pub observed_at: DateTime<Utc>,
    pub agent_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct IncidentList {
    pub items: Vec<crate::incidents::Incident>,
}

/// An incident with its events and the operators' updates.
#[derive(Serialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: crate::incidents::Incident,
    pub events: Vec<crate::incidents::Event>,
    pub updates: Vec<crate::incidents::updates::IncidentUpdate>,
}

/// What an incident event records; which fields are present depends on its `kind`.
#[derive(Serialize, ToSchema)]
pub struct IncidentEventDetails {
    /// `opened`, `resolved`: the regions that decided it.
    pub regions: Option<Vec<RecordedVote>>,
    /// `opened` inside a maintenance window: the window and until when notifications wait.
    pub maintenance: Option<MaintenanceHold>,
    /// How the event's notification was handled when it was not simply sent (held, withheld,
    /// not sent and why).
    pub notification: Option<String>,
    /// `resolved` without recovery, `paused`, `resumed`: why.
    pub reason: Option<String>,
    /// `maintenance_ended`: the window that ended.
    pub window_id: Option<Uuid>,
    /// `resolved`: whether the domain recovered (else monitoring stopped).
    pub recovered: Option<bool>,
    /// `resolved`: how long the incident lasted, seconds.
    pub duration_s: Option<i64>,
    /// `resolved`: the incident described in words.
    pub incident: Option<String>,
    /// `acknowledged`: the operator's note.
    pub note: Option<String>,
}

/// A maintenance window holding an incident's notifications.
#[derive(Serialize, ToSchema)]
pub struct MaintenanceHold {
    pub window_id: Uuid,
    /// RFC 3339.
    pub until: DateTime<Utc>,
}

/// `POST /v1/incidents/{id}/ack`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"note": "looking into it"}))]
pub struct AckBody {
    /// May span lines.
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

/// `POST /v1/incidents/{id}/updates`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "identified", "message": "a bad deploy; rolling back"}))]
pub struct UpdateBody {
    pub status: UpdateStatus,
    /// May span lines; not blank.
    #[schema(min_length = 1, max_length = 5000)]
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct UpdateList {
    pub items: Vec<crate::incidents::updates::IncidentUpdate>,
}

/// A domain's consensus status.
#[derive(Serialize, ToSchema)]
pub struct DomainStatus {
    /// `unknown`, `up`, `degraded` or `down`.
    pub state: String,
    /// Why, in a sentence.
    pub reason: String,
    /// Since when (RFC 3339); `null` before the first decision.
    pub since: Option<DateTime<Utc>>,
    pub paused: bool,
    pub open_incident_id: Option<Uuid>,
    /// Regions that must agree.
    pub quorum: u32,
    /// How old an observation may be and still vote, seconds.
    pub freshness_s: f64,
    /// Regions voting down, up, and up but degraded.
    pub failing: u32,
    pub passing: u32,
    pub degraded: u32,
    /// Every region's vote.
    pub regions: Vec<RegionVote>,
    pub flap: crate::flap::Status,
    pub regional_failures: Vec<crate::consensus::observations::RegionalFailure>,
    pub maintenance: MaintenanceNow,
}

/// One region's vote in a domain's status.
#[derive(Serialize, ToSchema)]
pub struct RegionVote {
    pub region: String,
    pub standing: crate::consensus::decide::Standing,
    /// Whether the standing counts as a vote (`ok`, `degraded`, `failing`).
    pub voting: bool,
    /// The region's latest observation; `null` before any.
    pub observation: Option<crate::consensus::decide::Observation>,
    /// The region's latency detector; `null` before it has one.
    pub latency: Option<crate::degraded::RegionLatency>,
}

/// The maintenance window occurrence under way (incidents opened now send nothing) and the
/// next one to start.
#[derive(Serialize, ToSchema)]
pub struct MaintenanceNow {
    pub active: Option<crate::maintenance::store::Scheduled>,
    pub next: Option<crate::maintenance::store::Scheduled>,
}

// ---------------------------------------------------------------- history

#[derive(Serialize, ToSchema)]
pub struct UptimeAnswer {
    pub window: crate::timeseries::Window,
    /// The window's bounds (RFC 3339).
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Consensus uptime over the monitored time, percent (0..100); `null` before any.
    pub uptime_percent: Option<f64>,
    pub consensus: crate::uptime::ConsensusUptime,
    /// Every region's probes together: the raw success ratio, not the domain's uptime.
    pub probes: crate::timeseries::read::UptimeCounts,
    pub regions: Vec<crate::timeseries::read::RegionUptime>,
    pub regional_failures: Vec<crate::consensus::observations::RegionalFailure>,
}

/// Probe results, newest first.
#[derive(Serialize, ToSchema)]
pub struct ResultList {
    pub items: Vec<crate::timeseries::StoredResult>,
}

#[derive(Serialize, ToSchema)]
pub struct CertificateAnswer {
    /// Per region: the certificate seen, its chain and fault, and later hops'.
    pub regions: Vec<crate::timeseries::CertificateFacts>,
    /// The certificate that expires first over every region; `null` when none is known.
    pub earliest_expiry: Option<EarliestExpiry>,
}

/// The certificate that expires first, and the region that saw it.
#[derive(Serialize, ToSchema)]
pub struct EarliestExpiry {
    pub region: String,
    pub certificate: crate::timeseries::ExpiringCertificate,
}

/// Why a certificate is invalid: which certificate of the chain, and what is wrong with it.
#[derive(Serialize, ToSchema)]
pub struct CertificateProblem {
    pub kind: CertificateProblemKind,
    /// 0 for the leaf, N for the Nth intermediate above it.
    pub position: u32,
    pub subject: String,
    /// When the problem holds from (e.g. the expiry); RFC 3339, `null` when not timed.
    pub at: Option<DateTime<Utc>>,
}

/// What is wrong with the certificate at fault.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateProblemKind {
    Expired,
    NotYetValid,
    UnknownIssuer,
    NameMismatch,
    Revoked,
    Other,
}

/// A stored chain's summary: its length, whether it verified, and the earliest-expiring
/// certificate above the leaf.
#[derive(Serialize, ToSchema)]
pub struct ChainRecord {
    /// Certificates on the chain, leaf included, trust anchor excluded; 0 when unknown.
    pub length: u32,
    pub verified: bool,
    pub earliest: Option<ChainCertificate>,
}

#[derive(Serialize, ToSchema)]
pub struct ChainCertificate {
    /// N for the Nth intermediate above the leaf.
    pub position: u32,
    pub subject: String,
    /// RFC 3339.
    pub not_after: DateTime<Utc>,
}

/// The certificate of a later HTTPS hop (a redirect target).
#[derive(Serialize, ToSchema)]
pub struct RedirectCertificate {
    pub host: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// RFC 3339.
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub valid: bool,
    pub validation_error: Option<String>,
    pub chain: ChainRecord,
    pub problem: Option<CertificateProblem>,
    /// Whole days from now until `not_after`, rounded down (negative once expired).
    pub days_left: i64,
}

// ---------------------------------------------------------------- channels

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKindBody {
    Webhook,
    Slack,
    Email,
    Pagerduty,
    Teams,
    Discord,
    Telegram,
    Ntfy,
}

/// `POST /v1/channels`, and what a `PATCH` may change. Which target fields apply depends on
/// `kind`: `url` (webhook, slack, teams, discord; pagerduty, telegram and ntfy servers), `to`
/// (email), `routing_key` (pagerduty), `bot_token` and `chat_id` (telegram), `topic` and
/// `token` (ntfy). Secrets are write-only.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ops", "kind": "webhook", "url": "https://hooks.example.com/crosscheck"}))]
pub struct ChannelBody {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub kind: Option<ChannelKindBody>,
    #[schema(format = "uri", max_length = 2048)]
    pub url: Option<String>,
    /// Email addresses.
    pub to: Option<Vec<String>>,
    pub enabled: Option<bool>,
    #[schema(minimum = 0)]
    pub storm_window_s: Option<u32>,
    #[schema(minimum = 1)]
    pub storm_threshold: Option<u32>,
    /// The notification kinds sent; default every kind.
    pub events: Option<Vec<String>>,
    /// Only domains with one of these tags.
    pub tags: Option<Vec<String>>,
    pub routing_key: Option<String>,
    pub bot_token: Option<String>,
    /// A number or a `@channel` name.
    pub chat_id: Option<ChatId>,
    pub topic: Option<String>,
    pub token: Option<String>,
}

/// A channel; its target fields (`url`, `to`, `chat_id`, `topic`) shown as stored, secrets
/// never. `secret` (a webhook's signing secret) only in the creation answer.
#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    pub name: String,
    pub kind: ChannelKindBody,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    /// Seconds over which a storm of notifications is counted.
    pub storm_window_s: i32,
    pub storm_threshold: i32,
    pub events: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    /// Where it sends: the webhook (slack, teams, discord) URL, or the PagerDuty, Telegram or
    /// ntfy server.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri")]
    pub url: Option<String>,
    /// An email channel's addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// A Telegram channel's chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    /// An ntfy channel's topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A Telegram chat: a numeric id or a `@channel` name.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    #[schema(example = "@ops_alerts")]
    Name(String),
}

#[derive(Serialize, ToSchema)]
pub struct ChannelPage {
    pub items: Vec<ChannelView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TestQueued {
    pub notification_id: Uuid,
    /// `pending`.
    pub state: String,
}

/// A notification in the outbox.
#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub dedup_key: String,
    pub kind: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub notification: crate::notify::Notification,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- digests, DNS, SLA

#[derive(Serialize, ToSchema)]
pub struct DigestList {
    pub items: Vec<crate::digests::store::Listed>,
}

/// A domain's DNS drift record.
#[derive(Serialize, ToSchema)]
pub struct DnsAnswer {
    pub domain_id: Uuid,
    pub dns_drift: DnsDriftView,
    /// Per region: the known answer set and the candidate replacing it.
    pub regions: Vec<DnsRegionState>,
    /// Confirmed changes, newest first.
    pub changes: Vec<DnsChange>,
}

/// One region's answer sets for a domain.
#[derive(Serialize, ToSchema)]
pub struct DnsRegionState {
    pub region: String,
    /// The answers in force, in their text form.
    pub known: Vec<String>,
    pub known_since: DateTime<Utc>,
    /// A different set seen lately, not yet stable; `null` when none.
    pub candidate: Option<Vec<String>>,
    /// Probes in a row that answered the candidate.
    pub candidate_probes: i32,
    pub candidate_since: Option<DateTime<Utc>>,
    pub observed_at: DateTime<Utc>,
}

/// A confirmed change of a region's answer set.
#[derive(Serialize, ToSchema)]
pub struct DnsChange {
    pub id: Uuid,
    pub region: String,
    pub previous: Vec<String>,
    pub current: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// When the new set was first seen, and when it was confirmed (RFC 3339).
    pub changed_at: DateTime<Utc>,
    pub confirmed_at: DateTime<Utc>,
    /// Whether the change was rotation under the settings (recorded quietly).
    pub rotation: bool,
    /// Whether a `dns_changed` notification was sent.
    pub notified: bool,
}

// ---------------------------------------------------------------- status pages

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Revealable {
    Url,
    Regions,
    Errors,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentBody {
    /// One of the tenant's domains.
    pub domain: Uuid,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub group: Option<String>,
    pub reveal: Option<Vec<Revealable>>,
}

/// `POST /v1/status-pages` (slug, title and components required), and what a `PATCH` may
/// change (lists replace the whole list).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"slug": "shop", "title": "Shop status",
    "components": [{"domain": "0190b8a8-0000-7000-8000-000000000001", "name": "Checkout"}]}))]
pub struct PageBody {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub slug: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// May span lines.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Custom hostnames serving the page.
    #[schema(max_items = 10)]
    pub hostnames: Option<Vec<String>>,
    #[schema(max_items = 500)]
    pub components: Option<Vec<ComponentBody>>,
}

#[derive(Serialize, ToSchema)]
pub struct ComponentView {
    pub id: Uuid,
    pub domain: Uuid,
    pub name: String,
    pub group: Option<String>,
    pub reveal: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PageView {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub description: Option<String>,
    pub hostnames: Vec<String>,
    pub components: Vec<ComponentView>,
    /// Where the page is served: `/status/{slug}`.
    pub public_path: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct PageList {
    pub items: Vec<PageView>,
}

// ---------------------------------------------------------------- maintenance

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    #[schema(max_items = 500)]
    pub domain_ids: Option<Vec<Uuid>>,
    #[schema(max_items = 20)]
    pub tags: Option<Vec<String>>,
}

/// `POST /v1/maintenance` and what a `PATCH` may change: a one-off window (`starts_at`,
/// `ends_at`) or a recurring one (`dtstart` local time in `time_zone`, an ISO 8601
/// `duration`, an RFC 5545 `rrule`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "database upgrade", "scope": {"tags": ["db"]},
    "time_zone": "Europe/Berlin", "dtstart": "2026-01-04T02:00:00", "duration": "PT2H",
    "rrule": "FREQ=WEEKLY;BYDAY=SU"}))]
pub struct WindowBody {
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// May span lines.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    pub scope: Option<ScopeBody>,
    /// IANA name; default `UTC`.
    pub time_zone: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    #[schema(example = "2026-01-04T02:00:00")]
    pub dtstart: Option<String>,
    #[schema(example = "PT2H")]
    pub duration: Option<String>,
    #[schema(example = "FREQ=WEEKLY;BYDAY=SU")]
    pub rrule: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OccurrenceView {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ScopeView {
    pub domain_ids: Vec<Uuid>,
    pub tags: Vec<String>,
}

/// A window: its definition in the request form, the occurrence under way and the next.
#[derive(Serialize, ToSchema)]
pub struct WindowView {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub scope: ScopeView,
    pub time_zone: String,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub dtstart: Option<String>,
    pub duration: Option<String>,
    pub rrule: Option<String>,
    pub active: Option<OccurrenceView>,
    pub next: Option<OccurrenceView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct WindowPage {
    pub items: Vec<WindowView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OccurrenceList {
    pub window_id: Uuid,
    pub time_zone: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub items: Vec<OccurrenceView>,
    /// Whether more occurrences fall in the range than were listed.
    pub truncated: bool,
}

/// The top-level fields of a resource's view a write changed, before and after (secrets
/// redacted); `before` is `null` for a creation, `after` `null` for a deletion.
#[derive(Serialize, ToSchema)]
pub struct AuditDiff {
    /// The changed fields as they were, keyed by field name (any resource's view).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Map<String, serde_json::Value>>,
    /// The changed fields as they are now.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<crate::audit::store::Row>,
    pub next_cursor: Option<String>,
}
