//! One client's Server-Sent Event stream: the replay of what it missed (from the Redis
//! stream), then the live broadcast, shaped by its [`View`], with heartbeats; and the Redis
//! reads behind it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use fred::prelude::*;
use tokio::sync::broadcast::{self, error::RecvError};
use uuid::Uuid;

use super::{Event, EventId, Hub, Slot};

/// What a stream sends for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Nothing: the event does not concern this stream.
    Skip,
    /// These messages, in order (the last one carries the event's id).
    Send(Vec<Message>),
    /// The client must reload (what it shows can no longer be patched); the stream ends.
    Reset,
}

/// One SSE message: its event name and its data (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub name: &'static str,
    pub data: String,
}

/// What a stream shows of the events. Implementations keep whatever state they need (a
/// status page keeps its components' states to say what the overall banner now reads).
pub trait View: Send + 'static {
    /// Whether the stream also carries `result` events (many: only the console wants them).
    fn wants_results(&self) -> bool {
        false
    }

    /// What the client is sent for `event`.
    fn render(&mut self, event: &Event) -> Delivery;
}

/// The console's view: every event of one tenant (optionally of one domain), results
/// included, each as an SSE message named after its kind whose data is the event's JSON.
#[derive(Debug, Clone)]
pub struct TenantView {
    pub tenant: Uuid,
    pub domain: Option<Uuid>,
}

impl TenantView {
    pub fn new(tenant: Uuid) -> Self {
        Self { tenant, domain: None }
    }

    /// Only the events of `domain` (and the tenant's page events).
    pub fn domain(tenant: Uuid, domain: Uuid) -> Self {
        Self { tenant, domain: Some(domain) }
    }
}

impl View for TenantView {
    fn wants_results(&self) -> bool {
        true
    }

    fn render(&mut self, event: &Event) -> Delivery {
        if event.tenant != self.tenant {
            return Delivery::Skip;
        }
        if let (Some(wanted), Some(domain)) = (self.domain, event.domain) {
            if wanted != domain {
                return Delivery::Skip;
            }
        }
        Delivery::Send(vec![Message { name: event.kind.as_str(), data: event.json().to_owned() }])
    }
}

/// `live_max_clients` streams are open on this replica: `503` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many live streams are open; retry later")]
pub struct Busy;

impl Busy {
    /// The seconds a client is told to wait before it tries again (`Retry-After`).
    pub const fn retry_after_s(self) -> u64 {
        5
    }
}

/// The answer of a page's stream (status pages, the console): plain text. The API answers its JSON
/// error instead ([`crate::api::ApiError::StreamsBusy`]).
impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, self.to_string()).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_s()));
        response
    }
}

/// Where a stream resumes: the `Last-Event-ID` header (a browser reconnecting), else the
/// `after` query value (a page passing the position it was rendered at). Unparsable: none.
pub fn resume_point(headers: &HeaderMap, after: Option<&str>) -> Option<EventId> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| after.and_then(|a| a.parse().ok()))
}

impl Hub {
    /// A Server-Sent Events response streaming what `view` shows of the events after `resume`
    /// (replayed from the stream), or of the events from now on. `Busy` when `live_max_clients`
    /// streams are open.
    pub fn sse<V: View>(&self, view: V, resume: Option<EventId>) -> Result<Response, Busy> {
        let slot = self.slot()?;
        let (kept, results) = self.subscribe();
        let position = self.position();
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + self.settings().heartbeat,
            self.settings().heartbeat,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut client = Stream {
            hub: self.clone(),
            results: view.wants_results().then_some(results),
            view,
            kept,
            pending: VecDeque::new(),
            replay: None,
            seen: position,
            sent: EventId::ZERO,
            heartbeat,
            done: false,
            _slot: slot,
        };
        // The first message sets the reconnection delay and the position to resume from.
        let first = SseEvent::default().retry(self.settings().retry);
        match resume {
            Some(after) if after < position => {
                client.seen = after;
                client.sent = after;
                client.replay = Some(after);
                client.pending.push_back(first);
            }
            // Nothing to replay (or this replica has not read that far yet: what it reads up
            // to there, the client has).
            _ => {
                let from = position.max(resume.unwrap_or(EventId::ZERO));
                client.seen = from;
                client.sent = from;
                client.pending.push_back(first.id(from.to_string()));
            }
        }
        let stream = futures::stream::unfold(client, |mut client| async move {
            client.next().await.map(|event| (Ok::<_, Infallible>(event), client))
        });
        let mut response = Sse::new(stream).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Proxies that buffer responses (nginx) would hold events back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }
}

