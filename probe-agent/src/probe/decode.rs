//! Content codings (`Content-Encoding`): which one a response uses, and a push decoder that
//! turns wire bytes into decoded bytes chunk by chunk while bounding the decoded size, so a
//! small compressed body that expands enormously (a decompression bomb) stops at the limit
//! with memory bounded by it.
//!
//! `deflate` is accepted in both forms found in the wild: the zlib wrapper (RFC 1950, what the
//! HTTP specification names) and raw DEFLATE (RFC 1951), told apart by the first two bytes as
//! browsers do. `zstd` windows are limited to 8 MiB (RFC 9659's limit for HTTP).

use std::io::{self, Write};

/// The content codings the prober advertises in `Accept-Encoding` and can decode.
pub const ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd";

/// The largest zstd window accepted: 2^23 bytes = 8 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A response's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// zlib-wrapped or raw DEFLATE, decided by the body's first bytes.
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// The coding named by a `Content-Encoding` value (`None`: identity). Errors say what is
    /// not supported: an unknown coding, or several codings applied on top of each other.
    pub fn parse(header: Option<&[u8]>) -> Result<Coding, String> {
        let Some(raw) = header else { return Ok(Coding::Identity) };
        let text = String::from_utf8_lossy(raw);
        let codings: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
            .collect();
        match codings.as_slice() {
            [] => Ok(Coding::Identity),
            [one] => match one.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => Ok(Coding::Gzip),
                "deflate" => Ok(Coding::Deflate),
                "br" => Ok(Coding::Brotli),
                "zstd" => Ok(Coding::Zstd),
                _ => Err(format!(
                    "the body uses content-encoding {:?}, which the prober cannot decode (it decodes {ACCEPT_ENCODING})",
                    printable(one)
                )),
            },
            _ => Err(format!(
                "the body uses stacked content-encodings {:?}, which the prober does not decode",
                printable(&text)
            )),
        }
    }

    /// The coding's name as in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// A header value cut to a readable length, control characters escaped.
fn printable(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    cut.escape_debug().to_string()
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded body exceeds the limit.
    TooLarge,
    /// The body is not valid in its coding; the reason is the decoder's, lowercase.
    Corrupt(String),
}

