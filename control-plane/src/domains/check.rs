//! The `check` and `json` fields of a domain request: the check type (`http`, `tcp`, `dns`,
//! `tls`) with its settings, and an `http` check's JSON body assertion. Every problem is named
//! by its path (`check.port`, `check.servers[1]`, `json.path`), like the other fields.
//!
//! Hosts and name servers given as address literals are screened by the same policy as a URL's
//! host (private ranges refused unless the deployment allows them); names are screened by the
//! agent's SSRF guard once resolved.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};
use shared::check::{MAX_TCP_EXPECT_BYTES, MAX_TCP_SEND_BYTES};
use shared::netguard;
use shared::{CheckConfig, DnsCheck, DnsRecordType, JsonAssertion, JsonOp, TcpCheck, TlsCheck};

use super::spec::{FieldErrors, Policy};

/// Most name servers a DNS check may ask.
pub const MAX_DNS_SERVERS: usize = 8;
/// Most expected answers of a DNS check.
pub const MAX_DNS_EXPECT: usize = 32;
/// Longest JSONPath expression, in characters.
pub const MAX_JSON_PATH_CHARS: usize = 512;

/// Parses `check` (absent or `null`: `http`). `None` when it has errors (added to `errors`).
pub(super) fn parse_check(
    value: Option<&Value>,
    policy: &Policy,
    errors: &mut FieldErrors,
) -> Option<CheckConfig> {
    let Some(value) = value else {
        return Some(CheckConfig::Http);
    };
    let Value::Object(map) = value else {
        errors.add("check", "must be an object with a \"type\": \"http\", \"tcp\", \"dns\" or \"tls\"");
        return None;
    };
    let before = errors.0.len();
    let kind = map.get("type").and_then(Value::as_str);
    let known: &[&str] = match kind {
        Some("http") => &["type"],
        Some("tcp") => &["type", "host", "port", "tls", "send", "expect"],
        Some("dns") => &["type", "name", "record_type", "servers", "expect", "dnssec"],
        Some("tls") => &["type", "host", "port"],
        _ => {
            errors.add("check.type", "must be \"http\", \"tcp\", \"dns\" or \"tls\"");
            return None;
        }
    };
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.add(&format!("check.{key}"), format!("unknown field for a {} check", kind.unwrap_or("")));
    }
    let field = |name: &str| map.get(name).filter(|v| !v.is_null());
    let check = match kind {
        Some("tcp") => {
            let host = host(field("host"), policy, errors);
            let port = port(field("port"), errors);
            let tls = flag(field("tls"), "check.tls", errors);
            let send = text(field("send"), "check.send", MAX_TCP_SEND_BYTES, errors);
            let expect = text(field("expect"), "check.expect", MAX_TCP_EXPECT_BYTES, errors);
            match (host, port) {
                (Some(host), Some(port)) => {
                    Some(CheckConfig::Tcp(TcpCheck { host, port, tls, send, expect }))
                }
                _ => None,
            }
        }
        Some("tls") => match (host(field("host"), policy, errors), port(field("port"), errors)) {
            (Some(host), Some(port)) => Some(CheckConfig::Tls(TlsCheck { host, port })),
            _ => None,
        },
        Some("dns") => {
            let name = match field("name") {
                None => {
                    errors.add("check.name", "required");
                    None
                }
                Some(v) => dns_name(v).map_err(|m| errors.add("check.name", m)).ok(),
            };
            let record_type = match field("record_type") {
                None => Some(DnsRecordType::A),
                Some(v) => v.as_str().and_then(DnsRecordType::parse).or_else(|| {
                    let names: Vec<_> = DnsRecordType::ALL.iter().map(|t| t.as_str()).collect();
                    errors.add("check.record_type", format!("must be one of {}", names.join(", ")));
                    None
                }),
            };
            let servers = servers(field("servers"), policy, errors);
            let expect = match (field("expect"), record_type) {
                (None, _) => Vec::new(),
                (Some(Value::Array(items)), Some(kind)) if items.len() <= MAX_DNS_EXPECT => {
                    let mut answers = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match item.as_str().map(str::trim).filter(|s| !s.is_empty() && s.len() <= 1024) {
                            Some(answer) => answers.push(kind.normalize(answer)),
                            None => errors.add(&format!("check.expect[{i}]"), "must be a non-empty string"),
                        }
                    }
                    answers
                }
                (Some(_), _) => {
                    errors
                        .add("check.expect", format!("must be an array of at most {MAX_DNS_EXPECT} answers"));
                    Vec::new()
                }
            };
            let dnssec = flag(field("dnssec"), "check.dnssec", errors);
            match (name, record_type) {
                (Some(name), Some(record_type)) => {
                    Some(CheckConfig::Dns(DnsCheck { name, record_type, servers, expect, dnssec }))
                }
                _ => None,
            }
        }
        _ => Some(CheckConfig::Http),
    };
    check.filter(|_| errors.0.len() == before)
}

