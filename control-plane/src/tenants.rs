//! Tenants (with their time zone) and their API tokens.
//!
//! A token is `cc_` followed by 43 URL-safe base64 characters (256 random bits). Only its
//! SHA-256 is stored; the token is shown once, when created. A fast hash is the right tool here:
//! the input has full entropy, so there is nothing for a slow password hash to protect.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read and write every resource of the tenant.
    Admin,
    /// Read only.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read_only",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Role::Admin),
            "read_only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// The identity behind an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub token_id: Uuid,
    pub role: Role,
}

/// A freshly created token: the secret is only available here.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub role: Role,
    pub token: String,
}

const TOKEN_PREFIX: &str = "cc_";

fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a tenant and its first admin token, in one transaction.
pub async fn create_tenant(pool: &PgPool, name: &str) -> Result<IssuedToken, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let tenant_id = Uuid::now_v7();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(tenant_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let token = insert_token(&mut tx, tenant_id, "initial admin token", Role::Admin).await?;
    tx.commit().await?;
    Ok(token)
}

/// Creates another token for an existing tenant.
pub async fn create_token(
    pool: &PgPool,
    tenant_id: Uuid,
    name: &str,
    role: Role,
) -> Result<IssuedToken, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let token = insert_token(&mut tx, tenant_id, name, role).await?;
    tx.commit().await?;
    Ok(token)
}

async fn insert_token(
    tx: &mut sqlx::PgTransaction<'_>,
    tenant_id: Uuid,
    name: &str,
    role: Role,
) -> Result<IssuedToken, sqlx::Error> {
    let id = Uuid::now_v7();
    let token = generate_secret();
    sqlx::query("INSERT INTO api_tokens (id, tenant_id, name, role, token_hash) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(tenant_id)
        .bind(name)
        .bind(role.as_str())
        .bind(hash(&token))
        .execute(&mut **tx)
        .await?;
    Ok(IssuedToken { id, tenant_id, name: name.to_owned(), role, token })
}

/// Looks up a presented bearer token. `None` for an unknown or revoked token.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<Principal>, sqlx::Error> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let row: Option<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT id, tenant_id, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(token_id, tenant_id, role)| {
        Role::parse(&role).map(|role| Principal { tenant_id, token_id, role })
    }))
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When the token last authenticated a request, to the minute (written at most once a
    /// minute per token); `None` if never.
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn list_tokens(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, role, created_at, last_used_at, revoked_at FROM api_tokens WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// Revokes a token of `tenant_id`; `false` when there is no such token for that tenant.
pub async fn revoke_token(pool: &PgPool, tenant_id: Uuid, token_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND tenant_id = $2",
    )
    .bind(token_id)
    .bind(tenant_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A tenant as `GET /v1/tenant` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TenantInfo {
    pub id: Uuid,
    pub name: String,
    /// IANA time zone name: every calendar period of the tenant (SLO months, monthly reports)
    /// is taken there. `UTC` unless set.
    pub time_zone: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The tenant's quotas (`null`: unlimited), set by `control-plane set-quota`.
    #[sqlx(flatten)]
    pub quotas: crate::quotas::Quotas,
}

/// The columns of a [`TenantInfo`].
const TENANT_COLUMNS: &str = "id, name, time_zone, created_at, quota_max_domains, quota_min_interval_s, \
     quota_max_channels, quota_requests_per_minute";

pub async fn get(pool: &PgPool, tenant_id: Uuid) -> Result<Option<TenantInfo>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
        .bind(tenant_id)
        .fetch_optional(pool)
        .await
}

/// The tenant's time zone; UTC for a name the time zone database no longer knows (logged).
pub async fn time_zone(conn: &mut sqlx::PgConnection, tenant_id: Uuid) -> Result<chrono_tz::Tz, sqlx::Error> {
    let name: Option<String> = sqlx::query_scalar("SELECT time_zone FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(name.map_or(chrono_tz::Tz::UTC, |name| zone_or_utc(tenant_id, &name)))
}

/// `name` as a time zone; UTC (logged) when it is unknown, which only a time zone database
/// that dropped a name can cause: every stored name was checked when it was set.
pub fn zone_or_utc(tenant_id: Uuid, name: &str) -> chrono_tz::Tz {
    crate::sla::period::parse_time_zone(name).unwrap_or_else(|| {
        tracing::warn!(%tenant_id, time_zone = name, "unknown stored time zone; using UTC");
        chrono_tz::Tz::UTC
    })
}

/// Sets the tenant's time zone (an IANA name, checked by the caller); `None` when there is no
/// such tenant.
pub async fn set_time_zone(
    pool: &PgPool,
    tenant_id: Uuid,
    zone: chrono_tz::Tz,
) -> Result<Option<TenantInfo>, sqlx::Error> {
    sqlx::query_as(&format!("UPDATE tenants SET time_zone = $2 WHERE id = $1 RETURNING {TENANT_COLUMNS}"))
        .bind(tenant_id)
        .bind(zone.name())
        .fetch_optional(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_well_formed() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with("cc_"));
        assert_eq!(a.len(), 3 + 43);
        assert_eq!(hash(&a).len(), 32);
    }
}
