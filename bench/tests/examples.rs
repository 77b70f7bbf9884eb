//! Keeps `examples/crosscheck.toml` and `examples/agent.toml` in step with the code: each must
//! load through its binary's own loader and checks (unknown keys are errors there), list every
//! key of its configuration struct (set, or commented out as `# key = value`), show the real
//! default on every commented-out line (or say `unset by default` where there is none), and
//! every key must have a row in the README's configuration tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use shared::config::EnvSource;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench lives in the workspace").to_path_buf()
}

/// An environment prefix nobody sets, so the machine's variables cannot change what is checked.
const NO_ENV: EnvSource = EnvSource { prefix: "CROSSCHECK_EXAMPLES_TEST_UNSET_", exclude: &[] };

/// Each line of the example that sets a key (`key = value`) or shows one (`# key = value`):
/// key → (active, the value as JSON, whether the line says it is unset by default).
fn listed(text: &str, name: &str) -> BTreeMap<String, (bool, Value, bool)> {
    let mut keys = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let (active, body) = match line.strip_prefix("# ") {
            Some(rest) => (false, rest),
            None => (true, line),
        };
        let Some((key, _)) = body.split_once(" = ") else { continue };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            continue;
        }
        let table: toml::Table =
            body.parse().unwrap_or_else(|e| panic!("{name}:{}: `{body}` is not TOML: {e}", n + 1));
        let value = serde_json::to_value(&table[key]).expect("TOML values are JSON values");
        let unset = body.contains("# unset by default");
        assert!(
            keys.insert(key.to_owned(), (active, value, unset)).is_none(),
            "{name}: `{key}` listed twice"
        );
    }
    keys
}

fn check<T: Serialize + DeserializeOwned + Default>(
    name: &str,
    validate: impl FnOnce(&T) -> Result<(), String>,
    readme_section: &str,
) {
    let path = root().join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    shared::config::load_checked::<T>(Some(&path), NO_ENV, validate)
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));

    let Value::Object(defaults) = serde_json::to_value(T::default()).expect("a configuration serializes")
    else {
        panic!("a configuration is a map of keys");
    };
    let listed = listed(&text, name);
    for (key, default) in &defaults {
        let Some((active, value, unset)) = listed.get(key) else {
            panic!("{name} does not list `{key}`: add it, commented out with its default");
        };
        if *active {
            continue;
        }
        if default.is_null() {
            assert!(*unset, "{name}: `{key}` has no default; its line must say `# unset by default`");
        } else {
            assert!(!unset, "{name}: `{key}` has a default ({default}); the line says it is unset");
            assert_eq!(value, default, "{name}: the commented-out `{key}` must show its default");
        }
    }
    for key in listed.keys() {
        assert!(defaults.contains_key(key), "{name} lists `{key}`, which is not a configuration key");
    }

    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split_once(readme_section)
        .unwrap_or_else(|| panic!("README.md has no `{readme_section}` section"))
        .1;
    let table: Vec<&str> =
        section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).collect();
    for key in defaults.keys() {
        let cell = format!("`{key}`");
        assert!(
            table.iter().any(|row| row.split('|').nth(1).is_some_and(|first| first.contains(&cell))),
            "README.md `{readme_section}` has no row for `{key}`"
        );
    }
}

#[test]
fn the_control_plane_example_lists_every_key_with_its_default() {
    check::<control_plane::Config>("crosscheck.toml", control_plane::Config::validate, "### Control plane");
}

#[test]
fn the_agent_example_lists_every_key_with_its_default() {
    check::<probe_agent::config::Config>(
        "agent.toml",
        probe_agent::config::Config::validate,
        "### Probe agent",
    );
}

#[test]
fn a_commented_out_line_is_read_with_its_value() {
    let keys = listed("# a = 1\nb = \"x\"\n# c = \"d\"  # unset by default\n# prose, not a key\n", "t");
    assert_eq!(keys["a"], (false, Value::from(1), false));
    assert_eq!(keys["b"], (true, Value::from("x"), false));
    assert_eq!(keys["c"], (false, Value::from("d"), true));
}
