//! The protobuf/gRPC contract between agents and the control plane
//! (`proto/crosscheck/ingest/v1/ingest.proto`), generated at build time, plus the codec both
//! sides use and the protocol's fixed limits.
//!
//! The codec is prost's, except that a malformed or oversized message is refused with
//! `INVALID_ARGUMENT` (prost's default codec answers `INTERNAL`, which an agent would retry
//! forever). A refused message fails only its own call: the HTTP/2 connection carries on.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("crosscheck.ingest.v1");
}

pub use v1::{
    Ack, AgentHealth, Batch, CertProblem, Certificate, ChainCertificate, ConnectAttempt, ConnectOutcome,
    DnsError, DnssecProof, ErrorKind, HttpVersion, ProbeResult, Trigger,
};

/// Largest encoded batch the control plane accepts, in bytes.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest number of results in one batch.
pub const MAX_BATCH_RESULTS: usize = 10_000;
/// The transport's own message limit, set above [`MAX_BATCH_BYTES`] so that a batch between
/// the two limits reaches the codec and gets `INVALID_ARGUMENT` with a clear message.
pub const TRANSPORT_MAX_MESSAGE_BYTES: usize = 2 * MAX_BATCH_BYTES;

pub mod codec {
    //! prost encoding with `INVALID_ARGUMENT` for undecodable or oversized messages.

    use std::marker::PhantomData;

    use bytes::Buf;
    use tonic::codec::{Codec, DecodeBuf, Decoder};
    use tonic::Status;
    use tonic_prost::ProstEncoder;

    /// The codec named in the generated client and server code.
    #[derive(Debug, Clone)]
    pub struct IngestCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for IngestCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for IngestCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = CheckedDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::default()
        }

        fn decoder(&mut self) -> Self::Decoder {
            CheckedDecoder(PhantomData)
        }
    }

    /// Decodes with prost after checking the size against [`super::MAX_BATCH_BYTES`].
    #[derive(Debug)]
    pub struct CheckedDecoder<U>(PhantomData<U>);

    impl<U: prost::Message + Default> Decoder for CheckedDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            let len = buf.remaining();
            if len > super::MAX_BATCH_BYTES {
                return Err(Status::invalid_argument(format!(
                    "message of {len} bytes exceeds the limit of {} bytes",
                    super::MAX_BATCH_BYTES
                )));
            }
            U::decode(buf)
                .map(Some)
                .map_err(|e| Status::invalid_argument(format!("malformed protobuf message: {e}")))
        }
    }
}

/// A UUID carried as 16 bytes.
pub fn uuid_from_bytes(bytes: &[u8]) -> Option<uuid::Uuid> {
    uuid::Uuid::from_slice(bytes).ok()
}

impl ErrorKind {
    /// The error kind's name as stored and shown (`dns`, `connect`, …); `None` for no error.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            ErrorKind::None => return None,
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::Dns => "dns",
            ErrorKind::BlockedTarget => "blocked_target",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Status => "status",
            ErrorKind::Keyword => "keyword",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::ExpectMismatch => "expect_mismatch",
            ErrorKind::DnsAnswerMismatch => "dns_answer_mismatch",
            ErrorKind::DnssecInvalid => "dnssec_invalid",
            ErrorKind::JsonInvalid => "json_invalid",
            ErrorKind::JsonAssertionFailed => "json_assertion_failed",
        })
    }
}

impl HttpVersion {
    /// The version's name as stored and shown (`HTTP/1.1`, `HTTP/2`); `None` when unspecified.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            HttpVersion::Unspecified => return None,
            HttpVersion::HttpVersion11 => "HTTP/1.1",
            HttpVersion::HttpVersion2 => "HTTP/2",
        })
    }
}

impl DnssecProof {
    /// The proof's name as stored and shown (`secure`, `insecure`, `bogus`, `indeterminate`);
    /// `None` when not validated.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            DnssecProof::Unspecified => return None,
            DnssecProof::Secure => "secure",
            DnssecProof::Insecure => "insecure",
            DnssecProof::Bogus => "bogus",
            DnssecProof::Indeterminate => "indeterminate",
        })
    }
}

