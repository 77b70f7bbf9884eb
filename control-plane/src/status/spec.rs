//! Parsing a status page request (`POST` / `PATCH /v1/status-pages`) into a [`PageSpec`],
//! naming every bad field (`components[2].reveal[0]`). Whether a component's domain belongs to
//! the tenant is checked by the store, against the database.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domains::FieldErrors;

/// Most components on one page.
pub const MAX_COMPONENTS: usize = 500;
/// Most custom hostnames of one page.
pub const MAX_HOSTNAMES: usize = 10;
/// What a component may reveal beyond its name and state.
pub const REVEALABLE: [&str; 3] = ["url", "regions", "errors"];

/// A page's settings, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PageSpec {
    pub slug: String,
    pub title: String,
    pub description: Option<String>,
    pub hostnames: Vec<String>,
    pub components: Vec<ComponentSpec>,
}

/// One component: a domain of the tenant under a display name.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    pub domain: Uuid,
    pub name: String,
    pub group: Option<String>,
    /// Sorted, each of [`REVEALABLE`].
    pub reveal: Vec<String>,
}

const FIELDS: [&str; 5] = ["slug", "title", "description", "hostnames", "components"];
const COMPONENT_FIELDS: [&str; 4] = ["domain", "name", "group", "reveal"];

impl PageSpec {
    /// Parses a whole page (`POST`): `slug`, `title` and `components` required.
    pub fn parse(body: &Map<String, Value>) -> Result<Self, FieldErrors> {
        Self::parse_over(body, None)
    }

    /// Parses `body` over `current` (`PATCH`): fields left out keep their value; `components`
    /// and `hostnames`, when given, replace the whole list.
    pub fn parse_over(body: &Map<String, Value>, current: Option<&PageSpec>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        for key in body.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            errors.add(key, "unknown field");
        }
        let slug = match (body.get("slug"), current) {
            (Some(v), _) => slug(v, &mut errors),
            (None, Some(c)) => Some(c.slug.clone()),
            (None, None) => {
                errors.add("slug", "required");
                None
            }
        };
        let title = match (body.get("title"), current) {
            (Some(v), _) => text(v, "title", 200, &mut errors),
            (None, Some(c)) => Some(c.title.clone()),
            (None, None) => {
                errors.add("title", "required");
                None
            }
        };
        let description = match (body.get("description"), current) {
            (Some(Value::Null), _) => Some(None),
            (Some(v), _) => text(v, "description", 2_000, &mut errors).map(Some),
            (None, Some(c)) => Some(c.description.clone()),
            (None, None) => Some(None),
        };
        let hostnames = match (body.get("hostnames"), current) {
            (Some(v), _) => hostnames(v, &mut errors),
            (None, Some(c)) => Some(c.hostnames.clone()),
            (None, None) => Some(Vec::new()),
        };
        let components = match (body.get("components"), current) {
            (Some(v), _) => components(v, &mut errors),
            (None, Some(c)) => Some(c.components.clone()),
            (None, None) => {
                errors.add("components", "required (a list of {\"domain\", \"name\"})");
                None
            }
        };
        match (slug, title, description, hostnames, components) {
            (Some(slug), Some(title), Some(description), Some(hostnames), Some(components))
                if errors.is_empty() =>
            {
                Ok(PageSpec { slug, title, description, hostnames, components })
            }
            _ => Err(errors),
        }
    }
}

fn slug(value: &Value, errors: &mut FieldErrors) -> Option<String> {
    let rule = "must be 1 to 63 lowercase letters, digits and hyphens, not starting or ending with a hyphen";
    let Some(raw) = value.as_str() else {
        errors.add("slug", rule);
        return None;
    };
    let ok = (1..=63).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if !ok {
        errors.add("slug", rule);
        return None;
    }
    Some(raw.to_owned())
}

fn text(value: &Value, field: &str, max: usize, errors: &mut FieldErrors) -> Option<String> {
    // Only a description may run over several lines.
    let multiline = field == "description";
    let Some(s) = value.as_str().map(str::trim) else {
        errors.add(field, format!("must be a non-empty string of at most {max} characters"));
        return None;
    };
    if s.is_empty() || s.chars().count() > max {
        errors.add(field, format!("must be a non-empty string of at most {max} characters"));
        return None;
    }
    if s.chars().any(|c| c.is_control() && !(multiline && c == '\n')) {
        errors.add(field, "must not contain control characters");
        return None;
    }
    Some(s.to_owned())
}

