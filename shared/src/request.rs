//! What a probe sends besides the URL: the method, request headers, authentication and a body;
//! the rules every copy of them obeys (the control plane checks API requests with these
//! functions, the agent's `check` command its options); and how secrets are kept out of sight.
//!
//! **Secrets** are a basic password, a bearer token, the value of a secret header and a secret
//! body. Agents must send them, so they travel in the published configuration (the Redis
//! JSON, and a check test's probe request) as plain text, and nowhere else: [`Secret`] and the
//! types holding one print `<redacted>` in `Debug`, and [`RequestConfig::redacted`] is the form
//! for anything a person reads (the API's answers, the agent's `/debug/catalog`).
//!
//! A header is secret when it is marked so, and by default when its name says it carries a
//! credential ([`secret_by_default`]); `Authorization`, `Proxy-Authorization` and `Cookie`
//! always are ([`always_secret`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::HttpMethod;

/// At most this many request headers per domain.
pub const MAX_HEADERS: usize = 32;
/// The longest header name, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 128;
/// The longest header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// The most bytes of names and values of all request headers together.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The largest request body, in bytes of UTF-8 (it fits the API's 64 KiB request limit even
/// when every character needs escaping in JSON).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The longest basic-authentication user name, in bytes.
pub const MAX_USERNAME_LEN: usize = 256;
/// The longest basic-authentication password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The longest bearer token, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// A credential. Serialized as its plain text (agents need it), but `Debug` only says that it
/// is set, so a logged configuration or request never shows it. It has no `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a probe authenticates (JSON: `{"kind": "basic", "username", "password"}` or
/// `{"kind": "bearer", "token"}`); sent as the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Auth {
    /// RFC 7617: `Basic base64(username ":" password)`, UTF-8.
    Basic { username: String, password: Secret },
    /// RFC 6750: `Bearer <token>`.
    Bearer { token: Secret },
}

impl Auth {
    /// `basic` or `bearer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Basic { .. } => "basic",
            Auth::Bearer { .. } => "bearer",
        }
    }
}

/// One request header as configured. A secret one's value is redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    pub name: String,
    pub value: String,
    /// Write-only: never shown, and sent only to the monitored URL's origin.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
}

impl fmt::Debug for RequestHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value: &dyn fmt::Debug = if self.secret { &Secret(String::new()) } else { &self.value };
        f.debug_struct("RequestHeader")
            .field("name", &self.name)
            .field("value", value)
            .field("secret", &self.secret)
            .finish()
    }
}

/// The request body (UTF-8 text). A secret one is redacted in `Debug` and never shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestBody {
    pub text: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: &dyn fmt::Debug = if self.secret { &Secret(String::new()) } else { &self.text };
        f.debug_struct("RequestBody").field("text", text).field("secret", &self.secret).finish()
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// What a probe sends: the method, the operator's headers (in order), authentication and a
/// body (POST, PUT and PATCH only). The prober adds `Host`, `Accept-Encoding`, `Connection`
/// and the body's framing itself, and `User-Agent` and `Accept` unless a header sets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestConfig {
    pub method: HttpMethod,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RequestHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<RequestBody>,
}

impl Default for RequestConfig {
    fn default() -> Self {
        Self::new(HttpMethod::Get)
    }
}

impl RequestConfig {
    /// `method` with no headers, authentication or body.
    pub fn new(method: HttpMethod) -> Self {
        Self { method, headers: Vec::new(), auth: None, body: None }
    }

    /// Whether an agent that knows only the `method` field (GET or HEAD) sends this request
    /// exactly: a GET or HEAD with no headers, authentication or body.
    pub fn is_plain(&self) -> bool {
        matches!(self.method, HttpMethod::Get | HttpMethod::Head)
            && self.headers.is_empty()
            && self.auth.is_none()
            && self.body.is_none()
    }

    /// The form a person may read, without any secret: `method`; `headers` as
    /// `{"name", "value", "secret": false}` or `{"name", "secret": true, "value_set": true}`;
    /// `auth` as `{"kind": "basic", "username", "password_set": true}` or
    /// `{"kind": "bearer", "token_set": true}` (or null); `body` (null when absent or secret)
    /// and `body_secret`.
    pub fn redacted(&self) -> serde_json::Map<String, Value> {
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|h| {
                if h.secret {
                    json!({"name": h.name, "secret": true, "value_set": true})
                } else {
                    json!({"name": h.name, "value": h.value, "secret": false})
                }
            })
            .collect();
        let auth = match &self.auth {
            None => Value::Null,
            Some(Auth::Basic { username, .. }) => {
                json!({"kind": "basic", "username": username, "password_set": true})
            }
            Some(Auth::Bearer { .. }) => json!({"kind": "bearer", "token_set": true}),
        };
        let mut map = serde_json::Map::new();
        map.insert("method".into(), Value::from(self.method.as_str()));
        map.insert("headers".into(), Value::from(headers));
        map.insert("auth".into(), auth);
        map.insert(
            "body".into(),
            self.body.as_ref().filter(|b| !b.secret).map_or(Value::Null, |b| Value::from(b.text.as_str())),
        );
        map.insert("body_secret".into(), Value::from(self.body.as_ref().is_some_and(|b| b.secret)));
        map
    }
}

