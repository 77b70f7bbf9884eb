//! `probe-agent check <url>`: one probe, here and now, printed for a person — the timing of each
//! phase, the addresses, the redirects, the certificate and the verdict — or as the report's
//! JSON. The probe is the agent's own ([`crate::probe::Prober`] with the agent's configuration:
//! the same SSRF guard, limits and trusted roots), so what it says is what the agent would
//! report from this machine. The request options (`--method`, `--header`, `--basic`,
//! `--bearer`, `--data`) follow the rules of a domain's request fields. The other check types
//! are named by the URL's scheme: `tcp://host:port` (with `--tls`, `--send`, `--expect`),
//! `tls://host:port` and `dns://name/TYPE` (with `--dns-server`, `--expect-answer`,
//! `--dnssec`); `--json-path`, `--json-op` and `--json-value` make an http check's JSON
//! assertion.

use std::fmt::Write as _;
use std::process::ExitCode;

use ipnet::IpNet;
use shared::request as rules;
use shared::{
    Auth, CheckConfig, DnsCheck, DnsRecordType, DomainConfig, DomainId, HttpMethod, JsonAssertion, JsonOp,
    KeywordCheck, KeywordMode, RequestBody, RequestConfig, RequestHeader, Secret, StatusRange, TcpCheck,
    TlsCheck,
};

use crate::config::Config;
use crate::probe::{AttemptOutcome, ProbeReport, Prober};

/// What to check and how; the rest comes from the agent's configuration.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  probe-agent check https://example.com/\n  \
    probe-agent check https://example.com/health --keyword ok --expected-status 200-399\n  \
    probe-agent check http://127.0.0.1:8000/ --allow-private 127.0.0.0/8 --json\n  \
    probe-agent check https://api.example.com/v1/ping --header 'Accept: application/json' --bearer \"$TOKEN\"\n  \
    probe-agent check https://example.com/login --data 'user=probe' \\\n      \
    --header 'Content-Type: application/x-www-form-urlencoded' --keyword welcome\n\n\
    probe-agent check https://api.example.com/health --json-path '$.status' --json-op == --json-value '\"ok\"'\n  \
    probe-agent check tcp://smtp.example.com:25 --expect '220 '\n  \
    probe-agent check tls://imap.example.com:993\n  \
    probe-agent check dns://example.com/MX --dns-server 9.9.9.9:53 --expect-answer '10 mx1.example.com' --dnssec\n\n\
    Exit status: 0 when the check passes, 1 when it fails, 64 for a usage or configuration error.")]
