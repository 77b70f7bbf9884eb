//! What a probe checks besides today's HTTP(S) request: a TCP service (`tcp`), DNS answers
//! (`dns`) or a TLS endpoint's certificate (`tls`), and the JSON assertion an `http` check may
//! make on its body.
//!
//! These are part of the agent-facing [`crate::DomainConfig`]: a non-HTTP check travels as a
//! `check` object (`{"type": "tcp", …}`) and no `method`, so an agent that predates check types
//! cannot decode the domain and skips it rather than probing `tcp://…` as a URL (see
//! `DomainConfig`'s wire rules). The JSON assertion travels as `json_check`, which an older
//! agent ignores: it probes the body less strictly, never wrongly.
//!
//! [`JsonAssertion::evaluate`] is pure and shared: the control plane checks the path when a
//! domain is written, the agent evaluates it on each response.

use std::cmp::Ordering;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;

/// The kind of check and its settings (JSON: an object tagged by `type`). `Http` is the
/// default: the domain's `url`, `request`, `expected_status` and body checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckConfig {
    #[default]
    Http,
    Tcp(TcpCheck),
    Dns(DnsCheck),
    Tls(TlsCheck),
}

impl CheckConfig {
    /// The `type` name: `http`, `tcp`, `dns` or `tls`.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckConfig::Http => "http",
            CheckConfig::Tcp(_) => "tcp",
            CheckConfig::Dns(_) => "dns",
            CheckConfig::Tls(_) => "tls",
        }
    }

    /// Whether this is the HTTP(S) check every agent knows.
    pub fn is_http(&self) -> bool {
        matches!(self, CheckConfig::Http)
    }

    /// The display URL of a non-HTTP check (`tcp://host:port`, `tls://host:port`,
    /// `dns://name/TYPE`); `None` for `http`, whose URL is the one probed.
    pub fn display_url(&self) -> Option<String> {
        let host = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_owned() };
        match self {
            CheckConfig::Http => None,
            CheckConfig::Tcp(tcp) => Some(format!("tcp://{}:{}", host(&tcp.host), tcp.port)),
            CheckConfig::Tls(tls) => Some(format!("tls://{}:{}", host(&tls.host), tls.port)),
            CheckConfig::Dns(dns) => Some(format!("dns://{}/{}", dns.name, dns.record_type.as_str())),
        }
    }
}

/// Longest `send` of a TCP check, in bytes.
pub const MAX_TCP_SEND_BYTES: usize = 4096;
/// Longest `expect` of a TCP check, in bytes.
pub const MAX_TCP_EXPECT_BYTES: usize = 1024;
/// Bytes of the first response a TCP check reads at most while looking for `expect`.
pub const TCP_READ_LIMIT: usize = 16 * 1024;

/// A TCP check: connect to `host:port` (after the SSRF guard), optionally complete a TLS
/// handshake (the certificate is recorded and verified as for https), optionally write `send`
/// and read the first response bytes (at most [`TCP_READ_LIMIT`]) until `expect` appears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TcpCheck {
    /// A DNS name or an IP address literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// Text written once connected (UTF-8; `\r\n` as JSON escapes), at most
    /// [`MAX_TCP_SEND_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Text that must appear in the first response bytes, at most [`MAX_TCP_EXPECT_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

/// A TLS check: connect to `host:port` and complete a handshake, recording the certificate and
/// its chain; no request is sent. An invalid certificate fails it unless `tls_verify` is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TlsCheck {
    pub host: String,
    pub port: u16,
}

/// A DNS check: ask `servers` (the agent's resolver when empty) for `name`'s `record_type`
/// records; it passes with a non-empty answer that includes every `expect` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsCheck {
    /// The name asked, absolute (a trailing dot is implied).
    pub name: String,
    pub record_type: DnsRecordType,
    /// Name servers as `ip:port`, each screened by the SSRF guard before it is asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["192.0.2.53:53"])))]
    pub servers: Vec<SocketAddr>,
    /// Answers that must be present, in [`DnsRecordType`]'s text form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<String>,
    /// Validate the answer with DNSSEC: an answer that does not validate fails the check
    /// (`dnssec_invalid`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dnssec: bool,
}

