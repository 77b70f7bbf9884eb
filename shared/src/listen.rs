//! Binding the binaries' TCP listeners.
//!
//! The IPv6 wildcard `[::]:<port>` is bound dual-stack — IPv6 and IPv4 (as v4-mapped
//! addresses) on one socket — whatever the host's `net.ipv6.bindv6only` says. That is what a
//! platform with IPv6 private networking and IPv4 health checks (Fly.io) needs. Any other
//! address is bound as given.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 1024;

/// Binds a TCP listener on `addr` (port 0 picks a free port). `[::]` accepts IPv4 too.
/// Errors are the operating system's (address in use, permission denied, no IPv6 support).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // As std and tokio do on Unix: a restarted process can bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn round_trip(listener: &TcpListener, to: SocketAddr) {
        let mut client = tokio::net::TcpStream::connect(to).await.unwrap();
        let (mut server, from) = listener.accept().await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8];
        server.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x", "from {from}");
    }

    #[tokio::test]
    async fn the_ipv6_wildcard_accepts_ipv4_and_ipv6() {
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        round_trip(&listener, SocketAddr::from(([127, 0, 0, 1], port))).await;
        round_trip(&listener, SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).await;
    }

    #[tokio::test]
    async fn other_addresses_are_bound_as_given() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.is_ipv4());
        round_trip(&listener, addr).await;
    }
}