/// Entries read per `XRANGE` while replaying.
const REPLAY_PAGE: u64 = 500;

struct Stream<V: View> {
    hub: Hub,
    view: V,
    kept: broadcast::Receiver<Arc<Event>>,
    results: Option<broadcast::Receiver<Arc<Event>>>,
    pending: VecDeque<SseEvent>,
    /// The resume point still to replay from.
    replay: Option<EventId>,
    /// The last stream event this client has been through (sent or skipped).
    seen: EventId,
    /// The last id the client was told.
    sent: EventId,
    heartbeat: tokio::time::Interval,
    done: bool,
    _slot: Slot,
}

impl<V: View> Stream<V> {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if let Some(after) = self.replay.take() {
                self.replay(after).await;
                continue;
            }
            tokio::select! {
                biased;
                () = self.hub.inner.closing.cancelled() => self.done = true,
                received = self.kept.recv() => match received {
                    Ok(event) => {
                        let Some(id) = event.id else { continue };
                        if id <= self.seen {
                            continue; // already replayed
                        }
                        self.seen = id;
                        self.deliver(&event);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let metrics = &self.hub.inner.metrics;
                        metrics.disconnect("slow");
                        tracing::debug!(missed, "live client too slow; its stream ends (it resumes on reconnect)");
                        self.done = true;
                    }
                    Err(RecvError::Closed) => self.done = true,
                },
                received = recv_results(&mut self.results) => match received {
                    Ok(event) => self.deliver(&event),
                    // Results are a live feed: a client behind on them skips to the newest.
                    Err(RecvError::Lagged(missed)) => self.hub.inner.metrics.drop("slow_client_results", missed),
                    Err(RecvError::Closed) => self.results = None,
                },
                _ = self.heartbeat.tick() => {
                    if self.seen > self.sent {
                        // An id-only message: the browser remembers it, nothing is dispatched.
                        self.sent = self.seen;
                        self.pending.push_back(SseEvent::default().id(self.seen.to_string()));
                    } else {
                        self.pending.push_back(SseEvent::default().comment(""));
                    }
                }
            }
        }
    }

    /// Shapes `event` through the view into pending messages.
    fn deliver(&mut self, event: &Event) {
        match self.view.render(event) {
            Delivery::Skip => {}
            Delivery::Send(messages) => {
                let last = messages.len().saturating_sub(1);
                for (i, message) in messages.into_iter().enumerate() {
                    let mut sse = SseEvent::default().event(message.name).data(message.data);
                    if let (true, Some(id)) = (i == last, event.id) {
                        sse = sse.id(id.to_string());
                        self.sent = self.sent.max(id);
                    }
                    self.pending.push_back(sse);
                }
            }
            Delivery::Reset => self.reset("reset"),
        }
    }

    fn reset(&mut self, reason: &str) {
        self.hub.inner.metrics.disconnect(reason);
        self.pending.push_back(SseEvent::default().event("reset").data("{}"));
        self.done = true;
    }

    /// Sends what the view shows of the stream's entries after `after`, or `reset` when some of
    /// them are no longer in the stream.
    async fn replay(&mut self, after: EventId) {
        let inner = self.hub.inner.clone();
        let key = inner.keys.events();
        match gap_after(&inner.redis, &key, after).await {
            Ok(false) => {}
            Ok(true) => {
                inner.metrics.resume("reset");
                self.reset("reset");
                return;
            }
            Err(error) => {
                inner.metrics.error("replay");
                tracing::warn!(%error, "reading the live stream to resume failed; the client reloads");
                self.reset("reset");
                return;
            }
        }
        let mut from = after;
        // Never more than the stream can hold (and a margin for entries added meanwhile).
        let mut budget = inner.settings.stream_max_len.saturating_mul(2).max(REPLAY_PAGE);
        loop {
            let page = match range_after(&inner.redis, &key, from, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    inner.metrics.error("replay");
                    tracing::warn!(%error, "reading the live stream to resume failed; the client reloads");
                    self.reset("reset");
                    return;
                }
            };
            let n = page.len() as u64;
            for (id, event) in page {
                from = id;
                self.seen = self.seen.max(id);
                if let Some(event) = event {
                    self.deliver(&event.with_id(id));
                    if self.done {
                        return;
                    }
                }
            }
            budget = budget.saturating_sub(n);
            if n < REPLAY_PAGE || budget == 0 {
                break;
            }
        }
        inner.metrics.resume("resumed");
        if self.seen > self.sent {
            self.sent = self.seen;
            self.pending.push_back(SseEvent::default().id(self.seen.to_string()));
        }
    }
}