/// The record types a DNS check may ask. Answers are compared in text form: addresses as
/// written by `IpAddr`; names (`CNAME`, `NS`, `PTR`) lowercase without the trailing dot; `MX`
/// as `"preference exchange"` (`"10 mail.example.com"`); `TXT` as its strings joined; `SRV` as
/// `"priority weight port target"`; `CAA` and `SOA` as presentation text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum DnsRecordType {
    A,
    Aaaa,
    Cname,
    Mx,
    Txt,
    Ns,
    Soa,
    Srv,
    Caa,
    Ptr,
}

impl DnsRecordType {
    pub const ALL: [DnsRecordType; 10] = [
        DnsRecordType::A,
        DnsRecordType::Aaaa,
        DnsRecordType::Cname,
        DnsRecordType::Mx,
        DnsRecordType::Txt,
        DnsRecordType::Ns,
        DnsRecordType::Soa,
        DnsRecordType::Srv,
        DnsRecordType::Caa,
        DnsRecordType::Ptr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecordType::A => "A",
            DnsRecordType::Aaaa => "AAAA",
            DnsRecordType::Cname => "CNAME",
            DnsRecordType::Mx => "MX",
            DnsRecordType::Txt => "TXT",
            DnsRecordType::Ns => "NS",
            DnsRecordType::Soa => "SOA",
            DnsRecordType::Srv => "SRV",
            DnsRecordType::Caa => "CAA",
            DnsRecordType::Ptr => "PTR",
        }
    }

    /// The type named `name`, in any letter case.
    pub fn parse(name: &str) -> Option<DnsRecordType> {
        Self::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// `value` in the form answers are compared in: addresses parsed and printed again, names
    /// lowercase without a trailing dot, other types trimmed.
    pub fn normalize(self, value: &str) -> String {
        let value = value.trim();
        match self {
            DnsRecordType::A | DnsRecordType::Aaaa => {
                value.parse::<std::net::IpAddr>().map_or_else(|_| value.to_owned(), |ip| ip.to_string())
            }
            DnsRecordType::Cname | DnsRecordType::Ns | DnsRecordType::Ptr => {
                value.trim_end_matches('.').to_ascii_lowercase()
            }
            DnsRecordType::Mx | DnsRecordType::Srv => {
                let words: Vec<&str> = value.split_whitespace().collect();
                match words.split_last() {
                    Some((name, numbers)) => {
                        let mut out: Vec<String> = numbers.iter().map(|w| (*w).to_owned()).collect();
                        out.push(name.trim_end_matches('.').to_ascii_lowercase());
                        out.join(" ")
                    }
                    None => String::new(),
                }
            }
            DnsRecordType::Txt | DnsRecordType::Soa | DnsRecordType::Caa => value.to_owned(),
        }
    }
}

impl fmt::Display for DnsRecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The comparison of a [`JsonAssertion`] (JSON: `"=="`, `"!="`, `"<"`, `"<="`, `">"`, `">="`,
/// `"contains"`, `"exists"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JsonOp {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "contains")]
    Contains,
    #[serde(rename = "exists")]
    Exists,
}

impl JsonOp {
    pub const ALL: [JsonOp; 8] = [
        JsonOp::Eq,
        JsonOp::Ne,
        JsonOp::Lt,
        JsonOp::Le,
        JsonOp::Gt,
        JsonOp::Ge,
        JsonOp::Contains,
        JsonOp::Exists,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JsonOp::Eq => "==",
            JsonOp::Ne => "!=",
            JsonOp::Lt => "<",
            JsonOp::Le => "<=",
            JsonOp::Gt => ">",
            JsonOp::Ge => ">=",
            JsonOp::Contains => "contains",
            JsonOp::Exists => "exists",
        }
    }

    pub fn parse(text: &str) -> Option<JsonOp> {
        Self::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// Whether the operator orders values (numbers with numbers, strings with strings).
    pub fn is_ordering(self) -> bool {
        matches!(self, JsonOp::Lt | JsonOp::Le | JsonOp::Gt | JsonOp::Ge)
    }
}