/// Parses `json` (absent or `null`: none). `None` with errors added when it is invalid.
pub(super) fn parse_json(value: &Value, errors: &mut FieldErrors) -> Option<JsonAssertion> {
    let Value::Object(map) = value else {
        errors.add("json", "must be an object with \"path\", \"op\" and \"value\"");
        return None;
    };
    let before = errors.0.len();
    for key in map.keys().filter(|k| !["path", "op", "value"].contains(&k.as_str())) {
        errors.add(&format!("json.{key}"), "unknown field");
    }
    let path = match map.get("path") {
        Some(Value::String(p)) if !p.is_empty() && p.chars().count() <= MAX_JSON_PATH_CHARS => {
            let assertion = JsonAssertion { path: p.clone(), op: JsonOp::Exists, value: None };
            match assertion.compile() {
                Ok(_) => Some(p.clone()),
                Err(e) => {
                    errors.add("json.path", format!("not a valid JSONPath (RFC 9535) expression: {e}"));
                    None
                }
            }
        }
        _ => {
            errors.add(
                "json.path",
                format!("must be a JSONPath expression of 1 to {MAX_JSON_PATH_CHARS} characters"),
            );
            None
        }
    };
    let op = match map.get("op").and_then(Value::as_str).and_then(JsonOp::parse) {
        Some(op) => Some(op),
        None => {
            let names: Vec<_> = JsonOp::ALL.iter().map(|o| format!("\"{}\"", o.as_str())).collect();
            errors.add("json.op", format!("must be one of {}", names.join(", ")));
            None
        }
    };
    let value = map.get("value").cloned();
    match (op, &value) {
        (Some(JsonOp::Exists), Some(_)) => errors.add("json.value", "must be absent for \"exists\""),
        (Some(op), None) if op != JsonOp::Exists => errors.add("json.value", "required"),
        (Some(op), Some(v)) if op.is_ordering() && !(v.is_number() || v.is_string()) => {
            errors.add("json.value", format!("must be a number or a string for \"{}\"", op.as_str()))
        }
        (Some(_), Some(v)) if v.to_string().len() > 4096 => {
            errors.add("json.value", "must be at most 4096 bytes of JSON")
        }
        _ => {}
    }
    match (path, op) {
        (Some(path), Some(op)) if errors.0.len() == before => Some(JsonAssertion { path, op, value }),
        _ => None,
    }
}

/// The request form of a check (`parse_check` of it gives it back).
pub(super) fn check_to_request(check: &CheckConfig) -> Value {
    serde_json::to_value(check).expect("check serializes")
}

/// The request form of a JSON assertion.
pub(super) fn json_to_request(assertion: &JsonAssertion) -> Value {
    let mut map = Map::new();
    map.insert("path".into(), Value::from(assertion.path.as_str()));
    map.insert("op".into(), Value::from(assertion.op.as_str()));
    if let Some(value) = &assertion.value {
        map.insert("value".into(), value.clone());
    }
    Value::Object(map)
}

/// A host for `tcp`/`tls`: a fully qualified name or an address literal allowed by the policy
/// ([`crate::hosts`]' rule, shared with every URL).
fn host(value: Option<&Value>, policy: &Policy, errors: &mut FieldErrors) -> Option<String> {
    let outcome = match value {
        None => Err("required".to_owned()),
        Some(Value::String(raw)) => crate::hosts::parse(raw).and_then(|host| match host.address {
            Some(ip) => screen(ip, policy).map(|()| host.text),
            None => Ok(host.text),
        }),
        Some(_) => Err("must be a host name or an IP address".to_owned()),
    };
    outcome.map_err(|m| errors.add("check.host", m)).ok()
}

