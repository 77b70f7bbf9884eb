//! Console sessions in PostgreSQL: an API token is exchanged once for a random session id (the
//! cookie) and a synchronizer token (the CSRF field of every form).
//!
//! Only the SHA-256 of the session id is stored, like API tokens: a leaked table opens no
//! session. A session is valid while it is younger than `console_session_ttl_s`, was used within
//! `console_session_idle_s`, and its token is not revoked; its role is the token's, read at
//! every request, so revoking a token ends its sessions at once.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::tenants::{Principal, Role};

/// Last-use times are written at most this often per session (an idle timeout needs no more).
const TOUCH_EVERY_S: i64 = 60;

/// A valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub principal: Principal,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
}

/// 32 random bytes in URL-safe base64 (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// Whether two secrets are equal, in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Opens a session for `principal`, valid for `ttl`; returns the session id (the cookie's
/// value, never stored) and the session. Expired sessions are deleted on the way.
pub async fn create(pool: &PgPool, principal: &Principal, ttl: Duration) -> sqlx::Result<(String, Session)> {
    let id = random_token();
    let csrf = random_token();
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()").execute(pool).await?;
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, tenant_id, token_id, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(hash(&id))
    .bind(principal.tenant_id)
    .bind(principal.token_id)
    .bind(&csrf)
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    Ok((id, Session { principal: principal.clone(), csrf }))
}

/// The session of cookie value `id`, if valid (`idle`: the idle timeout). Refreshes its
/// last use.
pub async fn lookup(pool: &PgPool, id: &str, idle: Duration) -> sqlx::Result<Option<Session>> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    type Row = (Uuid, Uuid, String, String, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.tenant_id, s.token_id, t.role, s.csrf_token,
                s.last_seen_at < now() - make_interval(secs => $3) AS stale
         FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id
         WHERE s.id_hash = $1 AND t.revoked_at IS NULL AND s.expires_at > now()
           AND s.last_seen_at > now() - make_interval(secs => $2)",
    )
    .bind(hash(id))
    .bind(idle.as_secs_f64())
    .bind(TOUCH_EVERY_S as f64)
    .fetch_optional(pool)
    .await?;
    let Some((tenant_id, token_id, role, csrf, stale)) = row else { return Ok(None) };
    let Some(role) = Role::parse(&role) else { return Ok(None) };
    if stale {
        sqlx::query("UPDATE console_sessions SET last_seen_at = now() WHERE id_hash = $1")
            .bind(hash(id))
            .execute(pool)
            .await?;
    }
    Ok(Some(Session { principal: Principal { tenant_id, token_id, role }, csrf }))
}

/// Ends the session of cookie value `id` (nothing when there is none).
pub async fn delete(pool: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1").bind(hash(id)).execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
        assert!(!same_secret(&a, &a[..42]));
        assert!(!same_secret("", &a));
        assert!(same_secret("", ""));
    }
}
