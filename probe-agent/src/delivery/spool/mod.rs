//! The durable result spool (`spool_dir`): what the agent has not had acknowledged survives a
//! kill, SIGKILL included, and is sent after the next start.
//!
//! ```text
//! <spool_dir>/lock                       exclusive flock while an agent runs; holds its pid
//! <spool_dir>/open.journal               the open batch, a record per result (see `journal`)
//! <spool_dir>/<batch id>.batch           a closed batch: exactly the bytes sent
//! <spool_dir>/<batch id>.batch.tmp       a batch file being written (never read)
//! <spool_dir>/<name>.corrupt             a file found unreadable at start, set aside
//! ```
//!
//! **Closing a batch** ([`Spool::store`]): a close record naming the batch ids is appended to
//! the journal; each batch file is written to its `.tmp` name and renamed; the journal is
//! emptied; only then is the batch buffered (and so sent). A kill at any point leaves either
//! the journal with the results (and maybe some of the files, which replay deletes since the
//! close record names them and they were never sent) or the files and an empty journal.
//! Acknowledged (`OK`, duplicate), refused (`INVALID_ARGUMENT`) and dropped batches (buffer
//! bounds) have their file deleted.
//!
//! **Durability**: every result reaches the kernel with one `write(2)` as it is pushed, every
//! batch file before it is buffered; the page cache outlives the process, so a process kill
//! loses nothing. Data reaches the disk only at the periodic fsync (`spool_fsync_interval_ms`:
//! the batch files written since the last one, the journal, the directory; none at 0): a
//! machine crash or power loss can take what was written since. A batch file cut short by one
//! is caught at start (see [`read_batch`]) and set aside.
//!
//! **Replay** ([`Spool::open`]): batch files are loaded oldest first (UUID v7 ids sort by time)
//! with their original ids, so a batch whose acknowledgement was lost is answered `duplicate`;
//! a non-empty journal becomes a new batch (those results were never sent). Files that do not
//! decode as a batch of this agent's region are renamed `*.corrupt`, counted and logged, never
//! deleted.
//!
//! **A failing disk never stops probing**: each failed operation is counted
//! (`probe_agent_spool_errors_total{op}`) and logged (at most every 10 s), and the batch
//! concerned stays in memory only. Should even emptying the journal fail, results already in
//! batch files stay in it too, and would be sent a second time (under a new id) after a kill.

pub mod journal;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prost::Message;
use shared::error::Chain;
use shared::proto;
use uuid::Uuid;

pub use journal::Journal;

use super::EncodedBatch;
use crate::metrics::{spool_errors, Metrics};

/// The lock file's name inside the spool directory.
pub const LOCK_FILE: &str = "lock";
const BATCH_SUFFIX: &str = ".batch";
const TMP_SUFFIX: &str = ".tmp";
const CORRUPT_SUFFIX: &str = ".corrupt";

/// Disk errors are logged at most this often (each with the number left unlogged since).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the spool could not be opened: the agent does not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the directory's lock.
    #[error(
        "spool_dir {}: another agent is using this directory{}; each agent needs a spool directory of its own",
        .dir.display(),
        .holder.as_deref().map(|pid| format!(" (process {pid}, per its lock file)")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, holder: Option<String> },
    /// The directory cannot be created, listed or locked.
    #[error("spool_dir {}: {what}", .dir.display())]
    Io {
        dir: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The spool's settings, from the agent configuration.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// The directory (`spool_dir`), created if missing.
    pub dir: PathBuf,
    /// How often written data is fsynced; `None`: never.
    pub fsync_interval: Option<Duration>,
    /// The agent's region: a batch file claiming another is not this agent's and is set aside.
    pub region: String,
}

/// A batch file loaded at start.
#[derive(Debug, Clone)]
pub struct ReplayedBatch {
    /// Its batch id (a UUID v7), the file's name.
    pub id: Uuid,
    /// Results in the batch.
    pub results: usize,
    /// The file's bytes: the encoded `Batch`, sent as they are.
    pub bytes: Bytes,
    /// How long ago the batch was opened, from its UUID v7 time (zero if in the future).
    pub age: Duration,
}

