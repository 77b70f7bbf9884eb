//! An agent's own overload is not its targets' outage: real agents, two of them saturated on
//! purpose (one probe slot each for more work than one slot can do), report their saturation
//! with every batch; while their probes time out the domains stay up with no incident, and a
//! real outage is still detected.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header::USER_AGENT, HeaderMap, StatusCode};
use serde_json::{json, Value};
use shared::testing::{eventually, random_prefix};
use sqlx::PgPool;
use uuid::Uuid;

use crate::delivery::RunningAgent;
use crate::helpers::{agents_config, TestApp, WAIT};
use crate::ingest::Pki;

/// Every probe answered 200 after 400 ms.
const SLOW_OK: u8 = 0;
/// Probes from ams and iad get no answer in time (as when those agents' own machines or links
/// are choked); sin's are answered as before.
const CHOKED: u8 = 1;
/// Every probe answered 503 at once: a real outage.
const OUTAGE: u8 = 2;

async fn target(mode: Arc<AtomicU8>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let mode = mode.clone();
        async move {
            let agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let choked = agent.contains("(region ams)") || agent.contains("(region iad)");
            match mode.load(Ordering::SeqCst) {
                OUTAGE => (StatusCode::SERVICE_UNAVAILABLE, "down"),
                CHOKED if choked => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    (StatusCode::OK, "late")
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    (StatusCode::OK, "ok")
                }
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn states(pool: &PgPool, domains: &[Uuid]) -> Vec<String> {
    sqlx::query_scalar("SELECT state FROM domain_state WHERE domain_id = ANY($1)")
        .bind(domains)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn incidents(pool: &PgPool, domains: &[Uuid]) -> Vec<(Uuid, Value)> {
    sqlx::query_as(
        "SELECT domain_id, opened_regions FROM incidents WHERE domain_id = ANY($1) ORDER BY domain_id",
    )
    .bind(domains)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// `control_plane_consensus_saturated_failures_total{region}` as scraped from `/metrics`.
async fn set_aside(app: &TestApp, region: &str) -> u64 {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("control_plane_consensus_saturated_failures_total{{region=\"{region}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[sqlx::test]
async fn saturated_agents_open_no_incident_and_a_real_outage_is_still_detected(pool: PgPool) {
    let pki = Pki::new();
    let mut config = agents_config(&random_prefix("saturation"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    config.consensus_sweep_interval_ms = 500;
    let app = TestApp::spawn_with(pool, config).await;
    let mode = Arc::new(AtomicU8::new(SLOW_OK));
    let target = target(mode.clone()).await;
    let mut domains = Vec::new();
    for i in 0..10 {
        let id = app
            .create_domain(json!({"url": format!("http://{target}/d{i}"), "interval": 2, "timeout_ms": 1500}))
            .await;
        domains.push(id.parse::<Uuid>().unwrap());
    }
    // ams and iad have one probe slot for 10 probes of 400 ms every 2 s: twice what they can do,
    // so their probes start later and later. sin keeps up.
    let port = app.ingest_addr.unwrap().port();
    let one_slot = |c: &mut probe_agent::Config| c.max_in_flight = 1;
    let agents = [
        RunningAgent::start_with(&pki, "ams", app.prefix(), port, one_slot).await,
        RunningAgent::start_with(&pki, "iad", app.prefix(), port, one_slot).await,
        RunningAgent::start(&pki, "sin", app.prefix(), port).await,
    ];
    eventually(WAIT, "every domain up", || async {
        let states = states(&app.pool, &domains).await;
        (states.len() == domains.len() && states.iter().all(|s| s == "up")).then_some(())
    })
    .await;
    eventually(WAIT, "ams and iad report themselves saturated", || async {
        let saturated: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM agent_saturation
             WHERE saturated AND since IS NOT NULL AND until >= since AND lag_p95_ms >= 1000",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (saturated == 2).then_some(())
    })
    .await;
    eventually(WAIT, "sin keeps up", || async {
        let healthy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM agent_saturation WHERE region = 'sin' AND NOT saturated",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (healthy == 1).then_some(())
    })
    .await;

    // The saturated agents' probes now time out while sin's succeed: two regions of three fail,
    // which would be a quorum, but their failures are unknown.
    mode.store(CHOKED, Ordering::SeqCst);
    let status_path = format!("/v1/domains/{}/status", domains[0]);
    eventually(WAIT, "timeouts of both saturated agents set aside", || async {
        (set_aside(&app, "ams").await >= 10 && set_aside(&app, "iad").await >= 10).then_some(())
    })
    .await;
    let status = eventually(WAIT, "a saturated region shown in the status", || async {
        let status: Value = app.get(&status_path, &app.token).await.json().await.ok()?;
        let regions = status["regions"].as_array()?;
        regions.iter().any(|r| r["standing"] == "saturated" && r["voting"] == false).then_some(status)
    })
    .await;
    assert_eq!(status["state"], "up");
    let reason = status["reason"].as_str().unwrap();
    assert!(reason.contains("agent was saturated"), "{reason}");
    app.consensus.sweep().await.unwrap();
    assert!(incidents(&app.pool, &domains).await.is_empty(), "no incident from the agents' own trouble");
    assert!(states(&app.pool, &domains).await.iter().all(|s| s == "up"));
    assert_eq!(set_aside(&app, "sin").await, 0);

    // A real outage: the target answers 503, an answer no overload invents. Every domain goes
    // down with one incident, the saturated regions' answers counted too.
    mode.store(OUTAGE, Ordering::SeqCst);
    eventually(WAIT, "every domain down", || async {
        let states = states(&app.pool, &domains).await;
        states.iter().all(|s| s == "down").then_some(())
    })
    .await;
    let opened = incidents(&app.pool, &domains).await;
    assert_eq!(opened.len(), domains.len(), "one incident per domain");
    for (_, regions) in &opened {
        let regions: Vec<&str> =
            regions.as_array().unwrap().iter().filter_map(|r| r["region"].as_str()).collect();
        assert!(regions.len() >= 2, "{regions:?}");
    }
    for agent in agents {
        agent.stop().await;
    }
    app.stop().await;
}
