//! A domain's `dns_drift` settings (the JSON object in `domains.dns_drift`): whether a confirmed
//! change is notified, how many probes in a row confirm it, and what counts as rotation.
//!
//! ```json
//! {"notify": true, "stable_probes": 3, "allowed_networks": ["203.0.113.0/24"], "same_network": true}
//! ```

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

/// Default `stable_probes`: a new answer set must be seen this many probes in a row.
pub const DEFAULT_STABLE_PROBES: u32 = 3;
/// Largest `stable_probes`.
pub const MAX_STABLE_PROBES: u32 = 100;
/// Most `allowed_networks`.
pub const MAX_NETWORKS: usize = 50;
/// The prefix lengths of "the same network" for `same_network`: an IPv4 /24, an IPv6 /48.
pub const SAME_NETWORK_V4: u8 = 24;
pub const SAME_NETWORK_V6: u8 = 48;

const KNOWN: [&str; 4] = ["notify", "stable_probes", "allowed_networks", "same_network"];

/// The drift settings of one domain; [`Settings::default`] when it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Send a `dns_changed` notification for a confirmed change outside the rotation rules
    /// (opt-in: CDNs rotate addresses). The change is recorded either way.
    pub notify: bool,
    /// Probes in a row that must answer the same new set before it replaces the known one.
    pub stable_probes: u32,
    /// Addresses appearing inside these networks are rotation: the known set is updated quietly.
    pub allowed_networks: Vec<IpNet>,
    /// An address appearing in the same /24 (IPv4) or /48 (IPv6) as an address of the known
    /// set is rotation too.
    pub same_network: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            notify: false,
            stable_probes: DEFAULT_STABLE_PROBES,
            allowed_networks: Vec::new(),
            same_network: false,
        }
    }
}

impl Settings {
    /// Parses the request's `dns_drift` object; problems by field (`dns_drift.<key>`). Absent
    /// keys take their defaults.
    pub fn parse(value: &Value) -> Result<Settings, Vec<(String, String)>> {
        let Value::Object(map) = value else {
            return Err(vec![(
                "dns_drift".into(),
                format!("must be an object with any of {} (or null)", KNOWN.join(", ")),
            )]);
        };
        let mut errors = Vec::new();
        for key in map.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            errors.push((format!("dns_drift.{key}"), "unknown field".into()));
        }
        let get = |key: &str| map.get(key).filter(|v| !v.is_null());
        let mut settings = Settings::default();
        let flag = |key: &str, errors: &mut Vec<(String, String)>| match get(key) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.push((format!("dns_drift.{key}"), "must be true or false".into()));
                None
            }
        };
        settings.notify = flag("notify", &mut errors).unwrap_or(false);
        settings.same_network = flag("same_network", &mut errors).unwrap_or(false);
        if let Some(v) = get("stable_probes") {
            match v.as_u64().filter(|n| (1..=u64::from(MAX_STABLE_PROBES)).contains(n)) {
                Some(n) => settings.stable_probes = n as u32,
                None => errors.push((
                    "dns_drift.stable_probes".into(),
                    format!("must be an integer from 1 to {MAX_STABLE_PROBES}"),
                )),
            }
        }
        if let Some(v) = get("allowed_networks") {
            match parse_networks(v) {
                Ok(networks) => settings.allowed_networks = networks,
                Err(message) => errors.push(("dns_drift.allowed_networks".into(), message)),
            }
        }
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }

    /// The stored and shown form (every key, defaults included).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("notify".into(), Value::from(self.notify));
        map.insert("stable_probes".into(), Value::from(self.stable_probes));
        map.insert(
            "allowed_networks".into(),
            Value::from(self.allowed_networks.iter().map(ToString::to_string).collect::<Vec<_>>()),
        );
        map.insert("same_network".into(), Value::from(self.same_network));
        Value::Object(map)
    }

    /// The settings stored in `domains.dns_drift` (NULL: the defaults). A stored value that no
    /// longer parses falls back to the defaults.
    pub fn from_stored(value: Option<&Value>) -> Settings {
        value.and_then(|v| Settings::parse(v).ok()).unwrap_or_default()
    }

    /// Whether addresses `added` to a `previous` set are rotation under these settings: each
    /// inside an allowed network or, with `same_network`, in the same /24 or /48 as an address of
    /// `previous`. With no rotation rule nothing is rotation; a change that only removes
    /// addresses is rotation when a rule is set.
    pub fn is_rotation(&self, previous: &[String], added: &[String]) -> bool {
        if self.allowed_networks.is_empty() && !self.same_network {
            return false;
        }
        let before: Vec<IpAddr> = previous.iter().filter_map(|a| a.parse().ok()).collect();
        added.iter().all(|raw| {
            let Ok(ip) = raw.parse::<IpAddr>() else { return false };
            self.allowed_networks.iter().any(|n| n.contains(&ip))
                || (self.same_network && before.iter().any(|b| same_network(*b, ip)))
        })
    }
}