impl CertProblem {
    /// The problem's name as stored and shown (`expired`, `unknown_issuer`, …); `None` when
    /// unspecified.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            CertProblem::Unspecified => return None,
            CertProblem::Expired => "expired",
            CertProblem::NotYetValid => "not_yet_valid",
            CertProblem::UnknownIssuer => "unknown_issuer",
            CertProblem::NameMismatch => "name_mismatch",
            CertProblem::Revoked => "revoked",
            CertProblem::Other => "other",
        })
    }
}

impl DnsError {
    /// The DNS failure's name as stored and shown (`nxdomain`, `servfail`, …); `None` when
    /// unspecified.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            DnsError::Unspecified => return None,
            DnsError::Nxdomain => "nxdomain",
            DnsError::Servfail => "servfail",
            DnsError::NoRecords => "no_records",
            DnsError::Timeout => "timeout",
            DnsError::Refused => "refused",
            DnsError::Unreachable => "unreachable",
            DnsError::Other => "other",
        })
    }
}

impl ConnectOutcome {
    /// The outcome's name as shown (`connected`, `refused`, …); `None` when unspecified.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            ConnectOutcome::Unspecified => return None,
            ConnectOutcome::Connected => "connected",
            ConnectOutcome::Refused => "refused",
            ConnectOutcome::Failed => "failed",
            ConnectOutcome::TimedOut => "timed_out",
            ConnectOutcome::Cancelled => "cancelled",
            ConnectOutcome::Blocked => "blocked",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn batch_round_trips() {
        let id = uuid::Uuid::now_v7();
        let batch = Batch {
            batch_id: id.as_bytes().to_vec(),
            agent_version: "1".into(),
            claimed_region: "ams".into(),
            health: None,
            results: vec![ProbeResult {
                domain_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
                ok: true,
                dns_us: Some(10),
                total_us: 100,
                ..Default::default()
            }],
        };
        let decoded = Batch::decode(batch.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, batch);
        assert_eq!(uuid_from_bytes(&decoded.batch_id), Some(id));
        assert_eq!(decoded.results[0].tls_us, None);
    }

    #[test]
    fn error_kind_labels() {
        assert_eq!(ErrorKind::None.label(), None);
        assert_eq!(ErrorKind::BodyTooLarge.label(), Some("body_too_large"));
        assert_eq!(ErrorKind::try_from(99).ok(), None);
        assert_eq!(DnsError::Unspecified.label(), None);
        assert_eq!(DnsError::NoRecords.label(), Some("no_records"));
        assert_eq!(ConnectOutcome::TimedOut.label(), Some("timed_out"));
    }

    /// A result from an agent that predates the DNS and connection fields decodes with them
    /// empty (older readers skip the new field numbers, as proto3 readers skip any unknown
    /// field).
    #[test]
    fn dns_and_connect_fields_are_wire_compatible() {
        let old = ProbeResult { ok: false, error: ErrorKind::Dns as i32, total_us: 5, ..Default::default() };
        let decoded = ProbeResult::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.dns_error(), DnsError::Unspecified);
        assert!(decoded.connect_attempts.is_empty() && decoded.dns_ttl_s.is_none());

        let new = ProbeResult {
            dns_error: DnsError::Servfail as i32,
            connect_attempts: vec![ConnectAttempt {
                ip: "::1".into(),
                outcome: ConnectOutcome::Refused as i32,
                started_us: Some(0),
                duration_us: Some(120),
            }],
            ..old.clone()
        };
        let bytes = new.encode_to_vec();
        let round = ProbeResult::decode(bytes.as_slice()).unwrap();
        assert_eq!(round.dns_error(), DnsError::Servfail);
        assert_eq!(round.connect_attempts[0].outcome(), ConnectOutcome::Refused);
    }
}
