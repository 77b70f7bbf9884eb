//! The ingest's TLS configuration, kept current with the certificate revocation list.
//!
//! The CA, the server's chain and its key are read once at start. The CRL (`tls_crl`) is
//! re-read every `tls_crl_poll_s` seconds when it is a file path: a changed, valid list
//! replaces the rustls server configuration that every *new* handshake uses (published through
//! a `watch` channel, no restart), and its revoked serials are checked on every request, so an
//! agent's already open connection is cut off too (`PERMISSION_DENIED`). A list that cannot be
//! read or parsed leaves the previous one in force and is logged as an error and counted
//! (`control_plane_ingest_crl_loads_total{outcome}`).
//!
//! Each poll also compares the list's `nextUpdate` with the clock
//! (`control_plane_ingest_crl_next_update_timestamp_seconds`): within [`EXPIRY_WARNING`] a
//! warning is logged, once it has passed an error — on the change and then hourly — and
//! `control_plane_ingest_crl_stale` is 1 until a current list replaces it. A lapsed
//! list stays in force: agents it does not revoke are still accepted, revoked ones still
//! refused (rustls does not enforce `nextUpdate`; locking out the whole fleet because a cron
//! job did not run would turn a paperwork lapse into an outage).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shared::tls::RevocationLists;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;

/// How long before its `nextUpdate` a CRL is reported as about to lapse.
pub const EXPIRY_WARNING: chrono::Duration = chrono::Duration::days(2);
/// How often a CRL that is about to lapse, or has lapsed, is reported again.
const REPEAT_ALARM: Duration = Duration::from_secs(3600);

/// What the ingest currently enforces; replaced as a whole when the CRL changes.
#[derive(Debug)]
pub struct IngestTls {
    /// The server configuration new handshakes use.
    pub server: Arc<rustls::ServerConfig>,
    /// Serials (normalized lowercase hex) the CRL revokes, checked per request.
    pub revoked: BTreeSet<String>,
}

/// The TLS material read once at start, from which [`IngestTls`] is rebuilt for each new CRL.
pub struct TlsSource {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsSource {
    /// Reads `tls_ca`, `tls_cert` and `tls_key`. Errors name the setting and the problem.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let (Some(ca), Some(cert), Some(key)) = (&config.tls_ca, &config.tls_cert, &config.tls_key) else {
            anyhow::bail!("tls_ca, tls_cert and tls_key are required for ingest");
        };
        Ok(Self {
            ca: shared::tls::certificates("tls_ca", ca)?,
            chain: shared::tls::certificates("tls_cert", cert)?,
            key: shared::tls::private_key("tls_key", key)?,
        })
    }

    /// The configuration enforcing `crls` (none: no revocation list).
    pub fn build(&self, crls: Option<&RevocationLists>) -> Result<IngestTls, shared::tls::TlsError> {
        let server = shared::tls::mtls_server_config(
            &self.ca,
            self.chain.clone(),
            self.key.clone_key(),
            crls.map(|c| c.ders.clone()).unwrap_or_default(),
        )?;
        let revoked = crls.map(|c| c.revoked.clone()).unwrap_or_default();
        Ok(IngestTls { server: Arc::new(server), revoked })
    }
}

/// Where a CRL stands against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// `nextUpdate` is more than [`EXPIRY_WARNING`] away (or the list names none).
    Current,
    /// `nextUpdate` is within [`EXPIRY_WARNING`].
    Expiring,
    /// `nextUpdate` has passed: the list is still enforced, but should have been replaced.
    Lapsed,
}

