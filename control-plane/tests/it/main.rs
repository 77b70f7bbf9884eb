//! Integration tests of the control plane against real PostgreSQL (one database per test via
//! `#[sqlx::test]`) and real Redis (one key prefix per test), with real probe agents.

mod api;
mod audit;
mod browser;
mod channels;
mod checks;
mod cli;
mod config_path;
mod consensus;
mod console;
mod degraded;
mod delivery;
mod digests;
mod dns_drift;
mod edge;
mod first_run;
mod flap;
mod helpers;
mod ingest;
mod live;
mod maintenance;
mod notify;
mod openapi;
mod pause;
mod quotas;
mod request_options;
mod saturation;
mod security;
mod sla;
mod status;
mod storm;
mod tags;
mod timescale;
mod timeseries;
mod web;
