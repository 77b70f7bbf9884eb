//! The request fields of a domain: `method`, `headers`, `auth`, `body` and `body_secret`,
//! parsed from an API request (every problem named by field, never repeating a value), turned
//! back into the request form, and shown without secrets.
//!
//! Secrets are write-only. An update that leaves a secret out keeps the stored one: a header
//! given without `value` keeps the stored secret header of that name, `auth` without
//! `password` (basic) or `token` (bearer) keeps the stored one of the same kind. A kept
//! secret header cannot be turned visible without giving its value again.

use serde_json::{Map, Value};
use shared::request::{self as rules, MAX_HEADERS, MAX_HEADER_BYTES};
use shared::{Auth, HttpMethod, RequestBody, RequestConfig, RequestHeader, Secret};

use super::spec::FieldErrors;

const HEADER_KEYS: [&str; 3] = ["name", "value", "secret"];

/// The method as the request gives it (default GET); `None` after recording the problem.
pub(super) fn parse_method(value: Option<&Value>, errors: &mut FieldErrors) -> Option<HttpMethod> {
    let help = || {
        let names: Vec<_> = HttpMethod::ALL.iter().map(|m| m.as_str()).collect();
        format!("must be one of {}", names.join(", "))
    };
    match value {
        None => Some(HttpMethod::Get),
        Some(Value::String(s)) => HttpMethod::parse(s).or_else(|| {
            errors.add("method", help());
            None
        }),
        Some(_) => {
            errors.add("method", help());
            None
        }
    }
}

/// Parses the request fields of `request` (`method` already parsed); `kept` is the stored
/// request of the domain an update applies to, whose secrets fill the ones left out.
pub(super) fn parse(
    request: &Map<String, Value>,
    method: Option<HttpMethod>,
    kept: Option<&RequestConfig>,
    errors: &mut FieldErrors,
) -> Option<RequestConfig> {
    let field = |name: &str| request.get(name).filter(|v| !v.is_null());
    let headers = parse_headers(field("headers"), kept, errors);
    let auth = parse_auth(field("auth"), kept, errors);
    if let (Some(headers), Some(Some(_))) = (&headers, &auth) {
        if headers.iter().any(|h| h.name.eq_ignore_ascii_case("authorization")) {
            errors.add("auth", "set either auth or an Authorization header, not both");
        }
    }
    let body = parse_body(field("body"), field("body_secret"), method, errors);
    match (method, headers, auth, body) {
        (Some(method), Some(headers), Some(auth), Some(body)) => {
            Some(RequestConfig { method, headers, auth, body })
        }
        _ => None,
    }
}

fn parse_headers(
    value: Option<&Value>,
    kept: Option<&RequestConfig>,
    errors: &mut FieldErrors,
) -> Option<Vec<RequestHeader>> {
    const SHAPE: &str = "must be an array of {\"name\", \"value\", \"secret\"} objects";
    let items = match value {
        None => return Some(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.add("headers", SHAPE);
            return None;
        }
    };
    if items.len() > MAX_HEADERS {
        errors.add("headers", format!("at most {MAX_HEADERS} headers"));
        return None;
    }
    let before = errors.0.len();
    let mut headers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |key: &str| format!("headers[{i}].{key}");
        let Value::Object(entry) = item else {
            errors.add(&format!("headers[{i}]"), SHAPE);
            continue;
        };
        for key in entry.keys().filter(|k| !HEADER_KEYS.contains(&k.as_str())) {
            errors.add(&at(key), "unknown field; a header has name, value and secret");
        }
        let name = match entry.get("name") {
            Some(Value::String(name)) => match rules::check_header_name(name) {
                Ok(()) => name.clone(),
                Err(message) => {
                    errors.add(&at("name"), message);
                    continue;
                }
            },
            _ => {
                errors.add(&at("name"), "required: a header name");
                continue;
            }
        };
        if headers.iter().any(|h: &RequestHeader| h.name.eq_ignore_ascii_case(&name)) {
            errors.add(&at("name"), format!("{name} is given twice; combine its values in one header"));
            continue;
        }
        let marked = match entry.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(secret)) => Some(*secret),
            Some(_) => {
                errors.add(&at("secret"), "must be true or false");
                continue;
            }
        };
        if marked == Some(false) && rules::always_secret(&name) {
            errors.add(&at("secret"), format!("{name} carries credentials and is always secret"));
            continue;
        }
        let stored = kept
            .and_then(|k| k.headers.iter().find(|h| h.secret && h.name.eq_ignore_ascii_case(&name)))
            .map(|h| h.value.clone());
        let (value, secret) = match (entry.get("value"), stored) {
            (Some(Value::String(value)), _) => match rules::check_header_value(value) {
                Ok(()) => (value.clone(), marked.unwrap_or_else(|| rules::secret_by_default(&name))),
                Err(message) => {
                    errors.add(&at("value"), message);
                    continue;
                }
            },
            (None | Some(Value::Null), Some(_)) if marked == Some(false) => {
                errors.add(&at("value"), "required to make a secret header visible");
                continue;
            }
            // Write-only: the stored secret value stays.
            (None | Some(Value::Null), Some(stored)) => (stored, true),
            (None | Some(Value::Null), None) => {
                errors.add(&at("value"), "required");
                continue;
            }
            (Some(_), _) => {
                errors.add(&at("value"), "must be a string");
                continue;
            }
        };
        headers.push(RequestHeader { name, value, secret });
    }
    let bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        errors.add("headers", format!("names and values must total at most {MAX_HEADER_BYTES} bytes"));
    }
    (errors.0.len() == before).then_some(headers)
}

