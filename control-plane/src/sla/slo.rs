//! A domain's service level objective (`slo` of the domain API), parsed with every problem
//! named by field (`slo.target`, …), as the rest of a domain request is.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The fields an `slo` object may have.
const KNOWN: [&str; 3] = ["target", "period", "budget_alert_fraction"];

/// The budget fraction left at which `sla_budget_low` is sent when none is given.
pub const DEFAULT_BUDGET_ALERT_FRACTION: f64 = 0.25;

/// The period an SLO is measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SloPeriod {
    /// A calendar month in the tenant's time zone.
    Month,
}

impl SloPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            SloPeriod::Month => "month",
        }
    }
}

/// `{"target": 99.9, "period": "month", "budget_alert_fraction": 0.25}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Slo {
    /// The uptime objective in percent, `0 < target < 100` (e.g. `99.9`).
    pub target: f64,
    pub period: SloPeriod,
    /// `sla_budget_low` is sent once per period when the error budget left falls to this
    /// fraction of the period's whole budget, `0 < fraction < 1`.
    pub budget_alert_fraction: f64,
}

// Every float in a parsed `Slo` is finite (checked by `parse`), so equality is an equivalence.
impl Eq for Slo {}

impl Slo {
    /// Parses an `slo` object; a problem is reported by field name (`slo`, `slo.target`, …).
    pub fn parse(value: &Value) -> Result<Slo, Vec<(String, String)>> {
        let Value::Object(map) = value else {
            return Err(vec![(
                "slo".into(),
                format!("must be an object with {} (or null)", KNOWN.join(", ")),
            )]);
        };
        let mut errors: Vec<(String, String)> = map
            .keys()
            .filter(|k| !KNOWN.contains(&k.as_str()))
            .map(|k| (format!("slo.{k}"), "unknown field".to_owned()))
            .collect();
        let get = |map: &Map<String, Value>, key: &str| map.get(key).filter(|v| !v.is_null()).cloned();
        let target = match get(map, "target").map(|v| v.as_f64()) {
            None => {
                errors.push(("slo.target".into(), "is required: a percentage, e.g. 99.9".into()));
                None
            }
            Some(Some(t)) if t > 0.0 && t < 100.0 => Some(t),
            Some(_) => {
                errors.push(("slo.target".into(), "must be a number above 0 and below 100 (percent)".into()));
                None
            }
        };
        let period = match get(map, "period") {
            None => Some(SloPeriod::Month),
            Some(Value::String(s)) if s == "month" => Some(SloPeriod::Month),
            Some(_) => {
                errors.push((
                    "slo.period".into(),
                    "must be \"month\" (a calendar month in the tenant's time zone)".into(),
                ));
                None
            }
        };
        let fraction = match get(map, "budget_alert_fraction").map(|v| v.as_f64()) {
            None => Some(DEFAULT_BUDGET_ALERT_FRACTION),
            Some(Some(f)) if f > 0.0 && f < 1.0 => Some(f),
            Some(_) => {
                errors.push((
                    "slo.budget_alert_fraction".into(),
                    "must be a number above 0 and below 1".into(),
                ));
                None
            }
        };
        match (target, period, fraction) {
            (Some(target), Some(period), Some(budget_alert_fraction)) if errors.is_empty() => {
                Ok(Slo { target, period, budget_alert_fraction })
            }
            _ => Err(errors),
        }
    }

    /// The request and display form; parsing it again gives the same `Slo`.
    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "period": self.period.as_str(),
            "budget_alert_fraction": self.budget_alert_fraction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_slo_is_parsed_with_its_defaults_and_every_problem_named() {
        let slo = Slo::parse(&json!({"target": 99.9})).unwrap();
        assert_eq!(slo, Slo { target: 99.9, period: SloPeriod::Month, budget_alert_fraction: 0.25 });
        assert_eq!(Slo::parse(&slo.to_json()).unwrap(), slo);
        let full = json!({"target": 99.5, "period": "month", "budget_alert_fraction": 0.1});
        assert_eq!(Slo::parse(&full).unwrap().budget_alert_fraction, 0.1);

        let table: [(Value, &[&str]); 9] = [
            (json!(99.9), &["slo"]),
            (json!({}), &["slo.target"]),
            (json!({"target": 100}), &["slo.target"]),
            (json!({"target": 0}), &["slo.target"]),
            (json!({"target": "99.9"}), &["slo.target"]),
            (json!({"target": 99.9, "period": "week"}), &["slo.period"]),
            (json!({"target": 99.9, "budget_alert_fraction": 1}), &["slo.budget_alert_fraction"]),
            (json!({"target": 99.9, "budget_alert_fraction": 0}), &["slo.budget_alert_fraction"]),
            (json!({"target": -1, "window": 3, "period": 1}), &["slo.period", "slo.target", "slo.window"]),
        ];
        for (input, fields) in table {
            let mut named: Vec<String> =
                Slo::parse(&input).unwrap_err().into_iter().map(|(f, _)| f).collect();
            named.sort();
            assert_eq!(named, fields, "{input}");
        }
    }
}