pub struct CheckArgs {
    /// The URL to probe (http or https), or another check type: tcp://host:port,
    /// tls://host:port, dns://name/TYPE (TYPE: A, AAAA, CNAME, MX, TXT, NS, SOA, SRV, CAA, PTR;
    /// default A).
    pub url: String,
    /// tcp://: complete a TLS handshake (the certificate is verified) before --send/--expect.
    #[arg(long)]
    pub tls: bool,
    /// tcp://: text written once connected (at most 4096 bytes).
    #[arg(long, value_name = "TEXT")]
    pub send: Option<String>,
    /// tcp://: text the first response bytes must contain (at most 1024 bytes).
    #[arg(long, value_name = "TEXT")]
    pub expect: Option<String>,
    /// dns://: a name server to ask, ip:port (repeatable; default: the agent's resolver).
    #[arg(long = "dns-server", value_name = "IP:PORT")]
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// dns://: an answer that must be present (repeatable), e.g. '10 mx1.example.com'.
    #[arg(long = "expect-answer", value_name = "ANSWER")]
    pub expect_answers: Vec<String>,
    /// dns://: validate the answer with DNSSEC.
    #[arg(long)]
    pub dnssec: bool,
    /// A JSONPath (RFC 9535) the JSON body is checked at, e.g. '$.status'.
    #[arg(long, value_name = "PATH", requires = "json_op")]
    pub json_path: Option<String>,
    /// The comparison: ==, !=, <, <=, >, >=, contains or exists.
    #[arg(long, value_name = "OP", requires = "json_path")]
    pub json_op: Option<String>,
    /// The JSON value compared with (not with exists), e.g. '"ok"' or 3.
    #[arg(long, value_name = "JSON")]
    pub json_value: Option<String>,
    /// HTTP method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS [default: GET, or POST
    /// with --data].
    #[arg(long, ignore_case = true, value_parser = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])]
    pub method: Option<String>,
    /// A request header, 'Name: value' (repeatable). Host, Content-Length, Transfer-Encoding,
    /// Connection and Accept-Encoding are the prober's; User-Agent and Accept replace its own.
    /// Credential headers (Authorization, Cookie, names with key, token, auth, secret, …) are
    /// not sent to another origin after a redirect.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Basic authentication, 'user:password' (split at the first colon).
    #[arg(long, value_name = "USER:PASSWORD", env = "CROSSCHECK_AGENT_CHECK_BASIC", hide_env_values = true)]
    pub basic: Option<String>,
    /// Bearer authentication with this token.
    #[arg(
        long,
        value_name = "TOKEN",
        conflicts_with = "basic",
        env = "CROSSCHECK_AGENT_CHECK_BEARER",
        hide_env_values = true
    )]
    pub bearer: Option<String>,
    /// The request body (POST, PUT or PATCH), sent as given; no Content-Type is added, set one
    /// with --header.
    #[arg(long, value_name = "BODY")]
    pub data: Option<String>,
    /// Statuses that pass: a code (200), a range (200-399) or a class (2xx).
    #[arg(long, default_value = "200-299", value_parser = |s: &str| s.parse::<StatusRange>())]
    pub expected_status: StatusRange,
    /// Text the body must contain (not with HEAD), matched on the decoded text.
    #[arg(long)]
    pub keyword: Option<String>,
    /// How the keyword is matched: contains, not_contains (fails when present) or regex.
    #[arg(long, default_value = "contains", value_parser = ["contains", "not_contains", "regex"])]
    pub keyword_mode: String,
    /// Match the keyword without regard to letter case (Unicode simple case folding).
    #[arg(long)]
    pub keyword_case_insensitive: bool,
    /// The HTTP version: auto (ALPN offers h2 and http/1.1), http1, or http2 (over plain
    /// http: prior knowledge).
    #[arg(long, default_value = "auto", value_parser = ["auto", "http1", "http2"])]
    pub http_version: String,
    /// Limit of the whole probe, redirects included, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u32,
    /// A network that may be probed although private (repeatable), added to the configuration's
    /// `allow_private`, e.g. 127.0.0.0/8 to check a local server.
    #[arg(long = "allow-private", value_name = "CIDR")]
    pub allow_private: Vec<IpNet>,
    /// Print the full report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    /// The request the options describe, checked by the rules of a domain's request fields;
    /// the error names the option.
    fn request(&self) -> Result<RequestConfig, String> {
        let default = if self.data.is_some() { HttpMethod::Post } else { HttpMethod::Get };
        let method = self.method.as_deref().and_then(HttpMethod::parse).unwrap_or(default);
        let mut headers: Vec<RequestHeader> = Vec::new();
        for raw in &self.headers {
            let (name, value) =
                raw.split_once(':').ok_or_else(|| format!("--header {raw:?}: must be 'Name: value'"))?;
            let name = name.trim();
            rules::check_header_name(name).map_err(|e| format!("--header {name}: {e}"))?;
            let value = value.trim();
            rules::check_header_value(value).map_err(|e| format!("--header {name}: value {e}"))?;
            if headers.iter().any(|h| h.name.eq_ignore_ascii_case(name)) {
                return Err(format!("--header {name}: given twice; combine its values in one header"));
            }
            let secret = rules::secret_by_default(name);
            headers.push(RequestHeader { name: name.to_owned(), value: value.to_owned(), secret });
        }
        if headers.len() > rules::MAX_HEADERS {
            return Err(format!("--header: at most {} headers", rules::MAX_HEADERS));
        }
        let auth = match (&self.basic, &self.bearer) {
            (Some(pair), _) => {
                let (username, password) = pair.split_once(':').ok_or("--basic: must be 'user:password'")?;
                rules::check_username(username).map_err(|e| format!("--basic: the user name {e}"))?;
                rules::check_password(password).map_err(|e| format!("--basic: the password {e}"))?;
                Some(Auth::Basic { username: username.to_owned(), password: Secret::new(password) })
            }
            (None, Some(token)) => {
                rules::check_token(token).map_err(|e| format!("--bearer: the token {e}"))?;
                Some(Auth::Bearer { token: Secret::new(token.as_str()) })
            }
            (None, None) => None,
        };
        if auth.is_some() && headers.iter().any(|h| h.name.eq_ignore_ascii_case("authorization")) {
            return Err("--basic/--bearer: not with an Authorization header".into());
        }
        let body = match &self.data {
            None => None,
            Some(_) if !method.takes_body() => {
                return Err(format!("--data: only POST, PUT and PATCH send a body, not {}", method.as_str()))
            }
            Some(text) => {
                rules::check_body(text).map_err(|e| format!("--data: {e}"))?;
                Some(RequestBody { text: text.clone(), secret: false })
            }
        };
        Ok(RequestConfig { method, headers, auth, body })
    }

    /// The check type the URL's scheme names, with its options.
    fn check(&self) -> Result<CheckConfig, String> {
        let scheme = self.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        if matches!(scheme.as_str(), "http" | "https" | "") {
            return Ok(CheckConfig::Http);
        }
        let url = url::Url::parse(&self.url).map_err(|e| format!("{}: {e}", self.url))?;
        let host = url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
        let host = host.filter(|h| !h.is_empty()).ok_or_else(|| format!("{}: no host", self.url))?;
        let port = || url.port().ok_or_else(|| format!("{}: the port is required", self.url));
        match scheme.as_str() {
            "tcp" => Ok(CheckConfig::Tcp(TcpCheck {
                host,
                port: port()?,
                tls: self.tls,
                send: self.send.clone(),
                expect: self.expect.clone(),
            })),
            "tls" => Ok(CheckConfig::Tls(TlsCheck { host, port: port()? })),
            "dns" => {
                let kind = url.path().trim_matches('/');
                let record_type = if kind.is_empty() {
                    DnsRecordType::A
                } else {
                    DnsRecordType::parse(kind)
                        .ok_or_else(|| format!("{}: unknown record type {kind}", self.url))?
                };
                Ok(CheckConfig::Dns(DnsCheck {
                    name: host,
                    record_type,
                    servers: self.dns_servers.clone(),
                    expect: self.expect_answers.iter().map(|a| record_type.normalize(a)).collect(),
                    dnssec: self.dnssec,
                }))
            }
            other => {
                Err(format!("{}: unsupported scheme {other}; use http, https, tcp, tls or dns", self.url))
            }
        }
    }

    /// The JSON assertion of `--json-path`, `--json-op` and `--json-value`.
    fn json_check(&self) -> Result<Option<JsonAssertion>, String> {
        let (Some(path), Some(op)) = (&self.json_path, &self.json_op) else {
            return Ok(None);
        };
        let op = JsonOp::parse(op)
            .ok_or_else(|| format!("--json-op {op}: use ==, !=, <, <=, >, >=, contains or exists"))?;
        let value = match (&self.json_value, op) {
            (None, JsonOp::Exists) => None,
            (None, _) => return Err("--json-value: required with this --json-op".into()),
            (Some(text), _) => Some(
                serde_json::from_str(text)
                    .map_err(|e| format!("--json-value: not json ({e}); quote strings"))?,
            ),
        };
        let assertion = JsonAssertion { path: path.clone(), op, value };
        assertion.compile().map_err(|e| format!("--json-path: {e}"))?;
        Ok(Some(assertion))
    }

    fn domain(&self) -> Result<DomainConfig, String> {
        Ok(DomainConfig {
            id: DomainId::new(),
            url: self.url.clone(),
            request: self.request()?,
            check: self.check()?,
            json_check: self.json_check()?,
            expected_status: self.expected_status,
            keyword: self.keyword.clone().map(|pattern| KeywordCheck {
                pattern,
                mode: KeywordMode::ALL
                    .into_iter()
                    .find(|m| m.as_str() == self.keyword_mode)
                    .unwrap_or(KeywordMode::Contains),
                case_insensitive: self.keyword_case_insensitive,
            }),
            interval_s: self.timeout_ms.div_ceil(1000).max(1) + 1,
            timeout_ms: self.timeout_ms,
            regions: Vec::new(),
            paused: false,
            tls_verify: true,
            http_version: shared::HttpVersion::parse(&self.http_version).unwrap_or_default(),
            agents_per_region: shared::domain::DEFAULT_AGENTS_PER_REGION,
            version: 0,
        })
    }
}

