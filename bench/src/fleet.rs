//! Pieces shared by the end-to-end scenarios: in-process probe agents that deliver to a
//! control plane over mutual TLS, a target whose health the scenario switches, and a webhook
//! receiver that records what arrives and when.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::env::redis_url;
use crate::pki::Pki;

/// A probe agent running in this process.
pub struct RunningAgent {
    pub region: String,
    pub metrics: probe_agent::metrics::Metrics,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningAgent {
    /// Starts an agent for `region` delivering to the ingest listener on `ingest_port`.
    /// `reach_loopback` false leaves the SSRF guard closed, so this agent's probes of local
    /// targets fail (a region with its own network trouble).
    pub async fn start(
        pki: &Pki,
        region: &str,
        agent_id: &str,
        prefix: &str,
        ingest_port: u16,
        reach_loopback: bool,
    ) -> anyhow::Result<Self> {
        let (cert, key) = pki.agent(region, agent_id)?;
        let config = probe_agent::Config {
            region: region.into(),
            agent_id: agent_id.into(),
            redis_url: redis_url(),
            redis_prefix: prefix.into(),
            listen: "127.0.0.1:0".parse()?,
            allow_private: if reach_loopback { vec!["127.0.0.0/8".parse()?] } else { Vec::new() },
            control_plane_url: Some(format!("https://localhost:{ingest_port}")),
            tls_ca: Some(pki.ca_pem.clone()),
            tls_cert: Some(cert),
            tls_key: Some(key),
            resend_min_backoff_ms: 50,
            resend_max_backoff_ms: 1_000,
            shutdown_flush_timeout_ms: 30_000,
            ..probe_agent::Config::default()
        };
        let agent = probe_agent::Agent::build(config).await?;
        let metrics = agent.metrics.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(agent.run_until(stop.clone()));
        Ok(Self { region: region.into(), metrics, stop, task })
    }

    /// Stops probing, flushes, and waits.
    pub async fn stop(self) -> anyhow::Result<probe_agent::metrics::Metrics> {
        self.stop.cancel();
        self.task.await??;
        Ok(self.metrics)
    }
}

/// A target answering 200 while up and 503 while down, on every path.
#[derive(Clone)]
pub struct Switch {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
}

impl Switch {
    pub async fn start() -> anyhow::Result<Self> {
        let up = Arc::new(AtomicBool::new(true));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(|State(up): State<Arc<AtomicBool>>| async move {
                if up.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            })
            .with_state(up.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, up })
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// One webhook delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: Instant,
    pub id: String,
    pub body: Value,
    /// The body as sent, and the signature headers, for verification.
    pub raw: String,
    pub timestamp: String,
    pub signature: String,
}

impl Delivery {
    /// Checks the signature with the documented recipe: `sha256=` + hex(HMAC-SHA256(secret,
    /// timestamp + "." + body)).
    pub fn verify(&self, secret: &str) -> bool {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(format!("{}.{}", self.timestamp, self.raw).as_bytes());
        self.signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

async fn record(
    State(deliveries): State<Arc<Mutex<Vec<Delivery>>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    deliveries.lock().expect("deliveries lock").push(Delivery {
        at: Instant::now(),
        id: header("x-crosscheck-id"),
        body: parsed,
        raw: body,
        timestamp: header("x-crosscheck-timestamp"),
        signature: header("x-crosscheck-signature"),
    });
    StatusCode::OK
}

/// A local webhook receiver recording every delivery.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let app = axum::Router::new().fallback(record).with_state(deliveries.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, deliveries })
    }

    /// `f` over the deliveries so far, under the lock and without copying them (polling a
    /// copy of thousands of bodies holds the lock the receiver's handler needs).
    pub fn with<R>(&self, f: impl FnOnce(&[Delivery]) -> R) -> R {
        f(&self.deliveries.lock().expect("deliveries lock"))
    }

    pub fn all(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("deliveries lock").clone()
    }
}
