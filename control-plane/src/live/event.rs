//! The live event: what is published after a commit and what a stream's [`super::View`]
//! turns into Server-Sent Events. One flat shape for every kind, each field present only where
//! the kind has it, so consumers (the console's script, tests, other replicas) read one
//! documented object.
//!
//! | kind | published when | fields besides `kind`, `tenant`, `at` |
//! |---|---|---|
//! | `state` | consensus committed a transition | `domain`, `state` (`up`, `down`, `unknown`), `from`, `incident` (the incident it opened or resolved) |
//! | `monitoring` | a domain was paused or resumed | `domain`, `state` (`paused`, `resumed`) |
//! | `incident` | an incident was acknowledged | `domain`, `incident`, `state` (`acknowledged`), `message` (the note) |
//! | `incident_update` | an operator posted an update | `domain`, `incident`, `state` (`investigating`, `identified`, `monitoring`, `resolved`), `message` |
//! | `domain` | a domain was created, changed or deleted | `domain`, `state` (`created`, `updated`, `deleted`) |
//! | `page` | a status page was created, changed or deleted | `page`, `state` (`created`, `updated`, `deleted`) |
//! | `result` | a region's new probe result was recorded (not kept in the stream, see [`super`]) | `domain`, `region`, `ok`, `error_kind`, `status_code` |
//!
//! `id` is the event's position in the Redis stream (`<ms>-<seq>`), set when it is read back;
//! `result` events have none.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    State,
    Monitoring,
    Incident,
    IncidentUpdate,
    Domain,
    Page,
    Result,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::State => "state",
            Kind::Monitoring => "monitoring",
            Kind::Incident => "incident",
            Kind::IncidentUpdate => "incident_update",
            Kind::Domain => "domain",
            Kind::Page => "page",
            Kind::Result => "result",
        }
    }

    /// Whether events of this kind go through the stream (kept, resumable) rather than only
    /// through Pub/Sub (results: many, and worthless once a newer one exists).
    pub fn kept(self) -> bool {
        self != Kind::Result
    }
}

/// A position in the event stream: a Redis stream entry id, `<milliseconds>-<sequence>`.
/// Ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    /// Before every entry.
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a text is not an event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event id (expected <milliseconds>-<sequence>)")]
pub struct BadEventId;

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = raw.trim().split_once('-').ok_or(BadEventId)?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(BadEventId);
        }
        Ok(EventId { ms: ms.parse().map_err(|_| BadEventId)?, seq: seq.parse().map_err(|_| BadEventId)? })
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// One live event (see the module documentation for the fields of each kind).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<EventId>,
    pub kind: Kind,
    pub tenant: Uuid,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    /// The JSON of this event, made once however many streams send it.
    #[serde(skip)]
    json: OnceLock<String>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Event {
    /// An event of `kind` for `tenant` at `at`, without the optional fields.
    pub fn new(kind: Kind, tenant: Uuid, at: DateTime<Utc>) -> Self {
        Self {
            id: None,
            kind,
            tenant,
            at,
            domain: None,
            state: None,
            from: None,
            incident: None,
            page: None,
            message: None,
            region: None,
            ok: None,
            error_kind: None,
            status_code: None,
            json: OnceLock::new(),
        }
    }

    /// A domain's consensus state changed from `from` to `to`; `incident` is the incident the
    /// transition opened or resolved.
    pub fn state(
        tenant: Uuid,
        domain: Uuid,
        from: &str,
        to: &str,
        incident: Option<Uuid>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            domain: Some(domain),
            state: Some(to.to_owned()),
            from: Some(from.to_owned()),
            incident,
            ..Self::new(Kind::State, tenant, at)
        }
    }

    /// A domain was paused (`paused`) or resumed (`resumed`).
    pub fn monitoring(tenant: Uuid, domain: Uuid, paused: bool, at: DateTime<Utc>) -> Self {
        let state = if paused { "paused" } else { "resumed" };
        Self { domain: Some(domain), state: Some(state.into()), ..Self::new(Kind::Monitoring, tenant, at) }
    }

    /// A domain was `created`, `updated` or `deleted`.
    pub fn domain(tenant: Uuid, domain: Uuid, op: &str, at: DateTime<Utc>) -> Self {
        Self { domain: Some(domain), state: Some(op.into()), ..Self::new(Kind::Domain, tenant, at) }
    }

    /// A status page was `created`, `updated` or `deleted`.
    pub fn page(tenant: Uuid, page: Uuid, op: &str, at: DateTime<Utc>) -> Self {
        Self { page: Some(page), state: Some(op.into()), ..Self::new(Kind::Page, tenant, at) }
    }

    /// An incident event of `kind` ([`Kind::Incident`]: acknowledged; [`Kind::IncidentUpdate`]:
    /// an operator's update, `state` its status) with its note or message.
    pub fn incident(
        kind: Kind,
        tenant: Uuid,
        domain: Uuid,
        incident: Uuid,
        state: &str,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            domain: Some(domain),
            incident: Some(incident),
            state: Some(state.to_owned()),
            message: message.map(str::to_owned),
            ..Self::new(kind, tenant, at)
        }
    }

    /// A region's new probe result of a domain.
    pub fn result(
        tenant: Uuid,
        domain: Uuid,
        region: String,
        ok: bool,
        error_kind: Option<String>,
        status_code: Option<i32>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            domain: Some(domain),
            region: Some(region),
            ok: Some(ok),
            error_kind,
            status_code,
            ..Self::new(Kind::Result, tenant, at)
        }
    }

    /// This event with its stream position.
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self.json = OnceLock::new();
        self
    }

    /// The event as JSON (made once).
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(self).expect("an event serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_print_and_order_as_redis_does() {
        let a: EventId = "1700000000000-0".parse().unwrap();
        let b: EventId = "1700000000000-12".parse().unwrap();
        let c: EventId = "1700000000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        for bad in ["", "1", "-1", "1-", "a-1", "1-1-1", "1 -1", "123456789012345678901-0"] {
            assert_eq!(bad.parse::<EventId>(), Err(BadEventId), "{bad:?}");
        }
    }

    #[test]
    fn an_event_round_trips_with_only_its_fields() {
        let tenant = Uuid::now_v7();
        let domain = Uuid::now_v7();
        let at = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").unwrap().with_timezone(&Utc);
        let event = Event::state(tenant, domain, "up", "down", None, at).with_id("5-1".parse().unwrap());
        let json: serde_json::Value = serde_json::from_str(event.json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "5-1", "kind": "state", "tenant": tenant, "at": "2026-11-20T10:00:00Z",
                "domain": domain, "state": "down", "from": "up",
            })
        );
        let back: Event = serde_json::from_str(event.json()).unwrap();
        assert_eq!(back, event);
    }
}