async fn recv_results(
    results: &mut Option<broadcast::Receiver<Arc<Event>>>,
) -> Result<Arc<Event>, RecvError> {
    match results {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

type Entry = (String, std::collections::HashMap<String, String>);

fn parse_entry((id, fields): Entry) -> Option<(EventId, Option<Event>)> {
    let id: EventId = id.parse().ok()?;
    let event = fields.get("e").and_then(|json| serde_json::from_str::<Event>(json).ok());
    Some((id, event))
}

/// The id of the stream's last entry ([`EventId::ZERO`] when it is empty or missing).
pub(super) async fn last_id(redis: &Client, key: &str) -> Result<EventId, fred::error::Error> {
    let last: Vec<Entry> = redis.xrevrange_values(key, "+", "-", Some(1)).await?;
    Ok(last.into_iter().filter_map(parse_entry).map(|(id, _)| id).next().unwrap_or(EventId::ZERO))
}

/// Up to `count` entries after `after`.
async fn range_after(
    redis: &Client,
    key: &str,
    after: EventId,
    count: u64,
) -> Result<Vec<(EventId, Option<Event>)>, fred::error::Error> {
    let entries: Vec<Entry> = redis.xrange_values(key, format!("({after}"), "+", Some(count)).await?;
    Ok(entries.into_iter().filter_map(parse_entry).collect())
}

/// Whether entries after `after` may have been trimmed from the stream: its first entry is
/// newer than `after` (so `after` itself is gone, and maybe what followed it), or the stream
/// is empty although `after` is not the start (Redis lost it).
async fn gap_after(redis: &Client, key: &str, after: EventId) -> Result<bool, fred::error::Error> {
    if after == EventId::ZERO {
        return Ok(false);
    }
    let first: Vec<Entry> = redis.xrange_values(key, "-", "+", Some(1)).await?;
    let Some((first, _)) = first.into_iter().filter_map(parse_entry).next() else {
        return Ok(true);
    };
    Ok(first > after)
}

/// Entries after `from`, waiting up to `block` for one.
pub(super) async fn read_after(
    reader: &Client,
    key: &str,
    from: EventId,
    block: std::time::Duration,
) -> Result<Vec<(EventId, Option<Event>)>, fred::error::Error> {
    let value: Value =
        reader.xread(Some(REPLAY_PAGE), Some(block.as_millis() as u64), key, from.to_string()).await?;
    if value.is_null() {
        return Ok(Vec::new());
    }
    let mut streams: std::collections::HashMap<String, Vec<Entry>> = value.into_xread_response()?;
    Ok(streams.remove(key).unwrap_or_default().into_iter().filter_map(parse_entry).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn the_tenant_view_sends_its_tenants_events_as_their_json() {
        let tenant = Uuid::now_v7();
        let domain = Uuid::now_v7();
        let mut view = TenantView::new(tenant);
        let event = Event::state(tenant, domain, "up", "down", None, Utc::now());
        assert_eq!(
            view.render(&event),
            Delivery::Send(vec![Message { name: "state", data: event.json().to_owned() }])
        );
        let other = Event::state(Uuid::now_v7(), domain, "up", "down", None, Utc::now());
        assert_eq!(view.render(&other), Delivery::Skip);
        let mut one = TenantView::domain(tenant, Uuid::now_v7());
        assert_eq!(one.render(&event), Delivery::Skip);
        assert_ne!(one.render(&Event::page(tenant, Uuid::now_v7(), "updated", Utc::now())), Delivery::Skip);
    }

    #[test]
    fn the_header_wins_over_the_query_and_junk_is_no_resume_point() {
        let mut headers = HeaderMap::new();
        assert_eq!(resume_point(&headers, Some("5-0")), Some(EventId { ms: 5, seq: 0 }));
        headers.insert("last-event-id", HeaderValue::from_static("7-1"));
        assert_eq!(resume_point(&headers, Some("5-0")), Some(EventId { ms: 7, seq: 1 }));
        headers.insert("last-event-id", HeaderValue::from_static("garbage"));
        assert_eq!(resume_point(&headers, Some("x")), None);
    }
}

#[cfg(test)]
mod wire {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_id_only_message_carries_its_id_and_retry() {
        let first = SseEvent::default().retry(std::time::Duration::from_secs(2)).id("5-1");
        let stream = futures::stream::iter([Ok::<_, Infallible>(first)]);
        let body = Sse::new(stream).into_response().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(std::str::from_utf8(&body).unwrap(), "retry: 2000\nid: 5-1\n\n");
    }
}
