//! Query-string helpers shared by every route that takes parameters: unknown parameters refused
//! by name, values screened by [`super::text`], RFC 3339 times, bounded limits.

use std::collections::{BTreeMap, HashMap};

use axum::extract::Query;
use chrono::{DateTime, Utc};

use super::ApiError;

/// A route's query string, or why it could not be read.
pub type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

/// A validation error naming one field.
pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(BTreeMap::from([(field.to_owned(), message.into())]))
}

/// The parameters, every one of them in `known` (the others are refused, each by name).
pub fn params(query: Params, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(map) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let bad = super::text::screen_query(&map);
    if !bad.is_empty() {
        return Err(ApiError::Validation(bad));
    }
    let unknown: BTreeMap<String, String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| (k.clone(), "unknown query parameter".to_owned()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Validation(unknown));
    }
    Ok(map)
}

/// The RFC 3339 time in `key`, if given.
pub fn time(map: &HashMap<String, String>, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    map.get(key)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| invalid(key, "must be an RFC 3339 time"))
        })
        .transpose()
}

/// `limit`: `default` when absent, else an integer from 1 to `max`.
pub fn limit(map: &HashMap<String, String>, default: u32, max: u32) -> Result<u32, ApiError> {
    match map.get("limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| invalid("limit", format!("must be an integer between 1 and {max}"))),
    }
}
