//! The response body: a bounded read, and the body check — content decoding
//! ([`super::decode`]), charset decoding to text ([`super::text`]) and the keyword or pattern
//! match — all streaming. The body is never buffered whole, except the decoded text of a
//! regular-expression check (bounded by the body limit).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use shared::{KeywordCheck, KeywordMode};

use super::decode::{Coding, DecodeError, Decoder};
use super::text::{Declared, TextDecoder};
/// Finds a byte string in a stream fed chunk by chunk.
#[derive(Debug, Clone)]
pub struct KeywordScanner {
    needle: Vec<u8>,
    /// The end of the stream so far, at most `needle.len() - 1` bytes.
    tail: Vec<u8>,
}

impl KeywordScanner {
    /// A scanner for a non-empty keyword (an empty one is found in any stream).
    pub fn new(keyword: &str) -> Self {
        Self { needle: keyword.as_bytes().to_vec(), tail: Vec::new() }
    }

    /// Feeds the next chunk; true when the keyword ends inside it (or already ended earlier in
    /// the same chunk).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let n = self.needle.len();
        if n == 0 {
            return true;
        }
        let keep = n - 1;
        // An occurrence that starts in the tail ends within the chunk's first `keep` bytes.
        let head = &chunk[..chunk.len().min(keep)];
        if !self.tail.is_empty() {
            let mut seam = Vec::with_capacity(self.tail.len() + head.len());
            seam.extend_from_slice(&self.tail);
            seam.extend_from_slice(head);
            if contains(&seam, &self.needle) {
                return true;
            }
        }
        if contains(chunk, &self.needle) {
            return true;
        }
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
        false
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

/// Matches a [`KeywordCheck`]'s keyword or pattern in text fed piece by piece.
#[derive(Debug)]
pub enum Matcher {
    /// A case-sensitive keyword, as UTF-8 bytes.
    Bytes(KeywordScanner),
    /// A case-insensitive keyword: its escaped regex, run over the last piece and the text
    /// just before it. Every keyword character matches exactly one character of at most 4
    /// bytes, so no match is longer than `window` bytes and a match across pieces is seen.
    Folded { regex: regex::Regex, tail: String, window: usize },
    /// A regular expression, run over all the text so far: on the first piece and again each
    /// time the text has doubled since the last run (so the work stays linear in the body
    /// size, and a match early in a short page that then stalls is still seen), and at the end.
    Pattern { regex: regex::Regex, text: String, checked: usize },
}

impl Matcher {
    /// The matcher for `check`; an invalid pattern is an error naming the problem.
    pub fn new(check: &KeywordCheck) -> Result<Matcher, String> {
        let regex = check.regex().map_err(|e| format!("the keyword pattern is invalid: {e}"))?;
        Ok(match (regex, check.mode) {
            (None, _) => Matcher::Bytes(KeywordScanner::new(&check.pattern)),
            (Some(regex), KeywordMode::Regex) => Matcher::Pattern { regex, text: String::new(), checked: 0 },
            (Some(regex), _) => {
                Matcher::Folded { regex, tail: String::new(), window: 4 * check.pattern.chars().count() }
            }
        })
    }

    /// Feeds the next piece of text; true once a match is certain.
    pub fn feed(&mut self, piece: &str) -> bool {
        match self {
            Matcher::Bytes(scanner) => scanner.feed(piece.as_bytes()),
            Matcher::Folded { regex, tail, window } => {
                tail.push_str(piece);
                if regex.is_match(tail) {
                    return true;
                }
                let mut cut = tail.len().saturating_sub(window.saturating_sub(1));
                while !tail.is_char_boundary(cut) {
                    cut -= 1;
                }
                tail.drain(..cut);
                false
            }
            Matcher::Pattern { regex, text, checked } => {
                text.push_str(piece);
                if text.len() < 2 * *checked {
                    return false;
                }
                *checked = text.len();
                match_before_end(regex, text)
            }
        }
    }

