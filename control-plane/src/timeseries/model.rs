//! What the ingest path accepts and answers ([`IngestBatch`], [`IngestOutcome`],
//! [`IngestError`]) and the validation of protobuf results into rows ready for COPY.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use shared::proto::{CertProblem, ErrorKind, HttpVersion, ProbeResult, Trigger};
use uuid::Uuid;

use super::buckets::bucket_index;

/// Largest accepted phase or total duration: 30 minutes (stored as a 32-bit integer).
pub const MAX_DURATION_US: u32 = 1_800_000_000;
/// Earliest accepted probe start: 2000-01-01T00:00:00Z.
pub const MIN_STARTED_AT_US: i64 = 946_684_800_000_000;
/// How far in the future a probe start may be (agent clock skew), in microseconds.
pub const MAX_FUTURE_US: i64 = 24 * 3_600 * 1_000_000;
/// Longest stored error detail, in bytes (longer ones are cut at a character boundary).
pub const MAX_ERROR_DETAIL_BYTES: usize = 512;
/// Longest accepted text field (resolved address, certificate names, serial).
pub const MAX_TEXT_BYTES: usize = 4_096;
/// Most certificates of later hops accepted with one result (agents follow at most a few
/// redirects).
pub const MAX_REDIRECT_CERTIFICATES: usize = 32;

/// One batch of results from one agent, as the ingest server hands it over. The region and
/// agent id come from the agent's certificate.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub region: String,
    pub agent_id: String,
    pub batch_id: Uuid,
    pub results: Vec<ProbeResult>,
}

/// A stored batch: how many results this call stored, and whether it had been stored before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    pub stored: u32,
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The batch is malformed; resending it unchanged will not help (`INVALID_ARGUMENT`).
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// Storage is down, slow or saturated; the agent keeps the batch and resends (`UNAVAILABLE`).
    #[error("time-series storage unavailable: {0}")]
    Unavailable(String),
}

/// A validated result, in the raw table's column types.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub time: DateTime<Utc>,
    pub domain_id: Uuid,
    pub ok: bool,
    pub error_kind: Option<&'static str>,
    pub error_detail: Option<String>,
    pub status_code: Option<i32>,
    pub dns_us: Option<i32>,
    pub connect_us: Option<i32>,
    pub tls_us: Option<i32>,
    pub ttfb_us: Option<i32>,
    pub total_us: i32,
    pub resolved_ip: Option<String>,
    /// `HTTP/1.1` or `HTTP/2`; `None` when no exchange started (or an older agent).
    pub http_version: Option<&'static str>,
    pub trigger: &'static str,
    pub config_version: i64,
    pub total_b: i16,
    pub dns_b: Option<i16>,
    pub connect_b: Option<i16>,
    pub tls_b: Option<i16>,
    pub ttfb_b: Option<i16>,
}

/// The certificate facts of one result, kept only as the newest per (domain, region).
#[derive(Debug, Clone)]
pub(crate) struct CertRow {
    pub domain_id: Uuid,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub valid: bool,
    pub validation_error: Option<String>,
    pub observed_at: DateTime<Utc>,
    /// The host the certificate was presented for; empty: the monitored URL's host.
    pub host: String,
    /// `{"length", "verified", "earliest": {"position", "subject", "not_after"} | null}`: the
    /// chain's length (0: unknown, an older agent) and its earliest-expiring certificate above
    /// the leaf.
    pub chain: Value,
    /// `{"kind", "position", "subject", "at"}`: the certificate at fault; `None` when valid or
    /// unknown.
    pub problem: Option<Value>,
    /// The later HTTPS hops' certificates, in order: `[{"host", "subject", "issuer", "serial",
    /// "not_before", "not_after", "valid", "validation_error", "chain", "problem"}]`.
    pub hops: Value,
}

/// A batch after validation.
#[derive(Debug)]
pub(crate) struct ValidBatch {
    pub region: String,
    pub agent_id: String,
    pub batch_id: Uuid,
    pub rows: Vec<Row>,
    pub certificates: Vec<CertRow>,
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// PostgreSQL text cannot hold NUL; certificate fields and error details come from whatever
/// server a domain points at, so a NUL is replaced (U+FFFD) rather than failing the whole
/// group-commit transaction.
fn clean(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text.to_owned()
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    clean(&text[..end])
}

fn duration(value: Option<u32>, what: &str) -> Result<Option<i32>, String> {
    match value {
        None => Ok(None),
        Some(us) if us <= MAX_DURATION_US => Ok(Some(us as i32)),
        Some(us) => Err(format!("{what} of {us} µs exceeds {MAX_DURATION_US} µs")),
    }
}

fn text(value: &str, what: &str) -> Result<(), String> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(format!("{what} is longer than {MAX_TEXT_BYTES} bytes"));
    }
    Ok(())
}

