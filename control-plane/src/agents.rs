//! Probe agents as the control plane knows them: who connected (region, agent id, certificate
//! serial, software version, first and last seen) and which certificates are revoked.
//!
//! The ingest path consults an in-memory snapshot (configured regions, revoked serials) that
//! is refreshed every few seconds and at once after a local revocation, so a batch never waits
//! on the transactional database. Sightings are written behind the request: each agent at most
//! once per `last_seen_interval_s` (and at once when its certificate or version changes), in
//! one upsert per flush however many agents reported.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the snapshot of regions and revoked serials is reloaded.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How often pending sightings are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// An authenticated agent connection, from its verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPeer {
    pub region: String,
    pub agent_id: String,
    pub serial: String,
    pub not_after: DateTime<Utc>,
}

/// Why an authenticated agent is refused anyway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("certificate {0} is revoked")]
    Revoked(String),
    #[error("region {0:?} is not configured on this control plane")]
    UnknownRegion(String),
    #[error("certificate expired at {0}")]
    Expired(DateTime<Utc>),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Revoked(_) => "revoked",
            Refusal::UnknownRegion(_) => "unknown_region",
            Refusal::Expired(_) => "expired",
        }
    }
}

#[derive(Debug, Clone)]
struct Sighting {
    serial: String,
    not_after: DateTime<Utc>,
    version: String,
    seen_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Snapshot {
    regions: HashSet<String>,
    revoked: HashSet<String>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Sightings not yet written, newest per agent.
    unwritten: HashMap<(String, String), Sighting>,
    /// When each agent's sighting was last queued, with the serial and version it had.
    queued: HashMap<(String, String), (Instant, String, String)>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct AgentRegistry {
    pool: PgPool,
    metrics: Metrics,
    last_seen_interval: Duration,
    snapshot: Arc<RwLock<Snapshot>>,
    pending: Arc<Mutex<Pending>>,
    /// Held for a whole flush, so a flush that finds nothing pending still returns only after
    /// a concurrent one (the background task's) has written what it took.
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl AgentRegistry {
    /// Loads the first snapshot.
    pub async fn load(pool: PgPool, metrics: Metrics, last_seen_interval: Duration) -> sqlx::Result<Self> {
        let registry = Self {
            pool,
            metrics,
            last_seen_interval,
            snapshot: Arc::default(),
            pending: Arc::default(),
            flushing: Arc::default(),
        };
        registry.refresh().await?;
        Ok(registry)
    }

    /// Reloads configured regions and revoked serials.
    pub async fn refresh(&self) -> sqlx::Result<()> {
        let regions: Vec<String> = crate::regions::list(&self.pool).await?;
        let revoked: Vec<String> =
            sqlx::query_scalar("SELECT serial FROM revoked_certificates").fetch_all(&self.pool).await?;
        let mut snapshot = self.snapshot.write().expect("agent snapshot lock");
        snapshot.regions = regions.into_iter().collect();
        snapshot.revoked = revoked.into_iter().collect();
        Ok(())
    }

    /// Whether this authenticated agent may send results now.
    pub fn check(&self, peer: &AgentPeer, now: DateTime<Utc>) -> Result<(), Refusal> {
        if peer.not_after < now {
            return Err(Refusal::Expired(peer.not_after));
        }
        let snapshot = self.snapshot.read().expect("agent snapshot lock");
        if snapshot.revoked.contains(&peer.serial) {
            return Err(Refusal::Revoked(peer.serial.clone()));
        }
        if !snapshot.regions.contains(&peer.region) {
            return Err(Refusal::UnknownRegion(peer.region.clone()));
        }
        Ok(())
    }

    /// Records that `peer` reported; written by the next flush unless recorded recently.
    pub fn seen(&self, peer: &AgentPeer, version: &str) {
        let key = (peer.region.clone(), peer.agent_id.clone());
        let now = Instant::now();
        let mut pending = self.pending.lock().expect("agent pending lock");
        let fresh = match pending.queued.get(&key) {
            Some((at, serial, v)) => {
                now.duration_since(*at) < self.last_seen_interval && *serial == peer.serial && v == version
            }
            None => false,
        };
        if fresh {
            return;
        }
        pending.queued.insert(key.clone(), (now, peer.serial.clone(), version.to_owned()));
        pending.unwritten.insert(
            key,
            Sighting {
                serial: peer.serial.clone(),
                not_after: peer.not_after,
                version: version.to_owned(),
                seen_at: Utc::now(),
            },
        );
    }

    /// Writes pending sightings in one statement. On failure they are kept for the next flush.
    /// When it returns, every sighting recorded before the call has been written (or kept).
    pub async fn flush(&self) -> sqlx::Result<usize> {
        let _flushing = self.flushing.lock().await;
        let batch: Vec<((String, String), Sighting)> = {
            let mut pending = self.pending.lock().expect("agent pending lock");
            pending.unwritten.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let mut regions = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        let mut serials = Vec::with_capacity(batch.len());
        let mut not_afters = Vec::with_capacity(batch.len());
        let mut versions = Vec::with_capacity(batch.len());
        let mut seen = Vec::with_capacity(batch.len());
        for ((region, id), s) in &batch {
            regions.push(region.clone());
            ids.push(id.clone());
            serials.push(s.serial.clone());
            not_afters.push(s.not_after);
            versions.push(s.version.clone());
            seen.push(s.seen_at);
        }
        let written = sqlx::query(
            "INSERT INTO agents (region, agent_id, cert_serial, cert_not_after, version, first_seen, last_seen)
             SELECT r, a, s, n, v, t, t
             FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[])
                  AS u(r, a, s, n, v, t)
             WHERE r IN (SELECT name FROM regions)
             ON CONFLICT (region, agent_id) DO UPDATE
             SET cert_serial = CASE WHEN excluded.last_seen >= agents.last_seen
                                    THEN excluded.cert_serial ELSE agents.cert_serial END,
                 cert_not_after = CASE WHEN excluded.last_seen >= agents.last_seen
                                       THEN excluded.cert_not_after ELSE agents.cert_not_after END,
                 version = CASE WHEN excluded.last_seen >= agents.last_seen
                                THEN excluded.version ELSE agents.version END,
                 last_seen = GREATEST(agents.last_seen, excluded.last_seen)",
        )
        .bind(&regions)
        .bind(&ids)
        .bind(&serials)
        .bind(&not_afters)
        .bind(&versions)
        .bind(&seen)
        .execute(&self.pool)
        .await;
        let written = match written {
            Ok(_) => {
                sqlx::query(
                    "INSERT INTO agent_serials (serial, region, agent_id, first_seen, last_seen)
                     SELECT s, r, a, t, t
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(s, r, a, t)
                     ON CONFLICT (serial) DO UPDATE
                     SET last_seen = GREATEST(agent_serials.last_seen, excluded.last_seen)",
                )
                .bind(&serials)
                .bind(&regions)
                .bind(&ids)
                .bind(&seen)
                .execute(&self.pool)
                .await
            }
            Err(error) => Err(error),
        };
        match written {
            Ok(_) => Ok(batch.len()),
            Err(error) => {
                let mut pending = self.pending.lock().expect("agent pending lock");
                for (key, sighting) in batch {
                    pending.unwritten.entry(key).or_insert(sighting);
                }
                Err(error)
            }
        }
    }

    /// Flushes sightings and refreshes the snapshot until `shutdown`, then flushes once more.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut refresh = tokio::time::interval(REFRESH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = flush.tick() => {
                    if let Err(error) = self.flush().await {
                        self.metrics.agents_error("flush");
                        tracing::warn!(%error, "cannot record agent sightings; will retry");
                    }
                }
                _ = refresh.tick() => {
                    if let Err(error) = self.refresh().await {
                        self.metrics.agents_error("refresh");
                        tracing::warn!(%error, "cannot reload revoked certificates and regions; keeping the last snapshot");
                    }
                }
            }
        }
        if let Err(error) = self.flush().await {
            tracing::warn!(%error, "cannot record agent sightings at shutdown");
        }
    }

    /// Revokes every certificate an agent has connected with; this replica refuses them at once.
    pub async fn revoke(&self, region: &str, agent_id: &str, reason: &str) -> sqlx::Result<Vec<String>> {
        let serials = revoke(&self.pool, region, agent_id, reason).await?;
        self.snapshot.write().expect("agent snapshot lock").revoked.extend(serials.iter().cloned());
        Ok(serials)
    }
}

