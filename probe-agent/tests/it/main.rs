//! Integration tests of the probe agent against a real Redis (one key prefix per test). The
//! tests write Redis the way the control plane's publisher does, and also break the protocol on
//! purpose (lost notices, skipped versions, flushed keys) to check the agent recovers.
//! Delivery is tested against an in-test ingest server over real mutual TLS; confirmation
//! probes and canaries against a running agent and local targets. Name resolution and
//! connecting run against an in-process DNS server and local servers on 127.0.0.1 and [::1];
//! the prober's HTTP side against local servers (`probe`) and hostile raw-TCP servers writing
//! exact bytes (`hostile`); what a probe sends against a recording server (`request`); the
//! tcp, tls and dns check types and JSON assertions (`check_types`); agents of one region
//! splitting its domains through a crash, a join and a leave (`sharing`); the `probe-agent`
//! binary killed with SIGKILL and restarted on its spool directory (`spool`).

mod catalog;
mod chains;
mod check;
mod check_types;
mod confirmation;
mod delivery;
mod dns_server;
mod hostile;
mod probe;
mod protocols;
mod request;
mod resolution;
mod sharing;
mod spool;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `200 ok` on `listener` until the test ends.
pub(crate) fn serve(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
            });
        }
    });
}

/// A local target answering `200 ok`; returns its port.
pub(crate) async fn local_target() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    serve(listener);
    port
}