    /// The text ended (`complete`) or was cut at the body limit: whether it matches. On a cut
    /// text a pattern counts only with a match ending before the cut, since `$` or `\b` at
    /// the cut could be false.
    pub fn finish(&mut self, complete: bool) -> bool {
        match self {
            Matcher::Bytes(_) | Matcher::Folded { .. } => false,
            Matcher::Pattern { regex, text, .. } if complete => regex.is_match(text),
            Matcher::Pattern { regex, text, .. } => match_before_end(regex, text),
        }
    }
}

/// A match in text that may continue: certain only if some match ends before the end (a
/// match touching the end could depend on `$` or `\b` there, or grow).
fn match_before_end(regex: &regex::Regex, text: &str) -> bool {
    regex.find_iter(text).any(|m| m.end() < text.len())
}

/// Why a body check stopped without a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The decoded body exceeds the limit and the keyword was not seen in what fits.
    TooLarge,
    /// The body is not valid in its content coding.
    Corrupt(String),
}

/// The body check of one response: wire bytes in, a verdict out.
#[derive(Debug)]
pub struct BodyCheck {
    decoder: Decoder,
    text: TextDecoder,
    matcher: Matcher,
    /// Bytes received on the wire so far.
    pub wire: u64,
    /// Bytes after content decoding so far (the limit applies to these).
    pub decoded: u64,
    /// Whether the keyword or pattern has been seen.
    pub found: bool,
    scratch: Vec<u8>,
    piece: String,
}

impl BodyCheck {
    /// A check of a body in `coding` with charset `declared`, decoding at most `limit` bytes.
    pub fn new(
        check: &KeywordCheck,
        coding: Coding,
        declared: Declared,
        limit: u64,
    ) -> Result<BodyCheck, String> {
        let matcher = Matcher::new(check)?;
        let decoder = Decoder::new(coding, limit).map_err(|e| match e {
            DecodeError::Corrupt(reason) => {
                format!("cannot start the {} decoder: {reason}", coding.as_str())
            }
            DecodeError::TooLarge => "the body limit is zero".to_owned(),
        })?;
        Ok(BodyCheck {
            decoder,
            text: TextDecoder::new(declared),
            matcher,
            wire: 0,
            decoded: 0,
            found: false,
            scratch: Vec::new(),
            piece: String::new(),
        })
    }

    /// The content coding being undone.
    pub fn coding(&self) -> Coding {
        self.decoder.coding()
    }

    /// The charset used and where it came from (see [`TextDecoder::describe`]).
    pub fn charset(&self) -> String {
        self.text.describe()
    }

    /// Feeds the next wire bytes; `Ok(true)` once the keyword or pattern is seen.
    pub fn push(&mut self, wire: &[u8]) -> Result<bool, CheckError> {
        self.wire += wire.len() as u64;
        let decoded = self.decoder.push(wire, &mut self.scratch);
        self.match_scratch();
        match decoded {
            _ if self.found => Ok(true),
            Ok(()) => Ok(false),
            Err(DecodeError::TooLarge) => {
                self.flush_text(false);
                Err(CheckError::TooLarge)
            }
            Err(DecodeError::Corrupt(reason)) => Err(CheckError::Corrupt(reason)),
        }
    }

    /// The body ended: whether the keyword or pattern is in it.
    pub fn finish(&mut self) -> Result<bool, CheckError> {
        let decoded = self.decoder.finish(&mut self.scratch);
        self.match_scratch();
        if self.found {
            return Ok(true);
        }
        match decoded {
            Ok(()) => {
                self.flush_text(true);
                Ok(self.found)
            }
            Err(DecodeError::TooLarge) => Err(CheckError::TooLarge),
            Err(DecodeError::Corrupt(reason)) => Err(CheckError::Corrupt(reason)),
        }
    }

    fn match_scratch(&mut self) {
        self.decoded += self.scratch.len() as u64;
        if self.scratch.is_empty() || self.found {
            self.scratch.clear();
            return;
        }
        self.piece.clear();
        self.text.push(&self.scratch, &mut self.piece);
        self.scratch.clear();
        if !self.piece.is_empty() && self.matcher.feed(&self.piece) {
            self.found = true;
        }
    }

