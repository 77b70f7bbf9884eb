//! Delivering one notification to one channel: webhook (signed JSON), Slack (incoming-webhook
//! text), email (SMTP, multipart text + HTML), and the providers whose payloads
//! [`super::providers`] builds: PagerDuty Events API v2, Microsoft Teams, Discord, Telegram and
//! ntfy.
//!
//! **Answers.** 2xx is delivered. 429 is retried no sooner than its `Retry-After` (seconds or an
//! HTTP date; Telegram's and Discord's `retry_after` in the body when the header is missing),
//! 408 and 5xx after the usual backoff. For the provider channels any other answer (a 4xx: a
//! revoked routing key, a deleted webhook, a bad chat id) is permanent and the notification
//! dead at once; a generic webhook or Slack receiver is retried on every failure, as before.
//!
//! HTTP deliveries go through a reqwest client whose DNS resolver passes every resolved address
//! through the SSRF [`TargetPolicy`] and hands reqwest only the allowed ones, so the connection
//! is made to an address that was checked; a literal IP host is checked before sending. The
//! client follows no redirects and uses no proxy.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;
use sha2::Sha256;
use shared::netguard::TargetPolicy;
use url::{Host, Url};
use uuid::Uuid;

use super::{providers, Notification};
use crate::config::{Config, StartTls};

/// Bytes of a failed answer's body kept in `last_error`.
const ERROR_BODY_BYTES: usize = 200;

/// Header carrying the notification id (also in the body): receivers deduplicate by it.
pub const HEADER_ID: &str = "x-crosscheck-id";
/// Header carrying the signing time, unix seconds.
pub const HEADER_TIMESTAMP: &str = "x-crosscheck-timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const HEADER_SIGNATURE: &str = "x-crosscheck-signature";

/// The signature of a webhook body: hex HMAC-SHA256 keyed with the channel secret (its text as
/// shown at creation) over `"<timestamp>.<body>"`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Why a delivery attempt failed: a short reason for metrics and the message stored as
/// `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    pub reason: &'static str,
    pub message: String,
    /// Retrying cannot help (a provider refused the request): the notification is dead now.
    pub permanent: bool,
    /// The receiver asked to wait this long before the next attempt (429 `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), permanent: false, retry_after: None }
    }
}

/// How a receiver's failed answers are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    /// A generic receiver (webhook, Slack): every failure is retried.
    Lenient,
    /// A provider API: a 4xx other than 408 and 429 is permanent.
    Provider,
}

/// Whether a failed status is permanent under `answers`.
fn permanent(status: reqwest::StatusCode, answers: Answers) -> bool {
    answers == Answers::Provider
        && !status.is_server_error()
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
}

/// The wait a 429 asks for: the `Retry-After` header (delay-seconds, fractional as Discord
/// sends, or an HTTP date), else a `retry_after` number in the JSON body (Discord at its top
/// level, Telegram under `parameters`). At most an hour.
pub fn retry_after(
    header: Option<&str>,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    const MAX: Duration = Duration::from_secs(3600);
    let from_header = header.map(str::trim).and_then(|h| match h.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Some(Duration::from_secs_f64(seconds.min(3600.0)))
        }
        Ok(_) => None,
        Err(_) => chrono::DateTime::parse_from_rfc2822(h)
            .ok()
            .map(|at| (at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or_default()),
    });
    let from_body = || {
        let body: Value = serde_json::from_slice(body).ok()?;
        let seconds = body
            .get("retry_after")
            .or_else(|| body.get("parameters").and_then(|p| p.get("retry_after")))
            .and_then(Value::as_f64)?;
        (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
    };
    from_header.or_else(from_body).map(|wait| wait.min(MAX))
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// One outbox row ready to go out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: Uuid,
    pub dedup_key: String,
    /// The channel's kind (`webhook`, `slack`, `email`, `pagerduty`, `teams`, `discord`,
    /// `telegram`, `ntfy`).
    pub kind: String,
    /// The channel's `config` column.
    pub config: Value,
    pub secret: Option<String>,
    /// The stored [`Notification`].
    pub payload: Value,
}

