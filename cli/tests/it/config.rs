//! plan, apply and export against a live control plane: the round trip through an empty
//! tenant, idempotence, pruning, secrets from the environment, and errors at the file's lines.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::helpers::{example_env, example_path, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_applies_exports_and_round_trips_through_an_empty_tenant() {
    let a = Server::spawn().await;
    let example = example_path();
    let example = example.to_str().unwrap();
    let env = example_env();

    let plan = a.run(&["plan", "-f", example], &env).await;
    assert_eq!(plan.code, 2, "changes to make: {plan:?}");
    assert!(plan.stdout.contains("+ domain \"api\" (create)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("Plan: 12 to create, 0 to update, 0 to delete."), "{}", plan.stdout);
    assert!(
        !plan.stdout.contains("key-123") && !plan.stdout.contains("XXXX"),
        "no secret in the plan: {}",
        plan.stdout
    );

    let apply = a.run(&["apply", "-f", example, "--yes"], &env).await;
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(apply.stderr.contains("channel \"audit\": its signing secret is"), "{}", apply.stderr);
    assert!(!apply.stderr.contains("warning"), "the server keeps the file's forms: {}", apply.stderr);
    assert_eq!(
        a.names("/v1/domains", "name").await,
        ["api", "dns://example.com/A", "login", "postgres", "www"]
    );

    // A second apply changes nothing, and plan says so with exit status 0.
    let again = a.run(&["plan", "-f", example], &env).await;
    assert_eq!(
        (again.code, again.stdout.as_str()),
        (0, "No changes: the server matches the file.\n"),
        "{again:?}"
    );
    let before: Value = a.get("/v1/domains").await;
    let reapply = a.run(&["apply", "-f", example, "--yes"], &env).await;
    assert_eq!(reapply.code, 0, "{reapply:?}");
    let after: Value = a.get("/v1/domains").await;
    assert_eq!(before, after, "nothing was written");

    // An update of a tcp check keeps what it does not name (its tags here).
    let changed = std::fs::read_to_string(example_path())
        .unwrap()
        .replace("      port: 5432\n", "      port: 5432\n    interval: 30\n");
    let changed_path = a.write("changed.yaml", &changed);
    let changed_path = changed_path.to_str().unwrap();
    let plan = a.run(&["plan", "-f", changed_path], &env).await;
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout.contains("~ domain \"postgres\" (update)\n    interval: (default) → 30\n"),
        "{}",
        plan.stdout
    );
    let apply = a.run(&["apply", "-f", changed_path, "--yes"], &env).await;
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(!apply.stderr.contains("warning"), "{}", apply.stderr);
    let postgres = a.get("/v1/domains").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "postgres")
        .cloned()
        .unwrap();
    assert_eq!(
        (postgres["interval"].clone(), postgres["tags"].clone()),
        (serde_json::json!(30), serde_json::json!(["db"]))
    );
    let back = a.run(&["apply", "-f", example, "--yes"], &env).await;
    assert_eq!(back.code, 0, "{back:?}");

    // export → apply on an empty tenant (another control plane: slugs are global) → export.
    let exported = a.run(&["export"], &BTreeMap::new()).await;
    assert_eq!(exported.code, 0, "{exported:?}");
    let text = exported.stdout;
    assert!(
        !text.contains("key-123") && !text.contains("pw-456") && !text.contains("hooks.slack.com"),
        "{text}"
    );
    assert!(text.contains("value_env: CROSSCHECK_API_HEADER_X_API_KEY_VALUE"), "{text}");
    let vars: Vec<&str> = exported.stderr.trim().rsplit(": ").next().unwrap().split(", ").collect();
    assert_eq!(vars.len(), 5, "{}", exported.stderr);

    let b = Server::spawn().await;
    let path = b.write("exported.yaml", &text);
    let path = path.to_str().unwrap();
    let secrets: BTreeMap<&str, &str> = vars
        .iter()
        .map(|v| {
            let value = match *v {
                v if v.ends_with("ROUTING_KEY") => "fedcba9876543210fedcba9876543210",
                v if v.ends_with("_URL") => "https://hooks.slack.com/services/T111/B111/YYYY",
                _ => "s3cret",
            };
            (*v, value)
        })
        .collect();
    let missing = b.run(&["plan", "-f", path], &BTreeMap::new()).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("environment variable CROSSCHECK_OPS_PAGER_ROUTING_KEY is not set"),
        "{}",
        missing.stderr
    );
    let applied = b.run(&["apply", "-f", path, "--yes"], &secrets).await;
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(!applied.stderr.contains("warning"), "{}", applied.stderr);
    let second =
        b.run(&["export", "-o", &format!("{}/second.yaml", b.dir.display())], &BTreeMap::new()).await;
    assert_eq!(second.code, 0, "{second:?}");
    let second = std::fs::read_to_string(b.dir.join("second.yaml")).unwrap();
    assert_eq!(second, text, "the same file");
    let plan_b = b.run(&["plan", "-f", path], &secrets).await;
    assert_eq!(plan_b.code, 0, "{plan_b:?}");

    // The exported file against the first tenant: nothing to change there either.
    let path_a = a.write("exported.yaml", &text);
    let plan_a = a.run(&["plan", "-f", path_a.to_str().unwrap()], &secrets).await;
    assert_eq!(plan_a.code, 2, "only the Slack URL differs (another value in the environment): {plan_a:?}");
    assert!(
        plan_a
            .stdout
            .contains("url_env: \"(secret)\" → \"$CROSSCHECK_TEAM_SLACK_URL\" (the secret's value changed)"),
        "{}",
        plan_a.stdout
    );
    assert!(plan_a.stdout.contains("Plan: 0 to create, 1 to update, 0 to delete."), "{}", plan_a.stdout);
    b.stop().await;
    a.stop().await;
}

