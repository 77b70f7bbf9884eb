//! Flap detection end to end against PostgreSQL: observations recorded and evaluations driven
//! at explicit times (no sleeping), the exit check called with explicit times, notifications
//! read from the outbox per channel, per-domain overrides through the API.

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use control_plane::clock::ManualClock;
use control_plane::consensus::Evaluated;
use control_plane::flap::Decision;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::testing::random_prefix;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp};

/// A control plane whose background consensus sweep and flap check stay out of the way: the
/// tests drive both at explicit times.
async fn spawn(pool: PgPool) -> (TestApp, ManualClock, DateTime<Utc>) {
    // Half an hour ago: observations this old are never fresh for the background sweep, and
    // the status API (which scores at the real now) still sees every transition.
    let base = (Utc::now() - Duration::minutes(30)).duration_trunc(Duration::seconds(1)).unwrap();
    let clock = ManualClock::new(base);
    let config = control_plane::Config {
        consensus_sweep_interval_ms: 3_600_000,
        flap_check_interval_ms: 3_600_000,
        ..test_config(&random_prefix("flap"), "redis://127.0.0.1:6379")
    };
    let app = TestApp::spawn_with_clock(pool, config, Arc::new(clock.clone())).await;
    (app, clock, base)
}

fn minutes(base: DateTime<Utc>, m: i64) -> DateTime<Utc> {
    base + Duration::minutes(m)
}

/// A single-region domain (quorum 1), so one observation decides.
async fn domain(app: &TestApp, extra: Value) -> Uuid {
    let mut body = json!({"url": "https://example.com/health", "regions": ["ams"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_domain(body).await.parse().unwrap()
}

/// A webhook channel of the domain's tenant.
async fn channel(pool: &PgPool, domain: Uuid, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO channels (id, tenant_id, name, kind, config)
         SELECT $1, tenant_id, $3, 'webhook', '{\"url\": \"https://hooks.example.com/x\"}' FROM domains WHERE id = $2",
    )
    .bind(id)
    .bind(domain)
    .bind(name)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// (dedup key, kind, payload) of a channel's outbox, oldest first.
async fn outbox(pool: &PgPool, channel: Uuid) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "SELECT dedup_key, kind, payload FROM notifications WHERE channel_id = $1 ORDER BY created_at, dedup_key",
    )
    .bind(channel)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn of_kind<'a>(queued: &'a [(String, String, Value)], kind: &str) -> Vec<&'a (String, String, Value)> {
    queued.iter().filter(|q| q.1 == kind).collect()
}

/// Records an observation of the domain from `ams` at `at` and evaluates it at `at`.
async fn step(app: &TestApp, clock: &ManualClock, domain: Uuid, ok: bool, at: DateTime<Utc>) -> Evaluated {
    clock.set(at);
    let batch = crate::helpers::observed("ams", domain, ok, at);
    app.consensus.record(&batch).await.unwrap();
    app.consensus.evaluate(domain, at).await.unwrap().expect("domain exists")
}

/// Up at minute 0, then one transition a minute (down at odd minutes) up to minute `last`.
/// Returns the flap decision of each evaluation.
async fn flap_until(
    app: &TestApp,
    clock: &ManualClock,
    domain: Uuid,
    base: DateTime<Utc>,
    last: i64,
) -> Vec<Decision> {
    let mut decisions = Vec::new();
    for m in 0..=last {
        let evaluated = step(app, clock, domain, m % 2 == 0, minutes(base, m)).await;
        assert_eq!(evaluated.state.as_str(), if m % 2 == 0 { "up" } else { "down" });
        decisions.push(evaluated.flap);
    }
    decisions
}

async fn check(app: &TestApp, clock: &ManualClock, at: DateTime<Utc>) -> usize {
    clock.set(at);
    app.flap.check(at).await.unwrap()
}