/// A hostname as browsers send it in `Host`: lowercase labels of letters, digits and hyphens.
pub fn valid_hostname(raw: &str) -> bool {
    raw.len() <= 253
        && raw.contains('.')
        && raw.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn hostnames(value: &Value, errors: &mut FieldErrors) -> Option<Vec<String>> {
    let Some(items) = value.as_array() else {
        errors.add("hostnames", "must be a list of hostnames");
        return None;
    };
    if items.len() > MAX_HOSTNAMES {
        errors.add("hostnames", format!("at most {MAX_HOSTNAMES}"));
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let field = format!("hostnames[{i}]");
        match item.as_str().map(str::to_ascii_lowercase) {
            Some(h) if valid_hostname(&h) && !out.contains(&h) => out.push(h),
            Some(h) if valid_hostname(&h) => {
                errors.add(&field, "listed twice");
                ok = false;
            }
            _ => {
                errors.add(&field, "must be a hostname such as status.example.com (no scheme, port or path)");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn components(value: &Value, errors: &mut FieldErrors) -> Option<Vec<ComponentSpec>> {
    let Some(items) = value.as_array() else {
        errors.add("components", "must be a list of {\"domain\", \"name\"}");
        return None;
    };
    if items.len() > MAX_COMPONENTS {
        errors.add("components", format!("at most {MAX_COMPONENTS}"));
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut domains = BTreeSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("components[{i}].{f}");
        let Some(object) = item.as_object() else {
            errors.add(&format!("components[{i}]"), "must be an object {\"domain\", \"name\"}");
            ok = false;
            continue;
        };
        for key in object.keys().filter(|k| !COMPONENT_FIELDS.contains(&k.as_str())) {
            errors.add(&at(key), "unknown field");
            ok = false;
        }
        let domain = match object.get("domain").and_then(Value::as_str).map(str::parse::<Uuid>) {
            Some(Ok(id)) if domains.insert(id) => Some(id),
            Some(Ok(_)) => {
                errors.add(&at("domain"), "this domain is already a component of the page");
                None
            }
            _ => {
                errors.add(&at("domain"), "required: a domain id");
                None
            }
        };
        let name = match object.get("name") {
            Some(v) => text(v, &at("name"), 200, errors),
            None => {
                errors.add(&at("name"), "required");
                None
            }
        };
        let group = match object.get("group") {
            None | Some(Value::Null) => Some(None),
            Some(v) => text(v, &at("group"), 200, errors).map(Some),
        };
        let reveal = match object.get("reveal") {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(Value::Array(list)) => {
                let mut set = BTreeSet::new();
                let mut good = true;
                for (j, v) in list.iter().enumerate() {
                    match v.as_str() {
                        Some(s) if REVEALABLE.contains(&s) => {
                            set.insert(s.to_owned());
                        }
                        _ => {
                            errors.add(
                                &format!("components[{i}].reveal[{j}]"),
                                "must be one of url, regions, errors",
                            );
                            good = false;
                        }
                    }
                }
                good.then(|| set.into_iter().collect())
            }
            Some(_) => {
                errors.add(&at("reveal"), "must be a list of url, regions, errors");
                None
            }
        };
        match (domain, name, group, reveal) {
            (Some(domain), Some(name), Some(group), Some(reveal)) => {
                out.push(ComponentSpec { domain, name, group, reveal })
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<PageSpec, FieldErrors> {
        PageSpec::parse(body.as_object().unwrap())
    }

    #[test]
    fn a_page_parses_with_its_components() {
        let domain = Uuid::now_v7();
        let spec = parse(json!({
            "slug": "acme", "title": "Acme status", "hostnames": ["Status.Acme.com"],
            "components": [{"domain": domain.to_string(), "name": "API", "group": "Core", "reveal": ["url", "errors"]}],
        }))
        .unwrap();
        assert_eq!(spec.hostnames, vec!["status.acme.com"]);
        assert_eq!(
            spec.components,
            vec![ComponentSpec {
                domain,
                name: "API".into(),
                group: Some("Core".into()),
                reveal: vec!["errors".into(), "url".into()]
            }]
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let domain = Uuid::now_v7().to_string();
        let errors = parse(json!({
            "slug": "Not A Slug", "title": "", "hostnames": ["https://x.example.com/"], "colour": "red",
            "components": [
                {"domain": domain, "name": "A"},
                {"domain": domain, "name": "B"},
                {"domain": "nope", "name": "C", "reveal": ["token"], "url": "x"},
                "string",
            ],
        }))
        .unwrap_err()
        .0;
        for field in [
            "slug",
            "title",
            "hostnames[0]",
            "colour",
            "components[1].domain",
            "components[2].domain",
            "components[2].reveal[0]",
            "components[2].url",
            "components[3]",
        ] {
            assert!(errors.contains_key(field), "{field} not named: {errors:?}");
        }
        let errors = parse(json!({})).unwrap_err().0;
        for field in ["slug", "title", "components"] {
            assert_eq!(errors[field].split(' ').next(), Some("required"), "{field}: {errors:?}");
        }
    }

    #[test]
    fn a_patch_keeps_what_it_leaves_out() {
        let current =
            parse(json!({"slug": "acme", "title": "Acme", "description": "hello", "components": []}))
                .unwrap();
        let patched =
            PageSpec::parse_over(json!({"title": "Acme Inc"}).as_object().unwrap(), Some(&current)).unwrap();
        assert_eq!((patched.slug.as_str(), patched.title.as_str()), ("acme", "Acme Inc"));
        assert_eq!(patched.description.as_deref(), Some("hello"));
        let cleared =
            PageSpec::parse_over(json!({"description": null}).as_object().unwrap(), Some(&current)).unwrap();
        assert_eq!(cleared.description, None);
    }
}
