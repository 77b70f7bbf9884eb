//! Flap settings: the global ones from the configuration, a domain's overrides (the JSON object
//! in `domains.flap`) and their merge, with the rules every merged result must satisfy.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;

/// The longest window (and quiet period): 7 days.
pub const MAX_WINDOW_S: u64 = 7 * 86_400;

/// The largest accepted transition threshold: a window can hold no more meaningful changes.
pub const MAX_TRANSITIONS: u32 = 10_000;

const KNOWN: [&str; 5] = ["enabled", "window_s", "enter_transitions", "leave_transitions", "quiet_s"];

/// The flap settings in force for one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    /// The rolling window transitions are counted in.
    pub window: Duration,
    /// Enter flap mode at this many transitions in the window (at least 2).
    pub enter: u32,
    /// Leave flap mode at this many or fewer (below `enter`), once `quiet` passed without one.
    pub leave: u32,
    /// How long a flapping domain must go without a transition before it may leave flap mode.
    pub quiet: Duration,
}

impl Settings {
    /// The global settings (`flap_*`; the configuration has validated them).
    pub fn from_config(config: &Config) -> Self {
        Self {
            enabled: config.flap_enabled,
            window: Duration::from_secs(config.flap_window_s),
            enter: config.flap_enter_transitions,
            leave: config.flap_leave_transitions,
            quiet: Duration::from_secs(config.flap_quiet_s),
        }
    }

    pub fn window_s(&self) -> u64 {
        self.window.as_secs()
    }

    pub fn quiet_s(&self) -> u64 {
        self.quiet.as_secs()
    }

    /// `overrides` merged over these settings, checked: problems by field (`flap.<key>`).
    pub fn merge(&self, overrides: &Overrides) -> Result<Settings, Vec<(String, String)>> {
        let merged = Settings {
            enabled: overrides.enabled.unwrap_or(self.enabled),
            window: overrides.window_s.map_or(self.window, Duration::from_secs),
            enter: overrides.enter_transitions.unwrap_or(self.enter),
            leave: overrides.leave_transitions.unwrap_or(self.leave),
            quiet: overrides.quiet_s.map_or(self.quiet, Duration::from_secs),
        };
        let mut errors = Vec::new();
        let mut add = |field: &str, message: String| errors.push((format!("flap.{field}"), message));
        if merged.enter < 2 {
            add("enter_transitions", "must be at least 2".into());
        } else if merged.leave >= merged.enter {
            // Blame the key the request named; the other one is the global setting.
            if overrides.leave_transitions.is_some() {
                add("leave_transitions", format!("must be below enter_transitions ({})", merged.enter));
            } else {
                add("enter_transitions", format!("must be above leave_transitions ({})", merged.leave));
            }
        }
        if merged.window_s() == 0 || merged.window_s() > MAX_WINDOW_S {
            add("window_s", format!("must be from 1 to {MAX_WINDOW_S}"));
        } else if merged.quiet > merged.window {
            if overrides.quiet_s.is_some() {
                add("quiet_s", format!("must not exceed window_s ({})", merged.window_s()));
            } else {
                add("window_s", format!("must be at least quiet_s ({})", merged.quiet_s()));
            }
        }
        if errors.is_empty() {
            Ok(merged)
        } else {
            Err(errors)
        }
    }

    /// The settings for a domain whose stored overrides are `stored` (`domains.flap`). Stored
    /// overrides that no longer merge (the global settings changed since they were accepted) or
    /// do not parse are ignored in favour of the global settings; the error says why.
    pub fn for_domain(&self, stored: Option<&Value>) -> Result<Settings, (Settings, String)> {
        let Some(value) = stored.filter(|v| !v.is_null()) else { return Ok(*self) };
        let overrides = Overrides::deserialize(value).map_err(|e| (*self, format!("unreadable: {e}")))?;
        self.merge(&overrides).map_err(|errors| {
            let described: Vec<String> = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect();
            (*self, described.join("; "))
        })
    }
}

