//! Types and helpers shared by the Crosscheck control plane and its probe agents.
//!
//! Everything in here is a contract between the two binaries: the agent-facing domain
//! configuration that travels through Redis, the Redis key names, the change notification
//! payload, the network-range classification used by both the API's validation and the
//! agent's SSRF guard, and the small operational pieces (configuration loading, tracing,
//! `/metrics` + `/healthz` + `/readyz`, shutdown signals) that both binaries serve the same way.

#[cfg(feature = "browser")]
pub mod browser;
pub mod check;
pub mod config;
pub mod domain;
pub mod error;
pub mod identity;
pub mod keys;
pub mod limits;
pub mod listen;
pub mod netguard;
pub mod ops;
pub mod proto;
pub mod redis;
pub mod request;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use check::{CheckConfig, DnsCheck, DnsRecordType, JsonAssertion, JsonOp, TcpCheck, TlsCheck};
pub use domain::{
    ChangeNotice, ChangeOp, DomainConfig, DomainId, HttpMethod, HttpVersion, KeywordCheck, KeywordMode,
    ProbeRequest, StatusRange,
};
pub use keys::RedisKeys;
pub use request::{Auth, RequestBody, RequestConfig, RequestHeader, Secret};

#[cfg(test)]
mod tidy {
    //! Repository-wide checks that keep the code base navigable.

    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() && name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_module_says_what_it_is_for() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        for krate in ["shared", "control-plane", "probe-agent", "certs", "bench", "cli"] {
            rust_files(&root.join(krate), &mut files);
        }
        assert!(files.len() > 20, "found only {} files", files.len());
        let undocumented: Vec<_> = files
            .iter()
            .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
            .collect();
        assert!(undocumented.is_empty(), "modules without a //! doc comment: {undocumented:?}");
    }

    /// Markdown tables render as tables: no blank line splits one (the rows after it would
    /// show as raw text) and every row has the header's number of cells (an unescaped `|`
    /// inside a cell, even in backticks, starts a new one).
    #[test]
    fn markdown_tables_are_whole() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cells = |line: &str| line.trim().replace("\\|", "").matches('|').count();
        let mut problems = Vec::new();
        for doc in ["README.md", "ARCHITECTURE.md", "fly/README.md"] {
            let text = std::fs::read_to_string(root.join(doc)).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let (mut fenced, mut header) = (false, None);
            for (i, line) in lines.iter().enumerate() {
                if line.trim_start().starts_with("```") {
                    fenced = !fenced;
                }
                if fenced || !line.starts_with('|') {
                    header = None;
                    continue;
                }
                let at = format!("{doc}:{}", i + 1);
                if header.is_none()
                    && i >= 2
                    && lines[i - 1].trim().is_empty()
                    && lines[i - 2].starts_with('|')
                {
                    problems.push(format!("{at}: a blank line splits the table above"));
                }
                match header {
                    None => header = Some(cells(line)),
                    Some(n) if n != cells(line) => {
                        problems.push(format!("{at}: {} `|`, the header has {n}", cells(line)))
                    }
                    Some(_) => {}
                }
            }
        }
        assert!(problems.is_empty(), "broken markdown tables:\n{}", problems.join("\n"));
    }

    /// Each cause is said once: error chains are printed with `shared::error::Chain` (anyhow's
    /// `{:#}` repeats causes that third-party errors already put in their message), and the
    /// workspace's own error types show a cause or return it from `source()`, never both.
    #[test]
    fn causes_are_said_once() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        for krate in ["shared", "control-plane", "probe-agent", "certs", "bench", "cli"] {
            rust_files(&root.join(krate).join("src"), &mut files);
        }
        let mut offences = Vec::new();
        for file in &files {
            if file.ends_with("shared/src/error.rs") || file.ends_with("shared/src/lib.rs") {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let here = format!("{}:{}", file.display(), i + 1);
                if line.contains(":#}") {
                    offences.push(format!("{here}: `{{:#}}` (use shared::error::Chain)"));
                }
                if line.trim_start().starts_with("#[error(") {
                    let says_field = line.contains("{0}") || line.contains("{source}");
                    let next = lines.get(i + 1).copied().unwrap_or_default();
                    let is_source = line.contains("{source}")
                        || next.contains("#[from]")
                        || next.contains("#[source]")
                        || next.contains(" source:");
                    if says_field && is_source {
                        offences.push(format!("{here}: the message shows the error's own source"));
                    }
                }
            }
        }
        assert!(offences.is_empty(), "causes said twice:\n{}", offences.join("\n"));
    }
}
