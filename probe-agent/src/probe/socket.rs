//! The `tcp` and `tls` checks: the same DNS, SSRF guard, Happy Eyeballs connect and recording
//! TLS handshake as an http probe, without HTTP.
//!
//! - `tcp`: connect; with `tls`, a handshake (no ALPN offered: the service is not HTTP); then,
//!   when set, `send` is written and the first response bytes are read (at most
//!   [`TCP_READ_LIMIT`]) until `expect` appears. `ttfb_ms` runs from the write (or the
//!   connection) to the first byte received; `body_bytes` counts the bytes read.
//! - `tls`: connect and handshake; the certificate and chain are recorded as for https, and an
//!   invalid one fails the check unless `tls_verify` is off.

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use shared::check::TCP_READ_LIMIT;
use shared::{TcpCheck, TlsCheck};

use super::body::KeywordScanner;
use super::engine::{ms, Clock, Engine, Failure, Phase};
use super::target::TargetHost;
use super::{ErrorKind, ProbeReport};

/// Bytes of the response quoted in an `expect_mismatch` detail, at most.
const QUOTED: usize = 64;

fn target_host(host: &str) -> TargetHost {
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => TargetHost::Ip(ip),
        Err(_) => TargetHost::Name(host.to_owned()),
    }
}

/// How a tcp exchange ended.
enum Exchanged {
    /// `expect` was seen (or nothing was expected).
    Found,
    /// The peer closed the connection first; what it sent.
    Closed(Vec<u8>),
    /// [`TCP_READ_LIMIT`] bytes without `expect`; their start.
    LimitReached(Vec<u8>),
}

impl Engine {
    pub(super) async fn tcp_check(
        &self,
        config: &shared::DomainConfig,
        check: &TcpCheck,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<(), Failure> {
        let host = target_host(&check.host);
        let addrs = self.resolve(&host, clock, report).await?;
        let tcp = self.connect(&addrs, check.port, clock, report).await?;
        if check.tls {
            let stream = self.tls_handshake(config, &host, None, tcp, clock, report).await?;
            exchange(check, stream, clock, report).await
        } else {
            exchange(check, tcp, clock, report).await
        }
    }

    pub(super) async fn tls_check(
        &self,
        config: &shared::DomainConfig,
        check: &TlsCheck,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<(), Failure> {
        let host = target_host(&check.host);
        let addrs = self.resolve(&host, clock, report).await?;
        let tcp = self.connect(&addrs, check.port, clock, report).await?;
        let mut stream = self.tls_handshake(config, &host, None, tcp, clock, report).await?;
        // A polite close: the handshake was all the check wanted.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), stream.shutdown()).await;
        Ok(())
    }
}

/// Writes `send`, then reads until `expect`, within what is left of the probe's time.
async fn exchange<IO>(
    check: &TcpCheck,
    mut io: IO,
    clock: &Clock,
    report: &mut ProbeReport,
) -> Result<(), Failure>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    if check.send.is_none() && check.expect.is_none() {
        return Ok(());
    }
    let started = Instant::now();
    let mut first_byte: Option<Instant> = None;
    let mut read_total = 0usize;
    let work = async {
        if let Some(send) = &check.send {
            io.write_all(send.as_bytes()).await?;
            io.flush().await?;
        }
        let Some(expect) = &check.expect else {
            return Ok::<_, std::io::Error>(Exchanged::Found);
        };
        let mut scanner = KeywordScanner::new(expect);
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let room = (TCP_READ_LIMIT - read_total).min(buf.len());
            let n = io.read(&mut buf[..room]).await?;
            if n == 0 {
                return Ok(Exchanged::Closed(seen));
            }
            first_byte.get_or_insert_with(Instant::now);
            read_total += n;
            if seen.len() < QUOTED {
                seen.extend_from_slice(&buf[..n.min(QUOTED - seen.len())]);
            }
            if scanner.feed(&buf[..n]) {
                return Ok(Exchanged::Found);
            }
            if read_total >= TCP_READ_LIMIT {
                return Ok(Exchanged::LimitReached(seen));
            }
        }
    };
    let (outcome, _) = clock.phase(Phase::Exchange, None, work).await;
    report.timings.ttfb_ms = first_byte.map(|at| ms(at - started));
    report.body_bytes = read_total as u64;
    report.body_wire_bytes = read_total as u64;
    let expect = check.expect.as_deref().unwrap_or_default();
    match outcome? {
        Ok(Exchanged::Found) => Ok(()),
        Ok(Exchanged::Closed(seen)) if seen.is_empty() => Err(Failure::new(
            ErrorKind::ExpectMismatch,
            format!("the connection closed before any byte arrived; expected {expect:?}"),
        )),
        Ok(Exchanged::Closed(seen)) => Err(Failure::new(
            ErrorKind::ExpectMismatch,
            format!(
                "the connection closed after {read_total} bytes without {expect:?}; they began with {}",
                quote(&seen)
            ),
        )),
        Ok(Exchanged::LimitReached(seen)) => Err(Failure::new(
            ErrorKind::ExpectMismatch,
            format!(
                "{expect:?} is not in the first {TCP_READ_LIMIT} bytes, which began with {}",
                quote(&seen)
            ),
        )),
        Err(error) => Err(Failure::new(
            ErrorKind::Connect,
            format!("the connection failed after {read_total} bytes were received: {error}").to_lowercase(),
        )),
    }
}

/// Bytes as a quoted string, non-printable ones escaped.
fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses() {
        assert_eq!(target_host("192.0.2.1"), TargetHost::Ip("192.0.2.1".parse().unwrap()));
        assert_eq!(target_host("[2001:db8::1]"), TargetHost::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(target_host("db.example.com"), TargetHost::Name("db.example.com".into()));
    }

    #[test]
    fn quoted_bytes_are_escaped() {
        assert_eq!(quote(b"220 ok\r\n\x00"), r#""220 ok\r\n\x00""#);
    }
}
