//! What a URL means to a probe hop: scheme, host (name or literal address), port, the `Host`
//! header and the request target; and how a redirect's `Location` becomes the next URL.

use std::net::IpAddr;

use url::{Host, Position, Url};

/// The host part of a URL: a name to resolve, or an address used as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    Name(String),
    Ip(IpAddr),
}

/// One hop's destination.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub tls: bool,
    pub host: TargetHost,
    pub port: u16,
    /// The `Host` header: the host as written in the URL, with the port unless it is the
    /// scheme's default.
    pub authority: String,
    /// The request target in origin form (path and query).
    pub path_and_query: String,
}

impl Target {
    /// Parses and checks a configured URL (http and https only).
    pub fn parse(text: &str) -> Result<Target, String> {
        let url = Url::parse(text).map_err(|e| format!("cannot parse url: {e}").to_lowercase())?;
        Target::from_url(url)
    }

    pub fn from_url(url: Url) -> Result<Target, String> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let host = match url.host() {
            Some(Host::Domain(name)) if !name.is_empty() => TargetHost::Name(name.to_owned()),
            Some(Host::Ipv4(ip)) => TargetHost::Ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => TargetHost::Ip(IpAddr::V6(ip)),
            _ => return Err("the url has no host".to_owned()),
        };
        let port = url.port_or_known_default().ok_or("the url has no port")?;
        let host_text = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host_text}:{port}"),
            None => host_text.to_owned(),
        };
        let path_and_query = url[Position::BeforePath..Position::AfterQuery].to_owned();
        let path_and_query = if path_and_query.is_empty() { "/".to_owned() } else { path_and_query };
        Ok(Target { url, tls, host, port, authority, path_and_query })
    }

    /// The target a redirect's `Location` points to, resolved against this one.
    pub fn follow(&self, location: &str) -> Result<Target, String> {
        let mut next = self
            .url
            .join(location)
            .map_err(|e| format!("unusable location {location:?}: {}", e.to_string().to_lowercase()))?;
        next.set_fragment(None);
        // Never sent, and not to be recorded in the report either.
        let _ = next.set_username("");
        let _ = next.set_password(None);
        Target::from_url(next).map_err(|e| format!("unusable location {location:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_request_targets() {
        let t = Target::parse("https://Example.COM/a/b?x=1#frag").unwrap();
        assert!(t.tls);
        assert_eq!(t.host, TargetHost::Name("example.com".into()));
        assert_eq!(
            (t.port, t.authority.as_str(), t.path_and_query.as_str()),
            (443, "example.com", "/a/b?x=1")
        );

        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(t.host, TargetHost::Ip("::1".parse().unwrap()));
        assert_eq!((t.port, t.authority.as_str(), t.path_and_query.as_str()), (8080, "[::1]:8080", "/"));

        let t = Target::parse("http://127.0.0.1:80/").unwrap();
        assert_eq!((t.port, t.authority.as_str()), (80, "127.0.0.1"));
    }

    #[test]
    fn refuses_what_cannot_be_probed() {
        for bad in ["ftp://example.com/", "example.com", "http://", "file:///etc/passwd", "mailto:a@b.c"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn follows_relative_and_absolute_locations() {
        let t = Target::parse("http://example.com:8080/a/b").unwrap();
        assert_eq!(t.follow("c").unwrap().url.as_str(), "http://example.com:8080/a/c");
        assert_eq!(t.follow("/x?y#z").unwrap().url.as_str(), "http://example.com:8080/x?y");
        assert_eq!(t.follow("//other.test/p").unwrap().url.as_str(), "http://other.test/p");
        assert_eq!(t.follow("https://secure.test/").unwrap().url.as_str(), "https://secure.test/");
        assert!(t.follow("ftp://example.com/").is_err());
        assert_eq!(t.follow("http://user:secret@other.test/").unwrap().url.as_str(), "http://other.test/");
    }
}