/// An assertion on an HTTP response's JSON body: the nodes `path` (JSONPath, RFC 9535) selects
/// compared with `value`.
///
/// - `exists`: the path selects at least one node (`value` is not used);
/// - any other operator: the path selects at least one node and **every** selected node
///   satisfies `node op value`. `==`/`!=` compare JSON values (numbers by value: `1 == 1.0`);
///   ordering operators compare a number with a number or a string with a string (other pairs
///   fail); `contains` holds for a string containing the string `value` or an array with an
///   element equal to `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonAssertion {
    /// A JSONPath expression (RFC 9535), e.g. `$.status`.
    #[cfg_attr(feature = "openapi", schema(example = "$.status"))]
    pub path: String,
    pub op: JsonOp,
    /// Any JSON value the selected nodes are compared with (not used by `exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl JsonAssertion {
    /// The compiled path. Errors: the expression is not RFC 9535 JSONPath (the message says
    /// where).
    pub fn compile(&self) -> Result<JsonPath, String> {
        JsonPath::parse(&self.path).map_err(|e| e.to_string().to_lowercase())
    }

    /// Whether `document` satisfies the assertion; the error says why not, naming the path,
    /// the operator and the first failing value (shortened), e.g.
    /// `$.status is "degraded", expected == "ok"`.
    pub fn evaluate(&self, document: &Value) -> Result<(), String> {
        let path = self.compile()?;
        let nodes = path.query(document).all();
        if nodes.is_empty() {
            return Err(format!("{} selects nothing", self.path));
        }
        if self.op == JsonOp::Exists {
            return Ok(());
        }
        let wanted = self.value.as_ref().unwrap_or(&Value::Null);
        for node in nodes {
            if !holds(node, self.op, wanted) {
                return Err(format!(
                    "{} is {}, expected {} {}",
                    self.path,
                    shorten(node),
                    self.op.as_str(),
                    shorten(wanted)
                ));
            }
        }
        Ok(())
    }
}