/// Resolves names for reqwest and keeps only the addresses the policy allows.
struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                resolved.iter().copied().filter(|a| policy.check(a.ip()).is_ok()).collect();
            if allowed.is_empty() {
                let why = resolved
                    .first()
                    .and_then(|a| policy.check(a.ip()).err())
                    .map_or("no address".to_owned(), |r| format!("a {r} address"));
                return Err(format!("{host} resolves to {why}, which notifications may not reach").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

type Smtp = AsyncSmtpTransport<Tokio1Executor>;

/// Sends notifications; one per dispatcher, cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    policy: Arc<TargetPolicy>,
    smtp: Option<(Smtp, Mailbox)>,
    timeout: Duration,
}

impl Deliverer {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let policy = Arc::new(TargetPolicy::allowing(config.notify_allow_private.clone()));
        let timeout = Duration::from_millis(config.notify_timeout_ms);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!("crosscheck-notify/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let smtp = match &config.smtp_host {
            None => None,
            Some(host) => {
                let tls = match config.smtp_starttls {
                    StartTls::Required => Tls::Required(TlsParameters::new(host.clone())?),
                    StartTls::Opportunistic => Tls::Opportunistic(TlsParameters::new(host.clone())?),
                    StartTls::Off => Tls::None,
                };
                let mut builder = Smtp::builder_dangerous(host.as_str())
                    .port(config.smtp_port)
                    .tls(tls)
                    .timeout(Some(timeout));
                if let Some(user) = &config.smtp_username {
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        config.smtp_password.clone().unwrap_or_default(),
                    ));
                }
                let from: Mailbox = config
                    .smtp_from
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("smtp_from is required with smtp_host"))?
                    .parse()?;
                let from = Mailbox::new(from.name.as_deref().map(header_text), from.email);
                Some((builder.build(), from))
            }
        };
        Ok(Self { http, policy, smtp, timeout })
    }

    /// One attempt, bounded by `notify_timeout_ms` as a whole.
    pub async fn deliver(&self, out: &Outgoing) -> Result<(), DeliveryError> {
        let attempt = async {
            match out.kind.as_str() {
                "webhook" => self.webhook(out, out.id, webhook_body(out)).await,
                "slack" => self.slack(out).await,
                "email" => self.email(out).await,
                "pagerduty" => {
                    let n = notification(out)?;
                    self.pagerduty(out, &n, &out.dedup_key, out.id).await
                }
                "teams" => {
                    self.provider_post(out, &providers::teams_message(&notification(out)?, out.id)).await
                }
                "discord" => {
                    self.provider_post(out, &providers::discord_message(&notification(out)?, out.id)).await
                }
                "telegram" => {
                    let n = notification(out)?;
                    let text = match digest_parts(&n) {
                        Some((text, _)) => text.to_owned(),
                        None => render_text(&n, out.id),
                    };
                    self.telegram(out, &text).await
                }
                "ntfy" => {
                    self.ntfy(out, providers::ntfy_message(&ntfy_topic(out)?, &notification(out)?, out.id))
                        .await
                }
                other => Err(DeliveryError::new("config", format!("unknown channel kind {other:?}"))),
            }
        };
        self.bounded(attempt).await
    }

    /// Sends a trigger, acknowledge or resolve event to the channel's Events API v2 endpoint.
    async fn pagerduty(
        &self,
        out: &Outgoing,
        n: &Notification,
        dedup_key: &str,
        id: Uuid,
    ) -> Result<(), DeliveryError> {
        let key = out
            .secret
            .as_deref()
            .ok_or_else(|| DeliveryError::new("config", "the channel has no routing key"))?;
        self.provider_post(out, &providers::pagerduty_event(n, key, dedup_key, id)).await
    }

    /// Posts `body` as JSON to the channel's URL, with a provider's answers.
    async fn provider_post(&self, out: &Outgoing, body: &Value) -> Result<(), DeliveryError> {
        let url = self.target_url(out)?;
        self.send(self.http.post(url).json(body), Answers::Provider).await
    }

    /// Bot API `sendMessage` at `<url>/bot<token>/sendMessage`. The token is in the path, so
    /// errors are recorded without the URL.
    async fn telegram(&self, out: &Outgoing, text: &str) -> Result<(), DeliveryError> {
        let base = self.target_url(out)?;
        let token = out
            .secret
            .as_deref()
            .ok_or_else(|| DeliveryError::new("config", "the channel has no bot token"))?;
        let chat_id = out.config.get("chat_id").cloned().unwrap_or(Value::Null);
        let url = format!("{}/bot{token}/sendMessage", base.as_str().trim_end_matches('/'));
        let url = Url::parse(&url).map_err(|_| DeliveryError::new("config", "invalid Telegram API URL"))?;
        self.send(self.http.post(url).json(&providers::telegram_message(&chat_id, text)), Answers::Provider)
            .await
            .map_err(|mut e| {
                e.message = e.message.replace(token, "<bot token>");
                e
            })
    }

    /// A JSON publish to the ntfy server's root, with the access token as a bearer token.
    async fn ntfy(&self, out: &Outgoing, body: Value) -> Result<(), DeliveryError> {
        let url = self.target_url(out)?;
        let mut request = self.http.post(url).json(&body);
        if let Some(token) = out.secret.as_deref() {
            request = request.bearer_auth(token);
        }
        self.send(request, Answers::Provider).await
    }

    /// One attempt to deliver a grouped message (see [`super::storm::Group`]) to its members'
    /// channel, bounded by `notify_timeout_ms`: a webhook gets the group document signed like
    /// any body, with the group's id in `X-Crosscheck-Id`; Slack and email the summary and the
    /// list.
    pub async fn deliver_group(&self, group: &super::storm::Group) -> Result<(), DeliveryError> {
        let Some(first) = group.members.first() else {
            return Ok(());
        };
        let channel = &first.out;
        let attempt = async {
            match channel.kind.as_str() {
                "webhook" => self.webhook(channel, group.id, group.webhook_body()).await,
                "slack" => {
                    let url = self.target_url(channel)?;
                    let text = group.text().replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                    self.post(self.http.post(url).json(&serde_json::json!({ "text": text }))).await
                }
                "email" => {
                    let subject = format!("[Crosscheck] {}", group.summary());
                    self.send_email(channel, subject, group.id, group.text(), group.html()).await
                }
                // PagerDuty groups alerts itself: each member's own event, in order (a retry
                // sends them again; PagerDuty deduplicates by dedup key).
                "pagerduty" => {
                    for member in &group.members {
                        let n = member.notification.as_ref().ok_or_else(|| {
                            DeliveryError::new("payload", "a stored notification of the group is unreadable")
                        })?;
                        self.pagerduty(&member.out, n, &member.out.dedup_key, member.out.id).await?;
                    }
                    Ok(())
                }
                "teams" => self.provider_post(channel, &providers::teams_group(group)).await,
                "discord" => self.provider_post(channel, &providers::discord_group(group)).await,
                "telegram" => self.telegram(channel, &group.text()).await,
                "ntfy" => self.ntfy(channel, providers::ntfy_group(&ntfy_topic(channel)?, group)).await,
                other => Err(DeliveryError::new("config", format!("unknown channel kind {other:?}"))),
            }
        };
        self.bounded(attempt).await
    }

    async fn bounded(
        &self,
        attempt: impl std::future::Future<Output = Result<(), DeliveryError>>,
    ) -> Result<(), DeliveryError> {
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::new("timeout", format!("no answer within {:?}", self.timeout))),
        }
    }

    fn target_url(&self, out: &Outgoing) -> Result<Url, DeliveryError> {
        let raw = out
            .config
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| DeliveryError::new("config", "the channel has no url"))?;
        let url = Url::parse(raw).map_err(|e| DeliveryError::new("config", format!("invalid url: {e}")))?;
        // The host rule again (a channel stored before it may break it), and literal addresses,
        // which reqwest does not resolve, checked here; `localhost` goes through the resolver.
        let host = crate::hosts::of_url(&url).map_err(|e| DeliveryError::new("config", e))?;
        let literal = host.address.filter(|_| !matches!(url.host(), Some(Host::Domain(_))));
        if let Some(ip) = literal {
            if let Err(range) = self.policy.check(ip) {
                return Err(DeliveryError::new(
                    "blocked",
                    format!("{ip} is a {range} address, which notifications may not reach"),
                ));
            }
        }
        Ok(url)
    }

    async fn post(&self, request: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
        self.send(request, Answers::Lenient).await
    }

    /// Sends `request`; a failed answer is classified by `answers` (see the module
    /// documentation).
    async fn send(&self, request: reqwest::RequestBuilder, answers: Answers) -> Result<(), DeliveryError> {
        let response = request.send().await.map_err(|e| {
            let e = e.without_url();
            let reason = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "http"
            };
            DeliveryError::new(reason, error_chain(&e))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The start of the answer helps the operator; the rest is not read.
        let header = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut response = response;
        let mut head = Vec::new();
        while head.len() < ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let wait = (status == reqwest::StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(header.as_deref(), &head, chrono::Utc::now()))
            .flatten();
        head.truncate(ERROR_BODY_BYTES);
        let snippet = String::from_utf8_lossy(&head);
        Err(DeliveryError {
            reason: "status",
            message: format!("answered {status}: {}", snippet.trim()),
            permanent: permanent(status, answers),
            retry_after: wait,
        })
    }

    /// Posts `body` signed with the channel's secret, `id` in `X-Crosscheck-Id`.
    async fn webhook(&self, out: &Outgoing, id: Uuid, body: Vec<u8>) -> Result<(), DeliveryError> {
        let url = self.target_url(out)?;
        let secret =
            out.secret.as_deref().ok_or_else(|| DeliveryError::new("config", "the webhook has no secret"))?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = format!("sha256={}", sign(secret, timestamp, &body));
        self.post(
            self.http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(HEADER_ID, id.to_string())
                .header(HEADER_TIMESTAMP, timestamp.to_string())
                .header(HEADER_SIGNATURE, signature)
                .body(body),
        )
        .await
    }

    async fn slack(&self, out: &Outgoing) -> Result<(), DeliveryError> {
        let url = self.target_url(out)?;
        let notification = notification(out)?;
        let text = slack_text(&notification, out.id);
        self.post(self.http.post(url).json(&serde_json::json!({ "text": text }))).await
    }

    async fn email(&self, out: &Outgoing) -> Result<(), DeliveryError> {
        let notification = notification(out)?;
        let (text, html) = match digest_parts(&notification) {
            Some((text, html)) => (text.to_owned(), html.to_owned()),
            None => (render_text(&notification, out.id), render_html(&notification, out.id)),
        };
        let subject = format!("[Crosscheck] {}", notification.summary);
        self.send_email(out, subject, out.id, text, html).await
    }

    /// Sends a text and HTML email to the channel's recipients, Message-ID `<id@crosscheck>`.
    async fn send_email(
        &self,
        out: &Outgoing,
        subject: String,
        id: Uuid,
        text: String,
        html: String,
    ) -> Result<(), DeliveryError> {
        let (transport, from) = self
            .smtp
            .as_ref()
            .ok_or_else(|| DeliveryError::new("config", "email is not configured (smtp_host)"))?;
        let recipients: Vec<Mailbox> = out
            .config
            .get("to")
            .and_then(Value::as_array)
            .map(|to| to.iter().filter_map(Value::as_str).filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        if recipients.is_empty() {
            return Err(DeliveryError::new("config", "the channel has no valid recipients"));
        }
        let mut builder = Message::builder()
            .from(from.clone())
            .subject(header_text(&subject))
            .message_id(Some(format!("<{id}@crosscheck>")));
        for to in recipients {
            builder = builder.to(to);
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(body_text(&text), html))
            .map_err(|e| DeliveryError::new("config", format!("cannot build the message: {e}")))?;
        transport.send(message).await.map(|_| ()).map_err(|e| {
            let reason = if e.is_permanent() || e.is_transient() { "smtp_status" } else { "smtp" };
            DeliveryError::new(reason, error_chain(&e))
        })
    }
}

/// `text` made safe for an email header built from user text (a Subject naming a channel or a
/// domain, a display name): line breaks and tabs become spaces, every other control character
/// (C0, DEL, C1: an ESC would reach a terminal mail reader raw) becomes U+FFFD. lettre then
/// writes the header as RFC 2047 encoded words wherever the text is not plain ASCII, and folds
/// it; it passes ESC and the other C0 controls through unencoded, so they are replaced here.
pub fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\r' | '\n' | '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// The plain-text part of an email: line breaks and tabs kept, every other control character
/// (an ESC would reach a terminal mail reader raw: the part is sent as 7bit text) replaced by
/// U+FFFD. The HTML part escapes and encodes its own.
pub fn body_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && !matches!(c, '\r' | '\n' | '\t') { '\u{FFFD}' } else { c })
        .collect()
}

