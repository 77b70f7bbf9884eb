//! Integration tests of the probe agent against a real Redis (one key prefix per test). The
//! tests write Redis the way the control plane's publisher does, and also break the protocol on
//! purpose (lost notices, skipped versions, flushed keys) to check the agent recovers.
//! Delivery is tested against an in-test ingest server over real mutual TLS; confirmation
//! probes and canaries against a running agent and local targets.

mod catalog;
mod confirmation;
mod delivery;
mod probe;