/// Probes once and prints the outcome; the exit status says whether the check passed. A
/// configuration the prober cannot be built from (trusted roots that do not load) exits 64.
pub async fn run(mut config: Config, args: CheckArgs) -> ExitCode {
    config.allow_private.extend(args.allow_private.iter().copied());
    let prober = match config.probe_settings().and_then(|s| Prober::new(s).map_err(|e| e.to_string())) {
        Ok(prober) => prober,
        Err(message) => {
            eprintln!("probe-agent: invalid configuration: {message}");
            return ExitCode::from(shared::config::EXIT_CONFIG as u8);
        }
    };
    let domain = match args.domain() {
        Ok(domain) => domain,
        Err(message) => {
            eprintln!("probe-agent: {message}");
            return ExitCode::from(shared::config::EXIT_CONFIG as u8);
        }
    };
    let report = prober.probe(&domain).await;
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("probe-agent: cannot encode the report: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render(&args.url, &report));
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

/// The report as text for a terminal: verdict first, then phases, addresses, redirects and the
/// certificate.
pub fn render(url: &str, report: &ProbeReport) -> String {
    let mut out = String::new();
    let verdict = match (report.ok, report.error) {
        (true, _) => "UP".to_owned(),
        (false, Some(kind)) => format!("DOWN ({})", kind.as_str()),
        (false, None) => "DOWN".to_owned(),
    };
    let _ = writeln!(out, "{verdict}  {url}");
    if let Some(detail) = &report.error_detail {
        let _ = writeln!(out, "  why        {detail}");
    }
    if let Some(status) = report.status {
        let matched = match report.status_matched {
            Some(false) => " (not expected)",
            _ => "",
        };
        let version = report.http_version.map(|v| format!(" over {}", v.as_str())).unwrap_or_default();
        let _ = writeln!(out, "  status     {status}{matched}{version}");
    }
    if let Some(found) = report.keyword_matched {
        let _ = writeln!(out, "  keyword    {}", if found { "found" } else { "missing" });
    }
    let t = &report.timings;
    let dns = match (&report.dns, report.dns_error) {
        (_, Some(reason)) => format!("  ({})", reason.as_str()),
        (Some(info), None) => {
            let ttl = info.ttl_s.map(|s| format!(", ttl {s} s")).unwrap_or_default();
            let cnames = if info.cnames.is_empty() {
                String::new()
            } else {
                format!(", via {}", info.cnames.join(" "))
            };
            let tries =
                if info.attempts > 1 { format!(", {} lookups", info.attempts) } else { String::new() };
            let proof = info.dnssec.map(|p| format!(", dnssec {}", p.as_str())).unwrap_or_default();
            format!("  {}{ttl}{cnames}{tries}{proof}", info.name)
        }
        (None, None) => String::new(),
    };
    let _ = writeln!(out, "  dns        {}{dns}", ms(t.dns_ms));
    let _ = writeln!(out, "  connect    {}", ms(t.connect_ms));
    let _ = writeln!(out, "  tls        {}", ms(t.tls_ms));
    let _ = writeln!(out, "  first byte {}", ms(t.ttfb_ms));
    let _ = writeln!(out, "  total      {:.1} ms  ({} body bytes)", t.total_ms, report.body_bytes);
    if !report.resolved_addrs.is_empty() {
        let all: Vec<String> = report.resolved_addrs.iter().map(ToString::to_string).collect();
        let used = report.resolved_ip.map(|ip| format!(", used {ip}")).unwrap_or_default();
        let _ = writeln!(out, "  addresses  {}{used}", all.join(" "));
    }
    if report.connect_attempts.len() > 1
        || report.connect_attempts.iter().any(|a| a.outcome != AttemptOutcome::Connected)
    {
        for attempt in &report.connect_attempts {
            let took = attempt.took_ms.map(|v| format!(" after {v:.1} ms")).unwrap_or_default();
            let detail = attempt.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "    {:<15} {}{took}{detail}",
                attempt.ip.to_string(),
                attempt.outcome.as_str()
            );
        }
    }
    for (i, hop) in report.redirects.iter().enumerate() {
        let _ = writeln!(out, "  redirect {} -> {hop}", i + 1);
    }
    for cert in report.certificate.iter().chain(&report.redirect_certificates) {
        let validity = match (&cert.valid, &cert.validation_error) {
            (true, _) => "valid".to_owned(),
            (false, Some(why)) => format!("INVALID: {why}"),
            (false, None) => "INVALID".to_owned(),
        };
        let _ = writeln!(out, "  certificate {} ({})", cert.subject, cert.host);
        let _ = writeln!(out, "    issuer   {}", cert.issuer);
        if !cert.sans.is_empty() {
            let _ = writeln!(out, "    names    {}", cert.sans.join(" "));
        }
        let _ = writeln!(
            out,
            "    expires  {} ({} days left), {validity}",
            cert.not_after.format("%Y-%m-%d %H:%M UTC"),
            cert.days_remaining
        );
        for above in cert.chain.iter().skip(1) {
            let _ = writeln!(
                out,
                "    chain {}  {} expires {} ({} days left)",
                above.position,
                above.subject,
                above.not_after.format("%Y-%m-%d %H:%M UTC"),
                above.days_remaining
            );
        }
    }
    if let Some(earliest) = &report.earliest_expiry {
        let _ = writeln!(
            out,
            "  earliest expiry {} days: {} of {} ({})",
            earliest.days_remaining,
            crate::probe::position_name(earliest.position),
            earliest.host,
            earliest.subject
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{ErrorKind, Timings};

    fn report(ok: bool) -> ProbeReport {
        ProbeReport {
            ok,
            error: (!ok).then_some(ErrorKind::Status),
            error_detail: (!ok).then(|| "status 503 is not in 200-299".to_owned()),
            timings: Timings {
                dns_ms: Some(1.25),
                connect_ms: Some(2.0),
                tls_ms: None,
                ttfb_ms: Some(3.5),
                total_ms: 7.0,
            },
            status: Some(if ok { 200 } else { 503 }),
            status_matched: Some(ok),
            keyword_matched: None,
            resolved_ip: Some("127.0.0.1".parse().unwrap()),
            resolved_addrs: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            dns: None,
            dns_error: None,
            connect_attempts: Vec::new(),
            http_version: Some(crate::probe::HttpProtocol::Http2),
            redirects: vec!["http://127.0.0.1/next".into()],
            body_bytes: 12,
            body_wire_bytes: 12,
            certificate: None,
            redirect_certificates: Vec::new(),
            earliest_expiry: None,
        }
    }

    #[test]
    fn a_passing_check_reads_top_down() {
        let text = render("http://127.0.0.1/", &report(true));
        assert_eq!(
            text,
            "UP  http://127.0.0.1/\n  status     200 over HTTP/2\n  dns        1.2 ms\n  connect    2.0 ms\n  tls        -\n  \
             first byte 3.5 ms\n  total      7.0 ms  (12 body bytes)\n  addresses  127.0.0.1 ::1, used 127.0.0.1\n  redirect 1 -> http://127.0.0.1/next\n"
        );
    }

    #[test]
    fn a_failing_check_says_why_first() {
        let text = render("http://127.0.0.1/", &report(false));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("DOWN (status)  http://127.0.0.1/"));
        assert_eq!(lines.next(), Some("  why        status 503 is not in 200-299"));
        assert_eq!(lines.next(), Some("  status     503 (not expected) over HTTP/2"));
    }

    #[test]
    fn every_address_tried_and_the_dns_reason_are_shown() {
        use crate::probe::{ConnectAttempt, DnsErrorReason};
        let mut r = report(true);
        r.connect_attempts = vec![
            ConnectAttempt {
                ip: "::1".parse().unwrap(),
                outcome: AttemptOutcome::Refused,
                started_ms: Some(0.0),
                took_ms: Some(0.25),
                detail: Some("connection refused".into()),
            },
            ConnectAttempt {
                ip: "127.0.0.1".parse().unwrap(),
                outcome: AttemptOutcome::Connected,
                started_ms: Some(0.3),
                took_ms: Some(0.5),
                detail: None,
            },
        ];
        let text = render("http://a.test/", &r);
        assert!(text.contains("    ::1             refused after 0.2 ms: connection refused\n"), "{text}");
        assert!(text.contains("    127.0.0.1       connected after 0.5 ms\n"), "{text}");
        let mut r = report(false);
        r.dns_error = Some(DnsErrorReason::Nxdomain);
        assert!(render("http://a.test/", &r).contains("  dns        1.2 ms  (nxdomain)\n"));
        let mut r = report(true);
        r.dns = Some(crate::probe::DnsInfo {
            name: "www.corp.internal.".into(),
            attempts: 1,
            ttl_s: Some(300),
            cnames: Vec::new(),
            dnssec: Some(crate::probe::DnssecProof::Secure),
        });
        let text = render("dns://www.corp.internal/A", &r);
        assert!(
            text.contains("  dns        1.2 ms  www.corp.internal., ttl 300 s, dnssec secure\n"),
            "{text}"
        );
    }

    #[test]
    fn arguments_make_the_domain_probed() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: CheckArgs,
        }
        let cli =
            Cli::try_parse_from(["x", "https://a.test/", "--expected-status", "2xx", "--keyword", "hi"])
                .unwrap();
        let domain = cli.args.domain().unwrap();
        assert_eq!(domain.expected_status, StatusRange { min: 200, max: 299 });
        assert_eq!(domain.keyword, Some(KeywordCheck::contains("hi")));
        let cli = Cli::try_parse_from([
            "x",
            "https://a.test/",
            "--keyword",
            "v\\d+",
            "--keyword-mode",
            "regex",
            "--keyword-case-insensitive",
        ])
        .unwrap();
        let check = cli.args.domain().unwrap().keyword.unwrap();
        assert_eq!((check.mode, check.case_insensitive), (KeywordMode::Regex, true));
        assert!(Cli::try_parse_from(["x", "https://a.test/", "--keyword-mode", "fuzzy"]).is_err());
        assert!(domain.interval_s * 1000 > domain.timeout_ms);
        assert!(Cli::try_parse_from(["x", "https://a.test/", "--expected-status", "700"]).is_err());
    }

    #[test]
    fn request_options_make_the_request_sent() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: CheckArgs,
        }
        let request = |args: &[&str]| {
            let mut all = vec!["x", "https://a.test/"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map_err(|e| e.to_string()).and_then(|cli| cli.args.request())
        };
        let posted = request(&[
            "--data",
            "{}",
            "-H",
            "Content-Type: application/json",
            "--header",
            "X-Api-Key:  k ",
            "--basic",
            "ops:pa:ss",
        ])
        .unwrap();
        assert_eq!(posted.method, HttpMethod::Post, "--data alone means POST, as with curl");
        assert_eq!(posted.body, Some(RequestBody { text: "{}".into(), secret: false }));
        assert_eq!(
            posted.headers[1],
            RequestHeader { name: "X-Api-Key".into(), value: "k".into(), secret: true }
        );
        assert!(!posted.headers[0].secret);
        assert_eq!(
            posted.auth,
            Some(Auth::Basic { username: "ops".into(), password: Secret::new("pa:ss") }),
            "split at the first colon"
        );
        let put = request(&["--method", "put", "--bearer", "tok"]).unwrap();
        assert_eq!((put.method, put.auth.map(|a| a.kind())), (HttpMethod::Put, Some("bearer")));
        for (args, says) in [
            (&["--data", "x", "--method", "GET"][..], "--data: only POST"),
            (&["--header", "Host: evil.test"][..], "--header Host: Host cannot be set"),
            (&["--header", "no colon"][..], "must be 'Name: value'"),
            (&["--header", "X-A: 1", "--header", "x-a: 2"][..], "given twice"),
            (&["--basic", "nocolon"][..], "--basic: must be 'user:password'"),
            (&["--bearer", "two words"][..], "--bearer: the token must be printable"),
            (&["--bearer", "t", "-H", "Authorization: x"][..], "not with an Authorization header"),
            (&["--method", "TRACE"][..], "invalid value"),
        ] {
            let error = request(args).unwrap_err();
            assert!(error.contains(says), "{args:?}: {error}");
            assert!(!error.contains("two words"), "a token is never repeated: {error}");
        }
    }
}
