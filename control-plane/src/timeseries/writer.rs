//! The ingest write path: a bounded queue of validated batches served by a fixed number of
//! writer tasks, each owning one tokio-postgres connection.
//!
//! A writer takes every batch queued at that moment (up to [`MAX_ROWS_PER_TX`] results) and
//! stores them in one transaction: batch ids into `ingested_batches` (`ON CONFLICT DO NOTHING
//! RETURNING` tells which are new), a binary COPY of the new batches' rows, one upsert of the
//! newest certificate per (domain, region), and in plain mode a binary COPY of the same rows'
//! roll-up inputs into `rollup_queue` plus one `rollup_queued_hours` mark per UTC hour they
//! fall in (the refresher adds them to the roll-ups in bulk, see [`super::rollup`]), or in
//! TimescaleDB mode one `late_results` mark when some new rows are older than the refresh
//! policies reach (see [`super::late`]), COMMIT. Only then is each batch answered. Every
//! statement but the certificate upsert only appends, so writers never wait on each other's
//! rows there; certificate keys are written in sorted order so that two writers never lock
//! the same rows in opposite orders.
//!
//! A writer whose connection is down answers every batch it takes with `Unavailable` at once
//! and reconnects with exponential backoff.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::metrics::TimeseriesMetrics;
use super::model::{CertRow, IngestBatch, IngestError, IngestOutcome, Row, ValidBatch};
use super::StorageMode;

/// Most results written in one transaction (a single larger batch still goes alone).
pub const MAX_ROWS_PER_TX: usize = 20_000;
/// A transaction taking longer is abandoned (its connection closed) and its batches answered
/// `Unavailable`; the agents resend them.
const TX_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

const COPY: &str = "COPY probe_results (time, domain_id, region, agent_id, batch_id, ok, error_kind, \
    error_detail, status_code, dns_us, connect_us, tls_us, ttfb_us, total_us, resolved_ip, trigger, \
    config_version, total_b, dns_b, connect_b, tls_b, ttfb_b, http_version) FROM STDIN (FORMAT binary)";

const COPY_TYPES: [Type; 23] = [
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::UUID,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::TEXT,
];

const DEDUP: &str = "INSERT INTO ingested_batches (region, agent_id, batch_id) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[]) \
    ON CONFLICT DO NOTHING RETURNING region, agent_id, batch_id";

const CERTIFICATES: &str = "INSERT INTO certificates (domain_id, region, subject, issuer, sans, serial, \
    not_before, not_after, valid, validation_error, observed_at, host, chain, problem, hops) \
    SELECT d, r, s, i, ARRAY(SELECT jsonb_array_elements_text(sa::jsonb)), se, nb, na, v, ve, o, \
        h, c::jsonb, p::jsonb, hp::jsonb \
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
        $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::text[], $11::timestamptz[], \
        $12::text[], $13::text[], $14::text[], $15::text[]) \
        AS u(d, r, s, i, sa, se, nb, na, v, ve, o, h, c, p, hp) \
    ON CONFLICT (domain_id, region) DO UPDATE SET subject = EXCLUDED.subject, issuer = EXCLUDED.issuer, \
        sans = EXCLUDED.sans, serial = EXCLUDED.serial, not_before = EXCLUDED.not_before, \
        not_after = EXCLUDED.not_after, valid = EXCLUDED.valid, \
        validation_error = EXCLUDED.validation_error, observed_at = EXCLUDED.observed_at, \
        host = EXCLUDED.host, chain = EXCLUDED.chain, problem = EXCLUDED.problem, hops = EXCLUDED.hops \
    WHERE certificates.observed_at <= EXCLUDED.observed_at";

const QUEUE: &str = "COPY rollup_queue (time, domain_id, region, ok, total_b, dns_b, connect_b, tls_b, \
    ttfb_b) FROM STDIN (FORMAT binary)";

const QUEUE_TYPES: [Type; 9] = [
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::TEXT,
    Type::BOOL,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
];

const MARK_HOURS: &str = "INSERT INTO rollup_queued_hours (hour) SELECT unnest($1::timestamptz[])";

