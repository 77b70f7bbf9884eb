//! An agent's identity as carried in its client certificate: a URI subject alternative name
//! `crosscheck://agents/<region>/<agent-id>`. The control plane takes an agent's region from
//! this URI (never from what the agent sends), and an agent refuses to start when its configured
//! region differs from its certificate's.

use std::fmt;

/// The scheme and authority of agent identity URIs.
pub const URI_PREFIX: &str = "crosscheck://agents/";

/// A region and an agent id, both 1–63 characters of lowercase letters, digits and dashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    pub region: String,
    pub agent_id: String,
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl AgentIdentity {
    pub fn new(region: &str, agent_id: &str) -> Result<Self, String> {
        if !valid_label(region) {
            return Err(format!("region {region:?} must be 1-63 lowercase letters, digits or dashes"));
        }
        if !valid_label(agent_id) {
            return Err(format!("agent id {agent_id:?} must be 1-63 lowercase letters, digits or dashes"));
        }
        Ok(Self { region: region.to_owned(), agent_id: agent_id.to_owned() })
    }

    pub fn to_uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.region, self.agent_id)
    }

    /// Parses an identity URI; anything else (other schemes, extra segments) is refused.
    pub fn from_uri(uri: &str) -> Result<Self, String> {
        let rest = uri.strip_prefix(URI_PREFIX).ok_or_else(|| format!("{uri:?} is not an agent identity"))?;
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(region), Some(agent_id), None) => Self::new(region, agent_id),
            _ => Err(format!("{uri:?} is not an agent identity")),
        }
    }
}

impl fmt::Display for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.agent_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = AgentIdentity::new("ams", "ams-1").unwrap();
        assert_eq!(id.to_uri(), "crosscheck://agents/ams/ams-1");
        assert_eq!(AgentIdentity::from_uri(&id.to_uri()).unwrap(), id);
    }

    #[test]
    fn refuses_other_uris() {
        for bad in [
            "https://agents/ams/ams-1",
            "crosscheck://agents/ams",
            "crosscheck://agents/ams/a/b",
            "crosscheck://agents/AMS/a",
            "crosscheck://agents//a",
            "crosscheck://agents/ams/-a",
        ] {
            assert!(AgentIdentity::from_uri(bad).is_err(), "{bad}");
        }
    }
}