/// Why the prober does not let an operator set header `name` (any letter case), if it does not.
pub fn reserved_header(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    Some(match name.as_str() {
        "host" => "the prober sets Host from the URL",
        "content-length" | "transfer-encoding" => "the prober frames the request body itself",
        "connection" | "keep-alive" | "proxy-connection" | "upgrade" | "te" | "trailer" => {
            "a connection header: every probe uses a fresh connection with Connection: close"
        }
        "accept-encoding" => {
            "the prober advertises the codings it decodes (gzip, deflate, br, zstd), which the body check relies on"
        }
        "expect" => "the prober sends the body at once and does not wait for 100-continue",
        _ => return None,
    })
}

/// Headers that carry credentials by definition: always secret, whatever the request says.
pub fn always_secret(name: &str) -> bool {
    ["authorization", "proxy-authorization", "cookie"].iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Whether a header is secret when the request does not say: the [`always_secret`] ones, and
/// any whose name contains `auth`, `token`, `key`, `secret`, `password`, `passwd`, `session`,
/// `cookie`, `signature` or `credential` (`X-Api-Key`, `X-Auth-Token`, …). Hiding a value
/// that was not secret costs only its display; showing a credential cannot be undone.
pub fn secret_by_default(name: &str) -> bool {
    const WORDS: [&str; 10] = [
        "auth",
        "token",
        "key",
        "secret",
        "password",
        "passwd",
        "session",
        "cookie",
        "signature",
        "credential",
    ];
    let lower = name.to_ascii_lowercase();
    always_secret(name) || WORDS.iter().any(|w| lower.contains(w))
}

/// A header name: 1 to [`MAX_HEADER_NAME_LEN`] token characters (RFC 9110 `tchar`), not one
/// the prober owns ([`reserved_header`]).
pub fn check_header_name(name: &str) -> Result<(), String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN || !name.chars().all(tchar) {
        return Err(format!(
            "must be a header name of 1 to {MAX_HEADER_NAME_LEN} letters, digits or !#$%&'*+-.^_`|~"
        ));
    }
    match reserved_header(name) {
        Some(reason) => Err(format!("{name} cannot be set: {reason}")),
        None => Ok(()),
    }
}

/// A header value: at most [`MAX_HEADER_VALUE_LEN`] bytes of printable ASCII, spaces and tabs,
/// not starting or ending with whitespace. The message never repeats the value.
pub fn check_header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(format!("must be at most {MAX_HEADER_VALUE_LEN} bytes"));
    }
    if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err("must be printable ASCII (no control characters, line breaks or non-ASCII)".into());
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("must not start or end with whitespace".into());
    }
    Ok(())
}

/// A basic-authentication user name: at most [`MAX_USERNAME_LEN`] bytes, no `:` (it ends the
/// name in the encoding) and no control characters.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.len() > MAX_USERNAME_LEN {
        return Err(format!("must be at most {MAX_USERNAME_LEN} bytes"));
    }
    if username.contains(':') {
        return Err("must not contain ':' (basic authentication separates the password with it)".into());
    }
    if username.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A basic-authentication password: at most [`MAX_PASSWORD_LEN`] bytes, no control characters.
/// The message never repeats it.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!("must be at most {MAX_PASSWORD_LEN} bytes"));
    }
    if password.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A bearer token: 1 to [`MAX_TOKEN_LEN`] bytes of printable ASCII without spaces. The
