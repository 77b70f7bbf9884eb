//! The sweep: every `consensus_sweep_interval_ms`, the domains that could change state are
//! evaluated again, which also repairs whatever an evaluation error or a stale per-replica
//! hint skipped.

use uuid::Uuid;

use super::evaluate::{Claim, EVALUATE_BATCH};
use super::Consensus;

impl Consensus {
    /// Re-evaluates every domain that could change state: one without a decided state, or one
    /// with a fresh observation that disagrees with its state (a failure while up or degraded,
    /// a success while down, a degraded region while up, a region no longer degraded while
    /// degraded), or one resumed with a held incident to announce if it is still down. A
    /// domain whose observations all agree with its state cannot transition, whatever goes
    /// stale: staleness only removes voters. Evaluates them [`EVALUATE_BATCH`] at a time,
    /// waiting for rows an evaluation elsewhere holds (the sweep runs in a task of its own).
    /// Returns how many were found.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        // Only fresh observations can vote, so only they can move a domain.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT o.domain_id FROM region_observations o
             JOIN domains d ON d.id = o.domain_id
             LEFT JOIN domain_state s USING (domain_id)
             LEFT JOIN latency_baselines b ON b.domain_id = o.domain_id AND b.region = o.region
             WHERE o.observed_at > $2 - make_interval(secs => d.interval_s * $1 + 5)
               AND (s.state IS NULL OR s.state NOT IN ('up', 'down', 'degraded') OR s.announce_after IS NOT NULL
                    OR (s.state IN ('up', 'degraded') AND NOT o.ok) OR (s.state = 'down' AND o.ok)
                    OR (s.state = 'up' AND o.ok AND COALESCE(b.degraded, false))
                    OR (s.state = 'degraded' AND o.ok AND NOT COALESCE(b.degraded, false)))
             ORDER BY o.domain_id",
        )
        .bind(self.settings.freshness_factor)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        for chunk in ids.chunks(EVALUATE_BATCH) {
            let items: Vec<_> = chunk.iter().map(|id| (*id, now)).collect();
            if let Err(error) = self.evaluate_many(&items, Claim::Wait).await {
                self.error("evaluate", &shared::error::Chain(&*error).to_string());
            }
        }
        Ok(ids.len())
    }
}
