//! Screenshots of the pages for the README (`./demo.sh --screenshots docs/screenshots`): taken
//! at the end of the demo's walkthrough, when the pages show real results, incidents and
//! digests, by headless Chromium (Debian's `chromium`) driven through `chromedriver` on a free
//! port.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use fantoccini::Locator;
use serde_json::Value;

/// Chromium through its driver; both stop when this is dropped.
struct Browser {
    chromium: shared::browser::Chromium,
}

impl Browser {
    async fn start() -> anyhow::Result<Self> {
        let args = ["--hide-scrollbars", "--force-color-profile=srgb", "--force-prefers-reduced-motion"];
        Ok(Self { chromium: shared::browser::Chromium::start(&args, Duration::from_secs(30)).await? })
    }

    /// Opens `url` in a `width`×`height` window and saves the page as `dir/name.png`.
    async fn shot(&self, dir: &Path, name: &str, url: &str, width: u32, height: u32) -> anyhow::Result<()> {
        self.chromium.client.set_window_size(width, height).await?;
        self.chromium.client.goto(url).await?;
        self.chromium
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("main"))
            .await?;
        // Let the live stream connect, so the footer shows it.
        let _ = self
            .chromium
            .client
            .wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::Css("#live-status[data-state=open]"))
            .await;
        let png = self.chromium.client.screenshot().await?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        println!("   {}", path.display());
        Ok(())
    }
}

/// The id of the tenant's domain named `name`.
async fn domain_named(http: &reqwest::Client, api: &str, token: &str, name: &str) -> anyhow::Result<String> {
    let list: Value =
        http.get(format!("{api}/v1/domains?limit=500")).bearer_auth(token).send().await?.json().await?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == name)
        .and_then(|d| d["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no domain named {name}"))
}

/// Takes the README's screenshots of the control plane at `api`, signed in with `token`, and of
/// the public status page at `status_page`.
pub async fn take(dir: &Path, api: &str, token: &str, status_page: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let http = reqwest::Client::new();
    let browser = Browser::start().await?;
    let result = async {
        browser.shot(dir, "status-page", status_page, 1100, 1400).await?;
        browser.shot(dir, "console-sign-in", &format!("{api}/console/sign-in"), 1100, 640).await?;
        browser.chromium.client.find(Locator::Css("#token")).await?.send_keys(token).await?;
        browser.chromium.client.find(Locator::Css("#sign-in button[type=submit]")).await?.click().await?;
        browser.chromium.client.wait().for_element(Locator::Css("header nav")).await?;
        browser.shot(dir, "console-domains", &format!("{api}/console/domains"), 1280, 820).await?;
        let search = domain_named(&http, api, token, "Search API").await?;
        let checkout = domain_named(&http, api, token, "Checkout").await?;
        browser.shot(dir, "console-domain", &format!("{api}/console/domains/{search}"), 1280, 1900).await?;
        browser
            .shot(dir, "console-incidents", &format!("{api}/console/incidents?state=all"), 1280, 760)
            .await?;
        let open: Value = http
            .get(format!("{api}/v1/incidents?state=open&limit=50"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        let updated =
            open["items"].as_array().into_iter().flatten().find(|i| i["domain_id"] == checkout.as_str());
        if let Some(incident) = updated.and_then(|i| i["id"].as_str()) {
            browser
                .shot(dir, "console-incident", &format!("{api}/console/incidents/{incident}"), 1280, 1100)
                .await?;
        }
        browser.shot(dir, "console-phone", &format!("{api}/console/domains"), 390, 844).await?;
        anyhow::Ok(())
    }
    .await;
    let _ = browser.chromium.client.clone().close().await;
    result
}
