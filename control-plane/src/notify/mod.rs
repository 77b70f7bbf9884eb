//! Notifications: what is sent ([`Notification`]), and the transactional outbox it is written
//! to ([`enqueue`]) in the same transaction as the cause (an incident transition, a certificate
//! nearing expiry). Delivery happens later, by the [`dispatcher`], once per channel and dedup
//! key across restarts and replicas (at least once: the dispatcher documents the one case of a
//! second send, and receivers deduplicate by the notification id).
//!
//! - [`spec`]: channel requests and their validation. [`store`]: channels, outbox reads and the
//!   operator's retry. [`channels`]: webhook, Slack and email delivery. [`dispatcher`]: claims,
//!   delivers, retries, dead-letters.

pub mod channels;
pub mod dispatcher;
pub mod spec;
pub mod store;
pub mod storm;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use dispatcher::Dispatcher;

/// The channel dispatchers listen on; [`enqueue`] notifies it at commit.
pub const WAKE_CHANNEL: &str = "crosscheck_notifications";

/// What happened, as sent to every channel (webhook JSON body; rendered as text for Slack and
/// email).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `incident_opened`, `incident_acknowledged`, `incident_resolved`, `certificate_expiring`,
    /// `certificate_expired`,
    /// `domain_flapping`, `domain_stabilized`, `test`, …
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

/// Writes `notification` to the outbox for every enabled channel of its tenant, once per
/// `dedup_key` (a second call with the same key adds nothing), and wakes the dispatchers at
/// commit. Returns the rows added. Call it inside the transaction that records the cause (and
/// holds its lock): the rows' `seq` then follows the causes' order, which is the order each
/// channel receives a domain's notifications in.
pub async fn enqueue(
    tx: &mut sqlx::PgConnection,
    notification: &Notification,
    dedup_key: &str,
) -> sqlx::Result<u64> {
    let payload = serde_json::to_value(notification).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let added = sqlx::query(
        "INSERT INTO notifications (id, tenant_id, channel_id, dedup_key, kind, payload, domain_id)
         SELECT gen_random_uuid(), c.tenant_id, c.id, $2, $3, $4, $5
         FROM channels c WHERE c.tenant_id = $1 AND c.enabled
         ORDER BY c.id
         ON CONFLICT (channel_id, dedup_key) DO NOTHING",
    )
    .bind(notification.tenant_id)
    .bind(dedup_key)
    .bind(&notification.kind)
    .bind(payload)
    .bind(notification.domain_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *tx).await?;
    }
    Ok(added)
}
