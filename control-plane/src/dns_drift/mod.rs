//! DNS drift: the control plane keeps each domain's known answer set per region and records a
//! change when a region's probes answer a different set `stable_probes` times in a row
//! ([`fold`]). A change inside the domain's rotation rules (allowed networks, same network:
//! [`settings`]) updates the known set quietly; any other is recorded and, when the domain opted
//! in (`dns_drift.notify`), raises a `dns_changed` notification naming what was added and
//! removed and in which region. Every change is recorded either way (`GET /v1/domains/{id}/dns`).
//!
//! [`track`] runs for each recorded batch of observations (one region), set-based whatever the
//! batch's size: one read of the batch's domains with their settings and region states, the
//! fold in memory, one upsert of the states, one insert of the changes and one enqueue of the
//! notifications, in one transaction. A transaction-level advisory lock per region serializes
//! two replicas folding the same region's batches.

pub mod fold;
pub mod settings;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

pub use fold::{Change, RegionState};
pub use settings::Settings;

use crate::notify::{self, Notification};

/// The notification kind of a confirmed change.
pub const KIND: &str = "dns_changed";

/// One probe's answer set: every address the domain's name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub domain_id: Uuid,
    pub observed_at: DateTime<Utc>,
    /// Sorted, deduplicated, non-empty.
    pub addrs: Vec<String>,
}

/// What [`track`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// Confirmed changes recorded.
    pub changes: usize,
    /// Of which inside the rotation rules.
    pub rotations: usize,
    /// Outbox rows added for `dns_changed` notifications.
    pub notified: u64,
}

fn to_json(addrs: &[String]) -> Value {
    Value::from(addrs.to_vec())
}

fn from_json(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

type StateRow = (
    Uuid,
    Uuid,
    String,
    Option<Value>,
    Option<Value>,
    Option<DateTime<Utc>>,
    Option<Value>,
    Option<i32>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// Folds `answers` (one region's probes, any order) into the region's drift states and records
/// what they confirm, in one transaction (see the module documentation).
pub async fn track(pool: &PgPool, region: &str, answers: &[DnsAnswer]) -> sqlx::Result<Tracked> {
    if answers.is_empty() {
        return Ok(Tracked::default());
    }
    let mut per_domain: BTreeMap<Uuid, Vec<fold::Probe>> = BTreeMap::new();
    for answer in answers.iter().filter(|a| !a.addrs.is_empty()) {
        per_domain.entry(answer.domain_id).or_default().push((answer.observed_at, answer.addrs.clone()));
    }
    for probes in per_domain.values_mut() {
        probes.sort_by_key(|(at, _)| *at);
    }
    let ids: Vec<Uuid> = per_domain.keys().copied().collect();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('crosscheck:dns_drift:' || $1, 0))")
        .bind(region)
        .execute(&mut *tx)
        .await?;
    let rows: Vec<StateRow> = sqlx::query_as(
        "SELECT d.id, d.tenant_id, d.url, d.dns_drift, s.known, s.known_since, s.candidate,
             s.candidate_probes, s.candidate_since, s.observed_at
         FROM domains d
         LEFT JOIN dns_answer_sets s ON s.domain_id = d.id AND s.region = $2
         WHERE d.id = ANY ($1)",
    )
    .bind(&ids)
    .bind(region)
    .fetch_all(&mut *tx)
    .await?;

    let mut states = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut changes: Vec<(Uuid, Uuid, String, Change, bool)> = Vec::new();
    for (domain, tenant, url, drift, known, known_since, candidate, probes, candidate_since, observed_at) in
        rows
    {
        let settings = Settings::from_stored(drift.as_ref());
        let state = match (known, known_since, observed_at) {
            (Some(known), Some(known_since), Some(observed_at)) => Some(RegionState {
                known: from_json(&known),
                known_since,
                candidate: candidate.as_ref().map(from_json),
                candidate_probes: probes.unwrap_or(0).max(0) as u32,
                candidate_since,
                observed_at,
            }),
            _ => None,
        };
        let before = state.clone();
        let (after, confirmed) = fold::fold(state, &per_domain[&domain], &settings);
        let Some(after) = after.filter(|a| before.as_ref() != Some(a)) else { continue };
        states.0.push(domain);
        states.1.push(to_json(&after.known));
        states.2.push(after.known_since);
        states.3.push(after.candidate.as_deref().map(to_json));
        states.4.push(after.candidate_probes as i32);
        states.5.push(after.candidate_since);
        states.6.push(after.observed_at);
        for change in confirmed {
            let notify = settings.notify && !change.rotation;
            changes.push((domain, tenant, url.clone(), change, notify));
        }
    }
    if !states.0.is_empty() {
        sqlx::query(
            "INSERT INTO dns_answer_sets AS s
                 (domain_id, region, known, known_since, candidate, candidate_probes, candidate_since, observed_at)
             SELECT u.domain_id, $1, u.known, u.known_since, u.candidate, u.probes, u.candidate_since, u.observed_at
             FROM unnest($2::uuid[], $3::jsonb[], $4::timestamptz[], $5::jsonb[], $6::int[], $7::timestamptz[],
                         $8::timestamptz[])
                 AS u(domain_id, known, known_since, candidate, probes, candidate_since, observed_at)
             ON CONFLICT (domain_id, region) DO UPDATE SET known = excluded.known,
                 known_since = excluded.known_since, candidate = excluded.candidate,
                 candidate_probes = excluded.candidate_probes, candidate_since = excluded.candidate_since,
                 observed_at = excluded.observed_at",
        )
        .bind(region)
        .bind(&states.0)
        .bind(&states.1)
        .bind(&states.2)
        .bind(&states.3)
        .bind(&states.4)
        .bind(&states.5)
        .bind(&states.6)
        .execute(&mut *tx)
        .await?;
    }
    let mut tracked = Tracked::default();
    if !changes.is_empty() {
        let ids: Vec<Uuid> = changes.iter().map(|_| Uuid::now_v7()).collect();
        let column =
            |f: &dyn Fn(&Change) -> Value| changes.iter().map(|(_, _, _, c, _)| f(c)).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO dns_changes (id, tenant_id, domain_id, region, previous, current, added, removed,
                 changed_at, confirmed_at, rotation, notified)
             SELECT u.id, u.tenant_id, u.domain_id, $1, u.previous, u.current, u.added, u.removed,
                 u.changed_at, u.confirmed_at, u.rotation, u.notified
             FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::jsonb[], $6::jsonb[], $7::jsonb[], $8::jsonb[],
                         $9::timestamptz[], $10::timestamptz[], $11::bool[], $12::bool[])
                 AS u(id, tenant_id, domain_id, previous, current, added, removed, changed_at, confirmed_at,
                      rotation, notified)",
        )
        .bind(region)
        .bind(&ids)
        .bind(changes.iter().map(|c| c.1).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(column(&|c| to_json(&c.previous)))
        .bind(column(&|c| to_json(&c.current)))
        .bind(column(&|c| to_json(&c.added)))
        .bind(column(&|c| to_json(&c.removed)))
        .bind(changes.iter().map(|c| c.3.changed_at).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.3.confirmed_at).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.3.rotation).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.4).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        let notifications: Vec<(Notification, String)> = changes
            .iter()
            .zip(&ids)
            .filter(|((_, _, _, _, notify), _)| *notify)
            .map(|((domain, tenant, url, change, _), id)| {
                (notification(*tenant, *domain, url, region, change), format!("dns:{domain}:{id}"))
            })
            .collect();
        let refs: Vec<(&Notification, &str)> = notifications.iter().map(|(n, k)| (n, k.as_str())).collect();
        tracked.notified = notify::enqueue_many(&mut tx, &refs).await?;
        tracked.changes = changes.len();
        tracked.rotations = changes.iter().filter(|c| c.3.rotation).count();
    }
    tx.commit().await?;
    Ok(tracked)
}

