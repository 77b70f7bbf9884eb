//! The Crosscheck control plane as a library: the binary in `main.rs` and the integration tests
//! both build it through [`startup::Application`].
//!
//! - [`api`]: the REST API under `/v1` (tenants' domains, tokens, regions, channels).
//! - [`console`]: the operator console at `/console` (sessions, server-rendered pages over the
//!   API's handlers, the public demo).
//! - [`domains`]: the domain model, its validation and its storage with the change log.
//! - [`publisher`]: applies the change log to Redis in order and repairs Redis from Postgres.
//! - [`tenants`]: tenants and API tokens. [`regions`]: the region list.
//! - [`consensus`]: up/down decided across regions; [`incidents`]: incidents and their events.
//! - [`degraded`]: latency anomaly detection per region (median/MAD baseline) behind the
//!   `degraded` state.
//! - [`expiry`]: certificate days left (a floor) and the expiry notice due.
//! - [`uptime`]: consensus uptime (time up over time monitored) from the transition history.
//! - [`flap`]: flap detection on confirmed transitions (alerts held while a domain flaps) and
//!   the periodic check that ends flap mode.
//! - [`timeseries`]: storage of probe results, roll-ups and the reads behind the history API.
//! - [`notify`]: notification channels, the outbox and its dispatcher (webhook, Slack, email,
//!   PagerDuty, Teams, Discord, Telegram, ntfy), with per-channel subscriptions.
//! - [`dns_drift`]: each domain's known DNS answer set per region and its confirmed changes.
//! - [`digests`]: hourly flap digests per tenant, built once per period, stored and notified.
//! - [`sla`]: SLOs per domain, error budgets, SLA notices and the monthly report per tenant.
//! - [`maintenance`]: maintenance windows (one-off or RFC 5545 recurring, scoped by domain or
//!   tag): incidents inside one are recorded but withheld, and announced once if still open
//!   when it ends.
//! - [`checks`]: "try a check now": test probes requested from agents and their results handed
//!   back across replicas, never stored.
//! - [`live`]: live events published after commit, fanned out through Redis to every replica,
//!   streamed to browsers as Server-Sent Events.
//! - [`status`]: public status pages (HTML, JSON, Atom, live), their data and their cache.
//! - [`audit`]: the audit log of every write through the API and the console, its retention.
//! - [`quotas`]: tenant quotas (domains, channels, minimum interval, request rate per replica).
//! - [`web`]: the HTML surface: compiled templates, the common layout, static files and the
//!   security headers (strict CSP) of every page.

pub mod agents;
pub mod api;
pub mod audit;
pub mod checks;
pub mod clock;
pub mod config;
pub mod consensus;
pub mod console;
pub mod degraded;
pub mod digests;
pub mod dns_drift;
pub mod domains;
pub mod expiry;
pub mod flap;
pub mod hosts;
pub mod incidents;
pub mod ingest;
pub mod live;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod publisher;
pub mod quotas;
pub mod regions;
pub mod sla;
pub mod startup;
pub mod status;
pub mod tenants;
pub mod timeseries;
pub mod uptime;
pub mod web;

pub use config::Config;
pub use startup::Application;
