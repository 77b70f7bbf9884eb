//! `probe-agent check <url>` as an operator runs it: against a local server that answers, one
//! that refuses, and one the SSRF guard blocks without `--allow-private`; with request options
//! against a recording server.

use std::process::Output;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server answering every connection with `200` and `body`, until the test ends.
async fn serve(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

async fn check(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe-agent"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CROSSCHECK_AGENT_") {
            command.env_remove(key);
        }
    }
    command.arg("check").args(args).env("RUST_LOG", "warn").output().await.expect("run probe-agent check")
}

#[tokio::test]
async fn check_prints_the_verdict_and_exits_by_it() {
    let port = serve("all systems nominal").await;
    let url = format!("http://127.0.0.1:{port}/");

    let output = check(&[&url, "--allow-private", "127.0.0.0/8", "--keyword", "nominal"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with(&format!("UP  {url}\n")), "{stdout}");
    assert!(
        stdout.contains("  status     200 over HTTP/1.1\n") && stdout.contains("  keyword    found\n"),
        "{stdout}"
    );

    let output = check(&[&url, "--allow-private", "127.0.0.0/8", "--keyword", "outage"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with(&format!("DOWN (keyword)  {url}\n")), "{stdout}");

    // The SSRF guard holds unless the network is allowed.
    let output = check(&[&url]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("DOWN (blocked_target)"), "{stdout}");

    // JSON: the full report.
    let output = check(&[&url, "--allow-private", "127.0.0.0/8", "--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the report as JSON");
    assert_eq!(report["ok"], true);
    assert_eq!(report["status"], 200);
}

#[tokio::test]
async fn check_reports_a_refused_connection_and_usage_errors_exit_64() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let output = check(&[&format!("http://127.0.0.1:{closed}/"), "--allow-private", "127.0.0.0/8"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("DOWN (connect)"), "{stdout}");
    assert!(stdout.contains("  why        "), "{stdout}");

    for args in [&[][..], &["http://a.test/", "--expected-status", "700"][..]] {
        let output = check(args).await;
        assert_eq!(output.status.code(), Some(64), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

#[tokio::test]
async fn check_sends_the_request_options() {
    use crate::request::{ok, Recorder};
    let server = Recorder::start(ok).await;
    let url = server.url("/login");
    let output = check(&[
        &url,
        "--allow-private",
        "127.0.0.0/8",
        "--data",
        "user=probe&x=1",
        "--header",
        "Content-Type: application/x-www-form-urlencoded",
        "-H",
        "X-Trace: 7",
        "--basic",
        "probe:s3cr:et",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let got = &server.requests()[0];
    assert_eq!(got.method, "POST", "--data without --method posts, as with curl");
    assert_eq!(got.body, b"user=probe&x=1");
    assert_eq!(got.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(got.header("x-trace"), Some("7"));
    // base64("probe:s3cr:et")
    assert_eq!(got.header("authorization"), Some("Basic cHJvYmU6czNjcjpldA=="));

    // The token from the environment, so it is not in the process list.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe-agent"));
    let output = command
        .args(["check", &server.url("/api"), "--allow-private", "127.0.0.0/8", "--method", "delete"])
        .env("CROSSCHECK_AGENT_CHECK_BEARER", "env-token")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let got = &server.requests()[1];
    assert_eq!((got.method.as_str(), got.header("authorization")), ("DELETE", Some("Bearer env-token")));

    // A refused option exits 64 naming it, and never echoes a secret.
    for (args, says) in [
        (&["--header", "Host: other.test"][..], "--header Host: Host cannot be set"),
        (&["--data", "x", "--method", "GET"][..], "--data: only POST, PUT and PATCH send a body"),
        (&["--bearer", "bad token"][..], "--bearer: the token must be printable ASCII without spaces"),
    ] {
        let mut all = vec![url.as_str()];
        all.extend_from_slice(args);
        let output = check(&all).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(says) && !stderr.contains("bad token"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn check_runs_the_other_check_types_and_json_assertions() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"220 relay.test ESMTP\r\n").await;
        }
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let output = check(&[&url, "--allow-private", "127.0.0.0/8", "--expect", "220 "]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with(&format!("UP  {url}\n")), "{stdout}");
    let output = check(&[&url, "--allow-private", "127.0.0.0/8", "--expect", "+OK"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with(&format!("DOWN (expect_mismatch)  {url}\n")), "{stdout}");
    let output = check(&[&url, "--expect", "220"]).await;
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("DOWN (blocked_target)"));

    let web = serve(r#"{"status":"ok","depth":3}"#).await;
    let url = format!("http://127.0.0.1:{web}/");
    let json = |op: &'static str, value: &'static str| {
        vec![
            url.clone(),
            "--allow-private".into(),
            "127.0.0.0/8".into(),
            "--json-path".into(),
            "$.depth".into(),
            "--json-op".into(),
            op.into(),
            "--json-value".into(),
            value.into(),
        ]
    };
    let args = json("<", "10");
    let output = check(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    let args = json(">", "10");
    let output = check(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("$.depth is 3, expected > 10"), "{stdout}");

    for (args, complaint) in [
        (vec!["ftp://example.com/"], "unsupported scheme ftp"),
        (vec!["tcp://example.com"], "the port is required"),
        (vec!["dns://example.com/AXFR"], "unknown record type AXFR"),
        (vec!["https://example.com/", "--json-path", "$.a", "--json-op", "~"], "--json-op ~"),
        (
            vec!["https://example.com/", "--json-path", "$.a", "--json-op", "==", "--json-value", "ok"],
            "not json",
        ),
    ] {
        let output = check(&args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
}
