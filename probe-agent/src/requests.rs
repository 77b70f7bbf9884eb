//! On-demand (confirmation) probe requests from the control plane.
//!
//! The control plane publishes a [`ProbeRequest`] on `<prefix>:probe-requests` when it wants a
//! domain confirmed from several regions. This task listens on its own Redis subscriber client
//! (the catalog sync's subscriber treats every message as a change notice) and, for a request
//! addressed to this region (or to every region) about a domain in this agent's catalog, asks
//! the scheduler to probe it now through [`ProbeNow`]; the result flows like any other, with
//! `Trigger::OnDemand`.
//!
//! The work is bounded: a request for a domain that already has an on-demand probe queued or
//! running is coalesced into it, and at most [`OnDemandLimit`]'s capacity of on-demand probes
//! are queued or running at once (at most half of the probe slots, see
//! [`crate::Config::on_demand_limit`]), so a flood of requests cannot starve scheduled probes.
//! Every request is counted in `probe_agent_probe_requests_total{outcome}`; malformed payloads
//! and refusals are logged at most every few seconds.
//!
//! A request with a `request_id` is an operator's test (`POST /v1/checks/test` on the control
//! plane): the agent probes the configuration the request carries (or its catalog's, when the
//! request carries none) without adding it to its catalog, through the same prober (SSRF
//! guard, limits) and the same on-demand bound, coalesced per request id rather than per
//! domain; the result carries the request id and is delivered at once (see
//! [`crate::delivery`]). A test is never coalesced into a confirmation of the same domain, so
//! the operator always hears from this agent unless it is overloaded.
//!
//! Pub/Sub is at-most-once: a request published while the agent is disconnected is lost, which
//! the control plane tolerates (it decides with the regions that answer).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use shared::{DomainConfig, DomainId, ProbeRequest, RedisKeys};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::sync::CatalogHandle;
use crate::catalog::Catalog;
use crate::metrics::{requests as outcome, Metrics};
use crate::scheduler::{ProbeNow, ProbeNowError};

/// Warnings about malformed or refused requests are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a request means for this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Probe this catalog domain now (a confirmation).
    Probe(DomainId),
    /// Probe this configuration now for the test `request_id`; it is not added to the catalog.
    Test { request_id: Uuid, config: Arc<DomainConfig> },
    /// The request names regions, and this agent's is not one of them.
    NotMine,
    /// The domain is not in this agent's catalog, or is paused (a confirmation), or a test
    /// carries no configuration and the domain is not in the catalog.
    UnknownDomain,
    /// A test whose configuration's id differs from the request's `domain_id`.
    Malformed,
}

/// Decides what to do with `request` in `region` with `catalog` (pure).
pub fn decide(request: &ProbeRequest, region: &str, catalog: &Catalog) -> Decision {
    if !request.regions.is_empty() && !request.regions.iter().any(|r| r == region) {
        return Decision::NotMine;
    }
    if let Some(request_id) = request.request_id {
        let config = match &request.config {
            Some(config) if config.id != request.domain_id => return Decision::Malformed,
            Some(config) => Arc::new(config.clone()),
            None => match catalog.get(&request.domain_id) {
                Some(config) => config.clone(),
                None => return Decision::UnknownDomain,
            },
        };
        // An operator tests a paused domain on purpose.
        let config = if config.paused {
            Arc::new(DomainConfig { paused: false, ..(*config).clone() })
        } else {
            config
        };
        return Decision::Test { request_id, config };
    }
    match catalog.get(&request.domain_id) {
        Some(config) if !config.paused => Decision::Probe(request.domain_id),
        _ => Decision::UnknownDomain,
    }
}

/// Why [`OnDemandLimit::try_acquire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The domain already has an on-demand probe queued or running.
    Coalesced,
    /// The limit of on-demand probes is reached.
    Full,
}

/// The domains (confirmations) and test requests with an on-demand probe queued or running, at
/// most `capacity` of them together. Both are UUIDs, so one set holds them without collisions.
#[derive(Debug, Clone)]
pub struct OnDemandLimit {
    capacity: usize,
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
}

