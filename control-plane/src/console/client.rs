//! Who is asking, as far as the console believes it: the client's address (the key of the
//! sign-in rate limit) and whether it came over HTTPS (the cookies' `Secure`).
//!
//! The control plane serves plain HTTP; TLS ends at a reverse proxy. `X-Forwarded-For` and
//! `X-Forwarded-Proto` are believed only from a peer in `trusted_proxies`; from anyone else they
//! are ignored, so a client cannot pick its own rate-limit key. Pure functions of the peer, the
//! headers and the settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::CookieSecure;

fn trusted(addr: IpAddr, proxies: &[IpNet]) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&addr))
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
/// address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the
/// address it saw, so everything left of the first untrusted hop could be forged).
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter().rev().find(|hop| !trusted(*hop, proxies)).unwrap_or(peer)
}

/// Whether cookies get `Secure`: always, never, or (`auto`) when a trusted proxy says the
/// request came over HTTPS (the first value of `X-Forwarded-Proto`: the proxy facing the
/// client).
pub fn secure(setting: CookieSecure, peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> bool {
    match setting {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::Auto => {
            trusted(peer, proxies)
                && headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                    .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
        }
    }
}

/// The socket peer of a request (unspecified when served without connection info, as in
/// tests calling the router directly).
pub fn peer(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for the console: `HttpOnly`, `SameSite=Strict`, path `/console`,
/// `Secure` when asked; `max_age_s` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7"), ("x-forwarded-proto", "https")]);
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_addr(stranger, &h, &proxies), stranger, "headers of an untrusted peer are ignored");
        assert!(!secure(CookieSecure::Auto, stranger, &h, &proxies));
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(client_addr(proxy, &h, &proxies), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert!(secure(CookieSecure::Auto, proxy, &h, &proxies));
        assert!(!secure(CookieSecure::Never, proxy, &h, &proxies));
        assert!(secure(CookieSecure::Always, stranger, &h, &proxies));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        // A forged left-most entry, the real client, then a second trusted proxy.
        let h = headers(&[("x-forwarded-for", "9.9.9.9, 203.0.113.7"), ("x-forwarded-for", "10.4.4.4")]);
        assert_eq!(client_addr(proxy, &h, &proxies), "203.0.113.7".parse::<IpAddr>().unwrap());
        // Nothing usable: the proxy itself.
        assert_eq!(client_addr(proxy, &headers(&[("x-forwarded-for", "junk")]), &proxies), proxy);
        // An IPv4-mapped IPv6 peer matches an IPv4 network.
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_addr(mapped, &h, &proxies), "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn cookies_are_read_by_name_and_written_strict() {
        let h = headers(&[("cookie", "a=1; cc_session=abc"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, "cc_session"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "cc"), None);
        let set = set_cookie("cc_session", "abc", 60, true);
        assert_eq!(set, "cc_session=abc; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict; Secure");
        assert!(!set_cookie("x", "", 0, false).contains("Secure"));
    }
}