/// What the previous run left.
#[derive(Debug, Default)]
pub struct Replay {
    /// Batch files, oldest first.
    pub batches: Vec<ReplayedBatch>,
    /// The results of the open batch the previous run had not closed, in the order pushed.
    pub open: Vec<proto::ProbeResult>,
}

#[derive(Debug, Default)]
struct Files {
    /// Batch files on disk and their sizes.
    sizes: HashMap<Uuid, u64>,
    bytes: u64,
    /// Written since the last fsync.
    dirty: Vec<Uuid>,
    last_error_log: Option<std::time::Instant>,
    unlogged_errors: u64,
}

/// The spool directory of one running agent (see the module documentation). Shared by the
/// batching side (writes) and the sender (deletes); the journal itself is owned by the batching
/// side.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Holds the directory's flock for as long as the spool lives.
    _lock: File,
    fsync_interval: Option<Duration>,
    files: Mutex<Files>,
    /// A second handle on the journal, for the periodic fsync.
    journal_file: Option<File>,
    journal_bytes: AtomicU64,
    metrics: Metrics,
}

impl Spool {
    /// Creates the directory if needed, takes its lock, and reads what a previous run left:
    /// batch files (unreadable ones set aside) and the journal (a torn last record skipped, an
    /// interrupted close undone). Returns the spool, the journal open for appending (`None`
    /// when it cannot be opened: the open batch is then kept in memory only) and the replay.
    /// Fails when the directory cannot be created, listed or locked, or another agent holds it.
    pub fn open(
        settings: &SpoolSettings,
        metrics: Metrics,
    ) -> Result<(Self, Option<Journal>, Replay), OpenError> {
        let dir = settings.dir.clone();
        let io = |what: &'static str| {
            let dir = dir.clone();
            move |source| OpenError::Io { dir, what, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("cannot create the directory"))?;
        let lock = lock(&dir)?;
        let mut spool = Self {
            dir: dir.clone(),
            _lock: lock,
            fsync_interval: settings.fsync_interval,
            files: Mutex::new(Files::default()),
            journal_file: None,
            journal_bytes: AtomicU64::new(0),
            metrics,
        };

        // The directory's entries.
        let mut found: BTreeMap<Uuid, PathBuf> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io("cannot list the directory"))? {
            let entry = entry.map_err(io("cannot list the directory"))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == LOCK_FILE || name == journal::FILE_NAME || name.ends_with(CORRUPT_SUFFIX) {
                continue;
            }
            if let Some(id) = name.strip_suffix(BATCH_SUFFIX).and_then(|id| Uuid::parse_str(id).ok()) {
                found.insert(id, path);
            } else if name.ends_with(TMP_SUFFIX) {
                // Never renamed into place, so never buffered: its results are still in the
                // journal.
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(
                        path = %path.display(),
                        "spool: removed an unfinished batch file (its results are in the journal)"
                    ),
                    Err(error) => spool.failed(
                        spool_errors::REPLAY,
                        "cannot remove an unfinished batch file",
                        &path,
                        &error,
                    ),
                }
            } else {
                tracing::warn!(path = %path.display(), "spool: a file the agent did not write; left alone");
            }
        }

        // The journal.
        let journal_path = dir.join(journal::FILE_NAME);
        let (contents, journal_usable) = match std::fs::read(&journal_path) {
            Ok(bytes) => (journal::parse(&bytes), true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (journal::parse(&[]), true),
            Err(error) => {
                spool.failed(spool_errors::REPLAY, "cannot read the journal", &journal_path, &error);
                // Set aside rather than truncated by the reopening below.
                let usable = spool.set_aside(&journal_path, "unreadable").is_some();
                (journal::parse(&[]), usable)
            }
        };
        match &contents.end {
            journal::End::Clean => {}
            journal::End::Torn { bytes } => {
                spool.metrics.spool_torn_records.inc();
                tracing::warn!(
                    path = %journal_path.display(),
                    bytes,
                    kept = contents.results().count(),
                    "spool: the journal's last record was cut short (the previous run stopped while writing it); skipped"
                );
            }
            journal::End::Corrupt { offset, reason } => {
                spool.metrics.spool_corrupt_files.inc();
                let copy = aside_name(&journal_path);
                let copied = std::fs::copy(&journal_path, &copy);
                if let Err(error) = &copied {
                    spool.failed(spool_errors::REPLAY, "cannot copy a damaged journal aside", &copy, error);
                }
                tracing::error!(
                    path = %journal_path.display(),
                    offset,
                    reason,
                    kept = contents.results().count(),
                    copy = %copy.display(),
                    "spool: the journal is damaged; the results before the damage are sent, the whole file is kept as a copy"
                );
            }
        }
        // An interrupted close: its files were never buffered and may be incomplete; the
        // journal still holds their results.
        let mut undone = 0;
        for id in contents.closing() {
            if let Some(path) = found.remove(&id) {
                match std::fs::remove_file(&path) {
                    Ok(()) => undone += 1,
                    Err(error) => spool.failed(
                        spool_errors::REPLAY,
                        "cannot remove a file of an interrupted close",
                        &path,
                        &error,
                    ),
                }
            }
        }
        if undone > 0 {
            tracing::info!(
                files = undone,
                "spool: a batch close was interrupted; its batch is rebuilt from the journal"
            );
        }

        // Batch files, oldest first.
        let now = SystemTime::now();
        let mut replay = Replay::default();
        for (id, path) in found {
            match read_batch(&path, id, &settings.region) {
                Ok((results, bytes)) => {
                    spool.track(id, bytes.len() as u64, false);
                    replay.batches.push(ReplayedBatch { id, results, bytes, age: age_of(id, now) });
                }
                Err(BadBatch::Unreadable(error)) => {
                    // Left in place: readable again at a later start, perhaps.
                    spool.failed(
                        spool_errors::REPLAY,
                        "cannot read a batch file; left for the next start",
                        &path,
                        &error,
                    );
                }
                Err(BadBatch::Invalid(reason)) => {
                    spool.metrics.spool_corrupt_files.inc();
                    let aside = spool.set_aside(&path, &reason);
                    tracing::warn!(
                        path = %path.display(),
                        reason,
                        moved_to = %aside.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                        "spool: a batch file is not a readable batch of this agent; set aside, not sent"
                    );
                }
            }
        }
        replay.open = contents
            .records
            .into_iter()
            .filter_map(|record| match record {
                journal::Record::Result(result) => Some(*result),
                journal::Record::Close(_) => None,
            })
            .collect();

        // The journal, open for appending after its whole records.
        let mut journal = None;
        if journal_usable {
            match Journal::open(&journal_path, contents.valid_len) {
                Ok(mut opened) => {
                    if replay.open.is_empty() && !opened.is_empty() {
                        if let Err(error) = opened.reset() {
                            spool.failed(
                                spool_errors::RESET,
                                "cannot empty the journal",
                                &journal_path,
                                &error,
                            );
                        }
                    }
                    spool.journal_file = opened.try_clone_file().ok();
                    spool.journal_written(&opened);
                    journal = Some(opened);
                }
                Err(error) => spool.failed(
                    spool_errors::JOURNAL,
                    "cannot open the journal; open batches are kept in memory only",
                    &journal_path,
                    &error,
                ),
            }
        }
        Ok((spool, journal, replay))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How often written data is fsynced (`None`: never).
    pub fn fsync_interval(&self) -> Option<Duration> {
        self.fsync_interval
    }

    /// Appends a result of the open batch to the journal (one `write(2)`). A failure is counted
    /// and logged; the result stays in the open batch in memory.
    pub fn append(&self, journal: &mut Journal, result: &proto::ProbeResult) {
        if journal.is_broken() {
            // Counted when it broke; the batch is kept in memory until its close empties the
            // journal again.
            return;
        }
        if let Err(error) = journal.append_result(result) {
            self.failed(
                spool_errors::JOURNAL,
                "cannot append a result to the journal; the open batch is in memory until it closes",
                journal.path(),
                &error,
            );
        }
        self.journal_written(journal);
    }

    /// Writes closed batches before they are buffered: a close record naming them in the
    /// journal, each batch file (temporary name, then renamed), then the journal emptied.
    /// Without the close record (the journal cannot be written) the batches stay in memory
    /// only, as does one whose file fails. Use [`Spool::contains`] for which were written.
    pub fn store(&self, journal: Option<&mut Journal>, batches: &[EncodedBatch]) {
        let ids: Vec<Uuid> = batches.iter().map(|b| b.id).collect();
        let mut journal = journal;
        let linked = match journal.as_deref_mut() {
            Some(journal) if !journal.is_empty() => match journal.append_close(&ids) {
                Ok(()) => true,
                Err(error) => {
                    self.failed(
                        spool_errors::JOURNAL,
                        "cannot write the close record to the journal; the batch is kept in memory only",
                        journal.path(),
                        &error,
                    );
                    false
                }
            },
            _ => true,
        };
        if linked {
            for batch in batches {
                if let Err(error) = self.write_batch(batch) {
                    self.failed(
                        spool_errors::BATCH,
                        "cannot write a batch file; the batch is kept in memory only",
                        &self.batch_path(batch.id),
                        &error,
                    );
                }
            }
        }
        if let Some(journal) = journal {
            if !journal.is_empty() {
                if let Err(error) = journal.reset() {
                    self.failed(
                        spool_errors::RESET,
                        "cannot empty the journal; its results may be sent twice after a restart",
                        journal.path(),
                        &error,
                    );
                }
            }
            self.journal_written(journal);
        }
    }

    /// Whether the batch has a file in the spool.
    pub fn contains(&self, id: Uuid) -> bool {
        self.lock().sizes.contains_key(&id)
    }

    /// Deletes a batch's file (acknowledged, refused or dropped); nothing when it has none.
    /// A file that cannot be deleted is counted and logged: it is sent again after a restart
    /// and answered `duplicate`.
    pub fn remove(&self, id: Uuid) {
        {
            let mut files = self.lock();
            let Some(size) = files.sizes.remove(&id) else { return };
            files.bytes -= size;
            self.update_gauges(&files);
        }
        let path = self.batch_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => self.failed(
                spool_errors::REMOVE,
                "cannot delete a delivered batch's file; it will be sent again after a restart",
                &path,
                &error,
            ),
        }
    }

    /// Flushes to disk the batch files written since the last call, the journal and the
    /// directory (their names). Blocking; failures are counted and logged.
    pub fn sync(&self) {
        let dirty = std::mem::take(&mut self.lock().dirty);
        for id in dirty {
            let path = self.batch_path(id);
            match File::open(&path).and_then(|file| file.sync_all()) {
                Ok(()) => {}
                // Acknowledged and deleted meanwhile.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => self.failed(spool_errors::SYNC, "cannot fsync a batch file", &path, &error),
            }
        }
        if let Some(journal) = &self.journal_file {
            if let Err(error) = journal.sync_data() {
                self.failed(
                    spool_errors::SYNC,
                    "cannot fsync the journal",
                    &self.dir.join(journal::FILE_NAME),
                    &error,
                );
            }
        }
        if let Err(error) = File::open(&self.dir).and_then(|dir| dir.sync_all()) {
            self.failed(spool_errors::SYNC, "cannot fsync the spool directory", &self.dir, &error);
        }
    }

    fn write_batch(&self, batch: &EncodedBatch) -> std::io::Result<()> {
        let path = self.batch_path(batch.id);
        let tmp = self.dir.join(format!("{}{BATCH_SUFFIX}{TMP_SUFFIX}", batch.id));
        let written = File::create(&tmp)
            .and_then(|mut file| file.write_all(&batch.bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        self.track(batch.id, batch.bytes.len() as u64, true);
        Ok(())
    }

    fn track(&self, id: Uuid, size: u64, dirty: bool) {
        let mut files = self.lock();
        if files.sizes.insert(id, size).is_none() {
            files.bytes += size;
        }
        if dirty {
            files.dirty.push(id);
        }
        self.update_gauges(&files);
    }

    fn journal_written(&self, journal: &Journal) {
        self.journal_bytes.store(journal.len(), Ordering::Relaxed);
        self.metrics.spool_journal_results.set(journal.results() as i64);
        let files = self.lock();
        self.update_gauges(&files);
    }

    fn update_gauges(&self, files: &Files) {
        self.metrics.spool_files.set(files.sizes.len() as i64);
        let bytes = files.bytes + self.journal_bytes.load(Ordering::Relaxed);
        self.metrics.spool_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn batch_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}{BATCH_SUFFIX}"))
    }

    /// Renames a file to its `*.corrupt` name; `None` (counted, logged) when that fails.
    fn set_aside(&self, path: &Path, reason: &str) -> Option<PathBuf> {
        let aside = aside_name(path);
        match std::fs::rename(path, &aside) {
            Ok(()) => Some(aside),
            Err(error) => {
                self.failed(spool_errors::REPLAY, "cannot set an unreadable file aside", path, &error);
                tracing::warn!(path = %path.display(), reason, "spool: the unreadable file stays where it is");
                None
            }
        }
    }

    /// Counts a failed disk operation and logs it, at most every [`ERROR_LOG_EVERY`].
    fn failed(&self, op: &'static str, what: &str, path: &Path, error: &std::io::Error) {
        self.metrics.spool_error(op);
        let unlogged = {
            let mut files = self.lock();
            let now = std::time::Instant::now();
            if files.last_error_log.is_some_and(|last| now < last + ERROR_LOG_EVERY) {
                files.unlogged_errors += 1;
                return;
            }
            files.last_error_log = Some(now);
            std::mem::take(&mut files.unlogged_errors)
        };
        tracing::error!(
            op,
            path = %path.display(),
            error = %Chain(error),
            unlogged_since_last = unlogged,
            "spool: {what}"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes the directory's exclusive lock (flock, released by the kernel when the process ends,
/// however) and writes this process's id into the lock file for the next one's message.
fn lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let io = |what: &'static str| move |source| OpenError::Io { dir: dir.to_owned(), what, source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("cannot open the lock file"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(errno) if errno == rustix::io::Errno::WOULDBLOCK => {
            let holder =
                std::fs::read_to_string(&path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
            return Err(OpenError::InUse { dir: dir.to_owned(), holder });
        }
        Err(errno) => return Err(io("cannot lock the lock file")(errno.into())),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(io("cannot write the lock file"))?;
    Ok(file)
}

/// Why a batch file was not loaded.
#[derive(Debug)]
enum BadBatch {
    /// It could not be read (left in place).
    Unreadable(std::io::Error),
    /// It is not a batch of this agent (set aside).
    Invalid(String),
}

/// Reads and checks a batch file: it must decode as a `Batch` whose id is the file's name,
/// with results, this agent's region and its health. The health is the last field the agent
/// encodes and every batch it writes carries one, so a file cut short (a machine crash before
/// the fsync) fails here even when the cut falls between two results.
fn read_batch(path: &Path, id: Uuid, region: &str) -> Result<(usize, Bytes), BadBatch> {
    let bytes = Bytes::from(std::fs::read(path).map_err(BadBatch::Unreadable)?);
    let batch =
        proto::Batch::decode(bytes.clone()).map_err(|e| BadBatch::Invalid(format!("not a batch: {e}")))?;
    if batch.batch_id != id.as_bytes() {
        return Err(BadBatch::Invalid("its batch id is not its name".into()));
    }
    if batch.results.is_empty() {
        return Err(BadBatch::Invalid("no results".into()));
    }
    if batch.health.is_none() {
        return Err(BadBatch::Invalid("cut short (no health after its results)".into()));
    }
    if batch.claimed_region != region {
        return Err(BadBatch::Invalid(format!(
            "a batch of region {:?}, this agent's is {region:?}",
            batch.claimed_region
        )));
    }
    Ok((batch.results.len(), bytes))
}

/// The name a file is set aside under: `<name>.corrupt`, or `<name>.<unix ms>.corrupt` when
/// that exists already.
fn aside_name(path: &Path) -> PathBuf {
    let plain = PathBuf::from(format!("{}{CORRUPT_SUFFIX}", path.display()));
    if !plain.exists() {
        return plain;
    }
    let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
    PathBuf::from(format!("{}.{ms}{CORRUPT_SUFFIX}", path.display()))
}

/// How long before `now` a UUID v7 was made (zero for another version or a future time).
fn age_of(id: Uuid, now: SystemTime) -> Duration {
    id.get_timestamp()
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
        })
        .and_then(|made| now.duration_since(made).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