/// A DNS name: at most 253 characters, labels of letters, digits, `-` and `_`, at least two
/// labels (names are absolute) unless `localhost`; lowercase, without the trailing dot.
fn dns_name(value: &Value) -> Result<String, String> {
    const HELP: &str = "must be a fully qualified domain name (labels of letters, digits, '-' or '_')";
    let Value::String(raw) = value else {
        return Err(HELP.into());
    };
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(HELP.into());
    }
    if !name.contains('.') && name != "localhost" {
        return Err("must be a fully qualified domain name (names are absolute)".into());
    }
    Ok(name)
}

fn screen(ip: IpAddr, policy: &Policy) -> Result<(), String> {
    match netguard::classify(ip) {
        Some(range) if !policy.allow_private_targets => {
            Err(format!("{ip} is in a {range} address range, which this deployment does not probe"))
        }
        _ => Ok(()),
    }
}

fn port(value: Option<&Value>, errors: &mut FieldErrors) -> Option<u16> {
    match value.map(Value::as_u64) {
        None => {
            errors.add("check.port", "required");
            None
        }
        Some(Some(p)) if (1..=65535).contains(&p) => Some(p as u16),
        Some(_) => {
            errors.add("check.port", "must be an integer from 1 to 65535");
            None
        }
    }
}

fn flag(value: Option<&Value>, name: &str, errors: &mut FieldErrors) -> bool {
    match value {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.add(name, "must be true or false");
            false
        }
    }
}

fn text(value: Option<&Value>, name: &str, max: usize, errors: &mut FieldErrors) -> Option<String> {
    match value {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Some(s.clone()),
        Some(_) => {
            errors.add(name, format!("must be a string of 1 to {max} bytes"));
            None
        }
    }
}

