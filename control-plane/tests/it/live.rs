//! Live events end to end: published after commit, fanned out through Redis to every replica,
//! streamed as Server-Sent Events (`GET /v1/events`), resumed with `Last-Event-ID`, bounded.

use std::time::Duration;

use chrono::Utc;
use control_plane::live::{Event, Kind};
use reqwest::StatusCode;
use serde_json::json;
use shared::testing::{eventually, random_prefix};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{observed, test_config, SseClient, TestApp, WAIT};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn tenant_of(app: &TestApp, token: &str) -> Uuid {
    control_plane::tenants::authenticate(&app.pool, token).await.unwrap().expect("a valid token").tenant_id
}

/// Every region observes `domain` failing (or passing), recorded and evaluated by `app`.
async fn all_regions(app: &TestApp, domain: Uuid, ok: bool) {
    let at = Utc::now();
    let batches = ["ams", "iad", "sin"].iter().map(|r| observed(r, domain, ok, at)).collect();
    app.consensus.process(batches).await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn every_replica_streams_every_event_of_the_tenant(pool: PgPool) {
    let one = TestApp::spawn(pool.clone()).await;
    let two = TestApp::spawn_with(pool, one.config.clone()).await;
    let auth = bearer(&one.token);
    let mut on_one = SseClient::open(&one, "/v1/events", &[("authorization", &auth)]).await;
    let mut on_two = SseClient::open(&two, "/v1/events", &[("authorization", &auth)]).await;
    assert!(on_one.response_is_event_stream());

    // A write on replica one, a state change decided on replica two.
    let domain: Uuid =
        one.create_domain(json!({"url": "https://example.com/", "interval": 60})).await.parse().unwrap();
    // Another tenant's writes never reach this tenant's streams.
    let other = one.other_tenant().await;
    let response = one.post("/v1/domains", &other, &json!({"url": "https://example.org/"})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    all_regions(&two, domain, false).await;

    for (name, stream) in [("one", &mut on_one), ("two", &mut on_two)] {
        let created =
            stream.next_named("domain", WAIT).await.unwrap_or_else(|| panic!("{name}: no domain event"));
        let created = created.json();
        assert_eq!(created["domain"], json!(domain), "{name}: {created}");
        assert_eq!(created["state"], "created");
        assert!(created["id"].is_string());
        // The result (published when recorded) and the transition (when evaluated), in either order.
        let (mut state, mut result) = (None, None);
        while state.is_none() || result.is_none() {
            let message =
                stream.next_event(WAIT).await.unwrap_or_else(|| panic!("{name}: {state:?} {result:?}"));
            match message.event.as_deref() {
                Some("state") => state = Some(message.json()),
                Some("result") => result = Some(message.json()),
                _ => {}
            }
        }
        let (state, result) = (state.unwrap(), result.unwrap());
        assert_eq!(state["domain"], json!(domain), "{name}: {state}");
        assert_eq!((state["from"].as_str(), state["state"].as_str()), (Some("unknown"), Some("down")));
        assert!(state["incident"].is_string(), "the transition opened an incident: {state}");
        // Results reach the console's stream too, from any replica.
        assert_eq!(result["domain"], json!(domain));
        assert_eq!(result["ok"], false);
        assert!(result.get("id").is_none(), "results are not kept in the stream: {result}");
    }
    two.shutdown().await;
    one.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_stream_resumes_after_the_last_event_id_it_saw(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let auth = bearer(&app.token);
    let mut stream = SseClient::open(&app, "/v1/events", &[("authorization", &auth)]).await;
    let first = app.create_domain(json!({"url": "https://a.example.com/"})).await;
    let seen = stream.next_named("domain", WAIT).await.expect("first event");
    assert_eq!(seen.json()["domain"], json!(first));
    let last_id = seen.id.clone().expect("a kept event has an id");
    drop(stream);

    // Missed while away, in order; another tenant's in between is not shown.
    let second = app.create_domain(json!({"url": "https://b.example.com/"})).await;
    let other = app.other_tenant().await;
    app.post("/v1/domains", &other, &json!({"url": "https://c.example.org/"})).await;
    let third = app.create_domain(json!({"url": "https://c.example.com/"})).await;
    app.delete(&format!("/v1/domains/{second}"), &app.token).await;

    for resume in [vec![("last-event-id", last_id.as_str())], vec![]] {
        let path =
            if resume.is_empty() { format!("/v1/events?after={last_id}") } else { "/v1/events".into() };
        let mut headers = resume.clone();
        headers.push(("authorization", &auth));
        let mut stream = SseClient::open(&app, &path, &headers).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let event = stream.next_event(WAIT).await.expect("a replayed event").json();
            got.push((
                event["domain"].as_str().unwrap().to_owned(),
                event["state"].as_str().unwrap().to_owned(),
            ));
        }
        assert_eq!(
            got,
            vec![
                (second.clone(), "created".to_owned()),
                (third.clone(), "created".to_owned()),
                (second.clone(), "deleted".to_owned())
            ],
            "{path} {resume:?}"
        );
    }
    // Then live, after the replay.
    let headers = [("authorization", auth.as_str()), ("last-event-id", last_id.as_str())];
    let mut stream = SseClient::open(&app, "/v1/events", &headers).await;
    for _ in 0..3 {
        stream.next_event(WAIT).await.expect("a replayed event");
    }
    let fourth = app.create_domain(json!({"url": "https://d.example.com/"})).await;
    let live = stream.next_event(WAIT).await.expect("live after the replay").json();
    assert_eq!(live["domain"], json!(fourth));

    // A malformed Last-Event-ID is no resume point: the stream starts from now.
    let headers = [("authorization", auth.as_str()), ("last-event-id", "yesterday")];
    let mut stream = SseClient::open(&app, "/v1/events", &headers).await;
    let fifth = app.create_domain(json!({"url": "https://e.example.com/"})).await;
    assert_eq!(stream.next_event(WAIT).await.unwrap().json()["domain"], json!(fifth));
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn a_client_behind_the_trimmed_history_is_told_to_reload(pool: PgPool) {
    let config = control_plane::Config {
        live_stream_max_len: 100,
        ..test_config(&random_prefix("live"), "redis://127.0.0.1:6379")
    };
    let app = TestApp::spawn_with(pool, config).await;
    let tenant = tenant_of(&app, &app.token).await;
    let auth = bearer(&app.token);
    let mut stream = SseClient::open(&app, "/v1/events", &[("authorization", &auth)]).await;
    let publisher = app.live.publisher();
    publisher.publish(Event::page(tenant, Uuid::now_v7(), "updated", Utc::now()));
    let first = stream.next_event(WAIT).await.unwrap().id.unwrap();
    drop(stream);
    for _ in 0..1_000 {
        publisher.publish(Event::page(tenant, Uuid::now_v7(), "updated", Utc::now()));
    }
    let key = format!("{}:events", app.prefix());
    eventually(WAIT, "the stream trimmed past the first event", || async {
        let oldest: Vec<(String, std::collections::HashMap<String, String>)> =
            fred::prelude::StreamsInterface::xrange_values(&app.redis, &key, "-", "+", Some(1))
                .await
                .unwrap();
        let oldest: control_plane::live::EventId = oldest.first()?.0.parse().unwrap();
        (oldest > first.parse().unwrap() && app.live.position() > oldest).then_some(())
    })
    .await;
    let headers = [("authorization", auth.as_str()), ("last-event-id", first.as_str())];
    let mut stream = SseClient::open(&app, "/v1/events", &headers).await;
    let reset = stream.next_event(WAIT).await.expect("reset");
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert!(stream.next_raw(Duration::from_secs(5)).await.is_none(), "the stream ends after a reset");
    app.stop().await;
}

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn streams_are_bounded_kept_alive_and_slow_ones_dropped(pool: PgPool) {
    let config = control_plane::Config {
        live_max_clients: 2,
        live_heartbeat_ms: 200,
        live_client_buffer: 1_024,
        live_publish_queue: 100_000,
        live_stream_max_len: 100_000,
        ..test_config(&random_prefix("live"), "redis://127.0.0.1:6379")
    };
    let app = TestApp::spawn_with(pool, config).await;
    let tenant = tenant_of(&app, &app.token).await;
    let auth = bearer(&app.token);
    let mut quiet = SseClient::open(&app, "/v1/events", &[("authorization", &auth)]).await;
    let mut stalled = SseClient::open(&app, "/v1/events", &[("authorization", &auth)]).await;

    // A third stream is refused while two are open, with the API's JSON error.
    let refused = app.http.get(app.url("/v1/events")).header("authorization", &auth).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(refused.headers()["content-type"], "application/json");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("too many live streams"), "{body}");

    // A quiet stream gets heartbeats.
    let beat = quiet.next_raw(WAIT).await.expect("the first message");
    assert!(beat.id.is_some(), "the first message says where the stream starts: {beat:?}");
    let beat = quiet.next_raw(WAIT).await.expect("a heartbeat");
    assert!(beat.comment, "{beat:?}");

    // Far more than fits in the socket buffers, while `stalled` reads nothing.
    let n = 20_000;
    let publisher = app.live.publisher();
    let note = "x".repeat(2_000);
    for _ in 0..n {
        publisher.publish(Event::incident(
            Kind::IncidentUpdate,
            tenant,
            Uuid::nil(),
            Uuid::nil(),
            "monitoring",
            Some(&note),
            Utc::now(),
        ));
    }
    // Nothing waited for the stalled client: every event went out to Redis and back.
    let metrics = app.url("/metrics");
    eventually(WAIT, "every event read back", || async {
        let text = app.http.get(&metrics).send().await.unwrap().text().await.unwrap();
        text.lines()
            .any(|l| {
                l.starts_with("control_plane_live_events_received_total{kind=\"incident_update\"}")
                    && l.ends_with(&format!(" {n}"))
            })
            .then_some(())
    })
    .await;
    // The stalled client, reading at last, gets what was buffered for it and then its stream
    // ends: it fell too far behind.
    let mut received = 0;
    while let Some(message) = stalled.next_raw(Duration::from_secs(10)).await {
        if message.event.as_deref() == Some("incident_update") {
            received += 1;
        }
    }
    assert!(received < n, "the stalled client was dropped before the end ({received} of {n})");
    let text = app.http.get(&metrics).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("control_plane_live_disconnects_total{reason=\"slow\"}"), "{text}");

    // Its place is free again (the server notices at its next write).
    drop(stalled);
    drop(quiet);
    eventually(WAIT, "a stream accepted again", || async {
        let stream = SseClient::connect(&app, "/v1/events", &[("authorization", &auth)]).await;
        (stream.status == StatusCode::OK).then_some(())
    })
    .await;

    // No token, no stream.
    let anonymous = SseClient::connect(&app, "/v1/events", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}