async fn incidents(pool: &PgPool, domain: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM incidents WHERE domain_id = $1 ORDER BY opened_at")
        .bind(domain)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn events(pool: &PgPool, incident: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT kind, details FROM incident_events WHERE incident_id = $1 ORDER BY id")
        .bind(incident)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// (from, to, incident, notified) of the domain's transitions in order.
async fn transitions(pool: &PgPool, domain: Uuid) -> Vec<(String, String, Option<Uuid>, bool, Value)> {
    sqlx::query_as(
        "SELECT from_state, to_state, incident_id, notified, regions FROM domain_transitions
         WHERE domain_id = $1 ORDER BY at, id",
    )
    .bind(domain)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// (id, entered_at, entered_score, left_at, settled) of the domain's flap periods.
type PeriodRow = (Uuid, DateTime<Utc>, i32, Option<DateTime<Utc>>, Option<String>);

async fn periods(pool: &PgPool, domain: Uuid) -> Vec<PeriodRow> {
    sqlx::query_as(
        "SELECT id, entered_at, entered_score, left_at, settled FROM flap_periods WHERE domain_id = $1
         ORDER BY entered_at",
    )
    .bind(domain)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn status(app: &TestApp, domain: Uuid) -> Value {
    let response = app.get(&format!("/v1/domains/{domain}/status"), &app.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[sqlx::test]
async fn entering_flap_mode_sends_one_notice_and_holds_incident_notifications(pool: PgPool) {
    let (app, clock, base) = spawn(pool).await;
    let domain = domain(&app, json!({})).await;
    let channels = [channel(&app.pool, domain, "a").await, channel(&app.pool, domain, "b").await];

    // unknown → up does not count; the sixth change between up and down enters flap mode.
    let decisions = flap_until(&app, &clock, domain, base, 8).await;
    use Decision::*;
    assert_eq!(decisions, [Nothing, Nothing, Nothing, Nothing, Nothing, Nothing, Enter, Stay, Stay]);

    let incidents = incidents(&app.pool, domain).await;
    assert_eq!(incidents.len(), 4, "{incidents:?}");
    let [a, b, c, d] = [incidents[0], incidents[1], incidents[2], incidents[3]];
    let period = periods(&app.pool, domain).await;
    assert_eq!(period.len(), 1);
    let (period_id, entered_at, entered_score, left_at, _) = &period[0];
    assert_eq!((*entered_at, *entered_score, *left_at), (minutes(base, 6), 6, None));

    for channel in channels {
        let queued = outbox(&app.pool, channel).await;
        let keys: Vec<&str> = queued.iter().map(|q| q.0.as_str()).collect();
        for (incident, kind) in
            [(a, "opened"), (a, "resolved"), (b, "opened"), (b, "resolved"), (c, "opened")]
        {
            assert!(keys.contains(&format!("incident:{incident}:{kind}").as_str()), "{keys:?}");
        }
        // The crossing transition (c resolved) and everything after it is held.
        for (incident, kind) in [(c, "resolved"), (d, "opened"), (d, "resolved")] {
            assert!(!keys.contains(&format!("incident:{incident}:{kind}").as_str()), "{keys:?}");
        }
        let flapping = of_kind(&queued, "domain_flapping");
        assert_eq!(flapping.len(), 1, "exactly one flapping notice per channel: {keys:?}");
        let (key, _, payload) = flapping[0];
        assert_eq!(key, &format!("flap:{period_id}:entered"));
        let summary = payload["summary"].as_str().unwrap();
        assert!(summary.contains("is flapping: 6 state changes in the last 60 min"), "{summary}");
        assert!(summary.contains("held"), "{summary}");
        assert_eq!(payload["details"]["score"], 6);
        assert_eq!(payload["details"]["window_s"], 3600);
        assert_eq!(payload["details"]["state"], "up");
        assert_eq!(queued.len(), 6, "{keys:?}");
    }

    // The audit trail is complete: held notifications are noted on the events.
    let held = |events: &[(String, Value)], kind: &str| {
        events.iter().any(|(k, details)| k == kind && details["notification"] == "held: flapping")
    };
    let c_events = events(&app.pool, c).await;
    assert!(!held(&c_events, "opened") && held(&c_events, "resolved"), "{c_events:?}");
    let d_events = events(&app.pool, d).await;
    assert_eq!(d_events.len(), 2, "{d_events:?}");
    assert!(held(&d_events, "opened") && held(&d_events, "resolved"), "{d_events:?}");
    assert_eq!(d_events[0].1["regions"][0]["region"], "ams");

    let rows = transitions(&app.pool, domain).await;
    assert_eq!(rows.len(), 9);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("unknown", "up"));
    let notified: Vec<bool> = rows.iter().map(|r| r.3).collect();
    assert_eq!(notified, [true, true, true, true, true, true, false, false, false]);
    assert_eq!(rows[1].2, Some(a));
    assert_eq!(rows[8].2, Some(d));
    assert_eq!(rows[7].4[0]["error_kind"], "status", "the transition keeps the deciding regions");

    let status = status(&app, domain).await;
    let flap = &status["flap"];
    assert_eq!(flap["flapping"], true, "{status}");
    assert_eq!(flap["since"].as_str().map(|s| s.parse::<DateTime<Utc>>().unwrap()), Some(minutes(base, 6)));
    assert_eq!(flap["score"], 8);
    assert_eq!(flap["window_s"], 3600);
    assert_eq!(flap["enter_transitions"], 6);
    assert_eq!(flap["leave_transitions"], 2);
    app.stop().await;
}

#[sqlx::test]
async fn a_stable_domain_leaves_flap_mode_once_after_the_quiet_period(pool: PgPool) {
    let (app, clock, base) = spawn(pool).await;
    let domain = domain(&app, json!({})).await;
    let channel = channel(&app.pool, domain, "a").await;
    flap_until(&app, &clock, domain, base, 8).await;
    let period_id = periods(&app.pool, domain).await[0].0;

    // Quiet period not over.
    assert_eq!(check(&app, &clock, minutes(base, 18)).await, 0);
    // Quiet, but all 8 changes are still in the window.
    assert_eq!(check(&app, &clock, minutes(base, 30)).await, 0);
    // Quiet, 5 changes left (minutes 4..=8): below enter, above leave — hysteresis keeps it.
    assert_eq!(check(&app, &clock, minutes(base, 63)).await, 0);
    assert!(of_kind(&outbox(&app.pool, channel).await, "domain_stabilized").is_empty());
    // 2 changes left (minutes 7 and 8): leaves.
    assert_eq!(check(&app, &clock, minutes(base, 66)).await, 1);
    assert_eq!(check(&app, &clock, minutes(base, 70)).await, 0);

    let period = &periods(&app.pool, domain).await[0];
    assert_eq!((period.3, period.4.as_deref()), (Some(minutes(base, 66)), Some("up")));
    let queued = outbox(&app.pool, channel).await;
    let stabilized = of_kind(&queued, "domain_stabilized");
    assert_eq!(stabilized.len(), 1, "{queued:?}");
    assert_eq!(stabilized[0].0, format!("flap:{period_id}:left"));
    let summary = stabilized[0].2["summary"].as_str().unwrap();
    assert!(summary.contains("settled up"), "{summary}");
    assert!(of_kind(&queued, "incident_opened").len() == 3, "settled up: no held incident is re-sent");
    assert_eq!(status(&app, domain).await["flap"]["flapping"], false);

    // Alerts resume: the next incident is notified.
    let evaluated = step(&app, &clock, domain, false, minutes(base, 71)).await;
    assert_eq!(evaluated.flap, Decision::Nothing);
    let incident = evaluated.incident.unwrap();
    let keys: Vec<String> = outbox(&app.pool, channel).await.into_iter().map(|q| q.0).collect();
    assert!(keys.contains(&format!("incident:{incident}:opened")), "{keys:?}");
    app.stop().await;
}

#[sqlx::test]
async fn a_domain_that_settles_down_gets_its_incident_opened_notification_exactly_once(pool: PgPool) {
    let (app, clock, base) = spawn(pool).await;
    let domain = domain(&app, json!({})).await;
    let channels = [channel(&app.pool, domain, "a").await, channel(&app.pool, domain, "b").await];
    flap_until(&app, &clock, domain, base, 7).await;
    let held = *incidents(&app.pool, domain).await.last().unwrap();
    let key = format!("incident:{held}:opened");
    for channel in channels {
        assert!(!outbox(&app.pool, channel).await.iter().any(|q| q.0 == key));
    }

    assert_eq!(check(&app, &clock, minutes(base, 66)).await, 1);
    assert_eq!(check(&app, &clock, minutes(base, 67)).await, 0);
    // Enqueuing it again (as a second exit would) adds nothing.
    let subject = control_plane::incidents::Subject {
        tenant_id: sqlx::query_scalar("SELECT tenant_id FROM domains WHERE id = $1")
            .bind(domain)
            .fetch_one(&app.pool)
            .await
            .unwrap(),
        domain_id: domain,
        url: "https://example.com/health".into(),
    };
    let mut tx = app.pool.begin().await.unwrap();
    assert_eq!(control_plane::incidents::notify_opened(&mut tx, &subject, held).await.unwrap(), 0);
    tx.commit().await.unwrap();

    assert_eq!(periods(&app.pool, domain).await[0].4.as_deref(), Some("down"));
    for channel in channels {
        let queued = outbox(&app.pool, channel).await;
        let opened: Vec<_> = queued.iter().filter(|q| q.0 == key).collect();
        assert_eq!(opened.len(), 1, "{queued:?}");
        assert_eq!(opened[0].1, "incident_opened");
        assert_eq!(opened[0].2["incident_id"], held.to_string());
        let stabilized = of_kind(&queued, "domain_stabilized");
        assert_eq!(stabilized.len(), 1);
        assert!(stabilized[0].2["summary"].as_str().unwrap().contains("settled down"));
    }
    // Its opening was announced after all, so its recovery is too.
    step(&app, &clock, domain, true, minutes(base, 70)).await;
    let resolved = format!("incident:{held}:resolved");
    for channel in channels {
        let queued = outbox(&app.pool, channel).await;
        assert_eq!(queued.iter().filter(|q| q.0 == resolved).count(), 1, "{queued:?}");
    }
    app.stop().await;
}

#[sqlx::test]
async fn per_domain_overrides_change_the_threshold_or_turn_detection_off(pool: PgPool) {
    let (app, clock, base) = spawn(pool).await;
    let sensitive = domain(&app, json!({})).await;
    let version = app.pg_version().await;
    let response = app
        .patch(
            &format!("/v1/domains/{sensitive}"),
            &app.token,
            &json!({"flap": {"enter_transitions": 3, "leave_transitions": 1}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["flap"], json!({"enter_transitions": 3, "leave_transitions": 1}));
    assert_eq!(app.pg_version().await, version, "agents do not see flap settings: no new config version");
    let fetched: Value = app.get(&format!("/v1/domains/{sensitive}"), &app.token).await.json().await.unwrap();
    assert_eq!(fetched["flap"], body["flap"]);

    use Decision::*;
    assert_eq!(flap_until(&app, &clock, sensitive, base, 3).await, [Nothing, Nothing, Nothing, Enter]);
    let flap = status(&app, sensitive).await["flap"].clone();
    assert_eq!((flap["enter_transitions"].as_u64(), flap["leave_transitions"].as_u64()), (Some(3), Some(1)));
    assert_eq!(flap["flapping"], true);

    // Turned off: behaves as without flap detection, transitions are still recorded.
    let calm = domain(&app, json!({"flap": {"enabled": false}})).await;
    let channel = channel(&app.pool, calm, "a").await;
    let decisions = flap_until(&app, &clock, calm, base, 8).await;
    assert!(decisions.iter().all(|d| *d == Nothing), "{decisions:?}");
    let rows = transitions(&app.pool, calm).await;
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r.3));
    assert!(periods(&app.pool, calm).await.is_empty());
    let queued = outbox(&app.pool, channel).await;
    assert_eq!(of_kind(&queued, "incident_opened").len(), 4);
    assert_eq!(of_kind(&queued, "incident_resolved").len(), 4);
    assert!(of_kind(&queued, "domain_flapping").is_empty());
    assert_eq!(status(&app, calm).await["flap"]["enabled"], false);

    // Turning it off while flapping ends flap mode at the next check.
    let response = app
        .patch(&format!("/v1/domains/{sensitive}"), &app.token, &json!({"flap": {"enabled": false}}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(check(&app, &clock, minutes(base, 4)).await, 1);
    let period = &periods(&app.pool, sensitive).await[0];
    assert_eq!(period.4.as_deref(), Some("down"));
    app.stop().await;
}

#[sqlx::test]
async fn invalid_flap_settings_are_refused_by_field(pool: PgPool) {
    let (app, _clock, _base) = spawn(pool).await;
    let domain = domain(&app, json!({})).await;
    let path = format!("/v1/domains/{domain}");
    let fields = |body: Value| body["error"]["fields"].clone();

    let response = app.patch(&path, &app.token, &json!({"flap": {"leave_transitions": 6}})).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        fields(body.clone())["flap.leave_transitions"],
        "must be below enter_transitions (6)",
        "{body}"
    );

    let response = app
        .patch(&path, &app.token, &json!({"flap": {"window_s": 0, "quiet_s": "long", "bogus": true}}))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let errors = fields(response.json().await.unwrap());
    for field in ["flap.window_s", "flap.quiet_s", "flap.bogus"] {
        assert!(errors[field].is_string(), "{field}: {errors}");
    }
    let response = app.patch(&path, &app.token, &json!({"flap": {"quiet_s": 7200}})).await;
    assert_eq!(fields(response.json().await.unwrap())["flap.quiet_s"], "must not exceed window_s (3600)");
    let response = app.patch(&path, &app.token, &json!({"flap": true})).await;
    assert!(fields(response.json().await.unwrap())["flap"].is_string());
    let response = app
        .post(
            "/v1/domains",
            &app.token,
            &json!({"url": "https://example.org/", "flap": {"enter_transitions": 1}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(fields(response.json().await.unwrap())["flap.enter_transitions"].is_string());

    // Nothing was stored; a valid value is, and null clears it.
    let body: Value = app.get(&path, &app.token).await.json().await.unwrap();
    assert_eq!(body["flap"], Value::Null);
    let body: Value = app
        .patch(&path, &app.token, &json!({"flap": {"window_s": 1800, "quiet_s": 600}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["flap"], json!({"window_s": 1800, "quiet_s": 600}));
    let response = app.patch(&path, &app.token, &json!({"flap": null})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["flap"], Value::Null);
    app.stop().await;
}

#[sqlx::test]
async fn pausing_a_flapping_domain_closes_its_flap_period_without_notices(pool: PgPool) {
    let (app, clock, base) = spawn(pool).await;
    let domain = domain(&app, json!({})).await;
    let channel = channel(&app.pool, domain, "a").await;
    flap_until(&app, &clock, domain, base, 7).await;
    assert_eq!(status(&app, domain).await["flap"]["flapping"], true);

    let held = *incidents(&app.pool, domain).await.last().unwrap();
    let response = app.post(&format!("/v1/domains/{domain}/pause"), &app.token, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The incident open at the pause stays open (its opening was held; nothing is sent).
    let evs = events(&app.pool, held).await;
    assert_eq!(evs.last().unwrap().0, "paused", "{evs:?}");
    assert_eq!(evs[0].1["notification"], control_plane::incidents::HELD);
    let queued = outbox(&app.pool, channel).await;
    assert!(!queued.iter().any(|q| q.0.starts_with(&format!("incident:{held}:"))), "{queued:?}");
    let period = &periods(&app.pool, domain).await[0];
    assert!(period.3.is_some());
    assert_eq!(period.4.as_deref(), Some("paused"));
    assert_eq!(check(&app, &clock, minutes(base, 90)).await, 0);
    let queued = outbox(&app.pool, channel).await;
    assert!(of_kind(&queued, "domain_stabilized").is_empty(), "{queued:?}");
    assert_eq!(status(&app, domain).await["flap"]["flapping"], false);
    app.stop().await;
}

/// Records one `ams` observation at `at` without evaluating (as ingest does for a repeated
/// failure), then runs the sweep at `at`.
async fn observe_and_sweep(app: &TestApp, clock: &ManualClock, domain: Uuid, ok: bool, at: DateTime<Utc>) {
    clock.set(at);
    let batch = crate::helpers::observed("ams", domain, ok, at);
    app.consensus.record(&batch).await.unwrap();
    app.consensus.sweep().await.unwrap();
}

#[sqlx::test]
async fn a_held_incident_still_down_after_a_resume_is_announced_once_then_its_end_too(pool: PgPool) {
    let (app, clock, base) = spawn(pool).await;
    let domain = domain(&app, json!({})).await;
    let channel = channel(&app.pool, domain, "a").await;
    flap_until(&app, &clock, domain, base, 7).await;
    let held = *incidents(&app.pool, domain).await.last().unwrap();
    let path = format!("/v1/domains/{domain}");
    assert_eq!(app.post(&format!("{path}/pause"), &app.token, &json!({})).await.status(), StatusCode::OK);
    assert_eq!(app.post(&format!("{path}/resume"), &app.token, &json!({})).await.status(), StatusCode::OK);
    let evs = events(&app.pool, held).await;
    assert_eq!(evs.last().unwrap().0, "resumed", "{evs:?}");
    // The digest of this hour sees the pause end: the span it closed carries the resume.
    let now = Utc::now();
    let mut conn = app.pool.acquire().await.unwrap();
    let rows = control_plane::digests::store::load_period(&mut conn, base, now + Duration::minutes(1), now)
        .await
        .unwrap();
    let span = &rows.values().next().unwrap().flaps[0];
    assert_eq!(span.settled.as_deref(), Some("paused"));
    assert!(span.resumed_at.is_some_and(|r| r >= span.left_at.unwrap()), "{span:?}");
    drop(conn);
    // Nothing is announced on the resume itself, nor by the failures seen before it.
    clock.set(Utc::now());
    app.consensus.sweep().await.unwrap();
    let opened = format!("incident:{held}:opened");
    assert!(!outbox(&app.pool, channel).await.iter().any(|q| q.0 == opened));

    // A failure observed after the resume: the pause ended flap mode and the domain is still
    // down, so the incident is announced, once (the sweep finds it; ingest would not evaluate
    // a repeated failure).
    observe_and_sweep(&app, &clock, domain, false, Utc::now()).await;
    observe_and_sweep(&app, &clock, domain, false, Utc::now()).await;
    let queued = outbox(&app.pool, channel).await;
    assert_eq!(queued.iter().filter(|q| q.0 == opened).count(), 1, "{queued:?}");
    let evs = events(&app.pool, held).await;
    assert_eq!(evs[0].1["notification"], control_plane::incidents::SENT_AFTER_RESUME, "{evs:?}");
    assert_eq!(incidents(&app.pool, domain).await.last(), Some(&held), "the same incident");

    // Its end is announced too, since its beginning was (an hour on, when the earlier changes
    // have left the window, so the recovery does not start a new flap period).
    let evaluated = step(&app, &clock, domain, true, Utc::now() + Duration::minutes(61)).await;
    assert_eq!(evaluated.state.as_str(), "up");
    let queued = outbox(&app.pool, channel).await;
    assert!(queued.iter().any(|q| q.0 == format!("incident:{held}:resolved")), "{queued:?}");
    app.stop().await;
}
