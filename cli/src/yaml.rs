//! Reading and writing the configuration file's YAML.
//!
//! [`load`] parses one YAML document into a JSON value (the shape the REST API speaks) and
//! remembers the line of every node by its path (`domains[2].flap.enter_transitions`), so every
//! problem found later, by the file's own checks or by the server's 422, can name its line.
//! [`emit`] writes a JSON value back as block-style YAML that [`load`] reads as the same value.

use std::collections::BTreeMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

/// A parsed document: its value and the 1-based line of each node, by path.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub value: Value,
    /// `""` is the document; `domains[0]` a list item; `domains[0].url` a key's value.
    pub lines: BTreeMap<String, usize>,
}

impl Doc {
    /// The line of `path`, or of its nearest ancestor that has one (a field the file does not
    /// give is reported on the line of the resource that lacks it).
    pub fn line(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return *line;
            }
            match path.rfind(['.', '[']) {
                Some(at) => path = &path[..at],
                None => return self.lines.get("").copied().unwrap_or(1),
            }
        }
    }
}

/// A YAML syntax problem (or a construct the file does not allow), at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parses `source`: exactly one document (an empty file is an empty mapping); mapping keys are
/// strings; no tags or unresolved aliases. Errors: the first problem, with its line.
pub fn load(source: &str) -> Result<Doc, SyntaxError> {
    let docs = MarkedYaml::load_from_str(source)
        .map_err(|e| SyntaxError { line: e.marker().line(), message: e.info().to_owned() })?;
    let mut doc = Doc::default();
    match docs.len() {
        0 => {
            doc.value = Value::Object(Map::new());
            doc.lines.insert(String::new(), 1);
        }
        1 => doc.value = convert(&docs[0], String::new(), &mut doc.lines)?,
        _ => {
            let line = docs[1].span.start.line();
            return Err(SyntaxError { line, message: "only one YAML document is allowed".into() });
        }
    }
    Ok(doc)
}

fn convert(
    node: &MarkedYaml<'_>,
    path: String,
    lines: &mut BTreeMap<String, usize>,
) -> Result<Value, SyntaxError> {
    let line = node.span.start.line().max(1);
    lines.insert(path.clone(), line);
    let fail = |message: &str| Err(SyntaxError { line, message: message.to_owned() });
    match &node.data {
        YamlData::Value(scalar) => Ok(match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::from(*i),
            Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
                Some(n) => Value::Number(n),
                None => return fail("not a finite number"),
            },
            Scalar::String(s) => Value::String(s.to_string()),
        }),
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(convert(item, format!("{path}[{i}]"), lines)?);
            }
            Ok(Value::Array(out))
        }
        YamlData::Mapping(entries) => {
            let mut out = Map::new();
            for (key, value) in entries {
                let name = match &key.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    _ => {
                        let line = key.span.start.line().max(1);
                        return Err(SyntaxError { line, message: "a key must be a string".into() });
                    }
                };
                let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                // The key's line: a block value starts on the next line.
                let value = convert(value, child.clone(), lines)?;
                lines.insert(child, key.span.start.line().max(1));
                out.insert(name, value);
            }
            Ok(Value::Object(out))
        }
        YamlData::Tagged(..) => fail("YAML tags are not used in this file"),
        YamlData::Alias(_) => fail("unresolved alias"),
        YamlData::Representation(..) | YamlData::BadValue => fail("not a valid value"),
    }
}

/// Writes `value` as block-style YAML (two-space indents, lists under their key), strings
/// quoted whenever a plain scalar would read as something else.
pub fn emit(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => emit_map(map, 0, &mut out),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn emit_map(map: &Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_string(key));
        out.push(':');
        emit_child(value, indent, out);
    }
}

/// The value after `key:` or `- `: inline when scalar or empty, else a block on the next lines.
fn emit_child(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            emit_map(map, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            emit_list(items, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn emit_list(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key on the dash's line, the rest aligned under it.
                let mut first = true;
                for (key, value) in map {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    out.push_str(&scalar_string(key));
                    out.push(':');
                    emit_child(value, indent + 2, out);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_list(inner, indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Array(items) if items.is_empty() => "[]".into(),
        Value::Object(map) if map.is_empty() => "{}".into(),
        // Only reached for nested non-empty collections inside flow context, which `emit`
        // never produces; JSON is valid YAML flow syntax.
        other => other.to_string(),
    }
}

/// `s` plain when it reads back as the same string, else double-quoted with JSON escapes
/// (which YAML's double-quoted style shares).
fn scalar_string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let reserved_first = "-?:,[]{}#&*!|>'\"%@`~ ".contains(first);
    let safe_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@+=;()".contains(c));
    // Anything YAML 1.2's core schema would read as null, a boolean or a number.
    let looks_typed = matches!(
        s.to_ascii_lowercase().as_str(),
        "null" | "true" | "false" | "~" | "yes" | "no" | "on" | "off"
    ) || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o")
        || s.starts_with('.');
    !reserved_first
        && safe_chars
        && !looks_typed
        && !s.contains(": ")
        && !s.ends_with(':')
        && !s.contains(" #")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_kept_by_path() {
        let doc = load(
            "domains:\n  - url: https://a.example.com/\n    flap:\n      enter_transitions: 3\n  - name: b\n",
        )
        .unwrap();
        assert_eq!(doc.value["domains"][0]["flap"]["enter_transitions"], json!(3));
        assert_eq!(doc.line("domains[0]"), 2);
        assert_eq!(doc.line("domains[0].url"), 2);
        assert_eq!(doc.line("domains[0].flap"), 3);
        assert_eq!(doc.line("domains[0].flap.enter_transitions"), 4);
        assert_eq!(doc.line("domains[1].name"), 5);
        assert_eq!(doc.line("domains[1].timeout_ms"), 5, "a missing field: its resource's line");
    }

    #[test]
    fn syntax_errors_and_forbidden_constructs_name_their_line() {
        assert_eq!(load("a: 1\nb: [\n").unwrap_err().line, 3);
        let duplicate = load("a: 1\na: 2\n").unwrap_err();
        assert!(duplicate.message.contains("duplicate"), "{duplicate:?}");
        assert_eq!(load("a: 1\n---\nb: 2\n").unwrap_err().line, 3);
        assert_eq!(load("x:\n  ? [1]\n  : 2\n").unwrap_err().message, "a key must be a string");
        assert!(load("").unwrap().value.as_object().unwrap().is_empty());
    }

    #[test]
    fn emitted_yaml_reads_back_as_the_same_value() {
        let value = json!({
            "domains": [
                {"name": "api", "url": "https://api.example.com/health?x=1", "tags": ["prod", "eu"],
                 "headers": [{"name": "X-Trace", "value": "on"}], "flap": {"enter_transitions": 3},
                 "regions": [], "dns_drift": {}, "quorum": null, "paused": true, "interval": 30},
                {"name": "yes", "keyword": "status: ok", "body": "{\"q\": 1}\n", "expected_status": "200",
                 "check": {"type": "tcp", "host": "db.example.com", "port": 5432, "send": "PING\r\n"},
                 "weird": ["- a", "#b", "c #d", "true", "1.5", "", " lead", "trail ", "ünï", "a:b", ":x", "~", "0x1f"]},
            ],
            "channels": [],
            "slo": {"target": 99.9},
        });
        let text = emit(&value);
        assert_eq!(load(&text).unwrap().value, value, "{text}");
    }
}