fn seconds(value: i64, what: &str) -> Result<DateTime<Utc>, String> {
    Utc.timestamp_opt(value, 0).single().ok_or_else(|| format!("{what} {value} is not a valid time"))
}

fn certificate(
    domain_id: Uuid,
    observed_at: DateTime<Utc>,
    c: &shared::proto::Certificate,
    later: &[shared::proto::Certificate],
) -> Result<CertRow, String> {
    check_certificate(c)?;
    if c.sans.len() > 1_000 {
        return Err("certificate has more than 1000 names".into());
    }
    for san in &c.sans {
        text(san, "certificate name")?;
    }
    if later.len() > MAX_REDIRECT_CERTIFICATES {
        return Err(format!("more than {MAX_REDIRECT_CERTIFICATES} redirect certificates"));
    }
    let hops = later
        .iter()
        .map(|hop| {
            check_certificate(hop)?;
            Ok(json!({
                "host": clean(&hop.host),
                "subject": clean(&hop.subject),
                "issuer": clean(&hop.issuer),
                "serial": clean(&hop.serial),
                "not_before": seconds(hop.not_before_unix_s, "certificate not_before")?,
                "not_after": seconds(hop.not_after_unix_s, "certificate not_after")?,
                "valid": hop.valid,
                "validation_error": non_empty(&truncate(&hop.validation_error, MAX_ERROR_DETAIL_BYTES)),
                "chain": chain(hop)?,
                "problem": problem(hop)?,
            }))
        })
        .collect::<Result<Vec<Value>, String>>()?;
    Ok(CertRow {
        domain_id,
        subject: clean(&c.subject),
        issuer: clean(&c.issuer),
        sans: c.sans.iter().map(|san| clean(san)).collect(),
        serial: clean(&c.serial),
        not_before: seconds(c.not_before_unix_s, "certificate not_before")?,
        not_after: seconds(c.not_after_unix_s, "certificate not_after")?,
        valid: c.valid,
        validation_error: non_empty(&truncate(&c.validation_error, MAX_ERROR_DETAIL_BYTES)),
        observed_at,
        host: clean(&c.host),
        chain: chain(c)?,
        problem: problem(c)?,
        hops: Value::Array(hops),
    })
}

/// The text fields every certificate carries, checked for length.
fn check_certificate(c: &shared::proto::Certificate) -> Result<(), String> {
    let earliest = c.chain_earliest.as_ref().map_or("", |e| e.subject.as_str());
    for (value, what) in [
        (&c.subject, "certificate subject"),
        (&c.issuer, "certificate issuer"),
        (&c.serial, "certificate serial"),
        (&c.host, "certificate host"),
        (&c.problem_subject, "certificate problem subject"),
    ] {
        text(value, what)?;
    }
    text(earliest, "chain certificate subject")
}

/// The subject of the certificate at `position` of `c`'s chain, from what the wire carries:
/// the leaf's subject (0), its issuer (1), or `sent` (2 and up).
fn subject_at(c: &shared::proto::Certificate, position: u32, sent: &str) -> String {
    match position {
        0 => clean(&c.subject),
        1 if sent.is_empty() => clean(&c.issuer),
        _ => clean(sent),
    }
}

fn chain(c: &shared::proto::Certificate) -> Result<Value, String> {
    let earliest = match &c.chain_earliest {
        None => Value::Null,
        Some(e) => json!({
            "position": e.position,
            "subject": subject_at(c, e.position, &e.subject),
            "not_after": seconds(e.not_after_unix_s, "chain certificate not_after")?,
        }),
    };
    Ok(json!({ "length": c.chain_length, "verified": c.chain_verified, "earliest": earliest }))
}

fn problem(c: &shared::proto::Certificate) -> Result<Option<Value>, String> {
    let Some(kind) = CertProblem::try_from(c.problem).ok().and_then(CertProblem::label) else {
        return Ok(None);
    };
    let at = c.problem_at_unix_s.map(|at| seconds(at, "certificate problem time")).transpose()?;
    Ok(Some(json!({
        "kind": kind,
        "position": c.problem_position,
        "subject": subject_at(c, c.problem_position, &c.problem_subject),
        "at": at,
    })))
}

