//! Evaluation: deciding many domains in one transaction with a fixed number of round trips
//! (about a dozen statements per batch, whatever its size), under each domain's `domain_state`
//! row lock.
//!
//! 1. Claim: the domain rows `FOR KEY SHARE` (the lock order of domain writes: domain row
//!    first), creating missing `domain_state` rows; then the state rows `FOR UPDATE`. Both in
//!    domain order, and with [`Claim::Skip`] `SKIP LOCKED`: a domain held by another evaluation
//!    (this replica's sweep, another replica), the flap check or a domain write is passed over
//!    and reported in [`Round::skipped`] for the caller to evaluate again, never waited for.
//! 2. Read, in statements after the locks (so they see everything committed before them,
//!    including what an evaluation that held a lock just decided from): every claimed domain's
//!    observations, the regions' agent health, the region list.
//! 3. Decide each domain in Rust with the pure [`decide::decide`].
//! 4. Write the transitions in bulk: flap assessments ([`flap::assess_many`]), incidents opened
//!    and resolved with their events and outbox rows ([`incidents::open_many`],
//!    [`incidents::resolve_many`]), `domain_transitions` and flap periods
//!    ([`flap::record_many`]), the new states; then COMMIT. A transition and its notifications
//!    therefore commit together, and one transition opens one incident.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::decide::{self, Decision, Health, Observation, Outcome, Standing, State};
use super::observations::health;
use super::{Consensus, Evaluated};
use crate::flap;
use crate::incidents::{self, Subject};

/// Domains evaluated in one transaction at most; larger sets are split.
pub const EVALUATE_BATCH: usize = 500;

/// What an evaluation does about rows another transaction holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Waits for them (rows are locked in domain order, so waiting evaluations cannot deadlock
    /// each other).
    Wait,
    /// Passes them over (`SKIP LOCKED`) and reports them in [`Round::skipped`].
    Skip,
}

/// The result of evaluating a set of domains.
#[derive(Debug, Default)]
pub struct Round {
    /// Per domain evaluated, its result.
    pub evaluated: HashMap<Uuid, Evaluated>,
    /// Domains whose rows were locked elsewhere ([`Claim::Skip`]): not evaluated, to be tried
    /// again.
    pub skipped: Vec<Uuid>,
    /// Domains that do not exist (deleted).
    pub missing: Vec<Uuid>,
}

/// A domain as consensus needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct DomainRow {
    id: Uuid,
    tenant_id: Uuid,
    url: String,
    regions: Vec<String>,
    quorum: Option<i32>,
    interval_s: i32,
    paused: bool,
    flap: Option<Value>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct StateRow {
    domain_id: Uuid,
    state: String,
    open_incident_id: Option<Uuid>,
    since: DateTime<Utc>,
    announce_after: Option<DateTime<Utc>>,
}

#[derive(Debug, sqlx::FromRow)]
struct ObservationRow {
    domain_id: Uuid,
    region: String,
    ok: bool,
    error_kind: Option<String>,
    status_code: Option<i32>,
    observed_at: DateTime<Utc>,
    agent_id: String,
    degraded: bool,
}

/// A decided transition waiting to be written.
struct Change {
    subject: Subject,
    at: DateTime<Utc>,
    from: State,
    to: State,
    /// The regions whose votes decided it, as stored on the incident and its event.
    voting: Value,
    open_incident: Option<Uuid>,
    flap: flap::Settings,
    decision: Decision,
    regions: Vec<String>,
}

/// A held incident to announce now that a failure quorum observed after a resume confirms the
/// outage goes on.
struct Announce {
    subject: Subject,
    incident: Uuid,
}

