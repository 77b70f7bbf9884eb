//! Local probe targets for benchmarks and the demo: an HTTP server, an HTTPS server with a
//! certificate from a throw-away CA (the CA is handed to agents as an extra root), and an HTTPS
//! server whose certificate is expired and self-signed. Paths choose the behaviour:
//! `/` and `/ok` answer 200 "ok", `/slow` waits 1.5 s, `/fail` answers 500, `/flap` alternates
//! between 200 and 503 every 20 s (`/flap/<n>`: every `n` seconds), and `/fail-in/<region>`
//! answers 503 to probes from that region (agents name their region in the User-Agent) and 200
//! to the others.
//!
//! `bench target` runs them in a child process so a benchmark's measurements do not share a
//! runtime with the targets; it prints one JSON line with the addresses, then serves until killed.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, IsCa, KeyPair};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Where the targets listen, and the CA that signed the good certificate (PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetAddrs {
    /// Plain HTTP, one listener per loopback address (spreads connections over more 4-tuples).
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
    pub bad_tls: SocketAddr,
    pub ca_pem: String,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Loopback addresses to listen on (127.0.0.1, 127.0.0.2, …).
    #[arg(long, default_value_t = 4)]
    ips: u8,
}

struct Tls {
    good: TlsAcceptor,
    bad: TlsAcceptor,
    ca_pem: String,
}

fn tls() -> anyhow::Result<Tls> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Crosscheck bench CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut names = vec!["localhost".to_owned()];
    names.extend((1..=16).map(|i| format!("127.0.0.{i}")));
    let mut leaf_params = CertificateParams::new(names)?;
    // A realistic lifetime (90 days from yesterday) so days-left figures read naturally.
    use chrono::Datelike;
    let from = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let until = from + chrono::Days::new(90);
    leaf_params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    leaf_params.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    let good = acceptor(leaf.der().clone(), leaf_key.serialize_der())?;

    let bad_key = KeyPair::generate()?;
    let mut bad_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    bad_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    bad_params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let bad_cert = bad_params.self_signed(&bad_key)?;
    let bad = acceptor(bad_cert.der().clone(), bad_key.serialize_der())?;
    Ok(Tls { good, bad, ca_pem: ca.pem() })
}

fn acceptor(cert: rustls_pki_types::CertificateDer<'static>, key: Vec<u8>) -> anyhow::Result<TlsAcceptor> {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.into());
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert], key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Starts every target in this process; returns their addresses.
pub async fn start(ips: u8) -> anyhow::Result<TargetAddrs> {
    let tls = tls()?;
    let first = TcpListener::bind("127.0.0.1:0").await?;
    let port = first.local_addr()?.port();
    let mut http = vec![first.local_addr()?];
    tokio::spawn(serve(first, None));
    for i in 2..=ips.max(1) {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)), port);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        http.push(addr);
        tokio::spawn(serve(listener, None));
    }
    let mut https = Vec::new();
    for i in 1..=ips.max(1) {
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)), 0)).await?;
        https.push(listener.local_addr()?);
        tokio::spawn(serve(listener, Some(tls.good.clone())));
    }
    let bad = TcpListener::bind("127.0.0.1:0").await?;
    let bad_tls = bad.local_addr()?;
    tokio::spawn(serve(bad, Some(tls.bad)));
    Ok(TargetAddrs { http, https, bad_tls, ca_pem: tls.ca_pem })
}

async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(respond);
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

async fn respond(request: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(region) = request.uri().path().strip_prefix("/fail-in/") {
        let agent =
            request.headers().get(hyper::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (status, body) = if agent.contains(&format!("(region {region})")) {
            (StatusCode::SERVICE_UNAVAILABLE, "down from this region")
        } else {
            (StatusCode::OK, "ok")
        };
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("static response"));
    }
    let path = request.uri().path();
    let flap_every = match path.strip_prefix("/flap") {
        Some("") => Some(20),
        Some(rest) => rest.strip_prefix('/').and_then(|n| n.parse::<i64>().ok()).filter(|n| *n > 0),
        None => None,
    };
    if let Some(every) = flap_every {
        let (status, body) = if (chrono::Utc::now().timestamp() / every) % 2 == 0 {
            (StatusCode::OK, "ok")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "flapping")
        };
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("static response"));
    }
    let (status, body) = match path {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            (StatusCode::OK, "ok, slowly")
        }
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose"),
        _ => (StatusCode::OK, "ok"),
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response"))
}

/// `bench target`: serve until killed, after printing the addresses as one JSON line.
pub async fn run_child(args: Args) -> anyhow::Result<()> {
    let addrs = start(args.ips).await?;
    println!("{}", serde_json::to_string(&addrs)?);
    shared::shutdown::signal().await;
    Ok(())
}

/// Starts the targets in a child process and reads their addresses.
pub async fn spawn_child(ips: u8) -> anyhow::Result<(tokio::process::Child, TargetAddrs)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["target", "--ips", &ips.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the target process")?;
    let stdout = child.stdout.take().context("target stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
    let addrs: TargetAddrs = serde_json::from_str(&line).context("target addresses")?;
    Ok((child, addrs))
}
