//! The response head as it came off the wire, for naming what is wrong with it.
//!
//! hyper reports a refused head with a generic reason ("message head is too large" for both
//! too many header fields and too many bytes; "invalid HTTP header parsed" without the
//! header). [`Recorder`] wraps the connection and keeps a copy of the first bytes the server
//! sent, up to the end of the head or a cap; when hyper refuses the head, [`diagnose`] reads
//! that copy and names the limit that was hit or the offending header.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The head limits a probe applies, from the agent's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Most header fields in a response head (`max_response_headers`).
    pub max_headers: usize,
    /// Most bytes in a response head, status line included (`max_header_bytes`).
    pub max_bytes: usize,
}

/// The copy of the head shared by a [`Recorder`] and the probe. The lock is only held to
/// append or read a copy, never across an await.
#[derive(Debug, Clone, Default)]
pub struct Recording(Arc<Mutex<Vec<u8>>>);

impl Recording {
    /// The bytes recorded so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// Passes a connection through, copying what the server sends until the head ends (an empty
/// line) or `cap` bytes were copied.
#[derive(Debug)]
pub struct Recorder<IO> {
    inner: IO,
    recording: Recording,
    cap: usize,
    done: bool,
}

impl<IO> Recorder<IO> {
    /// Wraps `inner`, recording at most `cap` bytes; the recording is read through the
    /// returned handle.
    pub fn new(inner: IO, cap: usize) -> (Recorder<IO>, Recording) {
        let recording = Recording::default();
        (Recorder { inner, recording: recording.clone(), cap, done: false }, recording)
    }

