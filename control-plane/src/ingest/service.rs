//! The `Ingest` gRPC service: check the agent (from its certificate, never the payload),
//! validate the batch, hand it to the time-series writers, and acknowledge only once it is
//! committed. After the commit, the batch's observations go to consensus through a bounded
//! queue that never blocks the answer.
//!
//! Results for domains the agent does not serve (unknown, paused, or not run in its region)
//! are dropped by [`super::scope`] before anything is stored, counted, and acknowledged.
//!
//! Results carrying a `request_id` answer an operator's check test: they are taken out of the
//! batch before anything is stored, never reach the time-series database or consensus, and are
//! published for the waiting API request ([`crate::checks::ResultPublisher`]). A batch of only
//! such results is acknowledged with `stored = 0`.

use std::sync::Arc;
use std::time::Instant;

use shared::proto::v1::ingest_server::Ingest;
use shared::proto::{Ack, Batch, MAX_BATCH_RESULTS};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::revocation::IngestTls;
use crate::agents::{AgentPeer, AgentRegistry, Refusal};
use crate::consensus::{ObservationSender, ObservedBatch};
use crate::metrics::Metrics;
use crate::timeseries::{IngestBatch, IngestError, Timeseries};

pub struct IngestService {
    pub registry: AgentRegistry,
    pub timeseries: Timeseries,
    pub metrics: Metrics,
    pub observations: ObservationSender,
    /// The TLS configuration in force; its revocation list is checked on every request, so a
    /// certificate revoked by a new CRL is refused on connections opened before it too.
    pub tls: watch::Receiver<Arc<IngestTls>>,
    pub checks: crate::checks::ResultPublisher,
    /// The transactional database: which domains the agent serves ([`super::scope`]).
    pub pool: sqlx::PgPool,
    pub rejections: super::scope::RejectionLog,
}

impl IngestService {
    /// Whether the agent may send: the agents table (expiry, revocation, region), then the CRL.
    fn check(&self, peer: &AgentPeer) -> Result<(), Refusal> {
        self.registry.check(peer, chrono::Utc::now())?;
        if self.tls.borrow().revoked.contains(&peer.serial) {
            return Err(Refusal::Revoked(peer.serial.clone()));
        }
        Ok(())
    }

    async fn handle(&self, peer: AgentPeer, mut batch: Batch) -> Result<Ack, Status> {
        if let Err(refusal) = self.check(&peer) {
            self.metrics.refused(refusal.reason());
            tracing::warn!(
                region = %peer.region, agent_id = %peer.agent_id, serial = %peer.serial, %refusal,
                "batch refused"
            );
            return Err(match refusal {
                Refusal::Expired(_) => Status::unauthenticated(refusal.to_string()),
                Refusal::Revoked(_) | Refusal::UnknownRegion(_) => {
                    Status::permission_denied(refusal.to_string())
                }
            });
        }
        let invalid = |message: String| {
            self.metrics.batch("invalid");
            tracing::warn!(region = %peer.region, agent_id = %peer.agent_id, %message, "batch refused as invalid");
            Status::invalid_argument(message)
        };
        let Some(batch_id) = shared::proto::uuid_from_bytes(&batch.batch_id) else {
            return Err(invalid(format!("batch_id must be 16 bytes, got {}", batch.batch_id.len())));
        };
        if batch.results.is_empty() {
            return Err(invalid("a batch must carry at least one result".into()));
        }
        if batch.results.len() > MAX_BATCH_RESULTS {
            return Err(invalid(format!(
                "{} results exceed the limit of {MAX_BATCH_RESULTS} per batch",
                batch.results.len()
            )));
        }
        if !batch.claimed_region.is_empty() && batch.claimed_region != peer.region {
            self.metrics.ingest_region_mismatch.inc();
            tracing::warn!(
                certificate_region = %peer.region, claimed_region = %batch.claimed_region, agent_id = %peer.agent_id,
                "agent claims another region than its certificate; the certificate's region is used"
            );
        }
        self.registry.seen(&peer, &batch.agent_version);
        let (tests, results): (Vec<_>, Vec<_>) =
            std::mem::take(&mut batch.results).into_iter().partition(|r| r.request_id.is_some());
        batch.results = results;
        if !tests.is_empty() {
            self.checks.publish(&peer.region, &peer.agent_id, tests);
            if batch.results.is_empty() {
                self.metrics.batch("tests_only");
                return Ok(Ack { batch_id: batch.batch_id, stored: 0, duplicate: false });
            }
        }
        // Only domains that exist, run and run here: the rest is counted and acknowledged, and
        // never reaches storage or consensus.
        let screened = match super::scope::screen(
            &self.pool,
            &peer.region,
            std::mem::take(&mut batch.results),
        )
        .await
        {
            Ok(screened) => screened,
            Err(error) => {
                self.metrics.batch("unavailable");
                tracing::warn!(region = %peer.region, agent_id = %peer.agent_id, error = %shared::error::Chain(&error), "cannot screen a batch; the agent resends it");
                return Err(Status::unavailable("cannot check the batch's domains now"));
            }
        };
        self.rejections.record(&peer.region, &peer.agent_id, &screened);
        batch.results = screened.kept;
        if batch.results.is_empty() {
            self.metrics.batch("rejected");
            return Ok(Ack { batch_id: batch.batch_id, stored: 0, duplicate: false });
        }
        let observed = ObservedBatch::from_batch(&peer.region, &peer.agent_id, &batch, chrono::Utc::now());
        let stored = self
            .timeseries
            .ingest(IngestBatch {
                region: peer.region.clone(),
                agent_id: peer.agent_id.clone(),
                batch_id,
                results: batch.results,
            })
            .await;
        match stored {
            Ok(outcome) => {
                self.metrics.batch(if outcome.duplicate { "duplicate" } else { "stored" });
                self.metrics.ingest_results.inc_by(u64::from(outcome.stored));
                if !outcome.duplicate {
                    self.observations.offer(observed);
                }
                Ok(Ack { batch_id: batch.batch_id, stored: outcome.stored, duplicate: outcome.duplicate })
            }
            Err(IngestError::Invalid(message)) => Err(invalid(message)),
            Err(IngestError::Unavailable(message)) => {
                self.metrics.batch("unavailable");
                tracing::debug!(region = %peer.region, agent_id = %peer.agent_id, %message, "batch not stored");
                Err(Status::unavailable(message))
            }
        }
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn send_batch(&self, request: Request<Batch>) -> Result<Response<Ack>, Status> {
        let started = Instant::now();
        let Some(peer) = request.extensions().get::<AgentPeer>().cloned() else {
            self.metrics.refused("no_identity");
            return Err(Status::unauthenticated("no verified agent certificate on this connection"));
        };
        let answer = self.handle(peer, request.into_inner()).await;
        self.metrics.ingest_ack_seconds.observe(started.elapsed().as_secs_f64());
        answer.map(Response::new)
    }
}
