//! The prober against hostile raw-TCP servers that write exact bytes: compressed bodies (every
//! coding, corrupt streams, decompression bombs), pages in other charsets, every keyword mode,
//! bodies that stall after the head, and response heads at and past the header limits.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use probe_agent::probe::{ErrorKind, ProbeReport, ProbeSettings, Prober, StaticResolver};
use shared::netguard::TargetPolicy;
use shared::{DomainConfig, DomainId, KeywordCheck, KeywordMode, StatusRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// Servers

/// What a hostile server does once its pieces are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Closes the connection: the response is complete.
    Close,
    /// Keeps the connection open, sending nothing more, until the client leaves.
    Hold,
}

/// A server that reads each request head and answers with exactly `pieces`, written one after
/// another with `pause` between them, then does `then`. Keeps every request head it read.
struct Hostile {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    async fn start(pieces: Vec<Vec<u8>>, pause: Duration, then: Then) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let pieces = pieces.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    for (i, piece) in pieces.iter().enumerate() {
                        if i > 0 && !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        if tcp.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                    match then {
                        Then::Close => {
                            let _ = tcp.shutdown().await;
                        }
                        Then::Hold => {
                            // Until the client goes away.
                            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                        }
                    }
                });
            }
        });
        Hostile { addr, requests }
    }

    /// Answers with `response` in one write and closes.
    async fn once(response: Vec<u8>) -> Hostile {
        Hostile::start(vec![response], Duration::ZERO, Then::Close).await
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn request_heads(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A `200` head with `headers` (each `name: value`, CRLF added) and nothing after.
fn head(headers: &[&str]) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for header in headers {
        head.extend_from_slice(header.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A complete `200` response with a `Content-Length` body.
fn response(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let length = format!("content-length: {}", body.len());
    let mut all: Vec<&str> = headers.to_vec();
    all.push(&length);
    [head(&all), body.to_vec()].concat()
}

/// `body` as chunked transfer coding, `size` bytes per chunk, with the last chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Encoders

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    DeflateZlib,
    DeflateRaw,
    Brotli,
    Zstd,
}

const EVERY_ENCODING: [Encoding; 6] = [
    Encoding::Identity,
    Encoding::Gzip,
    Encoding::DeflateZlib,
    Encoding::DeflateRaw,
    Encoding::Brotli,
    Encoding::Zstd,
];

impl Encoding {
    /// The `Content-Encoding` header, if any.
    fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("content-encoding: gzip"),
            Encoding::DeflateZlib | Encoding::DeflateRaw => Some("content-encoding: deflate"),
            Encoding::Brotli => Some("content-encoding: br"),
            Encoding::Zstd => Some("content-encoding: zstd"),
        }
    }

    /// The name the prober uses in its messages.
    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::DeflateZlib | Encoding::DeflateRaw => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    fn encode(self, data: &[u8]) -> Vec<u8> {
        fn finish<W: std::io::Write>(mut w: W, data: &[u8]) -> W {
            w.write_all(data).unwrap();
            w
        }
        let level = flate2::Compression::default();
        match self {
            Encoding::Identity => data.to_vec(),
            Encoding::Gzip => {
                finish(flate2::write::GzEncoder::new(Vec::new(), level), data).finish().unwrap()
            }
            Encoding::DeflateZlib => {
                finish(flate2::write::ZlibEncoder::new(Vec::new(), level), data).finish().unwrap()
            }
            Encoding::DeflateRaw => {
                finish(flate2::write::DeflateEncoder::new(Vec::new(), level), data).finish().unwrap()
            }
            Encoding::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    w.write_all(data).unwrap();
                }
                out
            }
            Encoding::Zstd => zstd::stream::encode_all(data, 3).unwrap(),
        }
    }

    /// A complete response: `body` encoded, sent chunked in 1 KiB chunks.
    fn response(self, content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut headers = vec![content_type, "transfer-encoding: chunked"];
        headers.extend(self.header());
        [head(&headers), chunked(&self.encode(body), 1024)].concat()
    }
}