fn ntfy_topic(out: &Outgoing) -> Result<String, DeliveryError> {
    out.config
        .get("topic")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| DeliveryError::new("config", "the channel has no topic"))
}

fn notification(out: &Outgoing) -> Result<Notification, DeliveryError> {
    serde_json::from_value(out.payload.clone())
        .map_err(|e| DeliveryError::new("payload", format!("stored notification is unreadable: {e}")))
}

/// The text and HTML renderings a `flap_digest` or `sla_report` notification carries in its
/// details (Slack and email send them as they are; a webhook gets the whole JSON like any other
/// kind).
pub fn digest_parts(n: &Notification) -> Option<(&str, &str)> {
    if n.kind != crate::digests::KIND && n.kind != crate::sla::REPORT_KIND {
        return None;
    }
    let text = n.details.get("text")?.as_str()?;
    let html = n.details.get("html")?.as_str()?;
    Some((text, html))
}

/// The Slack message: the text rendering with `&`, `<` and `>` escaped as Slack requires (a
/// probed URL or an error text could otherwise read as a link or a mention). A digest keeps its
/// summary line as text and the rest in a code block, so its columns and timeline line up.
pub fn slack_text(n: &Notification, id: Uuid) -> String {
    fn escape(text: &str) -> String {
        text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    }
    match digest_parts(n) {
        Some((text, _)) => {
            let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
            let rest = rest.trim_matches('\n');
            if rest.is_empty() {
                escape(first)
            } else {
                format!("{}\n```\n{}\n```", escape(first), escape(rest))
            }
        }
        None => escape(&render_text(n, id)),
    }
}

