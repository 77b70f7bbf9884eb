//! The control plane's Prometheus metrics. One struct of cheap-to-clone handles, registered
//! once at start and passed to the components that update them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The labels of `control_plane_http_requests_total`. Every value comes from a closed set, so
/// no client can add series: `method` through [`method_label`], `route` is the matched route
/// pattern (never the path as requested) or `unmatched`, `status` is the answer's code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// The `method` label of a request: one of the eight methods of RFC 9110 or `PATCH` (RFC
/// 5789), anything else `other`. HTTP lets a client send any token as a method, so taking it
/// verbatim would let a client add a series per request.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcomeLabels {
    pub kind: String,
    pub outcome: String,
}

fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn ack_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Domains per evaluation round trip: 1 to 4096.
fn batch_size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub http_requests: Family<HttpLabels, Counter>,
    /// The audit log's and the tenant quotas' counters (registered by their module).
    pub audit: crate::audit::AuditMetrics,
    /// Changes from the change log applied to Redis by this replica.
    pub config_published: Counter,
    /// Changes another replica had already applied when this one tried.
    pub config_publish_skipped: Counter,
    pub config_publish_errors: Family<ReasonLabels, Counter>,
    /// Full rebuilds of the Redis hash from Postgres, by reason.
    pub config_rebuilds: Family<ReasonLabels, Counter>,
    /// The config version Redis was last seen to hold.
    pub config_version_published: Gauge,
    /// Change-log rows not yet in Redis, as of the last check.
    pub config_backlog: Gauge,
    /// Reconnections of the publisher's Redis client (after an outage or a Sentinel failover),
    /// each followed by a catch-up from the version Redis holds.
    pub config_redis_reconnects: Counter,
    /// TLS handshakes refused on the ingest listener, by reason.
    pub ingest_handshake_failures: Family<ReasonLabels, Counter>,
    /// Open agent connections.
    pub ingest_connections: Gauge,
    /// Batches answered, by outcome (`stored`, `duplicate`, `invalid`, `unavailable`, `refused`,
    /// `tests_only`: only check-test results, nothing stored; `rejected`: every result was for a
    /// domain the agent does not serve, nothing stored).
    pub ingest_batches: Family<OutcomeLabels, Counter>,
    /// Results stored.
    pub ingest_results: Counter,
    /// Batches from authenticated agents refused anyway, by reason.
    pub ingest_refused: Family<ReasonLabels, Counter>,
    /// Results not stored because their domain does not exist, is paused, or does not run in
    /// the agent's region, by reason (`unknown_domain`, `paused`, `other_region`).
    pub ingest_results_rejected: Family<ReasonLabels, Counter>,
    /// Batches whose claimed region differs from the certificate's.
    pub ingest_region_mismatch: Counter,
    /// Unix time (seconds) of the ingest CRL's `nextUpdate`; 0 without a CRL or without one.
    pub ingest_crl_next_update: Gauge,
    /// 1 while the ingest's CRL is past its `nextUpdate` (stale, still enforced), else 0.
    pub ingest_crl_stale: Gauge,
    /// Reads of a changed `tls_crl` file by outcome (`applied`, `unreadable`, `invalid`).
    pub ingest_crl_loads: Family<OutcomeLabels, Counter>,
    /// Time from a batch arriving to its answer.
    pub ingest_ack_seconds: Histogram,
    /// Failures keeping the agents table and the revocation snapshot up to date.
    pub agent_registry_errors: Family<ReasonLabels, Counter>,
    /// Consensus evaluations of one domain.
    pub consensus_evaluations: Counter,
    /// Domain state transitions, by from and to state.
    pub consensus_transitions: Family<TransitionLabels, Counter>,
    /// Failed consensus steps, by reason (`record`, `health`, `evaluate`, `sweep`, …).
    pub consensus_errors: Family<ReasonLabels, Counter>,
    /// Confirmed DNS answer-set changes by outcome: `rotation` (quiet) or `changed`.
    pub dns_changes: Family<OutcomeLabels, Counter>,
    pub incidents_opened: Counter,
    pub incidents_resolved: Counter,
    /// Confirmation probe requests by outcome (`published`, `rate_limited`, `error`).
    pub confirmation_requests: Family<OutcomeLabels, Counter>,
    /// `POST /v1/checks/test` requests by outcome (`complete`, `partial`, `rate_limited`,
    /// `invalid`, `not_found`, `error`).
    pub check_tests: Family<OutcomeLabels, Counter>,
    /// Test probe results by outcome: at ingest `published` or `publish_failed`; on the
    /// replica listening `delivered` (to a waiting request), `unclaimed` (nobody waits: the
    /// request ended or the result is a duplicate), `malformed` or `lost` (the subscriber lagged).
    pub check_results: Family<OutcomeLabels, Counter>,
    /// Domains evaluated together in one transaction (one evaluation round trip).
    pub consensus_batch_size: Histogram,
    /// Duration of one evaluation transaction over a batch of domains, commit included.
    pub consensus_batch_seconds: Histogram,
    /// Domains an evaluation passed over because another evaluation (this replica's sweep,
    /// another replica, the flap check) or a domain write held their rows; they are queued
    /// again for the next round.
    pub consensus_skipped_locked: Counter,
    /// Observations waiting for consensus (one per agent and domain at most).
    pub observations_pending: Gauge,
    /// Queued observations replaced by a newer one of the same agent and domain before
    /// consensus recorded them (their results still count in the run of failures).
    pub observations_coalesced: Counter,
    /// Failures set aside as unknown because the agent that observed them was saturated, by
    /// region.
    pub consensus_saturated_failures: Family<RegionLabels, Counter>,
    /// Certificate expiry notifications enqueued.
    pub cert_expiry_notifications: Counter,
    /// Notification delivery attempts by channel kind and outcome (`delivered`, `failed`: a
    /// retry is scheduled, `dead`: no attempts left).
    pub notify_deliveries: Family<KindOutcomeLabels, Counter>,
    /// Duration of one delivery attempt, by channel kind.
    pub notify_delivery_seconds: Family<KindLabels, Histogram, fn() -> Histogram>,
    /// Notifications waiting in the outbox (`pending`), as of the last check.
    pub notify_outbox_pending: Gauge,
    /// Failures of the dispatcher itself (claiming, recording outcomes, listening), by reason.
    pub notify_errors: Family<ReasonLabels, Counter>,
    /// Notifications held by storm control for a grouped message.
    pub notify_storm_held: Counter,
    /// Grouped messages delivered.
    pub notify_groups: Counter,
    /// Notifications delivered inside grouped messages.
    pub notify_grouped: Counter,
    /// Domains that entered flap mode.
    pub flap_entries: Counter,
    /// Domains that left flap mode because they were stable (or flap detection was turned off
    /// for them); pausing or deleting a flapping domain is not counted.
    pub flap_exits: Counter,
    /// Incident notifications held because their domain was flapping.
    pub flap_held_notifications: Counter,
    /// Failures of the flap exit check, by reason (`check`: listing the periods, `period`: one
    /// domain's check).
    pub flap_sweeper_errors: Family<ReasonLabels, Counter>,
    /// Times a domain's stored flap settings were ignored (evaluation, exit check, status)
    /// because they no longer merge with the global ones.
    pub flap_invalid_settings: Counter,
    /// Times a domain's stored degraded settings were ignored because they no longer merge
    /// with the global ones.
    pub degraded_invalid_settings: Counter,
    /// Batches of one region whose latencies found anomalous (the newest latency of a domain
    /// in a recorded batch), per domain and batch.
    pub latency_anomalies: Counter,
    /// Flap digests built and stored (one per tenant with a flapping domain and period).
    pub digests_built: Counter,
    /// Digest periods done (the cursor advanced past them), by this replica.
    pub digest_periods: Counter,
    /// Outbox rows enqueued for flap digests (one per digest and enabled channel).
    pub digest_notifications: Counter,
    /// Failures of the digest scheduler, by reason (`cursor`, `load`, `store`, `enqueue`,
    /// `savepoint`, `duplicate`: a digest already stored, `skipped`: a tenant's digest given up).
    pub digest_errors: Family<ReasonLabels, Counter>,
    /// Incidents announced because the maintenance window that withheld them ended while they
    /// were still open.
    pub maintenance_announced: Counter,
    /// Failures of the maintenance sweeper, by reason (`extend`: expanding recurring windows,
    /// `announce`: handling incidents whose window ended).
    pub maintenance_errors: Family<ReasonLabels, Counter>,
    /// SLA notices enqueued, by kind (`sla_breach`, `sla_budget_low`), once per domain and
    /// period whatever the number of channels.
    pub sla_notices: Family<KindLabels, Counter>,
    /// Monthly SLA reports built, stored and enqueued.
    pub sla_reports: Counter,
    /// Failures of the SLA monitor, by reason (`list`: reading the domains or tenants,
    /// `domain`: one domain's figures or notices, `report`: one tenant's report).
    pub sla_errors: Family<ReasonLabels, Counter>,
    /// Failed API authentications by reason (`missing`, `malformed`, `invalid_token`, and
    /// `throttled`: refused before any lookup while the client or token prefix waits).
    pub auth_failures: Family<ReasonLabels, Counter>,
    /// Failed writes of `api_tokens.last_used_at` (tried again by the token's next request).
    pub token_last_used_errors: Counter,
    /// Console sign-in attempts by outcome (`ok`, `invalid_token`, `rate_limited`, `csrf`).
    pub console_sign_ins: Family<OutcomeLabels, Counter>,
    /// Console writes refused, by reason (`demo`, `read_only`, `csrf`), and console pages that
    /// failed (`internal`).
    pub console_refusals: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http_requests: Family::default(),
            audit: Default::default(),
            config_published: Counter::default(),
            config_publish_skipped: Counter::default(),
            config_publish_errors: Family::default(),
            config_rebuilds: Family::default(),
            config_version_published: Gauge::default(),
            config_backlog: Gauge::default(),
            config_redis_reconnects: Counter::default(),
            ingest_handshake_failures: Family::default(),
            ingest_connections: Gauge::default(),
            ingest_batches: Family::default(),
            ingest_results: Counter::default(),
            ingest_refused: Family::default(),
            ingest_results_rejected: Family::default(),
            ingest_region_mismatch: Counter::default(),
            ingest_crl_next_update: Gauge::default(),
            ingest_crl_stale: Gauge::default(),
            ingest_crl_loads: Family::default(),
            ingest_ack_seconds: ack_histogram(),
            agent_registry_errors: Family::default(),
            consensus_evaluations: Counter::default(),
            consensus_transitions: Family::default(),
            consensus_errors: Family::default(),
            dns_changes: Family::default(),
            incidents_opened: Counter::default(),
            incidents_resolved: Counter::default(),
            confirmation_requests: Family::default(),
            check_tests: Family::default(),
            check_results: Family::default(),
            consensus_batch_size: batch_size_histogram(),
            consensus_batch_seconds: ack_histogram(),
            consensus_skipped_locked: Counter::default(),
            observations_pending: Gauge::default(),
            observations_coalesced: Counter::default(),
            consensus_saturated_failures: Family::default(),
            cert_expiry_notifications: Counter::default(),
            notify_deliveries: Family::default(),
            notify_delivery_seconds: Family::new_with_constructor(delivery_histogram),
            notify_outbox_pending: Gauge::default(),
            notify_errors: Family::default(),
            notify_storm_held: Counter::default(),
            notify_groups: Counter::default(),
            notify_grouped: Counter::default(),
            flap_entries: Counter::default(),
            flap_exits: Counter::default(),
            flap_held_notifications: Counter::default(),
            flap_sweeper_errors: Family::default(),
            flap_invalid_settings: Counter::default(),
            degraded_invalid_settings: Counter::default(),
            latency_anomalies: Counter::default(),
            digests_built: Counter::default(),
            digest_periods: Counter::default(),
            digest_notifications: Counter::default(),
            digest_errors: Family::default(),
            maintenance_announced: Counter::default(),
            maintenance_errors: Family::default(),
            sla_notices: Family::default(),
            sla_reports: Counter::default(),
            sla_errors: Family::default(),
            auth_failures: Family::default(),
            token_last_used_errors: Counter::default(),
            console_sign_ins: Family::default(),
            console_refusals: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("control_plane");
        r.register("http_requests", "HTTP requests by route and status", self.http_requests.clone());
        self.audit.register(r);
        r.register("config_published", "Config changes applied to Redis", self.config_published.clone());
        r.register(
            "config_publish_skipped",
            "Config changes already applied by another replica",
            self.config_publish_skipped.clone(),
        );
        r.register(
            "config_publish_errors",
            "Failed publish attempts by reason",
            self.config_publish_errors.clone(),
        );
        r.register(
            "config_rebuilds",
            "Full rebuilds of the Redis config hash by reason",
            self.config_rebuilds.clone(),
        );
        r.register(
            "config_version_published",
            "Config version held by Redis when last checked",
            self.config_version_published.clone(),
        );
        r.register(
            "config_backlog",
            "Change-log entries not yet applied to Redis",
            self.config_backlog.clone(),
        );
        r.register(
            "config_redis_reconnects",
            "Reconnections of the publisher's Redis client, each followed by a catch-up",
            self.config_redis_reconnects.clone(),
        );
        r.register(
            "ingest_handshake_failures",
            "Agent TLS handshakes refused by reason",
            self.ingest_handshake_failures.clone(),
        );
        r.register("ingest_connections", "Open agent connections", self.ingest_connections.clone());
        r.register("ingest_batches", "Result batches answered by outcome", self.ingest_batches.clone());
        r.register("ingest_results", "Probe results stored", self.ingest_results.clone());
        r.register(
            "ingest_refused",
            "Batches of authenticated agents refused by reason",
            self.ingest_refused.clone(),
        );
        r.register(
            "ingest_results_rejected",
            "Results not stored because the agent does not serve their domain, by reason (unknown_domain, paused, other_region)",
            self.ingest_results_rejected.clone(),
        );
        r.register(
            "ingest_region_mismatch",
            "Batches whose claimed region differs from the certificate's",
            self.ingest_region_mismatch.clone(),
        );
        r.register(
            "ingest_crl_next_update_timestamp_seconds",
            "Unix time of the ingest CRL's nextUpdate (0: none); certs crl must run before it",
            self.ingest_crl_next_update.clone(),
        );
        r.register(
            "ingest_crl_stale",
            "1 while the ingest CRL is past its nextUpdate (still enforced; replace tls_crl), else 0",
            self.ingest_crl_stale.clone(),
        );
        r.register(
            "ingest_crl_loads",
            "Reads of a changed tls_crl file by outcome (applied, unreadable, invalid)",
            self.ingest_crl_loads.clone(),
        );
        r.register(
            "ingest_ack_seconds",
            "Time from a batch arriving to its answer",
            self.ingest_ack_seconds.clone(),
        );
        r.register(
            "agent_registry_errors",
            "Failures updating the agents table or revocation snapshot",
            self.agent_registry_errors.clone(),
        );
        r.register(
            "consensus_evaluations",
            "Consensus evaluations of one domain",
            self.consensus_evaluations.clone(),
        );
        r.register(
            "consensus_transitions",
            "Domain state transitions by from and to state",
            self.consensus_transitions.clone(),
        );
        r.register("consensus_errors", "Failed consensus steps by reason", self.consensus_errors.clone());
        r.register(
            "dns_changes",
            "Confirmed DNS answer-set changes by outcome (rotation, changed)",
            self.dns_changes.clone(),
        );
        r.register("incidents_opened", "Incidents opened", self.incidents_opened.clone());
        r.register("incidents_resolved", "Incidents resolved", self.incidents_resolved.clone());
        r.register(
            "confirmation_requests",
            "Confirmation probe requests by outcome",
            self.confirmation_requests.clone(),
        );
        r.register("check_tests", "Check tests (POST /v1/checks/test) by outcome", self.check_tests.clone());
        r.register("check_results", "Test probe results by outcome", self.check_results.clone());
        r.register(
            "consensus_batch_size",
            "Domains evaluated together in one transaction",
            self.consensus_batch_size.clone(),
        );
        r.register(
            "consensus_batch_seconds",
            "Duration of one evaluation transaction over a batch of domains",
            self.consensus_batch_seconds.clone(),
        );
        r.register(
            "consensus_skipped_locked",
            "Domains an evaluation passed over because their rows were locked (queued again)",
            self.consensus_skipped_locked.clone(),
        );
        r.register(
            "observations_pending",
            "Observations waiting for consensus (at most one per agent and domain)",
            self.observations_pending.clone(),
        );
        r.register(
            "observations_coalesced",
            "Queued observations replaced by a newer one of the same agent and domain",
            self.observations_coalesced.clone(),
        );
        r.register(
            "consensus_saturated_failures",
            "Failures set aside as unknown (no vote) because the agent that observed them was saturated, by region",
            self.consensus_saturated_failures.clone(),
        );
        r.register(
            "cert_expiry_notifications",
            "Certificate expiry notifications enqueued",
            self.cert_expiry_notifications.clone(),
        );
        r.register(
            "notify_deliveries",
            "Notification delivery attempts by channel kind and outcome",
            self.notify_deliveries.clone(),
        );
        r.register(
            "notify_delivery_seconds",
            "Duration of one notification delivery attempt by channel kind",
            self.notify_delivery_seconds.clone(),
        );
        r.register(
            "notify_outbox_pending",
            "Notifications waiting in the outbox when last counted",
            self.notify_outbox_pending.clone(),
        );
        r.register(
            "notify_storm_held",
            "Notifications held by storm control to be sent in a grouped message",
            self.notify_storm_held.clone(),
        );
        r.register("notify_groups", "Grouped notification messages delivered", self.notify_groups.clone());
        r.register(
            "notify_grouped",
            "Notifications delivered inside grouped messages",
            self.notify_grouped.clone(),
        );
        r.register("notify_errors", "Notification dispatcher failures by reason", self.notify_errors.clone());
        r.register("flap_entries", "Domains that entered flap mode", self.flap_entries.clone());
        r.register(
            "flap_exits",
            "Domains that left flap mode (stable or detection turned off)",
            self.flap_exits.clone(),
        );
        r.register(
            "flap_held_notifications",
            "Incident notifications held because the domain was flapping",
            self.flap_held_notifications.clone(),
        );
        r.register(
            "flap_sweeper_errors",
            "Failures of the flap exit check by reason",
            self.flap_sweeper_errors.clone(),
        );
        r.register(
            "flap_invalid_settings",
            "Times a domain's flap settings were ignored because they no longer apply",
            self.flap_invalid_settings.clone(),
        );
        r.register(
            "degraded_invalid_settings",
            "Times a domain's degraded settings were ignored because they no longer apply",
            self.degraded_invalid_settings.clone(),
        );
        r.register(
            "latency_anomalies",
            "Anomalous latencies found (the newest of a domain in a recorded batch)",
            self.latency_anomalies.clone(),
        );
        r.register("digests_built", "Flap digests built and stored", self.digests_built.clone());
        r.register(
            "digest_periods",
            "Digest periods done (the cursor advanced past them)",
            self.digest_periods.clone(),
        );
        r.register(
            "digest_notifications",
            "Outbox rows enqueued for flap digests",
            self.digest_notifications.clone(),
        );
        r.register("digest_errors", "Digest scheduler failures by reason", self.digest_errors.clone());
        r.register(
            "maintenance_announced",
            "Incidents announced when the maintenance window that withheld them ended",
            self.maintenance_announced.clone(),
        );
        r.register(
            "maintenance_errors",
            "Maintenance sweeper failures by reason",
            self.maintenance_errors.clone(),
        );
        r.register("sla_notices", "SLA notices enqueued, by kind", self.sla_notices.clone());
        r.register("sla_reports", "Monthly SLA reports built and enqueued", self.sla_reports.clone());
        r.register("sla_errors", "SLA monitor failures by reason", self.sla_errors.clone());
        r.register(
            "auth_failures",
            "Failed API authentications by reason (missing, malformed, invalid_token, throttled)",
            self.auth_failures.clone(),
        );
        r.register(
            "token_last_used_errors",
            "Failed writes of api_tokens.last_used_at",
            self.token_last_used_errors.clone(),
        );
        r.register("console_sign_ins", "Console sign-in attempts by outcome", self.console_sign_ins.clone());
        r.register(
            "console_refusals",
            "Console requests refused or failed, by reason",
            self.console_refusals.clone(),
        );
    }

    pub fn notify_delivery(&self, kind: &str, outcome: &str) {
        self.notify_deliveries
            .get_or_create(&KindOutcomeLabels { kind: kind.into(), outcome: outcome.into() })
            .inc();
    }

    pub fn notify_error(&self, reason: &str) {
        self.notify_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn flap_sweeper_error(&self, reason: &str) {
        self.flap_sweeper_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn maintenance_error(&self, reason: &str) {
        self.maintenance_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn digest_error(&self, reason: &str) {
        self.digest_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn sla_error(&self, reason: &str) {
        self.sla_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// Counts a read of a changed `tls_crl` file.
    pub fn crl_load(&self, outcome: &str) {
        self.ingest_crl_loads.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn handshake_failure(&self, reason: &str) {
        self.ingest_handshake_failures.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn batch(&self, outcome: &str) {
        self.ingest_batches.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn refused(&self, reason: &str) {
        self.ingest_refused.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn ingest_result_rejected(&self, reason: &'static str, n: u64) {
        self.ingest_results_rejected.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(n);
    }

    pub fn agents_error(&self, reason: &str) {
        self.agent_registry_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn publish_error(&self, reason: &str) {
        self.config_publish_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn consensus_error(&self, reason: &str) {
        self.consensus_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn saturated_failures(&self, region: &str, n: u64) {
        self.consensus_saturated_failures.get_or_create(&RegionLabels { region: region.into() }).inc_by(n);
    }

    /// Failures set aside for saturation in `region` so far (tests).
    pub fn saturated_failure_count(&self, region: &str) -> u64 {
        self.consensus_saturated_failures.get_or_create(&RegionLabels { region: region.into() }).get()
    }

    pub fn transition(&self, from: &str, to: &str) {
        self.consensus_transitions
            .get_or_create(&TransitionLabels { from: from.into(), to: to.into() })
            .inc();
    }

    pub fn confirmation(&self, outcome: &str) {
        self.confirmation_requests.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn check_test(&self, outcome: &str) {
        self.check_tests.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn check_result(&self, outcome: &str, n: u64) {
        self.check_results.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc_by(n);
    }

    /// Check tests counted with `outcome` so far (tests).
    pub fn check_test_count(&self, outcome: &str) -> u64 {
        self.check_tests.get_or_create(&OutcomeLabels { outcome: outcome.into() }).get()
    }

    pub fn rebuild(&self, reason: &str) {
        self.config_rebuilds.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn console_sign_in(&self, outcome: &str) {
        self.console_sign_ins.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    /// Console sign-ins counted with `outcome` so far (tests).
    pub fn console_sign_in_count(&self, outcome: &str) -> u64 {
        self.console_sign_ins.get_or_create(&OutcomeLabels { outcome: outcome.into() }).get()
    }

    pub fn console_refusal(&self, reason: &str) {
        self.console_refusals.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["FOO", "get", "PROPFIND", "X-1999"] {
            assert_eq!(method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()), "other", "{made_up}");
        }
    }
}