/// About 20 KB of HTML with `marker` in the middle.
fn page(marker: &str) -> Vec<u8> {
    let mut page = String::from("<html><body>\n");
    for i in 0..250 {
        page.push_str(&format!("<p>line {i}: nothing to see here, move along please</p>\n"));
        if i == 125 {
            page.push_str(&format!("<p>build: {marker}</p>\n"));
        }
    }
    page.push_str("</body></html>\n");
    page.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Probing

fn settings() -> ProbeSettings {
    ProbeSettings {
        policy: TargetPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]),
        user_agent: "crosscheck-test/1".to_owned(),
        ..ProbeSettings::default()
    }
}

fn prober_with(settings: ProbeSettings) -> Prober {
    Prober::with_resolver(settings, Arc::new(StaticResolver::new())).unwrap()
}

fn prober() -> Prober {
    prober_with(settings())
}

fn plain(url: String) -> DomainConfig {
    DomainConfig {
        id: DomainId::new(),
        url,
        request: shared::RequestConfig::default(),
        check: shared::CheckConfig::Http,
        json_check: None,
        expected_status: StatusRange::SUCCESS,
        keyword: None,
        interval_s: 60,
        timeout_ms: 10_000,
        regions: Vec::new(),
        paused: false,
        tls_verify: true,
        http_version: shared::HttpVersion::Auto,
        agents_per_region: shared::domain::DEFAULT_AGENTS_PER_REGION,
        version: 1,
    }
}

fn checking(url: String, pattern: &str, mode: KeywordMode, case_insensitive: bool) -> DomainConfig {
    DomainConfig {
        keyword: Some(KeywordCheck { pattern: pattern.to_owned(), mode, case_insensitive }),
        ..plain(url)
    }
}

fn containing(url: String, keyword: &str) -> DomainConfig {
    checking(url, keyword, KeywordMode::Contains, false)
}

async fn probe(prober: &Prober, config: &DomainConfig) -> ProbeReport {
    let report = prober.probe(config).await;
    crate::probe::check_invariants(&report);
    report
}

fn assert_up(report: &ProbeReport) {
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.status, Some(200));
}