/// `Some(None)`: no authentication; `None`: a problem was recorded.
fn parse_auth(
    value: Option<&Value>,
    kept: Option<&RequestConfig>,
    errors: &mut FieldErrors,
) -> Option<Option<Auth>> {
    const SHAPE: &str =
        "must be {\"kind\": \"basic\", \"username\", \"password\"} or {\"kind\": \"bearer\", \"token\"}";
    let entry = match value {
        None => return Some(None),
        Some(Value::Object(entry)) => entry,
        Some(_) => {
            errors.add("auth", SHAPE);
            return None;
        }
    };
    let before = errors.0.len();
    let kept = kept.and_then(|k| k.auth.as_ref());
    let allowed: &[&str] = match entry.get("kind").and_then(Value::as_str) {
        Some("basic") => &["kind", "username", "password"],
        Some("bearer") => &["kind", "token"],
        _ => {
            errors.add("auth.kind", "must be \"basic\" or \"bearer\"");
            return None;
        }
    };
    for key in entry.keys().filter(|k| !allowed.contains(&k.as_str())) {
        errors.add(&format!("auth.{key}"), format!("unknown field; {SHAPE}"));
    }
    // A secret: given (and checked), or kept from the stored authentication of the same kind.
    let secret = |key: &str,
                  stored: Option<&Secret>,
                  check: fn(&str) -> Result<(), String>,
                  errors: &mut FieldErrors| {
        match (entry.get(key), stored) {
            (Some(Value::String(value)), _) => match check(value) {
                Ok(()) => Some(Secret::new(value.clone())),
                Err(message) => {
                    errors.add(&format!("auth.{key}"), message);
                    None
                }
            },
            (None | Some(Value::Null), Some(stored)) => Some(stored.clone()),
            (None | Some(Value::Null), None) => {
                errors.add(&format!("auth.{key}"), "required");
                None
            }
            (Some(_), _) => {
                errors.add(&format!("auth.{key}"), "must be a string");
                None
            }
        }
    };
    let auth = match entry.get("kind").and_then(Value::as_str) {
        Some("basic") => {
            let username = match entry.get("username") {
                Some(Value::String(username)) => match rules::check_username(username) {
                    Ok(()) => Some(username.clone()),
                    Err(message) => {
                        errors.add("auth.username", message);
                        None
                    }
                },
                _ => {
                    errors.add("auth.username", "required: a string (may be empty)");
                    None
                }
            };
            let stored = match kept {
                Some(Auth::Basic { password, .. }) => Some(password),
                _ => None,
            };
            let password = secret("password", stored, rules::check_password, errors);
            username.zip(password).map(|(username, password)| Auth::Basic { username, password })
        }
        _ => {
            let stored = match kept {
                Some(Auth::Bearer { token }) => Some(token),
                _ => None,
            };
            secret("token", stored, rules::check_token, errors).map(|token| Auth::Bearer { token })
        }
    };
    (errors.0.len() == before).then_some(Some(auth?))
}

