//! The degraded settings: the global ones (`degraded_*` in the configuration), a domain's
//! `degraded` overrides (stored in `domains.degraded`) and their merge, with the rules every
//! merged result must satisfy.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The keys of a domain's `degraded` object.
const KNOWN: [&str; 5] = ["latency_ms", "anomaly", "window", "z", "consecutive"];

/// Bounds of the window (N), in successful probes.
pub const WINDOW: (u32, u32) = (5, 1000);
/// Bounds of the z threshold.
pub const Z: (f64, f64) = (1.0, 20.0);
/// Bounds of the anomalous probes in a row (K).
pub const CONSECUTIVE: (u32, u32) = (1, 100);
/// Bounds of the absolute latency threshold, in milliseconds.
pub const LATENCY_MS: (u32, u32) = (1, 600_000);
/// Bounds of the samples needed before anomalies are judged.
pub const MIN_SAMPLES: (u32, u32) = (3, 1000);

/// The degraded settings in force for one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Anomaly detection against the moving baseline on or off.
    pub anomaly: bool,
    /// A probe slower than this many milliseconds is anomalous whatever the baseline says.
    pub latency_ms: Option<u32>,
    /// Successful probes the baseline holds (N).
    pub window: u32,
    /// Robust z-score above which a probe is anomalous.
    pub z: f64,
    /// Anomalous probes in a row that make a region degraded (K).
    pub consecutive: u32,
    /// Samples needed before the baseline judges (capped at `window`).
    pub min_samples: u32,
}

impl Settings {
    /// The global settings (`degraded_*`; checked by the configuration's validation).
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            anomaly: config.degraded_anomaly,
            latency_ms: None,
            window: config.degraded_window,
            z: config.degraded_z,
            consecutive: config.degraded_consecutive,
            min_samples: config.degraded_min_samples,
        }
    }

    /// Whether the detector can flag anything at all (anomaly detection or a threshold).
    pub fn active(&self) -> bool {
        self.anomaly || self.latency_ms.is_some()
    }

    /// The rules, as `(key, why)` with the key's name without prefix.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let range = |(min, max): (u32, u32)| format!("must be an integer from {min} to {max}");
        if !(WINDOW.0..=WINDOW.1).contains(&self.window) {
            return Err(("window", range(WINDOW)));
        }
        if !(self.z.is_finite() && (Z.0..=Z.1).contains(&self.z)) {
            return Err(("z", format!("must be a number from {} to {}", Z.0, Z.1)));
        }
        if !(CONSECUTIVE.0..=CONSECUTIVE.1).contains(&self.consecutive) {
            return Err(("consecutive", range(CONSECUTIVE)));
        }
        if self.consecutive > self.window {
            return Err(("consecutive", format!("must not exceed window ({})", self.window)));
        }
        if self.latency_ms.is_some_and(|ms| !(LATENCY_MS.0..=LATENCY_MS.1).contains(&ms)) {
            return Err(("latency_ms", range(LATENCY_MS)));
        }
        if !(MIN_SAMPLES.0..=MIN_SAMPLES.1).contains(&self.min_samples) {
            return Err(("min_samples", range(MIN_SAMPLES)));
        }
        Ok(())
    }

    /// `overrides` merged over these settings, checked: the problem named `degraded.<key>`.
    pub fn merge(&self, overrides: &Overrides) -> Result<Settings, Vec<(String, String)>> {
        let merged = Settings {
            anomaly: overrides.anomaly.unwrap_or(self.anomaly),
            latency_ms: overrides.latency_ms.or(self.latency_ms),
            window: overrides.window.unwrap_or(self.window),
            z: overrides.z.map_or(self.z, |z| z.0),
            consecutive: overrides.consecutive.unwrap_or(self.consecutive),
            min_samples: self.min_samples,
        };
        merged.check().map_err(|(key, why)| vec![(format!("degraded.{key}"), why)])?;
        Ok(merged)
    }

    /// The settings of a domain whose stored overrides are `stored` (`domains.degraded`).
    /// Overrides that no longer merge (the global settings changed) give the global settings
    /// and why.
    pub fn for_domain(&self, stored: Option<&Value>) -> Result<Settings, (Settings, String)> {
        let Some(value) = stored.filter(|v| !v.is_null()) else { return Ok(self.clone()) };
        let overrides: Overrides = serde_json::from_value(value.clone())
            .map_err(|_| (self.clone(), "unreadable overrides".into()))?;
        self.merge(&overrides).map_err(|problems| {
            let why = problems.into_iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("; ");
            (self.clone(), why)
        })
    }
}

/// A z threshold: a finite number (validated), so it can be compared for equality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Threshold(pub f64);

// Never NaN: parsing refuses anything but a finite number in range.
impl Eq for Threshold {}

