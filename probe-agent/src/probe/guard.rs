//! The SSRF guard: every resolved address is checked against the target policy, and the probe
//! connects only to addresses that passed, never to a name (so a second resolution cannot
//! swap in a private address). The connect phase checks each address again right before its
//! socket opens ([`check`]).

use std::io;
use std::net::IpAddr;

use shared::netguard::{BlockedRange, TargetPolicy};

/// At most this many refused addresses are named in a detail.
const NAMED_IN_DETAIL: usize = 3;

/// The addresses the policy allows (in the given order) and the refused ones with their range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Screened {
    pub allowed: Vec<IpAddr>,
    pub refused: Vec<(IpAddr, BlockedRange)>,
}

impl Screened {
    /// Why every address is refused (e.g. "127.0.0.1 is in a loopback range"), for a hop with
    /// no allowed address.
    pub fn refusal(&self) -> String {
        if self.refused.is_empty() {
            return "no address to check".to_owned();
        }
        let named: Vec<String> = self
            .refused
            .iter()
            .take(NAMED_IN_DETAIL)
            .map(|(ip, range)| format!("{ip} is in a {range} range"))
            .collect();
        let mut detail = named.join("; ");
        let more = self.refused.len().saturating_sub(NAMED_IN_DETAIL);
        if more > 0 {
            detail.push_str(&format!(" (and {more} more)"));
        }
        detail
    }
}

/// Sorts `addrs` into allowed and refused, keeping their order.
pub fn screen(policy: &TargetPolicy, addrs: &[IpAddr]) -> Screened {
    let mut screened = Screened::default();
    for &ip in addrs {
        match policy.check(ip) {
            Ok(()) => screened.allowed.push(ip),
            Err(range) => screened.refused.push((ip, range)),
        }
    }
    screened
}

/// The check made right before a socket to `ip` opens: a refused address is a
/// `PermissionDenied` error naming its range (the connect phase records it as blocked).
pub fn check(policy: &TargetPolicy, ip: IpAddr) -> io::Result<()> {
    policy.check(ip).map_err(|range| {
        io::Error::new(io::ErrorKind::PermissionDenied, format!("{ip} is in a {range} range"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn keeps_the_allowed_addresses_in_order() {
        let policy = TargetPolicy::default();
        let screened = screen(&policy, &ips(&["10.0.0.1", "8.8.8.8", "1.1.1.1"]));
        assert_eq!(screened.allowed, ips(&["8.8.8.8", "1.1.1.1"]));
        assert_eq!(screened.refused, vec![(ips(&["10.0.0.1"])[0], BlockedRange::Private)]);
    }

    #[test]
    fn names_the_ranges_when_everything_is_refused() {
        let policy = TargetPolicy::default();
        assert_eq!(screen(&policy, &ips(&["127.0.0.1"])).refusal(), "127.0.0.1 is in a loopback range");
        let screened =
            screen(&policy, &ips(&["10.0.0.1", "::1", "169.254.169.254", "192.168.0.1", "fc00::1"]));
        assert!(screened.allowed.is_empty());
        assert_eq!(
            screened.refusal(),
            "10.0.0.1 is in a private range; ::1 is in a loopback range; \
             169.254.169.254 is in a cloud_metadata range (and 2 more)"
        );
        assert_eq!(screen(&policy, &[]).refusal(), "no address to check");
    }

    #[test]
    fn the_allow_list_lets_private_targets_through() {
        let policy = TargetPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(screen(&policy, &ips(&["127.0.0.1"])).allowed, ips(&["127.0.0.1"]));
        assert!(screen(&policy, &ips(&["10.0.0.1"])).allowed.is_empty());
        assert!(check(&policy, ips(&["127.0.0.1"])[0]).is_ok());
        let error = check(&policy, ips(&["10.0.0.1"])[0]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(error.to_string(), "10.0.0.1 is in a private range");
    }
}
