//! Regions: the names agents run under. Kept in Postgres (domains reference them) and seeded
//! from the configuration at start; a region is never removed automatically, since domains and
//! history may still name it.

use std::fmt;

use sqlx::PgPool;

/// A region name: lowercase letters, digits and dashes, 1–32 characters, starting with a letter
/// or digit (`ams`, `us-east-1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionName(String);

impl RegionName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw.len() <= 32
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !raw.starts_with('-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("{raw:?} is not a region name (1-32 lowercase letters, digits or dashes)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Inserts the configured regions, keeping any that already exist.
pub async fn seed(pool: &PgPool, regions: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO regions (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
        .bind(regions)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every known region, sorted by name.
pub async fn list<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM regions ORDER BY name").fetch_all(executor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in ["ams", "us-east-1", "9z"] {
            assert!(RegionName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "AMS", "-x", "a b", "ams!", &"x".repeat(33)] {
            assert!(RegionName::parse(bad).is_err(), "{bad}");
        }
    }
}
