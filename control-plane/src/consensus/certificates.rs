//! Certificate expiry notices: the earliest-expiring certificate a probe saw over its hops and
//! chains ([`CertificateFact`]), and the `certificate_expiring` / `certificate_expired`
//! notification it is due, once per (domain, certificate, threshold) by dedup key.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Consensus;
use crate::expiry;
use crate::notify::{self, Notification};

/// Certificate expiry notifications remembered as sent (then the memory starts over; the
/// outbox's dedup key still prevents duplicates).
const CERT_MEMORY: usize = 100_000;

/// The certificate that expires first of those a domain's probe saw in a batch: over the first
/// hop's chain (the leaf and the earliest-expiring certificate above it) and every later hop's.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFact {
    pub domain_id: Uuid,
    /// What notices about this certificate are deduplicated by: a leaf's serial, or for a
    /// certificate above the leaf (which agents send without its serial) `i<position>-` and a
    /// digest of its subject and expiry.
    pub serial: String,
    pub subject: String,
    pub not_after: DateTime<Utc>,
    /// The hop's host; empty: the monitored URL's own host.
    pub host: String,
    /// 0 for the leaf, N for the Nth intermediate above it.
    pub position: u32,
}

impl CertificateFact {
    /// The earliest-expiring certificate of `result`'s hops and chains; `None` without a
    /// certificate (or without a usable leaf serial and expiry).
    pub fn earliest(domain_id: Uuid, result: &shared::proto::ProbeResult) -> Option<CertificateFact> {
        let first = result.certificate.as_ref()?;
        let mut facts = Vec::new();
        for cert in std::iter::once(first).chain(&result.redirect_certificates) {
            let Some(not_after) = Utc.timestamp_opt(cert.not_after_unix_s, 0).single() else { continue };
            if cert.serial.is_empty() {
                continue;
            }
            // The first certificate's host is empty when it is the monitored URL's.
            let host = cert.host.clone();
            facts.push(CertificateFact {
                domain_id,
                serial: cert.serial.clone(),
                subject: cert.subject.clone(),
                not_after,
                host: host.clone(),
                position: 0,
            });
            let Some(above) = &cert.chain_earliest else { continue };
            let Some(not_after) = Utc.timestamp_opt(above.not_after_unix_s, 0).single() else { continue };
            let subject =
                if above.position == 1 && above.subject.is_empty() { &cert.issuer } else { &above.subject };
            let digest = Sha256::digest(format!("{subject}\n{}", above.not_after_unix_s));
            facts.push(CertificateFact {
                domain_id,
                serial: format!("i{}-{}", above.position, hex::encode(&digest[..8])),
                subject: subject.clone(),
                not_after,
                host,
                position: above.position,
            });
        }
        facts.into_iter().min_by_key(|f| (f.not_after, f.position))
    }

    /// How a notice names the certificate: `the certificate of <url>`, `intermediate 1
    /// (CN=R11) of the chain of <url>`, `the certificate of b.example (redirect target of
    /// <url>)`.
    fn describe(&self, url: &str) -> String {
        let own =
            self.host.is_empty() || url::Url::parse(url).is_ok_and(|u| u.host_str() == Some(&self.host));
        let whose = if own { url.to_owned() } else { format!("{} (redirect target of {url})", self.host) };
        match self.position {
            0 if own => format!("the certificate of {whose}"),
            0 => format!("the certificate of {whose}, {}", self.subject),
            n => format!("intermediate {n} ({}) of the certificate chain of {whose}", self.subject),
        }
    }
}

