//! Domain storage. Every write goes through one transaction that
//!
//! 1. locks the domain row (updates and deletes),
//! 2. increments the single `config_state` version (its row lock is held until commit, so
//!    versions are dense and commit in version order — the publisher can apply them strictly
//!    one after another),
//! 3. writes the domain and appends the agent-facing change to `config_changes`,
//! 4. `NOTIFY`s every control-plane replica's publisher (delivered at commit).
//!
//! Lock order is always domain row, then `config_state`, so concurrent writes cannot deadlock.

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::{
    Auth, CheckConfig, DomainConfig, DomainId, HttpMethod, HttpVersion, KeywordCheck, KeywordMode,
    RequestBody, RequestConfig, RequestHeader, StatusRange,
};
use sqlx::{PgPool, PgTransaction};
use uuid::Uuid;

use crate::incidents::Stopped;

use super::spec::{DomainSpec, FieldErrors, Interval, Policy, TIERS};

/// The Postgres notification channel that wakes publishers.
pub const NOTIFY_CHANNEL: &str = "crosscheck_config_changes";

/// A stored domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    pub id: DomainId,
    pub tenant_id: Uuid,
    pub spec: DomainSpec,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Domain {
    /// The configuration agents receive (no tenant; the request's secrets, which agents send).
    pub fn agent_config(&self) -> DomainConfig {
        self.spec.agent_config(self.id, self.version)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid domain")]
    Invalid(FieldErrors),
    #[error("domain not found")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A tenant quota the write would exceed.
    #[error(transparent)]
    Quota(#[from] crate::quotas::Exceeded),
}

impl From<crate::quotas::Error> for StoreError {
    fn from(error: crate::quotas::Error) -> Self {
        match error {
            crate::quotas::Error::Exceeded(exceeded) => StoreError::Quota(exceeded),
            crate::quotas::Error::Database(e) => StoreError::Database(e),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    name: Option<String>,
    url: String,
    method: String,
    status_min: i32,
    status_max: i32,
    keyword: Option<String>,
    keyword_mode: String,
    keyword_case_insensitive: bool,
    interval_tier: Option<String>,
    interval_s: i32,
    timeout_ms: i32,
    regions: Vec<String>,
    quorum: Option<i32>,
    paused: bool,
    tls_verify: bool,
    http_version: String,
    agents_per_region: i16,
    flap: Option<Value>,
    tags: Vec<String>,
    dns_drift: Option<Value>,
    slo: Option<Value>,
    degraded: Option<Value>,
    request_headers: Value,
    request_auth: Option<Value>,
    request_body: Option<String>,
    request_body_secret: bool,
    check_config: Option<Value>,
    json_check: Option<Value>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, name, url, method, status_min, status_max, keyword, keyword_mode, \
     keyword_case_insensitive, interval_tier, interval_s, timeout_ms, regions, quorum, paused, tls_verify, http_version, \
     agents_per_region, flap, tags, dns_drift, slo, degraded, request_headers, request_auth, request_body, request_body_secret, \
     check_config, json_check, version, created_at, updated_at";

impl TryFrom<Row> for Domain {
    type Error = sqlx::Error;

    fn try_from(row: Row) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| sqlx::Error::Decode(format!("domain {}: bad {what}", row.id).into());
        let url = url::Url::parse(&row.url).map_err(|_| corrupt("url"))?;
        let method = HttpMethod::parse(&row.method).ok_or_else(|| corrupt("method"))?;
        // Decoding errors are not passed on: their text could quote a secret.
        let headers: Vec<RequestHeader> =
            serde_json::from_value(row.request_headers).map_err(|_| corrupt("request headers"))?;
        let auth: Option<Auth> = match row.request_auth {
            None | Some(Value::Null) => None,
            Some(value) => Some(serde_json::from_value(value).map_err(|_| corrupt("request auth"))?),
        };
        let body = row.request_body.map(|text| RequestBody { text, secret: row.request_body_secret });
        let interval_s = u32::try_from(row.interval_s).map_err(|_| corrupt("interval"))?;
        let interval = match row.interval_tier.as_deref() {
            Some(name) => TIERS
                .iter()
                .find(|(t, _)| *t == name)
                .map(|(t, _)| Interval::Tier(t, interval_s))
                .ok_or_else(|| corrupt("interval tier"))?,
            None => Interval::Seconds(interval_s),
        };
        let keyword_mode = KeywordMode::ALL
            .into_iter()
            .find(|m| m.as_str() == row.keyword_mode)
            .ok_or_else(|| corrupt("keyword mode"))?;
        let keyword = row.keyword.map(|pattern| KeywordCheck {
            pattern,
            mode: keyword_mode,
            case_insensitive: row.keyword_case_insensitive,
        });
        let http_version = HttpVersion::parse(&row.http_version).ok_or_else(|| corrupt("http version"))?;
        let flap = match row.flap {
            None | Some(Value::Null) => None,
            Some(value) => Some(serde_json::from_value(value).map_err(|_| corrupt("flap settings"))?),
        };
        let dns_drift = match row.dns_drift {
            None | Some(Value::Null) => None,
            Some(value) => {
                Some(crate::dns_drift::Settings::parse(&value).map_err(|_| corrupt("dns_drift settings"))?)
            }
        };
        let slo = crate::sla::store::decode(row.id, row.slo)?;
        let degraded = match row.degraded {
            None | Some(Value::Null) => None,
            Some(value) => Some(serde_json::from_value(value).map_err(|_| corrupt("degraded settings"))?),
        };
        let check = match row.check_config {
            None | Some(Value::Null) => CheckConfig::Http,
            Some(value) => serde_json::from_value(value).map_err(|_| corrupt("check"))?,
        };
        let json_check = match row.json_check {
            None | Some(Value::Null) => None,
            Some(value) => Some(serde_json::from_value(value).map_err(|_| corrupt("json check"))?),
        };
        Ok(Domain {
            id: DomainId(row.id),
            tenant_id: row.tenant_id,
            spec: DomainSpec {
                name: row.name,
                url,
                request: RequestConfig { method, headers, auth, body },
                check,
                json_check,
                expected_status: StatusRange {
                    min: u16::try_from(row.status_min).map_err(|_| corrupt("status"))?,
                    max: u16::try_from(row.status_max).map_err(|_| corrupt("status"))?,
                },
                keyword,
                interval,
                timeout_ms: u32::try_from(row.timeout_ms).map_err(|_| corrupt("timeout"))?,
                regions: row.regions,
                quorum: row.quorum.and_then(|q| u32::try_from(q).ok()),
                paused: row.paused,
                tls_verify: row.tls_verify,
                http_version,
                agents_per_region: u32::try_from(row.agents_per_region)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| corrupt("agents per region"))?,
                flap,
                tags: row.tags,
                dns_drift,
                slo,
                degraded,
            },
            version: u64::try_from(row.version).map_err(|_| corrupt("version"))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Outcome of a committed write: the domain as stored and its config version.
#[derive(Debug, Clone)]
pub struct Written {
    pub domain: Domain,
    pub version: u64,
    /// False when an update changed nothing agents see (no new version, nothing published): a
    /// change of the flap settings, the SLO or the name alone is stored without a new version.
    pub changed: bool,
}

async fn next_version(tx: &mut PgTransaction<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("UPDATE config_state SET version = version + 1 RETURNING version")
        .fetch_one(&mut **tx)
        .await
}

async fn log_change(
    tx: &mut PgTransaction<'_>,
    version: i64,
    id: DomainId,
    config: Option<&DomainConfig>,
) -> Result<(), sqlx::Error> {
    let op = if config.is_some() { "upsert" } else { "delete" };
    let json = config.map(|c| serde_json::to_value(c).expect("domain config serializes"));
    sqlx::query("INSERT INTO config_changes (version, domain_id, op, config) VALUES ($1, $2, $3, $4)")
        .bind(version)
        .bind(id.0)
        .bind(op)
        .bind(json)
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(version.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn write_row(
    tx: &mut PgTransaction<'_>,
    id: DomainId,
    tenant_id: Uuid,
    spec: &DomainSpec,
    version: i64,
) -> Result<Domain, sqlx::Error> {
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO domains (id, tenant_id, url, method, status_min, status_max, keyword, keyword_mode, \
             keyword_case_insensitive, interval_tier, interval_s, timeout_ms, regions, quorum, paused, flap, version, \
             tls_verify, http_version, request_headers, request_auth, request_body, request_body_secret, name, tags, \
             dns_drift, slo, degraded, check_config, json_check, agents_per_region) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
             $22, $23, $24, $25, $26, $27, $28, $29, $30, $31) \
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, method = excluded.method, \
             status_min = excluded.status_min, status_max = excluded.status_max, keyword = excluded.keyword, \
             keyword_mode = excluded.keyword_mode, keyword_case_insensitive = excluded.keyword_case_insensitive, \
             interval_tier = excluded.interval_tier, interval_s = excluded.interval_s, \
             timeout_ms = excluded.timeout_ms, regions = excluded.regions, quorum = excluded.quorum, \
             paused = excluded.paused, flap = excluded.flap, version = excluded.version, \
             tls_verify = excluded.tls_verify, http_version = excluded.http_version, \
             request_headers = excluded.request_headers, request_auth = excluded.request_auth, \
             request_body = excluded.request_body, request_body_secret = excluded.request_body_secret, \
             name = excluded.name, tags = excluded.tags, dns_drift = excluded.dns_drift, slo = excluded.slo, \
             degraded = excluded.degraded, check_config = excluded.check_config, json_check = excluded.json_check, \
             agents_per_region = excluded.agents_per_region, updated_at = now() \
         WHERE domains.tenant_id = excluded.tenant_id \
         RETURNING {COLUMNS}"
    ))
    .bind(id.0)
    .bind(tenant_id)
    .bind(spec.url.as_str())
    .bind(spec.request.method.as_str())
    .bind(i32::from(spec.expected_status.min))
    .bind(i32::from(spec.expected_status.max))
    .bind(spec.keyword.as_ref().map(|k| k.pattern.as_str()))
    .bind(spec.keyword.as_ref().map_or(KeywordMode::Contains, |k| k.mode).as_str())
    .bind(spec.keyword.as_ref().is_some_and(|k| k.case_insensitive))
    .bind(spec.interval.tier())
    .bind(spec.interval.seconds() as i32)
    .bind(spec.timeout_ms as i32)
    .bind(&spec.regions)
    .bind(spec.quorum.map(|q| q as i32))
    .bind(spec.paused)
    .bind(spec.flap.as_ref().map(crate::flap::Overrides::to_json))
    .bind(version)
    .bind(spec.tls_verify)
    .bind(spec.http_version.as_str())
    .bind(serde_json::to_value(&spec.request.headers).expect("headers serialize"))
    .bind(spec.request.auth.as_ref().map(|a| serde_json::to_value(a).expect("auth serializes")))
    .bind(spec.request.body.as_ref().map(|b| b.text.as_str()))
    .bind(spec.request.body.as_ref().is_some_and(|b| b.secret))
    .bind(spec.name.as_deref())
    .bind(&spec.tags)
    .bind(spec.dns_drift.as_ref().map(crate::dns_drift::Settings::to_json))
    .bind(spec.slo.as_ref().map(crate::sla::Slo::to_json))
    .bind(spec.degraded.as_ref().map(crate::degraded::Overrides::to_json))
    .bind((!spec.check.is_http()).then(|| serde_json::to_value(&spec.check).expect("check serializes")))
    .bind(spec.json_check.as_ref().map(|j| serde_json::to_value(j).expect("json check serializes")))
    .bind(i16::try_from(spec.agents_per_region).unwrap_or(i16::MAX))
    .fetch_one(&mut **tx)
    .await?;
    Domain::try_from(row)
}

/// Creates a domain.
pub async fn create(pool: &PgPool, tenant_id: Uuid, spec: &DomainSpec) -> Result<Written, StoreError> {
    let mut tx = pool.begin().await?;
    // The tenant row before `config_state`: two creates of one tenant count one after the other.
    crate::quotas::reserve_domain(&mut tx, tenant_id, spec.interval.seconds()).await?;
    let version = next_version(&mut tx).await?;
    let domain = write_row(&mut tx, DomainId::new(), tenant_id, spec, version).await?;
    log_change(&mut tx, version, domain.id, Some(&domain.agent_config())).await?;
    tx.commit().await?;
    Ok(Written { domain, version: version as u64, changed: true })
}

async fn lock(tx: &mut PgTransaction<'_>, tenant_id: Uuid, id: DomainId) -> Result<Domain, StoreError> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM domains WHERE id = $1 AND tenant_id = $2 FOR UPDATE"))
            .bind(id.0)
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.ok_or(StoreError::NotFound)?.try_into()?)
}

/// The request fields a `PATCH` may set to `null`.
const CLEARABLE: [&str; 15] = [
    "name",
    "slo",
    "keyword",
    "keyword_mode",
    "keyword_case_insensitive",
    "quorum",
    "flap",
    "dns_drift",
    "degraded",
    "headers",
    "auth",
    "body",
    "body_secret",
    "check",
    "json",
];

/// Applies a partial update: `patch` is overlaid on the domain's request form and the result is
/// parsed against `policy`, while the domain row is locked. Only `name`, `keyword` (with its options),
/// `quorum`, `flap`, `slo`, `dns_drift`, `degraded`, `headers`, `auth`, `body` (with `body_secret`),
/// `check` (back to `http`) and `json` may be `null` (cleared;
/// `null` options return to their defaults); a `null` elsewhere is an error rather than a
/// silent reset to the default. A `flap` object replaces the domain's flap overrides as a
/// whole, and so do `headers` and `auth`, except that secrets left out are kept
/// ([`DomainSpec::parse_update`]). `actor` (a token id) is recorded on the
/// incident events of a pause or resume made through `paused`.
pub async fn update(
    pool: &PgPool,
    tenant_id: Uuid,
    id: DomainId,
    patch: &serde_json::Map<String, Value>,
    policy: &Policy,
    actor: &str,
) -> Result<Written, StoreError> {
    let nulls: Vec<_> =
        patch.iter().filter(|(k, v)| v.is_null() && !CLEARABLE.contains(&k.as_str())).collect();
    if !nulls.is_empty() {
        let mut errors = FieldErrors::default();
        for (key, _) in nulls {
            errors.0.insert(
                key.clone(),
                format!("cannot be null (only {} can be cleared)", CLEARABLE.join(", ")),
            );
        }
        return Err(StoreError::Invalid(errors));
    }
    let mut tx = pool.begin().await?;
    let current = lock(&mut tx, tenant_id, id).await?;
    let mut request = current.spec.to_request();
    // A change to another check type drops the http fields the patch does not set itself.
    let leaves_http = patch.get("check").and_then(|c| c.get("type")).is_some_and(|t| t != "http");
    if leaves_http {
        request.retain(|key, _| !super::spec::HTTP_ONLY.contains(&key.as_str()) || patch.contains_key(key));
    }
    for (key, value) in patch {
        request.insert(key.clone(), value.clone());
    }
    let spec = match DomainSpec::parse_update(&request, policy, Some(&current.spec.request)) {
        Ok(spec) => spec,
        Err(errors) => {
            tx.rollback().await?;
            return Err(StoreError::Invalid(errors));
        }
    };
    crate::quotas::check_domain_interval(&mut tx, tenant_id, spec.interval.seconds()).await?;
    write_if_changed(tx, current, spec, actor).await
}

/// Pauses or resumes a domain on behalf of `actor` (a token id). Unlike [`update`] it does not
/// re-check the rest of the domain against today's policy: a domain that no longer passes (say,
/// after the minimum interval was raised) can still be paused. An open incident stays open
/// through the pause and nothing is sent ([`crate::incidents::pause`],
/// [`crate::incidents::resume`]).
pub async fn set_paused(
    pool: &PgPool,
    tenant_id: Uuid,
    id: DomainId,
    paused: bool,
    actor: &str,
) -> Result<Written, StoreError> {
    let mut tx = pool.begin().await?;
    let current = lock(&mut tx, tenant_id, id).await?;
    let spec = DomainSpec { paused, ..current.spec.clone() };
    write_if_changed(tx, current, spec, actor).await
}

async fn write_if_changed(
    mut tx: PgTransaction<'_>,
    current: Domain,
    spec: DomainSpec,
    actor: &str,
) -> Result<Written, StoreError> {
    let (id, tenant_id) = (current.id, current.tenant_id);
    if spec == current.spec {
        // Nothing changed: no new version, nothing to publish. The row lock is released now.
        tx.rollback().await?;
        return Ok(Written { version: current.version, domain: current, changed: false });
    }
    let unseen = DomainSpec {
        flap: spec.flap.clone(),
        name: spec.name.clone(),
        tags: spec.tags.clone(),
        dns_drift: spec.dns_drift.clone(),
        slo: spec.slo,
        degraded: spec.degraded.clone(),
        ..current.spec.clone()
    } == spec;
    if unseen {
        // Only settings agents never see changed (flap, degraded, DNS drift, SLO, the name, the
        // tags): no new version.
        let row: Row = sqlx::query_as(&format!(
            "UPDATE domains SET flap = $2, name = $3, tags = $4, dns_drift = $5, slo = $6, degraded = $7, \
             updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id.0)
        .bind(spec.flap.as_ref().map(crate::flap::Overrides::to_json))
        .bind(spec.name.as_deref())
        .bind(&spec.tags)
        .bind(spec.dns_drift.as_ref().map(crate::dns_drift::Settings::to_json))
        .bind(spec.slo.as_ref().map(crate::sla::Slo::to_json))
        .bind(spec.degraded.as_ref().map(crate::degraded::Overrides::to_json))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Written { version: current.version, domain: row.try_into()?, changed: false });
    }
    if spec.paused != current.spec.paused {
        let (subject, now) = (subject(&current), chrono::Utc::now());
        if spec.paused {
            crate::incidents::pause(&mut tx, &subject, now, actor).await?;
        } else {
            crate::incidents::resume(&mut tx, &subject, now, actor).await?;
        }
    }
    let version = next_version(&mut tx).await?;
    let domain = write_row(&mut tx, id, tenant_id, &spec, version).await?;
    log_change(&mut tx, version, id, Some(&domain.agent_config())).await?;
    tx.commit().await?;
    Ok(Written { domain, version: version as u64, changed: true })
}

fn subject(domain: &Domain) -> crate::incidents::Subject {
    crate::incidents::Subject {
        tenant_id: domain.tenant_id,
        domain_id: domain.id.0,
        url: domain.spec.url.to_string(),
    }
}

/// Deletes a domain on behalf of `actor` (a token id); its open incident is closed
/// ([`crate::incidents::close_for_domain`]). Returns the config version of the deletion.
pub async fn delete(pool: &PgPool, tenant_id: Uuid, id: DomainId, actor: &str) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let current = lock(&mut tx, tenant_id, id).await?;
    let subject = subject(&current);
    crate::incidents::close_for_domain(&mut tx, &subject, chrono::Utc::now(), Stopped::Deleted, actor)
        .await?;
    let version = next_version(&mut tx).await?;
    sqlx::query("DELETE FROM domains WHERE id = $1").bind(id.0).execute(&mut *tx).await?;
    log_change(&mut tx, version, id, None).await?;
    tx.commit().await?;
    Ok(version as u64)
}

/// One domain of a tenant.
pub async fn get(pool: &PgPool, tenant_id: Uuid, id: DomainId) -> Result<Domain, StoreError> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM domains WHERE id = $1 AND tenant_id = $2"))
            .bind(id.0)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.ok_or(StoreError::NotFound)?.try_into()?)
}

/// The tenant's domains among `ids`, in one query (ids of deleted or foreign domains are
/// simply absent).
pub async fn get_many(pool: &PgPool, tenant_id: Uuid, ids: &[Uuid]) -> Result<Vec<Domain>, StoreError> {
    let rows: Vec<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM domains WHERE tenant_id = $1 AND id = ANY($2)"))
            .bind(tenant_id)
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(Domain::try_from).collect::<Result<_, _>>()?)
}

/// A page of a tenant's domains in id (creation) order, starting after `after`; with `tag`,
/// only the domains carrying it (a normalized tag, [`super::tags::parse_tag`]).
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    after: Option<DomainId>,
    tag: Option<&str>,
    limit: u32,
) -> Result<Vec<Domain>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM domains WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) \
         AND ($4::text IS NULL OR tags @> ARRAY[$4::text]) ORDER BY id LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(after.map(|a| a.0))
    .bind(i64::from(limit))
    .bind(tag)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Domain::try_from).collect::<Result<_, _>>()?)
}

/// Every domain with the config version they reflect, read in one snapshot (for rebuilding
/// Redis). Streams nothing partial: the snapshot is consistent with the returned version.
pub async fn snapshot(pool: &PgPool) -> Result<(u64, Vec<DomainConfig>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let version: i64 = sqlx::query_scalar("SELECT version FROM config_state").fetch_one(&mut *tx).await?;
    let rows: Vec<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM domains")).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let configs =
        rows.into_iter().map(|r| Domain::try_from(r).map(|d| d.agent_config())).collect::<Result<_, _>>()?;
    Ok((version as u64, configs))
}
