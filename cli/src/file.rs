//! The configuration file: reading it into the resources it declares, checking what the client
//! itself must understand (sections, keys, resource keys, references, secrets), and naming every
//! problem by line and field. Values the server checks (an interval's range, a check's
//! settings) are left to it: its 422 is mapped back to the file's lines ([`File::locate`]).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::resources::{self, Kind};
use crate::yaml::{self, Doc};

/// One resource the file declares, in canonical file form.
#[derive(Debug, Clone)]
pub struct Declared {
    pub kind: Kind,
    /// What identifies it (see [`Kind::key_field`]).
    pub key: String,
    /// Where it is in the document: `domains[2]`.
    pub path: String,
    pub fields: Map<String, Value>,
}

/// A read and checked configuration file.
#[derive(Debug, Clone)]
pub struct File {
    /// The name problems are reported under.
    pub name: String,
    pub doc: Doc,
    pub resources: Vec<Declared>,
}

/// A problem in the file: `name:line: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    /// The field's path in the document (`domains[0].interval`); empty for the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.file, self.line, self.path, self.message)
        }
    }
}

/// Problems found while reading a file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Literal secrets the file may not hold, and the key to use instead.
const LITERAL_SECRETS: [(&str, &str); 5] = [
    ("routing_key", "routing_key_env"),
    ("bot_token", "bot_token_env"),
    ("token", "token_env"),
    ("password", "password_env"),
    ("body_secret", "body_env"),
];

impl File {
    /// Reads `source` (named `name` in problems). Errors: every problem found, in line order.
    pub fn parse(name: &str, source: &str) -> Result<File, Problems> {
        let doc = yaml::load(source).map_err(|e| {
            Problems(vec![Problem {
                file: name.into(),
                line: e.line,
                path: String::new(),
                message: e.message,
            }])
        })?;
        let mut checker = Checker { name, doc: &doc, problems: Vec::new() };
        let resources = checker.resources();
        let mut problems = checker.problems;
        if problems.is_empty() {
            Ok(File { name: name.into(), doc, resources })
        } else {
            problems.sort_by_key(|p| p.line);
            Err(Problems(problems))
        }
    }

    /// A problem at `path` (the line of the nearest node the document has).
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: self.name.clone(),
            line: self.doc.line(path),
            path: path.into(),
            message: message.into(),
        }
    }

    /// Maps a field the API named in a 422 for the resource at `resource_path` to the file's
    /// path of it: `headers[1].value` is given as `headers[1].value_env`, `routing_key` as
    /// `routing_key_env`, a maintenance window's `scope.domain_ids[0]` as `scope.domains[0]`.
    pub fn locate(&self, resource_path: &str, api_field: &str) -> String {
        let field = api_field.replace("domain_ids", "domains");
        // A header's `secret` flag is the file's choice of `value` or `value_env`.
        let header_value =
            field.strip_suffix(".secret").map(|h| format!("{h}.value")).unwrap_or_else(|| field.clone());
        let candidates = [
            field.clone(),
            format!("{field}_env"),
            field.replace("body_secret", "body_env"),
            header_value.clone(),
            format!("{header_value}_env"),
        ];
        for candidate in &candidates {
            let path = format!("{resource_path}.{candidate}");
            if self.doc.lines.contains_key(&path) {
                return path;
            }
        }
        format!("{resource_path}.{field}")
    }

    /// Every `*_env` reference whose variable `env` does not have, as problems.
    pub fn missing_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        let mut out = Vec::new();
        for resource in &self.resources {
            env_refs(&resource.path, &Value::Object(resource.fields.clone()), &mut |path, var| {
                if env(var).is_none_or(|v| v.is_empty()) {
                    out.push(self.problem(path, format!("environment variable {var} is not set")));
                }
            });
        }
        out
    }
}