const TWO_OF_EACH: &str = "\
domains:
  - name: keep
    url: https://keep.example.com/
    tags: [prod]
  - name: drop
    url: https://drop.example.com/
channels:
  - name: keep-hook
    kind: webhook
    url: https://hooks.example.com/keep
  - name: drop-hook
    kind: webhook
    url: https://hooks.example.com/drop
status_pages:
  - slug: keep-page
    title: Kept
    components:
      - domain: keep
        name: Keep
  - slug: drop-page
    title: Dropped
    components:
      - domain: drop
        name: Drop
maintenance:
  - title: keep window
    starts_at: 2027-01-10T22:00:00Z
    ends_at: 2027-01-11T02:00:00Z
    scope:
      domains: [keep]
  - title: drop window
    starts_at: 2027-01-10T22:00:00Z
    ends_at: 2027-01-11T02:00:00Z
    scope:
      domains: [drop]
";

/// The file without any of the `drop` resources.
fn only_kept() -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in TWO_OF_EACH.lines() {
        if line.starts_with("  - ") {
            skipping = line.contains("drop");
        } else if !line.starts_with(' ') {
            skipping = false;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_exactly_what_the_file_no_longer_has() {
    let server = Server::spawn().await;
    let none = BTreeMap::new();
    let full = server.write("full.yaml", TWO_OF_EACH);
    let applied = server.run(&["apply", "-f", full.to_str().unwrap(), "--yes"], &none).await;
    assert_eq!(applied.code, 0, "{applied:?}");
    let kept_ids: Vec<Value> = {
        let domains = server.get("/v1/domains").await;
        domains["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["name"] == "keep")
            .map(|d| d["id"].clone())
            .collect()
    };

    let kept = server.write("kept.yaml", &only_kept());
    let kept = kept.to_str().unwrap();
    // Without --prune nothing is deleted: plan names what it keeps and has nothing to do.
    let plan = server.run(&["plan", "-f", kept], &none).await;
    assert_eq!(plan.code, 0, "{plan:?}");
    for line in [
        "  domain \"drop\" is not in the file: kept (--prune deletes it)",
        "  channel \"drop-hook\" is not in the file: kept (--prune deletes it)",
        "  status page \"drop-page\" is not in the file: kept (--prune deletes it)",
        "  maintenance window \"drop window\" is not in the file: kept (--prune deletes it)",
    ] {
        assert!(plan.stdout.contains(line), "{line}: {}", plan.stdout);
    }
    let apply = server.run(&["apply", "-f", kept, "--yes"], &none).await;
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(server.names("/v1/domains", "name").await, ["drop", "keep"]);

    let plan = server.run(&["plan", "-f", kept, "--prune"], &none).await;
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("Plan: 0 to create, 0 to update, 4 to delete."), "{}", plan.stdout);
    // Apply asks first; an empty answer changes nothing.
    let refused = server.run(&["apply", "-f", kept, "--prune"], &none).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("apply cancelled: nothing was changed"), "{}", refused.stderr);
    assert_eq!(server.names("/v1/domains", "name").await, ["drop", "keep"]);

    let pruned = server.run(&["apply", "-f", kept, "--prune", "--yes"], &none).await;
    assert_eq!(pruned.code, 0, "{pruned:?}");
    assert_eq!(server.names("/v1/domains", "name").await, ["keep"]);
    assert_eq!(server.names("/v1/channels", "name").await, ["keep-hook"]);
    assert_eq!(server.names("/v1/status-pages", "slug").await, ["keep-page"]);
    assert_eq!(server.names("/v1/maintenance", "title").await, ["keep window"]);
    let domains = server.get("/v1/domains").await;
    let ids: Vec<Value> = domains["items"].as_array().unwrap().iter().map(|d| d["id"].clone()).collect();
    assert_eq!(ids, kept_ids, "the kept domain is the same domain, not a new one");
    let after = server.run(&["plan", "-f", kept, "--prune"], &none).await;
    assert_eq!(after.code, 0, "{after:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_problems_and_the_servers_422_are_reported_at_their_line_and_field() {
    let server = Server::spawn().await;
    let none = BTreeMap::new();
    let unknown = server.write(
        "unknown.yaml",
        "domains:\n  - name: api\n    url: https://api.example.com/\n    intervall: 30\n",
    );
    let run = server.run(&["plan", "-f", unknown.to_str().unwrap()], &none).await;
    assert_eq!(run.code, 1, "{run:?}");
    let expected = format!("{}:4: domains[0].intervall: unknown key; known: name, url,", unknown.display());
    assert!(run.stderr.starts_with(&expected), "{}", run.stderr);

    let bad = server.write(
        "bad.yaml",
        "domains:\n  - name: api\n    url: https://api.example.com/\n    interval: 99999\n    flap:\n      enter_transitions: 2\n      leave_transitions: 5\n",
    );
    let run = server.run(&["apply", "-f", bad.to_str().unwrap(), "--yes"], &none).await;
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    let file = bad.display().to_string();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!("{file}:4: domains[0].interval: must be between 1 and")),
        "{}",
        run.stderr
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:7: domains[0].flap.leave_transitions: must be below enter_transitions"
        )),
        "{}",
        run.stderr
    );
    assert!(server.names("/v1/domains", "name").await.is_empty(), "nothing was created");

    let run = server.run(&["plan", "-f", "/nonexistent/crosscheck.yaml"], &none).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.starts_with("error: cannot read /nonexistent/crosscheck.yaml:"), "{}", run.stderr);
    let usage = server.run(&["plan"], &none).await;
    assert_eq!(usage.code, 64, "{usage:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_the_environment_and_never_from_the_file() {
    let server = Server::spawn().await;
    let literal = server.write(
        "literal.yaml",
        "channels:\n  - name: pager\n    kind: pagerduty\n    routing_key: 0123456789abcdef0123456789abcdef\n",
    );
    let run = server.run(&["plan", "-f", literal.to_str().unwrap()], &BTreeMap::new()).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            ":4: channels[0].routing_key: secrets are not written in the file: give routing_key_env"
        ),
        "{}",
        run.stderr
    );

    let file = server.write(
        "secrets.yaml",
        "domains:\n  - name: login\n    url: https://auth.example.com/login\n    method: POST\n    headers:\n      - name: X-Api-Key\n        value_env: THE_KEY\n    auth:\n      kind: bearer\n      token_env: THE_TOKEN\n    body_env: THE_BODY\nchannels:\n  - name: pager\n    kind: pagerduty\n    routing_key_env: PD_KEY\n",
    );
    let file = file.to_str().unwrap();
    let env = BTreeMap::from([
        ("THE_KEY", "key-from-env"),
        ("THE_TOKEN", "token-from-env"),
        ("THE_BODY", "body-from-env"),
        ("PD_KEY", "0123456789abcdef0123456789abcdef"),
    ]);
    let run = server.run(&["apply", "-f", file, "--yes"], &env).await;
    assert_eq!(run.code, 0, "{run:?}");
    let (headers, auth, body): (Value, Value, Option<String>) = sqlx::query_as(
        "SELECT request_headers, request_auth, request_body FROM domains WHERE name = 'login'",
    )
    .fetch_one(&server.pool)
    .await
    .unwrap();
    assert_eq!(headers[0]["value"], "key-from-env", "{headers}");
    assert_eq!(auth["token"], "token-from-env", "{auth}");
    assert_eq!(body.as_deref(), Some("body-from-env"));
    let secret: Option<String> = sqlx::query_scalar("SELECT secret FROM channels WHERE name = 'pager'")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(secret.as_deref(), Some("0123456789abcdef0123456789abcdef"));

    let plan = server.run(&["plan", "-f", file], &env).await;
    assert_eq!(plan.code, 0, "secrets compare by presence: {plan:?}");

    // A rotated value in the same variable is not seen, unless the secrets are sent again.
    let mut rotated = env.clone();
    rotated.insert("THE_KEY", "rotated-key");
    let plan = server.run(&["plan", "-f", file], &rotated).await;
    assert_eq!(plan.code, 0, "{plan:?}");
    let plan = server.run(&["plan", "-f", file, "--resend-secrets"], &rotated).await;
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout.contains("    headers: its secrets sent again from the environment"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("Plan: 0 to create, 2 to update, 0 to delete."), "{}", plan.stdout);
    let run = server.run(&["apply", "-f", file, "--resend-secrets", "--yes"], &rotated).await;
    assert_eq!(run.code, 0, "{run:?}");
    let headers: Value = sqlx::query_scalar("SELECT request_headers FROM domains WHERE name = 'login'")
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(headers[0]["value"], "rotated-key", "{headers}");
    let export = server.run(&["export"], &BTreeMap::new()).await;
    assert_eq!(export.code, 0, "{export:?}");
    for secret in ["key-from-env", "token-from-env", "body-from-env", "0123456789abcdef"] {
        assert!(!export.stdout.contains(secret), "{}", export.stdout);
    }
    assert!(export.stdout.contains("routing_key_env: CROSSCHECK_PAGER_ROUTING_KEY"), "{}", export.stdout);
    assert!(export.stdout.contains("token_env: CROSSCHECK_LOGIN_AUTH_TOKEN"), "{}", export.stdout);
    assert!(export.stdout.contains("body_env: CROSSCHECK_LOGIN_BODY"), "{}", export.stdout);
    server.stop().await;
}

#[test]
fn the_readme_shows_the_example_file() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let example = std::fs::read_to_string(example_path()).unwrap();
    let section = readme.split("## Configuration as code").nth(1).expect("the README's section");
    let block =
        section.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("its yaml block");
    assert_eq!(block, example, "README's example = examples/crosscheck.yaml");
}