    /// Ends the text (the body ended, or was cut at the limit) and runs the final match.
    fn flush_text(&mut self, complete: bool) {
        if self.found {
            return;
        }
        self.piece.clear();
        self.text.finish(&mut self.piece);
        if (!self.piece.is_empty() && self.matcher.feed(&self.piece)) || self.matcher.finish(complete) {
            self.found = true;
        }
    }
}

/// How a body check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckEnd {
    /// The keyword or pattern was seen; the rest of the body was not read.
    Found,
    /// The body ended without it.
    NotFound,
    /// The decoded body exceeds the limit, without it in what fits.
    TooLarge,
    /// The body cannot be decoded in its content coding.
    Corrupt(String),
}

/// Reads `body` through `check` until a verdict: stops as soon as the keyword or pattern is
/// seen. Errors are the transport's (a body that broke off before its end among them), for
/// the caller to name with what it knows of the exchange.
pub async fn check_body<B>(body: &mut B, check: &mut BodyCheck) -> Result<CheckEnd, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else { continue };
        match check.push(&data) {
            Ok(true) => return Ok(CheckEnd::Found),
            Ok(false) => {}
            Err(CheckError::TooLarge) if check.found => return Ok(CheckEnd::Found),
            Err(CheckError::TooLarge) => return Ok(CheckEnd::TooLarge),
            Err(CheckError::Corrupt(reason)) => return Ok(CheckEnd::Corrupt(reason)),
        }
    }
    Ok(match check.finish() {
        Ok(true) => CheckEnd::Found,
        Ok(false) => CheckEnd::NotFound,
        Err(CheckError::TooLarge) => CheckEnd::TooLarge,
        Err(CheckError::Corrupt(reason)) => CheckEnd::Corrupt(reason),
    })
}

/// How a plain body read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The body ended.
    Ended,
    /// `limit` bytes were read and more were coming.
    LimitReached,
}