fn row(r: &ProbeResult, now_us: i64) -> Result<(Row, Option<CertRow>), String> {
    let domain_id = shared::proto::uuid_from_bytes(&r.domain_id)
        .ok_or_else(|| format!("domain_id must be 16 bytes, got {}", r.domain_id.len()))?;
    let started = r.started_at_unix_us;
    if !(MIN_STARTED_AT_US..=now_us.saturating_add(MAX_FUTURE_US)).contains(&started) {
        return Err(format!("started_at_unix_us {started} is before 2000 or more than a day ahead"));
    }
    let time = Utc
        .timestamp_micros(started)
        .single()
        .ok_or_else(|| format!("started_at_unix_us {started} is not a valid time"))?;
    let config_version = i64::try_from(r.config_version)
        .map_err(|_| format!("config_version {} is too large", r.config_version))?;
    let trigger = match Trigger::try_from(r.trigger) {
        Ok(Trigger::Scheduled) => "scheduled",
        Ok(Trigger::OnDemand) => "on_demand",
        Err(_) => return Err(format!("unknown trigger {}", r.trigger)),
    };
    let error_kind =
        ErrorKind::try_from(r.error).map_err(|_| format!("unknown error kind {}", r.error))?.label();
    if r.status_code > 999 {
        return Err(format!("status_code {} is not an HTTP status", r.status_code));
    }
    text(&r.resolved_ip, "resolved_ip")?;
    if r.total_us > MAX_DURATION_US {
        return Err(format!("total_us of {} µs exceeds {MAX_DURATION_US} µs", r.total_us));
    }
    let row = Row {
        time,
        domain_id,
        ok: r.ok,
        error_kind,
        error_detail: non_empty(&truncate(&r.error_detail, MAX_ERROR_DETAIL_BYTES)),
        status_code: (r.status_code != 0).then_some(r.status_code as i32),
        dns_us: duration(r.dns_us, "dns_us")?,
        connect_us: duration(r.connect_us, "connect_us")?,
        tls_us: duration(r.tls_us, "tls_us")?,
        ttfb_us: duration(r.ttfb_us, "ttfb_us")?,
        total_us: r.total_us as i32,
        resolved_ip: non_empty(&clean(&r.resolved_ip)),
        http_version: HttpVersion::try_from(r.http_version)
            .map_err(|_| format!("unknown http_version {}", r.http_version))?
            .label(),
        trigger,
        config_version,
        total_b: bucket_index(r.total_us),
        dns_b: r.dns_us.map(bucket_index),
        connect_b: r.connect_us.map(bucket_index),
        tls_b: r.tls_us.map(bucket_index),
        ttfb_b: r.ttfb_us.map(bucket_index),
    };
    let cert = r
        .certificate
        .as_ref()
        .map(|c| certificate(domain_id, time, c, &r.redirect_certificates))
        .transpose()?;
    Ok((row, cert))
}