fn holds(node: &Value, op: JsonOp, wanted: &Value) -> bool {
    match op {
        JsonOp::Exists => true,
        JsonOp::Eq => json_eq(node, wanted),
        JsonOp::Ne => !json_eq(node, wanted),
        JsonOp::Contains => match (node, wanted) {
            (Value::String(text), Value::String(part)) => text.contains(part.as_str()),
            (Value::Array(items), wanted) => items.iter().any(|item| json_eq(item, wanted)),
            _ => false,
        },
        JsonOp::Lt | JsonOp::Le | JsonOp::Gt | JsonOp::Ge => {
            let ordering = match (node, wanted) {
                (Value::Number(a), Value::Number(b)) => {
                    a.as_f64().zip(b.as_f64()).and_then(|(a, b)| a.partial_cmp(&b))
                }
                (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                _ => None,
            };
            match (op, ordering) {
                (_, None) => false,
                (JsonOp::Lt, Some(o)) => o == Ordering::Less,
                (JsonOp::Le, Some(o)) => o != Ordering::Greater,
                (JsonOp::Gt, Some(o)) => o == Ordering::Greater,
                (_, Some(o)) => o != Ordering::Less,
            }
        }
    }
}

/// JSON equality with numbers compared by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// A value as JSON text, at most 64 characters.
fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 64 {
        text
    } else {
        format!("{}…", text.chars().take(63).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_assertion_operators() {
        let doc = json!({
            "status": "ok",
            "version": "2.10.1",
            "latency_ms": 42,
            "ratio": 0.5,
            "tags": ["eu", "primary"],
            "checks": [{"ok": true}, {"ok": true}],
            "mixed": [{"ok": true}, {"ok": false}],
            "nothing": null,
        });
        let cases: &[(&str, &str, Option<Value>, bool)] = &[
            ("$.status", "==", Some(json!("ok")), true),
            ("$.status", "==", Some(json!("OK")), false),
            ("$.status", "!=", Some(json!("down")), true),
            ("$.status", "!=", Some(json!("ok")), false),
            ("$.latency_ms", "==", Some(json!(42.0)), true),
            ("$.latency_ms", "<", Some(json!(100)), true),
            ("$.latency_ms", "<", Some(json!(42)), false),
            ("$.latency_ms", "<=", Some(json!(42)), true),
            ("$.latency_ms", ">", Some(json!(41.5)), true),
            ("$.latency_ms", ">", Some(json!(42)), false),
            ("$.latency_ms", ">=", Some(json!(42)), true),
            ("$.ratio", ">=", Some(json!(0.6)), false),
            ("$.latency_ms", "<", Some(json!("100")), false),
            ("$.version", ">=", Some(json!("2.1")), true),
            ("$.status", "contains", Some(json!("o")), true),
            ("$.status", "contains", Some(json!("x")), false),
            ("$.tags", "contains", Some(json!("eu")), true),
            ("$.tags", "contains", Some(json!("us")), false),
            ("$.latency_ms", "contains", Some(json!(4)), false),
            ("$.checks[*].ok", "==", Some(json!(true)), true),
            ("$.mixed[*].ok", "==", Some(json!(true)), false),
            ("$.nothing", "==", Some(Value::Null), true),
            ("$.nothing", "exists", None, true),
            ("$.absent", "exists", None, false),
            ("$.absent", "!=", Some(json!(1)), false),
            ("$.checks[?@.ok == true]", "exists", None, true),
        ];
        for (path, op, value, expected) in cases {
            let assertion =
                JsonAssertion { path: (*path).into(), op: JsonOp::parse(op).unwrap(), value: value.clone() };
            let outcome = assertion.evaluate(&doc);
            assert_eq!(outcome.is_ok(), *expected, "{path} {op} {value:?}: {outcome:?}");
        }
    }

    #[test]
    fn failures_name_the_path_and_the_value() {
        let doc = json!({"status": "degraded"});
        let eq = JsonAssertion { path: "$.status".into(), op: JsonOp::Eq, value: Some(json!("ok")) };
        assert_eq!(eq.evaluate(&doc).unwrap_err(), r#"$.status is "degraded", expected == "ok""#);
        let absent = JsonAssertion { path: "$.x".into(), op: JsonOp::Exists, value: None };
        assert_eq!(absent.evaluate(&doc).unwrap_err(), "$.x selects nothing");
        let bad = JsonAssertion { path: "status".into(), op: JsonOp::Exists, value: None };
        assert!(bad.compile().is_err());
    }

    #[test]
    fn operators_round_trip_as_their_symbols() {
        for op in JsonOp::ALL {
            let text = serde_json::to_value(op).unwrap();
            assert_eq!(text, op.as_str());
            assert_eq!(serde_json::from_value::<JsonOp>(text).unwrap(), op);
        }
    }

    #[test]
    fn checks_are_tagged_objects_with_display_urls() {
        let tcp = CheckConfig::Tcp(TcpCheck {
            host: "2001:db8::1".into(),
            port: 25,
            tls: false,
            send: None,
            expect: Some("220".into()),
        });
        let value = serde_json::to_value(&tcp).unwrap();
        assert_eq!(value, json!({"type": "tcp", "host": "2001:db8::1", "port": 25, "expect": "220"}));
        assert_eq!(serde_json::from_value::<CheckConfig>(value).unwrap(), tcp);
        assert_eq!(tcp.display_url().unwrap(), "tcp://[2001:db8::1]:25");
        let dns = CheckConfig::Dns(DnsCheck {
            name: "example.com".into(),
            record_type: DnsRecordType::Mx,
            servers: vec!["192.0.2.53:53".parse().unwrap()],
            expect: vec![],
            dnssec: true,
        });
        let value = serde_json::to_value(&dns).unwrap();
        assert_eq!(value["record_type"], "MX");
        assert_eq!(serde_json::from_value::<CheckConfig>(value).unwrap(), dns);
        assert_eq!(dns.display_url().unwrap(), "dns://example.com/MX");
        assert_eq!(CheckConfig::Http.display_url(), None);
    }

    #[test]
    fn answers_are_compared_in_a_normal_form() {
        let cases = [
            (DnsRecordType::A, " 192.0.2.1 ", "192.0.2.1"),
            (DnsRecordType::Aaaa, "2001:DB8:0::1", "2001:db8::1"),
            (DnsRecordType::Cname, "Edge.CDN.example.", "edge.cdn.example"),
            (DnsRecordType::Mx, "10  Mail.Example.com.", "10 mail.example.com"),
            (DnsRecordType::Srv, "0 5 443 Sip.Example.", "0 5 443 sip.example"),
            (DnsRecordType::Txt, "v=spf1 -all", "v=spf1 -all"),
        ];
        for (kind, given, normal) in cases {
            assert_eq!(kind.normalize(given), normal, "{kind} {given}");
        }
        for kind in DnsRecordType::ALL {
            assert_eq!(DnsRecordType::parse(&kind.as_str().to_lowercase()), Some(kind));
        }
    }
}
