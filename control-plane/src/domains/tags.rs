//! Domain tags: short labels (`prod`, `team:payments`, `eu-west`) that maintenance windows and
//! channel subscriptions select domains by.
//!
//! The rule: a tag is 1 to 40 characters of lowercase ASCII letters, digits and `.`, `_`, `:`,
//! `-`, starting with a letter or a digit (`[a-z0-9][a-z0-9._:-]{0,39}`); a domain has at most
//! [`MAX_TAGS`]. Input is trimmed and lowercased before the check, so `" Prod "` is `prod`; the
//! stored list is deduplicated and sorted, so two requests naming the same tags store the same
//! list.

use std::collections::BTreeSet;

use serde_json::Value;

/// Most tags one domain (or one maintenance window's scope) may carry.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 40;

/// What a bad tag is told.
pub const RULE: &str =
    "must be 1 to 40 characters of a-z, 0-9, '.', '_', ':' or '-', starting with a letter or a digit";

/// One tag, normalized (trimmed, lowercased), or why it is not one.
pub fn parse_tag(raw: &str) -> Result<String, String> {
    let tag = raw.trim().to_ascii_lowercase();
    let mut chars = tag.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | ':' | '-'));
    if first_ok && rest_ok && tag.len() <= MAX_TAG_CHARS {
        Ok(tag)
    } else {
        Err(RULE.to_owned())
    }
}

/// A JSON array of tags: normalized, deduplicated, sorted. The error names the field
/// (`tags` for the array, `tags[2]` for one bad tag) and says why.
pub fn parse(field: &str, value: &Value) -> Result<Vec<String>, (String, String)> {
    let Value::Array(items) = value else {
        return Err((field.to_owned(), "must be an array of tags".into()));
    };
    let mut tags = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let Value::String(raw) = item else {
            return Err((format!("{field}[{i}]"), "must be a string".into()));
        };
        tags.insert(parse_tag(raw).map_err(|m| (format!("{field}[{i}]"), m))?);
    }
    if tags.len() > MAX_TAGS {
        return Err((field.to_owned(), format!("at most {MAX_TAGS} tags")));
    }
    Ok(tags.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_tags() {
        let (forty, forty_one) = ("a".repeat(40), "a".repeat(41));
        for (raw, want) in [
            ("prod", Some("prod")),
            (" Prod ", Some("prod")),
            ("team:payments", Some("team:payments")),
            ("eu-west.1_a", Some("eu-west.1_a")),
            ("9lives", Some("9lives")),
            (forty.as_str(), Some(forty.as_str())),
            (forty_one.as_str(), None),
            ("", None),
            ("   ", None),
            ("-lead", None),
            (":lead", None),
            ("has space", None),
            ("ünï", None),
            ("a/b", None),
            ("a,b", None),
        ] {
            assert_eq!(parse_tag(raw).ok().as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn lists_are_normalized() {
        assert_eq!(parse("tags", &json!(["b", "A", "a", " b "])).unwrap(), vec!["a", "b"]);
        assert_eq!(parse("tags", &json!([])).unwrap(), Vec::<String>::new());
        let twenty: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        assert_eq!(parse("tags", &json!(twenty)).unwrap().len(), 20);
        // Duplicates count once toward the limit.
        let mut dup = twenty.clone();
        dup.push("t0".into());
        assert!(parse("tags", &json!(dup)).is_ok());
    }

    #[test]
    fn bad_lists_name_the_field() {
        for (value, field, message) in [
            (json!("prod"), "tags", "must be an array of tags"),
            (json!({"a": 1}), "tags", "must be an array of tags"),
            (json!(["ok", 3]), "tags[1]", "must be a string"),
            (json!(["ok", "bad tag"]), "tags[1]", RULE),
            (json!((0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()), "tags", "at most 20 tags"),
        ] {
            assert_eq!(parse("tags", &value), Err((field.to_owned(), message.to_owned())), "{value}");
        }
        assert_eq!(parse("scope.tags", &json!([""])).unwrap_err().0, "scope.tags[0]");
    }
}
