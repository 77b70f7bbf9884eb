//! Service level objectives: a domain's `slo` (an uptime target over a calendar month in the
//! tenant's time zone), its error budget, the `sla_budget_low` and `sla_breach` notices, and
//! each tenant's monthly `sla_report`.
//!
//! - [`slo`]: the `slo` field of the domain API, parsed with every problem named.
//! - [`period`]: calendar months in a time zone (pure, across daylight-saving changes).
//! - [`budget`]: the budget arithmetic over a period's consensus uptime (pure, table-tested).
//! - [`report`]: the monthly report, built from loaded rows (pure), and its text and HTML.
//! - [`store`]: the tenant-scoped reads behind the API and the report.
//! - [`monitor`]: the periodic step sending each notice and report exactly once.

pub mod budget;
pub mod monitor;
pub mod period;
pub mod report;
pub mod slo;
pub mod store;

pub use budget::{Budget, Notice};
pub use monitor::Monitor;
pub use period::Month;
pub use slo::Slo;

/// The notification kind sent when a domain's period has used more than its error budget.
pub const BREACH_KIND: &str = "sla_breach";
/// The notification kind sent when a domain's budget left falls to its alert fraction.
pub const BUDGET_LOW_KIND: &str = "sla_budget_low";
/// The notification kind of a tenant's monthly report.
pub const REPORT_KIND: &str = "sla_report";
