//! The operator console over HTTP, without a browser: sign-in and sessions, CSRF, the sign-in
//! rate limit, read-only and demo refusals, tenant isolation, and every page with known data.

use std::collections::BTreeMap;

use chrono::Utc;
use control_plane::tenants::{self, Role};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{test_config, TestApp};

/// A cookie-keeping client that does not follow redirects (so each answer can be read).
pub struct Client {
    base: String,
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    /// The `Set-Cookie` headers of the last answer, as sent.
    pub set_cookies: Vec<String>,
    /// Extra headers sent with every request.
    pub headers: HeaderMap,
}

pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub headers: HeaderMap,
    pub body: String,
}

impl Client {
    pub fn new(app: &TestApp) -> Self {
        Self {
            base: app.url(""),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            cookies: BTreeMap::new(),
            set_cookies: Vec::new(),
            headers: HeaderMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn answer(&mut self, response: reqwest::Response) -> Answer {
        self.set_cookies.clear();
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap().to_owned();
            let (pair, _) = text.split_once(';').unwrap_or((&text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(text);
        }
        Answer {
            status: response.status(),
            location: response.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_owned()),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .headers(self.headers.clone())
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.answer(response).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .headers(self.headers.clone())
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.answer(response).await
    }

    /// Signs in with `token` through the form; the answer of the post.
    pub async fn sign_in(&mut self, token: &str) -> Answer {
        let page = self.get("/console/sign-in").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = csrf(&page.body);
        self.post("/console/sign-in", &[("csrf", &csrf), ("token", token)]).await
    }
}

/// The synchronizer token of the first form of a page.
pub fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page has a form with a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Records one observation per region of `regions` and evaluates the domain.
pub async fn observe(app: &TestApp, domain: &str, regions: &[&str], ok: bool) {
    let domain: Uuid = domain.parse().unwrap();
    for region in regions {
        let batch = crate::helpers::observed(region, domain, ok, Utc::now());
        app.consensus.record(&batch).await.unwrap();
    }
    app.consensus.evaluate(domain, Utc::now()).await.unwrap();
}

async fn open_incident(pool: &PgPool, domain: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM incidents WHERE domain_id = $1 AND state <> 'resolved'")
        .bind(domain.parse::<Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn incident_state(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM incidents WHERE id = $1").bind(id).fetch_one(pool).await.unwrap()
}

fn has_write_controls(html: &str) -> bool {
    html.contains("class=\"inline write\"") || html.contains("class=\"card write\"")
}

#[sqlx::test]
async fn sign_in_opens_a_strict_session_and_sign_out_ends_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut client = Client::new(&app);
    let answer = client.get("/console/domains").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location.as_deref(), Some("/console/sign-in"));

    let signed = client.sign_in(&app.token).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    assert_eq!(signed.location.as_deref(), Some("/console/domains"));
    let session = client.set_cookies.iter().find(|c| c.starts_with("cc_session=")).expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=43200"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP from an untrusted peer: {session}");
    let id = client.cookies["cc_session"].clone();
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT id_hash FROM console_sessions").fetch_all(&app.pool).await.unwrap();
    use sha2::Digest;
    assert_eq!(stored, vec![sha2::Sha256::digest(id.as_bytes()).to_vec()], "only the id's hash is stored");

    let page = client.get("/console/domains").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.headers["cache-control"], "no-store");
    // Signing in again while signed in goes to the console.
    let again = client.get("/console/sign-in").await;
    assert_eq!(again.location.as_deref(), Some("/console/domains"));

    // Sign-out needs the session's token too.
    let refused = client.post("/console/sign-out", &[("csrf", "wrong")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let csrf = csrf(&page.body);
    let out = client.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.location.as_deref(), Some("/console/sign-in"));
    assert!(!client.cookies.contains_key("cc_session"));
    // The old cookie opens nothing.
    client.cookies.insert("cc_session".into(), id);
    assert_eq!(client.get("/console/domains").await.location.as_deref(), Some("/console/sign-in"));
    app.stop().await;
}

#[sqlx::test]
async fn sign_in_refuses_bad_tokens_and_forged_forms(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut client = Client::new(&app);
    let invalid = client.sign_in("cc_not-a-real-token").await;
    assert_eq!(invalid.status, StatusCode::UNAUTHORIZED);
    assert!(invalid.body.contains("this token is not valid"), "{}", invalid.body);
    assert!(!client.cookies.contains_key("cc_session"));
    // A form posted without the sign-in cookie (from another site): refused before the token
    // is looked at.
    let mut forger = Client::new(&app);
    let page = forger.get("/console/sign-in").await;
    let csrf = csrf(&page.body);
    forger.cookies.clear();
    let forged = forger.post("/console/sign-in", &[("csrf", &csrf), ("token", &app.token)]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    assert!(!forger.cookies.contains_key("cc_session"));
    // A revoked token cannot sign in, and revoking one ends its sessions.
    let issued = tenants::create_token(&app.pool, tenant_of(&app).await, "ops", Role::Admin).await.unwrap();
    let mut user = Client::new(&app);
    assert_eq!(user.sign_in(&issued.token).await.status, StatusCode::SEE_OTHER);
    assert_eq!(user.get("/console/domains").await.status, StatusCode::OK);
    tenants::revoke_token(&app.pool, issued.tenant_id, issued.id).await.unwrap();
    assert_eq!(user.get("/console/domains").await.location.as_deref(), Some("/console/sign-in"));
    assert_eq!(Client::new(&app).sign_in(&issued.token).await.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn tenant_of(app: &TestApp) -> Uuid {
    tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap().tenant_id
}

#[sqlx::test]
async fn sessions_expire_when_idle_or_old(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut client = Client::new(&app);
    client.sign_in(&app.token).await;
    assert_eq!(client.get("/console/domains").await.status, StatusCode::OK);
    sqlx::query("UPDATE console_sessions SET last_seen_at = now() - interval '2 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(client.get("/console/domains").await.location.as_deref(), Some("/console/sign-in"), "idle");
    client.sign_in(&app.token).await;
    assert_eq!(client.get("/console/domains").await.status, StatusCode::OK);
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(client.get("/console/domains").await.location.as_deref(), Some("/console/sign-in"), "expired");
    // A new sign-in clears expired sessions away.
    client.sign_in(&app.token).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions WHERE expires_at < now()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    app.stop().await;
}

#[sqlx::test]
async fn sign_in_attempts_are_limited_per_client_address(pool: PgPool) {
    let prefix = shared::testing::random_prefix("console");
    let config = control_plane::Config {
        console_sign_in_per_minute: 1,
        console_sign_in_burst: 3,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..test_config(&prefix, "redis://127.0.0.1:6379")
    };
    let app = TestApp::spawn_with(pool, config).await;
    let mut client = Client::new(&app);
    client.headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    for _ in 0..3 {
        assert_eq!(client.sign_in("cc_wrong").await.status, StatusCode::UNAUTHORIZED);
    }
    let limited = client.sign_in(&app.token).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.body);
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(limited.body.contains("too many sign-in attempts"));
    assert!(!client.cookies.contains_key("cc_session"), "no session while limited, even with a good token");
    // Another client address (as the trusted proxy reports it) has its own allowance.
    let mut other = Client::new(&app);
    other.headers.insert("x-forwarded-for", "203.0.113.10".parse().unwrap());
    other.headers.insert("x-forwarded-proto", "https".parse().unwrap());
    let signed = other.sign_in(&app.token).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    let cookie = other.set_cookies.iter().find(|c| c.starts_with("cc_session=")).unwrap();
    assert!(cookie.ends_with("; Secure"), "HTTPS at a trusted proxy: {cookie}");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("control_plane_console_sign_ins_total{outcome=\"rate_limited\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("control_plane_console_sign_ins_total{outcome=\"invalid_token\"} 3"),
        "{metrics}"
    );
    app.stop().await;
}

#[sqlx::test]
async fn writes_need_the_session_token_and_an_admin(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool).await;
    let domain =
        app.create_domain(json!({"url": "http://192.0.2.10/", "interval": 10, "regions": ["ams"]})).await;
    observe(&app, &domain, &["ams"], false).await;
    let incident = open_incident(&app.pool, &domain).await;

    let mut admin = Client::new(&app);
    admin.sign_in(&app.token).await;
    let page = admin.get(&format!("/console/incidents/{incident}")).await;
    assert!(has_write_controls(&page.body), "{}", page.body);
    let ack = format!("/console/incidents/{incident}/ack");
    let missing = admin.post(&ack, &[("note", "on it")]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let wrong = admin.post(&ack, &[("csrf", "x"), ("note", "on it")]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(incident_state(&app.pool, incident).await, "open", "refused writes change nothing");

    // A read-only session sees the same pages without a write control, and its writes are
    // refused even with a valid token.
    let tenant = tenant_of(&app).await;
    let viewer_token =
        tenants::create_token(&app.pool, tenant, "viewer", Role::ReadOnly).await.unwrap().token;
    let mut viewer = Client::new(&app);
    viewer.sign_in(&viewer_token).await;
    for path in [
        "/console/domains".to_owned(),
        format!("/console/domains/{domain}"),
        "/console/incidents".to_owned(),
        format!("/console/incidents/{incident}"),
        "/console/channels".to_owned(),
        "/console/digests".to_owned(),
    ] {
        let page = viewer.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(!has_write_controls(&page.body), "{path} shows a write control to a read-only token");
        assert!(page.body.contains("Read-only token"), "{path}");
    }
    let token = csrf(&viewer.get("/console/domains").await.body);
    let refused = viewer.post(&ack, &[("csrf", &token)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("read-only"), "{}", refused.body);
    let refused = viewer.post(&format!("/console/domains/{domain}/pause"), &[("csrf", &token)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(incident_state(&app.pool, incident).await, "open");

    // The admin's acknowledgement with the session's token goes through the API's handler.
    let token = csrf(&page.body);
    let done = admin.post(&ack, &[("csrf", &token), ("note", "<b>on it</b>")]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(incident_state(&app.pool, incident).await, "acknowledged");
    let page = admin.get(&format!("/console/incidents/{incident}")).await;
    assert!(page.body.contains("Acknowledged: &#60;b&#62;on it&#60;/b&#62;"), "{}", page.body);
    let again = admin.post(&ack, &[("csrf", &token)]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "the API's rule: {}", again.body);
    // Pause and resume.
    let paused = admin.post(&format!("/console/domains/{domain}/pause"), &[("csrf", &token)]).await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER);
    let page = admin.get(&format!("/console/domains/{domain}")).await;
    assert!(page.body.contains("Paused") && page.body.contains("Resume monitoring"), "{}", page.body);
    app.stop().await;
}

#[sqlx::test]
async fn the_public_demo_shows_one_tenant_read_only(pool: PgPool) {
    control_plane::startup::migrate(&pool).await.unwrap();
    let demo = tenants::create_tenant(&pool, "demo").await.unwrap();
    let prefix = shared::testing::random_prefix("console");
    let config = control_plane::Config {
        public_demo: Some(demo.tenant_id),
        allow_private_targets: true,
        ..test_config(&prefix, "redis://127.0.0.1:6379")
    };
    let app = TestApp::spawn_with(pool, config).await;
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(app.url("/v1/domains"))
        .bearer_auth(&demo.token)
        .json(&json!({"url": "http://192.0.2.20/", "name": "Demo shop", "interval": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let domain = created["id"].as_str().unwrap().to_owned();
    // The test app's own tenant has a domain the demo must not show.
    app.create_domain(json!({"url": "http://192.0.2.21/", "name": "Private thing"})).await;

    let mut visitor = Client::new(&app);
    let page = visitor.get("/console/domains").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("class=\"demo-banner\""), "{}", page.body);
    assert!(page.body.contains("Demo shop"));
    assert!(!page.body.contains("Private thing"), "only the demo tenant");
    assert!(!page.body.contains("method=\"post\""), "no form at all in the demo");
    let page = visitor.get(&format!("/console/domains/{domain}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!has_write_controls(&page.body));
    for (path, form) in [
        (format!("/console/domains/{domain}/pause"), vec![("csrf", "")]),
        (format!("/console/domains/{domain}/pause"), vec![]),
        (format!("/console/incidents/{}/ack", Uuid::now_v7()), vec![]),
    ] {
        let refused = visitor.post(&path, &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(refused.body.contains("read-only demo"), "{}", refused.body);
    }
    let paused: bool = sqlx::query_scalar("SELECT paused FROM domains WHERE id = $1")
        .bind(domain.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!paused);
    // Signing in still shows one's own tenant, with write controls.
    let mut operator = Client::new(&app);
    operator.sign_in(&app.token).await;
    let page = operator.get("/console/domains").await;
    assert!(page.body.contains("Private thing") && !page.body.contains("Demo shop"));
    assert!(!page.body.contains("class=\"demo-banner\""));
    app.stop().await;
}

#[sqlx::test]
async fn every_page_renders_known_data_and_other_tenants_are_not_found(pool: PgPool) {
    let prefix = shared::testing::random_prefix("console");
    // No dispatcher: the test notification stays in the outbox as the test leaves it.
    let config = control_plane::Config {
        notify_dispatch: false,
        ..crate::helpers::agents_config(&prefix, "redis://127.0.0.1:6379")
    };
    let app = TestApp::spawn_with(pool, config).await;
    let evil = "<script>alert(1)</script>";
    let down = app
        .create_domain(json!({"url": "http://192.0.2.30/", "name": evil, "interval": 10, "regions": ["ams", "iad", "sin"]}))
        .await;
    let up = app.create_domain(json!({"url": "http://192.0.2.31/health", "interval": 10})).await;
    observe(&app, &up, &["ams", "iad", "sin"], true).await;
    observe(&app, &down, &["ams", "iad"], false).await;
    let incident = open_incident(&app.pool, &down).await;
    let channel: serde_json::Value = app
        .post(
            "/v1/channels",
            &app.token,
            &json!({"name": evil, "kind": "webhook", "url": "https://hooks.example.com/x"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let channel = channel["id"].as_str().unwrap().to_owned();

    let mut client = Client::new(&app);
    client.sign_in(&app.token).await;
    let list = client.get("/console/domains").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains(evil), "{}", list.body);
    assert!(list.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(list.body.contains("2 domains"), "{}", list.body);
    // Worst first: the down domain's row comes before the up one's.
    let (at_down, at_up) = (list.body.find(&down).unwrap(), list.body.find(&up).unwrap());
    assert!(at_down < at_up);
    assert!(
        list.body.contains("<span class=\"label\">Down</span>")
            && list.body.contains("<span class=\"label\">Up</span>")
    );
    let filtered = client.get("/console/domains?state=down").await;
    assert!(filtered.body.contains(&down) && !filtered.body.contains(&up), "{}", filtered.body);
    let searched = client.get("/console/domains?q=HEALTH").await;
    assert!(searched.body.contains(&up) && !searched.body.contains(&down));
    assert!(searched.body.contains("1 of 2 domains match"));
    assert_eq!(client.get("/console/domains?state=purple").await.status, StatusCode::BAD_REQUEST);

    let page = client.get(&format!("/console/domains/{down}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains(evil));
    assert!(page.body.contains("2 of 3 regions fail (quorum 2)"), "{}", page.body);
    assert!(page.body.contains("data-region=\"ams\"") && page.body.contains("<svg viewBox="));
    assert!(page.body.contains(&format!("/console/incidents/{incident}")));

    let incidents = client.get("/console/incidents").await;
    assert!(incidents.body.contains(&incident.to_string()) && !incidents.body.contains(evil));
    let detail = client.get(&format!("/console/incidents/{incident}")).await;
    assert!(detail.body.contains("opened") && detail.body.contains("ams"), "{}", detail.body);
    let channels = client.get("/console/channels").await;
    assert!(
        channels.body.contains(&format!("/console/channels/{channel}/test")) && !channels.body.contains(evil)
    );
    let token = csrf(&channels.body);
    let tested = client.post(&format!("/console/channels/{channel}/test"), &[("csrf", &token)]).await;
    assert_eq!(tested.location.as_deref(), Some("/console/channels?tested=1"));
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE kind = 'test' AND channel_id = $1")
            .bind(channel.parse::<Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(queued, 1);
    // A dead letter is listed with its retry.
    sqlx::query("UPDATE notifications SET state = 'dead', last_error = 'refused' WHERE channel_id = $1")
        .bind(channel.parse::<Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let channels = client.get("/console/channels").await;
    assert!(channels.body.contains("/retry") && channels.body.contains("refused"), "{}", channels.body);
    assert_eq!(client.get("/console/digests").await.status, StatusCode::OK);

    // Another tenant's ids are not found, however they are reached.
    let mut stranger = Client::new(&app);
    stranger.sign_in(&app.other_tenant().await).await;
    for path in [format!("/console/domains/{down}"), format!("/console/incidents/{incident}")] {
        assert_eq!(stranger.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let token = csrf(&stranger.get("/console/domains").await.body);
    let ack = stranger.post(&format!("/console/incidents/{incident}/ack"), &[("csrf", &token)]).await;
    assert_eq!(ack.status, StatusCode::NOT_FOUND);
    assert_eq!(incident_state(&app.pool, incident).await, "open");
    app.stop().await;
}

#[sqlx::test]
async fn the_console_stream_needs_a_session_and_stays_in_its_tenant(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool).await;
    let domain =
        app.create_domain(json!({"url": "http://192.0.2.50/", "interval": 10, "regions": ["ams"]})).await;
    let mut anonymous = Client::new(&app);
    assert_eq!(anonymous.get("/console/events").await.location.as_deref(), Some("/console/sign-in"));
    let mut stranger = Client::new(&app);
    stranger.sign_in(&app.other_tenant().await).await;
    let refused = stranger.get(&format!("/console/events?domain={domain}")).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);

    // The owner's stream carries the domain's state change as it commits.
    let mut owner = Client::new(&app);
    owner.sign_in(&app.token).await;
    let page = owner.get(&format!("/console/domains/{domain}")).await;
    let at = page.body.find("data-live-url=\"").unwrap() + 15;
    let url = page.body[at..].split('"').next().unwrap().replace("&#38;", "&");
    assert!(url.starts_with(&format!("/console/events?domain={domain}&after=")), "{url}");
    let cookie = format!("cc_session={}", owner.cookies["cc_session"]);
    let mut stream = crate::helpers::SseClient::open(&app, &url, &[("cookie", &cookie)]).await;
    assert!(stream.response_is_event_stream());
    observe(&app, &domain, &["ams"], false).await;
    let state = stream.next_named("state", crate::helpers::WAIT).await.expect("the state event").json();
    assert_eq!(state["domain"], json!(domain));
    assert_eq!(state["state"], "down");
    app.stop().await;
}

#[sqlx::test]
async fn status_pages_are_edited_through_the_api_and_updates_posted(pool: PgPool) {
    let app = TestApp::spawn_with_agents(pool).await;
    let shop =
        app.create_domain(json!({"url": "http://192.0.2.60/", "name": "Shop", "regions": ["ams"]})).await;
    let api =
        app.create_domain(json!({"url": "http://192.0.2.61/", "name": "API", "regions": ["ams"]})).await;
    let mut admin = Client::new(&app);
    admin.sign_in(&app.token).await;
    let form = admin.get("/console/status-pages/new").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains(&format!("name=\"name-{shop}\" value=\"Shop\"")), "{}", form.body);
    let token = csrf(&form.body);
    let (name_shop, name_api) = (format!("name-{shop}"), format!("name-{api}"));
    let group_shop = format!("group-{shop}");
    let created = admin
        .post(
            "/console/status-pages",
            &[
                ("csrf", &token),
                ("title", "Acme <status>"),
                ("slug", "acme"),
                ("description", ""),
                ("hostnames", "status.acme.test\n"),
                ("include", &shop),
                (&name_shop, "Web shop"),
                (&group_shop, "Front"),
                (&name_api, "Public API"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let page_url = created.location.clone().unwrap();
    let stored: serde_json::Value = app.get("/v1/status-pages", &app.token).await.json().await.unwrap();
    let page = &stored["items"][0];
    assert_eq!(page["slug"], "acme");
    assert_eq!(page["hostnames"], json!(["status.acme.test"]));
    assert_eq!(page["components"].as_array().unwrap().len(), 1, "only the included domain: {page}");
    assert_eq!(page["components"][0]["name"], "Web shop");
    assert_eq!(page["components"][0]["group"], "Front");
    // A reveal set through the API survives an edit in the console.
    let id = page["id"].as_str().unwrap();
    let patched = app
        .patch(
            &format!("/v1/status-pages/{id}"),
            &app.token,
            &json!({"components": [{"domain": shop, "name": "Web shop", "reveal": ["url"]}]}),
        )
        .await;
    assert!(patched.status().is_success());
    let edit = admin.get(&page_url).await;
    assert!(edit.body.contains("Acme &#60;status&#62;"), "{}", edit.body);
    let updated = admin
        .post(
            &page_url,
            &[
                ("csrf", &token),
                ("title", "Acme"),
                ("slug", "acme"),
                ("hostnames", ""),
                ("include", &shop),
                (&name_shop, "Web shop"),
                ("include", &api),
                (&name_api, "Public API"),
            ],
        )
        .await;
    assert_eq!(updated.status, StatusCode::SEE_OTHER, "{}", updated.body);
    let page: serde_json::Value =
        app.get(&format!("/v1/status-pages/{id}"), &app.token).await.json().await.unwrap();
    assert_eq!(page["title"], "Acme");
    assert_eq!(page["components"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["components"][0]["reveal"], json!(["url"]), "{page}");
    // The API's validation, said on the page.
    let bad = admin.post(&page_url, &[("csrf", &token), ("title", "Acme"), ("slug", "Not A Slug")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body.contains("slug"), "{}", bad.body);

    // A read-only session sees the page's settings without a form, and cannot post one.
    let tenant = tenant_of(&app).await;
    let viewer_token =
        tenants::create_token(&app.pool, tenant, "viewer", Role::ReadOnly).await.unwrap().token;
    let mut viewer = Client::new(&app);
    viewer.sign_in(&viewer_token).await;
    let list = viewer.get("/console/status-pages").await;
    assert!(list.body.contains("href=\"/status/acme\"") && !has_write_controls(&list.body), "{}", list.body);
    assert!(!list.body.contains("/console/status-pages/new"));
    let view = viewer.get(&page_url).await;
    assert!(
        view.body.contains("Public API")
            && !view.body.contains("<form method=\"post\" action=\"/console/status-pages")
    );
    assert_eq!(viewer.get("/console/status-pages/new").await.status, StatusCode::FORBIDDEN);
    let token_ro = csrf(&view.body);
    let refused = viewer.post(&format!("{page_url}/delete"), &[("csrf", &token_ro)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // An incident's update, posted from the console, is the API's.
    observe(&app, &shop, &["ams"], false).await;
    let incident = open_incident(&app.pool, &shop).await;
    let page = admin.get(&format!("/console/incidents/{incident}")).await;
    assert!(page.body.contains("id=\"update-form\""));
    let posted = admin
        .post(
            &format!("/console/incidents/{incident}/updates"),
            &[("csrf", &token), ("status", "identified"), ("message", "A bad <deploy>")],
        )
        .await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.body);
    let page = admin.get(&format!("/console/incidents/{incident}")).await;
    assert!(
        page.body.contains("A bad &#60;deploy&#62;") && page.body.contains("identified"),
        "{}",
        page.body
    );
    let public = reqwest::get(app.url("/status/acme")).await.unwrap().text().await.unwrap();
    assert!(public.contains("A bad &#60;deploy&#62;"), "{public}");
    // Deleting the page.
    let deleted = admin.post(&format!("{page_url}/delete"), &[("csrf", &token)]).await;
    assert_eq!(deleted.location.as_deref(), Some("/console/status-pages"));
    assert_eq!(reqwest::get(app.url("/status/acme")).await.unwrap().status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