/// Collects decoded bytes, refusing more than `room` in total.
#[derive(Debug)]
struct Sink {
    out: Vec<u8>,
    room: u64,
    overflowed: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.room == 0 {
            self.overflowed = true;
            return Err(io::Error::other("decoded size limit reached"));
        }
        let n = buf.len().min(usize::try_from(self.room).unwrap_or(usize::MAX));
        self.out.extend_from_slice(&buf[..n]);
        self.room -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    Identity(Sink),
    Gzip(flate2::write::MultiGzDecoder<Sink>),
    /// `deflate` before its first two bytes have been seen.
    DeflateUndecided(Sink, Vec<u8>),
    Zlib(flate2::write::ZlibDecoder<Sink>),
    RawDeflate(flate2::write::DeflateDecoder<Sink>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
    /// After an error or the end.
    Done,
}

/// Decodes one body chunk by chunk. Each [`Decoder::push`] returns the decoded bytes of that
/// chunk; the total never exceeds the limit given to [`Decoder::new`].
pub struct Decoder {
    coding: Coding,
    state: State,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("coding", &self.coding).finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for `coding` producing at most `limit` decoded bytes.
    pub fn new(coding: Coding, limit: u64) -> Result<Decoder, DecodeError> {
        let sink = Sink { out: Vec::new(), room: limit, overflowed: false };
        let state = match coding {
            Coding::Identity => State::Identity(sink),
            Coding::Gzip => State::Gzip(flate2::write::MultiGzDecoder::new(sink)),
            Coding::Deflate => State::DeflateUndecided(sink, Vec::with_capacity(2)),
            Coding::Brotli => {
                State::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(sink, 16 * 1024)))
            }
            Coding::Zstd => {
                let mut raw = zstd::stream::raw::Decoder::new().map_err(corrupt)?;
                raw.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(corrupt)?;
                State::Zstd(zstd::stream::write::Decoder::with_decoder(sink, raw))
            }
        };
        Ok(Decoder { coding, state })
    }

    /// The coding this decoder undoes.
    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// Decodes the next wire chunk, appending its decoded bytes to `out` — also when it fails
    /// with [`DecodeError::TooLarge`], so the bytes up to the limit can still be searched.
    pub fn push(&mut self, wire: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let State::DeflateUndecided(_, seen) = &mut self.state {
            seen.extend_from_slice(wire);
            if seen.len() < 2 {
                return Ok(());
            }
            let State::DeflateUndecided(sink, seen) = std::mem::replace(&mut self.state, State::Done) else {
                unreachable!("checked above")
            };
            self.state = if is_zlib_header(seen[0], seen[1]) {
                State::Zlib(flate2::write::ZlibDecoder::new(sink))
            } else {
                State::RawDeflate(flate2::write::DeflateDecoder::new(sink))
            };
            return self.run(|w| w.write_all(&seen).and_then(|()| w.flush()), out);
        }
        self.run(|w| w.write_all(wire).and_then(|()| w.flush()), out)
    }

    /// Ends the body, appending what the decoder still held. A `deflate` body of one byte is
    /// an error; how a stream cut short is treated is the decoder's (gzip, zlib and brotli
    /// report it, a zstd frame cut short yields what was decoded).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let State::DeflateUndecided(_, seen) = &self.state {
            let one_byte = !seen.is_empty();
            self.state = State::Done;
            return match one_byte {
                true => Err(DecodeError::Corrupt("the deflate stream ends after one byte".into())),
                false => Ok(()),
            };
        }
        let outcome = match &mut self.state {
            State::Gzip(w) => w.try_finish(),
            State::Zlib(w) => w.try_finish(),
            State::RawDeflate(w) => w.try_finish(),
            State::Brotli(w) => w.close(),
            State::Zstd(w) => w.flush(),
            State::Identity(_) | State::DeflateUndecided(..) | State::Done => Ok(()),
        };
        let result = self.collect(outcome, out);
        self.state = State::Done;
        result
    }

    fn run(
        &mut self,
        step: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let outcome = match &mut self.state {
            State::Identity(sink) => step(sink),
            State::Gzip(w) => step(w),
            State::Zlib(w) => step(w),
            State::RawDeflate(w) => step(w),
            State::Brotli(w) => step(w.as_mut()),
            State::Zstd(w) => step(w),
            State::DeflateUndecided(..) | State::Done => Ok(()),
        };
        self.collect(outcome, out)
    }

    /// Moves the sink's bytes to `out`; an overflow or a decoder error ends decoding.
    fn collect(&mut self, outcome: io::Result<()>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let Some(sink) = self.sink() else { return Ok(()) };
        out.append(&mut sink.out);
        let overflowed = sink.overflowed;
        match outcome {
            _ if overflowed => {
                self.state = State::Done;
                Err(DecodeError::TooLarge)
            }
            Ok(()) => Ok(()),
            Err(error) => {
                self.state = State::Done;
                Err(corrupt(error))
            }
        }
    }

    fn sink(&mut self) -> Option<&mut Sink> {
        match &mut self.state {
            State::Identity(sink) | State::DeflateUndecided(sink, _) => Some(sink),
            State::Gzip(w) => Some(w.get_mut()),
            State::Zlib(w) => Some(w.get_mut()),
            State::RawDeflate(w) => Some(w.get_mut()),
            State::Brotli(w) => Some(w.get_mut()),
            State::Zstd(w) => Some(w.get_mut()),
            State::Done => None,
        }
    }
}

/// A zlib header: compression method 8 (deflate), a window of at most 32 KiB, and a check
/// value making the first two bytes a multiple of 31 (RFC 1950).
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

