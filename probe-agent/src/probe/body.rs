//! Reading a response body incrementally up to a byte limit while looking for a keyword. The
//! body is never buffered: only the last `keyword.len() - 1` bytes are kept between frames so
//! a keyword split across frames is still found.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;

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

/// How a body read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The keyword was found; the rest was not read.
    Found,
    /// The body ended (without the keyword, if one was looked for).
    Ended,
    /// The limit was reached with more body to come (without the keyword, if one was looked for).
    LimitReached,
}

/// Reads a body frame by frame; `read` stays meaningful when the caller abandons the read (on a
/// timeout).
#[derive(Debug)]
pub struct BodyReader {
    limit: u64,
    scanner: Option<KeywordScanner>,
    /// Bytes read (and searched) so far, never more than the limit.
    pub read: u64,
    /// Whether the keyword has been seen (stays meaningful when the read is abandoned).
    pub found: bool,
}

impl BodyReader {
    pub fn new(limit: u64, keyword: Option<&str>) -> Self {
        Self { limit, scanner: keyword.map(KeywordScanner::new), read: 0, found: false }
    }

    /// Reads until the body ends or the limit is reached, searching for the keyword on the way.
    /// Once the keyword is found the rest of a body within the limit is still read (not
    /// searched): the server then finishes and closes first, which costs both sides less than a
    /// connection the probe tears down mid-response. Errors are the transport's, as a short
    /// lowercase reason.
    pub async fn run<B>(&mut self, body: &mut B) -> Result<BodyEnd, String>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        self.found = self.scanner.as_mut().is_some_and(|s| s.feed(&[]));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body failed: {e}"))?;
            let Ok(data) = frame.into_data() else { continue };
            let room = usize::try_from(self.limit - self.read).unwrap_or(usize::MAX);
            let chunk = &data[..data.len().min(room)];
            self.read += chunk.len() as u64;
            if !self.found && self.scanner.as_mut().is_some_and(|s| s.feed(chunk)) {
                self.found = true;
            }
            if chunk.len() < data.len() || (self.read == self.limit && !body.is_end_stream()) {
                return Ok(if self.found { BodyEnd::Found } else { BodyEnd::LimitReached });
            }
        }
        Ok(if self.found { BodyEnd::Found } else { BodyEnd::Ended })
    }
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

    #[tokio::test]
    async fn reader_reads_past_the_keyword_but_stops_at_the_limit() {
        use http_body_util::{BodyExt, StreamBody};
        use hyper::body::Frame;

        fn body(
            chunks: &[&'static str],
        ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
            let frames = chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))));
            StreamBody::new(futures::stream::iter(frames.collect::<Vec<_>>())).boxed()
        }

        let mut reader = BodyReader::new(100, Some("key"));
        assert_eq!(reader.run(&mut body(&["aaa k", "ey bbb", "ccc"])).await, Ok(BodyEnd::Found));
        assert_eq!(reader.read, 14, "the rest of a body within the limit is drained");

        let mut reader = BodyReader::new(8, Some("key"));
        assert_eq!(reader.run(&mut body(&["aaa k", "ey bbb", "ccc"])).await, Ok(BodyEnd::Found));
        assert_eq!(reader.read, 8, "found, then stopped at the limit");

        let mut reader = BodyReader::new(100, Some("key"));
        assert_eq!(reader.run(&mut body(&["aaa", "bbb"])).await, Ok(BodyEnd::Ended));
        assert_eq!(reader.read, 6);

        let mut reader = BodyReader::new(4, Some("key"));
        assert_eq!(reader.run(&mut body(&["aaa", "key"])).await, Ok(BodyEnd::LimitReached));
        assert_eq!(reader.read, 4);

        let mut reader = BodyReader::new(5, None);
        assert_eq!(reader.run(&mut body(&["aaa", "bbb", "ccc"])).await, Ok(BodyEnd::LimitReached));
        assert_eq!(reader.read, 5);
    }
}
