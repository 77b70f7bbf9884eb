//! From decoded body bytes to text: which charset a body is in and a streaming decoder to
//! UTF-8 (encoding_rs, the WHATWG Encoding Standard's labels and decoders).
//!
//! The charset comes, in order of precedence, from a byte-order mark, the `charset` parameter
//! of `Content-Type`, a `<meta charset>` or `<meta http-equiv="content-type">` in the first
//! 1024 bytes of an HTML body (or a body of no declared type), and otherwise UTF-8. Bytes that
//! are invalid in the charset become U+FFFD, as in a browser.

use encoding_rs::{CoderResult, Encoding, UTF_8};

/// How many bytes the `<meta>` prescan looks at (the HTML standard's figure).
pub const PRESCAN_BYTES: usize = 1024;

/// What `Content-Type` says about the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The encoding of a recognised `charset` parameter.
    pub encoding: Option<&'static Encoding>,
    /// A `charset` label that names no known encoding, kept to be reported.
    pub unknown_label: Option<String>,
    /// Whether a `<meta>` declaration may decide: HTML, or no media type at all.
    pub prescan: bool,
}

impl Declared {
    /// Reads a `Content-Type` value (`None`: the header is absent).
    pub fn from_content_type(value: Option<&[u8]>) -> Declared {
        let Some(value) = value else {
            return Declared { encoding: None, unknown_label: None, prescan: true };
        };
        let text = String::from_utf8_lossy(value);
        let mut parts = text.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let label = parts.find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| value.trim().trim_matches('"').trim().to_owned())
        });
        let prescan = media.is_empty() || media == "text/html" || media == "application/xhtml+xml";
        match label {
            None => Declared { encoding: None, unknown_label: None, prescan },
            Some(label) => match Encoding::for_label(label.as_bytes()) {
                Some(encoding) => Declared { encoding: Some(encoding), unknown_label: None, prescan: false },
                None => Declared {
                    encoding: None,
                    unknown_label: Some(label.chars().take(40).collect()),
                    prescan,
                },
            },
        }
    }
}