/// A domain's flap overrides: each key present replaces the global setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FlapOverrides)]
pub struct Overrides {
    /// Whether flap detection runs for the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The window transitions are counted in, seconds.
    pub window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Transitions in the window that start a flap period.
    pub enter_transitions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// At most this many transitions in the window (after `quiet_s`) end it.
    pub leave_transitions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Seconds without a transition before a flap period may end.
    pub quiet_s: Option<u64>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("flap overrides serialize")
    }

    /// Parses the request's `flap` object and checks its merge over `global`. Problems are
    /// named `flap` or `flap.<key>`.
    pub fn parse(value: &Value, global: &Settings) -> Result<Overrides, Vec<(String, String)>> {
        let Value::Object(map) = value else {
            return Err(vec![(
                "flap".into(),
                format!("must be an object with any of {} (or null)", KNOWN.join(", ")),
            )]);
        };
        let mut errors = Vec::new();
        for key in map.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            errors.push((format!("flap.{key}"), "unknown field".into()));
        }
        let mut overrides = Overrides::default();
        let get = |map: &Map<String, Value>, key: &str| map.get(key).filter(|v| !v.is_null()).cloned();
        match get(map, "enabled") {
            None => {}
            Some(Value::Bool(b)) => overrides.enabled = Some(b),
            Some(_) => errors.push(("flap.enabled".into(), "must be true or false".into())),
        }
        let mut integer = |key: &str, min: u64, max: u64| -> Option<u64> {
            let value = get(map, key)?;
            match value.as_u64().filter(|n| (min..=max).contains(n)) {
                Some(n) => Some(n),
                None => {
                    errors.push((format!("flap.{key}"), format!("must be an integer from {min} to {max}")));
                    None
                }
            }
        };
        overrides.window_s = integer("window_s", 1, MAX_WINDOW_S);
        overrides.quiet_s = integer("quiet_s", 0, MAX_WINDOW_S);
        let max = u64::from(MAX_TRANSITIONS);
        overrides.enter_transitions = integer("enter_transitions", 2, max).map(|n| n as u32);
        overrides.leave_transitions = integer("leave_transitions", 0, max - 1).map(|n| n as u32);
        if !errors.is_empty() {
            return Err(errors);
        }
        global.merge(&overrides)?;
        Ok(overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn global() -> Settings {
        Settings {
            enabled: true,
            window: Duration::from_secs(3600),
            enter: 6,
            leave: 2,
            quiet: Duration::from_secs(900),
        }
    }

    fn errors(value: Value) -> Vec<(String, String)> {
        Overrides::parse(&value, &global()).unwrap_err()
    }

    #[test]
    fn overrides_merge_over_the_global_settings() {
        let overrides =
            Overrides::parse(&json!({"enter_transitions": 3, "leave_transitions": 1}), &global()).unwrap();
        let merged = global().merge(&overrides).unwrap();
        assert_eq!((merged.enter, merged.leave, merged.window_s(), merged.quiet_s()), (3, 1, 3600, 900));
        let off = Overrides::parse(&json!({"enabled": false}), &global()).unwrap();
        assert!(!global().merge(&off).unwrap().enabled);
        assert!(Overrides::parse(&json!({}), &global()).unwrap().is_empty());
        assert_eq!(overrides.to_json(), json!({"enter_transitions": 3, "leave_transitions": 1}));
    }

    #[test]
    fn merged_rules_blame_the_key_the_request_named() {
        assert_eq!(
            errors(json!({"leave_transitions": 6})),
            [("flap.leave_transitions".to_owned(), "must be below enter_transitions (6)".to_owned())]
        );
        assert_eq!(
            errors(json!({"enter_transitions": 2})),
            [("flap.enter_transitions".to_owned(), "must be above leave_transitions (2)".to_owned())]
        );
        assert_eq!(
            errors(json!({"quiet_s": 4000})),
            [("flap.quiet_s".to_owned(), "must not exceed window_s (3600)".to_owned())]
        );
        assert_eq!(
            errors(json!({"window_s": 600})),
            [("flap.window_s".to_owned(), "must be at least quiet_s (900)".to_owned())]
        );
    }

    #[test]
    fn bad_types_ranges_and_keys_are_named() {
        assert_eq!(errors(json!("often"))[0].0, "flap");
        let e = errors(json!({"window_s": 0, "enter_transitions": 1, "enabled": "yes", "bogus": 1}));
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"flap.window_s"), "{e:?}");
        assert!(fields.contains(&"flap.enter_transitions"), "{e:?}");
        assert!(fields.contains(&"flap.enabled"), "{e:?}");
        assert!(fields.contains(&"flap.bogus"), "{e:?}");
        assert!(errors(json!({"window_s": 604_801}))[0].1.contains("604800"));
        assert!(errors(json!({"quiet_s": -1}))[0].0 == "flap.quiet_s");
    }

    #[test]
    fn stored_overrides_that_no_longer_merge_fall_back_to_the_global_settings() {
        let g = global();
        assert_eq!(g.for_domain(None), Ok(g));
        assert_eq!(g.for_domain(Some(&json!({"enter_transitions": 4}))).unwrap().enter, 4);
        let (fallback, why) = g.for_domain(Some(&json!({"leave_transitions": 9}))).unwrap_err();
        assert_eq!(fallback, g);
        assert!(why.contains("leave_transitions"), "{why}");
        assert!(g.for_domain(Some(&json!({"nope": 1}))).is_err());
    }
}
