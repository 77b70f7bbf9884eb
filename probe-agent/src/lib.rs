//! The Crosscheck probe agent as a library: the binary in `main.rs`, the benchmarks and the
//! integration tests all build it through [`startup::Agent`].
//!
//! - [`catalog`]: the in-memory configuration and its sync from Redis.
//! - [`scheduler`]: when each domain is probed; [`probe`]: probing one domain once.
//! - [`membership`]: agents sharing a region: registration in Redis and the rendezvous
//!   assignment of domains to the region's live agents.
//! - [`results`]: the result record, the bounded result queue, the latest result per domain.
//! - [`delivery`]: batching results and sending them to the control plane over mutual TLS.
//! - [`check`]: `probe-agent check <url>`, one probe printed for a person.
//! - [`requests`]: on-demand (confirmation) probe requests from Redis; [`canary`]: the
//!   agent's self-check, attached to its batches as its health.
//!
//! The agent never connects to Postgres: Redis is its only source of configuration, read only
//! (the one key it writes is its registration among its region's agents).

pub mod canary;
pub mod catalog;
pub mod check;
pub mod config;
pub mod delivery;
pub mod membership;
pub mod metrics;
pub mod probe;
pub mod requests;
pub mod results;
pub mod scheduler;
pub mod startup;

pub use config::Config;
pub use startup::Agent;