pub(crate) type Reply = oneshot::Sender<Result<IngestOutcome, IngestError>>;

/// One validated batch waiting for a writer, and where to send its answer.
pub(crate) struct Job {
    pub batch: ValidBatch,
    pub reply: Reply,
}

impl Job {
    fn answer(self, result: Result<IngestOutcome, IngestError>) {
        // The caller may have gone away (its RPC was cancelled); the batch is stored regardless.
        let _ = self.reply.send(result);
    }
}

/// What the writers share: the receiving end of the queue and the signal to drain and stop.
pub(crate) struct Writers {
    rx: Mutex<mpsc::Receiver<Job>>,
    closing: CancellationToken,
    handles: std::sync::Mutex<Vec<JoinHandle<()>>>,
    pg: tokio_postgres::Config,
    mode: StorageMode,
    metrics: TimeseriesMetrics,
    capacity: usize,
    sender: mpsc::WeakSender<Job>,
}

impl Writers {
    /// Spawns `count` writers over a queue of `capacity` batches; returns the sending end.
    pub fn spawn(
        pg: tokio_postgres::Config,
        count: usize,
        capacity: usize,
        mode: StorageMode,
        metrics: TimeseriesMetrics,
    ) -> (Arc<Self>, mpsc::Sender<Job>) {
        let (tx, rx) = mpsc::channel(capacity);
        let writers = Arc::new(Self {
            rx: Mutex::new(rx),
            closing: CancellationToken::new(),
            handles: std::sync::Mutex::new(Vec::new()),
            pg,
            mode,
            metrics,
            capacity,
            sender: tx.downgrade(),
        });
        let handles: Vec<JoinHandle<()>> =
            (0..count).map(|id| tokio::spawn(writers.clone().run(id))).collect();
        if let Ok(mut slot) = writers.handles.lock() {
            *slot = handles;
        }
        (writers, tx)
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Stops taking new batches, lets the writers store what is queued, waits for them, and
    /// answers anything left with `Unavailable`.
    pub async fn close(&self) {
        self.closing.cancel();
        let handles = self.handles.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        for handle in handles {
            if let Err(error) = handle.await {
                tracing::error!(%error, "time-series writer panicked");
            }
        }
        let mut rx = self.rx.lock().await;
        rx.close();
        while let Ok(job) = rx.try_recv() {
            job.answer(Err(IngestError::Unavailable("the control plane is shutting down".into())));
        }
        self.metrics.queue_depth.set(0);
    }

    fn update_depth(&self) {
        if let Some(tx) = self.sender.upgrade() {
            self.metrics.queue_depth.set((self.capacity - tx.capacity()) as i64);
        }
    }

    /// The next queued batch; `None` once closing and the queue is empty.
    async fn next_job(&self) -> Option<Job> {
        let mut rx = tokio::select! {
            rx = self.rx.lock() => rx,
            () = self.closing.cancelled() => self.rx.lock().await,
        };
        let job = if self.closing.is_cancelled() {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                biased;
                job = rx.recv() => job,
                () = self.closing.cancelled() => rx.try_recv().ok(),
            }
        };
        drop(rx);
        self.update_depth();
        job
    }

    /// More batches already queued, up to the row cap; one that does not fit is returned apart.
    fn more_jobs(&self, jobs: &mut Vec<Job>, mut rows: usize) -> Option<Job> {
        let Ok(mut rx) = self.rx.try_lock() else { return None };
        let mut carry = None;
        while rows < MAX_ROWS_PER_TX {
            let Ok(job) = rx.try_recv() else { break };
            if rows + job.batch.rows.len() > MAX_ROWS_PER_TX {
                carry = Some(job);
                break;
            }
            rows += job.batch.rows.len();
            jobs.push(job);
        }
        drop(rx);
        self.update_depth();
        carry
    }

