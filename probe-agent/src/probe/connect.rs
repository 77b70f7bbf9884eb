//! Connecting to a name with several addresses, as browsers do (RFC 8305, Happy Eyeballs v2):
//! the addresses are ordered IPv6 first with the families interleaved, and attempts start one
//! after another, each when the previous one failed or after the connection attempt delay,
//! whichever comes first; the first connection wins and the others are abandoned.
//!
//! [`order`] is pure; [`race`] takes the connecting function as a parameter (the engine's
//! checks the SSRF guard right before opening each socket), so both are tested without a
//! network.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

/// The order in which addresses are tried (RFC 8305 §4): IPv6 first, then the families
/// alternate, each family keeping the order it was given in; duplicates are dropped.
///
/// Without RFC 6724 source-address information, the order within a family is the resolver's
/// (the answer's), as a browser on a host without a policy table would use.
pub fn order(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let mut v6 = Vec::new();
    let mut v4 = Vec::new();
    for &ip in addrs {
        let family = if ip.is_ipv6() { &mut v6 } else { &mut v4 };
        if !family.contains(&ip) {
            family.push(ip);
        }
    }
    let mut ordered = Vec::with_capacity(v6.len() + v4.len());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return ordered,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
}

/// What became of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// This connection served the probe.
    Connected,
    /// The address refused the connection.
    Refused,
    /// Another network error (unreachable, reset, …).
    Failed,
    /// Still pending when the connect limit or the probe's timeout ran out.
    TimedOut,
    /// Still pending when another address connected; abandoned.
    Cancelled,
    /// Not attempted: the SSRF guard refuses the address.
    Blocked,
}

impl AttemptOutcome {
    /// The name shown in results: the wire enum's label.
    pub fn as_str(self) -> &'static str {
        self.to_proto().label().expect("every connect outcome has a wire label")
    }

    /// The wire (protobuf) form.
    pub fn to_proto(self) -> shared::proto::ConnectOutcome {
        use shared::proto::ConnectOutcome as Wire;
        match self {
            AttemptOutcome::Connected => Wire::Connected,
            AttemptOutcome::Refused => Wire::Refused,
            AttemptOutcome::Failed => Wire::Failed,
            AttemptOutcome::TimedOut => Wire::TimedOut,
            AttemptOutcome::Cancelled => Wire::Cancelled,
            AttemptOutcome::Blocked => Wire::Blocked,
        }
    }
}

/// One address the connect phase considered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectAttempt {
    pub ip: IpAddr,
    pub outcome: AttemptOutcome,
    /// When the attempt started, in milliseconds after the connect phase began; `None` when
    /// it was not attempted (blocked).
    pub started_ms: Option<f64>,
    /// How long the attempt ran until it connected or failed, in milliseconds; `None` when it
    /// did not end on its own (cancelled, timed out, blocked).
    pub took_ms: Option<f64>,
    /// The error, for a failed or refused attempt (lowercase), or the guard's range.
    pub detail: Option<String>,
}

/// How a race ended.
#[derive(Debug)]
pub enum RaceEnd<S> {
    /// The connection, and the index of its address in `addrs` (and in the attempts).
    Connected(usize, S),
    /// Every address failed.
    Failed,
    /// The limit ran out with attempts pending.
    TimedOut,
}

