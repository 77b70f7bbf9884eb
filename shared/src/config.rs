//! Configuration loading with figment: defaults, then an optional TOML file, then environment
//! variables (`<PREFIX>_<KEY>`, nested keys separated by `__`).
//!
//! Both binaries parse and validate their whole configuration before binding any port; an
//! invalid configuration is reported with the offending key and the process exits with code 64
//! (`EX_USAGE`).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Exit code for an invalid configuration or command line (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Builds the figment for a configuration type: its `Default`, then the TOML file when given,
/// then environment variables starting with `env_prefix` (for example `CROSSCHECK_AGENT_`).
pub fn figment<T: Serialize + Default>(file: Option<&Path>, env_prefix: &str) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(Env::prefixed(env_prefix).split("__"))
}

/// Loads a configuration type from defaults, an optional TOML file and the environment.
pub fn load<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    env_prefix: &str,
) -> Result<T, Box<figment::Error>> {
    figment::<T>(file, env_prefix).extract().map_err(Box::new)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        port: u16,
        nested: Nested,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        depth: u32,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self { name: "x".into(), port: 1, nested: Nested { depth: 2 } }
        }
    }

    #[test]
    fn file_and_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "port = 8080\n")?;
            jail.set_env("TESTCFG_NESTED__DEPTH", "9");
            let cfg: Sample = load(Some(Path::new("c.toml")), "TESTCFG_").map_err(|e| *e)?;
            assert_eq!(cfg, Sample { name: "x".into(), port: 8080, nested: Nested { depth: 9 } });
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "prot = 8080\n")?;
            let err = load::<Sample>(Some(Path::new("c.toml")), "TESTCFG_").unwrap_err();
            assert!(err.to_string().contains("prot"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/crosscheck.toml")), "TESTCFG_");
        assert!(err.is_err());
    }
}
