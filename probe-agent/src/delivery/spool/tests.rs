//! The spool on a real temporary directory: the lock, closing batches into files, replay
//! (oldest first, torn journal tails, interrupted closes, files set aside) and the fallback to
//! memory when a file cannot be written.

use super::*;
use tokio::time::Instant;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("agent-spool-{}", Uuid::new_v4().simple()));
        Self(dir)
    }

    fn settings(&self) -> SpoolSettings {
        SpoolSettings {
            dir: self.0.clone(),
            fsync_interval: Some(Duration::from_millis(10)),
            region: "ams".into(),
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn result(seq: u64) -> proto::ProbeResult {
    proto::ProbeResult {
        domain_id: vec![1; 16],
        started_at_unix_us: 1_800_000_000_000_000 + seq as i64,
        config_version: seq,
        ok: true,
        ..Default::default()
    }
}

fn batches(seqs: std::ops::Range<u64>, region: &str) -> Vec<EncodedBatch> {
    let health = proto::AgentHealth { healthy: true, ..Default::default() };
    super::super::encode(seqs.map(result).collect(), region, Some(health), Instant::now())
}

fn seqs(bytes: &Bytes) -> Vec<u64> {
    proto::Batch::decode(bytes.clone()).unwrap().results.iter().map(|r| r.config_version).collect()
}

#[test]
fn one_agent_per_directory() {
    let dir = Dir::new();
    let (first, _, _) = Spool::open(&dir.settings(), Metrics::default()).unwrap();
    let error = Spool::open(&dir.settings(), Metrics::default()).expect_err("refused while held");
    assert!(matches!(error, OpenError::InUse { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&dir.0.display().to_string()), "{message}");
    assert!(message.contains(&format!("process {}", std::process::id())), "{message}");
    assert!(message.contains("another agent"), "{message}");
    drop(first);
    Spool::open(&dir.settings(), Metrics::default()).expect("free again once the first is gone");
}

#[test]
fn closed_batches_are_files_until_removed_and_come_back_oldest_first() {
    let dir = Dir::new();
    let metrics = Metrics::default();
    let (spool, journal, replay) = Spool::open(&dir.settings(), metrics.clone()).unwrap();
    let mut journal = journal.unwrap();
    assert!(replay.batches.is_empty() && replay.open.is_empty());
    for seq in 0..3 {
        spool.append(&mut journal, &result(seq));
    }
    assert_eq!(metrics.spool_journal_results.get(), 3);
    let first = batches(0..3, "ams");
    spool.store(Some(&mut journal), &first);
    assert!(journal.is_empty(), "the journal is emptied once its batch is written");
    let second = batches(3..5, "ams");
    spool.store(Some(&mut journal), &second);
    let third = batches(5..6, "ams");
    spool.store(Some(&mut journal), &third);
    assert!(spool.contains(first[0].id) && spool.contains(third[0].id));
    assert_eq!(metrics.spool_files.get(), 3);
    let on_disk = std::fs::read(dir.0.join(format!("{}.batch", first[0].id))).unwrap();
    assert_eq!(on_disk, first[0].bytes.to_vec(), "the file is exactly the bytes sent");
    spool.sync();
    assert_eq!(metrics.spool_error_count(spool_errors::SYNC), 0);
    // Acknowledged: gone.
    spool.remove(second[0].id);
    assert!(!spool.contains(second[0].id));
    assert_eq!(metrics.spool_files.get(), 2);
    spool.remove(second[0].id);
    spool.append(&mut journal, &result(6));
    drop((spool, journal));

    let (_spool, _, replay) = Spool::open(&dir.settings(), Metrics::default()).unwrap();
    let ids: Vec<Uuid> = replay.batches.iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![first[0].id, third[0].id], "oldest first, the removed one gone");
    assert_eq!(replay.batches[0].bytes, first[0].bytes, "loaded byte for byte");
    assert_eq!(replay.batches[0].results, 3);
    assert!(replay.batches[0].age < Duration::from_secs(60));
    assert_eq!(replay.open, vec![result(6)], "the open batch's journal");
}

#[test]
fn a_torn_journal_tail_is_skipped_and_counted() {
    let dir = Dir::new();
    let (spool, journal, _) = Spool::open(&dir.settings(), Metrics::default()).unwrap();
    let mut journal = journal.unwrap();
    for seq in 0..4 {
        spool.append(&mut journal, &result(seq));
    }
    drop((spool, journal));
    // The process died in the middle of the next write.
    let mut torn = Vec::new();
    journal::encode_result(&result(4), &mut torn);
    let path = dir.0.join(journal::FILE_NAME);
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&torn[..torn.len() - 3]).unwrap();

    let metrics = Metrics::default();
    let (spool, journal, replay) = Spool::open(&dir.settings(), metrics.clone()).unwrap();
    assert_eq!(replay.open, (0..4).map(result).collect::<Vec<_>>());
    assert_eq!(metrics.spool_torn_records.get(), 1);
    assert_eq!(metrics.spool_corrupt_files.get(), 0);
    // The caller closes the replayed results into a batch: the journal is emptied after it.
    let mut journal = journal.unwrap();
    assert_eq!(journal.len(), std::fs::metadata(&path).unwrap().len(), "the torn bytes were cut");
    let rebuilt = batches(0..4, "ams");
    spool.store(Some(&mut journal), &rebuilt);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    drop((spool, journal));
    let (_spool, _, replay) = Spool::open(&dir.settings(), Metrics::default()).unwrap();
    assert_eq!(replay.batches.len(), 1);
    assert!(replay.open.is_empty(), "nothing twice");
}

#[test]
fn an_interrupted_close_is_rebuilt_from_the_journal() {
    let dir = Dir::new();
    let (spool, journal, _) = Spool::open(&dir.settings(), Metrics::default()).unwrap();
    let mut journal = journal.unwrap();
    for seq in 0..6 {
        spool.append(&mut journal, &result(seq));
    }
    // The close got as far as the close record and the first of two files.
    let parts = [batches(0..3, "ams").remove(0), batches(3..6, "ams").remove(0)];
    journal.append_close(&[parts[0].id, parts[1].id]).unwrap();
    spool.write_batch(&parts[0]).unwrap();
    drop((spool, journal));

    let (_spool, _, replay) = Spool::open(&dir.settings(), Metrics::default()).unwrap();
    assert!(replay.batches.is_empty(), "the part written is not loaded: {:?}", replay.batches);
    assert_eq!(replay.open, (0..6).map(result).collect::<Vec<_>>(), "every result, once");
    assert_eq!(dir.names(), vec![LOCK_FILE.to_owned(), journal::FILE_NAME.to_owned()]);
}

#[test]
fn unreadable_files_are_set_aside_and_counted_never_deleted() {
    let dir = Dir::new();
    let (spool, journal, _) = Spool::open(&dir.settings(), Metrics::default()).unwrap();
    let mut journal = journal.unwrap();
    let good = batches(0..2, "ams");
    spool.store(Some(&mut journal), &good);
    let foreign = batches(2..3, "iad");
    spool.store(Some(&mut journal), &foreign);
    drop((spool, journal));
    let garbage = Uuid::now_v7();
    std::fs::write(dir.0.join(format!("{garbage}.batch")), b"\xff\xff not protobuf").unwrap();
    // A file cut short between two results (a machine crash before the fsync): it still
    // decodes, but without the health that ends every batch.
    let cut = batches(3..6, "ams").remove(0);
    let whole = proto::Batch::decode(cut.bytes.clone()).unwrap();
    let short = proto::Batch { results: whole.results[..2].to_vec(), health: None, ..whole };
    std::fs::write(dir.0.join(format!("{}.batch", cut.id)), short.encode_to_vec()).unwrap();
    std::fs::write(dir.0.join(format!("{}.batch.tmp", Uuid::now_v7())), b"half").unwrap();
    std::fs::write(dir.0.join("notes.txt"), b"an operator's").unwrap();

    let metrics = Metrics::default();
    let (_spool, _, replay) = Spool::open(&dir.settings(), metrics.clone()).unwrap();
    assert_eq!(replay.batches.iter().map(|b| b.id).collect::<Vec<_>>(), vec![good[0].id]);
    assert_eq!(seqs(&replay.batches[0].bytes), vec![0, 1]);
    assert_eq!(metrics.spool_corrupt_files.get(), 3);
    let mut expected = vec![
        format!("{garbage}.batch.corrupt"),
        format!("{}.batch", good[0].id),
        format!("{}.batch.corrupt", foreign[0].id),
        format!("{}.batch.corrupt", cut.id),
        journal::FILE_NAME.to_owned(),
        LOCK_FILE.to_owned(),
        "notes.txt".to_owned(),
    ];
    expected.sort();
    assert_eq!(dir.names(), expected, "the unfinished .tmp is gone, the rest kept");
}

#[test]
fn a_batch_whose_file_cannot_be_written_stays_in_memory_and_is_counted() {
    let dir = Dir::new();
    let metrics = Metrics::default();
    let (spool, journal, _) = Spool::open(&dir.settings(), metrics.clone()).unwrap();
    let mut journal = journal.unwrap();
    for seq in 0..2 {
        spool.append(&mut journal, &result(seq));
    }
    let failing = batches(0..2, "ams");
    // A directory where the batch's temporary file would go: its creation fails (as root too).
    let blocker = dir.0.join(format!("{}.batch.tmp", failing[0].id));
    std::fs::create_dir(&blocker).unwrap();
    spool.store(Some(&mut journal), &failing);
    assert!(!spool.contains(failing[0].id));
    assert_eq!(metrics.spool_error_count(spool_errors::BATCH), 1);
    assert!(journal.is_empty(), "the journal is emptied anyway: the batch is in memory");
    // The next batch is written as usual.
    let next = batches(2..3, "ams");
    spool.store(Some(&mut journal), &next);
    assert!(spool.contains(next[0].id));
    spool.remove(failing[0].id);
    assert_eq!(metrics.spool_error_count(spool_errors::REMOVE), 0, "nothing to remove");
    std::fs::remove_dir(&blocker).unwrap();
}
