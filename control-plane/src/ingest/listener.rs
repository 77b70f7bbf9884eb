//! The ingest listener: TCP accept, the mutual-TLS handshake, and the agent identity read from
//! the verified client certificate.
//!
//! Handshakes run concurrently (bounded), each with a deadline, outside the gRPC server, so a
//! refused certificate is logged and counted by reason (`no_certificate`, `unknown_issuer`,
//! `expired`, `revoked`, `wrong_purpose`, `no_identity`, …) instead of vanishing inside the
//! transport. The agent sees the matching TLS alert. Accepted connections carry an
//! [`AgentPeer`] that tonic hands to every request of the connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::CertificateError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use super::revocation::IngestTls;
use crate::agents::AgentPeer;
use crate::metrics::Metrics;

/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 512;
/// A client that has not completed its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted agent connection: TLS over TCP plus who is on the other end.
pub struct AgentStream {
    inner: TlsStream<TcpStream>,
    peer: AgentPeer,
    metrics: Metrics,
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        self.metrics.ingest_connections.dec();
    }
}

impl Connected for AgentStream {
    type ConnectInfo = AgentPeer;

    fn connect_info(&self) -> AgentPeer {
        self.peer.clone()
    }
}

impl AsyncRead for AgentStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The reason label of a failed handshake.
pub fn classify(error: &io::Error) -> &'static str {
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not_yet_valid",
            CertificateError::Revoked => "revoked",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "wrong_purpose"
            }
            CertificateError::BadSignature | CertificateError::BadEncoding => "bad_certificate",
            _ => "invalid_certificate",
        },
        rustls::Error::AlertReceived(_) => "alert_from_client",
        _ => "tls",
    }
}

/// Binds the listener (`[::]` is dual-stack, see [`shared::listen`]); [`incoming`] then
/// serves it.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    shared::listen::bind(addr)
}

/// Accepts connections until `shutdown`, completing handshakes concurrently; authenticated
/// connections come out of the returned channel.
/// Each handshake uses the TLS configuration `tls` holds when the connection is accepted, so a
/// new revocation list applies to the next connection without a restart.
pub fn incoming(
    listener: TcpListener,
    tls: watch::Receiver<Arc<IngestTls>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Result<AgentStream, io::Error>> {
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually out of file descriptors: wait a little rather than spin.
                    metrics.handshake_failure("accept");
                    tracing::error!(%error, "ingest listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = handshakes.clone().acquire_owned().await else { break };
            let acceptor = TlsAcceptor::from(tls.borrow().server.clone());
            let (metrics, tx) = (metrics.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(stream) = handshake(&acceptor, tcp, remote, &metrics).await {
                    // The receiver is gone only when the server stopped.
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
        tracing::debug!("ingest listener stopped accepting");
    });
    rx
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    metrics: &Metrics,
) -> Option<AgentStream> {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            let reason = classify(&error);
            metrics.handshake_failure(reason);
            tracing::warn!(%remote, reason, %error, "agent connection refused during the TLS handshake");
            return None;
        }
        Err(_) => {
            metrics.handshake_failure("timeout");
            tracing::warn!(%remote, "agent connection dropped: TLS handshake timed out");
            return None;
        }
    };
    let certificate = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first());
    let Some(certificate) = certificate else {
        // The verifier requires a certificate, so this does not happen; refuse all the same.
        metrics.handshake_failure("no_certificate");
        tracing::warn!(%remote, "agent connection refused: no client certificate");
        return None;
    };
    match shared::tls::agent_certificate(certificate) {
        Ok(cert) => {
            metrics.ingest_connections.inc();
            tracing::debug!(%remote, agent = %cert.identity, serial = %cert.serial, "agent connected");
            let peer = AgentPeer {
                region: cert.identity.region,
                agent_id: cert.identity.agent_id,
                serial: cert.serial,
                not_after: cert.not_after,
            };
            Some(AgentStream { inner: tls, peer, metrics: metrics.clone() })
        }
        Err(reason) => {
            metrics.handshake_failure("no_identity");
            tracing::warn!(%remote, %reason, "agent connection refused: the certificate names no agent");
            None
        }
    }
}