/// Holds a place in an [`OnDemandLimit`] until dropped (when the probe's result is queued, or
/// when the request is dropped).
#[derive(Debug)]
pub struct InFlight {
    id: Uuid,
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.id);
    }
}

fn lock(set: &Mutex<HashSet<Uuid>>) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
    set.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OnDemandLimit {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), in_flight: Arc::default() }
    }

    /// Takes a place for a confirmation of `id`, unless it already holds one or every place is
    /// taken.
    pub fn try_acquire(&self, id: DomainId) -> Result<InFlight, Refusal> {
        self.acquire(id.0)
    }

    /// Takes a place for the test `request_id` (coalescing only repeats of the same request).
    pub fn try_acquire_test(&self, request_id: Uuid) -> Result<InFlight, Refusal> {
        self.acquire(request_id)
    }

    fn acquire(&self, id: Uuid) -> Result<InFlight, Refusal> {
        let mut set = lock(&self.in_flight);
        if set.contains(&id) {
            return Err(Refusal::Coalesced);
        }
        if set.len() >= self.capacity {
            return Err(Refusal::Full);
        }
        set.insert(id);
        Ok(InFlight { id, in_flight: self.in_flight.clone() })
    }

    /// Domains with an on-demand probe queued or running now.
    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

/// Settings of the request listener.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    pub region: String,
    pub keys: RedisKeys,
    /// Most on-demand probes queued or running at once.
    pub max_in_flight: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Turns payloads into on-demand probes; the Redis side is [`ProbeRequests`].
#[derive(Clone)]
pub struct RequestHandler {
    region: String,
    catalog: CatalogHandle,
    probe_now: ProbeNow,
    limit: OnDemandLimit,
    metrics: Metrics,
}

impl RequestHandler {
    pub fn new(
        region: String,
        catalog: CatalogHandle,
        probe_now: ProbeNow,
        limit: OnDemandLimit,
        metrics: Metrics,
    ) -> Self {
        Self { region, catalog, probe_now, limit, metrics }
    }

    /// Handles one payload and counts its outcome, which it returns (a label of
    /// [`crate::metrics::requests`]). Never waits.
    pub fn handle(&self, payload: &str) -> &'static str {
        let result = self.outcome(payload);
        self.metrics.probe_request(result, 1);
        result
    }

    fn outcome(&self, payload: &str) -> &'static str {
        let Ok(request) = serde_json::from_str::<ProbeRequest>(payload) else {
            return outcome::MALFORMED;
        };
        let id = match decide(&request, &self.region, &self.catalog.current()) {
            Decision::NotMine => return outcome::NOT_MINE,
            Decision::UnknownDomain => {
                tracing::debug!(domain_id = %request.domain_id, "probe request for a domain not in this agent's catalog");
                return outcome::UNKNOWN_DOMAIN;
            }
            Decision::Malformed => return outcome::MALFORMED,
            Decision::Test { request_id, config } => return self.test(request_id, config),
            Decision::Probe(id) => id,
        };
        let ticket = match self.limit.try_acquire(id) {
            Ok(ticket) => ticket,
            Err(Refusal::Coalesced) => return outcome::COALESCED,
            Err(Refusal::Full) => return outcome::OVERLOADED,
        };
        match self.probe_now.request_with(id, Box::new(ticket)) {
            Ok(()) => {
                tracing::debug!(domain_id = %id, reason = %request.reason, "on-demand probe requested");
                outcome::PROBED
            }
            Err(ProbeNowError::Busy | ProbeNowError::Stopped) => outcome::OVERLOADED,
        }
    }

    fn test(&self, request_id: Uuid, config: Arc<DomainConfig>) -> &'static str {
        let ticket = match self.limit.try_acquire_test(request_id) {
            Ok(ticket) => ticket,
            Err(Refusal::Coalesced) => return outcome::COALESCED,
            Err(Refusal::Full) => return outcome::OVERLOADED,
        };
        let domain_id = config.id;
        match self.probe_now.request_test(request_id, config, Box::new(ticket)) {
            Ok(()) => {
                tracing::info!(%domain_id, %request_id, "test probe requested");
                outcome::TESTED
            }
            Err(ProbeNowError::Busy | ProbeNowError::Stopped) => outcome::OVERLOADED,
        }
    }
}