fn same_network(a: IpAddr, b: IpAddr) -> bool {
    let prefix = match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) => SAME_NETWORK_V4,
        (IpAddr::V6(_), IpAddr::V6(_)) => SAME_NETWORK_V6,
        _ => return false,
    };
    IpNet::new(a, prefix).map(|n| n.trunc().contains(&b)).unwrap_or(false)
}

fn parse_networks(value: &Value) -> Result<Vec<IpNet>, String> {
    let help =
        format!("must be a list of up to {MAX_NETWORKS} networks in CIDR notation (\"203.0.113.0/24\")");
    let Value::Array(items) = value else { return Err(help) };
    if items.len() > MAX_NETWORKS {
        return Err(help);
    }
    let mut out: Vec<IpNet> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(raw) = item else { return Err(help) };
        let net: IpNet =
            raw.trim().parse().map_err(|_| format!("{raw:?} is not a network in CIDR notation"))?;
        let net = net.trunc();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parse_names_every_bad_key_and_round_trips() {
        let settings = Settings::parse(&json!({"notify": true, "stable_probes": 5,
            "allowed_networks": ["203.0.113.7/24", "2001:db8::/32"], "same_network": true}))
        .unwrap();
        assert_eq!(settings.allowed_networks[0].to_string(), "203.0.113.0/24", "truncated to the network");
        assert_eq!(Settings::parse(&settings.to_json()).unwrap(), settings);
        assert_eq!(Settings::parse(&json!({})).unwrap(), Settings::default());
        let cases: &[(Value, &str)] = &[
            (json!(5), "dns_drift"),
            (json!({"notify": "yes"}), "dns_drift.notify"),
            (json!({"stable_probes": 0}), "dns_drift.stable_probes"),
            (json!({"stable_probes": 101}), "dns_drift.stable_probes"),
            (json!({"allowed_networks": ["10.0.0.0/33"]}), "dns_drift.allowed_networks"),
            (json!({"allowed_networks": "10.0.0.0/8"}), "dns_drift.allowed_networks"),
            (json!({"same_network": 24}), "dns_drift.same_network"),
            (json!({"extra": 1}), "dns_drift.extra"),
        ];
        for (input, field) in cases {
            let errors = Settings::parse(input).unwrap_err();
            assert!(errors.iter().any(|(f, _)| f == field), "{input}: {errors:?}");
        }
    }

    #[test]
    fn rotation_rules() {
        let s = |v: Value| Settings::parse(&v).unwrap();
        let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let previous = strings(&["192.0.2.10", "2001:db8:1:2::1"]);
        let cases: &[(Settings, &[&str], bool)] = &[
            (Settings::default(), &["192.0.2.11"], false),
            (Settings::default(), &[], false),
            (s(json!({"same_network": true})), &["192.0.2.200"], true),
            (s(json!({"same_network": true})), &["192.0.3.1"], false),
            (s(json!({"same_network": true})), &["2001:db8:1:ffff::9"], true),
            (s(json!({"same_network": true})), &["2001:db8:2::1"], false),
            (s(json!({"same_network": true})), &[], true),
            (s(json!({"allowed_networks": ["198.51.100.0/24"]})), &["198.51.100.4"], true),
            (s(json!({"allowed_networks": ["198.51.100.0/24"]})), &["198.51.100.4", "203.0.113.1"], false),
            (
                s(json!({"allowed_networks": ["198.51.100.0/24"], "same_network": true})),
                &["198.51.100.4", "192.0.2.99"],
                true,
            ),
        ];
        for (settings, added, want) in cases {
            assert_eq!(settings.is_rotation(&previous, &strings(added)), *want, "{settings:?} {added:?}");
        }
    }
}