/// Validates every result; the error names the first bad result's index.
pub(crate) fn validate(batch: IngestBatch, now: DateTime<Utc>) -> Result<ValidBatch, IngestError> {
    if batch.results.len() > shared::proto::MAX_BATCH_RESULTS {
        return Err(IngestError::Invalid(format!(
            "batch of {} results exceeds the limit of {}",
            batch.results.len(),
            shared::proto::MAX_BATCH_RESULTS
        )));
    }
    for (value, what) in [(&batch.region, "region"), (&batch.agent_id, "agent_id")] {
        if value.is_empty() || value.len() > 128 {
            return Err(IngestError::Invalid(format!("{what} must be 1 to 128 bytes")));
        }
    }
    let now_us = now.timestamp_micros();
    let mut rows = Vec::with_capacity(batch.results.len());
    let mut certificates: Vec<CertRow> = Vec::new();
    for (index, result) in batch.results.iter().enumerate() {
        let (row, cert) =
            row(result, now_us).map_err(|e| IngestError::Invalid(format!("result {index}: {e}")))?;
        rows.push(row);
        if let Some(cert) = cert {
            // Only the newest certificate per domain is kept.
            match certificates.iter_mut().find(|c| c.domain_id == cert.domain_id) {
                Some(existing) if existing.observed_at <= cert.observed_at => *existing = cert,
                Some(_) => {}
                None => certificates.push(cert),
            }
        }
    }
    Ok(ValidBatch {
        region: batch.region,
        agent_id: batch.agent_id,
        batch_id: batch.batch_id,
        rows,
        certificates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(results: Vec<ProbeResult>) -> IngestBatch {
        IngestBatch { region: "ams".into(), agent_id: "a".into(), batch_id: Uuid::nil(), results }
    }

    fn good() -> ProbeResult {
        ProbeResult {
            domain_id: Uuid::now_v7().as_bytes().to_vec(),
            started_at_unix_us: Utc::now().timestamp_micros(),
            ok: true,
            total_us: 1_000,
            dns_us: Some(10),
            ..Default::default()
        }
    }

    #[test]
    fn names_the_first_bad_result() {
        let bad = ProbeResult { domain_id: vec![1, 2, 3], ..good() };
        let err = validate(batch(vec![good(), bad.clone(), bad]), Utc::now()).unwrap_err();
        assert!(
            matches!(&err, IngestError::Invalid(m) if m.starts_with("result 1:") && m.contains("16 bytes")),
            "{err}"
        );
        let late = ProbeResult { started_at_unix_us: 0, ..good() };
        assert!(matches!(validate(batch(vec![late]), Utc::now()), Err(IngestError::Invalid(_))));
        let slow = ProbeResult { ttfb_us: Some(u32::MAX), ..good() };
        assert!(
            matches!(validate(batch(vec![slow]), Utc::now()), Err(IngestError::Invalid(m)) if m.contains("ttfb_us"))
        );
    }

    #[test]
    fn good_results_become_rows() {
        let valid = validate(batch(vec![good()]), Utc::now()).unwrap();
        let row = &valid.rows[0];
        assert_eq!(row.total_b, bucket_index(1_000));
        assert_eq!(row.dns_b, Some(bucket_index(10)));
        assert_eq!(row.tls_b, None);
        assert_eq!(row.status_code, None);
        assert_eq!(row.trigger, "scheduled");
    }

    #[test]
    fn chain_facts_are_completed_from_what_the_wire_leaves_out() {
        let cert = shared::proto::Certificate {
            subject: "CN=a.example".into(),
            issuer: "CN=R11".into(),
            serial: "01".into(),
            not_before_unix_s: 1_700_000_000,
            not_after_unix_s: 1_800_000_000,
            chain_length: 2,
            chain_earliest: Some(shared::proto::ChainCertificate {
                position: 1,
                subject: String::new(),
                not_after_unix_s: 1_750_000_000,
            }),
            problem: CertProblem::Expired as i32,
            problem_position: 1,
            ..Default::default()
        };
        let result = ProbeResult { certificate: Some(cert.clone()), ..good() };
        let valid = validate(batch(vec![result]), Utc::now()).unwrap();
        let row = &valid.certificates[0];
        // Position 1 is the leaf's issuer.
        assert_eq!(row.chain["earliest"]["subject"], "CN=R11");
        assert_eq!(row.problem.as_ref().unwrap()["subject"], "CN=R11");
        assert_eq!(row.problem.as_ref().unwrap()["kind"], "expired");
        assert_eq!(row.hops, json!([]));

        let many = ProbeResult {
            certificate: Some(cert.clone()),
            redirect_certificates: vec![cert; MAX_REDIRECT_CERTIFICATES + 1],
            ..good()
        };
        assert!(matches!(
            validate(batch(vec![many]), Utc::now()),
            Err(IngestError::Invalid(m)) if m.contains("redirect certificates")
        ));
    }

    #[test]
    fn nul_characters_from_probed_servers_are_replaced() {
        let cert = shared::proto::Certificate {
            subject: "CN=evil\0.example".into(),
            issuer: "CA\0".into(),
            sans: vec!["a\0b".into()],
            serial: "01".into(),
            not_before_unix_s: 1_700_000_000,
            not_after_unix_s: 1_800_000_000,
            ..Default::default()
        };
        let result =
            ProbeResult { ok: false, error_detail: "bad\0detail".into(), certificate: Some(cert), ..good() };
        let valid = validate(batch(vec![result]), Utc::now()).unwrap();
        let cert = &valid.certificates[0];
        for text in [&cert.subject, &cert.issuer, &cert.sans[0], valid.rows[0].error_detail.as_ref().unwrap()]
        {
            assert!(!text.contains('\0') && text.contains('\u{fffd}'), "{text:?}");
        }
    }
}
