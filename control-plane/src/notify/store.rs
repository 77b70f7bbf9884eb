//! Storage of channels and the reads and operator actions on the outbox: every query is scoped
//! by tenant. A webhook's signing secret is written at creation and never read back here.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::spec::{ChannelKind, ChannelPolicy, ChannelSpec};
use super::{Notification, WAKE_CHANNEL};
use crate::domains::{FieldErrors, StoreError};

/// A stored channel (without its secret).
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub kind: String,
    pub config: Value,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub storm_window_s: i32,
    pub storm_threshold: i32,
    /// Subscribed notification kinds; `None`: every kind.
    pub events: Option<Vec<String>>,
    /// Subscribed domain tags; `None`: every domain.
    pub tags: Option<Vec<String>>,
}

impl Channel {
    /// The channel as the API shows it.
    pub fn view(&self) -> Value {
        let mut view = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "storm_window_s": self.storm_window_s,
            "storm_threshold": self.storm_threshold,
            "events": self.events,
            "tags": self.tags,
        });
        for (key, value) in self.config.as_object().into_iter().flatten() {
            view[key] = value.clone();
        }
        view
    }

    fn request_form(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("name".into(), Value::from(self.name.clone()));
        map.insert("kind".into(), Value::from(self.kind.clone()));
        map.insert("enabled".into(), Value::from(self.enabled));
        map.insert("storm_window_s".into(), Value::from(self.storm_window_s));
        map.insert("storm_threshold".into(), Value::from(self.storm_threshold));
        if let Some(events) = &self.events {
            map.insert("events".into(), Value::from(events.clone()));
        }
        if let Some(tags) = &self.tags {
            map.insert("tags".into(), Value::from(tags.clone()));
        }
        for (key, value) in self.config.as_object().into_iter().flatten() {
            map.insert(key.clone(), value.clone());
        }
        map
    }
}

type ChannelRow = (
    Uuid,
    Uuid,
    String,
    String,
    Value,
    bool,
    DateTime<Utc>,
    i32,
    i32,
    Option<Vec<String>>,
    Option<Vec<String>>,
);

fn channel(
    (id, tenant_id, name, kind, config, enabled, created_at, storm_window_s, storm_threshold, events, tags): ChannelRow,
) -> Channel {
    Channel {
        id,
        tenant_id,
        name,
        kind,
        config,
        enabled,
        created_at,
        storm_window_s,
        storm_threshold,
        events,
        tags,
    }
}

const CHANNEL_COLUMNS: &str =
    "id, tenant_id, name, kind, config, enabled, created_at, storm_window_s, storm_threshold, events, tags";

