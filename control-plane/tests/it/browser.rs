//! The console and the status pages in a real browser: Debian's headless Chromium driven
//! through `chromedriver` (WebDriver, fantoccini). Each test starts its own chromedriver on a
//! free port. The binaries are found on the `PATH` or at Debian's paths, or the test fails
//! saying how to install them (`.ci/run` does); it never skips.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;

use crate::helpers::WAIT;

/// How long a page may take to show what a test waits for.
pub const PAGE_WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium session (see [`shared::browser::Chromium`]), stopped on drop.
pub struct Browser {
    chromium: shared::browser::Chromium,
}

impl std::ops::Deref for Browser {
    type Target = shared::browser::Chromium;
    fn deref(&self) -> &Self::Target {
        &self.chromium
    }
}

impl Browser {
    /// Starts Chromium, or fails the test saying what is missing and how to install it.
    pub async fn start() -> Self {
        let args = ["--window-size=1280,1000", "--disable-extensions"];
        match shared::browser::Chromium::start(&args, WAIT).await {
            Ok(chromium) => Self { chromium },
            Err(error) => panic!("{}", shared::error::Chain(&*error)),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The text of the first element matching `css`, once there is one.
    pub async fn text(&self, css: &str) -> String {
        let element = self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"));
        element.text().await.unwrap()
    }

    /// Waits until the first element matching `css` has a text that `check` accepts; its text.
    pub async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if check(&text) {
                return text;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {css} still reads {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    pub async fn click(&self, css: &str) {
        let element = self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} to click: {e}"));
        element.click().await.unwrap();
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let element =
            self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no field {css}: {e}"));
        element.clear().await.unwrap();
        element.send_keys(text).await.unwrap();
    }

    /// Whether the page ran `alert` (a script injected through data would).
    pub async fn alerted(&self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }

    /// Signs in at `base` with `token` through the form.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/console/sign-in")).await;
        self.fill("#token", token).await;
        self.click("#sign-in button[type=submit]").await;
        self.text("header nav").await;
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Sign in; a domain named like a script shows as text and runs nothing; acknowledge its
/// incident by clicking; a read-only session shows no write control.
#[sqlx::test]
async fn sign_in_acknowledge_and_read_only_in_a_browser(pool: sqlx::PgPool) {
    use control_plane::tenants::{self, Role};
    let app = crate::helpers::TestApp::spawn_with_agents(pool).await;
    let evil = "<script>alert(1)</script>";
    let domain = app
        .create_domain(json!({"url": "http://192.0.2.40/", "name": evil, "interval": 10, "regions": ["ams"]}))
        .await;
    crate::console::observe(&app, &domain, &["ams"], false).await;
    let base = app.url("");
    let browser = Browser::start().await;

    browser.sign_in(&base, &app.token).await;
    let name = browser.text(&format!("tr[data-domain=\"{domain}\"] a.name")).await;
    assert_eq!(name, evil, "the name is shown as text");
    assert!(!browser.alerted().await, "the name ran as a script");
    let state = browser.text(&format!("tr[data-domain=\"{domain}\"] [data-field=state]")).await;
    assert!(state.contains("Down"), "{state}");

    browser.click("nav a[href=\"/console/incidents\"]").await;
    browser.click("form.write button[type=submit]").await;
    browser.wait_text("[data-field=incident-state]", "acknowledged", |t| t.contains("Acknowledged")).await;
    let state: String = sqlx::query_scalar("SELECT state FROM incidents WHERE domain_id = $1")
        .bind(domain.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "acknowledged");

    // Sign out, then in with a read-only token: the same pages, no write control.
    browser.click("form[action=\"/console/sign-out\"] button").await;
    browser.text("#sign-in").await;
    let tenant = tenants::authenticate(&app.pool, &app.token).await.unwrap().unwrap().tenant_id;
    let viewer = tenants::create_token(&app.pool, tenant, "viewer", Role::ReadOnly).await.unwrap();
    browser.sign_in(&base, &viewer.token).await;
    for path in [
        "/console/domains".to_owned(),
        format!("/console/domains/{domain}"),
        "/console/incidents".to_owned(),
        "/console/channels".to_owned(),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        browser.text("header nav").await;
        assert_eq!(browser.count("form.write, .write button").await, 0, "{path} shows a write control");
        assert!(browser.text(".who").await.contains("Read-only"), "{path}");
    }
    browser.close().await;
    app.stop().await;
}

/// A local HTTP target answering 200 until stopped (then connections are refused).
async fn stoppable_target() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "ok" });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// A real agent probes a local target every second; the target stops, and the domain turns
/// red in the console and on its public status page, neither reloaded. An update posted from
/// the console then shows on the public page, live.
#[sqlx::test]
async fn a_domain_turns_red_live_and_an_update_reaches_the_status_page(pool: sqlx::PgPool) {
    let pki = crate::ingest::Pki::new();
    let mut config =
        crate::helpers::agents_config(&shared::testing::random_prefix("live"), "redis://127.0.0.1:6379");
    pki.configure(&mut config);
    let app = crate::helpers::TestApp::spawn_with(pool, config).await;
    let (target, server) = stoppable_target().await;
    let domain = app
        .create_domain(
            json!({"url": format!("http://{target}/"), "name": "Shop", "interval": 1, "regions": ["ams"]}),
        )
        .await;
    let page = app
        .post(
            "/v1/status-pages",
            &app.token,
            &json!({"slug": "shop", "title": "Shop status", "components": [{"domain": domain, "name": "Web shop"}]}),
        )
        .await;
    assert_eq!(page.status(), reqwest::StatusCode::CREATED, "{}", page.text().await.unwrap());
    let ingest_port = app.ingest_addr.expect("ingest is on").port();
    let agent = crate::delivery::RunningAgent::start(&pki, "ams", app.prefix(), ingest_port).await;
    let base = app.url("");
    let browser = Browser::start().await;

    // The public page in one window, the console in another; a mark on each that a reload
    // would lose.
    let mark = "window.crosscheckMark = 42; return true;";
    browser.goto(&format!("{base}/status/shop")).await;
    let public = browser.client.window().await.unwrap();
    browser
        .wait_text("li.component .state", "the component operational", |t| t.contains("Operational"))
        .await;
    browser.client.execute(mark, vec![]).await.unwrap();
    let console = browser.client.new_window(true).await.unwrap().handle;
    browser.client.switch_to_window(console.clone()).await.unwrap();
    browser.sign_in(&base, &app.token).await;
    let row = format!("tr[data-domain=\"{domain}\"]");
    browser.text(&row).await;
    browser.client.execute(mark, vec![]).await.unwrap();
    browser.wait_text("#live-status", "the live stream", |t| t.contains("Live")).await;
    browser.wait_text(&format!("{row} [data-field=state]"), "the domain up", |t| t.contains("Up")).await;

    server.abort();
    let _ = server.await;
    browser.wait_text(&format!("{row} [data-field=state]"), "the domain down", |t| t.contains("Down")).await;
    assert_eq!(
        browser.count(&format!("{row} .region.r-failing")).await,
        1,
        "the region's latest result failing"
    );
    let marked = "return window.crosscheckMark || null;";
    assert_eq!(browser.client.execute(marked, vec![]).await.unwrap(), json!(42), "the console was reloaded");
    browser.client.switch_to_window(public.clone()).await.unwrap();
    browser
        .wait_text("li.component .state", "the component down", |t| t.to_lowercase().contains("outage"))
        .await;
    assert_eq!(
        browser.client.execute(marked, vec![]).await.unwrap(),
        json!(42),
        "the status page was reloaded"
    );

    // An update from the console's incident page reaches the public page.
    browser.client.switch_to_window(console).await.unwrap();
    browser.click("nav a[href=\"/console/incidents\"]").await;
    browser.click(&format!("{} a", "tr[data-incident]")).await;
    let message = "We are looking into <b>checkout</b> errors";
    browser.fill("#update-message", message).await;
    browser.click("#update-form button[type=submit]").await;
    browser.wait_text("#updates li p", "the update in the console", |t| t == message).await;
    browser.client.switch_to_window(public).await.unwrap();
    browser
        .wait_text("#active-incidents .update .message", "the update on the public page", |t| t == message)
        .await;
    assert_eq!(
        browser.client.execute(marked, vec![]).await.unwrap(),
        json!(42),
        "the status page was reloaded"
    );
    assert!(!browser.alerted().await);
    browser.close().await;
    agent.stop().await;
    app.stop().await;
}
