//! The binary as an operator first runs it: `migrate` against a server without the databases,
//! and configuration errors that exit 64 before anything is touched.

use std::process::Output;

use sqlx::migrate::MigrateDatabase;
use uuid::Uuid;

/// A database name on the local server that does not exist yet, and its URL.
fn fresh(label: &str) -> (String, String) {
    let name = format!("cctest_{label}_{}", Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    (name, url)
}

async fn exists(url: &str) -> bool {
    sqlx::Postgres::database_exists(url).await.expect("ask the server")
}

async fn drop_database(url: &str) {
    let _ = sqlx::Postgres::force_drop_database(url).await;
}

/// Runs the control plane with `args`, the given `CROSSCHECK_*` variables and no others of the
/// test's environment that could change its configuration.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CROSSCHECK_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("run control-plane")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_creates_and_migrates_both_databases() {
    let (_, db) = fresh("first_tx");
    let (_, ts) = fresh("first_ts");
    let env = [("CROSSCHECK_DATABASE_URL", db.as_str()), ("CROSSCHECK_TIMESERIES_URL", ts.as_str())];
    let output = run(&["migrate"], &env).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "migrate failed: {}{}", stdout, text(&output.stderr));
    assert!(stdout.contains("created the transactional database"), "{stdout}");
    assert!(stdout.contains("created the time-series database"), "{stdout}");
    assert!(stdout.contains("migrated the time-series database (plain storage)"), "{stdout}");
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let domains: bool = sqlx::query_scalar("SELECT to_regclass('public.domains') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(domains, "the transactional schema is in place");
    pool.close().await;
    let pool = sqlx::PgPool::connect(&ts).await.unwrap();
    let mode: String = sqlx::query_scalar("SELECT mode FROM storage_meta").fetch_one(&pool).await.unwrap();
    assert_eq!(mode, "plain");
    pool.close().await;

    // Again: nothing to create, nothing to apply, still a success.
    let output = run(&["migrate"], &env).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(!stdout.contains("created"), "{stdout}");

    drop_database(&db).await;
    drop_database(&ts).await;
}

#[tokio::test]
async fn serving_without_the_database_says_how_to_create_it() {
    let (_, db) = fresh("first_missing");
    let env = [("CROSSCHECK_DATABASE_URL", db.as_str()), ("CROSSCHECK_LISTEN", "127.0.0.1:0")];
    let output = run(&[], &env).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`control-plane migrate` creates it"), "{stderr}");
    assert!(!exists(&db).await);
}

/// Each configuration error exits 64 with a message naming the key and where it was set, and
/// creates no database (the URLs name databases that do not exist).
#[tokio::test]
async fn configuration_errors_exit_64_before_anything_is_touched() {
    let dir = tempdir();
    let (_, db) = fresh("first_cfg_tx");
    let (_, ts) = fresh("first_cfg_ts");
    let missing_crl = dir.join("crl.pem");
    let pki = crate::ingest::Pki::new();
    let pki_dir = pki.store.ca_cert().parent().unwrap().to_owned();
    let file = dir.join("crosscheck.toml");
    std::fs::write(
        &file,
        format!(
            "database_url = {db:?}\ntimeseries_url = {ts:?}\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n\
             tls_crl = {:?}\n",
            pki.store.ca_cert().display().to_string(),
            pki_dir.join("server.pem").display().to_string(),
            pki_dir.join("server.key").display().to_string(),
            missing_crl.display().to_string(),
        ),
    )
    .unwrap();
    let config = file.display().to_string();
    for command in [&["--config", config.as_str(), "migrate"][..], &["--config", config.as_str()][..]] {
        let output = run(command, &[]).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{command:?}: {stderr}");
        assert!(stderr.contains("tls_crl: cannot read"), "{stderr}");
        assert!(stderr.contains(&missing_crl.display().to_string()), "names the missing file: {stderr}");
        assert!(stderr.contains(&format!("(set in {config})")), "names the configuration file: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
    }

    // An unknown key, a bad value, a missing configuration file, and a bad value from the
    // environment.
    std::fs::write(&file, "databse_url = \"postgres://x\"\n").unwrap();
    let output = run(&["--config", &config, "migrate"], &[]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("databse_url") && stderr.contains(&config), "{stderr}");
    std::fs::write(&file, format!("database_url = {db:?}\nmin_interval_s = 0\n")).unwrap();
    let output = run(&["--config", &config, "migrate"], &[]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("min_interval_s must be at least 1") && stderr.contains(&config), "{stderr}");
    let output = run(&["--config", &dir.join("nope.toml").display().to_string(), "migrate"], &[]).await;
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("nope.toml"), "{}", text(&output.stderr));
    let output = run(
        &["migrate"],
        &[
            ("CROSSCHECK_DATABASE_URL", &db),
            ("CROSSCHECK_TIMESERIES_URL", &ts),
            ("CROSSCHECK_REDIS_URL", "http://nowhere"),
        ],
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("redis_url") && stderr.contains("CROSSCHECK_REDIS_URL"), "{stderr}");

    assert!(!exists(&db).await, "no database was created");
    assert!(!exists(&ts).await, "no time-series database was created");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("crosscheck-first-run-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