    async fn run(self: Arc<Self>, id: usize) {
        let mut conn: Option<Conn> = None;
        let mut backoff = MIN_BACKOFF;
        let mut carry: Option<Job> = None;
        loop {
            if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                conn = None;
                match Conn::open(&self.pg, &self.metrics, self.mode).await {
                    Ok(c) => {
                        tracing::info!(writer = id, "time-series writer connected");
                        conn = Some(c);
                        backoff = MIN_BACKOFF;
                    }
                    Err(error) => {
                        self.metrics.error("connect");
                        tracing::warn!(writer = id, error = %shared::error::Chain(&*error), retry_in = ?backoff, "time-series writer cannot connect");
                        if !self.fail_fast_until(Instant::now() + backoff, carry.take()).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let first = match carry.take() {
                Some(job) => job,
                None => match self.next_job().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let rows = first.batch.rows.len();
            let mut jobs = vec![first];
            carry = self.more_jobs(&mut jobs, rows);
            // A caller that gave up (its RPC timed out or was cancelled) will resend; writing
            // its batch now would only double the work exactly when the database is slow.
            let before = jobs.len();
            jobs.retain(|job| !job.reply.is_closed());
            if jobs.len() < before {
                self.metrics.error("abandoned");
            }
            if jobs.is_empty() {
                continue;
            }
            let Some(c) = conn.as_mut() else { continue };
            let started = Instant::now();
            match tokio::time::timeout(TX_TIMEOUT, c.write(&jobs)).await {
                Ok(Ok(outcomes)) => {
                    self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                    for (job, outcome) in jobs.into_iter().zip(outcomes) {
                        self.stored(job, outcome);
                    }
                }
                Ok(Err(error)) if is_data_error(&error) && jobs.len() > 1 => {
                    // One batch's data broke the group's transaction: write each alone so
                    // only the offending batch is refused.
                    self.metrics.error("data_isolated");
                    tracing::warn!(writer = id, %error, batches = jobs.len(), "a batch's data was refused; writing the group one by one");
                    for job in jobs {
                        let alone = std::slice::from_ref(&job);
                        match tokio::time::timeout(TX_TIMEOUT, c.write(alone)).await {
                            Ok(Ok(mut outcomes)) => {
                                let outcome = outcomes.pop().expect("one outcome per job");
                                self.stored(job, outcome);
                            }
                            Ok(Err(error)) if is_data_error(&error) => {
                                self.metrics.error("data");
                                job.answer(Err(IngestError::Invalid(format!(
                                    "the database refused this batch: {error}"
                                ))));
                            }
                            Ok(Err(error)) => {
                                self.metrics.error("write");
                                job.answer(Err(IngestError::Unavailable(format!(
                                    "storing results failed: {error}"
                                ))));
                            }
                            Err(_) => {
                                self.metrics.error("timeout");
                                job.answer(Err(IngestError::Unavailable("storing results timed out".into())));
                            }
                        }
                    }
                }
                Ok(Err(error)) if is_data_error(&error) => {
                    self.metrics.error("data");
                    tracing::warn!(writer = id, %error, "the database refused a batch's data");
                    for job in jobs {
                        job.answer(Err(IngestError::Invalid(format!(
                            "the database refused this batch: {error}"
                        ))));
                    }
                }
                Ok(Err(error)) => {
                    self.metrics.error("write");
                    tracing::error!(
                        writer = id,
                        error = %shared::error::Chain(&error),
                        batches = jobs.len(),
                        "storing results failed"
                    );
                    let message = format!("storing results failed: {error}");
                    for job in jobs {
                        job.answer(Err(IngestError::Unavailable(message.clone())));
                    }
                }
                Err(_) => {
                    self.metrics.error("timeout");
                    tracing::error!(
                        writer = id,
                        batches = jobs.len(),
                        "storing results timed out; reconnecting"
                    );
                    conn = None;
                    for job in jobs {
                        job.answer(Err(IngestError::Unavailable("storing results timed out".into())));
                    }
                }
            }
        }
    }

    fn stored(&self, job: Job, outcome: IngestOutcome) {
        if outcome.duplicate {
            self.metrics.duplicates.inc();
        } else {
            self.metrics.batches_stored.inc();
            self.metrics.rows_stored.inc_by(u64::from(outcome.stored));
        }
        job.answer(Ok(outcome));
    }

    /// While disconnected: answers every batch taken with `Unavailable` until `until`. Returns
    /// false when closing and the queue is empty.
    async fn fail_fast_until(&self, until: Instant, carry: Option<Job>) -> bool {
        let down = |job: Job| {
            self.metrics.error("unavailable");
            job.answer(Err(IngestError::Unavailable("the time-series database is unreachable".into())));
        };
        if let Some(job) = carry {
            down(job);
        }
        let sleep = tokio::time::sleep_until(until.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                job = self.next_job() => match job {
                    Some(job) => down(job),
                    None => return false,
                },
            }
        }
    }
}

/// Whether the database refused the data itself (SQLSTATE class 22, data exception, or 23,
/// integrity constraint violation) rather than failing as a service.
fn is_data_error(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        let code = code.code();
        code.starts_with("22") || code.starts_with("23")
    })
}

