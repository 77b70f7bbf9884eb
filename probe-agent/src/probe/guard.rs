//! The SSRF guard: every resolved address is checked against the target policy, and the probe
//! connects only to an address that passed, never to a name (so a second resolution cannot
//! swap in a private address).

use std::net::IpAddr;

use shared::netguard::TargetPolicy;

/// At most this many refused addresses are named in a detail.
const NAMED_IN_DETAIL: usize = 3;

/// Picks the first address (in the given order) the policy allows, or explains why every one
/// of them is refused (e.g. "127.0.0.1 is in a loopback range").
pub fn pick(policy: &TargetPolicy, addrs: &[IpAddr]) -> Result<IpAddr, String> {
    let mut refused = Vec::new();
    for &ip in addrs {
        match policy.check(ip) {
            Ok(()) => return Ok(ip),
            Err(range) => refused.push(format!("{ip} is in a {range} range")),
        }
    }
    if refused.is_empty() {
        return Err("no address to check".to_owned());
    }
    let more = refused.len().saturating_sub(NAMED_IN_DETAIL);
    refused.truncate(NAMED_IN_DETAIL);
    let mut detail = refused.join("; ");
    if more > 0 {
        detail.push_str(&format!(" (and {more} more)"));
    }
    Err(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn picks_the_first_allowed_address() {
        let policy = TargetPolicy::default();
        assert_eq!(pick(&policy, &ips(&["10.0.0.1", "8.8.8.8", "1.1.1.1"])), Ok(ips(&["8.8.8.8"])[0]));
    }

    #[test]
    fn names_the_ranges_when_everything_is_refused() {
        let policy = TargetPolicy::default();
        assert_eq!(pick(&policy, &ips(&["127.0.0.1"])), Err("127.0.0.1 is in a loopback range".into()));
        let detail = pick(&policy, &ips(&["10.0.0.1", "::1", "169.254.169.254", "192.168.0.1", "fc00::1"]))
            .unwrap_err();
        assert_eq!(
            detail,
            "10.0.0.1 is in a private range; ::1 is in a loopback range; \
             169.254.169.254 is in a cloud_metadata range (and 2 more)"
        );
    }

    #[test]
    fn the_allow_list_lets_private_targets_through() {
        let policy = TargetPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(pick(&policy, &ips(&["127.0.0.1"])), Ok(ips(&["127.0.0.1"])[0]));
        assert!(pick(&policy, &ips(&["10.0.0.1"])).is_err());
        assert!(pick(&policy, &[]).is_err());
    }
}