/// The `dns_changed` notification of one confirmed change: the summary names the region and
/// the addresses; `details` holds `regions`, `added`, `removed`, `previous`, `current`,
/// `changed_at`.
pub fn notification(
    tenant_id: Uuid,
    domain_id: Uuid,
    url: &str,
    region: &str,
    change: &Change,
) -> Notification {
    let list = |addrs: &[String]| if addrs.is_empty() { "nothing".to_owned() } else { addrs.join(", ") };
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| url.to_owned());
    Notification {
        kind: KIND.into(),
        tenant_id,
        domain_id: Some(domain_id),
        url: Some(url.to_owned()),
        incident_id: None,
        summary: format!(
            "DNS answers for {host} changed in {region}: added {}, removed {}",
            list(&change.added),
            list(&change.removed)
        ),
        details: json!({
            "regions": [region],
            "added": change.added,
            "removed": change.removed,
            "previous": change.previous,
            "current": change.current,
            "changed_at": change.changed_at,
        }),
        occurred_at: change.confirmed_at,
    }
}

/// The known answer sets of a domain per region and its most recent changes (at most `limit`,
/// newest first), for `GET /v1/domains/{id}/dns`; `None` when the domain is not the tenant's.
pub async fn view(
    pool: &PgPool,
    tenant_id: Uuid,
    domain_id: Uuid,
    limit: i64,
) -> sqlx::Result<Option<Value>> {
    let drift: Option<Option<Value>> =
        sqlx::query_scalar("SELECT dns_drift FROM domains WHERE id = $1 AND tenant_id = $2")
            .bind(domain_id)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await?;
    let Some(drift) = drift else { return Ok(None) };
    type Region = (String, Value, DateTime<Utc>, Option<Value>, i32, Option<DateTime<Utc>>, DateTime<Utc>);
    let regions: Vec<Region> = sqlx::query_as(
        "SELECT s.region, s.known, s.known_since, s.candidate, s.candidate_probes, s.candidate_since, s.observed_at
         FROM dns_answer_sets s JOIN domains d ON d.id = s.domain_id
         WHERE s.domain_id = $1 AND d.tenant_id = $2 ORDER BY s.region",
    )
    .bind(domain_id)
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    type ChangeRow = (Uuid, String, Value, Value, Value, Value, DateTime<Utc>, DateTime<Utc>, bool, bool);
    let changes: Vec<ChangeRow> = sqlx::query_as(
        "SELECT id, region, previous, current, added, removed, changed_at, confirmed_at, rotation, notified
         FROM dns_changes WHERE domain_id = $1 AND tenant_id = $2 ORDER BY confirmed_at DESC, id DESC LIMIT $3",
    )
    .bind(domain_id)
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(Some(json!({
        "domain_id": domain_id,
        "dns_drift": Settings::from_stored(drift.as_ref()).to_json(),
        "regions": regions.into_iter().map(|(region, known, known_since, candidate, probes, since, observed_at)| json!({
            "region": region,
            "known": known,
            "known_since": known_since,
            "candidate": candidate,
            "candidate_probes": probes,
            "candidate_since": since,
            "observed_at": observed_at,
        })).collect::<Vec<_>>(),
        "changes": changes.into_iter().map(|(id, region, previous, current, added, removed, changed_at, confirmed_at, rotation, notified)| json!({
            "id": id,
            "region": region,
            "previous": previous,
            "current": current,
            "added": added,
            "removed": removed,
            "changed_at": changed_at,
            "confirmed_at": confirmed_at,
            "rotation": rotation,
            "notified": notified,
        })).collect::<Vec<_>>(),
    })))
}