/// One writer's connection and its prepared statements.
struct Conn {
    client: Client,
    copy: Statement,
    dedup: Statement,
    certificates: Statement,
    /// Plain mode: the COPY into `rollup_queue` and the insert of the hour marks.
    queue: Option<(Statement, Statement)>,
    /// TimescaleDB mode: the `late_results` mark ([`super::late::NOTE_LATE`]) and the count of
    /// late results noted.
    late: Option<(Statement, Counter)>,
    gauge: Gauge,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// TLS for writer connections under `sslmode=prefer`/`require`: encryption, handshake
/// signatures checked, the certificate itself not verified (libpq's meaning of these modes).
fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let provider = shared::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Accepts any server certificate but still checks that the server holds its key.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn watch_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::warn!(%error, "time-series writer connection ended");
    }
}

impl Conn {
    async fn open(
        pg: &tokio_postgres::Config,
        metrics: &TimeseriesMetrics,
        mode: StorageMode,
    ) -> anyhow::Result<Self> {
        let gauge = &metrics.write_connections;
        let mut pg = pg.clone();
        pg.connect_timeout(CONNECT_TIMEOUT);
        // libpq's semantics: `sslmode=disable` connects in clear; `prefer` (the default) and
        // `require` encrypt without verifying the server's certificate (`require` insists on
        // TLS), as libpq and the sqlx read pool do for these modes.
        let client = if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, pg.connect(NoTls))
                .await
                .map_err(|_| anyhow::anyhow!("connect timed out"))??;
            tokio::spawn(watch_connection(connection));
            client
        } else {
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, pg.connect(tls_connector()))
                .await
                .map_err(|_| anyhow::anyhow!("connect timed out"))??;
            tokio::spawn(watch_connection(connection));
            client
        };
        let prepare = async {
            let (queue, late) = match mode {
                StorageMode::Plain => {
                    (Some((client.prepare(QUEUE).await?, client.prepare(MARK_HOURS).await?)), None)
                }
                StorageMode::Timescale => (
                    None,
                    Some((client.prepare(super::late::NOTE_LATE).await?, metrics.late_results_noted.clone())),
                ),
            };
            Ok::<_, tokio_postgres::Error>((
                client.prepare(COPY).await?,
                client.prepare(DEDUP).await?,
                client.prepare(CERTIFICATES).await?,
                queue,
                late,
            ))
        };
        let (copy, dedup, certificates, queue, late) = tokio::time::timeout(CONNECT_TIMEOUT, prepare)
            .await
            .map_err(|_| anyhow::anyhow!("prepare timed out"))??;
        gauge.inc();
        Ok(Self { client, copy, dedup, certificates, queue, late, gauge: gauge.clone() })
    }

    /// Stores `jobs` in one transaction; one outcome per job, in order.
    async fn write(&mut self, jobs: &[Job]) -> Result<Vec<IngestOutcome>, tokio_postgres::Error> {
        // The first occurrence of a batch id in this group is a candidate; later ones are
        // duplicates of it.
        let mut seen = HashSet::new();
        let mut candidate = vec![false; jobs.len()];
        let mut keys: Vec<(&str, &str, Uuid)> = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let key = (job.batch.region.as_str(), job.batch.agent_id.as_str(), job.batch.batch_id);
            if seen.insert(key) {
                candidate[i] = true;
                keys.push(key);
            }
        }
        keys.sort_unstable();
        let regions: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let agents: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let ids: Vec<Uuid> = keys.iter().map(|k| k.2).collect();

        let tx = self.client.transaction().await?;
        let inserted = tx.query(&self.dedup, &[&regions, &agents, &ids]).await?;
        let mut new: HashSet<(String, String, Uuid)> = HashSet::with_capacity(inserted.len());
        for row in inserted {
            new.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        let is_new: Vec<bool> = jobs
            .iter()
            .zip(&candidate)
            .map(|(job, candidate)| {
                *candidate
                    && new.contains(&(
                        job.batch.region.clone(),
                        job.batch.agent_id.clone(),
                        job.batch.batch_id,
                    ))
            })
            .collect();

        let mut certs: BTreeMap<(Uuid, &str), &CertRow> = BTreeMap::new();
        if is_new.iter().any(|n| *n) {
            let sink = tx.copy_in(&self.copy).await?;
            let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
            tokio::pin!(writer);
            for (job, _) in jobs.iter().zip(&is_new).filter(|(_, n)| **n) {
                let b = &job.batch;
                copy_rows(writer.as_mut(), b).await?;
                for cert in &b.certificates {
                    let key = (cert.domain_id, b.region.as_str());
                    match certs.get(&key) {
                        Some(existing) if existing.observed_at > cert.observed_at => {}
                        _ => {
                            certs.insert(key, cert);
                        }
                    }
                }
            }
            writer.finish().await?;
        }
        if !certs.is_empty() {
            let c: Vec<(&(Uuid, &str), &&CertRow)> = certs.iter().collect();
            let domain_ids: Vec<Uuid> = c.iter().map(|(k, _)| k.0).collect();
            let regions: Vec<&str> = c.iter().map(|(k, _)| k.1).collect();
            let subjects: Vec<&str> = c.iter().map(|(_, v)| v.subject.as_str()).collect();
            let issuers: Vec<&str> = c.iter().map(|(_, v)| v.issuer.as_str()).collect();
            let sans: Vec<String> = c
                .iter()
                .map(|(_, v)| serde_json::to_string(&v.sans).unwrap_or_else(|_| "[]".into()))
                .collect();
            let serials: Vec<&str> = c.iter().map(|(_, v)| v.serial.as_str()).collect();
            let not_before: Vec<DateTime<Utc>> = c.iter().map(|(_, v)| v.not_before).collect();
            let not_after: Vec<DateTime<Utc>> = c.iter().map(|(_, v)| v.not_after).collect();
            let valid: Vec<bool> = c.iter().map(|(_, v)| v.valid).collect();
            let errors: Vec<Option<&str>> = c.iter().map(|(_, v)| v.validation_error.as_deref()).collect();
            let observed: Vec<DateTime<Utc>> = c.iter().map(|(_, v)| v.observed_at).collect();
            let hosts: Vec<&str> = c.iter().map(|(_, v)| v.host.as_str()).collect();
            let chains: Vec<String> = c.iter().map(|(_, v)| v.chain.to_string()).collect();
            let problems: Vec<Option<String>> =
                c.iter().map(|(_, v)| v.problem.as_ref().map(ToString::to_string)).collect();
            let hops: Vec<String> = c.iter().map(|(_, v)| v.hops.to_string()).collect();
            tx.execute(
                &self.certificates,
                &[
                    &domain_ids,
                    &regions,
                    &subjects,
                    &issuers,
                    &sans,
                    &serials,
                    &not_before,
                    &not_after,
                    &valid,
                    &errors,
                    &observed,
                    &hosts,
                    &chains,
                    &problems,
                    &hops,
                ],
            )
            .await?;
        }
        if let Some((queue, mark)) = &self.queue {
            let new_batches = || jobs.iter().zip(&is_new).filter(|(_, n)| **n).map(|(job, _)| &job.batch);
            if new_batches().next().is_some() {
                let sink = tx.copy_in(queue).await?;
                let writer = BinaryCopyInWriter::new(sink, &QUEUE_TYPES);
                tokio::pin!(writer);
                let mut hours = BTreeSet::new();
                for b in new_batches() {
                    queue_rows(writer.as_mut(), b).await?;
                    hours.extend(b.rows.iter().map(|r| hour_of(r.time)));
                }
                writer.finish().await?;
                let hours: Vec<DateTime<Utc>> = hours.into_iter().collect();
                tx.execute(mark, &[&hours]).await?;
            }
        }
        let mut late = None;
        if let Some((note, _)) = &self.late {
            let times = jobs
                .iter()
                .zip(&is_new)
                .filter(|(_, n)| **n)
                .flat_map(|(job, _)| job.batch.rows.iter().map(|r| r.time));
            late = super::late::late_span(times, Utc::now());
            if let Some(span) = late {
                tx.execute(note, &[&span.oldest, &span.newest, &span.results]).await?;
            }
        }
        tx.commit().await?;
        if let (Some(span), Some((_, noted))) = (late, &self.late) {
            noted.inc_by(u64::try_from(span.results).unwrap_or(0));
        }
        Ok(jobs
            .iter()
            .zip(is_new)
            .map(|(job, new)| IngestOutcome {
                stored: if new { job.batch.rows.len() as u32 } else { 0 },
                duplicate: !new,
            })
            .collect())
    }
}

