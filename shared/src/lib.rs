//! Types and helpers shared by the Crosscheck control plane and its probe agents.
//!
//! Everything in here is a contract between the two binaries: the agent-facing domain
//! configuration that travels through Redis, the Redis key names, the change notification
//! payload, the network-range classification used by both the API's validation and the
//! agent's SSRF guard, and the small operational pieces (configuration loading, tracing,
//! `/metrics` + `/healthz` + `/readyz`, shutdown signals) that both binaries serve the same way.

pub mod config;
pub mod domain;
pub mod identity;
pub mod keys;
pub mod limits;
pub mod netguard;
pub mod ops;
pub mod proto;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use domain::{
    ChangeNotice, ChangeOp, DomainConfig, DomainId, HttpMethod, KeywordCheck, KeywordMode, ProbeRequest,
    StatusRange,
};
pub use keys::RedisKeys;

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
        for krate in ["shared", "control-plane", "probe-agent", "certs", "bench"] {
            rust_files(&root.join(krate), &mut files);
        }
        assert!(files.len() > 20, "found only {} files", files.len());
        let undocumented: Vec<_> = files
            .iter()
            .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
            .collect();
        assert!(undocumented.is_empty(), "modules without a //! doc comment: {undocumented:?}");
    }
}
