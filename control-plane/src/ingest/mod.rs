//! gRPC ingest of probe results over mutual TLS.
//!
//! [`IngestServer::bind`] loads the TLS material (the CA agents must chain to, the server's own
//! certificate, optional revocation lists) and binds; [`IngestServer::run`] serves until
//! shutdown. Handshakes happen in [`listener`], requests in [`service`].

pub mod listener;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::proto::v1::ingest_server::IngestServer as GrpcIngestServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agents::AgentRegistry;
use crate::config::Config;
use crate::consensus::ObservationSender;
use crate::metrics::Metrics;
use crate::timeseries::Timeseries;

/// Keepalive pings on idle agent connections, so dead peers are noticed.
const KEEPALIVE: Duration = Duration::from_secs(20);

pub struct IngestServer {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: service::IngestService,
}

/// The mutual-TLS server configuration described by `config` (`tls_ca`, `tls_cert`, `tls_key`,
/// optional `tls_crl`).
pub fn tls_config(config: &Config) -> anyhow::Result<rustls::ServerConfig> {
    let (Some(ca), Some(cert), Some(key)) = (&config.tls_ca, &config.tls_cert, &config.tls_key) else {
        anyhow::bail!("tls_ca, tls_cert and tls_key are required for ingest");
    };
    let ca = shared::tls::certificates("tls_ca", ca)?;
    let chain = shared::tls::certificates("tls_cert", cert)?;
    let key = shared::tls::private_key("tls_key", key)?;
    let crls = match &config.tls_crl {
        Some(crl) => shared::tls::revocation_lists("tls_crl", crl)?,
        None => Vec::new(),
    };
    Ok(shared::tls::mtls_server_config(&ca, chain, key, crls)?)
}

impl IngestServer {
    pub async fn bind(
        config: &Config,
        registry: AgentRegistry,
        timeseries: Timeseries,
        metrics: Metrics,
        observations: ObservationSender,
        checks: crate::checks::ResultPublisher,
    ) -> anyhow::Result<Self> {
        let tls = Arc::new(tls_config(config)?);
        let listener = listener::bind(config.ingest_listen)
            .await
            .with_context(|| format!("cannot bind the ingest listener on {}", config.ingest_listen))?;
        Ok(Self {
            listener,
            tls,
            service: service::IngestService { registry, timeseries, metrics, observations, checks },
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
        let service = GrpcIngestServer::new(self.service)
            .max_decoding_message_size(shared::proto::TRANSPORT_MAX_MESSAGE_BYTES);
        tracing::info!(%addr, "ingest listening (gRPC, mutual TLS)");
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                shutdown.cancelled_owned(),
            )
            .await
            .context("ingest server failed")
    }
}
