//! The open batch's journal (`open.journal` in the spool directory): every result pushed into
//! the open batch is appended as it arrives, with one `write(2)` per result, so a process kill
//! loses nothing the batcher had accepted (the page cache survives the process; only
//! `spool_fsync_interval_ms` protects against a machine crash).
//!
//! The file is a sequence of records, each
//!
//! ```text
//! u32 LE length of (kind + payload) | u32 LE CRC-32 of (kind + payload) | u8 kind | payload
//! ```
//!
//! - kind 1, a result: the payload is the `ProbeResult` protobuf exactly as it goes into the
//!   batch;
//! - kind 2, a close: the payload is the 16-byte ids of the batch files the open batch is being
//!   written to (one, or several when it was split). It is written before those files, and the
//!   journal is truncated after them, so a journal found ending in a close names files that
//!   were never buffered (the close was interrupted) and may be incomplete: replay deletes
//!   them and rebuilds the batch from the journal's results.
//!
//! A record cut short (a process killed in the middle of a write, a machine crash) is detected
//! by its length or checksum: [`parse`] keeps every whole record before it and reports the
//! tail as torn. A bad record with more bytes after it is corruption, reported separately.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use shared::proto;
use uuid::Uuid;

/// The journal's file name inside the spool directory.
pub const FILE_NAME: &str = "open.journal";

const KIND_RESULT: u8 = 1;
const KIND_CLOSE: u8 = 2;
/// Length and checksum before each record's kind and payload.
const FRAME: usize = 8;
/// Largest record accepted when reading: one result is far smaller than a whole batch.
const MAX_RECORD: usize = proto::MAX_BATCH_BYTES;

/// One record of the journal.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A result pushed into the open batch.
    Result(Box<proto::ProbeResult>),
    /// The open batch is being closed into the batch files with these ids.
    Close(Vec<Uuid>),
}

/// How a journal ends after its last whole record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Nothing after the last whole record.
    Clean,
    /// The last record is cut short (or its checksum fails and nothing follows it): `bytes`
    /// bytes after the last whole record are skipped.
    Torn { bytes: usize },
    /// A record at `offset` is unreadable and more bytes follow it: not a torn write but a
    /// damaged file. The records before it are kept.
    Corrupt { offset: usize, reason: String },
}

/// What reading a journal found.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    /// Every whole record, in the order written.
    pub records: Vec<Record>,
    /// Bytes of those records from the start of the file.
    pub valid_len: u64,
    pub end: End,
}

impl Contents {
    /// The results of the journal, in the order pushed.
    pub fn results(&self) -> impl Iterator<Item = &proto::ProbeResult> {
        self.records.iter().filter_map(|r| match r {
            Record::Result(result) => Some(&**result),
            Record::Close(_) => None,
        })
    }

    /// The batch ids named by close records: files of an interrupted close.
    pub fn closing(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.records.iter().flat_map(|r| match r {
            Record::Close(ids) => ids.clone(),
            Record::Result(_) => Vec::new(),
        })
    }
}

/// Reads a journal's bytes; never fails (what cannot be read is reported in [`Contents::end`]).
pub fn parse(bytes: &[u8]) -> Contents {
    let mut records = Vec::new();
    let mut at = 0usize;
    let end = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break End::Clean;
        }
        if rest.len() < FRAME + 1 {
            break End::Torn { bytes: rest.len() };
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD {
            // A zero-filled tail is what a machine crash leaves of a page never written.
            if rest.iter().all(|&b| b == 0) {
                break End::Torn { bytes: rest.len() };
            }
            break End::Corrupt { offset: at, reason: format!("record length {len}") };
        }
        if rest.len() < FRAME + len {
            break End::Torn { bytes: rest.len() };
        }
        let body = &rest[FRAME..FRAME + len];
        if crc32fast::hash(body) != crc {
            if rest.len() == FRAME + len {
                break End::Torn { bytes: rest.len() };
            }
            break End::Corrupt { offset: at, reason: "checksum mismatch".into() };
        }
        let record = match (body[0], &body[1..]) {
            (KIND_RESULT, payload) => match proto::ProbeResult::decode(payload) {
                Ok(result) => Record::Result(Box::new(result)),
                Err(error) => break End::Corrupt { offset: at, reason: format!("result record: {error}") },
            },
            (KIND_CLOSE, payload) if !payload.is_empty() && payload.len() % 16 == 0 => Record::Close(
                payload
                    .chunks_exact(16)
                    .map(|id| Uuid::from_bytes(id.try_into().expect("16 bytes")))
                    .collect(),
            ),
            (kind, _) => break End::Corrupt { offset: at, reason: format!("record kind {kind}") },
        };
        records.push(record);
        at += FRAME + len;
    };
    Contents { records, valid_len: at as u64, end }
}

