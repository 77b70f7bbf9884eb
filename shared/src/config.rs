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

/// Prints a command-line parse result (clap's) and returns the exit status: 0 for `--help` and
/// `--version`, [`EXIT_CONFIG`] for a usage error (clap's own default would be 2).
pub fn exit_for_usage(error: clap::Error) -> std::process::ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        std::process::ExitCode::from(EXIT_CONFIG as u8)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Where a binary's environment variables come from: a prefix, minus keys that belong to
/// someone else (the control plane's `CROSSCHECK_` must not swallow `CROSSCHECK_AGENT_…`).
/// The `…CONFIG` variable naming the file is never a key.
#[derive(Debug, Clone, Copy)]
pub struct EnvSource {
    pub prefix: &'static str,
    /// Lowercase key prefixes (after the variable prefix) to leave alone.
    pub exclude: &'static [&'static str],
}

/// Builds the figment for a configuration type: its `Default`, then the TOML file when given,
/// then environment variables of `env` (for example `CROSSCHECK_AGENT_REGION`).
pub fn figment<T: Serialize + Default>(file: Option<&Path>, env: EnvSource) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let exclude = env.exclude;
    figment.merge(
        Env::prefixed(env.prefix)
            .filter(move |key| {
                let key = key.as_str().to_ascii_lowercase();
                key != "config" && !exclude.iter().any(|x| key.starts_with(x))
            })
            .split("__"),
    )
}

/// Loads a configuration type from defaults, an optional TOML file and the environment.
pub fn load<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    env: EnvSource,
) -> Result<T, Box<figment::Error>> {
    figment::<T>(file, env).extract().map_err(Box::new)
}

/// Loads a configuration and runs its own checks; the error is a message naming the problem,
/// ready for a binary to print before exiting with [`EXIT_CONFIG`]. A check's message starts
/// with the key at fault (`tls_crl: cannot read …`); where that key was set (the file, or the
/// environment variable) is appended, so the operator knows what to edit. Checks must not
/// touch anything outside the process but files the configuration names.
pub fn load_checked<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    env: EnvSource,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, String> {
    let figment = figment::<T>(file, env);
    let config: T = figment.extract().map_err(|e| e.to_string())?;
    validate(&config).map_err(|message| with_origin(&figment, env, message))?;
    Ok(config)
}

/// `message` with where its leading key was set appended (nothing for a default).
fn with_origin(figment: &Figment, env: EnvSource, message: String) -> String {
    let key: String =
        message.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
    if key.is_empty() {
        return message;
    }
    let Some(metadata) = figment.find_metadata(&key) else { return message };
    match &metadata.source {
        Some(figment::Source::File(path)) => format!("{message} (set in {})", path.display()),
        _ if metadata.name.contains("environment") => {
            let var = format!("{}{}", env.prefix, key.to_ascii_uppercase().replace('.', "__"));
            format!("{message} (set by the environment variable {var})")
        }
        _ => message,
    }
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

    const ENV: EnvSource = EnvSource { prefix: "TESTCFG_", exclude: &["other_"] };

    #[test]
    fn file_and_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "port = 8080\n")?;
            jail.set_env("TESTCFG_NESTED__DEPTH", "9");
            jail.set_env("TESTCFG_CONFIG", "c.toml");
            jail.set_env("TESTCFG_OTHER_REGION", "ams");
            let cfg: Sample = load(Some(Path::new("c.toml")), ENV).map_err(|e| *e)?;
            assert_eq!(cfg, Sample { name: "x".into(), port: 8080, nested: Nested { depth: 9 } });
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "prot = 8080\n")?;
            let err = load::<Sample>(Some(Path::new("c.toml")), ENV).unwrap_err();
            assert!(err.to_string().contains("prot"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_failed_check_names_where_the_key_was_set() {
        let check =
            |c: &Sample| if c.port == 1 { Ok(()) } else { Err(format!("port: {} is not allowed", c.port)) };
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "port = 8080\n")?;
            let err = load_checked::<Sample>(Some(Path::new("c.toml")), ENV, check).unwrap_err();
            assert!(err.starts_with("port: 8080 is not allowed (set in "), "{err}");
            assert!(err.ends_with("c.toml)"), "{err}");
            jail.set_env("TESTCFG_PORT", "9");
            let err = load_checked::<Sample>(Some(Path::new("c.toml")), ENV, check).unwrap_err();
            assert_eq!(err, "port: 9 is not allowed (set by the environment variable TESTCFG_PORT)");
            Ok(())
        });
        let nested =
            |c: &Sample| if c.nested.depth == 2 { Ok(()) } else { Err("nested.depth: too deep".into()) };
        figment::Jail::expect_with(|jail| {
            jail.create_file("n.toml", "[nested]\ndepth = 5\n")?;
            let err = load_checked::<Sample>(Some(Path::new("n.toml")), ENV, nested).unwrap_err();
            assert!(err.starts_with("nested.depth: too deep (set in "), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/crosscheck.toml")), ENV);
        assert!(err.is_err());
    }
}
