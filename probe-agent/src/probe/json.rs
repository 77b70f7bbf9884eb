//! An `http` check's JSON assertion: the body is read to its end after content decoding
//! (bounded by `max_body_bytes` decoded bytes, as a keyword check is), parsed as JSON (UTF-8,
//! RFC 8259) and the assertion evaluated ([`shared::JsonAssertion::evaluate`]).
//!
//! Failures: `body_too_large` (the decoded body exceeds the limit: a truncated document cannot
//! be judged), `json_invalid` (not JSON), `json_assertion_failed` (the path selects nothing or
//! a value fails the comparison).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;

use super::decode::{Coding, DecodeError, Decoder};
use super::engine::{broken_body, stalled, Clock, Engine, Failure, Phase};
use super::{http, ErrorKind, ProbeReport};

/// How reading a body to its decoded end went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// The whole decoded body.
    Whole(Vec<u8>),
    /// More than the limit once decoded.
    TooLarge,
    /// Not valid in its content coding.
    Corrupt(String),
}

/// Reads `body` to its end through a `coding` decoder bounded at `limit` decoded bytes,
/// counting wire bytes in `wire`. Errors are the transport's.
pub(super) async fn read_decoded<B>(
    body: &mut B,
    coding: Coding,
    limit: u64,
    wire: &mut u64,
) -> Result<Decoded, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut decoder = match Decoder::new(coding, limit) {
        Ok(decoder) => decoder,
        Err(DecodeError::TooLarge) => return Ok(Decoded::TooLarge),
        Err(DecodeError::Corrupt(reason)) => return Ok(Decoded::Corrupt(reason)),
    };
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        *wire += data.len() as u64;
        match decoder.push(&data, &mut out) {
            Ok(()) => {}
            Err(DecodeError::TooLarge) => return Ok(Decoded::TooLarge),
            Err(DecodeError::Corrupt(reason)) => return Ok(Decoded::Corrupt(reason)),
        }
    }
    Ok(match decoder.finish(&mut out) {
        Ok(()) => Decoded::Whole(out),
        Err(DecodeError::TooLarge) => Decoded::TooLarge,
        Err(DecodeError::Corrupt(reason)) => Decoded::Corrupt(reason),
    })
}

impl Engine {
    /// The JSON assertion of a final, expected response.
    pub(super) async fn check_json(
        &self,
        assertion: &shared::JsonAssertion,
        headers: &::http::HeaderMap,
        mut body: hyper::body::Incoming,
        driver: http::Driver,
        clock: &Clock,
        report: &mut ProbeReport,
    ) -> Result<(), Failure> {
        let limit = self.settings.max_body_bytes;
        let coding = Coding::parse(headers.get(::http::header::CONTENT_ENCODING).map(|v| v.as_bytes()))
            .map_err(|e| Failure::new(ErrorKind::Http, e))?;
        let mut wire = 0;
        let (outcome, _) =
            clock.phase(Phase::Body, None, read_decoded(&mut body, coding, limit, &mut wire)).await;
        report.body_wire_bytes = wire;
        let decoded = match outcome {
            Err(timeout) => return Err(stalled(timeout, wire, headers)),
            Ok(Err(e)) => return Err(broken_body(&e, wire, headers)),
            Ok(Ok(decoded)) => decoded,
        };
        let bytes = match decoded {
            Decoded::Whole(bytes) => bytes,
            Decoded::TooLarge => {
                report.body_bytes = limit;
                driver.finish_draining(body, limit.saturating_sub(wire));
                return Err(Failure::new(
                    ErrorKind::BodyTooLarge,
                    format!(
                        "the body is larger than {limit} bytes (max_body_bytes), too large to check as json"
                    ),
                ));
            }
            Decoded::Corrupt(reason) => {
                return Err(Failure::new(
                    ErrorKind::Http,
                    format!(
                        "the {} body cannot be decoded after {wire} bytes on the wire: {reason}",
                        coding.as_str()
                    ),
                ))
            }
        };
        driver.finish();
        report.body_bytes = bytes.len() as u64;
        let document: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::new(ErrorKind::JsonInvalid, format!("the body is not json: {e} ({} bytes)", bytes.len()))
        })?;
        assertion.evaluate(&document).map_err(|why| Failure::new(ErrorKind::JsonAssertionFailed, why))
    }
}
