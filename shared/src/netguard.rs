//! Classification of IP addresses that must never be probed from the public internet's point of
//! view: private, loopback, link-local, CGNAT, unique-local, multicast, unspecified, broadcast,
//! documentation, benchmarking and reserved ranges, and the cloud metadata addresses — IPv4 and
//! IPv6 alike, including IPv4 addresses embedded in IPv6 (IPv4-mapped, IPv4-compatible, NAT64
//! and 6to4).
//!
//! The control plane uses it to refuse literal private hosts at the API; the agent's SSRF guard
//! uses it on every resolved address before connecting. An allow-list of networks (off by
//! default) lets tests and self-hosted deployments reach private targets on purpose.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockedRange {
    Unspecified,
    Loopback,
    Private,
    Cgnat,
    LinkLocal,
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    CloudMetadata,
    /// Reserved or special-purpose ranges (IETF protocol assignments, 240/4, discard-only, …).
    Reserved,
}

impl BlockedRange {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedRange::Unspecified => "unspecified",
            BlockedRange::Loopback => "loopback",
            BlockedRange::Private => "private",
            BlockedRange::Cgnat => "cgnat",
            BlockedRange::LinkLocal => "link_local",
            BlockedRange::UniqueLocal => "unique_local",
            BlockedRange::Multicast => "multicast",
            BlockedRange::Broadcast => "broadcast",
            BlockedRange::Documentation => "documentation",
            BlockedRange::Benchmarking => "benchmarking",
            BlockedRange::CloudMetadata => "cloud_metadata",
            BlockedRange::Reserved => "reserved",
        }
    }
}

impl fmt::Display for BlockedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cloud metadata endpoints that sit outside the ranges above (Azure's wire server is a public
/// address); the others (169.254.169.254, 100.100.100.200, fd00:ec2::254, 192.0.0.192) are
/// also reported as metadata rather than by their enclosing range.
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(192, 0, 0, 192),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// Returns why `ip` must not be probed, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<BlockedRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockedRange> {
    use BlockedRange::*;
    if METADATA_V4.contains(&ip) {
        return Some(CloudMetadata);
    }
    let table: &[([u8; 4], u32, BlockedRange)] = &[
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, Cgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    table.iter().find(|(net, prefix, _)| in_v4(ip, *net, *prefix)).map(|(_, _, why)| *why)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockedRange> {
    use BlockedRange::*;
    if METADATA_V6.contains(&ip) {
        return Some(CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    let bits = u128::from(ip);
    // Forms that embed an IPv4 address: judge the embedded address.
    // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated), ::a.b.c.d (compatible,
    // deprecated), 64:ff9b::a.b.c.d (NAT64).
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0, 0, 0, 0, 0xffff, 0, 0, 0], 96)
        || in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        let v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
        return classify_v4(v4);
    }
    // 2002:AABB:CCDD::/48 (6to4) embeds a.b.c.d in bits 16..48.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        let v4 = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
        return classify_v4(v4);
    }
    let table: &[([u16; 8], u32, BlockedRange)] = &[
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Private), // local-use NAT64
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Reserved),    // discard-only
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, Benchmarking),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Reserved), // IETF assignments incl. Teredo
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Private), // deprecated site-local
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
    ];
    table.iter().find(|(net, prefix, _)| in_v6(ip, *net, *prefix)).map(|(_, _, why)| *why)
}

/// The guard's decision procedure: blocked ranges, minus an explicit allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPolicy {
    /// Networks that may be probed even though they are in a blocked range. Empty by default.
    pub allow: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn allowing(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// `Ok(())` when `ip` may be connected to, or the range that forbids it. Cloud metadata
    /// addresses are refused even when an allow-list entry covers them.
    pub fn check(&self, ip: IpAddr) -> Result<(), BlockedRange> {
        match classify(ip) {
            None => Ok(()),
            Some(BlockedRange::CloudMetadata) => Err(BlockedRange::CloudMetadata),
            Some(_) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(range) => Err(range),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_ranges_table() {
        use BlockedRange::*;
        let cases: &[(&str, Option<BlockedRange>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.254", Some(Cgnat)),
            ("100.128.0.1", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("168.63.129.16", Some(CloudMetadata)),
            ("192.0.0.192", Some(CloudMetadata)),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.10", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.200", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.1", Some(Benchmarking)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:8.8.8.8", None),
            ("::ffff:0:127.0.0.1", Some(Loopback)),
            ("::ffff:0:10.1.1.1", Some(Private)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("64:ff9b::192.168.0.1", Some(Private)),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::1", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:0a00:0001::1", Some(Private)),
            ("2002:a9fe:a9fe::1", Some(CloudMetadata)),
            ("2002:0808:0808::1", None),
            ("100::1", Some(Reserved)),
            ("2001::1", Some(Reserved)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("fe80::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::1", None),
        ];
        for (text, want) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), *want, "{text}");
        }
    }

    #[test]
    fn allow_list_permits_only_its_networks() {
        let policy = TargetPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(policy.check("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(policy.check("10.0.0.1".parse().unwrap()), Err(BlockedRange::Private));
        assert_eq!(policy.check("8.8.8.8".parse().unwrap()), Ok(()));
        assert_eq!(TargetPolicy::default().check("::1".parse().unwrap()), Err(BlockedRange::Loopback));
        let link_local = TargetPolicy::allowing(vec!["169.254.0.0/16".parse().unwrap()]);
        assert_eq!(link_local.check("169.254.1.1".parse().unwrap()), Ok(()));
        assert_eq!(link_local.check("169.254.169.254".parse().unwrap()), Err(BlockedRange::CloudMetadata));
    }
}