/// Writes one COPY row per result of `b`, its columns chosen by `fields`.
async fn copy_each<'a, const N: usize>(
    mut writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    b: &'a ValidBatch,
    fields: impl Fn(&'a Row) -> [&'a (dyn ToSql + Sync); N],
) -> Result<(), tokio_postgres::Error> {
    for r in &b.rows {
        writer.as_mut().write(&fields(r)).await?;
    }
    Ok(())
}

/// Writes a batch's rows into an open binary COPY of `probe_results` ([`COPY`]).
async fn copy_rows(
    writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    b: &ValidBatch,
) -> Result<(), tokio_postgres::Error> {
    copy_each(writer, b, |r| {
        [
            &r.time,
            &r.domain_id,
            &b.region,
            &b.agent_id,
            &b.batch_id,
            &r.ok,
            &r.error_kind,
            &r.error_detail,
            &r.status_code,
            &r.dns_us,
            &r.connect_us,
            &r.tls_us,
            &r.ttfb_us,
            &r.total_us,
            &r.resolved_ip,
            &r.trigger,
            &r.config_version,
            &r.total_b,
            &r.dns_b,
            &r.connect_b,
            &r.tls_b,
            &r.ttfb_b,
            &r.http_version,
        ]
    })
    .await
}

/// Writes a batch's roll-up inputs into an open binary COPY of `rollup_queue` ([`QUEUE`],
/// plain mode).
async fn queue_rows(
    writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    b: &ValidBatch,
) -> Result<(), tokio_postgres::Error> {
    copy_each(writer, b, |r| {
        [&r.time, &r.domain_id, &b.region, &r.ok, &r.total_b, &r.dns_b, &r.connect_b, &r.tls_b, &r.ttfb_b]
    })
    .await
}

/// A bare binary COPY of `batch`'s rows in `tx`: no deduplication, certificate upsert or
/// roll-up marks. The ingest benchmark's baseline (same rows, same table, same encoding).
pub async fn copy_batch(tx: &tokio_postgres::Transaction<'_>, batch: IngestBatch) -> anyhow::Result<u64> {
    let batch = super::model::validate(batch, Utc::now()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let sink = tx.copy_in(COPY).await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
    tokio::pin!(writer);
    copy_rows(writer.as_mut(), &batch).await?;
    Ok(writer.finish().await?)
}

/// The start of the UTC hour holding `time`.
pub(crate) fn hour_of(time: DateTime<Utc>) -> DateTime<Utc> {
    let secs = time.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3_600), 0).unwrap_or(time)
}