/// message never repeats it.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(format!("must be 1 to {MAX_TOKEN_LEN} bytes"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// A request body: at most [`MAX_BODY_BYTES`] bytes of UTF-8.
pub fn check_body(text: &str) -> Result<(), String> {
    if text.len() > MAX_BODY_BYTES {
        return Err(format!("must be at most {MAX_BODY_BYTES} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> RequestConfig {
        RequestConfig {
            method: HttpMethod::Post,
            headers: vec![
                RequestHeader { name: "X-Trace".into(), value: "visible".into(), secret: false },
                RequestHeader { name: "X-Api-Key".into(), value: "hidden-key".into(), secret: true },
            ],
            auth: Some(Auth::Basic { username: "ops".into(), password: Secret::new("hidden-password") }),
            body: Some(RequestBody { text: "hidden-body".into(), secret: true }),
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let config = full();
        let text = format!("{config:?} {config:#?}");
        for secret in ["hidden-key", "hidden-password", "hidden-body"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("visible") && text.contains("ops") && text.contains("<redacted>"));
        let bearer = Auth::Bearer { token: Secret::new("hidden-token") };
        assert!(!format!("{bearer:?}").contains("hidden-token"));
        let open = RequestBody { text: "shown".into(), secret: false };
        assert!(format!("{open:?}").contains("shown"));
    }

    #[test]
    fn the_redacted_form_says_what_is_set_and_nothing_more() {
        let view = Value::Object(full().redacted());
        let text = view.to_string();
        for secret in ["hidden-key", "hidden-password", "hidden-body"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(view["auth"], json!({"kind": "basic", "username": "ops", "password_set": true}));
        assert_eq!(view["headers"][0], json!({"name": "X-Trace", "value": "visible", "secret": false}));
        assert_eq!(view["headers"][1], json!({"name": "X-Api-Key", "secret": true, "value_set": true}));
        assert_eq!((&view["body"], &view["body_secret"]), (&Value::Null, &json!(true)));
        let bearer = RequestConfig {
            auth: Some(Auth::Bearer { token: Secret::new("t") }),
            ..RequestConfig::default()
        };
        assert_eq!(bearer.redacted()["auth"], json!({"kind": "bearer", "token_set": true}));
    }

    #[test]
    fn secrets_travel_as_plain_text_in_the_published_json() {
        let config = full();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["auth"], json!({"kind": "basic", "username": "ops", "password": "hidden-password"}));
        assert_eq!(json["headers"][1]["value"], "hidden-key");
        assert!(json["headers"][0].get("secret").is_none(), "false is left out");
        assert_eq!(serde_json::from_value::<RequestConfig>(json).unwrap(), config);
    }

    #[test]
    fn plain_means_what_old_agents_send_exactly() {
        assert!(RequestConfig::default().is_plain());
        assert!(RequestConfig::new(HttpMethod::Head).is_plain());
        assert!(!RequestConfig::new(HttpMethod::Post).is_plain());
        assert!(!full().is_plain());
        let with_header = RequestConfig {
            headers: vec![RequestHeader { name: "A".into(), value: "b".into(), secret: false }],
            ..RequestConfig::default()
        };
        assert!(!with_header.is_plain());
    }

    #[test]
    fn header_rules() {
        assert!(check_header_name("X-Request-Id").is_ok());
        assert!(check_header_name("User-Agent").is_ok(), "the user agent may be replaced");
        for bad in ["", "X Space", "X:colon", "Ünicode", &"x".repeat(MAX_HEADER_NAME_LEN + 1)] {
            assert!(check_header_name(bad).is_err(), "{bad}");
        }
        for owned in ["Host", "content-length", "Transfer-Encoding", "CONNECTION", "Accept-Encoding", "TE"] {
            let message = check_header_name(owned).unwrap_err();
            assert!(message.starts_with(&format!("{owned} cannot be set: ")), "{message}");
        }
        assert!(check_header_value("").is_ok());
        assert!(check_header_value("a\tb c").is_ok());
        for bad in
            ["a\r\nInjected: 1", "nul\0", " lead", "trail ", "é", &"v".repeat(MAX_HEADER_VALUE_LEN + 1)]
        {
            let message = check_header_value(bad).unwrap_err();
            assert!(!message.contains(bad), "the message must not echo the value: {message}");
        }
    }

    #[test]
    fn which_headers_are_secret() {
        for name in ["Authorization", "proxy-authorization", "Cookie"] {
            assert!(always_secret(name) && secret_by_default(name), "{name}");
        }
        for name in ["X-Api-Key", "X-Auth-Token", "X-Session-Id", "X-Hub-Signature", "Private-Token"] {
            assert!(!always_secret(name) && secret_by_default(name), "{name}");
        }
        for name in ["Accept", "X-Request-Id", "User-Agent", "Content-Type"] {
            assert!(!secret_by_default(name), "{name}");
        }
    }

    #[test]
    fn credential_rules() {
        assert!(check_username("").is_ok() && check_username("ops@example.com").is_ok());
        assert!(check_username("a:b").is_err() && check_username("a\nb").is_err());
        assert!(check_password("pä:ss word").is_ok());
        assert!(check_password("a\u{0}").is_err());
        assert!(check_token("eyJhbGciOi.J9-_~+/=").is_ok());
        for bad in ["", "two words", "tab\t", "é"] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
        assert!(check_body(&"b".repeat(MAX_BODY_BYTES)).is_ok());
        assert!(check_body(&"b".repeat(MAX_BODY_BYTES + 1)).is_err());
    }
}