/// Tries `addrs` in the given order (see [`order`]) with `connect`, starting the next attempt
/// `delay` after the previous one started or as soon as every started one has failed, until
/// one connects, every one has failed, or `limit` runs out. Returns how it ended and every
/// attempt started, in order.
pub async fn race<S, F, Fut>(
    addrs: &[SocketAddr],
    delay: Duration,
    limit: Duration,
    mut connect: F,
) -> (RaceEnd<S>, Vec<ConnectAttempt>)
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let started = Instant::now();
    let deadline = started + limit;
    let mut attempts: Vec<ConnectAttempt> = Vec::with_capacity(addrs.len());
    let mut pending = FuturesUnordered::new();
    let mut next_start = started;
    let since = |at: Instant| ms(at.saturating_duration_since(started));
    loop {
        let now = Instant::now();
        if attempts.len() < addrs.len() && (pending.is_empty() || now >= next_start) && now < deadline {
            let index = attempts.len();
            let addr = addrs[index];
            attempts.push(ConnectAttempt {
                ip: addr.ip(),
                outcome: AttemptOutcome::Cancelled,
                started_ms: Some(since(now)),
                took_ms: None,
                detail: None,
            });
            let attempt = connect(addr);
            pending.push(async move { (index, attempt.await) });
            next_start = now + delay;
            continue;
        }
        if pending.is_empty() {
            // Addresses left untried mean the limit ran out between attempts.
            let end = if attempts.len() < addrs.len() { RaceEnd::TimedOut } else { RaceEnd::Failed };
            return (end, attempts);
        }
        let more_to_start = attempts.len() < addrs.len();
        tokio::select! {
            biased;
            Some((index, outcome)) = pending.next() => {
                let attempt = &mut attempts[index];
                attempt.took_ms = Some(since(Instant::now()) - attempt.started_ms.unwrap_or_default());
                match outcome {
                    Ok(stream) => {
                        attempt.outcome = AttemptOutcome::Connected;
                        return (RaceEnd::Connected(index, stream), attempts);
                    }
                    Err(error) => {
                        attempt.outcome = match error.kind() {
                            io::ErrorKind::ConnectionRefused => AttemptOutcome::Refused,
                            io::ErrorKind::PermissionDenied => AttemptOutcome::Blocked,
                            _ => AttemptOutcome::Failed,
                        };
                        attempt.detail = Some(error.to_string().to_lowercase());
                        // The next address starts at once (RFC 8305 §5).
                        next_start = Instant::now();
                    }
                }
            }
            () = tokio::time::sleep_until(next_start), if more_to_start => {}
            () = tokio::time::sleep_until(deadline) => {
                for attempt in attempts.iter_mut().filter(|a| a.took_ms.is_none()) {
                    attempt.outcome = AttemptOutcome::TimedOut;
                }
                return (RaceEnd::TimedOut, attempts);
            }
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn families_interleave_ipv6_first_keeping_each_familys_order() {
        assert_eq!(
            order(&ips(&["127.0.0.2", "127.0.0.1", "::2", "::1", "10.0.0.1"])),
            ips(&["::2", "127.0.0.2", "::1", "127.0.0.1", "10.0.0.1"])
        );
        assert_eq!(order(&ips(&["127.0.0.1", "::1"])), ips(&["::1", "127.0.0.1"]));
        assert_eq!(order(&ips(&["127.0.0.2", "127.0.0.1"])), ips(&["127.0.0.2", "127.0.0.1"]));
        assert_eq!(
            order(&ips(&["::1", "::2", "::3", "127.0.0.1"])),
            ips(&["::1", "127.0.0.1", "::2", "::3"])
        );
        assert_eq!(order(&ips(&["::1", "::1", "127.0.0.1", "127.0.0.1"])), ips(&["::1", "127.0.0.1"]));
        assert!(order(&[]).is_empty());
    }

    /// How a fake address behaves: after how long it connects or fails; `None` never answers.
    #[derive(Clone, Copy)]
    enum Fake {
        Connects(u64),
        Refuses(u64),
        Silent,
    }

    /// Races fake addresses `127.0.0.<i+1>:80` under paused time; returns the end, the
    /// attempts and the virtual time the race took.
    async fn run(
        behaviour: &[Fake],
        delay_ms: u64,
        limit_ms: u64,
    ) -> (RaceEnd<IpAddr>, Vec<ConnectAttempt>, Duration) {
        let addrs: Vec<SocketAddr> =
            (0..behaviour.len()).map(|i| SocketAddr::from(([127, 0, 0, i as u8 + 1], 80))).collect();
        let table: HashMap<SocketAddr, Fake> = addrs.iter().copied().zip(behaviour.iter().copied()).collect();
        let opened = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let log = opened.clone();
        let (end, attempts) =
            race(&addrs, Duration::from_millis(delay_ms), Duration::from_millis(limit_ms), move |addr| {
                log.lock().unwrap().push(addr);
                let fake = table[&addr];
                async move {
                    match fake {
                        Fake::Connects(after) => {
                            tokio::time::sleep(Duration::from_millis(after)).await;
                            Ok(addr.ip())
                        }
                        Fake::Refuses(after) => {
                            tokio::time::sleep(Duration::from_millis(after)).await;
                            Err(io::Error::from(io::ErrorKind::ConnectionRefused))
                        }
                        Fake::Silent => futures::future::pending().await,
                    }
                }
            })
            .await;
        let opened = opened.lock().unwrap().clone();
        assert_eq!(opened, addrs[..attempts.len()], "each attempt opened once, in order");
        (end, attempts, start.elapsed())
    }

    fn outcomes(attempts: &[ConnectAttempt]) -> Vec<AttemptOutcome> {
        attempts.iter().map(|a| a.outcome).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_address_that_connects_wins_without_starting_the_others() {
        let (end, attempts, took) = run(&[Fake::Connects(10), Fake::Connects(0)], 250, 10_000).await;
        assert!(matches!(end, RaceEnd::Connected(0, _)));
        assert_eq!(outcomes(&attempts), [AttemptOutcome::Connected]);
        assert_eq!(took, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_address_hands_over_at_once() {
        let (end, attempts, took) = run(&[Fake::Refuses(5), Fake::Connects(10)], 250, 10_000).await;
        assert!(matches!(end, RaceEnd::Connected(1, _)));
        assert_eq!(outcomes(&attempts), [AttemptOutcome::Refused, AttemptOutcome::Connected]);
        assert_eq!(attempts[1].started_ms, Some(5.0));
        assert_eq!(took, Duration::from_millis(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_address_is_overtaken_after_the_attempt_delay() {
        let (end, attempts, took) = run(&[Fake::Silent, Fake::Silent, Fake::Connects(20)], 250, 10_000).await;
        assert!(matches!(end, RaceEnd::Connected(2, _)));
        assert_eq!(
            outcomes(&attempts),
            [AttemptOutcome::Cancelled, AttemptOutcome::Cancelled, AttemptOutcome::Connected]
        );
        let starts: Vec<_> = attempts.iter().map(|a| a.started_ms).collect();
        assert_eq!(starts, [Some(0.0), Some(250.0), Some(500.0)]);
        assert_eq!(took, Duration::from_millis(520));
        assert_eq!(attempts[0].took_ms, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_address_can_still_win_after_the_next_started() {
        let (end, attempts, _) = run(&[Fake::Connects(300), Fake::Connects(200)], 250, 10_000).await;
        assert!(matches!(end, RaceEnd::Connected(0, _)));
        assert_eq!(outcomes(&attempts), [AttemptOutcome::Connected, AttemptOutcome::Cancelled]);
    }

    #[tokio::test(start_paused = true)]
    async fn every_address_failing_is_a_failure_with_every_attempt() {
        let (end, attempts, took) =
            run(&[Fake::Refuses(1), Fake::Refuses(1), Fake::Refuses(1)], 250, 10_000).await;
        assert!(matches!(end, RaceEnd::Failed));
        assert_eq!(outcomes(&attempts), [AttemptOutcome::Refused; 3]);
        assert!(attempts.iter().all(|a| a.detail.as_deref().is_some_and(|d| d.contains("refused"))));
        assert_eq!(took, Duration::from_millis(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_ends_the_race_and_marks_what_was_pending() {
        let (end, attempts, took) = run(&[Fake::Silent, Fake::Silent, Fake::Silent], 250, 400).await;
        assert!(matches!(end, RaceEnd::TimedOut));
        // The third attempt would have started at 500 ms, after the limit.
        assert_eq!(outcomes(&attempts), [AttemptOutcome::TimedOut; 2]);
        assert_eq!(took, Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn no_address_is_an_immediate_failure() {
        let (end, attempts, _) = run(&[], 250, 1_000).await;
        assert!(matches!(end, RaceEnd::Failed) && attempts.is_empty());
    }
}