fn corrupt(error: io::Error) -> DecodeError {
    DecodeError::Corrupt(error.to_string().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        let mut page = b"<html><body>".to_vec();
        for i in 0..2000 {
            page.extend_from_slice(format!("<p>line {i}: build status OK</p>\n").as_bytes());
        }
        page.extend_from_slice(b"</body></html>");
        page
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn encoded(coding: Coding, data: &[u8]) -> Vec<u8> {
        match coding {
            Coding::Identity => data.to_vec(),
            Coding::Gzip => gzip(data),
            Coding::Deflate => zlib(data),
            Coding::Brotli => brotli(data),
            Coding::Zstd => zstd(data),
        }
    }

    /// Decodes `wire` fed in chunks of `chunk` bytes.
    fn decode(coding: Coding, wire: &[u8], chunk: usize, limit: u64) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = Decoder::new(coding, limit)?;
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            decoder.push(piece, &mut out)?;
        }
        decoder.finish(&mut out)?;
        Ok(out)
    }

    const ALL: [Coding; 5] = [Coding::Identity, Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

    #[test]
    fn every_coding_round_trips_in_any_chunking() {
        let page = page();
        for coding in ALL {
            let wire = encoded(coding, &page);
            for chunk in [1, 7, 1024, wire.len()] {
                assert_eq!(
                    decode(coding, &wire, chunk, 1 << 20).unwrap(),
                    page,
                    "{coding:?} in {chunk}-byte chunks"
                );
            }
        }
    }

    #[test]
    fn deflate_is_zlib_or_raw() {
        let page = page();
        let raw = raw_deflate(&page);
        assert!(!is_zlib_header(raw[0], raw[1]), "the test's raw stream must not look like zlib");
        assert_eq!(decode(Coding::Deflate, &raw, 1, 1 << 20).unwrap(), page);
        assert_eq!(decode(Coding::Deflate, &raw, 4096, 1 << 20).unwrap(), page);
        let wrapped = zlib(&page);
        assert!(is_zlib_header(wrapped[0], wrapped[1]));
        assert_eq!(decode(Coding::Deflate, &wrapped, 1, 1 << 20).unwrap(), page);
        assert_eq!(decode(Coding::Deflate, &[], 1, 1 << 20).unwrap(), b"");
    }

    #[test]
    fn the_decoded_size_is_bounded_for_every_coding() {
        let zeros = vec![0u8; 8 << 20];
        for coding in ALL {
            let wire = encoded(coding, &zeros);
            assert_eq!(decode(coding, &wire, 16 * 1024, 100_000), Err(DecodeError::TooLarge), "{coding:?}");
            // Exactly at the limit is fine.
            let exact = encoded(coding, &zeros[..100_000]);
            assert_eq!(decode(coding, &exact, 16 * 1024, 100_000).unwrap().len(), 100_000, "{coding:?}");
        }
        let mut decoder = Decoder::new(Coding::Gzip, 1000).unwrap();
        let bomb = gzip(&zeros);
        let mut out = Vec::new();
        let mut failed = None;
        for piece in bomb.chunks(4096) {
            if let Err(e) = decoder.push(piece, &mut out) {
                failed = Some(e);
                break;
            }
        }
        assert_eq!(failed, Some(DecodeError::TooLarge));
        assert_eq!(out.len(), 1000, "the bytes up to the limit are handed out, never more");
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let page = page();
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let mut wire = encoded(coding, &page);
            for byte in wire.iter_mut().take(16) {
                *byte ^= 0x5a;
            }
            assert!(
                matches!(decode(coding, &wire, 512, 1 << 20), Err(DecodeError::Corrupt(_))),
                "{coding:?}: {:?}",
                decode(coding, &wire, 512, 1 << 20).map(|v| v.len())
            );
        }
        let reason = decode(Coding::Gzip, b"this is not gzip at all", 64, 1 << 20).unwrap_err();
        assert!(matches!(&reason, DecodeError::Corrupt(r) if r.contains("header")), "{reason:?}");
    }

    #[test]
    fn content_encoding_values() {
        assert_eq!(Coding::parse(None), Ok(Coding::Identity));
        assert_eq!(Coding::parse(Some(b"identity")), Ok(Coding::Identity));
        assert_eq!(Coding::parse(Some(b"GZIP")), Ok(Coding::Gzip));
        assert_eq!(Coding::parse(Some(b"x-gzip")), Ok(Coding::Gzip));
        assert_eq!(Coding::parse(Some(b" br ")), Ok(Coding::Brotli));
        assert_eq!(Coding::parse(Some(b"zstd")), Ok(Coding::Zstd));
        assert_eq!(Coding::parse(Some(b"deflate")), Ok(Coding::Deflate));
        let unknown = Coding::parse(Some(b"compress")).unwrap_err();
        assert!(unknown.contains("\"compress\"") && unknown.contains("cannot decode"), "{unknown}");
        let stacked = Coding::parse(Some(b"gzip, br")).unwrap_err();
        assert!(stacked.contains("stacked"), "{stacked}");
    }
}