/// The charset a `<meta>` element declares within `head` (the body's first bytes), following
/// the HTML standard's prescan in simplified form: comments are skipped, attribute names are
/// matched case-insensitively, a UTF-16 declaration means UTF-8 (the bytes were readable as
/// ASCII) and `x-user-defined` means windows-1252.
pub fn prescan_meta(head: &[u8]) -> Option<&'static Encoding> {
    let head = &head[..head.len().min(PRESCAN_BYTES)];
    let lower = head.to_ascii_lowercase();
    let mut at = 0;
    while at < lower.len() {
        let rest = &lower[at..];
        if rest.starts_with(b"<!--") {
            at += find(&rest[4..], b"-->").map_or(rest.len(), |end| end + 7);
        } else if rest.starts_with(b"<meta")
            && rest.get(5).is_some_and(|b| b.is_ascii_whitespace() || *b == b'/')
        {
            let (attrs, used) = attributes(&rest[5..]);
            at += 5 + used;
            if let Some(encoding) = meta_charset(&attrs) {
                return Some(encoding);
            }
        } else {
            at += 1;
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The attributes of a tag whose name has been read, and how many bytes they took (up to and
/// including the `>`).
fn attributes(input: &[u8]) -> (Vec<(String, String)>, usize) {
    let mut attrs = Vec::new();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < input.len() && (input[*i].is_ascii_whitespace() || input[*i] == b'/') {
            *i += 1;
        }
    };
    loop {
        skip_space(&mut i);
        if i >= input.len() {
            return (attrs, i);
        }
        if input[i] == b'>' {
            return (attrs, i + 1);
        }
        let start = i;
        while i < input.len() && !matches!(input[i], b'=' | b'>' | b'/') && !input[i].is_ascii_whitespace() {
            i += 1;
        }
        let name = String::from_utf8_lossy(&input[start..i]).into_owned();
        while i < input.len() && input[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < input.len() && input[i] == b'=' {
            i += 1;
            while i < input.len() && input[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < input.len() && (input[i] == b'"' || input[i] == b'\'') {
                let quote = input[i];
                let begin = i + 1;
                let end = input[begin..].iter().position(|b| *b == quote).map_or(input.len(), |p| begin + p);
                value = String::from_utf8_lossy(&input[begin..end]).into_owned();
                i = (end + 1).min(input.len());
            } else {
                let begin = i;
                while i < input.len() && input[i] != b'>' && !input[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = String::from_utf8_lossy(&input[begin..i]).into_owned();
            }
        }
        if !name.is_empty() {
            attrs.push((name, value));
        }
    }
}

fn meta_charset(attrs: &[(String, String)]) -> Option<&'static Encoding> {
    let get = |name: &str| attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let label = match get("charset") {
        Some(label) => label.trim().to_owned(),
        None if get("http-equiv").is_some_and(|v| v.trim() == "content-type") => {
            charset_in_content(get("content")?)?
        }
        None => return None,
    };
    let encoding = Encoding::for_label(label.as_bytes()).filter(|e| *e != encoding_rs::REPLACEMENT)?;
    Some(if encoding == encoding_rs::UTF_16BE || encoding == encoding_rs::UTF_16LE {
        UTF_8
    } else if encoding == encoding_rs::X_USER_DEFINED {
        encoding_rs::WINDOWS_1252
    } else {
        encoding
    })
}

/// The label after `charset=` in a `content` attribute (`text/html; charset=gbk`).
fn charset_in_content(content: &str) -> Option<String> {
    let at = content.find("charset")?;
    let rest = content[at + "charset".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let rest = rest.trim_start_matches(['"', '\'']);
    let end =
        rest.find(|c: char| c == '"' || c == '\'' || c == ';' || c.is_whitespace()).unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_owned())
}

/// Turns a body's bytes into UTF-8 text as they arrive. While the charset may still be
/// declared by a `<meta>`, up to [`PRESCAN_BYTES`] are held back — except their leading ASCII
/// run (no byte above 0x7f, no ESC), which every charset the prescan can pick decodes the
/// same, so a keyword early in a short or stalled page is still seen at once.
#[derive(Debug)]
pub struct TextDecoder {
    declared: Declared,
    /// Bytes held for the prescan; `None` once decoding started.
    pending: Option<Vec<u8>>,
    /// How many of the held bytes were already given out as ASCII text.
    emitted: usize,
    decoder: Option<encoding_rs::Decoder>,
    /// The encoding chosen before a byte-order mark is seen.
    chosen: &'static Encoding,
    /// Where the charset came from, for messages.
    source: &'static str,
}

impl TextDecoder {
    /// A decoder for a body whose `Content-Type` said `declared`.
    pub fn new(declared: Declared) -> TextDecoder {
        let (pending, decoder, chosen, source) = match declared.encoding {
            Some(encoding) => (None, Some(encoding.new_decoder()), encoding, "content-type"),
            None if declared.prescan => (Some(Vec::new()), None, UTF_8, "default"),
            None => (None, Some(UTF_8.new_decoder()), UTF_8, "default"),
        };
        TextDecoder { declared, pending, emitted: 0, decoder, chosen, source }
    }

    /// Decodes the next bytes; the text may be empty while the prescan waits for more.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        if let Some(pending) = &mut self.pending {
            pending.extend_from_slice(bytes);
            if pending.len() < PRESCAN_BYTES {
                let ascii =
                    pending[self.emitted..].iter().take_while(|b| b.is_ascii() && **b != 0x1b).count();
                let run = &pending[self.emitted..self.emitted + ascii];
                out.push_str(std::str::from_utf8(run).expect("ascii is utf-8"));
                self.emitted += ascii;
                return;
            }
            let held = self.start();
            self.decode(&held, false, out);
            return;
        }
        self.decode(bytes, false, out);
    }

    /// Ends the text: what the decoder still held.
    pub fn finish(&mut self, out: &mut String) {
        let held = if self.pending.is_some() { self.start() } else { Vec::new() };
        self.decode(&held, true, out);
    }

    /// The charset used and where it came from, for messages: `gbk (content-type)`,
    /// `shift_jis (meta)`, `utf-8 (byte-order mark)`, `utf-8 (default; unknown charset "x")`.
    pub fn describe(&self) -> String {
        let (encoding, source) = match &self.decoder {
            Some(decoder) if decoder.encoding() != self.chosen => (decoder.encoding(), "byte-order mark"),
            _ => (self.chosen, self.source),
        };
        let name = encoding.name().to_ascii_lowercase();
        match &self.declared.unknown_label {
            Some(label) if source == "default" => {
                format!(
                    "{name} ({source}; content-type names unknown charset {:?})",
                    label.escape_debug().to_string()
                )
            }
            _ => format!("{name} ({source})"),
        }
    }

    /// Ends the prescan: picks the charset and returns the held bytes not yet given out.
    fn start(&mut self) -> Vec<u8> {
        let mut held = self.pending.take().unwrap_or_default();
        if let Some(encoding) = prescan_meta(&held) {
            self.chosen = encoding;
            self.source = "meta";
        }
        if self.emitted > 0 {
            // The text started with ASCII, so there is no byte-order mark to sniff.
            self.decoder = Some(self.chosen.new_decoder_without_bom_handling());
            held.drain(..self.emitted);
        } else {
            self.decoder = Some(self.chosen.new_decoder());
        }
        held
    }

    fn decode(&mut self, mut bytes: &[u8], last: bool, out: &mut String) {
        let Some(decoder) = &mut self.decoder else { return };
        loop {
            let room = decoder.max_utf8_buffer_length(bytes.len()).unwrap_or(bytes.len() * 3 + 16);
            out.reserve(room);
            let (result, read, _) = decoder.decode_to_string(bytes, out, last);
            bytes = &bytes[read..];
            match result {
                CoderResult::InputEmpty => return,
                CoderResult::OutputFull => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(declared: Declared, bytes: &[u8], chunk: usize) -> (String, String) {
        let mut decoder = TextDecoder::new(declared);
        let mut out = String::new();
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.push(piece, &mut out);
        }
        decoder.finish(&mut out);
        (out, decoder.describe())
    }

    fn content_type(value: &str) -> Declared {
        Declared::from_content_type(Some(value.as_bytes()))
    }

    #[test]
    fn content_type_charsets() {
        let d = content_type("text/html; charset=GBK");
        assert_eq!(d.encoding, Some(encoding_rs::GBK));
        assert!(!d.prescan);
        assert_eq!(content_type("text/plain;charset=\"shift_jis\"").encoding, Some(encoding_rs::SHIFT_JIS));
        // ISO-8859-1 is windows-1252 on the web.
        assert_eq!(content_type("text/html; charset=iso-8859-1").encoding, Some(encoding_rs::WINDOWS_1252));
        let unknown = content_type("text/html; charset=klingon");
        assert_eq!(
            (unknown.encoding, unknown.unknown_label.as_deref(), unknown.prescan),
            (None, Some("klingon"), true)
        );
        assert!(content_type("text/html").prescan);
        assert!(!content_type("application/json").prescan);
        assert!(Declared::from_content_type(None).prescan);
    }

    #[test]
    fn meta_declarations() {
        assert_eq!(prescan_meta(b"<html><head><meta charset=\"gbk\">"), Some(encoding_rs::GBK));
        assert_eq!(prescan_meta(b"<META CHARSET=Shift_JIS>"), Some(encoding_rs::SHIFT_JIS));
        assert_eq!(
            prescan_meta(b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=euc-jp\">"),
            Some(encoding_rs::EUC_JP)
        );
        assert_eq!(
            prescan_meta(b"<meta content='text/html;charset=big5' http-equiv='content-type'/>"),
            Some(encoding_rs::BIG5)
        );
        assert_eq!(prescan_meta(b"<meta charset=utf-16le>"), Some(UTF_8));
        assert_eq!(prescan_meta(b"<!-- <meta charset=gbk> --><p>"), None, "comments are skipped");
        assert_eq!(prescan_meta(b"<meta name=viewport content=\"charset=gbk\">"), None, "not a declaration");
        assert_eq!(prescan_meta(b"<metadata charset=gbk>"), None);
        let late = [vec![b' '; PRESCAN_BYTES], b"<meta charset=gbk>".to_vec()].concat();
        assert_eq!(prescan_meta(&late), None, "only the first 1024 bytes count");
    }

    #[test]
    fn decodes_declared_charsets_in_any_chunking() {
        let (gbk, _, _) = encoding_rs::GBK.encode("<p>欢迎光临</p>");
        for chunk in [1, 3, 1024] {
            let (text, how) = decode_all(content_type("text/html; charset=gbk"), &gbk, chunk);
            assert_eq!(text, "<p>欢迎光临</p>");
            assert_eq!(how, "gbk (content-type)");
        }
        let page = format!(
            "<html><head><meta charset=\"shift_jis\"></head><body>{}ようこそ</body>",
            " ".repeat(2000)
        );
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(&page);
        for chunk in [1, 100, 5000] {
            let (text, how) = decode_all(content_type("text/html"), &sjis, chunk);
            assert_eq!(text, page);
            assert_eq!(how, "shift_jis (meta)");
        }
    }

    #[test]
    fn a_leading_ascii_run_is_given_out_before_the_prescan_ends() {
        let mut decoder = TextDecoder::new(content_type("text/html"));
        let mut out = String::new();
        decoder.push(b"<p>status OK</p> caf", &mut out);
        assert_eq!(out, "<p>status OK</p> caf", "no need to wait for 1024 bytes");
        decoder.push(b"\xe9 <meta charset=iso-8859-1>", &mut out);
        assert_eq!(out, "<p>status OK</p> caf", "held from the first non-ascii byte");
        decoder.finish(&mut out);
        assert_eq!(out, "<p>status OK</p> café <meta charset=iso-8859-1>");
        assert_eq!(decoder.describe(), "windows-1252 (meta)");
    }

    #[test]
    fn a_byte_order_mark_wins_and_is_removed() {
        let (text, how) = decode_all(content_type("text/plain; charset=iso-8859-1"), b"\xef\xbb\xbfOK", 1);
        assert_eq!(text, "OK");
        assert_eq!(how, "utf-8 (byte-order mark)");
        let (text, how) = decode_all(Declared::from_content_type(None), b"\xef\xbb\xbfOK", 2);
        assert_eq!(text, "OK");
        assert_eq!(how, "utf-8 (default)");
    }

    #[test]
    fn short_bodies_unknown_labels_and_bad_bytes() {
        let (text, how) = decode_all(content_type("text/html; charset=klingon"), b"caf\xc3\xa9 \xff", 4);
        assert_eq!(text, "café \u{fffd}");
        assert!(how.contains("unknown charset") && how.contains("klingon"), "{how}");
        let (text, _) = decode_all(content_type("text/html; charset=iso-8859-1"), b"caf\xe9", 1);
        assert_eq!(text, "café");
    }
}
