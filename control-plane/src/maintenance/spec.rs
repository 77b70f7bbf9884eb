//! Parsing a maintenance window request into a [`WindowSpec`], naming every bad field at once
//! (`title`, `scope.tags[1]`, `rrule`, …) as domain requests do.
//!
//! A request is a JSON object:
//!
//! ```json
//! {"title": "Database upgrade", "description": "optional",
//!  "scope": {"domain_ids": ["…"], "tags": ["prod"]},
//!  "time_zone": "Europe/Berlin",
//!  "starts_at": "2026-12-05T22:00:00Z", "ends_at": "2026-12-06T01:00:00Z"}
//! ```
//!
//! or, recurring, `"dtstart": "2026-12-06T02:30:00"` (local time in `time_zone`, no offset),
//! `"duration": "PT2H"` (or seconds) and `"rrule": "FREQ=WEEKLY;BYDAY=SU"` instead of
//! `starts_at`/`ends_at`. `time_zone` defaults to `UTC`.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::schedule::{self, Schedule, WindowDuration, MAX_WINDOW};
use crate::domains::tags;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most domain ids in a scope.
pub const MAX_SCOPE_DOMAINS: usize = 500;

const KNOWN_FIELDS: [&str; 9] =
    ["title", "description", "scope", "time_zone", "starts_at", "ends_at", "dtstart", "duration", "rrule"];
const ONCE_FIELDS: [&str; 2] = ["starts_at", "ends_at"];
const RECURRING_FIELDS: [&str; 3] = ["dtstart", "duration", "rrule"];

/// Which domains a window covers: those listed, and those carrying any of the tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// Sorted, deduplicated.
    pub domain_ids: Vec<Uuid>,
    /// Normalized, sorted, deduplicated ([`tags`]).
    pub tags: Vec<String>,
}

/// A valid maintenance window definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub title: String,
    pub description: Option<String>,
    pub scope: Scope,
    /// The IANA zone local times (`dtstart`, nominal days) are read in.
    pub time_zone: Tz,
    pub schedule: Schedule,
}

/// Problems found in a request, by field name.
pub type FieldErrors = BTreeMap<String, String>;

fn add(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    errors.entry(field.to_owned()).or_insert_with(|| message.into());
}

impl WindowSpec {
    /// Parses a request object.
    pub fn parse(request: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        for key in request.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                add(&mut errors, key, "unknown field");
            }
        }
        let field = |name: &str| request.get(name).filter(|v| !v.is_null());

        let title = match field("title") {
            None => {
                add(&mut errors, "title", "required");
                None
            }
            Some(Value::String(s)) if valid_text(s, MAX_TITLE_CHARS) => Some(s.trim().to_owned()),
            Some(_) => {
                let message = format!(
                    "must be a string of 1 to {MAX_TITLE_CHARS} characters without control characters"
                );
                add(&mut errors, "title", message);
                None
            }
        };
        let description = match field("description") {
            None => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION_CHARS => Some(s.trim().to_owned()),
            Some(_) => {
                add(
                    &mut errors,
                    "description",
                    format!("must be a string of at most {MAX_DESCRIPTION_CHARS} characters"),
                );
                None
            }
        };
        let scope = parse_scope(field("scope"), &mut errors);
        let time_zone = match field("time_zone") {
            None => Some(Tz::UTC),
            Some(Value::String(name)) => Tz::from_str(name)
                .map_err(|_| {
                    add(&mut errors, "time_zone", "must be an IANA time zone name such as \"Europe/Berlin\"")
                })
                .ok(),
            Some(_) => {
                add(&mut errors, "time_zone", "must be an IANA time zone name such as \"Europe/Berlin\"");
                None
            }
        };
        let once = ONCE_FIELDS.iter().any(|f| field(f).is_some());
        let recurring = RECURRING_FIELDS.iter().any(|f| field(f).is_some());
        let schedule = match (once, recurring) {
            (true, true) | (false, false) => {
                add(
                    &mut errors,
                    "schedule",
                    "give either starts_at and ends_at (one-off), or dtstart, duration and rrule (recurring)",
                );
                None
            }
            (true, false) => parse_once(field("starts_at"), field("ends_at"), &mut errors),
            (false, true) => {
                parse_recurring(field("dtstart"), field("duration"), field("rrule"), time_zone, &mut errors)
            }
        };
        match (title, scope, time_zone, schedule) {
            (Some(title), Some(scope), Some(time_zone), Some(schedule)) if errors.is_empty() => {
                Ok(WindowSpec { title, description, scope, time_zone, schedule })
            }
            _ => Err(errors),
        }
    }

    /// Parses `patch` overlaid on this window's request form. Naming a field of one schedule
    /// form drops the other form's fields, so a `PATCH` can switch from one-off to recurring.
    pub fn patched(&self, patch: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut request = self.to_request();
        let names = |fields: &[&str]| patch.keys().any(|k| fields.contains(&k.as_str()));
        let dropped: &[&str] = match (names(&ONCE_FIELDS), names(&RECURRING_FIELDS)) {
            (true, false) => &RECURRING_FIELDS,
            (false, true) => &ONCE_FIELDS,
            // Both named: the parse says so; neither: nothing to drop.
            _ => &[],
        };
        for field in dropped {
            request.remove(*field);
        }
        request.extend(patch.clone());
        Self::parse(&request)
    }

    /// The request form: parsing it gives this spec again. Also the API's view of the
    /// definition.
    pub fn to_request(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("title".into(), Value::from(self.title.as_str()));
        map.insert("description".into(), self.description.as_deref().map_or(Value::Null, Value::from));
        map.insert("scope".into(), json!({"domain_ids": self.scope.domain_ids, "tags": self.scope.tags}));
        map.insert("time_zone".into(), Value::from(self.time_zone.name()));
        match &self.schedule {
            Schedule::Once { starts_at, ends_at } => {
                map.insert("starts_at".into(), json!(starts_at));
                map.insert("ends_at".into(), json!(ends_at));
            }
            Schedule::Recurring { dtstart, duration, rrule } => {
                map.insert("dtstart".into(), Value::from(dtstart.format("%Y-%m-%dT%H:%M:%S").to_string()));
                map.insert("duration".into(), Value::from(duration.iso()));
                map.insert("rrule".into(), Value::from(rrule.as_str()));
            }
        }
        map
    }
}

