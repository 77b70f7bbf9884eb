//! The Crosscheck control plane as a library: the binary in `main.rs` and the integration tests
//! both build it through [`startup::Application`].
//!
//! - [`api`]: the REST API under `/v1` (tenants' domains, tokens, regions).
//! - [`domains`]: the domain model, its validation and its storage with the change log.
//! - [`publisher`]: applies the change log to Redis in order and repairs Redis from Postgres.
//! - [`tenants`]: tenants and API tokens. [`regions`]: the region list.

pub mod api;
pub mod config;
pub mod domains;
pub mod metrics;
pub mod publisher;
pub mod regions;
pub mod startup;
pub mod tenants;

pub use config::Config;
pub use startup::Application;
