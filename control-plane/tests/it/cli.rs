//! The `control-plane` binary as an operator meets it: what a fatal error looks like in a log
//! file or pipe.

/// A start-up failure (serving without the database) is said once, with its cause once, and without colour codes when stderr
/// is not a terminal (here: a pipe).
#[tokio::test]
async fn a_fatal_error_is_said_once_in_plain_text() {
    let database = format!("crosscheck_missing_{}", uuid::Uuid::new_v4().simple());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .env("CROSSCHECK_LISTEN", "127.0.0.1:0")
        .env("CROSSCHECK_DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{database}"))
        .env("CROSSCHECK_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("CROSSCHECK_CONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!output.stderr.contains(&0x1b), "escape codes in a pipe: {stderr:?}");
    assert_eq!(stderr.matches("cannot connect to the transactional database").count(), 1, "{stderr}");
    assert_eq!(stderr.matches(&format!("\"{database}\" does not exist")).count(), 1, "{stderr}");
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(stderr.contains("`control-plane migrate` creates it"), "the way out is said: {stderr}");
}