/// Name servers as `ip:port` (`[v6]:port`), each allowed by the policy.
fn servers(value: Option<&Value>, policy: &Policy, errors: &mut FieldErrors) -> Vec<SocketAddr> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        errors.add("check.servers", "must be an array of \"ip:port\" strings");
        return Vec::new();
    };
    if items.len() > MAX_DNS_SERVERS {
        errors.add("check.servers", format!("must list at most {MAX_DNS_SERVERS} servers"));
        return Vec::new();
    }
    let mut servers = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("check.servers[{i}]");
        match item.as_str().and_then(|s| s.trim().parse::<SocketAddr>().ok()) {
            None => errors.add(&at, "must be an address and port (\"192.0.2.53:53\", \"[2001:db8::53]:53\")"),
            Some(addr) => match screen(addr.ip(), policy) {
                Ok(()) if addr.port() != 0 => servers.push(addr),
                Ok(()) => errors.add(&at, "the port must not be 0"),
                Err(m) => errors.add(&at, m),
            },
        }
    }
    servers
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::spec::{DomainSpec, FieldErrors, Policy};
    use super::*;
    use crate::flap;

    fn policy(allow_private_targets: bool) -> Policy {
        Policy {
            min_interval_s: 10,
            max_interval_s: 3600,
            max_timeout_ms: 30_000,
            allow_private_targets,
            regions: ["ams", "iad"].iter().map(|s| s.to_string()).collect(),
            flap: flap::Settings::from_config(&crate::Config::default()),
            degraded: crate::degraded::Settings::from_config(&crate::Config::default()),
        }
    }

    fn parse(v: Value) -> Result<DomainSpec, FieldErrors> {
        DomainSpec::parse(v.as_object().unwrap(), &policy(false))
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"check": "tcp"}), "check", "must be an object"),
            (json!({"check": {"type": "icmp"}}), "check.type", "must be"),
            (json!({"check": {}}), "check.type", "must be"),
            (json!({"check": {"type": "tcp", "port": 25}}), "check.host", "required"),
            (json!({"check": {"type": "tcp", "host": "mail", "port": 25}}), "check.host", "fully qualified"),
            (json!({"check": {"type": "tcp", "host": "a b.example", "port": 25}}), "check.host", "labels"),
            (json!({"check": {"type": "tcp", "host": "10.1.2.3", "port": 25}}), "check.host", "private"),
            (json!({"check": {"type": "tcp", "host": "localhost", "port": 25}}), "check.host", "loopback"),
            (json!({"check": {"type": "tcp", "host": "example.com"}}), "check.port", "required"),
            (json!({"check": {"type": "tcp", "host": "example.com", "port": 0}}), "check.port", "1 to 65535"),
            (
                json!({"check": {"type": "tcp", "host": "example.com", "port": 70000}}),
                "check.port",
                "1 to 65535",
            ),
            (
                json!({"check": {"type": "tcp", "host": "example.com", "port": 1, "tls": "yes"}}),
                "check.tls",
                "true or false",
            ),
            (
                json!({"check": {"type": "tcp", "host": "example.com", "port": 1, "send": ""}}),
                "check.send",
                "1 to 4096",
            ),
            (
                json!({"check": {"type": "tcp", "host": "example.com", "port": 1, "expect": "x".repeat(1025)}}),
                "check.expect",
                "1 to 1024",
            ),
            (
                json!({"check": {"type": "tcp", "host": "example.com", "port": 1, "name": "x"}}),
                "check.name",
                "unknown field",
            ),
            (
                json!({"check": {"type": "tls", "host": "example.com", "port": 1, "tls": true}}),
                "check.tls",
                "unknown field",
            ),
            (json!({"check": {"type": "dns"}}), "check.name", "required"),
            (
                json!({"check": {"type": "dns", "name": "example.com", "record_type": "AXFR"}}),
                "check.record_type",
                "one of A, AAAA",
            ),
            (
                json!({"check": {"type": "dns", "name": "example.com", "servers": "1.1.1.1"}}),
                "check.servers",
                "array",
            ),
            (
                json!({"check": {"type": "dns", "name": "example.com", "servers": ["1.1.1.1:53", "1.1.1.1"]}}),
                "check.servers[1]",
                "address and port",
            ),
            (
                json!({"check": {"type": "dns", "name": "example.com", "servers": ["192.168.1.1:53"]}}),
                "check.servers[0]",
                "private",
            ),
            (
                json!({"check": {"type": "dns", "name": "example.com", "expect": ["192.0.2.1", 7]}}),
                "check.expect[1]",
                "non-empty string",
            ),
            (
                json!({"check": {"type": "dns", "name": "example.com", "dnssec": 1}}),
                "check.dnssec",
                "true or false",
            ),
            (
                json!({"check": {"type": "tcp", "host": "example.com", "port": 1}, "url": "https://example.com/"}),
                "url",
                "only an http check",
            ),
            (
                json!({"check": {"type": "dns", "name": "example.com"}, "keyword": "ok"}),
                "keyword",
                "only an http check",
            ),
            (
                json!({"check": {"type": "tls", "host": "example.com", "port": 443}, "method": "POST"}),
                "method",
                "only an http check",
            ),
            (
                json!({"check": {"type": "tls", "host": "example.com", "port": 443}, "json": {"path": "$", "op": "exists"}}),
                "json",
                "only an http check",
            ),
            (json!({"check": {"type": "http"}}), "url", "required"),
            (json!({"url": "https://example.com/", "json": []}), "json", "must be an object"),
            (json!({"url": "https://example.com/", "json": {"op": "exists"}}), "json.path", "JSONPath"),
            (
                json!({"url": "https://example.com/", "json": {"path": "status", "op": "exists"}}),
                "json.path",
                "not a valid JSONPath",
            ),
            (
                json!({"url": "https://example.com/", "json": {"path": "$.a", "op": "~="}}),
                "json.op",
                "\"==\"",
            ),
            (
                json!({"url": "https://example.com/", "json": {"path": "$.a", "op": "=="}}),
                "json.value",
                "required",
            ),
            (
                json!({"url": "https://example.com/", "json": {"path": "$.a", "op": "exists", "value": 1}}),
                "json.value",
                "absent",
            ),
            (
                json!({"url": "https://example.com/", "json": {"path": "$.a", "op": "<", "value": [1]}}),
                "json.value",
                "number or a string",
            ),
            (
                json!({"url": "https://example.com/", "json": {"path": "$.a", "op": "==", "value": 1, "x": 1}}),
                "json.x",
                "unknown field",
            ),
            (
                json!({"url": "https://example.com/", "keyword": "ok", "json": {"path": "$.a", "op": "exists"}}),
                "json",
                "keyword",
            ),
            (
                json!({"url": "https://example.com/", "method": "HEAD", "json": {"path": "$.a", "op": "exists"}}),
                "json",
                "HEAD",
            ),
        ];
        for (request, field, message) in cases {
            let errors = parse(request.clone()).expect_err(&request.to_string()).0;
            let got =
                errors.get(field).unwrap_or_else(|| panic!("{request}: no error for {field}: {errors:?}"));
            assert!(got.contains(message), "{request}: {field}: {got:?} should say {message:?}");
        }
    }

    #[test]
    fn valid_checks_parse_with_their_display_urls() {
        let tcp = parse(json!({
            "check": {"type": "tcp", "host": "DB.Example.com.", "port": 5432, "tls": true, "send": "PING\r\n", "expect": "PONG"}
        }))
        .unwrap();
        assert_eq!(tcp.url.as_str(), "tcp://db.example.com:5432");
        assert_eq!(
            tcp.check,
            CheckConfig::Tcp(TcpCheck {
                host: "db.example.com".into(),
                port: 5432,
                tls: true,
                send: Some("PING\r\n".into()),
                expect: Some("PONG".into()),
            })
        );
        let tls = parse(json!({"check": {"type": "tls", "host": "2606:4700::1111", "port": 993}})).unwrap();
        assert_eq!(tls.url.as_str(), "tls://[2606:4700::1111]:993");
        let dns = parse(json!({
            "check": {"type": "dns", "name": "example.com", "record_type": "mx", "servers": ["9.9.9.9:53"],
                      "expect": ["10 Mail.Example.com."], "dnssec": true}
        }))
        .unwrap();
        assert_eq!(dns.url.as_str(), "dns://example.com/MX");
        let CheckConfig::Dns(query) = &dns.check else { panic!("{:?}", dns.check) };
        assert_eq!(query.expect, vec!["10 mail.example.com".to_owned()], "kept in normal form");
        let default = parse(json!({"check": {"type": "dns", "name": "example.com"}})).unwrap();
        let CheckConfig::Dns(query) = &default.check else { panic!() };
        assert_eq!(query.record_type, DnsRecordType::A);
        let private = DomainSpec::parse(
            json!({"check": {"type": "dns", "name": "example.com", "servers": ["127.0.0.1:5353"]}})
                .as_object()
                .unwrap(),
            &policy(true),
        );
        assert!(private.is_ok(), "a deployment allowing private targets allows private servers");
        let http = parse(json!({"url": "https://example.com/", "check": {"type": "http"},
                               "json": {"path": "$.status", "op": "==", "value": "ok"}}))
        .unwrap();
        assert_eq!(http.check, CheckConfig::Http);
        assert_eq!(http.json_check.as_ref().unwrap().op, JsonOp::Eq);
    }

    #[test]
    fn the_request_form_parses_back_to_the_same_spec() {
        for request in [
            json!({"check": {"type": "tcp", "host": "example.com", "port": 25, "expect": "220"}, "interval": 30,
                   "tags": ["mail"], "slo": {"target": 99.5}, "dns_drift": {"notify": true}, "degraded": {"latency_ms": 800}}),
            json!({"check": {"type": "dns", "name": "example.com", "record_type": "TXT", "expect": ["v=spf1 -all"]}}),
            json!({"check": {"type": "tls", "host": "example.com", "port": 443}, "tls_verify": false}),
            json!({"url": "https://example.com/", "json": {"path": "$.n", "op": ">=", "value": 3}}),
        ] {
            let spec = parse(request.clone()).unwrap();
            let again = DomainSpec::parse(&spec.to_request(), &policy(false)).unwrap();
            assert_eq!(again, spec, "{request}");
            let agent = spec.agent_config(shared::DomainId::new(), 1);
            assert_eq!(agent.check, spec.check);
            assert_eq!(agent.json_check, spec.json_check);
        }
    }
}
