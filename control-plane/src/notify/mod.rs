//! Notifications: what is sent ([`Notification`]), and the transactional outbox it is written
//! to ([`enqueue`]) in the same transaction as the cause (an incident transition, a certificate
//! nearing expiry). Delivery happens later, by the [`dispatcher`], once per channel and dedup
//! key across restarts and replicas (at least once: the dispatcher documents the one case of a
//! second send, and receivers deduplicate by the notification id).
//!
//! - [`spec`]: channel requests and their validation. [`store`]: channels, outbox reads and the
//!   operator's retry. [`channels`]: delivery over HTTP and SMTP; [`providers`]: the payloads
//!   of PagerDuty, Teams, Discord, Telegram and ntfy. [`subscriptions`]: the kinds and tags a
//!   channel wants. [`dispatcher`]: claims, delivers, retries, dead-letters.

pub mod channels;
pub mod dispatcher;
pub mod providers;
pub mod spec;
pub mod store;
pub mod storm;
pub mod subscriptions;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use dispatcher::Dispatcher;

/// The channel dispatchers listen on; [`enqueue`] notifies it at commit.
pub const WAKE_CHANNEL: &str = "crosscheck_notifications";

/// What happened, as sent to every channel (webhook JSON body; rendered as text for Slack and
/// email).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// `incident_opened`, `incident_acknowledged`, `incident_resolved`, `certificate_expiring`,
    /// `certificate_expired`, `domain_flapping`, `domain_stabilized`, `flap_digest`,
    /// `dns_changed`, `test`, … (the subscribable ones: [`subscriptions::EVENT_KINDS`])
    pub kind: String,
    pub tenant_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    /// One line for humans: "example.com is down (ams, iad: connect)".
    pub summary: String,
    /// Kind-specific details (regions and errors, duration, days left, …).
    #[serde(default)]
    pub details: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// Writes `notification` to the outbox for every enabled channel of its tenant that subscribes to
/// it (its kind, and a tag of its domain: [`subscriptions`]), once per
/// `dedup_key` (a second call with the same key adds nothing), and wakes the dispatchers at
/// commit. Returns the rows added. Call it inside the transaction that records the cause (and
/// holds its lock): the rows' `seq` then follows the causes' order, which is the order each
/// channel receives a domain's notifications in.
pub async fn enqueue(
    tx: &mut sqlx::PgConnection,
    notification: &Notification,
    dedup_key: &str,
) -> sqlx::Result<u64> {
    enqueue_many(tx, &[(notification, dedup_key)]).await
}

/// [`enqueue`] for many notifications in one statement (one `pg_notify` at most): their rows
/// take `seq` in the order given, so a domain's notifications keep the order of their causes.
/// The channels' subscriptions are applied in the same statement (a join on the domains' tags),
/// so the batch stays one round trip whatever its size.
pub async fn enqueue_many(
    tx: &mut sqlx::PgConnection,
    notifications: &[(&Notification, &str)],
) -> sqlx::Result<u64> {
    if notifications.is_empty() {
        return Ok(0);
    }
    let n = notifications.len();
    let (mut tenants, mut keys, mut kinds, mut payloads, mut domains) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (notification, dedup_key) in notifications {
        tenants.push(notification.tenant_id);
        keys.push(*dedup_key);
        kinds.push(notification.kind.as_str());
        payloads.push(serde_json::to_value(notification).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        domains.push(notification.domain_id);
    }
    let added = sqlx::query(
        "INSERT INTO notifications (id, tenant_id, channel_id, dedup_key, kind, payload, domain_id)
         SELECT gen_random_uuid(), c.tenant_id, c.id, u.dedup_key, u.kind, u.payload, u.domain_id
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::uuid[]) WITH ORDINALITY
             AS u(tenant_id, dedup_key, kind, payload, domain_id, ord)
         JOIN channels c ON c.tenant_id = u.tenant_id AND c.enabled
         LEFT JOIN domains d ON d.id = u.domain_id AND d.tenant_id = u.tenant_id
         WHERE (c.events IS NULL OR u.kind = 'test' OR u.kind = ANY (c.events))
           AND (c.tags IS NULL OR u.domain_id IS NULL OR COALESCE(d.tags, '{}') && c.tags)
         ORDER BY u.ord, c.id
         ON CONFLICT (channel_id, dedup_key) DO NOTHING",
    )
    .bind(&tenants)
    .bind(&keys)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&domains)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *tx).await?;
    }
    Ok(added)
}
