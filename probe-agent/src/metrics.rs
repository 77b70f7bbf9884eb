//! The agent's Prometheus metrics: cheap-to-clone handles registered once at start.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProofLabels {
    pub proof: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

/// Which way domains moved when the region's member set changed
/// (`probe_agent_membership_handoffs_total{direction}`).
pub mod handoffs {
    /// Domains this agent took over.
    pub const GAINED: &str = "gained";
    /// Domains another agent took over from this one.
    pub const LOST: &str = "lost";
    pub const ALL: [&str; 2] = [GAINED, LOST];
}

/// The `op` label of `probe_agent_spool_errors_total` (see [`spool_errors`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

/// What failed on the spool directory's disk (`probe_agent_spool_errors_total{op}`). None of
/// them stops probing: the batch concerned stays in memory only.
pub mod spool_errors {
    /// Appending a result (or a close record) to the open batch's journal.
    pub const JOURNAL: &str = "journal";
    /// Writing a closed batch's file.
    pub const BATCH: &str = "batch";
    /// Emptying the journal after its batch was written.
    pub const RESET: &str = "reset";
    /// Deleting the file of an acknowledged, refused or dropped batch (it is sent again after
    /// a restart, answered `duplicate`).
    pub const REMOVE: &str = "remove";
    /// The periodic fsync (`spool_fsync_interval_ms`).
    pub const SYNC: &str = "sync";
    /// Reading or setting aside a file at start.
    pub const REPLAY: &str = "replay";
    pub const ALL: [&str; 6] = [JOURNAL, BATCH, RESET, REMOVE, SYNC, REPLAY];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// Why results never reached the control plane (`probe_agent_results_dropped_total{reason}`).
pub mod dropped {
    /// The in-process result queue was full (the scheduler never waits).
    pub const QUEUE_FULL: &str = "queue_full";
    /// The buffer of unacknowledged batches hit `buffer_max_bytes`; the oldest went.
    pub const BUFFER_FULL: &str = "buffer_full";
    /// A buffered batch grew older than `buffer_max_age_s`.
    pub const EXPIRED: &str = "expired";
    /// The control plane refused the batch with `INVALID_ARGUMENT`.
    pub const REJECTED: &str = "rejected";
    /// Still buffered when the shutdown flush timed out.
    pub const SHUTDOWN: &str = "shutdown";
    pub const ALL: [&str; 5] = [QUEUE_FULL, BUFFER_FULL, EXPIRED, REJECTED, SHUTDOWN];
}

/// What became of on-demand probe requests (`probe_agent_probe_requests_total{outcome}`).
pub mod requests {
    /// Handed to the scheduler.
    pub const PROBED: &str = "probed";
    /// An operator's test (`request_id` set), handed to the scheduler.
    pub const TESTED: &str = "tested";
    /// Addressed to other regions only.
    pub const NOT_MINE: &str = "not_mine";
    /// The domain is not in this agent's catalog (or is paused).
    pub const UNKNOWN_DOMAIN: &str = "unknown_domain";
    /// The domain (or, for a test, the same request) already has an on-demand probe queued or
    /// running.
    pub const COALESCED: &str = "coalesced";
    /// The payload is not a probe request (or a test's configuration names another domain).
    pub const MALFORMED: &str = "malformed";
    /// `max_on_demand_in_flight` reached, or the scheduler's request queue is full.
    pub const OVERLOADED: &str = "overloaded";
    pub const ALL: [&str; 7] = [PROBED, TESTED, NOT_MINE, UNKNOWN_DOMAIN, COALESCED, MALFORMED, OVERLOADED];
}

/// Ack latency buckets, in seconds.
const ACK_BUCKETS: [f64; 14] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Schedule lag buckets, in seconds: fine below 100 ms where a healthy agent lives.
const LAG_BUCKETS: [f64; 14] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug)]
pub struct Metrics {
    pub catalog_domains: Gauge,
    pub catalog_version: Gauge,
    /// Single-domain updates applied from notifications.
    pub catalog_updates: Counter,
    pub catalog_resyncs: Family<ReasonLabels, Counter>,
    pub catalog_errors: Family<ReasonLabels, Counter>,
    pub redis_reconnects: Counter,
    /// 1 while the agent's Redis connections are up.
    pub redis_up: Gauge,
    /// Probes finished, by outcome (`ok` or the error kind).
    pub probes: Family<OutcomeLabels, Counter>,
    /// Probes that failed resolving a name, by reason (`nxdomain`, `servfail`, …: the
    /// [`crate::probe::DnsErrorReason`] labels).
    pub dns_failures: Family<ReasonLabels, Counter>,
    /// dns checks with `dnssec`, by what validation proved (`secure`, `insecure`, `bogus`,
    /// `indeterminate`: the [`crate::probe::DnssecProof`] names).
    pub dnssec_proofs: Family<ProofLabels, Counter>,
    /// Probes whose connection came from another address than the first one tried (Happy
    /// Eyeballs fallbacks).
    pub connect_fallbacks: Counter,
    /// Actual start minus planned start of scheduled probes.
    pub schedule_lag: Histogram,
    pub probes_in_flight: Gauge,
    /// Times a due probe found every probe slot busy.
    pub scheduler_saturated: Counter,
    /// Schedule slots skipped because the agent fell more than an interval behind.
    pub schedule_skipped: Counter,
    pub scheduled_domains: Gauge,
    pub on_demand_probes: Counter,
    /// Results that will never reach the control plane, by reason (see [`dropped`]).
    pub results_dropped: Family<ReasonLabels, Counter>,
    /// Results in unacknowledged batches (the open batch excluded).
    pub delivery_buffered_results: Gauge,
    /// Results in the open batch (not yet closed).
    pub delivery_open_results: Gauge,
    /// Encoded bytes of unacknowledged batches.
    pub delivery_buffered_bytes: Gauge,
    /// Age of the oldest unacknowledged batch, in seconds (0 when none).
    pub delivery_oldest_buffered_age: Gauge<f64, AtomicU64>,
    /// Batches closed, by trigger (`count`, `age`, `status_change`, `test`, `shutdown`).
    pub delivery_batches_created: Family<ReasonLabels, Counter>,
    /// Send attempts by outcome (`stored`, `duplicate`, `retry`, `rejected`, `denied`).
    pub delivery_batches_sent: Family<OutcomeLabels, Counter>,
    /// Results acknowledged by the control plane (stored now or before).
    pub delivery_results_acknowledged: Counter,
    /// Failed send attempts by gRPC status code.
    pub delivery_send_errors: Family<CodeLabels, Counter>,
    /// From sending a batch to its acknowledgement.
    pub delivery_ack_latency: Histogram,
    /// On-demand probe requests by outcome (see [`requests`]).
    pub probe_requests: Family<OutcomeLabels, Counter>,
    /// 1 when the latest canary self-check passed (or no canaries are configured), else 0.
    pub healthy: Gauge,
    /// 1 while the agent reports itself saturated with its batches, else 0.
    pub saturated: Gauge,
    /// Canaries that succeeded in the latest self-check.
    pub canaries_ok: Gauge,
    /// Canaries configured.
    pub canaries_total: Gauge,
    /// Live agents of this region as last seen, this one included (1 before the first read).
    pub membership_members: Gauge,
    /// Times the member set this agent sees changed.
    pub membership_changes: Counter,
    /// Domains that changed hands because the member set changed, by direction (see
    /// [`handoffs`]).
    pub membership_handoffs: Family<DirectionLabels, Counter>,
    /// Domains taken over whose previous owner may have missed a slot, probed once ahead of
    /// their next slot (see [`crate::scheduler::plan`]).
    pub membership_catch_ups: Counter,
    /// Registry failures by reason (see [`crate::membership::registry::errors`]).
    pub membership_errors: Family<ReasonLabels, Counter>,
    /// Batch files in the spool directory (`spool_dir`): closed, not yet acknowledged.
    pub spool_files: Gauge,
    /// Bytes of the spool's batch files and journal.
    pub spool_bytes: Gauge,
    /// Results in the spool's journal (the open batch, as written so far).
    pub spool_journal_results: Gauge,
    /// Batches loaded from the spool at start (batch files, and the batch rebuilt from a
    /// journal left by the previous run).
    pub spool_replayed_batches: Counter,
    /// Results in those batches.
    pub spool_replayed_results: Counter,
    /// Files found unreadable at start and set aside (`*.corrupt`).
    pub spool_corrupt_files: Counter,
    /// Journal records found cut short at start (a write the previous run did not finish) and
    /// skipped.
    pub spool_torn_records: Counter,
    /// Spool disk operations that failed, by operation (see [`spool_errors`]).
    pub spool_errors: Family<OpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            catalog_domains: Gauge::default(),
            catalog_version: Gauge::default(),
            catalog_updates: Counter::default(),
            catalog_resyncs: Family::default(),
            catalog_errors: Family::default(),
            redis_reconnects: Counter::default(),
            redis_up: Gauge::default(),
            probes: Family::default(),
            dns_failures: Family::default(),
            dnssec_proofs: Family::default(),
            connect_fallbacks: Counter::default(),
            schedule_lag: Histogram::new(LAG_BUCKETS),
            probes_in_flight: Gauge::default(),
            scheduler_saturated: Counter::default(),
            schedule_skipped: Counter::default(),
            scheduled_domains: Gauge::default(),
            on_demand_probes: Counter::default(),
            results_dropped: Family::default(),
            delivery_buffered_results: Gauge::default(),
            delivery_open_results: Gauge::default(),
            delivery_buffered_bytes: Gauge::default(),
            delivery_oldest_buffered_age: Gauge::default(),
            delivery_batches_created: Family::default(),
            delivery_batches_sent: Family::default(),
            delivery_results_acknowledged: Counter::default(),
            delivery_send_errors: Family::default(),
            delivery_ack_latency: Histogram::new(ACK_BUCKETS),
            probe_requests: Family::default(),
            healthy: Gauge::default(),
            saturated: Gauge::default(),
            canaries_ok: Gauge::default(),
            canaries_total: Gauge::default(),
            membership_members: Gauge::default(),
            membership_changes: Counter::default(),
            membership_handoffs: Family::default(),
            membership_catch_ups: Counter::default(),
            membership_errors: Family::default(),
            spool_files: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_journal_results: Gauge::default(),
            spool_replayed_batches: Counter::default(),
            spool_replayed_results: Counter::default(),
            spool_corrupt_files: Counter::default(),
            spool_torn_records: Counter::default(),
            spool_errors: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("probe_agent");
        r.register("catalog_domains", "Domains in this agent's catalog", self.catalog_domains.clone());
        r.register("catalog_version", "Config version of this agent's catalog", self.catalog_version.clone());
        r.register("catalog_updates", "Single-domain catalog updates applied", self.catalog_updates.clone());
        r.register("catalog_resyncs", "Full catalog reloads by reason", self.catalog_resyncs.clone());
        r.register("catalog_errors", "Catalog sync failures by reason", self.catalog_errors.clone());
        r.register("redis_reconnects", "Reconnections to Redis", self.redis_reconnects.clone());
        r.register("redis_up", "Whether the Redis connection is up", self.redis_up.clone());
        r.register("probes", "Probes finished by outcome", self.probes.clone());
        for reason in crate::probe::DnsErrorReason::ALL {
            let _ = self.dns_failures.get_or_create(&ReasonLabels { reason: reason.as_str().into() });
        }
        r.register(
            "dns_failures",
            "Probes whose name resolution failed, by reason",
            self.dns_failures.clone(),
        );
        for proof in crate::probe::DnssecProof::ALL {
            let _ = self.dnssec_proofs.get_or_create(&ProofLabels { proof: proof.as_str().into() });
        }
        r.register(
            "dnssec_proofs",
            "dns checks validated with DNSSEC, by what validation proved of the answer",
            self.dnssec_proofs.clone(),
        );
        r.register(
            "connect_fallbacks",
            "Probes connected through another address than the first one tried",
            self.connect_fallbacks.clone(),
        );
        r.register(
            "schedule_lag_seconds",
            "Actual minus planned start of scheduled probes",
            self.schedule_lag.clone(),
        );
        r.register("probes_in_flight", "Probes running now", self.probes_in_flight.clone());
        r.register(
            "scheduler_saturated",
            "Due probes that found every slot busy",
            self.scheduler_saturated.clone(),
        );
        r.register(
            "schedule_skipped",
            "Schedule slots skipped after falling behind",
            self.schedule_skipped.clone(),
        );
        r.register(
            "scheduled_domains",
            "Domains on this agent's schedule: its share of the region's domains (paused ones excluded)",
            self.scheduled_domains.clone(),
        );
        r.register(
            "on_demand_probes",
            "Probes requested outside the schedule",
            self.on_demand_probes.clone(),
        );
        for reason in dropped::ALL {
            let _ = self.results_dropped.get_or_create(&ReasonLabels { reason: reason.into() });
        }
        r.register(
            "results_dropped",
            "Results that will never reach the control plane, by reason",
            self.results_dropped.clone(),
        );
        r.register(
            "delivery_buffered_results",
            "Results in unacknowledged batches",
            self.delivery_buffered_results.clone(),
        );
        r.register(
            "delivery_open_results",
            "Results in the open batch, not yet closed",
            self.delivery_open_results.clone(),
        );
        r.register(
            "delivery_buffered_bytes",
            "Encoded bytes of unacknowledged batches",
            self.delivery_buffered_bytes.clone(),
        );
        r.register(
            "delivery_oldest_buffered_age_seconds",
            "Age of the oldest unacknowledged batch",
            self.delivery_oldest_buffered_age.clone(),
        );
        r.register(
            "delivery_batches_created",
            "Batches closed, by trigger",
            self.delivery_batches_created.clone(),
        );
        r.register(
            "delivery_batches_sent",
            "Batch send attempts by outcome",
            self.delivery_batches_sent.clone(),
        );
        r.register(
            "delivery_results_acknowledged",
            "Results acknowledged by the control plane",
            self.delivery_results_acknowledged.clone(),
        );
        r.register(
            "delivery_send_errors",
            "Failed batch sends by gRPC status code",
            self.delivery_send_errors.clone(),
        );
        r.register(
            "delivery_ack_latency_seconds",
            "From sending a batch to its acknowledgement",
            self.delivery_ack_latency.clone(),
        );
        for outcome in requests::ALL {
            let _ = self.probe_requests.get_or_create(&OutcomeLabels { outcome: outcome.into() });
        }
        r.register("probe_requests", "On-demand probe requests by outcome", self.probe_requests.clone());
        r.register(
            "healthy",
            "Whether the latest canary self-check passed (1 without canaries)",
            self.healthy.clone(),
        );
        r.register(
            "saturated",
            "1 while the agent reports itself saturated (probes starting late, every worker busy)",
            self.saturated.clone(),
        );
        r.register(
            "canaries_ok",
            "Canaries that succeeded in the latest self-check",
            self.canaries_ok.clone(),
        );
        r.register("canaries_total", "Canaries configured", self.canaries_total.clone());
        r.register(
            "membership_members",
            "Live agents of this region as last seen, this one included",
            self.membership_members.clone(),
        );
        r.register(
            "membership_changes",
            "Changes of the region's member set seen by this agent",
            self.membership_changes.clone(),
        );
        for direction in handoffs::ALL {
            let _ = self.membership_handoffs.get_or_create(&DirectionLabels { direction: direction.into() });
        }
        r.register(
            "membership_handoffs",
            "Domains that changed hands when the region's member set changed, by direction",
            self.membership_handoffs.clone(),
        );
        r.register(
            "membership_catch_ups",
            "Domains taken over from an agent that may have missed a slot, probed once ahead of their next slot",
            self.membership_catch_ups.clone(),
        );
        for reason in crate::membership::registry::errors::ALL {
            let _ = self.membership_errors.get_or_create(&ReasonLabels { reason: reason.into() });
        }
        r.register(
            "membership_errors",
            "Failures of the region membership registry, by reason",
            self.membership_errors.clone(),
        );
        r.register(
            "spool_files",
            "Batch files in the spool directory (closed, not yet acknowledged)",
            self.spool_files.clone(),
        );
        r.register("spool_bytes", "Bytes of the spool's batch files and journal", self.spool_bytes.clone());
        r.register(
            "spool_journal_results",
            "Results in the spool's journal (the open batch)",
            self.spool_journal_results.clone(),
        );
        r.register(
            "spool_replayed_batches",
            "Batches loaded from the spool at start",
            self.spool_replayed_batches.clone(),
        );
        r.register(
            "spool_replayed_results",
            "Results in the batches loaded from the spool at start",
            self.spool_replayed_results.clone(),
        );
        r.register(
            "spool_corrupt_files",
            "Spool files found unreadable at start and set aside as *.corrupt",
            self.spool_corrupt_files.clone(),
        );
        r.register(
            "spool_torn_records",
            "Journal records found cut short at start and skipped",
            self.spool_torn_records.clone(),
        );
        for op in spool_errors::ALL {
            let _ = self.spool_errors.get_or_create(&OpLabels { op: op.into() });
        }
        r.register(
            "spool_errors",
            "Spool disk operations that failed, by operation (the batch stays in memory)",
            self.spool_errors.clone(),
        );
    }

    /// Counts a failed spool disk operation (see [`spool_errors`]).
    pub fn spool_error(&self, op: &str) {
        self.spool_errors.get_or_create(&OpLabels { op: op.into() }).inc();
    }

    /// Failed spool disk operations of `op` so far.
    pub fn spool_error_count(&self, op: &str) -> u64 {
        self.spool_errors.get_or_create(&OpLabels { op: op.into() }).get()
    }

    /// Counts a failure of the membership registry (see
    /// [`crate::membership::registry::errors`]).
    pub fn membership_error(&self, reason: &str) {
        self.membership_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// Counts `n` domains that changed hands in `direction` (see [`handoffs`]).
    pub fn handoff(&self, direction: &str, n: u64) {
        if n > 0 {
            self.membership_handoffs
                .get_or_create(&DirectionLabels { direction: direction.into() })
                .inc_by(n);
        }
    }

    /// Domains that changed hands in `direction` so far.
    pub fn handoff_count(&self, direction: &str) -> u64 {
        self.membership_handoffs.get_or_create(&DirectionLabels { direction: direction.into() }).get()
    }

    /// Counts `n` on-demand probe requests with `outcome` (see [`requests`]).
    pub fn probe_request(&self, outcome: &str, n: u64) {
        self.probe_requests.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc_by(n);
    }

    /// On-demand probe requests with `outcome` so far.
    pub fn probe_request_count(&self, outcome: &str) -> u64 {
        self.probe_requests.get_or_create(&OutcomeLabels { outcome: outcome.into() }).get()
    }

    /// Counts `n` results that will never reach the control plane.
    pub fn dropped(&self, reason: &str, n: u64) {
        self.results_dropped.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(n);
    }

    /// Results dropped for `reason` so far.
    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.results_dropped.get_or_create(&ReasonLabels { reason: reason.into() }).get()
    }

    /// Results dropped for any reason so far.
    pub fn dropped_total(&self) -> u64 {
        dropped::ALL.iter().map(|r| self.dropped_count(r)).sum()
    }

    pub fn batch_sent(&self, outcome: &str) {
        self.delivery_batches_sent.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn send_error(&self, code: &str) {
        self.delivery_send_errors.get_or_create(&CodeLabels { code: code.into() }).inc();
    }

    pub fn probe(&self, outcome: &str) {
        self.probes.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    /// Counts a probe whose name resolution failed with `reason`.
    pub fn dns_failure(&self, reason: &str) {
        self.dns_failures.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// Validated dns checks whose answer was proven `proof` so far.
    pub fn dnssec_proof_count(&self, proof: crate::probe::DnssecProof) -> u64 {
        self.dnssec_proofs.get_or_create(&ProofLabels { proof: proof.as_str().into() }).get()
    }

    /// Probes whose name resolution failed with `reason` so far.
    pub fn dns_failure_count(&self, reason: &str) -> u64 {
        self.dns_failures.get_or_create(&ReasonLabels { reason: reason.into() }).get()
    }

    pub fn resync(&self, reason: &str) {
        self.catalog_resyncs.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn error(&self, reason: &str) {
        self.catalog_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}