fn valid_text(s: &str, max: usize) -> bool {
    let t = s.trim();
    !t.is_empty() && t.chars().count() <= max && !s.chars().any(char::is_control)
}

fn parse_scope(value: Option<&Value>, errors: &mut FieldErrors) -> Option<Scope> {
    let Some(value) = value else {
        add(
            errors,
            "scope",
            "required: {\"domain_ids\": [...], \"tags\": [...]}, at least one of them non-empty",
        );
        return None;
    };
    let Value::Object(map) = value else {
        add(errors, "scope", "must be an object with domain_ids and/or tags");
        return None;
    };
    let before = errors.len();
    for key in map.keys().filter(|k| !matches!(k.as_str(), "domain_ids" | "tags")) {
        add(errors, &format!("scope.{key}"), "unknown field");
    }
    let mut scope = Scope::default();
    match map.get("domain_ids").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Array(items)) if items.len() <= MAX_SCOPE_DOMAINS => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                    Some(id) => scope.domain_ids.push(id),
                    None => add(errors, &format!("scope.domain_ids[{i}]"), "must be a domain id"),
                }
            }
            scope.domain_ids.sort();
            scope.domain_ids.dedup();
        }
        Some(_) => add(
            errors,
            "scope.domain_ids",
            format!("must be an array of at most {MAX_SCOPE_DOMAINS} domain ids"),
        ),
    }
    match map.get("tags").filter(|v| !v.is_null()) {
        None => {}
        Some(v) => match tags::parse("scope.tags", v) {
            Ok(t) => scope.tags = t,
            Err((field, message)) => add(errors, &field, message),
        },
    }
    if errors.len() > before {
        return None;
    }
    if scope.domain_ids.is_empty() && scope.tags.is_empty() {
        add(errors, "scope", "must name at least one domain id or tag");
        return None;
    }
    Some(scope)
}

fn rfc3339(value: Option<&Value>, field: &str, errors: &mut FieldErrors) -> Option<DateTime<Utc>> {
    match value {
        None => {
            add(errors, field, "required");
            None
        }
        Some(v) => v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| {
                add(errors, field, "must be an RFC 3339 time such as \"2026-12-05T22:00:00Z\"");
                None
            }),
    }
}

fn parse_once(starts: Option<&Value>, ends: Option<&Value>, errors: &mut FieldErrors) -> Option<Schedule> {
    let starts_at = rfc3339(starts, "starts_at", errors);
    let ends_at = rfc3339(ends, "ends_at", errors);
    let (starts_at, ends_at) = (starts_at?, ends_at?);
    if ends_at <= starts_at {
        add(errors, "ends_at", "must be after starts_at");
        return None;
    }
    if ends_at - starts_at > MAX_WINDOW {
        add(errors, "ends_at", format!("a window lasts at most {} days", MAX_WINDOW.num_days()));
        return None;
    }
    Some(Schedule::Once { starts_at, ends_at })
}