fn env_refs(path: &str, value: &Value, found: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let child = format!("{path}.{k}");
                match (k.ends_with("_env"), v) {
                    (true, Value::String(var)) => found(&child, var),
                    _ => env_refs(&child, v, found),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                env_refs(&format!("{path}[{i}]"), v, found);
            }
        }
        _ => {}
    }
}

struct Checker<'a> {
    name: &'a str,
    doc: &'a Doc,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.name.into(),
            line: self.doc.line(path),
            path: path.into(),
            message: message.into(),
        });
    }

    /// Unknown keys of the object at `path` are problems (with what is known).
    fn keys(&mut self, path: &str, map: &Map<String, Value>, known: &[&str]) {
        for key in map.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let at = format!("{path}.{key}");
            match LITERAL_SECRETS.iter().find(|(literal, _)| literal == key) {
                Some((_, env)) => self.add(
                    &at,
                    format!("secrets are not written in the file: give {env}: NAME, the environment variable holding it"),
                ),
                None => self.add(&at, format!("unknown key; known: {}", known.join(", "))),
            }
        }
    }

    fn env_name(&mut self, path: &str, value: &Value) {
        let ok = value.as_str().is_some_and(|s| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !ok {
            self.add(path, "must be the name of an environment variable (letters, digits and _)");
        }
    }

    fn resources(&mut self) -> Vec<Declared> {
        let Some(root) = self.doc.value.as_object() else {
            self.add("", "the file must be a mapping with domains, channels, status_pages and maintenance");
            return Vec::new();
        };
        let sections: Vec<&str> = Kind::ALL.iter().map(|k| k.section()).collect();
        self.keys_top(root, &sections);
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let items = match root.get(kind.section()) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(items)) => items,
                Some(_) => {
                    self.add(kind.section(), format!("must be a list of {}s", kind.noun()));
                    continue;
                }
            };
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("{}[{i}]", kind.section());
                let Some(map) = item.as_object() else {
                    self.add(&path, format!("must be a mapping: a {}", kind.noun()));
                    continue;
                };
                self.keys(&path, map, kind.fields());
                self.check(kind, &path, map);
                let fields = resources::canonical(kind, map);
                let Some(key) = resources::key_of(kind, &fields) else {
                    let message = match kind {
                        Kind::Domain => {
                            "a domain needs a name, a url, or a check with its host and port (or name)".into()
                        }
                        other => format!("required: the {} that identifies it", other.key_field()),
                    };
                    let field = if kind == Kind::Domain {
                        path.clone()
                    } else {
                        format!("{path}.{}", kind.key_field())
                    };
                    self.add(&field, message);
                    continue;
                };
                if let Some(first) = seen.get(&key) {
                    let line = self.doc.line(first);
                    self.add(
                        &path,
                        format!("{} {key:?} is declared twice (first at line {line})", kind.noun()),
                    );
                    continue;
                }
                seen.insert(key.clone(), path.clone());
                out.push(Declared { kind, key, path, fields });
            }
        }
        let domains: Vec<String> =
            out.iter().filter(|r| r.kind == Kind::Domain).map(|r| r.key.clone()).collect();
        for resource in &out {
            self.references(resource, &domains);
        }
        out
    }

    fn keys_top(&mut self, root: &Map<String, Value>, sections: &[&str]) {
        for key in root.keys().filter(|k| !sections.contains(&k.as_str())) {
            self.add(key, format!("unknown key; known: {}", sections.join(", ")));
        }
    }

    /// The checks beyond the keys that the client needs to be sure of.
    fn check(&mut self, kind: Kind, path: &str, map: &Map<String, Value>) {
        for (key, value) in map {
            if key.ends_with("_env") {
                self.env_name(&format!("{path}.{key}"), value);
            }
        }
        let text_key = kind.key_field();
        if map.get(text_key).is_some_and(|v| !v.is_null() && !v.is_string()) {
            self.add(&format!("{path}.{text_key}"), "must be a string");
        }
        match kind {
            Kind::Domain => {
                let check_type = map.get("check").and_then(|c| c.get("type")).and_then(Value::as_str);
                if let Some(kind) = check_type.filter(|t| *t != "http") {
                    for key in resources::HTTP_ONLY.iter().filter(|k| map.contains_key(**k)) {
                        self.add(
                            &format!("{path}.{key}"),
                            format!("only an http check has it; this is a {kind} check"),
                        );
                    }
                }
                if let Some(Value::Array(headers)) = map.get("headers") {
                    for (i, h) in headers.iter().enumerate() {
                        let at = format!("{path}.headers[{i}]");
                        let Some(h) = h.as_object() else {
                            self.add(&at, "must be {name, value} or {name, value_env}");
                            continue;
                        };
                        self.keys(&at, h, &["name", "value", "value_env"]);
                        match (h.get("value"), h.get("value_env")) {
                            (Some(_), Some(_)) => self.add(&at, "give value or value_env, not both"),
                            (None, None) => self.add(&at, "required: value, or value_env naming the environment variable holding a secret value"),
                            (_, Some(var)) => self.env_name(&format!("{at}.value_env"), var),
                            _ => {}
                        }
                    }
                }
                if let Some(Value::Object(auth)) = map.get("auth") {
                    let at = format!("{path}.auth");
                    self.keys(&at, auth, &["kind", "username", "password_env", "token_env"]);
                    for key in ["password_env", "token_env"] {
                        if let Some(var) = auth.get(key) {
                            self.env_name(&format!("{at}.{key}"), var);
                        }
                    }
                }
                if map.contains_key("body") && map.contains_key("body_env") {
                    self.add(&format!("{path}.body_env"), "give body or body_env, not both");
                }
            }
            Kind::Channel => {
                let kind_name = map.get("kind").and_then(Value::as_str).unwrap_or("");
                if resources::URL_IS_SECRET.contains(&kind_name) && map.contains_key("url") {
                    self.add(
                        &format!("{path}.url"),
                        format!("a {kind_name} URL carries its token: give url_env: NAME, the environment variable holding it"),
                    );
                }
                if map.contains_key("url") && map.contains_key("url_env") {
                    self.add(&format!("{path}.url_env"), "give url or url_env, not both");
                }
                for key in ["routing_key_env", "bot_token_env", "token_env"] {
                    if map.contains_key(key) && resources::channel_secret_field(kind_name) != Some(key) {
                        self.add(&format!("{path}.{key}"), format!("not a field of {kind_name} channels"));
                    }
                }
            }
            Kind::StatusPage => {
                if let Some(Value::Array(components)) = map.get("components") {
                    for (i, c) in components.iter().enumerate() {
                        let at = format!("{path}.components[{i}]");
                        match c.as_object() {
                            Some(c) => self.keys(&at, c, &["domain", "name", "group", "reveal"]),
                            None => self.add(&at, "must be {domain, name, group, reveal}"),
                        }
                    }
                }
            }
            Kind::Maintenance => {
                if let Some(scope) = map.get("scope") {
                    match scope.as_object() {
                        Some(s) => self.keys(&format!("{path}.scope"), s, &["domains", "tags"]),
                        None => self.add(&format!("{path}.scope"), "must be {domains: [...], tags: [...]}"),
                    }
                }
            }
        }
    }

    /// Domain references (a status page's components, a window's scope) name declared domains.
    fn references(&mut self, resource: &Declared, domains: &[String]) {
        let refs: Vec<(String, &Value)> = match resource.kind {
            Kind::StatusPage => resource
                .fields
                .get("components")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, c)| c.get("domain").map(|d| (format!("components[{i}].domain"), d)))
                .collect(),
            Kind::Maintenance => resource
                .fields
                .get("scope")
                .and_then(|s| s.get("domains"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, d)| (format!("scope.domains[{i}]"), d))
                .collect(),
            _ => Vec::new(),
        };
        for (field, value) in refs {
            let known = value.as_str().is_some_and(|k| domains.iter().any(|d| d == k));
            if !known {
                // Sorting may have moved the entry: report it on the list's line.
                let path = format!("{}.{field}", resource.path);
                let at = if self.doc.lines.contains_key(&path) {
                    path
                } else {
                    format!("{}.{}", resource.path, field.split('[').next().unwrap_or(""))
                };
                self.add(
                    &at,
                    format!(
                        "{value} is not a domain of this file (a domain is named by its name, else its url)"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(source: &str) -> Vec<String> {
        File::parse("c.yaml", source).unwrap_err().0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unknown_keys_and_literal_secrets_are_named_with_their_line() {
        let got = problems(
            "domains:\n  - url: https://a.example.com/\n    intervall: 30\nchannels:\n  - name: pd\n    kind: pagerduty\n    routing_key: abc\n  - name: s\n    kind: slack\n    url: https://hooks.slack.com/x\nwidgets: []\n",
        );
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[0].starts_with("c.yaml:3: domains[0].intervall: unknown key; known: name, url,"),
            "{got:?}"
        );
        assert!(got[1].starts_with("c.yaml:7: channels[0].routing_key: secrets are not written in the file: give routing_key_env"), "{got:?}");
        assert!(got[2].starts_with("c.yaml:10: channels[1].url: a slack URL carries its token"), "{got:?}");
        assert!(got[3].starts_with("c.yaml:11: widgets: unknown key"), "{got:?}");
    }

    #[test]
    fn keys_are_unique_and_references_resolve() {
        let got = problems(
            "domains:\n  - name: api\n    url: https://a.example.com/\n  - name: api\n    url: https://b.example.com/\nstatus_pages:\n  - slug: s\n    title: S\n    components:\n      - domain: nope\n        name: N\n",
        );
        assert_eq!(got[0], "c.yaml:4: domains[1]: domain \"api\" is declared twice (first at line 2)");
        assert_eq!(got[1], "c.yaml:10: status_pages[0].components[0].domain: \"nope\" is not a domain of this file (a domain is named by its name, else its url)");
    }

    #[test]
    fn env_references_are_names_and_missing_ones_are_reported() {
        let got = problems("channels:\n  - name: pd\n    kind: pagerduty\n    routing_key_env: not a name\n");
        assert_eq!(got, ["c.yaml:4: channels[0].routing_key_env: must be the name of an environment variable (letters, digits and _)"]);
        let file = File::parse(
            "c.yaml",
            "domains:\n  - url: https://a.example.com/\n    method: POST\n    headers:\n      - name: X-Key\n        value_env: KEY\n    body_env: BODY\n",
        )
        .unwrap();
        let env = |name: &str| (name == "BODY").then(|| "{}".to_owned());
        let missing: Vec<String> = file.missing_env(&env).iter().map(ToString::to_string).collect();
        assert_eq!(
            missing,
            ["c.yaml:6: domains[0].headers[0].value_env: environment variable KEY is not set"]
        );
    }

    #[test]
    fn api_fields_are_located_in_the_file() {
        let file = File::parse(
            "c.yaml",
            "domains:\n  - url: https://a.example.com/\n    flap:\n      enter_transitions: 99\n    auth:\n      kind: bearer\n      token_env: T\n",
        )
        .unwrap();
        let at = file.locate("domains[0]", "flap.enter_transitions");
        assert_eq!((at.as_str(), file.doc.line(&at)), ("domains[0].flap.enter_transitions", 4));
        let at = file.locate("domains[0]", "auth.token");
        assert_eq!((at.as_str(), file.doc.line(&at)), ("domains[0].auth.token_env", 7));
        let at = file.locate("domains[0]", "timeout_ms");
        assert_eq!(file.doc.line(&at), 2, "a field the file does not give: the resource's line");
    }
}
