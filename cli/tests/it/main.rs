//! Integration tests of the `crosscheck` client against real control planes (their own
//! PostgreSQL databases and Redis prefixes, port 0), run in-process.

mod config;
mod helpers;