/// The standing of a list whose `nextUpdate` is `next_update`, at `now`.
pub fn standing(next_update: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Standing {
    match next_update {
        Some(next) if next <= now => Standing::Lapsed,
        Some(next) if next - now <= EXPIRY_WARNING => Standing::Expiring,
        _ => Standing::Current,
    }
}

/// Keeps the ingest's [`IngestTls`] in step with the `tls_crl` file.
pub struct CrlWatcher {
    source: TlsSource,
    /// The file to re-read; `None` when `tls_crl` holds the PEM text itself (or is unset).
    path: Option<PathBuf>,
    poll: Duration,
    tx: watch::Sender<Arc<IngestTls>>,
    metrics: Metrics,
    /// The bytes last read (applied or refused), so an unchanged file is not parsed again;
    /// `None` without a CRL.
    last_read: Option<Vec<u8>>,
    /// The last read failed (reported once until a read succeeds again).
    unreadable: bool,
    next_update: Option<DateTime<Utc>>,
    last_alarm: Option<(Standing, Instant)>,
}

/// Reads and checks the whole ingest TLS configuration (CA, certificate, key and revocation
/// list) as [`CrlWatcher::start`] will, without starting anything: what `Config::preflight` runs
/// before the control plane connects to anything. Errors name the setting.
pub fn check(config: &Config) -> anyhow::Result<()> {
    let source = TlsSource::load(config)?;
    let crls = match &config.tls_crl {
        Some(value) => {
            let pem = shared::tls::read_pem("tls_crl", value)?;
            Some(shared::tls::parse_revocation_lists("tls_crl", &pem)?)
        }
        None => None,
    };
    source.build(crls.as_ref())?;
    Ok(())
}

impl CrlWatcher {
    /// Reads the whole TLS configuration from `config` and returns the watcher with the
    /// receiver the listener and the service read from. Errors (unreadable or invalid
    /// material, including a CRL without any list) stop the start-up.
    pub fn start(
        config: &Config,
        metrics: Metrics,
    ) -> anyhow::Result<(Self, watch::Receiver<Arc<IngestTls>>)> {
        let source = TlsSource::load(config)?;
        let (crls, last_read, path) = match &config.tls_crl {
            Some(value) => {
                let pem = shared::tls::read_pem("tls_crl", value)?;
                let crls = shared::tls::parse_revocation_lists("tls_crl", &pem)?;
                let inline = value.trim_start().starts_with("-----BEGIN");
                (Some(crls), Some(pem), (!inline).then(|| PathBuf::from(value)))
            }
            None => (None, None, None),
        };
        let tls = source.build(crls.as_ref()).context("building the ingest TLS configuration")?;
        let (tx, rx) = watch::channel(Arc::new(tls));
        let mut watcher = Self {
            source,
            path,
            poll: Duration::from_secs(config.tls_crl_poll_s),
            tx,
            metrics,
            last_read,
            unreadable: false,
            next_update: None,
            last_alarm: None,
        };
        if let Some(crls) = &crls {
            watcher.adopted(crls);
        }
        watcher.check_expiry(Utc::now());
        Ok((watcher, rx))
    }

    /// Polls until `shutdown`. Without a CRL there is nothing to watch.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.last_read.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.check(Utc::now()).await,
            }
        }
    }

    /// One poll: re-reads the file and applies a changed, valid list; then checks the
    /// `nextUpdate` of the list in force against `now`.
    pub async fn check(&mut self, now: DateTime<Utc>) {
        if let Some(path) = self.path.clone() {
            self.reload(&path).await;
        }
        self.check_expiry(now);
    }

    async fn reload(&mut self, path: &std::path::Path) {
        let pem = match tokio::fs::read(path).await {
            Ok(pem) => pem,
            Err(error) => {
                // Reported once, not on every poll while the file stays missing.
                if !self.unreadable {
                    self.unreadable = true;
                    self.metrics.crl_load("unreadable");
                    tracing::error!(path = %path.display(), %error, "cannot read tls_crl; the previous revocation list stays in force");
                }
                return;
            }
        };
        self.unreadable = false;
        if self.last_read.as_ref() == Some(&pem) {
            return;
        }
        self.last_read = Some(pem.clone());
        let applied = shared::tls::parse_revocation_lists("tls_crl", &pem)
            .and_then(|crls| Ok((self.source.build(Some(&crls))?, crls)));
        match applied {
            Ok((tls, crls)) => {
                self.tx.send_replace(Arc::new(tls));
                self.adopted(&crls);
                self.metrics.crl_load("applied");
                tracing::info!(
                    path = %path.display(),
                    revoked = crls.revoked.len(),
                    next_update = ?crls.next_update,
                    "revocation list reloaded"
                );
            }
            Err(error) => {
                self.metrics.crl_load("invalid");
                tracing::error!(path = %path.display(), %error, "the new tls_crl is not usable; the previous revocation list stays in force");
            }
        }
    }

    fn adopted(&mut self, crls: &RevocationLists) {
        self.next_update = crls.next_update;
        self.metrics.ingest_crl_next_update.set(crls.next_update.map_or(0, |t| t.timestamp()));
        self.last_alarm = None;
    }

    fn check_expiry(&mut self, now: DateTime<Utc>) {
        let standing = standing(self.next_update, now);
        self.metrics.ingest_crl_stale.set(i64::from(standing == Standing::Lapsed));
        if standing == Standing::Current {
            self.last_alarm = None;
            return;
        }
        let due = match self.last_alarm {
            Some((said, at)) => said != standing || at.elapsed() >= REPEAT_ALARM,
            None => true,
        };
        if !due {
            return;
        }
        self.last_alarm = Some((standing, Instant::now()));
        let next_update = self.next_update.map(|t| t.to_rfc3339()).unwrap_or_default();
        if standing == Standing::Lapsed {
            tracing::error!(
                %next_update,
                "the ingest's revocation list has lapsed: run `certs crl` and replace tls_crl; agents it does not revoke are still accepted"
            );
        } else {
            tracing::warn!(%next_update, "the ingest's revocation list lapses within 2 days: run `certs crl` and replace tls_crl");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_follows_next_update() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let day = chrono::Duration::days(1);
        assert_eq!(standing(None, now), Standing::Current);
        assert_eq!(standing(Some(now + day * 7), now), Standing::Current);
        assert_eq!(standing(Some(now + day * 2 + chrono::Duration::seconds(1)), now), Standing::Current);
        assert_eq!(standing(Some(now + day * 2), now), Standing::Expiring);
        assert_eq!(standing(Some(now + chrono::Duration::seconds(1)), now), Standing::Expiring);
        assert_eq!(standing(Some(now), now), Standing::Lapsed);
        assert_eq!(standing(Some(now - day), now), Standing::Lapsed);
    }
}
