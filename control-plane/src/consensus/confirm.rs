//! Confirmation probes: a failure of a domain that is not (yet) down asks its other regions to
//! probe it now (`<prefix>:probe-requests`), at most once per `confirmation_min_interval_ms`
//! per domain across replicas (a `SET NX PX` lock in Redis). A latency anomaly of a domain not
//! (yet) degraded, in a region not (yet) degraded, asks every region of the domain, the slow
//! one included, at most once per `degraded_confirmation_interval_ms` (a lock of its own): K
//! anomalous probes in a row then arrive within a few probe durations instead of K intervals,
//! and a region that stays slow alone stops asking once it is degraded itself.

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use shared::{DomainId, ProbeRequest};
use uuid::Uuid;

use super::Consensus;

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
    /// false when it is already taken (counted as `limited`) or Redis failed (counted and logged).
    async fn take_slot(&self, key: String, interval: std::time::Duration, limited: &str) -> bool {
        let ms = (interval.as_millis() as i64).max(1);
        let lock: Result<Option<String>, _> =
            self.redis.set(key, 1, Some(Expiration::PX(ms)), Some(SetOptions::NX), false).await;
        match lock {
            Ok(Some(_)) => true,
            Ok(None) => {
                self.metrics.confirmation(limited);
                false
            }
            Err(error) => {
                self.metrics.confirmation("error");
                self.error("confirmation", &error);
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
        match self.redis.publish::<i64, _, _>(self.keys.probe_requests(), payload).await {
            Ok(_) => {
                self.metrics.confirmation(outcome);
                tracing::debug!(%domain_id, reason = %request.reason, regions = ?request.regions, "confirmation probe requested");
            }
            Err(error) => {
                self.metrics.confirmation("error");
                self.error("confirmation", &error);
            }
        }
    }
}
