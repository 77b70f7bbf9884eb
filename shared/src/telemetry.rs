//! Tracing set-up shared by the binaries: structured logs to stderr, filtered by `RUST_LOG`
//! (default `info`), as human-readable text or as JSON lines for log shippers.
//!
//! Text is coloured only when stderr is a terminal (and `NO_COLOR` is unset): logs written to
//! a file, a pipe or a platform's log collector never carry ANSI escape codes.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether log lines get ANSI colours: only text written to a terminal, and never when the
/// `NO_COLOR` convention (<https://no-color.org>, any non-empty value) asks for none.
pub fn use_colour(format: LogFormat, stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    format == LogFormat::Text && stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global tracing subscriber. Calling it twice is harmless (the second call is
/// ignored), which keeps tests that build several services in one process simple.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = use_colour(format, std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_for_text_on_a_terminal_without_no_color() {
        assert!(use_colour(LogFormat::Text, true, None));
        assert!(use_colour(LogFormat::Text, true, Some(OsStr::new(""))));
        assert!(!use_colour(LogFormat::Text, false, None), "a file or pipe gets plain text");
        assert!(!use_colour(LogFormat::Text, true, Some(OsStr::new("1"))));
        assert!(!use_colour(LogFormat::Json, true, None));
        assert!(!use_colour(LogFormat::Json, false, None));
    }
}