/// The webhook body: the stored notification plus `id` and `dedup_key`.
pub fn webhook_body(out: &Outgoing) -> Vec<u8> {
    let mut body = match &out.payload {
        Value::Object(map) => map.clone(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("payload".into(), other.clone());
            map
        }
    };
    body.insert("id".into(), Value::from(out.id.to_string()));
    body.insert("dedup_key".into(), Value::from(out.dedup_key.clone()));
    serde_json::to_vec(&body).expect("a JSON map serializes")
}

/// The details of a notification as (label, text) lines, in the order every rendering uses.
pub(crate) fn detail_lines(n: &Notification) -> Vec<(String, String)> {
    let mut lines = vec![("kind".to_owned(), n.kind.clone())];
    if let Some(url) = &n.url {
        lines.push(("url".into(), url.clone()));
    }
    if let Some(id) = n.domain_id {
        lines.push(("domain".into(), id.to_string()));
    }
    if let Some(id) = n.incident_id {
        lines.push(("incident".into(), id.to_string()));
    }
    if let Value::Object(details) = &n.details {
        for (key, value) in details {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            lines.push((key.clone(), text));
        }
    }
    lines.push(("occurred at".into(), n.occurred_at.to_rfc3339()));
    lines
}

/// The plain-text rendering (Slack message, email text part).
pub fn render_text(n: &Notification, id: Uuid) -> String {
    let mut text = n.summary.clone();
    for (key, value) in detail_lines(n) {
        text.push_str(&format!("\n{key}: {value}"));
    }
    text.push_str(&format!("\nnotification: {id}"));
    text
}

