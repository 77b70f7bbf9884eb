//! Integration tests of the probe agent against a real Redis (one key prefix per test). The
//! tests write Redis the way the control plane's publisher does, and also break the protocol on
//! purpose (lost notices, skipped versions, flushed keys) to check the agent recovers.

mod catalog;
mod probe;
