//! The one host rule for everything the system reaches out to: a monitored URL, a `tcp`/`tls`
//! check's host, and every notification endpoint (webhook, Slack, Teams, Discord, PagerDuty,
//! Telegram, ntfy), checked when a request is parsed and again before a delivery.
//!
//! A host is an IP address literal or a fully qualified DNS name: at most 253 characters, at
//! least two labels of 1 to 63 letters, digits, `-` or `_` (written lowercase, without the
//! trailing dot). A single label (`intranet`, `db`) is refused: it means nothing on its own,
//! and a resolver's search list would complete it into a name nobody wrote (agents have no
//! search list; the control plane's system resolver may). `localhost` and `*.localhost` name
//! the loopback address (RFC 6761) and are judged as 127.0.0.1 by the private-target policy.
//! Which addresses may be reached is the caller's policy ([`shared::netguard`]); this module
//! says only what a host names.

use std::net::IpAddr;

use url::Url;

/// The longest DNS name, in characters, without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// The longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// A host that passed the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedHost {
    /// The host as it should be written: the address, or the lowercase name without the
    /// trailing dot.
    pub text: String,
    /// The address the host names literally: an IP literal, or 127.0.0.1 for `localhost` and
    /// `*.localhost`. `None` for other names, which are screened when resolved.
    pub address: Option<IpAddr>,
}

/// The host of `url` under the rule. Errors: no host, or a name that is not fully qualified.
pub fn of_url(url: &Url) -> Result<CheckedHost, String> {
    match url.host() {
        None => Err("must have a host".into()),
        Some(url::Host::Ipv4(ip)) => Ok(address(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => Ok(address(IpAddr::V6(ip))),
        Some(url::Host::Domain(name)) => name_rule(name),
    }
}

/// A host given as text: an address literal (IPv6 with or without brackets) or a name.
pub fn parse(raw: &str) -> Result<CheckedHost, String> {
    let raw = raw.trim();
    let unbracketed = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(raw);
    match unbracketed.parse::<IpAddr>() {
        Ok(ip) => Ok(address(ip)),
        Err(_) => name_rule(raw),
    }
}

fn address(ip: IpAddr) -> CheckedHost {
    CheckedHost { text: ip.to_string(), address: Some(ip) }
}

fn name_rule(raw: &str) -> Result<CheckedHost, String> {
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= MAX_LABEL_LEN
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.split('.').all(valid_label) {
        return Err(format!(
            "host must be an IP address or a DNS name of at most {MAX_NAME_LEN} characters, labels of letters, digits, '-' or '_'"
        ));
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Ok(CheckedHost { text: name, address: Some(IpAddr::from([127, 0, 0, 1])) });
    }
    if !name.contains('.') {
        return Err(
            "host must be a fully qualified domain name or an IP address (a single label is not)".into()
        );
    }
    Ok(CheckedHost { text: name, address: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_host(raw: &str) -> Result<CheckedHost, String> {
        of_url(&Url::parse(raw).unwrap())
    }

    #[test]
    fn names_must_be_fully_qualified() {
        for single in ["http://intranet/", "https://hooks:8443/x", "http://Jenkins./", "https://_svc/"] {
            let err = url_host(single).unwrap_err();
            assert!(err.contains("single label"), "{single}: {err}");
        }
        assert_eq!(parse("db").unwrap_err(), url_host("http://db/").unwrap_err());
        let ok = url_host("https://Hooks.Example.COM./x").unwrap();
        assert_eq!(ok, CheckedHost { text: "hooks.example.com".into(), address: None });
        assert_eq!(parse("db.example.com.").unwrap().text, "db.example.com");
    }

    #[test]
    fn labels_are_dns_labels() {
        for bad in ["a b.example", "a..example", "-", "x.", ".", "", "a*b.example"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(url_host("http://a*b.example/").unwrap_err().contains("labels"));
        let long = format!("{}.example", "a".repeat(64));
        assert!(parse(&long).is_err(), "a 64-character label");
        let label = "a".repeat(60);
        let too_long = format!("{}.example", [label.as_str(); 5].join("."));
        assert!(parse(&too_long).is_err(), "a name over 253 characters");
        assert!(parse("_dmarc.example.com").is_ok());
    }

    #[test]
    fn addresses_and_loopback_names_are_addresses() {
        assert_eq!(url_host("http://192.0.2.1:8080/").unwrap().address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(url_host("http://[2001:db8::1]/").unwrap().address, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse("[2001:db8::1]").unwrap().text, "2001:db8::1");
        for loopback in ["http://localhost:9/", "http://api.LOCALHOST/"] {
            assert_eq!(url_host(loopback).unwrap().address, Some(IpAddr::from([127, 0, 0, 1])), "{loopback}");
        }
    }
}