/// A domain's `degraded` overrides: each key present replaces the global setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DegradedOverrides)]
pub struct Overrides {
    /// A fixed threshold, milliseconds: a probe slower than this is anomalous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    /// Whether the baseline detector (median and z score) runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<bool>,
    /// Normal latencies the baseline keeps, in probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// How many robust standard deviations above the median is anomalous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub z: Option<Threshold>,
    /// Anomalous probes in a row that make a region degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("degraded overrides serialize")
    }

    /// Parses the request's `degraded` object and checks its merge over `global`. Problems
    /// are named `degraded` or `degraded.<key>`.
    pub fn parse(value: &Value, global: &Settings) -> Result<Overrides, Vec<(String, String)>> {
        let Value::Object(map) = value else {
            return Err(vec![(
                "degraded".into(),
                format!("must be an object with any of {} (or null)", KNOWN.join(", ")),
            )]);
        };
        let mut errors = Vec::new();
        for key in map.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            errors.push((format!("degraded.{key}"), "unknown field".into()));
        }
        let get = |map: &Map<String, Value>, key: &str| map.get(key).filter(|v| !v.is_null()).cloned();
        let mut overrides = Overrides::default();
        match get(map, "anomaly") {
            None => {}
            Some(Value::Bool(b)) => overrides.anomaly = Some(b),
            Some(_) => errors.push(("degraded.anomaly".into(), "must be true or false".into())),
        }
        let mut integer = |key: &str, (min, max): (u32, u32)| -> Option<u32> {
            let value = get(map, key)?;
            match value.as_u64().filter(|n| (u64::from(min)..=u64::from(max)).contains(n)) {
                Some(n) => Some(n as u32),
                None => {
                    errors
                        .push((format!("degraded.{key}"), format!("must be an integer from {min} to {max}")));
                    None
                }
            }
        };
        overrides.latency_ms = integer("latency_ms", LATENCY_MS);
        overrides.window = integer("window", WINDOW);
        overrides.consecutive = integer("consecutive", CONSECUTIVE);
        if let Some(value) = get(map, "z") {
            match value.as_f64().filter(|z| z.is_finite() && (Z.0..=Z.1).contains(z)) {
                Some(z) => overrides.z = Some(Threshold(z)),
                None => {
                    errors.push(("degraded.z".into(), format!("must be a number from {} to {}", Z.0, Z.1)))
                }
            }
        }
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
        Settings::from_config(&crate::Config::default())
    }

    fn errors(value: Value) -> Vec<(String, String)> {
        Overrides::parse(&value, &global()).unwrap_err()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let g = global();
        assert_eq!((g.anomaly, g.latency_ms, g.window, g.z, g.consecutive), (true, None, 50, 3.0, 3));
        assert_eq!(g.check(), Ok(()));
    }

    #[test]
    fn overrides_merge_and_round_trip() {
        let o = Overrides::parse(&json!({"latency_ms": 800, "z": 4.5, "consecutive": 5}), &global()).unwrap();
        let merged = global().merge(&o).unwrap();
        assert_eq!((merged.latency_ms, merged.z, merged.consecutive, merged.window), (Some(800), 4.5, 5, 50));
        assert_eq!(o.to_json(), json!({"latency_ms": 800, "z": 4.5, "consecutive": 5}));
        assert_eq!(global().for_domain(Some(&o.to_json())), Ok(merged));
        assert!(Overrides::parse(&json!({}), &global()).unwrap().is_empty());
        let off = Overrides::parse(&json!({"anomaly": false}), &global()).unwrap();
        assert!(!global().merge(&off).unwrap().active());
    }

    #[test]
    fn bad_values_are_named_by_field() {
        let cases: [(Value, &str, &str); 9] = [
            (json!("slow"), "degraded", "must be an object"),
            (json!({"speed": 1}), "degraded.speed", "unknown field"),
            (json!({"anomaly": "yes"}), "degraded.anomaly", "true or false"),
            (json!({"window": 2}), "degraded.window", "from 5 to 1000"),
            (json!({"z": "3"}), "degraded.z", "from 1 to 20"),
            (json!({"z": 0.5}), "degraded.z", "from 1 to 20"),
            (json!({"consecutive": 0}), "degraded.consecutive", "from 1 to 100"),
            (json!({"window": 5, "consecutive": 6}), "degraded.consecutive", "must not exceed window (5)"),
            (json!({"latency_ms": -3}), "degraded.latency_ms", "from 1 to 600000"),
        ];
        for (value, field, message) in cases {
            let e = errors(value.clone());
            assert_eq!(e.len(), 1, "{value}: {e:?}");
            assert_eq!(e[0].0, field, "{value}");
            assert!(e[0].1.contains(message), "{value}: {}", e[0].1);
        }
    }

    #[test]
    fn stored_overrides_that_no_longer_merge_fall_back() {
        let stored = json!({"consecutive": 40});
        let narrow = Settings { window: 20, ..global() };
        let (fallback, why) = narrow.for_domain(Some(&stored)).unwrap_err();
        assert_eq!(fallback, narrow);
        assert!(why.contains("degraded.consecutive"), "{why}");
    }
}
