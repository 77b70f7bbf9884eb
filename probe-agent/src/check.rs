//! `probe-agent check <url>`: one probe, here and now, printed for a person — the timing of each
//! phase, the addresses, the redirects, the certificate and the verdict — or as the report's
//! JSON. The probe is the agent's own ([`crate::probe::Prober`] with the agent's configuration:
//! the same SSRF guard, limits and trusted roots), so what it says is what the agent would
//! report from this machine.

use std::fmt::Write as _;
use std::process::ExitCode;

use ipnet::IpNet;
use shared::{DomainConfig, DomainId, HttpMethod, KeywordCheck, KeywordMode, StatusRange};

use crate::config::Config;
use crate::probe::{AttemptOutcome, ProbeReport, Prober};

/// What to check and how; the rest comes from the agent's configuration.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  probe-agent check https://example.com/\n  \
    probe-agent check https://example.com/health --keyword ok --expected-status 200-399\n  \
    probe-agent check http://127.0.0.1:8000/ --allow-private 127.0.0.0/8 --json\n\n\
    Exit status: 0 when the check passes, 1 when it fails, 64 for a usage or configuration error.")]
pub struct CheckArgs {
    /// The URL to probe (http or https).
    pub url: String,
    /// HTTP method: GET or HEAD.
    #[arg(long, default_value = "GET", value_parser = ["GET", "HEAD"])]
    pub method: String,
    /// Statuses that pass: a code (200), a range (200-399) or a class (2xx).
    #[arg(long, default_value = "200-299", value_parser = |s: &str| s.parse::<StatusRange>())]
    pub expected_status: StatusRange,
    /// Text the body must contain (GET only), matched on the decoded text.
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
    fn domain(&self) -> DomainConfig {
        DomainConfig {
            id: DomainId::new(),
            url: self.url.clone(),
            method: if self.method == "HEAD" { HttpMethod::Head } else { HttpMethod::Get },
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
            version: 0,
        }
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
    let report = prober.probe(&args.domain()).await;
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
            format!("  {}{ttl}{cnames}{tries}", info.name)
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
        let domain = cli.args.domain();
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
        let check = cli.args.domain().keyword.unwrap();
        assert_eq!((check.mode, check.case_insensitive), (KeywordMode::Regex, true));
        assert!(Cli::try_parse_from(["x", "https://a.test/", "--keyword-mode", "fuzzy"]).is_err());
        assert!(domain.interval_s * 1000 > domain.timeout_ms);
        assert!(Cli::try_parse_from(["x", "https://a.test/", "--expected-status", "700"]).is_err());
    }
}
