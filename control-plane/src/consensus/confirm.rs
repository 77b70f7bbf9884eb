//! Confirmation probes: a failure of a domain that is not (yet) down asks its other regions to
//! probe it now (`<prefix>:probe-requests`), at most once per `confirmation_min_interval_ms`
//! per domain across replicas (a `SET NX PX` lock in Redis). A latency anomaly of a domain not
//! (yet) degraded, in a region not (yet) degraded, asks every region of the domain, the slow
//! one included, at most once per `degraded_confirmation_interval_ms` (a lock of its own): K
//! anomalous probes in a row then arrive within a few probe durations instead of K intervals,
//! and a region that stays slow alone stops asking once it is degraded itself.
//!
//! Confirmations only hasten a decision, and the round that asks for them waits for the asking:
//! while Redis is away (not connected) they are skipped, and each Redis call is bounded by
//! [`REDIS_CALL_TIMEOUT`] rather than the client's command timeout, so a Redis outage never
//! holds up the consensus rounds (a failure in a quorum of regions is decided from the
//! regular probes, as fast as with Redis).

use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use shared::{DomainId, ProbeRequest};
use uuid::Uuid;

use super::Consensus;

/// Longest one confirmation call to Redis may take before the round goes on without it.
const REDIS_CALL_TIMEOUT: Duration = Duration::from_millis(500);

impl Consensus {
    /// Asks `regions` (the domain's as stored; empty: every region) to probe the domain now
    /// because a region saw its latency jump, at most once per
    /// `degraded_confirmation_interval_ms` per domain (across replicas, through Redis).
    pub async fn confirm_anomaly(&self, domain_id: Uuid, regions: Vec<String>) {
        let key = format!("{}:latency", self.keys.confirmation_lock(&domain_id.to_string()));
        if !self.take_slot(key, self.settings.anomaly_confirmation_interval, "latency_rate_limited").await {
            return;
        }
        let request = ProbeRequest {
            domain_id: DomainId(domain_id),
            regions,
            reason: "latency".into(),
            request_id: None,
            config: None,
        };
        self.publish_request(domain_id, &request, "latency_published").await;
    }

    /// Asks the domain's regions other than `failing` to probe it now, at most once per
    /// `confirmation_min_interval_ms` per domain (across replicas, through Redis).
    pub async fn confirm(&self, domain_id: Uuid, failing: &[String], regions: &[String]) {
        let others: Vec<String> = regions.iter().filter(|r| !failing.contains(r)).cloned().collect();
        if others.is_empty() {
            return;
        }
        let key = self.keys.confirmation_lock(&domain_id.to_string());
        if !self.take_slot(key, self.settings.confirmation_min_interval, "rate_limited").await {
            return;
        }
        let request = ProbeRequest {
            domain_id: DomainId(domain_id),
            regions: others,
            reason: "confirmation".into(),
            request_id: None,
            config: None,
        };
        self.publish_request(domain_id, &request, "published").await;
    }

    /// Takes the rate-limit slot `key` for `interval` (`SET NX PX`, shared by every replica):
    /// false when it is already taken (counted as `limited`), Redis is not connected (counted
    /// as `redis_unavailable`), or Redis failed or did not answer within
    /// [`REDIS_CALL_TIMEOUT`] (counted as `error` and logged).
    async fn take_slot(&self, key: String, interval: Duration, limited: &str) -> bool {
        if !self.redis.is_connected() {
            self.metrics.confirmation("redis_unavailable");
            return false;
        }
        let ms = (interval.as_millis() as i64).max(1);
        let lock = tokio::time::timeout(
            REDIS_CALL_TIMEOUT,
            self.redis.set::<Option<String>, _, _>(
                key,
                1,
                Some(Expiration::PX(ms)),
                Some(SetOptions::NX),
                false,
            ),
        )
        .await;
        match lock {
            Ok(Ok(Some(_))) => true,
            Ok(Ok(None)) => {
                self.metrics.confirmation(limited);
                false
            }
            Ok(Err(error)) => {
                self.metrics.confirmation("error");
                self.error("confirmation", &error);
                false
            }
            Err(_) => {
                self.metrics.confirmation("error");
                self.error(
                    "confirmation",
                    &format_args!("redis did not answer within {REDIS_CALL_TIMEOUT:?}"),
                );
                false
            }
        }
    }

    /// Publishes a confirmation request, counted as `outcome` once published.
    async fn publish_request(&self, domain_id: Uuid, request: &ProbeRequest, outcome: &str) {
        let payload = match serde_json::to_string(request) {
            Ok(payload) => payload,
            Err(error) => return self.error("confirmation", &error),
        };
        let published = tokio::time::timeout(
            REDIS_CALL_TIMEOUT,
            self.redis.publish::<i64, _, _>(self.keys.probe_requests(), payload),
        )
        .await;
        match published {
            Ok(Ok(_)) => {
                self.metrics.confirmation(outcome);
                tracing::debug!(%domain_id, reason = %request.reason, regions = ?request.regions, "confirmation probe requested");
            }
            Ok(Err(error)) => {
                self.metrics.confirmation("error");
                self.error("confirmation", &error);
            }
            Err(_) => {
                self.metrics.confirmation("error");
                self.error(
                    "confirmation",
                    &format_args!("redis did not answer within {REDIS_CALL_TIMEOUT:?}"),
                );
            }
        }
    }
}