impl Consensus {
    /// Enqueues the expiry notice `cert` is due ([`crate::expiry::due`]): a
    /// `certificate_expiring` notification once per (domain, serial, threshold), or a
    /// `certificate_expired` one once per (domain, serial) after `not_after`. The dedup key
    /// `cert:<domain>:<serial>:<days | expired>` makes each once-only; an in-memory set spares
    /// the database the repeats. Returns whether outbox rows were added.
    pub async fn certificate(&self, cert: &CertificateFact, now: DateTime<Utc>) -> sqlx::Result<bool> {
        let Some(notice) = expiry::due(&self.settings.cert_thresholds_days, cert.not_after, now) else {
            return Ok(false);
        };
        let dedup_key = format!("cert:{}:{}:{}", cert.domain_id, cert.serial, notice.key_part());
        if self.certs_sent.lock().expect("certificate memory").contains(&dedup_key) {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        let domain: Option<(Uuid, String)> =
            sqlx::query_as("SELECT tenant_id, url FROM domains WHERE id = $1")
                .bind(cert.domain_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((tenant_id, url)) = domain else {
            tx.rollback().await?;
            return Ok(false);
        };
        let days_left = expiry::days_left(cert.not_after, now);
        let host = if cert.host.is_empty() {
            url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned))
        } else {
            Some(cert.host.clone())
        };
        let mut details = json!({
            "serial": cert.serial, "subject": cert.subject, "not_after": cert.not_after,
            "days_left": days_left, "host": host, "position": cert.position,
        });
        match notice {
            expiry::Notice::Expiring { threshold_days } => details["threshold_days"] = json!(threshold_days),
            expiry::Notice::Expired => {
                details["expired_at"] = json!(cert.not_after);
                details["expired_for_s"] = json!((now - cert.not_after).num_seconds().max(0));
            }
        }
        let notification = Notification {
            kind: notice.kind().into(),
            tenant_id,
            domain_id: Some(cert.domain_id),
            url: Some(url.clone()),
            incident_id: None,
            summary: expiry::summary(notice, &cert.describe(&url), cert.not_after, now),
            details,
            occurred_at: now,
        };
        let added = notify::enqueue(&mut tx, &notification, &dedup_key).await?;
        tx.commit().await?;
        if added > 0 {
            self.metrics.cert_expiry_notifications.inc();
        }
        let mut sent = self.certs_sent.lock().expect("certificate memory");
        if sent.len() >= CERT_MEMORY {
            sent.clear();
        }
        sent.insert(dedup_key);
        Ok(added > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::proto::{Certificate, ProbeResult};

    #[test]
    fn the_earliest_certificate_over_chains_and_hops_is_watched_and_named() {
        let domain_id = Uuid::now_v7();
        let leaf = |host: &str, serial: &str, not_after: i64| Certificate {
            host: host.into(),
            subject: format!("CN={}", if host.is_empty() { "example.com" } else { host }),
            issuer: "CN=R11".into(),
            serial: serial.into(),
            not_after_unix_s: not_after,
            ..Default::default()
        };
        let mut result =
            ProbeResult { certificate: Some(leaf("", "01", 2_000_000_000)), ..Default::default() };
        let fact = CertificateFact::earliest(domain_id, &result).unwrap();
        assert_eq!((fact.serial.as_str(), fact.position), ("01", 0));
        assert_eq!(fact.describe("https://example.com/"), "the certificate of https://example.com/");

        // An intermediate (the leaf's issuer) expiring first is watched under its own key.
        result.certificate.as_mut().unwrap().chain_earliest = Some(shared::proto::ChainCertificate {
            position: 1,
            subject: String::new(),
            not_after_unix_s: 1_900_000_000,
        });
        let fact = CertificateFact::earliest(domain_id, &result).unwrap();
        assert_eq!((fact.subject.as_str(), fact.position), ("CN=R11", 1));
        assert!(fact.serial.starts_with("i1-") && fact.serial.len() == 3 + 16, "{}", fact.serial);
        assert_eq!(
            fact.describe("https://example.com/"),
            "intermediate 1 (CN=R11) of the certificate chain of https://example.com/"
        );

        // A redirect target's leaf expiring sooner still comes first.
        result.redirect_certificates = vec![leaf("www.example.net", "77", 1_800_000_000)];
        let fact = CertificateFact::earliest(domain_id, &result).unwrap();
        assert_eq!((fact.host.as_str(), fact.serial.as_str()), ("www.example.net", "77"));
        assert_eq!(
            fact.describe("https://example.com/"),
            "the certificate of www.example.net (redirect target of https://example.com/), CN=www.example.net"
        );
        assert_eq!(CertificateFact::earliest(domain_id, &ProbeResult::default()), None);
    }
}