/// A webhook signing secret: `whsec_` and 32 random bytes in URL-safe base64.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("whsec_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Creates a channel; returns it and, for a webhook, its secret (shown once). A provider's
/// credential (`routing_key`, `bot_token`, `token`) is stored as the secret and never returned.
/// The tenant's channel quota is checked under its row lock in the same transaction.
pub async fn create(
    pool: &PgPool,
    tenant_id: Uuid,
    spec: &ChannelSpec,
) -> Result<(Channel, Option<String>), crate::quotas::Error> {
    let mut tx = pool.begin().await?;
    crate::quotas::reserve_channel(&mut tx, tenant_id).await?;
    let made = (spec.kind == ChannelKind::Webhook).then(new_secret);
    let secret = made.clone().or_else(|| spec.secret.clone());
    let row: ChannelRow = sqlx::query_as(&format!(
        "INSERT INTO channels (id, tenant_id, name, kind, config, secret, enabled, storm_window_s, storm_threshold,
             events, tags)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {CHANNEL_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&spec.name)
    .bind(spec.kind.as_str())
    .bind(spec.config_json())
    .bind(&secret)
    .bind(spec.enabled)
    .bind(spec.storm_window_s as i32)
    .bind(spec.storm_threshold as i32)
    .bind(&spec.subscriptions.events)
    .bind(&spec.subscriptions.tags)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((channel(row), made))
}

/// A page of channels in id (creation) order, after `after`.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: u32,
) -> sqlx::Result<Vec<Channel>> {
    let rows: Vec<ChannelRow> = sqlx::query_as(&format!(
        "SELECT {CHANNEL_COLUMNS} FROM channels
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(channel).collect())
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Channel, StoreError> {
    let row: Option<ChannelRow> =
        sqlx::query_as(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(channel).ok_or(StoreError::NotFound)
}

/// Overlays `patch` on the channel and checks the result against `policy`. The kind cannot
/// change (the secret belongs to the kind). A provider credential left out of the patch is kept;
/// one given replaces it.
pub async fn update(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    patch: &Map<String, Value>,
    policy: &ChannelPolicy,
) -> Result<Channel, StoreError> {
    let mut tx = pool.begin().await?;
    let stored_secret: Option<Option<String>> =
        sqlx::query_scalar("SELECT secret FROM channels WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(stored_secret) = stored_secret else { return Err(StoreError::NotFound) };
    let row: ChannelRow =
        sqlx::query_as(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let current = channel(row);
    let mut request = current.request_form();
    let secret_field = ChannelKind::parse(&current.kind).and_then(ChannelKind::secret_field);
    if let (Some(field), Some(secret)) = (secret_field, stored_secret) {
        request.insert(field.into(), Value::from(secret));
    }
    let mut errors = FieldErrors::default();
    if let Some(kind) = patch.get("kind") {
        if kind.as_str() != Some(current.kind.as_str()) {
            errors.0.insert("kind".into(), "cannot be changed; create another channel".into());
        }
    }
    for (key, value) in patch {
        request.insert(key.clone(), value.clone());
    }
    let spec = match ChannelSpec::parse(&request, policy) {
        Ok(spec) if errors.is_empty() => spec,
        Ok(_) => {
            tx.rollback().await?;
            return Err(StoreError::Invalid(errors));
        }
        Err(mut more) => {
            tx.rollback().await?;
            more.0.extend(errors.0);
            return Err(StoreError::Invalid(more));
        }
    };
    let row: ChannelRow = sqlx::query_as(&format!(
        "UPDATE channels SET name = $3, config = $4, enabled = $5, storm_window_s = $6, storm_threshold = $7,
             events = $8, tags = $9, secret = CASE WHEN $10 THEN $11 ELSE secret END
         WHERE tenant_id = $1 AND id = $2
         RETURNING {CHANNEL_COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(&spec.name)
    .bind(spec.config_json())
    .bind(spec.enabled)
    .bind(spec.storm_window_s as i32)
    .bind(spec.storm_threshold as i32)
    .bind(&spec.subscriptions.events)
    .bind(&spec.subscriptions.tags)
    .bind(secret_field.is_some())
    .bind(&spec.secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(channel(row))
}

/// Deletes a channel and, by cascade, its notifications. `false` when there was none.
pub async fn delete(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM channels WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Adds a `test` notification for one channel (enabled or not) and wakes the dispatchers.
/// Returns its id.
pub async fn enqueue_test(pool: &PgPool, channel: &Channel) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    let notification = Notification {
        kind: "test".into(),
        tenant_id: channel.tenant_id,
        domain_id: None,
        url: None,
        incident_id: None,
        summary: format!("Test notification for channel \"{}\"", channel.name),
        details: serde_json::json!({ "channel": channel.name }),
        occurred_at: Utc::now(),
    };
    let payload = serde_json::to_value(&notification).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO notifications (id, tenant_id, channel_id, dedup_key, kind, payload)
         VALUES ($1, $2, $3, $4, 'test', $5)",
    )
    .bind(id)
    .bind(channel.tenant_id)
    .bind(channel.id)
    .bind(format!("test:{id}"))
    .bind(payload)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(id)
}

/// An outbox row as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub dedup_key: String,
    pub kind: String,
    pub payload: Value,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl NotificationRow {
    pub fn view(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "channel_id": self.channel_id,
            "dedup_key": self.dedup_key,
            "kind": self.kind,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": (self.state == "pending").then_some(self.next_attempt_at),
            "last_error": self.last_error,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
            "notification": self.payload,
        })
    }
}

const NOTIFICATION_COLUMNS: &str =
    "id, channel_id, dedup_key, kind, payload, state, attempts, next_attempt_at, last_error, created_at, delivered_at";

/// The tenant's notifications, newest first (id order: ids are time-ordered for rows added by
/// this code; `created_at` breaks ties for the rest), optionally of one state, before `before`.
pub async fn list_notifications(
    pool: &PgPool,
    tenant_id: Uuid,
    state: Option<&str>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> sqlx::Result<Vec<NotificationRow>> {
    sqlx::query_as(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications
         WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(state)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// What [`retry`] did.
#[derive(Debug)]
pub enum Retry {
    Retried(NotificationRow),
    NotDead(String),
    NotFound,
}

/// Moves a dead notification back to `pending`, attempts and retry time span reset and due
/// now, and wakes the dispatchers. It keeps its place in its channel and domain's order, so
/// later notifications of that domain still pending wait for it again.
pub async fn retry(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Retry> {
    let mut tx = pool.begin().await?;
    let row: Option<NotificationRow> = sqlx::query_as(&format!(
        "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = now(),
             first_attempt_at = NULL
         WHERE tenant_id = $1 AND id = $2 AND state = 'dead' RETURNING {NOTIFICATION_COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM notifications WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.rollback().await?;
        return Ok(state.map_or(Retry::NotFound, Retry::NotDead));
    };
    sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Retry::Retried(row))
}
