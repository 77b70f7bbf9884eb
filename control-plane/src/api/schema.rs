//! The shapes of the REST API's request and response bodies, for its OpenAPI description
//! ([`super::openapi`]). The handlers parse bodies by hand (every bad field named at once, see
//! [`crate::domains::spec`]) and build answers with `json!`; these types describe exactly what
//! those parsers accept and those answers hold, and are not used to parse or serialize.
//! A `null` request field means the same as leaving it out. The fuzzing test
//! (`tests/it/openapi.rs`) checks every answer against these schemas.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
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
    ValidationFailed,
    BadRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    Conflict,
    RateLimited,
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
    /// The check type and its settings: `{"type": "http"}` (default), `{"type": "tcp",
    /// "host", "port"}`, `{"type": "tls", "host", "port"}`, `{"type": "dns", "name",
    /// "record_type", "expect", "servers"}`.
    pub check: Option<Value>,
    /// An http check's JSON body assertion: `{"path": "$.status", "op": "eq", "value": "ok"}`.
    pub json: Option<Value>,
    pub method: Option<MethodBody>,
    #[schema(max_items = 32)]
    pub headers: Option<Vec<HeaderBody>>,
    /// `{"kind": "basic", "username", "password"}` or `{"kind": "bearer", "token"}`; the
    /// secrets are write-only.
    pub auth: Option<Value>,
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
    /// Flap detection overrides: `enabled`, `window_s`, `enter_transitions`,
    /// `leave_transitions`, `quiet_s`.
    pub flap: Option<Value>,
    /// DNS drift settings: `notify`, `stable_probes`, `allowed_networks`, `same_network`.
    pub dns_drift: Option<Value>,
    /// A service level objective: `target` (percent), `period` (`month`),
    /// `budget_alert_fraction`.
    pub slo: Option<Value>,
    /// Latency anomaly overrides: `latency_ms`, `anomaly`, `window`, `z`, `consecutive`.
    pub degraded: Option<Value>,
    /// Lowercase tags (`[a-z0-9][a-z0-9._:-]{0,39}`), normalized and deduplicated.
    #[schema(max_items = 20, inline)]
    pub tags: Option<Vec<TagBody>>,
}

#[derive(Serialize, ToSchema)]
#[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,39}$")]
pub struct TagBody(String);

/// A domain as the API shows it. Request secrets are shown as set, never their values.
#[derive(Serialize, ToSchema)]
pub struct DomainView {
    pub id: Uuid,
    pub name: Option<String>,
    pub url: String,
    pub check: Value,
    pub json: Option<Value>,
    /// As a range: `200-299`.
    pub expected_status: String,
    pub keyword: Option<String>,
    pub keyword_mode: Option<String>,
    pub keyword_case_insensitive: Option<bool>,
    pub interval: IntervalBody,
    pub interval_s: u32,
    pub timeout_ms: u32,
    pub regions: Vec<String>,
    pub quorum: Option<u32>,
    pub paused: bool,
    pub tls_verify: bool,
    pub http_version: HttpVersionBody,
    pub flap: Option<Value>,
    pub tags: Vec<String>,
    pub dns_drift: Value,
    pub slo: Option<Value>,
    pub degraded: Option<Value>,
    /// The configuration version this domain was last written at.
    pub config_version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub method: String,
    /// `{"name", "value", "secret": false}` or `{"name", "secret": true, "value_set": true}`.
    pub headers: Vec<Value>,
    /// `{"kind": "basic", "username", "password_set"}` or `{"kind": "bearer", "token_set"}`.
    pub auth: Option<Value>,
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
    pub last_seen: Option<DateTime<Utc>>,
    /// The region's canary verdict: false only when every agent sending one reports itself
    /// unhealthy; null when none sends one.
    pub healthy: Option<bool>,
    /// Each agent: `agent_id`, certificate serial, version, first and last seen, revoked, its
    /// own latest canary verdict (`healthy`, `health_checked_at`; null without canaries).
    pub agents: Option<Vec<Value>>,
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
    Definition(Value),
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
    /// One per region that answered: `region`, `agent_id`, `ok`, `error_kind`,
    /// `status_code`, `timings`, `certificate`, ….
    pub results: Vec<Value>,
    pub missing_regions: Vec<String>,
}

// ---------------------------------------------------------------- incidents

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
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
    pub paused: bool,
    pub open_incident_id: Option<Uuid>,
    pub quorum: u32,
    pub freshness_s: f64,
    pub failing: u32,
    pub passing: u32,
    pub degraded: u32,
    /// Every region's vote: `region`, `standing`, `voting`, `observation`, `latency`.
    pub regions: Vec<Value>,
    pub flap: Value,
    pub regional_failures: Vec<Value>,
    /// `{"active", "next"}`: the maintenance window under way and the next one.
    pub maintenance: Value,
}

// ---------------------------------------------------------------- history

#[derive(Serialize, ToSchema)]
pub struct UptimeAnswer {
    pub window: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Consensus uptime over the monitored time; `null` before any.
    pub uptime_percent: Option<f64>,
    pub consensus: Value,
    pub probes: Value,
    pub regions: Value,
    pub regional_failures: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ItemList {
    pub items: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct CertificateAnswer {
    /// Per region: the certificate chain seen, its fault and later hops.
    pub regions: Vec<Value>,
    /// `{"region", "certificate"}`: the certificate that expires first.
    pub earliest_expiry: Option<Value>,
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
    pub chat_id: Option<Value>,
    pub topic: Option<String>,
    pub token: Option<String>,
}

/// A channel; its target fields (`url`, `to`, `chat_id`, `topic`) shown as stored, secrets
/// never. `secret` (a webhook's signing secret) only in the creation answer.
#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub storm_window_s: i32,
    pub storm_threshold: i32,
    pub events: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub secret: Option<String>,
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
    pub notification: Value,
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
    pub dns_drift: Value,
    /// Per region: `known`, `known_since`, `candidate`, `candidate_probes`, ….
    pub regions: Vec<Value>,
    /// Confirmed changes, newest first.
    pub changes: Vec<Value>,
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

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<crate::audit::store::Row>,
    pub next_cursor: Option<String>,
}