/// `Some(None)`: no body; `None`: a problem was recorded. `body_secret` without a body
/// means nothing and is dropped.
fn parse_body(
    value: Option<&Value>,
    secret: Option<&Value>,
    method: Option<HttpMethod>,
    errors: &mut FieldErrors,
) -> Option<Option<RequestBody>> {
    let secret = match secret {
        None => Some(false),
        Some(Value::Bool(secret)) => Some(*secret),
        Some(_) => {
            errors.add("body_secret", "must be true or false");
            None
        }
    };
    let text = match value {
        None => return secret.map(|_| None),
        Some(Value::String(text)) => match rules::check_body(text) {
            Ok(()) => Some(text.clone()),
            Err(message) => {
                errors.add("body", message);
                None
            }
        },
        Some(_) => {
            errors.add("body", "must be a string");
            None
        }
    };
    if let Some(method) = method.filter(|m| !m.takes_body()) {
        errors.add("body", format!("only POST, PUT and PATCH send a body, not {}", method.as_str()));
        return None;
    }
    Some(Some(RequestBody { text: text?, secret: secret? }))
}

/// Adds the request fields of `request` to a request form: everything, secrets included (the
/// form is internal: an update overlays its patch on it and parses the result).
pub(super) fn to_request(request: &RequestConfig, map: &mut Map<String, Value>) {
    map.insert("method".into(), Value::from(request.method.as_str()));
    let headers: Vec<Value> = request
        .headers
        .iter()
        .map(|h| serde_json::json!({"name": h.name, "value": h.value, "secret": h.secret}))
        .collect();
    map.insert("headers".into(), Value::from(headers));
    map.insert(
        "auth".into(),
        request.auth.as_ref().map_or(Value::Null, |a| serde_json::to_value(a).expect("auth serializes")),
    );
    map.insert("body".into(), request.body.as_ref().map_or(Value::Null, |b| Value::from(b.text.as_str())));
    // Only with a body, so clearing the body clears its option too.
    if let Some(body) = &request.body {
        map.insert("body_secret".into(), Value::from(body.secret));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_value(request: Value, kept: Option<&RequestConfig>) -> Result<RequestConfig, FieldErrors> {
        let map = request.as_object().unwrap();
        let mut errors = FieldErrors::default();
        let method = parse_method(map.get("method").filter(|v| !v.is_null()), &mut errors);
        match parse(map, method, kept, &mut errors) {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(errors),
        }
    }

    fn stored() -> RequestConfig {
        parse_value(
            json!({
                "method": "POST",
                "headers": [
                    {"name": "X-Api-Key", "value": "key-1"},
                    {"name": "X-Trace", "value": "on"},
                    {"name": "Cookie", "value": "sid=cookie-1"}
                ],
                "auth": {"kind": "basic", "username": "ops", "password": "pw-1"},
                "body": "{\"q\":1}", "body_secret": true
            }),
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_full_request_parses_and_round_trips() {
        let request = stored();
        assert_eq!(request.method, HttpMethod::Post);
        let secrets: Vec<_> = request.headers.iter().map(|h| (h.name.as_str(), h.secret)).collect();
        assert_eq!(secrets, [("X-Api-Key", true), ("X-Trace", false), ("Cookie", true)]);
        assert_eq!(request.body, Some(RequestBody { text: "{\"q\":1}".into(), secret: true }));
        let mut form = Map::new();
        to_request(&request, &mut form);
        assert_eq!(parse_value(Value::Object(form), None).unwrap(), request);
    }

    #[test]
    fn every_method_and_where_a_body_goes() {
        for method in HttpMethod::ALL {
            let plain = parse_value(json!({"method": method.as_str().to_lowercase()}), None).unwrap();
            assert_eq!(plain.method, method);
            let with_body = parse_value(json!({"method": method.as_str(), "body": "x"}), None);
            assert_eq!(with_body.is_ok(), method.takes_body(), "{method:?}");
        }
        let errors = parse_value(json!({"body": "x"}), None).unwrap_err();
        assert_eq!(errors.0["body"], "only POST, PUT and PATCH send a body, not GET");
        let errors = parse_value(json!({"method": "TRACE"}), None).unwrap_err();
        assert_eq!(errors.0["method"], "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        let big = "b".repeat(rules::MAX_BODY_BYTES + 1);
        assert!(parse_value(json!({"method": "PUT", "body": big}), None).unwrap_err().0.contains_key("body"));
        assert!(parse_value(json!({"method": "PUT", "body": 5}), None).is_err());
        assert_eq!(parse_value(json!({"body_secret": true}), None).unwrap().body, None);
    }

    #[test]
    fn each_bad_header_is_named_without_its_value() {
        let errors = parse_value(
            json!({"headers": [
                {"name": "Host", "value": "evil.test"},
                {"name": "X-Bad", "value": "a\r\nInjected: leaked-value"},
                {"name": "bad name", "value": "x"},
                {"value": "x"},
                {"name": "Authorization", "value": "Basic x", "secret": false},
                {"name": "X-Ok", "value": "1", "colour": "red"},
                {"name": "x-ok", "value": "2"},
                "X-String: 1",
                {"name": "X-Missing"}
            ]}),
            None,
        )
        .unwrap_err();
        let fields: Vec<_> = errors.0.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "headers[0].name",
                "headers[1].value",
                "headers[2].name",
                "headers[3].name",
                "headers[4].secret",
                "headers[5].colour",
                "headers[6].name",
                "headers[7]",
                "headers[8].value"
            ]
        );
        assert_eq!(errors.0["headers[0].name"], "Host cannot be set: the prober sets Host from the URL");
        assert!(!format!("{errors:?}").contains("leaked-value"));
        let too_many: Vec<Value> =
            (0..=MAX_HEADERS).map(|i| json!({"name": format!("X-{i}"), "value": "v"})).collect();
        assert_eq!(
            parse_value(json!({"headers": too_many}), None).unwrap_err().0["headers"],
            "at most 32 headers"
        );
        let large: Vec<Value> =
            (0..5).map(|i| json!({"name": format!("X-{i}"), "value": "v".repeat(4000)})).collect();
        assert!(parse_value(json!({"headers": large}), None).unwrap_err().0["headers"].contains("total"));
        assert!(parse_value(json!({"headers": {"X-A": "1"}}), None).unwrap_err().0.contains_key("headers"));
    }

    #[test]
    fn each_bad_auth_field_is_named() {
        for (auth, field) in [
            (json!("Bearer x"), "auth"),
            (json!({"kind": "digest"}), "auth.kind"),
            (json!({"kind": "basic", "password": "p"}), "auth.username"),
            (json!({"kind": "basic", "username": "a:b", "password": "p"}), "auth.username"),
            (json!({"kind": "basic", "username": "u"}), "auth.password"),
            (json!({"kind": "basic", "username": "u", "password": "p\n"}), "auth.password"),
            (json!({"kind": "bearer"}), "auth.token"),
            (json!({"kind": "bearer", "token": "two words"}), "auth.token"),
            (json!({"kind": "bearer", "token": "t", "username": "u"}), "auth.username"),
        ] {
            let errors = parse_value(json!({"auth": auth}), None).unwrap_err();
            assert!(errors.0.contains_key(field), "{auth}: {errors:?}");
            assert!(!format!("{errors:?}").contains("two words"));
        }
        let both = parse_value(
            json!({"auth": {"kind": "bearer", "token": "t"}, "headers": [{"name": "authorization", "value": "x"}]}),
            None,
        )
        .unwrap_err();
        assert_eq!(both.0["auth"], "set either auth or an Authorization header, not both");
    }

    #[test]
    fn an_update_without_a_secret_keeps_the_stored_one() {
        let kept = stored();
        let updated = parse_value(
            json!({
                "method": "POST",
                "headers": [{"name": "x-api-key"}, {"name": "Cookie", "secret": true}, {"name": "X-New", "value": "n"}],
                "auth": {"kind": "basic", "username": "ops2"}
            }),
            Some(&kept),
        )
        .unwrap();
        assert_eq!(updated.headers[0].value, "key-1");
        assert!(updated.headers[0].secret);
        assert_eq!(updated.headers[1].value, "sid=cookie-1");
        assert_eq!(
            updated.auth,
            Some(Auth::Basic { username: "ops2".into(), password: Secret::new("pw-1") })
        );
        // Not kept: a visible header's value, a header that was not stored, another auth kind,
        // and a secret turned visible without its value.
        for (request, field) in [
            (json!({"headers": [{"name": "X-Trace"}]}), "headers[0].value"),
            (json!({"headers": [{"name": "X-Other"}]}), "headers[0].value"),
            (json!({"auth": {"kind": "bearer"}}), "auth.token"),
            (json!({"headers": [{"name": "X-Api-Key", "secret": false}]}), "headers[0].value"),
        ] {
            let errors = parse_value(request.clone(), Some(&kept)).unwrap_err();
            assert!(errors.0.contains_key(field), "{request}: {errors:?}");
        }
        let bearer = parse_value(json!({"auth": {"kind": "bearer", "token": "tok-1"}}), None).unwrap();
        let again = parse_value(json!({"auth": {"kind": "bearer"}}), Some(&bearer)).unwrap();
        assert_eq!(again.auth, bearer.auth);
    }
}