/// The HTML rendering (email HTML part).
pub fn render_html(n: &Notification, id: Uuid) -> String {
    let mut html = format!("<html><body><h2>{}</h2><table>", escape(&n.summary));
    for (key, value) in detail_lines(n) {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape(&key),
            escape(&value)
        ));
    }
    html.push_str(&format!("</table><p><small>notification {id}</small></p></body></html>"));
    html
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_has_no_control_characters() {
        assert_eq!(header_text("a\x1b[31mb\r\nBcc: x\tc\u{85}"), "a\u{FFFD}[31mb  Bcc: x c\u{FFFD}");
        assert_eq!(header_text("plain – ünïcode"), "plain – ünïcode");
        assert_eq!(body_text("a\x1b[2J\r\n\tb\x07"), "a\u{FFFD}[2J\r\n\tb\u{FFFD}");
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The signed string is "<timestamp>.<body>".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(sign("s3cret", 1_700_000_000, b"{}"), hex::encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn a_digest_brings_its_own_renderings() {
        let mut n = Notification {
            kind: "flap_digest".into(),
            tenant_id: Uuid::nil(),
            domain_id: None,
            url: None,
            incident_id: None,
            summary: "Flap digest 10:00–11:00 UTC: 1 domain flapped, 2 state changes".into(),
            details: serde_json::json!({"text": "the text", "html": "<p>the html</p>", "domains": []}),
            occurred_at: chrono::Utc::now(),
        };
        assert_eq!(digest_parts(&n), Some(("the text", "<p>the html</p>")));
        n.details["text"] =
            "Flap digest: 1 domain <b>\n\nhttps://a.example/?x=1&y=2\n  timeline ▁█▁\n".into();
        assert_eq!(
            slack_text(&n, Uuid::nil()),
            "Flap digest: 1 domain &lt;b&gt;\n```\nhttps://a.example/?x=1&amp;y=2\n  timeline ▁█▁\n```"
        );
        n.kind = "incident_opened".into();
        assert_eq!(digest_parts(&n), None);
        n.summary = "https://a.example/?x=1&y=2 is down (<@here>)".into();
        let text = slack_text(&n, Uuid::nil());
        assert!(text.starts_with("https://a.example/?x=1&amp;y=2 is down (&lt;@here&gt;)"), "{text}");
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
    }

    #[test]
    fn an_expired_certificate_reads_as_expired_in_every_rendering() {
        use chrono::TimeZone;
        let now = chrono::Utc.with_ymd_and_hms(2026, 3, 14, 10, 0, 0).unwrap();
        let not_after = now - chrono::Duration::hours(1);
        let url = "https://example.com/";
        let notice = crate::expiry::Notice::Expired;
        let n = Notification {
            kind: notice.kind().into(),
            tenant_id: Uuid::nil(),
            domain_id: Some(Uuid::nil()),
            url: Some(url.into()),
            incident_id: None,
            summary: crate::expiry::summary(notice, &format!("the certificate of {url}"), not_after, now),
            details: serde_json::json!({
                "serial": "0a", "not_after": not_after, "expired_at": not_after,
                "days_left": crate::expiry::days_left(not_after, now),
            }),
            occurred_at: now,
        };
        let out = Outgoing {
            id: Uuid::nil(),
            dedup_key: "cert:x:0a:expired".into(),
            kind: "webhook".into(),
            config: Value::Null,
            secret: None,
            payload: serde_json::to_value(&n).unwrap(),
        };
        let body: Value = serde_json::from_slice(&webhook_body(&out)).unwrap();
        assert_eq!(body["kind"], "certificate_expired");
        assert_eq!(body["details"]["days_left"], -1);
        assert_eq!(body["details"]["expired_at"], "2026-03-14T09:00:00Z");
        for text in [slack_text(&n, Uuid::nil()), render_text(&n, Uuid::nil()), render_html(&n, Uuid::nil())]
        {
            assert!(text.contains("expired 1 h ago (at 2026-03-14T09:00:00+00:00)"), "{text}");
            assert!(text.contains("certificate_expired"), "{text}");
            assert!(!text.contains("expires in"), "{text}");
        }
    }

    #[test]
    fn renderings_carry_the_summary_and_escape_html() {
        let n = Notification {
            kind: "test".into(),
            tenant_id: Uuid::nil(),
            domain_id: None,
            url: Some("https://example.com/?a=<b>".into()),
            incident_id: None,
            summary: "example.com is down".into(),
            details: serde_json::json!({"regions": ["ams"]}),
            occurred_at: chrono::Utc::now(),
        };
        let text = render_text(&n, Uuid::nil());
        assert!(text.starts_with("example.com is down\nkind: test"));
        assert!(text.contains("regions: [\"ams\"]"));
        let html = render_html(&n, Uuid::nil());
        assert!(html.contains("?a=&lt;b&gt;"));
    }
}