/// Reads and discards `body` to its end or to `limit` bytes, counting them in `read` (which
/// stays meaningful when the caller abandons the read on a timeout). Errors are the
/// transport's, as for [`check_body`].
pub async fn read_to_end<B>(body: &mut B, limit: u64, read: &mut u64) -> Result<ReadEnd, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else { continue };
        let room = limit - *read;
        *read += (data.len() as u64).min(room);
        if data.len() as u64 > room || (*read == limit && !body.is_end_stream()) {
            return Ok(ReadEnd::LimitReached);
        }
    }
    Ok(ReadEnd::Ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found_in(keyword: &str, chunks: &[&str]) -> Option<usize> {
        let mut scanner = KeywordScanner::new(keyword);
        chunks.iter().position(|chunk| scanner.feed(chunk.as_bytes()))
    }

    #[test]
    fn finds_a_keyword_inside_one_chunk() {
        assert_eq!(found_in("needle", &["hay needle hay"]), Some(0));
        assert_eq!(found_in("needle", &["hay", "hay needle"]), Some(1));
        assert_eq!(found_in("needle", &["hay", "hay"]), None);
    }

    #[test]
    fn finds_a_keyword_split_across_chunks() {
        assert_eq!(found_in("needle", &["xx nee", "dle xx"]), Some(1));
        assert_eq!(found_in("needle", &["xx n", "eedle"]), Some(1));
        assert_eq!(found_in("needle", &["xx needl", "e"]), Some(1));
        // Spread over many chunks shorter than the keyword.
        assert_eq!(found_in("needle", &["n", "e", "", "e", "d", "l", "e"]), Some(6));
        assert_eq!(found_in("needle", &["ne", "ed", "le"]), Some(2));
    }

    #[test]
    fn does_not_invent_matches_from_stale_bytes() {
        // The tail must be the stream's real end, not bytes from before a long chunk.
        assert_eq!(found_in("needle", &["nee", "xxxxxxxxxxxx", "dle"]), None);
        assert_eq!(found_in("needle", &["needl", "x", "e"]), None);
        assert_eq!(found_in("abcabd", &["abcab", "cabd"]), Some(1));
    }

    #[test]
    fn single_byte_and_multibyte_keywords() {
        assert_eq!(found_in("z", &["abc", "xyz"]), Some(1));
        assert_eq!(found_in("größe", &["gr\u{f6}", "\u{df}e"]), Some(1));
        let word = "größe".as_bytes();
        let mut scanner = KeywordScanner::new("größe");
        assert!(!scanner.feed(&word[..3]));
        assert!(scanner.feed(&word[3..]));
    }

    #[test]
    fn agrees_with_a_whole_body_search_for_every_split() {
        let body = "the quick brown fox jumps over the lazy dog";
        for keyword in ["fox", "lazy dog", "the quick", "o", "dog!", "zz"] {
            let expected = body.contains(keyword);
            for a in 0..=body.len() {
                for b in a..=body.len() {
                    let chunks = [&body[..a], &body[a..b], &body[b..]];
                    assert_eq!(found_in(keyword, &chunks).is_some(), expected, "{keyword} split {a}/{b}");
                }
            }
        }
    }

    fn check(pattern: &str, mode: KeywordMode, case_insensitive: bool) -> KeywordCheck {
        KeywordCheck { pattern: pattern.into(), mode, case_insensitive }
    }

    /// Feeds `pieces` to a matcher; whether it matched at any point or at the end.
    fn matches(check: &KeywordCheck, pieces: &[&str]) -> bool {
        let mut matcher = Matcher::new(check).unwrap();
        pieces.iter().any(|p| matcher.feed(p)) || matcher.finish(true)
    }

    #[test]
    fn case_insensitive_keywords_fold_unicode_across_pieces() {
        let folded = check("ÉTÉ À PARIS", KeywordMode::Contains, true);
        assert!(matches(&folded, &["un été à paris"]));
        assert!(matches(&folded, &["un é", "té à pa", "ris"]));
        assert!(matches(&folded, &["un ", "é", "t", "é", " ", "à", " paris"]));
        assert!(!matches(&folded, &["un été à lyon"]));
        let greek = check("ΟΔΟΣ", KeywordMode::Contains, true);
        assert!(matches(&greek, &["η οδος", "ς"]), "final sigma folds to sigma");
        let sensitive = check("On Sale Soon", KeywordMode::Contains, false);
        assert!(!matches(&sensitive, &["on sale soon"]));
        let every_split = "xx Straße yy";
        let keyword = check("STRASSE", KeywordMode::Contains, true);
        for cut in (0..=every_split.len()).filter(|c| every_split.is_char_boundary(*c)) {
            let (a, b) = every_split.split_at(cut);
            // Simple case folding maps one character to one: ß is not "ss".
            assert!(!matches(&keyword, &[a, b]));
        }
        let keyword = check("STRAßE", KeywordMode::Contains, true);
        for cut in (0..=every_split.len()).filter(|c| every_split.is_char_boundary(*c)) {
            let (a, b) = every_split.split_at(cut);
            assert!(matches(&keyword, &[a, b]), "split at {cut}");
        }
    }

    #[test]
    fn patterns_see_the_whole_text_and_anchor_at_its_real_end() {
        let version = check(r"version: \d+\.\d+", KeywordMode::Regex, false);
        assert!(matches(&version, &["build ", "version: 1", "2.3", " ok"]));
        assert!(!matches(&version, &["version: x"]));
        let tail = check(r"done$", KeywordMode::Regex, false);
        let mut matcher = Matcher::new(&tail).unwrap();
        let long = "x".repeat(64 * 1024);
        assert!(!matcher.feed(&format!("{long}done")), "`$` at the end of a prefix is not certain");
        assert!(!matcher.feed(" and more"));
        assert!(!matcher.finish(true));
        let mut matcher = Matcher::new(&tail).unwrap();
        assert!(!matcher.feed(&format!("{long}done")));
        assert!(matcher.finish(true), "the body really ends with it");
        let mut cut = Matcher::new(&tail).unwrap();
        assert!(!cut.feed("done"));
        assert!(!cut.finish(false), "a body cut at the limit does not end there");
        let early = check(r"(?i)STATUS:\s+OK\b", KeywordMode::Regex, false);
        let mut matcher = Matcher::new(&early).unwrap();
        assert!(matcher.feed(&format!("status: ok {long}")), "decided on the first piece");
        let mut matcher = Matcher::new(&early).unwrap();
        assert!(!matcher.feed("twenty bytes of text"));
        assert!(!matcher.feed("status: ok "), "not yet run again: the text has not doubled");
        assert!(matcher.feed(&long), "run again once it has");
    }

    #[test]
    fn invalid_patterns_are_named() {
        let error = Matcher::new(&check("(unclosed", KeywordMode::Regex, false)).unwrap_err();
        assert!(error.starts_with("the keyword pattern is invalid"), "{error}");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn a_body_check_decodes_then_matches() {
        let (gbk, _, _) = encoding_rs::GBK.encode("<p>欢迎光临</p>");
        let wire = gzip(&gbk);
        let declared = Declared::from_content_type(Some(b"text/html; charset=gbk"));
        let mut body =
            BodyCheck::new(&KeywordCheck::contains("欢迎光临"), Coding::Gzip, declared.clone(), 1000)
                .unwrap();
        let found = wire.chunks(3).any(|piece| body.push(piece).unwrap()) || body.finish().unwrap();
        assert!(found);
        assert!(body.decoded <= gbk.len() as u64);
        assert_eq!(body.charset(), "gbk (content-type)");

        let mut bomb = BodyCheck::new(&KeywordCheck::contains("x"), Coding::Gzip, declared, 10_000).unwrap();
        let wire = gzip(&vec![0; 1 << 20]);
        let outcome = wire.chunks(1024).map(|piece| bomb.push(piece)).find(|r| r.is_err());
        assert_eq!(outcome, Some(Err(CheckError::TooLarge)));
        assert_eq!(bomb.decoded, 10_000);
        assert!(bomb.wire < 2_000, "stopped early on the wire: {}", bomb.wire);
    }

    #[test]
    fn a_keyword_within_the_limit_counts_even_when_the_body_is_larger() {
        let declared = Declared::from_content_type(Some(b"text/plain"));
        let mut body =
            BodyCheck::new(&KeywordCheck::contains("key"), Coding::Identity, declared, 11).unwrap();
        assert_eq!(body.push(b"aaaaaaa key and much more"), Ok(true));
        assert_eq!(body.decoded, 11);
    }

    fn frames(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let frames = chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c))));
        StreamBody::new(futures::stream::iter(frames.collect::<Vec<_>>())).boxed()
    }

    #[tokio::test]
    async fn checks_stop_at_the_verdict_and_reads_at_the_limit() {
        let plain = || Declared::from_content_type(None);
        let mut check =
            BodyCheck::new(&KeywordCheck::contains("key"), Coding::Identity, plain(), 100).unwrap();
        let end = check_body(&mut frames(&[b"aaa k", b"ey bbb", b"ccc"]), &mut check).await;
        assert_eq!(end, Ok(CheckEnd::Found));
        assert_eq!(check.wire, 11, "stopped at the frame holding the keyword");

        let mut check =
            BodyCheck::new(&KeywordCheck::contains("key"), Coding::Identity, plain(), 100).unwrap();
        assert_eq!(check_body(&mut frames(&[b"aaa", b"bbb"]), &mut check).await, Ok(CheckEnd::NotFound));

        let mut check = BodyCheck::new(&KeywordCheck::contains("key"), Coding::Identity, plain(), 4).unwrap();
        assert_eq!(check_body(&mut frames(&[b"aaa", b"key"]), &mut check).await, Ok(CheckEnd::TooLarge));
        assert_eq!(check.decoded, 4);

        let mut read = 0;
        assert_eq!(
            read_to_end(&mut frames(&[b"aaa", b"bbb", b"ccc"]), 5, &mut read).await,
            Ok(ReadEnd::LimitReached)
        );
        assert_eq!(read, 5);
        let mut read = 0;
        assert_eq!(read_to_end(&mut frames(&[b"aaa", b"bbb"]), 7, &mut read).await, Ok(ReadEnd::Ended));
        assert_eq!(read, 6);
    }
}
