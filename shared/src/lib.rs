//! Types and helpers shared by the Crosscheck control plane and its probe agents.
//!
//! Everything in here is a contract between the two binaries: the agent-facing domain
//! configuration that travels through Redis, the Redis key names, the change notification
//! payload, the network-range classification used by both the API's validation and the
//! agent's SSRF guard, and the small operational pieces (configuration loading, tracing,
//! `/metrics` + `/healthz` + `/readyz`, shutdown signals) that both binaries serve the same way.

pub mod config;
pub mod domain;
pub mod keys;
pub mod netguard;
pub mod ops;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use domain::{ChangeNotice, ChangeOp, DomainConfig, DomainId, HttpMethod, StatusRange};
pub use keys::RedisKeys;