fn assert_failed(report: &ProbeReport, kind: ErrorKind, details: &[&str]) {
    assert_eq!(report.error, Some(kind), "{report:#?}");
    let detail = report.error_detail.as_deref().unwrap_or_default();
    for part in details {
        assert!(detail.contains(part), "detail {detail:?} lacks {part:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Content codings

#[tokio::test]
async fn a_gzip_page_with_the_keyword_is_up_and_compression_is_asked_for() {
    let body = page("status OK");
    let server = Hostile::once(Encoding::Gzip.response("content-type: text/html", &body)).await;
    let report = probe(&prober(), &containing(server.url(), "status OK")).await;
    assert_up(&report);
    assert_eq!(report.keyword_matched, Some(true));
    assert!(report.body_bytes > 0 && report.body_bytes <= body.len() as u64, "{report:#?}");
    let heads = server.request_heads();
    assert!(
        heads[0].to_ascii_lowercase().contains("accept-encoding: gzip, deflate, br, zstd\r\n"),
        "{heads:?}"
    );
}

#[tokio::test]
async fn every_coding_is_decoded_before_the_keyword_is_looked_for() {
    let body = page("status OK");
    for encoding in EVERY_ENCODING {
        let server = Hostile::once(encoding.response("content-type: text/html", &body)).await;
        let found = probe(&prober(), &containing(server.url(), "status OK")).await;
        assert!(found.ok, "{encoding:?}: {found:#?}");
        assert_eq!(found.keyword_matched, Some(true), "{encoding:?}");

        let missing = probe(&prober(), &containing(server.url(), "status FAILED")).await;
        assert_failed(&missing, ErrorKind::Keyword, &["does not contain the keyword"]);
        assert_eq!(missing.keyword_matched, Some(false), "{encoding:?}");
        assert_eq!(
            missing.body_bytes,
            body.len() as u64,
            "{encoding:?}: the whole decoded body was searched"
        );
        let wire = encoding.encode(&body).len() as u64;
        assert_eq!(missing.body_wire_bytes, wire, "{encoding:?}");
        if encoding != Encoding::Identity {
            let detail = missing.error_detail.unwrap();
            assert!(detail.contains(&format!("from {wire} bytes of {}", encoding.name())), "{detail}");
        }

        // Without a keyword nothing needs decoding.
        assert_up(&probe(&prober(), &plain(server.url())).await);
    }
}

#[tokio::test]
async fn a_compressed_body_sent_without_being_asked_for_is_decoded_too() {
    // A misbehaving CDN labels the body with a coding the request did not list (`X-GZIP`, the
    // old alias, in upper case): decoded all the same, as browsers do.
    let body = page("status OK");
    let wire = Encoding::Gzip.encode(&body);
    let server =
        Hostile::once(response(&["Content-Encoding: X-GZIP", "content-type: text/html"], &wire)).await;
    assert_up(&probe(&prober(), &containing(server.url(), "status OK")).await);
}

#[tokio::test]
async fn an_unknown_or_stacked_coding_is_named_when_a_keyword_needs_the_text() {
    let server = Hostile::once(response(&["content-encoding: compress"], b"\x1f\x9d\x90garbage")).await;
    let report = probe(&prober(), &containing(server.url(), "status OK")).await;
    assert_failed(&report, ErrorKind::Http, &["content-encoding \"compress\"", "cannot decode"]);
    assert_eq!(report.keyword_matched, None);
    assert_up(&probe(&prober(), &plain(server.url())).await);

    let server = Hostile::once(response(&["content-encoding: gzip, br"], b"whatever")).await;
    let report = probe(&prober(), &containing(server.url(), "status OK")).await;
    assert_failed(&report, ErrorKind::Http, &["stacked content-encodings"]);
}

#[tokio::test]
async fn a_corrupt_body_is_a_decoding_error_not_a_missing_keyword() {
    let body = page("status OK");
    let mut broken = Encoding::Gzip.encode(&body);
    for byte in &mut broken[10..40] {
        *byte ^= 0xa5;
    }
    let server = Hostile::once(response(&["content-encoding: gzip"], &broken)).await;
    let report = probe(&prober(), &containing(server.url(), "status OK")).await;
    assert_failed(&report, ErrorKind::Http, &["the gzip body cannot be decoded"]);
    assert_eq!(report.keyword_matched, None);

    let server = Hostile::once(response(&["content-encoding: br"], b"not brotli at all, just text")).await;
    let report = probe(&prober(), &containing(server.url(), "status OK")).await;
    assert_failed(&report, ErrorKind::Http, &["the br body cannot be decoded"]);
}

#[tokio::test]
async fn a_gzip_bomb_is_too_large_by_its_decoded_size() {
    // 50 MB of zeros in about 50 kB: fifty gzip members of 1 MB each (one gzip stream, as far
    // as the format goes).
    let member = Encoding::Gzip.encode(&vec![0u8; 1 << 20]);
    let bomb: Vec<u8> = member.iter().copied().cycle().take(member.len() * 50).collect();
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let server = Hostile::once(response(&["content-encoding: gzip", "content-type: text/html"], &bomb)).await;
    let report = probe(&prober(), &containing(server.url(), "status OK")).await;
    assert_failed(
        &report,
        ErrorKind::BodyTooLarge,
        &["gzip body decodes to more than 1048576 bytes (max_body_bytes) from", "bytes on the wire"],
    );
    assert_eq!(report.body_bytes, 1 << 20);
    assert!(report.body_wire_bytes < 10_000, "stopped as soon as the limit was passed: {report:#?}");
    assert_eq!(report.keyword_matched, Some(false));
}

#[tokio::test]
async fn a_decompression_bomb_of_every_coding_stops_at_the_limit() {
    let limit = 256 * 1024;
    let small = prober_with(ProbeSettings { max_body_bytes: limit, ..settings() });
    let zeros = vec![0u8; 8 << 20];
    for encoding in EVERY_ENCODING {
        let wire = encoding.encode(&zeros);
        let server = Hostile::once(response(&encoding.header().into_iter().collect::<Vec<_>>(), &wire)).await;
        let report = probe(&small, &containing(server.url(), "status OK")).await;
        let expected = match encoding {
            Encoding::Identity => format!("not in the first {limit} bytes of the body (max_body_bytes)"),
            other => format!("{} body decodes to more than {limit} bytes (max_body_bytes)", other.name()),
        };
        assert_failed(&report, ErrorKind::BodyTooLarge, &[&expected]);
        assert_eq!(report.body_bytes, limit, "{encoding:?}");
        if encoding != Encoding::Identity {
            assert!(report.body_wire_bytes < limit / 4, "{encoding:?}: {}", report.body_wire_bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Charsets

#[tokio::test]
async fn a_gbk_page_is_decoded_before_matching() {
    let (gbk, _, _) = encoding_rs::GBK.encode("<html><body><p>欢迎光临</p></body></html>");
    let server = Hostile::once(response(&["content-type: text/html; charset=gbk"], &gbk)).await;
    let report = probe(&prober(), &containing(server.url(), "欢迎光临")).await;
    assert_up(&report);
    assert_eq!(report.keyword_matched, Some(true));

    let report = probe(&prober(), &containing(server.url(), "再见")).await;
    assert_failed(&report, ErrorKind::Keyword, &["read as gbk (content-type)"]);
}

#[tokio::test]
async fn declared_charsets_are_honoured() {
    let cases: [(&str, &'static encoding_rs::Encoding, &str, &str); 3] = [
        ("content-type: text/html; charset=Shift_JIS", encoding_rs::SHIFT_JIS, "<p>ようこそ</p>", "ようこそ"),
        (
            "content-type: text/plain; charset=iso-8859-1",
            encoding_rs::WINDOWS_1252,
            "Bienvenue au café",
            "café",
        ),
        (
            "content-type: text/html; charset=\"euc-kr\"",
            encoding_rs::EUC_KR,
            "<p>환영합니다</p>",
            "환영합니다",
        ),
    ];
    for (content_type, encoding, text, keyword) in cases {
        let (bytes, _, unmappable) = encoding.encode(text);
        assert!(!unmappable && bytes.as_ref() != text.as_bytes(), "{content_type}: not a plain utf-8 case");
        for coding in [Encoding::Identity, Encoding::Gzip] {
            let server = Hostile::once(coding.response(content_type, &bytes)).await;
            let report = probe(&prober(), &containing(server.url(), keyword)).await;
            assert!(report.ok, "{content_type} {coding:?}: {report:#?}");
        }
    }
}

#[tokio::test]
async fn a_meta_declared_charset_is_used_when_the_header_names_none() {
    let text = format!(
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=shift_jis\"></head>\
         <body>{}<p>ようこそ</p></body></html>",
        "<!-- padding -->".repeat(100)
    );
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(&text);
    let server = Hostile::once(response(&["content-type: text/html"], &sjis)).await;
    assert_up(&probe(&prober(), &containing(server.url(), "ようこそ")).await);

    let (gbk, _, _) = encoding_rs::GBK.encode("<meta charset=\"gbk\"><p>欢迎光临</p>");
    let server = Hostile::once(Encoding::Brotli.response("content-type: text/html", &gbk)).await;
    assert_up(&probe(&prober(), &containing(server.url(), "欢迎光临")).await);

    // No declaration at all: UTF-8, and a byte-order mark does not hide a match at offset 0.
    let server = Hostile::once(response(&[], b"\xef\xbb\xbfOK")).await;
    assert_up(&probe(&prober(), &checking(server.url(), "^OK$", KeywordMode::Regex, false)).await);
}

// ---------------------------------------------------------------------------------------------
// Keyword modes

#[tokio::test]
async fn keyword_modes_and_letter_case() {
    let (latin1, _, _) =
        encoding_rs::WINDOWS_1252.encode("<h1>On Sale Soon</h1><p>L'ÉTÉ À PARIS</p><p>v2.14.3</p>");
    let server = Hostile::once(response(&["content-type: text/html; charset=iso-8859-1"], &latin1)).await;
    let url = || server.url();
    let prober = prober();

    // Letter case counts unless the domain says otherwise.
    let report = probe(&prober, &containing(url(), "on sale soon")).await;
    assert_failed(&report, ErrorKind::Keyword, &["does not contain the keyword"]);
    assert_up(&probe(&prober, &checking(url(), "on sale soon", KeywordMode::Contains, true)).await);
    // Folding is Unicode's, on the decoded text.
    assert_up(&probe(&prober, &checking(url(), "l'été à paris", KeywordMode::Contains, true)).await);
    assert_failed(&probe(&prober, &containing(url(), "l'été à paris")).await, ErrorKind::Keyword, &[]);

    // Must not contain.
    let report = probe(&prober, &checking(url(), "Sold Out", KeywordMode::NotContains, false)).await;
    assert_up(&report);
    assert_eq!(report.keyword_matched, Some(false));
    let report = probe(&prober, &checking(url(), "on sale", KeywordMode::NotContains, true)).await;
    assert_failed(&report, ErrorKind::Keyword, &["contains the keyword, which it must not"]);
    assert_eq!(report.keyword_matched, Some(true), "the keyword was found: a fact, not the verdict");

    // Regular expressions.
    let report = probe(&prober, &checking(url(), r"v2\.\d+\.\d+", KeywordMode::Regex, false)).await;
    assert_up(&report);
    assert_eq!(report.keyword_matched, Some(true));
    assert_up(&probe(&prober, &checking(url(), r"été\s+à", KeywordMode::Regex, true)).await);
    let report = probe(&prober, &checking(url(), r"v3\.\d+", KeywordMode::Regex, false)).await;
    assert_failed(&report, ErrorKind::Keyword, &["does not match the pattern"]);
    let report = probe(&prober, &checking(url(), "(unclosed", KeywordMode::Regex, false)).await;
    assert_failed(&report, ErrorKind::Keyword, &["the keyword pattern is invalid"]);
}

// ---------------------------------------------------------------------------------------------
// Stalled bodies

/// A `200` with `Content-Length: 100000` that sends the first 2 kB (`first` at its start)
/// and then nothing.
async fn stalled_after_2kb(first: &str) -> Hostile {
    let mut sent = first.as_bytes().to_vec();
    sent.resize(2048, b'.');
    Hostile::start(
        vec![head(&["content-length: 100000", "content-type: text/plain"]), sent],
        Duration::ZERO,
        Then::Hold,
    )
    .await
}

#[tokio::test]
async fn a_stalled_body_is_a_timeout_with_its_status_and_first_byte_kept() {
    let server = stalled_after_2kb("hello").await;
    let timeout_ms = 1000;
    for config in [plain(server.url()), containing(server.url(), "absent")] {
        let config = DomainConfig { timeout_ms, ..config };
        let report = probe(&prober(), &config).await;
        assert_failed(
            &report,
            ErrorKind::Timeout,
            &[
                "total timeout of 1000 ms exceeded during reading the body",
                "2048 of 100000 body bytes received",
            ],
        );
        assert_eq!(report.status, Some(200));
        assert_eq!(report.status_matched, Some(true));
        let ttfb = report.timings.ttfb_ms.expect("the head arrived");
        assert!(ttfb < f64::from(timeout_ms), "{:?}", report.timings);
        assert!(report.timings.total_ms >= f64::from(timeout_ms), "{:?}", report.timings);
        assert!(report.timings.total_ms < f64::from(timeout_ms) + 3000.0, "{:?}", report.timings);
        assert_eq!(report.keyword_matched, None, "no verdict on the body");
        assert_eq!(report.body_wire_bytes, 2048);
    }
}

#[tokio::test]
async fn a_body_stalled_inside_a_chunk_is_a_timeout() {
    let pieces = vec![head(&["transfer-encoding: chunked"]), b"400\r\nonly part of the chunk".to_vec()];
    let server = Hostile::start(pieces, Duration::ZERO, Then::Hold).await;
    let config = DomainConfig { timeout_ms: 800, ..plain(server.url()) };
    let report = probe(&prober(), &config).await;
    assert_failed(&report, ErrorKind::Timeout, &["reading the body"]);
    assert_eq!(report.status, Some(200));
}

#[tokio::test]
async fn the_verdict_ends_the_probe_even_if_the_body_then_stalls() {
    let server = stalled_after_2kb("status: healthy").await;
    let timeout_ms = 10_000;
    let report = probe(&prober(), &DomainConfig { timeout_ms, ..containing(server.url(), "healthy") }).await;
    assert_up(&report);
    assert_eq!(report.keyword_matched, Some(true));
    assert!(
        report.timings.total_ms < f64::from(timeout_ms) / 2.0,
        "ended at the verdict: {:?}",
        report.timings
    );

    // So does a pattern.
    let pattern = checking(server.url(), r"status: \w+", KeywordMode::Regex, false);
    let report = probe(&prober(), &DomainConfig { timeout_ms, ..pattern }).await;
    assert_up(&report);
    assert!(report.timings.total_ms < f64::from(timeout_ms) / 2.0, "{:?}", report.timings);

    // A forbidden keyword seen early fails at once too.
    let forbidden = checking(server.url(), "healthy", KeywordMode::NotContains, false);
    let report = probe(&prober(), &DomainConfig { timeout_ms, ..forbidden }).await;
    assert_failed(&report, ErrorKind::Keyword, &["must not"]);
    assert!(report.timings.total_ms < f64::from(timeout_ms) / 2.0, "{:?}", report.timings);
}

#[tokio::test]
async fn a_slow_body_that_completes_in_time_is_up() {
    let body = b"status OK, sent slowly".to_vec();
    let mut pieces = vec![head(&[&format!("content-length: {}", body.len())])];
    pieces.extend(body.chunks(2).map(<[u8]>::to_vec));
    let server = Hostile::start(pieces, Duration::from_millis(40), Then::Close).await;
    let report = probe(&prober(), &DomainConfig { timeout_ms: 10_000, ..plain(server.url()) }).await;
    assert_up(&report);
    assert_eq!(report.body_bytes, body.len() as u64);
    let (ttfb, total) = (report.timings.ttfb_ms.unwrap(), report.timings.total_ms);
    assert!(total >= 400.0 && ttfb < total, "the whole body was waited for: {:?}", report.timings);
}

// ---------------------------------------------------------------------------------------------
// Bodies cut short

/// A `200` declaring `Content-Length: 1000` that sends the first 32 bytes (`first` at their
/// start) and closes the connection.
async fn truncated_after_32(first: &str) -> Hostile {
    let mut sent = first.as_bytes().to_vec();
    sent.resize(32, b'.');
    Hostile::start(
        vec![head(&["content-length: 1000", "content-type: text/plain"]), sent],
        Duration::ZERO,
        Then::Close,
    )
    .await
}

#[tokio::test]
async fn a_body_cut_short_of_its_content_length_is_down_and_says_how_far_it_got() {
    let server = truncated_after_32("hello").await;
    // Without a body check, with a keyword it never reached, and with a forbidden keyword
    // (whose absence a cut-off body cannot show): each a broken response, not a verdict on the
    // keyword and not a timeout.
    for config in [
        plain(server.url()),
        containing(server.url(), "absent"),
        checking(server.url(), "error", KeywordMode::NotContains, false),
        checking(server.url(), "^never", KeywordMode::Regex, false),
    ] {
        let report = probe(&prober(), &DomainConfig { timeout_ms: 10_000, ..config }).await;
        assert_failed(
            &report,
            ErrorKind::Http,
            &["the body ended after 32 of 1000 bytes", "closed before the declared content-length"],
        );
        assert_eq!(report.status, Some(200), "the head is kept");
        assert_eq!(report.body_wire_bytes, 32);
        assert!(report.timings.total_ms < 5_000.0, "decided at the close: {:?}", report.timings);
    }
}

#[tokio::test]
async fn a_chunked_body_closed_before_its_last_chunk_is_down() {
    // Two whole chunks, then the connection closes without the terminating `0` chunk; and a
    // close in the middle of a chunk.
    for sent in [b"5\r\nhello\r\n6\r\n world\r\n".to_vec(), b"400\r\nonly part".to_vec()] {
        let server =
            Hostile::start(vec![head(&["transfer-encoding: chunked"]), sent], Duration::ZERO, Then::Close)
                .await;
        for config in [plain(server.url()), containing(server.url(), "absent")] {
            let report = probe(&prober(), &DomainConfig { timeout_ms: 10_000, ..config }).await;
            assert_failed(&report, ErrorKind::Http, &["the body ended after", "inside the chunked body"]);
            assert_eq!(report.status, Some(200));
        }
    }
}

#[tokio::test]
async fn a_compressed_body_cut_short_is_down_not_undecodable() {
    let whole = Encoding::Gzip.encode(&page("status OK"));
    let cut = &whole[..whole.len() / 2];
    let pieces = vec![
        head(&[
            &format!("content-length: {}", whole.len()),
            "content-encoding: gzip",
            "content-type: text/html",
        ]),
        cut.to_vec(),
    ];
    let server = Hostile::start(pieces, Duration::ZERO, Then::Close).await;
    for config in [plain(server.url()), containing(server.url(), "absent")] {
        let report = probe(&prober(), &DomainConfig { timeout_ms: 10_000, ..config }).await;
        let expected = format!("the body ended after {} of {} bytes", cut.len(), whole.len());
        assert_failed(&report, ErrorKind::Http, &[&expected]);
    }
}

#[tokio::test]
async fn a_keyword_found_before_the_body_breaks_off_is_the_verdict() {
    // The verdict is made when the keyword is seen (total_ms ends there); what the rest of
    // the body then does is not waited for, as with a body that stalls after it.
    let server = truncated_after_32("status: healthy").await;
    let report = probe(&prober(), &containing(server.url(), "healthy")).await;
    assert_up(&report);
    assert_eq!(report.keyword_matched, Some(true));
}

// ---------------------------------------------------------------------------------------------
// Response heads

fn cookies(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("Set-Cookie: c{i}={}; Path=/", "x".repeat(40))).collect()
}

#[tokio::test]
async fn a_hundred_and_fifty_set_cookie_headers_are_fine() {
    let headers = cookies(150);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let server = Hostile::once(response(&headers, b"OK")).await;
    let report = probe(&prober(), &containing(server.url(), "OK")).await;
    assert_up(&report);
}

#[tokio::test]
async fn too_many_headers_name_the_limit() {
    let headers = cookies(300);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let server = Hostile::once(response(&headers, b"OK")).await;
    let report = probe(&prober(), &plain(server.url())).await;
    assert_failed(
        &report,
        ErrorKind::Http,
        &["301 header fields", "more than the limit of 256 (max_response_headers)"],
    );
    let roomy = prober_with(ProbeSettings { max_response_headers: 400, ..settings() });
    assert_up(&probe(&roomy, &plain(server.url())).await);

    // The same head arriving in pieces: the parser may give up before the head is complete.
    let pieces: Vec<Vec<u8>> = response(&headers, b"OK").chunks(1000).map(<[u8]>::to_vec).collect();
    let dripping = Hostile::start(pieces, Duration::from_millis(5), Then::Close).await;
    let report = probe(&prober(), &plain(dripping.url())).await;
    assert_failed(
        &report,
        ErrorKind::Http,
        &["header fields, more than the limit of 256 (max_response_headers)"],
    );
}

#[tokio::test]
async fn too_large_a_head_names_the_limit() {
    let headers: Vec<String> = (0..300).map(|i| format!("X-Filler-{i}: {}", "y".repeat(1000))).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let server = Hostile::once(response(&headers, b"OK")).await;
    let report = probe(&prober(), &plain(server.url())).await;
    assert_failed(&report, ErrorKind::Http, &["larger than the limit of 65536 bytes (max_header_bytes)"]);

    let roomy =
        prober_with(ProbeSettings { max_header_bytes: 512 * 1024, max_response_headers: 400, ..settings() });
    assert_up(&probe(&roomy, &plain(server.url())).await);
}

#[tokio::test]
async fn a_control_byte_names_its_header() {
    let mut raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Fine: yes\r\nSet-Cookie: incap=ab".to_vec();
    raw.extend_from_slice(b"\x01cd; path=/\r\n\r\nOK");
    let server = Hostile::once(raw).await;
    let report = probe(&prober(), &plain(server.url())).await;
    assert_failed(&report, ErrorKind::Http, &["response header \"set-cookie\" has an invalid byte 0x01"]);
}

#[tokio::test]
async fn trailing_whitespace_and_obs_text_are_legal() {
    let raw =
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Test: value \t\r\nX-Obs: caf\xe9\r\n\r\nOK".to_vec();
    let server = Hostile::once(raw).await;
    assert_up(&probe(&prober(), &containing(server.url(), "OK")).await);
}

#[tokio::test]
async fn folded_headers_and_space_before_a_colon_are_read_as_browsers_read_them() {
    // RFC 9112 §5.2: a user agent replaces an obs-fold with a space.
    let folded = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Folded: first\r\n  second\r\n\r\nOK".to_vec();
    let space = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Spaced : value\r\n\r\nOK".to_vec();
    for raw in [folded, space] {
        let server = Hostile::once(raw).await;
        assert_up(&probe(&prober(), &containing(server.url(), "OK")).await);
    }
}

#[tokio::test]
async fn a_content_length_that_gives_no_message_length_is_named() {
    for (raw, expected) in [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nOK".to_vec(),
            "the response has conflicting content-length values (\"2\", \"5\")",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nOK".to_vec(),
            "response header \"content-length\" has an invalid value \"two\"",
        ),
    ] {
        let server = Hostile::once(raw).await;
        let report = probe(&prober(), &plain(server.url())).await;
        assert_failed(&report, ErrorKind::Http, &[expected]);
    }
}