    fn record(&mut self, bytes: &[u8]) {
        let Ok(mut copy) = self.recording.0.lock() else {
            self.done = true;
            return;
        };
        let from = copy.len().saturating_sub(3);
        let take = bytes.len().min(self.cap.saturating_sub(copy.len()));
        copy.extend_from_slice(&bytes[..take]);
        if copy.len() >= self.cap || head_end(&copy[from..]).is_some() {
            self.done = true;
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Recorder<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.done && matches!(poll, Poll::Ready(Ok(()))) {
            let fresh = buf.filled()[before..].to_vec();
            this.record(&fresh);
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Recorder<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where the head ends (just past its empty line), if it does within `bytes`.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What is wrong with a head hyper refused, from its recorded bytes: the limit exceeded
/// (`too_large`: hyper said the head is too large) or the first header with a byte HTTP does
/// not allow. `None` when the bytes show nothing (the caller keeps hyper's reason).
pub fn diagnose(recorded: &[u8], limits: HeadLimits, too_large: bool) -> Option<String> {
    let end = head_end(recorded);
    let head = &recorded[..end.unwrap_or(recorded.len())];
    let mut lines: Vec<&[u8]> = head.split(|b| *b == b'\n').collect();
    if end.is_none() {
        // The last line may be cut short; only whole lines count.
        lines.pop();
    }
    let fields: Vec<&[u8]> = lines
        .into_iter()
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty() && !matches!(l[0], b' ' | b'\t'))
        .collect();
    if too_large {
        let size = end.unwrap_or(recorded.len());
        if size > limits.max_bytes {
            return Some(format!(
                "the response head is larger than the limit of {} bytes (max_header_bytes)",
                limits.max_bytes
            ));
        }
        if fields.len() > limits.max_headers {
            let count = match end {
                Some(_) => format!("{} header fields", fields.len()),
                None => format!("at least {} header fields", fields.len()),
            };
            return Some(format!(
                "the response has {count}, more than the limit of {} (max_response_headers)",
                limits.max_headers
            ));
        }
        return None;
    }
    fields.iter().find_map(|line| bad_header(line)).or_else(|| bad_length(&fields))
}

/// What is wrong with the head's `Content-Length` fields, if anything: values that disagree
/// (RFC 9112 §6.3: the message length cannot be known, and browsers refuse it too) or one that
/// is not a number.
fn bad_length(fields: &[&[u8]]) -> Option<String> {
    let mut values: Vec<String> = Vec::new();
    for line in fields {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        if !line[..colon].eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        for value in line[colon + 1..].split(|b| *b == b',') {
            let value = shown(value.trim_ascii());
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Some(format!("response header \"content-length\" has an invalid value {value:?}"));
            }
            if !values.contains(&value) {
                values.push(value);
            }
        }
    }
    (values.len() > 1).then(|| {
        let listed: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        format!("the response has conflicting content-length values ({})", listed.join(", "))
    })
}

/// What is wrong with one header line, if anything: a name that is not a token, no colon, or a
/// byte not allowed in a value (controls other than tab, and DEL; obs-text is allowed).
fn bad_header(line: &[u8]) -> Option<String> {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return Some(format!("a response header line has no colon: {:?}", shown(line)));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if let Some(byte) = name.iter().find(|b| !is_token(**b)) {
        return Some(format!("response header name {:?} has an invalid byte 0x{byte:02x}", shown(name)));
    }
    value.iter().find(|b| (**b < 0x20 && **b != b'\t') || **b == 0x7f).map(|byte| {
        format!(
            "response header {:?} has an invalid byte 0x{byte:02x} in its value",
            shown(name).to_ascii_lowercase()
        )
    })
}

fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// At most 60 bytes, lossily as text, control characters escaped.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]);
    text.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: HeadLimits = HeadLimits { max_headers: 4, max_bytes: 200 };

    #[test]
    fn names_the_header_with_a_bad_byte() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: incap=ab\x01cd; path=/\r\n\r\nOK";
        let reason = diagnose(head, LIMITS, false).unwrap();
        assert_eq!(reason, "response header \"set-cookie\" has an invalid byte 0x01 in its value");
        let name = diagnose(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", LIMITS, false).unwrap();
        assert!(name.contains("\"Bad Name\"") && name.contains("0x20"), "{name}");
        let colon = diagnose(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", LIMITS, false).unwrap();
        assert!(colon.contains("no colon"), "{colon}");
        // Tabs and obs-text are allowed.
        assert_eq!(diagnose(b"HTTP/1.1 200 OK\r\nX-Obs: caf\xe9\t\r\n\r\n", LIMITS, false), None);
    }

    #[test]
    fn names_a_content_length_that_gives_no_message_length() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\ncontent-length: 20\r\n\r\n";
        let reason = diagnose(head, LIMITS, false).unwrap();
        assert_eq!(reason, "the response has conflicting content-length values (\"10\", \"20\")");
        let listed = diagnose(b"HTTP/1.1 200 OK\r\nContent-Length: 10, 12\r\n\r\n", LIMITS, false).unwrap();
        assert!(listed.contains("conflicting"), "{listed}");
        let word = diagnose(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", LIMITS, false).unwrap();
        assert_eq!(word, "response header \"content-length\" has an invalid value \"ten\"");
        // The same value twice, or as a list, is one length.
        assert_eq!(
            diagnose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\n", LIMITS, false),
            None
        );
    }

    #[test]
    fn names_the_limit_that_was_hit() {
        let many = b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
        let reason = diagnose(many, LIMITS, true).unwrap();
        assert!(
            reason.contains("5 header fields") && reason.contains("limit of 4 (max_response_headers)"),
            "{reason}"
        );
        let big = [b"HTTP/1.1 200 OK\r\nx: ".as_slice(), &[b'a'; 300]].concat();
        let reason = diagnose(&big, LIMITS, true).unwrap();
        assert!(reason.contains("limit of 200 bytes (max_header_bytes)"), "{reason}");
        // hyper can give up on the count before the head has fully arrived.
        let partial = b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\nf: 6";
        let reason = diagnose(partial, LIMITS, true).unwrap();
        assert!(
            reason.contains("at least 5 header fields") && reason.contains("max_response_headers"),
            "{reason}"
        );
        let folded = b"HTTP/1.1 200 OK\r\na: 1\r\n  continued\r\nb: 2\r\n\r\n";
        assert_eq!(diagnose(folded, LIMITS, true), None, "continuation lines are not fields");
    }

    #[tokio::test]
    async fn the_recorder_copies_the_head_and_passes_everything_through() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (mut recorder, recording) = Recorder::new(client, 1000);
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        for piece in head.chunks(5) {
            server.write_all(piece).await.unwrap();
            let mut got = vec![0; piece.len()];
            recorder.read_exact(&mut got).await.unwrap();
            assert_eq!(got, piece);
        }
        server.write_all(b"body bytes that are not recorded").await.unwrap();
        let mut got = [0; 32];
        recorder.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"body bytes that are not recorded");
        assert_eq!(recording.bytes(), head, "recording stops after the head");

        let (client, mut server) = tokio::io::duplex(64);
        let (mut recorder, recording) = Recorder::new(client, 10);
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut got = [0; 17];
        recorder.read_exact(&mut got).await.unwrap();
        assert_eq!(recording.bytes(), b"HTTP/1.1 2", "never more than the cap");
    }
}
