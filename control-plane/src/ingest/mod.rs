//! gRPC ingest of probe results over mutual TLS.
//!
//! [`IngestServer::bind`] loads the TLS material (the CA agents must chain to, the server's own
//! certificate, optional revocation lists) and binds; [`IngestServer::run`] serves until
//! shutdown while [`revocation`] keeps the revocation list current. Handshakes happen in
//! [`listener`], requests in [`service`].

pub mod listener;
pub mod revocation;
pub mod scope;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::proto::v1::ingest_server::IngestServer as GrpcIngestServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agents::AgentRegistry;
use crate::config::Config;
use crate::consensus::ObservationSender;
use crate::metrics::Metrics;
use crate::timeseries::Timeseries;
use revocation::{CrlWatcher, IngestTls};

/// Keepalive pings on idle agent connections, so dead peers are noticed.
const KEEPALIVE: Duration = Duration::from_secs(20);

pub struct IngestServer {
    listener: TcpListener,
    tls: watch::Receiver<Arc<IngestTls>>,
    crl: CrlWatcher,
    service: service::IngestService,
}

impl IngestServer {
    pub async fn bind(
        config: &Config,
        registry: AgentRegistry,
        timeseries: Timeseries,
        metrics: Metrics,
        observations: ObservationSender,
        checks: crate::checks::ResultPublisher,
        pool: sqlx::PgPool,
    ) -> anyhow::Result<Self> {
        let (crl, tls) = CrlWatcher::start(config, metrics.clone())?;
        let listener = listener::bind(config.ingest_listen)
            .with_context(|| format!("cannot bind the ingest listener on {}", config.ingest_listen))?;
        Ok(Self {
            listener,
            tls: tls.clone(),
            crl,
            service: service::IngestService {
                registry,
                timeseries,
                rejections: scope::RejectionLog::new(metrics.clone()),
                metrics,
                observations,
                tls,
                checks,
                pool,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown`; in-flight batches are answered before it returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let metrics = self.service.metrics.clone();
        let incoming = listener::incoming(self.listener, self.tls, metrics, shutdown.child_token());
        let crl = self.crl.run(shutdown.child_token());
        let service = GrpcIngestServer::new(self.service)
            .max_decoding_message_size(shared::proto::TRANSPORT_MAX_MESSAGE_BYTES);
        tracing::info!(%addr, "ingest listening (gRPC, mutual TLS)");
        let serve = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                shutdown.clone().cancelled_owned(),
            );
        // The CRL watcher stops with the same token; it has no failure of its own to report.
        let (served, ()) = tokio::join!(serve, crl);
        served.context("ingest server failed")
    }
}