/// Rate-limits a warning: counts occurrences and says when to log them.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    pending: u64,
}

impl Throttle {
    /// Counts one occurrence; returns how many to report when a warning is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        if self.last.is_some_and(|at| now < at + WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// The listener: its own subscriber client, subscribed to `<prefix>:probe-requests`.
pub struct ProbeRequests {
    settings: RequestSettings,
    subscriber: SubscriberClient,
    handler: RequestHandler,
    metrics: Metrics,
}

impl ProbeRequests {
    pub fn new(
        settings: RequestSettings,
        subscriber: SubscriberClient,
        catalog: CatalogHandle,
        probe_now: ProbeNow,
        metrics: Metrics,
    ) -> Self {
        let limit = OnDemandLimit::new(settings.max_in_flight);
        let handler =
            RequestHandler::new(settings.region.clone(), catalog, probe_now, limit, metrics.clone());
        Self { settings, subscriber, handler, metrics }
    }

    /// Subscribes, retrying with capped exponential backoff until it works or `cancel` fires.
    async fn subscribe(&self, cancel: &CancellationToken) {
        let channel = self.settings.keys.probe_requests();
        let mut backoff = self.settings.min_backoff;
        loop {
            match self.subscriber.subscribe(channel.clone()).await {
                Ok(()) => {
                    tracing::debug!(%channel, "listening for probe requests");
                    return;
                }
                Err(error) => {
                    self.metrics.error("probe_requests_subscribe");
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "subscribing to probe requests failed");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }

    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let channel = self.settings.keys.probe_requests();
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let _connection = self.subscriber.connect();
        self.subscribe(&cancel).await;
        let mut first_connect_seen = false;
        let (mut malformed, mut overloaded) = (Throttle::default(), Throttle::default());
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                message = messages.recv() => match message {
                    Ok(message) => {
                        if &*message.channel != channel.as_str() {
                            continue;
                        }
                        let payload = message.value.as_str();
                        let result = match payload.as_deref() {
                            Some(payload) => self.handler.handle(payload),
                            None => {
                                self.metrics.probe_request(outcome::MALFORMED, 1);
                                outcome::MALFORMED
                            }
                        };
                        let now = Instant::now();
                        if result == outcome::MALFORMED {
                            if let Some(count) = malformed.note(now) {
                                tracing::warn!(count, "malformed probe requests ignored");
                            }
                        } else if result == outcome::OVERLOADED {
                            if let Some(count) = overloaded.note(now) {
                                tracing::warn!(
                                    count,
                                    limit = self.settings.max_in_flight,
                                    "on-demand probe limit reached; probe requests refused"
                                );
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.metrics.probe_request(outcome::OVERLOADED, missed);
                        tracing::warn!(missed, "probe requests overflowed the subscriber; some were lost");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        messages = self.subscriber.message_rx();
                    }
                },
                event = reconnects.recv() => {
                    if event.is_ok() {
                        // The first event is the initial connection, not a reconnection.
                        if first_connect_seen {
                            tracing::info!("reconnected to redis; resubscribing to probe requests");
                            self.subscribe(&cancel).await;
                        }
                        first_connect_seen = true;
                    }
                },
            }
        }
        let _ = self.subscriber.quit().await;
        tracing::info!("probe request listener stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::DomainConfig;

    fn catalog(configs: Vec<DomainConfig>) -> Catalog {
        Catalog::from_snapshot(1, configs, "ams")
    }

    fn request(id: DomainId, regions: &[&str]) -> ProbeRequest {
        ProbeRequest {
            domain_id: id,
            regions: regions.iter().map(|r| r.to_string()).collect(),
            reason: "confirmation".into(),
            request_id: None,
            config: None,
        }
    }

    #[test]
    fn requests_are_filtered_by_region_and_catalog() {
        let known = shared::testing::sample_domain(60, 1);
        let paused = DomainConfig { paused: true, ..shared::testing::sample_domain(60, 1) };
        let elsewhere = DomainConfig { regions: vec!["sin".into()], ..shared::testing::sample_domain(60, 1) };
        let catalog = catalog(vec![known.clone(), paused.clone(), elsewhere.clone()]);
        assert_eq!(decide(&request(known.id, &[]), "ams", &catalog), Decision::Probe(known.id));
        assert_eq!(decide(&request(known.id, &["iad", "ams"]), "ams", &catalog), Decision::Probe(known.id));
        assert_eq!(decide(&request(known.id, &["iad"]), "ams", &catalog), Decision::NotMine);
        assert_eq!(decide(&request(DomainId::new(), &[]), "ams", &catalog), Decision::UnknownDomain);
        assert_eq!(decide(&request(paused.id, &["ams"]), "ams", &catalog), Decision::UnknownDomain);
        // Not run in this region, so not in this agent's catalog.
        assert_eq!(decide(&request(elsewhere.id, &[]), "ams", &catalog), Decision::UnknownDomain);
    }

    #[test]
    fn tests_probe_the_given_configuration_or_the_catalogs_even_when_paused() {
        let known = DomainConfig { paused: true, ..shared::testing::sample_domain(60, 1) };
        let catalog = catalog(vec![known.clone()]);
        let request_id = Uuid::now_v7();
        let test = |id: DomainId, config: Option<DomainConfig>, regions: &[&str]| ProbeRequest {
            request_id: Some(request_id),
            config,
            reason: "test".into(),
            ..request(id, regions)
        };
        // A saved, paused domain without a configuration in the request: the catalog's, unpaused.
        let Decision::Test { request_id: got, config } = decide(&test(known.id, None, &[]), "ams", &catalog)
        else {
            panic!("a test of a catalog domain is probed");
        };
        assert_eq!((got, config.id, config.paused), (request_id, known.id, false));
        // An unsaved domain: the configuration given, not in the catalog.
        let unsaved =
            DomainConfig { url: "http://127.0.0.1:9/".into(), ..shared::testing::sample_domain(60, 0) };
        let Decision::Test { config, .. } =
            decide(&test(unsaved.id, Some(unsaved.clone()), &["ams"]), "ams", &catalog)
        else {
            panic!("an unsaved domain is probed");
        };
        assert_eq!(*config, unsaved);
        assert_eq!(
            decide(&test(unsaved.id, Some(unsaved.clone()), &["sin"]), "ams", &catalog),
            Decision::NotMine
        );
        assert_eq!(decide(&test(unsaved.id, None, &[]), "ams", &catalog), Decision::UnknownDomain);
        assert_eq!(decide(&test(DomainId::new(), Some(unsaved), &[]), "ams", &catalog), Decision::Malformed);
    }

    #[test]
    fn tests_are_coalesced_by_request_not_by_domain() {
        let limit = OnDemandLimit::new(3);
        let domain = DomainId::new();
        let _confirmation = limit.try_acquire(domain).unwrap();
        let request = Uuid::now_v7();
        let _test = limit.try_acquire_test(request).unwrap();
        assert_eq!(limit.try_acquire_test(request).unwrap_err(), Refusal::Coalesced);
        let _other = limit.try_acquire_test(Uuid::now_v7()).unwrap();
        assert_eq!(limit.try_acquire_test(Uuid::now_v7()).unwrap_err(), Refusal::Full, "one bound for both");
    }

    #[test]
    fn the_limit_coalesces_and_caps_until_places_are_released() {
        let limit = OnDemandLimit::new(2);
        let (a, b, c) = (DomainId::new(), DomainId::new(), DomainId::new());
        let first = limit.try_acquire(a).unwrap();
        assert_eq!(limit.try_acquire(a).unwrap_err(), Refusal::Coalesced);
        let _second = limit.try_acquire(b).unwrap();
        assert_eq!(limit.try_acquire(c).unwrap_err(), Refusal::Full);
        assert_eq!(limit.in_flight(), 2);
        drop(first);
        assert_eq!(limit.in_flight(), 1);
        let _third = limit.try_acquire(c).unwrap();
        assert_eq!(limit.try_acquire(a).unwrap_err(), Refusal::Full);
    }

    /// Takes 10 s per probe (under paused time), so on-demand probes stay in flight.
    struct Slow;

    impl crate::scheduler::Probe for Slow {
        fn probe(
            &self,
            _: Arc<DomainConfig>,
        ) -> futures::future::BoxFuture<'static, crate::probe::ProbeReport> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                crate::probe::ProbeReport {
                    ok: true,
                    error: None,
                    error_detail: None,
                    timings: crate::probe::Timings::default(),
                    status: Some(200),
                    status_matched: Some(true),
                    keyword_matched: None,
                    resolved_ip: None,
                    resolved_addrs: Vec::new(),
                    dns: None,
                    dns_error: None,
                    connect_attempts: Vec::new(),
                    http_version: None,
                    redirects: Vec::new(),
                    body_bytes: 0,
                    body_wire_bytes: 0,
                    certificate: None,
                    redirect_certificates: Vec::new(),
                    earliest_expiry: None,
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_handler_coalesces_and_sheds_load_until_probes_finish() {
        use crate::scheduler::{Scheduler, SchedulerSettings};
        let domains: Vec<_> = (0..3).map(|_| shared::testing::sample_domain(3600, 1)).collect();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(catalog(domains.clone())));
        let metrics = Metrics::default();
        let (sink, mut results) = crate::results::queue(100, metrics.clone());
        let settings = SchedulerSettings { region: "ams".into(), max_in_flight: 8 };
        let (scheduler, probe_now) =
            Scheduler::new(settings, rx.clone(), Arc::new(Slow), sink, metrics.clone());
        let cancel = CancellationToken::new();
        let running = tokio::spawn(scheduler.run(cancel.clone()));
        let handle = CatalogHandle::from_watch(rx, true);
        let handler =
            RequestHandler::new("ams".into(), handle, probe_now, OnDemandLimit::new(2), metrics.clone());
        let payload = |d: &DomainConfig| serde_json::to_string(&request(d.id, &[])).unwrap();

        assert_eq!(handler.handle(&payload(&domains[0])), outcome::PROBED);
        assert_eq!(handler.handle(&payload(&domains[0])), outcome::COALESCED);
        assert_eq!(handler.handle(&payload(&domains[1])), outcome::PROBED);
        assert_eq!(handler.handle(&payload(&domains[2])), outcome::OVERLOADED, "two in flight at most");
        assert_eq!(handler.handle("{}"), outcome::MALFORMED);
        // The probes finish and release their places.
        for _ in 0..2 {
            let result = results.recv().await.unwrap();
            assert_eq!(result.trigger, crate::results::Trigger::OnDemand);
        }
        tokio::task::yield_now().await;
        assert_eq!(handler.handle(&payload(&domains[2])), outcome::PROBED);
        assert_eq!(handler.handle(&payload(&domains[0])), outcome::PROBED);
        for (label, n) in
            [(outcome::PROBED, 4), (outcome::COALESCED, 1), (outcome::OVERLOADED, 1), (outcome::MALFORMED, 1)]
        {
            assert_eq!(metrics.probe_request_count(label), n, "{label}");
        }
        cancel.cancel();
        running.await.unwrap();
    }

    #[test]
    fn warnings_are_throttled() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.note(start), Some(1));
        assert_eq!(throttle.note(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.note(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.note(start + WARN_EVERY), Some(3), "the two held back and this one");
    }
}
