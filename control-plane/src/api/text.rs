//! Text at the edge: the one screen every JSON request body and every query string passes
//! before a handler runs, so no text a client sends reaches a query unless it is storable and
//! sensible.
//!
//! The rules, each refused as a 422 naming the field by its path (`components[2].name`,
//! `headers[0].value`, a query parameter by its name):
//! - a NUL character (`\u0000`) anywhere, in a value or in a key: PostgreSQL cannot store it;
//! - any other control character (C0, DEL, C1) in a single-line field; the multi-line fields
//!   ([`MULTI_LINE`]: notes, messages, descriptions, a probe's request body, a JSON assertion's
//!   expected values) take line feeds, carriage returns and tabs, and no other; a probe's
//!   request headers ([`TABS`]) take tabs, as HTTP field values may;
//! - a string longer than [`MAX_STRING_CHARS`] characters, an array of more than
//!   [`MAX_ARRAY_ITEMS`] items, nesting deeper than [`MAX_DEPTH`], a query value longer than
//!   [`MAX_QUERY_CHARS`].
//!
//! The parsers behind the handlers keep their own, tighter rules per field (a name's 200
//! characters, a tag's pattern); this screen is what holds for every field, including those a
//! parser forgets.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Longest string anywhere in a request body, in characters.
pub const MAX_STRING_CHARS: usize = 16_384;
/// Most items of any array in a request body.
pub const MAX_ARRAY_ITEMS: usize = 1_000;
/// Deepest nesting of arrays and objects in a request body.
pub const MAX_DEPTH: usize = 16;
/// Longest query parameter value, in characters.
pub const MAX_QUERY_CHARS: usize = 1_024;
/// The top-level body fields whose text may span lines (`\n`, `\r`, `\t`).
pub const MULTI_LINE: [&str; 5] = ["description", "message", "note", "body", "json"];
/// The top-level body fields whose text may hold tabs (HTTP field values).
pub const TABS: [&str; 1] = ["headers"];

/// Which control characters a field's text may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lines {
    /// None.
    Single,
    /// Tabs.
    Tabs,
    /// Line feeds, carriage returns and tabs.
    Multi,
}

/// The problems of `body`, by field path; empty when every string in it passes.
pub fn screen_body(body: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut errors = BTreeMap::new();
    for (key, value) in body {
        let path = key_path("", key, &mut errors);
        let lines = if MULTI_LINE.contains(&key.as_str()) {
            Lines::Multi
        } else if TABS.contains(&key.as_str()) {
            Lines::Tabs
        } else {
            Lines::Single
        };
        screen_value(&path, value, lines, 1, &mut errors);
    }
    errors
}

/// The problems of a query string's parameters, by name.
pub fn screen_query<'a>(
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<String, String> {
    let mut errors = BTreeMap::new();
    for (key, value) in params {
        let name = key_path("", key, &mut errors);
        if let Err(message) = check_line(value, MAX_QUERY_CHARS) {
            errors.entry(name).or_insert(message);
        }
    }
    errors
}

/// `s` as a single-line text of at most `max` characters, or why not.
pub fn check_line(s: &str, max: usize) -> Result<(), String> {
    check(s, max, Lines::Single)
}

/// `s` as a multi-line text (line feeds, carriage returns and tabs allowed) of at most `max`
/// characters, or why not.
pub fn check_lines(s: &str, max: usize) -> Result<(), String> {
    check(s, max, Lines::Multi)
}

fn check(s: &str, max: usize, lines: Lines) -> Result<(), String> {
    if s.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    let allowed = |c: char| match lines {
        Lines::Single => false,
        Lines::Tabs => c == '\t',
        Lines::Multi => matches!(c, '\n' | '\r' | '\t'),
    };
    if s.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(match lines {
            Lines::Single => "must not contain control characters".into(),
            Lines::Tabs => "must not contain control characters other than tabs".into(),
            Lines::Multi => "must not contain control characters other than line breaks and tabs".into(),
        });
    }
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(())
}

/// The path of `key` under `parent`; a key holding a control character is itself an error,
/// named in its escaped form (the error map is JSON, the client's own text is echoed visibly).
fn key_path(parent: &str, key: &str, errors: &mut BTreeMap<String, String>) -> String {
    let shown: String =
        if key.chars().any(char::is_control) { key.escape_debug().collect() } else { key.into() };
    let path = if parent.is_empty() { shown } else { format!("{parent}.{shown}") };
    if let Err(message) = check_line(key, 200) {
        errors.entry(path.clone()).or_insert(format!("field name {message}"));
    }
    path
}