fn frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len() + 1).expect("a record is far below 4 GiB");
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Appends a result record to `out`.
pub fn encode_result(result: &proto::ProbeResult, out: &mut Vec<u8>) {
    frame(KIND_RESULT, &result.encode_to_vec(), out);
}

/// Appends a close record naming `ids` to `out`.
pub fn encode_close(ids: &[Uuid], out: &mut Vec<u8>) {
    let payload: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
    frame(KIND_CLOSE, &payload, out);
}

/// The journal open for appending. Owned by the batching side; every method is one or two
/// system calls, never a wait on the network.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of whole records in the file.
    len: u64,
    /// Results appended since the last reset.
    results: usize,
    /// A failed write could not be undone: nothing is appended until the next reset.
    broken: bool,
    buf: Vec<u8>,
}

impl Journal {
    /// Opens (creating) the journal at `path` for appending after its first `valid_len` bytes
    /// (a torn tail beyond them is cut off).
    pub fn open(path: &Path, valid_len: u64) -> std::io::Result<Self> {
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        if file.metadata()?.len() != valid_len {
            file.set_len(valid_len)?;
        }
        file.seek(SeekFrom::Start(valid_len))?;
        Ok(Self { file, path: path.to_owned(), len: valid_len, results: 0, broken: false, buf: Vec::new() })
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the file, for the periodic fsync.
    pub fn try_clone_file(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Bytes of whole records in the journal.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the journal holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Results appended since the last reset.
    pub fn results(&self) -> usize {
        self.results
    }

    /// Whether appends are suspended after a failed write (until the next [`Journal::reset`]).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Appends a result with one `write(2)`. On failure the file is cut back to its last whole
    /// record; when even that fails the journal stops appending until the next reset.
    pub fn append_result(&mut self, result: &proto::ProbeResult) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        encode_result(result, &mut buf);
        let written = self.append(&buf);
        self.buf = buf;
        if written.is_ok() {
            self.results += 1;
        }
        written
    }

    /// Appends a close record naming the batch files the open batch goes to.
    pub fn append_close(&mut self, ids: &[Uuid]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        encode_close(ids, &mut buf);
        self.append(&buf)
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::Error::other("journal writes are suspended after an earlier failure"));
        }
        if let Err(error) = self.file.write_all(bytes) {
            // A short write leaves part of a record: cut it off so later records stay readable.
            let undone = self.file.set_len(self.len).and_then(|()| self.file.seek(SeekFrom::Start(self.len)));
            if undone.is_err() {
                self.broken = true;
            }
            return Err(error);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Empties the journal (the open batch was closed into batch files). Clears a suspension.
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.len = 0;
        self.results = 0;
        self.broken = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(seq: u64) -> proto::ProbeResult {
        proto::ProbeResult {
            domain_id: vec![7; 16],
            started_at_unix_us: 1_800_000_000_000_000 + seq as i64,
            config_version: seq,
            ok: seq % 2 == 0,
            error_detail: "x".repeat(seq as usize),
            ..Default::default()
        }
    }

    fn journal_bytes(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 0..n {
            encode_result(&result(seq), &mut out);
        }
        out
    }

    #[test]
    fn results_and_closes_read_back_in_order() {
        let mut bytes = journal_bytes(3);
        let ids = [Uuid::now_v7(), Uuid::now_v7()];
        encode_close(&ids, &mut bytes);
        let contents = parse(&bytes);
        assert_eq!(contents.end, End::Clean);
        assert_eq!(contents.valid_len, bytes.len() as u64);
        let seqs: Vec<u64> = contents.results().map(|r| r.config_version).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert_eq!(contents.results().next(), Some(&result(0)));
        assert_eq!(contents.closing().collect::<Vec<_>>(), ids.to_vec());
        assert_eq!(parse(&[]), Contents { records: Vec::new(), valid_len: 0, end: End::Clean });
    }

    #[test]
    fn a_torn_last_record_is_skipped_at_every_cut() {
        let whole = journal_bytes(2);
        let first = {
            let mut out = Vec::new();
            encode_result(&result(0), &mut out);
            out.len()
        };
        // Every cut inside the second record (its frame, its kind, its payload) keeps the first.
        for cut in first + 1..whole.len() {
            let contents = parse(&whole[..cut]);
            assert_eq!(contents.records.len(), 1, "cut at {cut}");
            assert_eq!(contents.valid_len, first as u64);
            assert_eq!(contents.end, End::Torn { bytes: cut - first }, "cut at {cut}");
        }
        // A cut inside the first record keeps nothing.
        let contents = parse(&whole[..3]);
        assert!(contents.records.is_empty());
        assert_eq!(contents.end, End::Torn { bytes: 3 });
    }

    #[test]
    fn a_damaged_last_record_is_torn_and_a_damaged_middle_is_corruption() {
        let whole = journal_bytes(3);
        let mut last = whole.clone();
        // The last record's final payload byte flipped: its length is intact, its checksum not
        // (a page written only in part by a machine crash).
        *last.last_mut().unwrap() ^= 0xff;
        let contents = parse(&last);
        assert_eq!(contents.records.len(), 2);
        assert!(matches!(contents.end, End::Torn { .. }), "{:?}", contents.end);

        let mut middle = whole.clone();
        let second = {
            let mut out = Vec::new();
            encode_result(&result(0), &mut out);
            out.len()
        };
        middle[second + FRAME + 2] ^= 0xff;
        let contents = parse(&middle);
        assert_eq!(contents.records.len(), 1);
        assert_eq!(contents.valid_len, second as u64);
        assert!(
            matches!(&contents.end, End::Corrupt { offset, reason } if *offset == second && reason.contains("checksum")),
            "{:?}",
            contents.end
        );
        // A zero-filled tail (a page a machine crash left unwritten) is torn, not corrupt.
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 64]);
        let contents = parse(&zeros);
        assert_eq!((contents.records.len(), contents.end), (3, End::Torn { bytes: 64 }));
        // A length beyond any record is corruption too, not a wait for more bytes.
        let mut huge = whole.clone();
        huge[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&huge).end, End::Corrupt { .. }));
    }

    #[test]
    fn appends_reset_and_reopen_after_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("agent-journal-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let mut journal = Journal::open(&path, 0).unwrap();
        for seq in 0..3 {
            journal.append_result(&result(seq)).unwrap();
        }
        assert_eq!((journal.results(), journal.len()), (3, std::fs::metadata(&path).unwrap().len()));
        // A torn write after the three records, as a killed process leaves it.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&[9, 0, 0]).unwrap();
        let contents = parse(&std::fs::read(&path).unwrap());
        assert_eq!((contents.records.len(), contents.end.clone()), (3, End::Torn { bytes: 3 }));
        drop(journal);
        // Reopened after its whole records: the torn bytes are cut and appends follow them.
        let mut journal = Journal::open(&path, contents.valid_len).unwrap();
        journal.append_result(&result(3)).unwrap();
        let ids = [Uuid::now_v7()];
        journal.append_close(&ids).unwrap();
        let contents = parse(&std::fs::read(&path).unwrap());
        assert_eq!(contents.end, End::Clean);
        assert_eq!(contents.results().map(|r| r.config_version).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(contents.closing().collect::<Vec<_>>(), ids.to_vec());
        journal.reset().unwrap();
        assert!(journal.is_empty() && journal.results() == 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        journal.append_result(&result(5)).unwrap();
        assert_eq!(parse(&std::fs::read(&path).unwrap()).records, vec![Record::Result(Box::new(result(5)))]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