impl Consensus {
    /// Evaluates one domain at `now`, waiting for its rows if another evaluation holds them.
    /// `None` when the domain does not exist.
    pub async fn evaluate(&self, domain_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<Option<Evaluated>> {
        let mut round = self.evaluate_many(&[(domain_id, now)], Claim::Wait).await?;
        Ok(round.evaluated.remove(&domain_id))
    }

    /// Evaluates each domain at its instant (a domain listed twice: at the later one) in one
    /// transaction (see the module documentation). Callers split large sets into batches of
    /// [`EVALUATE_BATCH`]. On error nothing was written.
    pub async fn evaluate_many(
        &self,
        items: &[(Uuid, DateTime<Utc>)],
        claim: Claim,
    ) -> anyhow::Result<Round> {
        let mut wanted: BTreeMap<Uuid, DateTime<Utc>> = BTreeMap::new();
        for (id, at) in items {
            let entry = wanted.entry(*id).or_insert(*at);
            *entry = (*entry).max(*at);
        }
        if wanted.is_empty() {
            return Ok(Round::default());
        }
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let written = match self.evaluate_in(&mut tx, &wanted, claim).await {
            Ok(written) => written,
            Err(error) => {
                // Ended now, not when the pool gets around to it: the rows stay locked until then.
                let _ = tx.rollback().await;
                return Err(error);
            }
        };
        tx.commit().await?;
        let claimed = written.round.evaluated.len();
        self.metrics.consensus_evaluations.inc_by(claimed as u64);
        self.metrics.consensus_batch_size.observe(claimed as f64);
        self.metrics.consensus_batch_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.consensus_skipped_locked.inc_by(written.round.skipped.len() as u64);
        for (id, evaluated) in &written.round.evaluated {
            self.remember(*id, evaluated.state);
        }
        for change in &written.changes {
            let evaluated = &written.round.evaluated[&change.subject.domain_id];
            self.committed(change, evaluated);
            self.live.publish(crate::live::Event::state(
                change.subject.tenant_id,
                change.subject.domain_id,
                change.from.as_str(),
                change.to.as_str(),
                evaluated.incident,
                change.at,
            ));
        }
        Ok(written.round)
    }

    /// Metrics and the log line of a committed transition.
    fn committed(&self, change: &Change, evaluated: &Evaluated) {
        let domain_id = change.subject.domain_id;
        self.metrics.transition(change.from.as_str(), change.to.as_str());
        match evaluated.flap {
            flap::Decision::Enter => {
                self.metrics.flap_entries.inc();
                tracing::info!(%domain_id, "domain entered flap mode");
            }
            flap::Decision::Leave => {
                self.metrics.flap_exits.inc();
                tracing::info!(%domain_id, settled = change.to.as_str(), "domain left flap mode");
            }
            _ => {}
        }
        if evaluated.flap.flapping() && evaluated.incident.is_some() {
            self.metrics.flap_held_notifications.inc();
        }
        match evaluated.outcome {
            Outcome::Down | Outcome::Degraded => self.metrics.incidents_opened.inc(),
            _ if evaluated.incident.is_some() => self.metrics.incidents_resolved.inc(),
            _ => 0,
        };
        tracing::info!(
            %domain_id, from = change.from.as_str(), to = change.to.as_str(), incident = ?evaluated.incident,
            failing = change.decision.failing, passing = change.decision.passing,
            quorum = change.decision.quorum, flap = ?evaluated.flap, "domain state changed"
        );
    }

    async fn evaluate_in(
        &self,
        tx: &mut sqlx::PgConnection,
        wanted: &BTreeMap<Uuid, DateTime<Utc>>,
        claim: Claim,
    ) -> anyhow::Result<Written> {
        let ids: Vec<Uuid> = wanted.keys().copied().collect();
        let ats: Vec<DateTime<Utc>> = wanted.values().copied().collect();
        let skip = match claim {
            Claim::Wait => "",
            Claim::Skip => " SKIP LOCKED",
        };
        let mut round = Round::default();

        // 1. Claim the domain rows (creating missing state rows), then the state rows.
        let domains: Vec<DomainRow> = sqlx::query_as(&format!(
            "WITH d AS MATERIALIZED (
                 SELECT id, tenant_id, url, regions, quorum, interval_s, paused, flap FROM domains
                 WHERE id = ANY($1) ORDER BY id FOR KEY SHARE{skip}),
             created AS (
                 INSERT INTO domain_state (domain_id, state, since)
                 SELECT u.id, 'unknown', u.at FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
                 WHERE u.id IN (SELECT id FROM d) ORDER BY u.id
                 ON CONFLICT (domain_id) DO NOTHING)
             SELECT * FROM d ORDER BY id"
        ))
        .bind(&ids)
        .bind(&ats)
        .fetch_all(&mut *tx)
        .await?;
        if domains.len() < ids.len() {
            let claimed: std::collections::HashSet<Uuid> = domains.iter().map(|d| d.id).collect();
            let absent: Vec<Uuid> = ids.iter().copied().filter(|id| !claimed.contains(id)).collect();
            let existing: Vec<Uuid> = match claim {
                Claim::Wait => Vec::new(),
                Claim::Skip => {
                    sqlx::query_scalar("SELECT id FROM domains WHERE id = ANY($1)")
                        .bind(&absent)
                        .fetch_all(&mut *tx)
                        .await?
                }
            };
            for id in absent {
                if existing.contains(&id) {
                    round.skipped.push(id);
                } else {
                    round.missing.push(id);
                }
            }
        }
        if domains.is_empty() {
            return Ok(Written { round, changes: Vec::new() });
        }
        let domain_ids: Vec<Uuid> = domains.iter().map(|d| d.id).collect();
        let states: Vec<StateRow> = sqlx::query_as(&format!(
            "SELECT domain_id, state, open_incident_id, since, announce_after FROM domain_state
             WHERE domain_id = ANY($1) ORDER BY domain_id FOR UPDATE{skip}"
        ))
        .bind(&domain_ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut states: HashMap<Uuid, StateRow> = states.into_iter().map(|s| (s.domain_id, s)).collect();
        let domains: Vec<(DomainRow, StateRow)> = domains
            .into_iter()
            .filter_map(|d| match states.remove(&d.id) {
                Some(state) => Some((d, state)),
                None => {
                    round.skipped.push(d.id);
                    None
                }
            })
            .collect();
        if domains.is_empty() {
            return Ok(Written { round, changes: Vec::new() });
        }

        // 2. Read what the decisions need, now that the rows are held.
        let locked: Vec<Uuid> = domains.iter().map(|(d, _)| d.id).collect();
        let rows: Vec<ObservationRow> = sqlx::query_as(
            "SELECT o.domain_id, o.region, o.ok, o.error_kind, o.status_code, o.observed_at, o.agent_id,
                    COALESCE(b.degraded, false) AS degraded
             FROM region_observations o
             LEFT JOIN latency_baselines b ON b.domain_id = o.domain_id AND b.region = o.region
             WHERE o.domain_id = ANY($1) ORDER BY o.domain_id, o.region",
        )
        .bind(&locked)
        .fetch_all(&mut *tx)
        .await?;
        let mut observations: HashMap<Uuid, Vec<Observation>> = HashMap::new();
        for r in rows {
            observations.entry(r.domain_id).or_default().push(Observation {
                region: r.region,
                ok: r.ok,
                error_kind: r.error_kind,
                status_code: r.status_code,
                observed_at: r.observed_at,
                agent_id: r.agent_id,
                degraded: r.degraded,
            });
        }
        let health: HashMap<String, Health> = health(&mut *tx).await?;
        let every_region: Vec<String> = if domains.iter().any(|(d, _)| d.regions.is_empty()) {
            crate::regions::list(&mut *tx).await?
        } else {
            Vec::new()
        };

        // 3. Decide.
        let mut changes: Vec<Change> = Vec::new();
        let mut announce: Vec<Announce> = Vec::new();
        for (domain, state) in domains {
            // `now` was taken before the lock: an evaluation that committed meanwhile may have
            // stamped a later transition. Never record one before it, so transitions (and the
            // flap score and digests built from them) stay in commit order.
            let now = wanted[&domain.id].max(state.since);
            let current = State::parse(&state.state);
            let regions =
                if domain.regions.is_empty() { every_region.clone() } else { domain.regions.clone() };
            let unchanged = Evaluated {
                state: current,
                outcome: Outcome::Unchanged,
                incident: None,
                regions: regions.clone(),
                flap: flap::Decision::Nothing,
            };
            if domain.paused {
                round.evaluated.insert(domain.id, unchanged);
                continue;
            }
            let decision = decide::decide(&decide::Inputs {
                regions: &regions,
                quorum: domain.quorum.and_then(|q| u32::try_from(q).ok()),
                freshness: decide::freshness(domain.interval_s.max(1) as u32, self.settings.freshness_factor),
                now,
                observations: observations.get(&domain.id).map(Vec::as_slice).unwrap_or_default(),
                health: &health,
                current,
            });
            let subject =
                Subject { tenant_id: domain.tenant_id, domain_id: domain.id, url: domain.url.clone() };
            let (to, voting) = match decision.outcome {
                Outcome::Unchanged => {
                    if let (Some(after), Some(incident), State::Down) =
                        (state.announce_after, state.open_incident_id, current)
                    {
                        // Resumed while its incident's opening was held: announce it once a
                        // failure quorum observed after the resume confirms the outage goes on.
                        let confirmed = decision
                            .votes
                            .iter()
                            .filter(|v| v.standing == Standing::Failing)
                            .filter(|v| v.observation.as_ref().is_some_and(|o| o.observed_at >= after))
                            .count() as u32;
                        if confirmed >= decision.quorum {
                            announce.push(Announce { subject, incident });
                        }
                    }
                    round.evaluated.insert(domain.id, unchanged);
                    continue;
                }
                Outcome::Down => (State::Down, voters(&decision, Standing::Failing)),
                Outcome::Up => (State::Up, voters(&decision, Standing::Ok)),
                Outcome::Degraded => (State::Degraded, voters(&decision, Standing::Degraded)),
            };
            let flap =
                flap::settings_for(&self.settings.flap, domain.flap.as_ref(), domain.id, &self.metrics);
            changes.push(Change {
                subject,
                at: now,
                from: current,
                to,
                voting,
                open_incident: state.open_incident_id,
                flap,
                decision,
                regions,
            });
        }

        // 4. Write.
        let incidents = self.write_changes(tx, &changes).await?;
        for (change, (incident, flap)) in changes.iter().zip(incidents) {
            round.evaluated.insert(
                change.subject.domain_id,
                Evaluated {
                    state: change.to,
                    outcome: change.decision.outcome,
                    incident,
                    regions: change.regions.clone(),
                    flap,
                },
            );
        }
        for Announce { subject, incident } in &announce {
            let added = incidents::announce_after_resume(tx, subject, *incident).await?;
            sqlx::query("UPDATE domain_state SET announce_after = NULL WHERE domain_id = $1")
                .bind(subject.domain_id)
                .execute(&mut *tx)
                .await?;
            tracing::info!(domain_id = %subject.domain_id, %incident, added, "held incident announced: still down after monitoring resumed");
        }
        Ok(Written { round, changes })
    }

    /// Writes the transitions: flap assessment, incidents, transition rows and flap periods,
    /// the new states. Returns per change the incident it opened or resolved and the flap
    /// decision.
    async fn write_changes(
        &self,
        tx: &mut sqlx::PgConnection,
        changes: &[Change],
    ) -> anyhow::Result<Vec<(Option<Uuid>, flap::Decision)>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // Flap detection first: it decides whether each incident's notification goes out.
        let candidates: Vec<flap::Candidate<'_>> = changes
            .iter()
            .map(|c| flap::Candidate {
                domain_id: c.subject.domain_id,
                from: c.from.as_str(),
                to: c.to.as_str(),
                at: c.at,
                settings: &c.flap,
            })
            .collect();
        let assessments = flap::assess_many(tx, &candidates).await?;
        let mut incident: Vec<Option<Uuid>> = vec![None; changes.len()];
        let mut openings = Vec::new();
        let mut resolutions = Vec::new();
        let mut resolving = Vec::new();
        for (i, (change, assessment)) in changes.iter().zip(&assessments).enumerate() {
            // The open incident ends with any change of state (down → degraded resolves the
            // outage and opens a degraded incident, and the other way round), before the new
            // one opens: at most one is open per domain.
            if let Some(id) = change.open_incident {
                resolving.push(i);
                resolutions.push(incidents::Resolution {
                    id,
                    kind: incident_kind(change.from),
                    subject: &change.subject,
                    at: change.at,
                    regions: &change.voting,
                    alert: assessment.alert(),
                });
            }
            if matches!(change.to, State::Down | State::Degraded) {
                let id = Uuid::now_v7();
                incident[i] = Some(id);
                openings.push(incidents::Opening {
                    id,
                    kind: incident_kind(change.to),
                    subject: &change.subject,
                    at: change.at,
                    regions: &change.voting,
                    alert: assessment.alert(),
                });
            }
        }
        let resolved = incidents::resolve_many(tx, &resolutions).await?;
        for (i, (resolution, done)) in resolving.into_iter().zip(resolutions.iter().zip(resolved)) {
            if incident[i].is_none() {
                incident[i] = done.then_some(resolution.id);
            }
        }
        incidents::open_many(tx, &openings).await?;
        let transitions: Vec<(flap::Transition<'_>, Option<Uuid>, &flap::Assessment)> = changes
            .iter()
            .zip(&assessments)
            .zip(&incident)
            .map(|((c, a), incident)| {
                let transition = flap::Transition {
                    subject: &c.subject,
                    at: c.at,
                    from: c.from.as_str(),
                    to: c.to.as_str(),
                    regions: &c.voting,
                };
                (transition, *incident, a)
            })
            .collect();
        flap::record_many(tx, &transitions).await?;
        let ids: Vec<Uuid> = changes.iter().map(|c| c.subject.domain_id).collect();
        let states: Vec<&str> = changes.iter().map(|c| c.to.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = changes.iter().map(|c| c.at).collect();
        sqlx::query(
            "UPDATE domain_state s
             SET state = u.state, since = u.at, evaluated_at = u.at, announce_after = NULL,
                 open_incident_id = CASE WHEN u.state IN ('down', 'degraded') THEN u.incident ELSE NULL END
             FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::uuid[]) AS u(domain_id, state, at, incident)
             WHERE s.domain_id = u.domain_id",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&ats)
        .bind(&incident)
        .execute(&mut *tx)
        .await?;
        Ok(incident.into_iter().zip(assessments.iter().map(|a| a.decision)).collect())
    }
}

/// What an evaluation transaction wrote, for after its commit.
struct Written {
    round: Round,
    changes: Vec<Change>,
}

/// The kind of the incident a domain in `state` has open.
fn incident_kind(state: State) -> incidents::Kind {
    match state {
        State::Degraded => incidents::Kind::Degraded,
        _ => incidents::Kind::Down,
    }
}

/// The voting regions with `standing`, as stored on incidents and events.
fn voters(decision: &decide::Decision, standing: Standing) -> Value {
    Value::Array(
        decision
            .votes
            .iter()
            .filter(|v| v.standing == standing)
            .filter_map(|v| v.observation.as_ref())
            .map(|o| {
                json!({
                    "region": o.region, "error_kind": o.error_kind, "status_code": o.status_code,
                    "observed_at": o.observed_at, "agent_id": o.agent_id,
                })
            })
            .collect(),
    )
}