fn parse_recurring(
    dtstart: Option<&Value>,
    duration: Option<&Value>,
    rrule: Option<&Value>,
    tz: Option<Tz>,
    errors: &mut FieldErrors,
) -> Option<Schedule> {
    let dtstart = match dtstart {
        None => {
            add(errors, "dtstart", "required");
            None
        }
        Some(v) => v
            .as_str()
            .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok())
            .or_else(|| {
                add(
                    errors,
                    "dtstart",
                    "must be a local date and time without offset, such as \"2026-12-06T02:30:00\"",
                );
                None
            }),
    };
    let duration = match duration {
        None => {
            add(errors, "duration", "required");
            None
        }
        Some(v) => WindowDuration::parse(v).map_err(|m| add(errors, "duration", m)).ok(),
    };
    let rrule = match rrule {
        None => {
            add(errors, "rrule", "required");
            None
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            let s = s.strip_prefix("RRULE:").unwrap_or(s);
            if s.is_empty() || s.len() > 500 || s.chars().any(|c| c.is_control() || c == ':') {
                add(errors, "rrule", "must be one RFC 5545 RRULE value such as \"FREQ=WEEKLY;BYDAY=SU\"");
                None
            } else {
                Some(s.to_owned())
            }
        }
        Some(_) => {
            add(errors, "rrule", "must be one RFC 5545 RRULE value such as \"FREQ=WEEKLY;BYDAY=SU\"");
            None
        }
    };
    let (dtstart, duration, rrule, tz) = (dtstart?, duration?, rrule?, tz?);
    match schedule::rule_set(dtstart, &rrule, tz) {
        Err(reason) => {
            add(errors, "rrule", format!("not a valid recurrence rule: {reason}"));
            None
        }
        Ok(set) => {
            let frequent = set
                .get_rrule()
                .iter()
                .any(|r| matches!(r.get_freq(), rrule::Frequency::Secondly | rrule::Frequency::Minutely));
            if frequent {
                add(errors, "rrule", "FREQ must be HOURLY or less frequent");
                return None;
            }
            Some(Schedule::Recurring { dtstart, duration, rrule })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<WindowSpec, FieldErrors> {
        WindowSpec::parse(v.as_object().unwrap())
    }

    const ID: &str = "0190b8a8-0000-7000-8000-000000000001";

    #[test]
    fn one_off_and_recurring_round_trip() {
        for request in [
            json!({"title": "DB upgrade", "scope": {"tags": ["Prod"]},
                   "starts_at": "2026-12-05T22:00:00+01:00", "ends_at": "2026-12-06T01:00:00Z"}),
            json!({"title": " Weekly ", "description": "patching", "scope": {"domain_ids": [ID, ID]},
                   "time_zone": "Europe/Berlin", "dtstart": "2026-03-01T02:30:00", "duration": 7200,
                   "rrule": "RRULE:FREQ=WEEKLY;BYDAY=SU"}),
        ] {
            let spec = parse(request.clone()).unwrap_or_else(|e| panic!("{request}: {e:?}"));
            assert_eq!(WindowSpec::parse(&spec.to_request()).unwrap(), spec, "{request}");
        }
        let spec = parse(json!({"title": " Weekly ", "scope": {"domain_ids": [ID, ID], "tags": []},
            "time_zone": "Europe/Berlin", "dtstart": "2026-03-01T02:30:00", "duration": 7200,
            "rrule": "RRULE:FREQ=WEEKLY;BYDAY=SU"}))
        .unwrap();
        assert_eq!(spec.title, "Weekly");
        assert_eq!(spec.scope.domain_ids.len(), 1);
        assert_eq!(spec.to_request()["rrule"], "FREQ=WEEKLY;BYDAY=SU");
        assert_eq!(spec.to_request()["duration"], "PT2H");
        assert_eq!(spec.time_zone, chrono_tz::Europe::Berlin);
    }

    #[test]
    fn bad_requests_name_each_field() {
        let once = |extra: Value| {
            let mut base = json!({"title": "t", "scope": {"tags": ["prod"]},
                "starts_at": "2026-12-05T22:00:00Z", "ends_at": "2026-12-06T01:00:00Z"});
            base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            base
        };
        let recurring = |extra: Value| {
            let mut base = json!({"title": "t", "scope": {"tags": ["prod"]}, "time_zone": "Europe/Berlin",
                "dtstart": "2026-03-01T02:30:00", "duration": "PT2H", "rrule": "FREQ=WEEKLY"});
            base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            base
        };
        for (request, field, message) in [
            (once(json!({"title": null})), "title", "required"),
            (
                once(json!({"title": ""})),
                "title",
                "must be a string of 1 to 200 characters without control characters",
            ),
            (once(json!({"colour": 1})), "colour", "unknown field"),
            (once(json!({"description": 5})), "description", "must be a string of at most 2000 characters"),
            (
                once(json!({"scope": null})),
                "scope",
                "required: {\"domain_ids\": [...], \"tags\": [...]}, at least one of them non-empty",
            ),
            (once(json!({"scope": []})), "scope", "must be an object with domain_ids and/or tags"),
            (once(json!({"scope": {}})), "scope", "must name at least one domain id or tag"),
            (
                once(json!({"scope": {"tags": [], "domain_ids": []}})),
                "scope",
                "must name at least one domain id or tag",
            ),
            (once(json!({"scope": {"tags": ["ok", "no way"]}})), "scope.tags[1]", tags::RULE),
            (once(json!({"scope": {"domain_ids": ["nope"]}})), "scope.domain_ids[0]", "must be a domain id"),
            (
                once(json!({"scope": {"domain_ids": "x"}})),
                "scope.domain_ids",
                "must be an array of at most 500 domain ids",
            ),
            (once(json!({"scope": {"domains": []}})), "scope.domains", "unknown field"),
            (
                once(json!({"time_zone": "Mars/Olympus"})),
                "time_zone",
                "must be an IANA time zone name such as \"Europe/Berlin\"",
            ),
            (
                once(json!({"starts_at": "tomorrow"})),
                "starts_at",
                "must be an RFC 3339 time such as \"2026-12-05T22:00:00Z\"",
            ),
            (once(json!({"ends_at": null})), "ends_at", "required"),
            (once(json!({"ends_at": "2026-12-05T21:00:00Z"})), "ends_at", "must be after starts_at"),
            (once(json!({"ends_at": "2027-02-05T21:00:00Z"})), "ends_at", "a window lasts at most 31 days"),
            (
                once(json!({"rrule": "FREQ=DAILY"})),
                "schedule",
                "give either starts_at and ends_at (one-off), or dtstart, duration and rrule (recurring)",
            ),
            (
                json!({"title": "t", "scope": {"tags": ["a"]}}),
                "schedule",
                "give either starts_at and ends_at (one-off), or dtstart, duration and rrule (recurring)",
            ),
            (
                recurring(json!({"dtstart": "2026-03-01T02:30:00Z"})),
                "dtstart",
                "must be a local date and time without offset, such as \"2026-12-06T02:30:00\"",
            ),
            (
                recurring(json!({"duration": "P1Y"})),
                "duration",
                "years and months are not allowed: use weeks, days, hours, minutes",
            ),
            (recurring(json!({"duration": null})), "duration", "required"),
            (
                recurring(json!({"rrule": 7})),
                "rrule",
                "must be one RFC 5545 RRULE value such as \"FREQ=WEEKLY;BYDAY=SU\"",
            ),
            (
                recurring(json!({"rrule": "FREQ=WEEKLY\nRRULE:FREQ=DAILY"})),
                "rrule",
                "must be one RFC 5545 RRULE value such as \"FREQ=WEEKLY;BYDAY=SU\"",
            ),
            (recurring(json!({"rrule": "FREQ=MINUTELY"})), "rrule", "FREQ must be HOURLY or less frequent"),
        ] {
            let errors = parse(request.clone()).expect_err(&request.to_string());
            assert_eq!(errors.get(field).map(String::as_str), Some(message), "{request}: {errors:?}");
        }
        let errors = parse(recurring(json!({"rrule": "FREQ=FORTNIGHTLY"}))).unwrap_err();
        assert!(errors["rrule"].starts_with("not a valid recurrence rule: "), "{errors:?}");
        let errors = parse(recurring(json!({"rrule": "FREQ=WEEKLY;BYDAY=XX"}))).unwrap_err();
        assert!(errors["rrule"].starts_with("not a valid recurrence rule: "), "{errors:?}");
    }

    #[test]
    fn a_patch_can_switch_the_schedule_form() {
        let once = parse(json!({"title": "t", "scope": {"tags": ["prod"]},
            "starts_at": "2026-12-05T22:00:00Z", "ends_at": "2026-12-06T01:00:00Z"}))
        .unwrap();
        let patch = json!({"dtstart": "2026-12-06T02:00:00", "duration": "PT1H", "rrule": "FREQ=DAILY"});
        let recurring = once.patched(patch.as_object().unwrap()).unwrap();
        assert!(matches!(recurring.schedule, Schedule::Recurring { .. }));
        assert_eq!(recurring.title, "t");
        let renamed = recurring.patched(json!({"title": "u"}).as_object().unwrap()).unwrap();
        assert_eq!((renamed.title.as_str(), &renamed.schedule), ("u", &recurring.schedule));
        let errors = recurring.patched(json!({"duration": "PT0S"}).as_object().unwrap()).unwrap_err();
        assert_eq!(errors["duration"], "must be longer than zero");
    }
}