fn screen_value(
    path: &str,
    value: &Value,
    lines: Lines,
    depth: usize,
    errors: &mut BTreeMap<String, String>,
) {
    match value {
        Value::String(s) => {
            if let Err(message) = check(s, MAX_STRING_CHARS, lines) {
                errors.entry(path.to_owned()).or_insert(message);
            }
        }
        Value::Array(items) if depth >= MAX_DEPTH || items.len() > MAX_ARRAY_ITEMS => {
            let message = if items.len() > MAX_ARRAY_ITEMS {
                format!("must have at most {MAX_ARRAY_ITEMS} items")
            } else {
                format!("must not nest deeper than {MAX_DEPTH} levels")
            };
            errors.entry(path.to_owned()).or_insert(message);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                screen_value(&format!("{path}[{i}]"), item, lines, depth + 1, errors);
            }
        }
        Value::Object(_) if depth >= MAX_DEPTH => {
            errors.entry(path.to_owned()).or_insert(format!("must not nest deeper than {MAX_DEPTH} levels"));
        }
        Value::Object(map) => {
            for (key, item) in map {
                let child = key_path(path, key, errors);
                screen_value(&child, item, lines, depth + 1, errors);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn screened(body: Value) -> BTreeMap<String, String> {
        screen_body(body.as_object().unwrap())
    }

    #[test]
    fn nul_is_refused_everywhere_by_path() {
        let errors = screened(json!({
            "name": "a\u{0}b",
            "note": "line\u{0}",
            "headers": [{"name": "x", "value": "v\u{0}"}],
            "tags": ["ok", "b\u{0}"],
            "check": {"servers": ["\u{0}"]},
        }));
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["check.servers[0]", "headers[0].value", "name", "note", "tags[1]"]);
        assert!(errors.values().all(|m| m.contains("NUL")), "{errors:?}");
    }

    #[test]
    fn control_characters_are_refused_outside_multi_line_fields() {
        let errors = screened(json!({
            "name": "a\u{1b}[31m",
            "title": "two\nlines",
            "description": "two\r\nlines\tand a tab",
            "message": "bell\u{7}",
            "slug": "del\u{7f}",
            "group": "c1\u{85}",
            "headers": [{"name": "x-a", "value": "a\tb"}, {"name": "x-b", "value": "a\nb"}],
        }));
        assert!(!errors.contains_key("headers[0].value"), "a header value may hold a tab");
        assert!(errors["headers[1].value"].contains("other than tabs"));
        assert_eq!(errors.get("name").map(String::as_str), Some("must not contain control characters"));
        assert!(errors.contains_key("title"), "a title is one line");
        assert!(!errors.contains_key("description"), "{errors:?}");
        assert!(errors["message"].contains("other than line breaks"));
        assert!(errors.contains_key("slug") && errors.contains_key("group"));
    }

    #[test]
    fn long_strings_long_arrays_and_deep_nesting_are_refused() {
        let long = "x".repeat(MAX_STRING_CHARS + 1);
        let mut deep = json!("leaf");
        for _ in 0..MAX_DEPTH + 1 {
            deep = json!([deep]);
        }
        let errors = screened(json!({
            "keyword": long,
            "regions": vec!["ams"; MAX_ARRAY_ITEMS + 1],
            "deep": deep,
            "fine": "x".repeat(MAX_STRING_CHARS),
        }));
        assert_eq!(errors["keyword"], format!("must be at most {MAX_STRING_CHARS} characters"));
        assert_eq!(errors["regions"], format!("must have at most {MAX_ARRAY_ITEMS} items"));
        assert!(errors.keys().any(|k| k.starts_with("deep") && errors[k].contains("nest")), "{errors:?}");
        assert!(!errors.contains_key("fine"));
    }

    #[test]
    fn keys_with_control_characters_are_named_escaped() {
        let errors = screened(json!({"a\u{0}": 1, "ok": {"b\u{1}": true}}));
        assert!(errors.contains_key("a\\0"), "{errors:?}");
        assert!(errors.contains_key("ok.b\\u{1}"), "{errors:?}");
    }

    #[test]
    fn query_values_are_single_line_and_bounded() {
        let params: Vec<(String, String)> = vec![
            ("tag".into(), "a\u{0}".into()),
            ("cursor".into(), "x".repeat(MAX_QUERY_CHARS + 1)),
            ("limit".into(), "10".into()),
        ];
        let errors = screen_query(params.iter().map(|(k, v)| (k, v)));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors["tag"].contains("NUL"));
        assert!(errors["cursor"].contains("at most"));
    }
}
