//! The Crosscheck probe agent as a library: the binary in `main.rs`, the benchmarks and the
//! integration tests all build it through [`startup::Agent`].
//!
//! - [`catalog`]: the in-memory configuration and its sync from Redis.
//!
//! The agent never connects to Postgres: Redis (read-only) is its only source of configuration.

pub mod catalog;
pub mod config;
pub mod metrics;
pub mod probe;
pub mod startup;

pub use config::Config;
pub use startup::Agent;