/// Revokes every certificate an agent has connected with (every replica refuses them within
/// [`REFRESH_EVERY`]). Returns their serials; empty when the agent never connected (revoke its
/// certificate on the CA's revocation list instead).
pub async fn revoke(pool: &PgPool, region: &str, agent_id: &str, reason: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "INSERT INTO revoked_certificates (serial, region, agent_id, reason)
         SELECT serial, region, agent_id, $3 FROM agent_serials WHERE region = $1 AND agent_id = $2
         ON CONFLICT (serial) DO UPDATE SET reason = excluded.reason
         RETURNING serial",
    )
    .bind(region)
    .bind(agent_id)
    .bind(reason)
    .fetch_all(pool)
    .await
}

/// One agent, as listed by `GET /v1/regions`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AgentRow {
    pub region: String,
    pub agent_id: String,
    pub cert_serial: String,
    pub cert_not_after: DateTime<Utc>,
    pub version: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub revoked: bool,
    /// Its latest canary verdict (`None`: it sends none, no canaries configured).
    pub healthy: Option<bool>,
    /// When it ran that self-check.
    pub health_checked_at: Option<DateTime<Utc>>,
}

/// Every known agent, by region then id, with its own latest canary verdict.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<AgentRow>> {
    sqlx::query_as(
        "SELECT a.region, a.agent_id, a.cert_serial, a.cert_not_after, a.version, a.first_seen, a.last_seen,
                EXISTS (SELECT 1 FROM revoked_certificates r WHERE r.serial = a.cert_serial) AS revoked,
                h.healthy, h.checked_at AS health_checked_at
         FROM agents a LEFT JOIN agent_health h ON h.region = a.region AND h.agent_id = a.agent_id
         ORDER BY a.region, a.agent_id",
    )
    .fetch_all(pool)
    .await
}
