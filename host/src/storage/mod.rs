//! Storage, the bottom layer: SQLite in WAL mode, written by one thread that commits in groups, read on connections
//! of their own that never wait for it. It imports no capability, only `config`, for the privacy settings.
//!
//! # What a backend provides
//!
//! Every capability keeps its SQL in a `store.rs` of its own (`checks/store.rs`, `logs/store.rs`, ...), and those
//! files reach the database only through what this folder provides. A second engine provides the same:
//!
//! - [`Storage::open`]: create the database if needed and bring its schema (`schema.rs`, versioned migrations) up to
//!   date;
//! - [`Storage::read`]: a query on a connection of its own, off the async threads, never waiting for the writer
//!   ([`open_read_only`] gives the command line such a connection to a store a server is writing);
//! - [`Storage::apply`]: a change in one transaction on the writer, answered once committed (nothing of a failed
//!   one is kept);
//! - [`Storage::queue`]: a write nobody waits for ([`Batched`]), committed in a group with others; one that fails is
//!   retried alone so it costs the group nothing, and the next [`Storage::flush`] says what was lost;
//! - metric samples ([`samples`]): series by name and labels, written in groups and read back over a range;
//! - [`Storage::flush`] and [`Storage::close`], the newest log record's id ([`Storage::log_head`]) for live tails,
//!   and the store's [`Figures`];
//! - the privacy chokepoint ([`Privacy`]) every record, span and event passes before it is written;
//! - the time helpers of [`time`]: stored times are Unix milliseconds, shown as RFC 3339;
//! - files for the owner only ([`private_dir`], [`private_file`]): the database, its write-ahead log, the keys;
//! - encryption at rest ([`cipher`]): a store opened with a key ([`Storage::open_with_key`]), converted either way
//!   while no server holds its [`cipher::lock`].
//!
//! Outside this folder, only the `store.rs` files name the engine's types.

pub mod cipher;
mod privacy;
pub mod samples;
mod schema;
pub mod time;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::config::Secret;

pub use privacy::{PSEUDONYM_PREFIX, Privacy, kept_key};
pub use samples::{MAX_POINTS, MetricName, Sample, SeriesError, SeriesPage, SeriesPoints, SeriesQuery};
pub use time::{from_millis, rfc3339, sql_count, to_millis};
pub use writer::{Batch, Batched};
use writer::{Fullness, Op};

/// Writes waiting for the writer before senders are made to wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 4096;

/// The store's size and backlog.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub path: String,
    /// The database and its write-ahead log.
    pub bytes_on_disk: u64,
    /// Writes waiting for the writer.
    pub writes_queued: usize,
    pub runs_stored: i64,
    pub series: i64,
}

/// A page of a list, and how many there are in all.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("`[storage] key` does not open the database {path}: the key is wrong")]
    WrongKey { path: PathBuf },
    #[error("the database {path} is encrypted: set `[storage] key` to its key")]
    Encrypted { path: PathBuf },
    #[error(
        "the database {path} is not encrypted, but `[storage] key` is set: encrypt it with `selfmon storage encrypt`, \
         or remove the key"
    )]
    NotEncrypted { path: PathBuf },
    #[error("the database {path} is in use by a running selfmon: stop it first")]
    InUse { path: PathBuf },
    #[error("cannot convert the database {path}: {reason}; it is left as it was")]
    Convert { path: PathBuf, reason: String },
    #[error("cannot create the directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("cannot migrate the database {path}: {source}")]
    Migrate { path: PathBuf, source: rusqlite_migration::Error },
    #[error("cannot start the storage writer: {0}")]
    Writer(std::io::Error),
    #[error("storage is closed")]
    Closed,
    #[error("storage writes failed: {0}")]
    Write(String),
    /// No room for the write: the disk is full, or the database is at `[storage] size_limit`.
    #[error("storage is full: {0}")]
    Full(String),
    #[error(transparent)]
    Query(rusqlite::Error),
}

impl From<rusqlite::Error> for StorageError {
    fn from(error: rusqlite::Error) -> Self {
        if writer::is_full(&error) { Self::Full(error.to_string()) } else { Self::Query(error) }
    }
}

/// Why a change to something stored (a rule, an alert, a silence, a webhook) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A handle to the store; clones share it.
#[derive(Clone)]
pub struct Storage {
    queue: mpsc::Sender<Op>,
    path: Arc<PathBuf>,
    /// The key of an encrypted store, for every connection that reads it.
    key: Option<Arc<Secret>>,
    readers: Arc<Readers>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    commits: prometheus::Histogram,
    /// The id of the newest committed log record, for live tails to follow.
    log_head: Arc<tokio::sync::watch::Sender<i64>>,
    /// What every record, span and event passes through before it is written.
    privacy: Arc<Privacy>,
    fullness: Arc<Fullness>,
    /// Under `[storage] size_limit`: the pages writes may fill, and the pages the cleanup may fill (the reserve
    /// above the first is its own).
    page_limits: Arc<Mutex<Option<(u64, u64)>>>,
}

/// Reads that run at once; more wait for a turn. Each has a connection of its own, with a page cache of up to
/// 2 MiB, kept for the next read: a burst of requests leaves no more than this many behind.
pub const READERS: usize = 16;

/// Read-only connections, and the turns to use one.
struct Readers {
    idle: Mutex<Vec<Connection>>,
    turns: Arc<Semaphore>,
}

/// The share of `[storage] size_limit` kept for the cleanup, and the most it keeps.
const RESERVE_SHARE: u64 = 8;
const RESERVE_MAX: u64 = 64 << 20;

impl Storage {
    /// Open (creating if needed) the plain database at `path`, bring its schema up to date and start the writer.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with_key(path, None)
    }

    /// [`Storage::open`] a database encrypted with `key` (created encrypted if new), or a plain one without.
    pub fn open_with_key(path: &Path, key: Option<Secret>) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(|source| StorageError::Directory { path: dir.into(), source })?;
        }
        // Made for the owner only; SQLite gives its write-ahead log and shared-memory files the same mode.
        private_file(path).map_err(|source| StorageError::Directory { path: path.into(), source })?;
        let open_error = |source| StorageError::Open { path: path.into(), source };
        // The key is proved on a connection that cannot write first: a writable one would, on closing after a
        // refusal, fold a left-over write-ahead log into the database file.
        if cipher::encrypted_on_disk(path)?.is_some() {
            open_read_only(path, key.as_ref())?;
        }
        let mut connection = Connection::open(path).map_err(open_error)?;
        cipher::unlock(&connection, path, key.as_ref())?;
        // Freed pages go back to the file system when the cleanup asks (a new database takes the mode at once; one
        // made before it needs one full VACUUM, which needs free disk space as large as the database: when it cannot
        // be done, selfmon runs on and the file just does not shrink).
        let auto_vacuum: i64 = connection.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).map_err(open_error)?;
        if auto_vacuum != 2
            && let Err(error) = connection.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        {
            tracing::warn!(path = %path.display(), %error, "Cannot switch the database to incremental vacuum; freed space stays in the file");
        }
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
                 PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -65536;",
            )
            .map_err(open_error)?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(open_error)?;
        schema::migrations()
            .to_latest(&mut connection)
            .map_err(|source| StorageError::Migrate { path: path.into(), source })?;

        let (queue, receiver) = mpsc::channel(QUEUE);
        let commits = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "selfmon_storage_commit_seconds",
                "Time to write and commit one group of writes to the store.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )
        .map_err(|e| StorageError::Writer(std::io::Error::other(e)))?;
        let head: i64 =
            connection.query_row("SELECT COALESCE(MAX(id), 0) FROM logs", [], |r| r.get(0)).map_err(open_error)?;
        let timer = commits.clone();
        let fullness = Arc::new(Fullness::default());
        let full = fullness.clone();
        let writer = std::thread::Builder::new()
            .name("selfmon-storage".into())
            .spawn(move || writer::run(connection, receiver, &timer, &full))
            .map_err(StorageError::Writer)?;
        Ok(Self {
            queue,
            path: Arc::new(path.to_path_buf()),
            key: key.map(Arc::new),
            readers: Arc::new(Readers { idle: Mutex::default(), turns: Arc::new(Semaphore::new(READERS)) }),
            writer: Arc::new(Mutex::new(Some(writer))),
            commits,
            log_head: Arc::new(tokio::sync::watch::Sender::new(head)),
            privacy: Arc::default(),
            fullness,
            page_limits: Arc::default(),
        })
    }

    /// Let the database file grow to `bytes` at most (no limit but the disk's when `None`). Writes may fill it but
    /// for a reserve (an eighth, at most 64 MiB) that only the cleanup may use: deleting from a full store takes
    /// room before it frees any, as the full-text index notes each deletion. The limit in force for writes, in
    /// bytes, which is never below the file's size now.
    pub async fn limit_size(&self, bytes: Option<u64>) -> Result<u64, StorageError> {
        let limits = self.page_limits.clone();
        self.apply(move |db| {
            let page_size = db.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))?.unsigned_abs();
            let pages = bytes.map(|bytes| (bytes / page_size).max(1));
            let reserve = pages.map_or(0, |pages| (pages / RESERVE_SHARE).min(RESERVE_MAX / page_size));
            // SQLite's own default, its largest.
            let writes = pages.map_or(0xffff_fffe, |pages| pages - reserve);
            *limits.lock().expect("page limits lock") = pages.map(|pages| (writes, pages));
            Ok(max_pages(db, writes)? * page_size)
        })
        .await
    }

    /// Run a change of the cleanup's, which may use the reserve kept under `[storage] size_limit`, in one
    /// transaction on the writer (as [`Storage::apply`]).
    pub async fn reclaim<T: Send + 'static>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let limits = *self.page_limits.lock().expect("page limits lock");
        self.apply(move |db| {
            let Some((writes, all)) = limits else { return change(db) };
            max_pages(db, all)?;
            let changed = change(db);
            // Never below the file's size: once the cleanup has handed pages back, writes are held to their own
            // limit again.
            max_pages(db, writes)?;
            changed
        })
        .await
    }

    /// Whether the last write failed for want of room (writing resumes by itself once there is).
    pub fn is_full(&self) -> bool {
        self.fullness.is_full()
    }

    /// The store, with user ids pseudonymized and personal data redacted by `privacy` before anything is written
    /// (without it, nothing is).
    pub fn with_privacy(mut self, privacy: Arc<Privacy>) -> Self {
        self.privacy = privacy;
        self
    }

    /// What every record, span and event passes through before it is written.
    pub fn privacy(&self) -> &Arc<Privacy> {
        &self.privacy
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id of the newest committed log record, changing as records are committed.
    pub fn log_head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.log_head.subscribe()
    }

    /// Say that log records up to `id` are committed.
    pub fn set_log_head(&self, id: i64) {
        self.log_head.send_if_modified(|head| {
            let newer = id > *head;
            if newer {
                *head = id;
            }
            newer
        });
    }

    /// Writes waiting for the writer.
    pub fn queued(&self) -> usize {
        QUEUE - self.queue.capacity()
    }

    /// Bytes SQLite holds on the heap for every store of the process: page caches (at most 64 MiB for the writer,
    /// 2 MiB per reader), schemas and prepared statements.
    pub fn heap_bytes() -> i64 {
        // SAFETY: reads one process-wide counter; takes no pointer and SQLite is built thread-safe.
        unsafe { rusqlite::ffi::sqlite3_memory_used() }
    }

    /// How long the writer's commits take, for `/metrics`.
    pub fn commit_seconds(&self) -> &prometheus::Histogram {
        &self.commits
    }

    /// Queue a write to be committed with others; waits while the writer is behind.
    pub async fn queue(&self, write: impl Batched + 'static) -> Result<(), StorageError> {
        self.queue.send(Op::Write(Box::new(write))).await.map_err(|_| StorageError::Closed)
    }

    /// Queue a write without waiting for room in the queue.
    pub fn queue_later(&self, write: impl Batched + 'static) {
        let queue = self.queue.clone();
        tokio::spawn(async move { queue.send(Op::Write(Box::new(write))).await });
    }

    /// Queue metric samples for writing; waits while the writer is behind.
    pub async fn write_samples(&self, samples: Vec<Sample>) -> Result<(), StorageError> {
        self.queue(samples).await
    }

    /// Run a change of its own in one transaction on the writer; its result once committed (nothing of it is kept
    /// when it fails). It may commit before writes queued just before it, which it does not read.
    pub async fn apply<T: Send + 'static>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (done, committed) = oneshot::channel();
        let fullness = self.fullness.clone();
        let op = Op::Apply(Box::new(move |connection: &mut Connection| {
            // A change that panics rolls back and fails alone; the writer goes on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                connection.transaction().and_then(|transaction| {
                    let value = change(&transaction)?;
                    transaction.commit()?;
                    Ok(value)
                })
            }));
            if let Ok(result) = result {
                match &result {
                    Ok(_) => fullness.wrote(),
                    Err(error) => {
                        fullness.failed(error);
                    }
                }
                let _ = done.send(result);
            }
        }));
        self.queue.send(op).await.map_err(|_| StorageError::Closed)?;
        committed.await.map_err(|_| StorageError::Closed)?.map_err(StorageError::from)
    }

    /// Wait until everything queued so far is committed; an error says what could not be stored.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (done, committed) = oneshot::channel();
        self.queue.send(Op::Flush(done)).await.map_err(|_| StorageError::Closed)?;
        committed.await.map_err(|_| StorageError::Closed)?.map_err(StorageError::Write)
    }

    /// Commit everything queued and stop the writer; writes through any clone fail as closed afterwards.
    pub async fn close(self) -> Result<(), StorageError> {
        let flushed = self.flush().await;
        self.queue.send(Op::Close).await.map_err(|_| StorageError::Closed)?;
        let writer = self.writer.lock().expect("writer lock").take();
        if let Some(writer) = writer {
            // Do not hold a runtime thread while the writer finishes.
            tokio::task::spawn_blocking(move || writer.join()).await.ok();
        }
        flushed
    }

    /// Run a read on a connection of its own, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let readers = self.readers.clone();
        // Held until the read is over, even if its caller stops waiting for it.
        let turn = readers.turns.clone().acquire_owned().await.map_err(|_| StorageError::Closed)?;
        let (path, key) = (self.path.clone(), self.key.clone());
        tokio::task::spawn_blocking(move || {
            let pooled = readers.idle.lock().expect("reader pool lock").pop();
            let connection = match pooled {
                Some(connection) => connection,
                None => open_read_only(&path, key.as_deref())?,
            };
            let result = query(&connection);
            readers.idle.lock().expect("reader pool lock").push(connection);
            drop(turn);
            result.map_err(StorageError::from)
        })
        .await
        .expect("storage reads do not panic")
    }

    /// How big the store is and how far behind its writer.
    pub async fn figures(&self) -> Result<Figures, StorageError> {
        let queued = self.queued();
        let path = self.path.clone();
        let on_disk = ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", path.display())).ok())
            .map(|m| m.len())
            .sum();
        let (runs, series) = self
            .read(|db| {
                let runs: i64 = db.query_row("SELECT COALESCE(MAX(id), 0) FROM check_runs", [], |r| r.get(0))?;
                let series: i64 = db.query_row("SELECT COUNT(*) FROM series", [], |r| r.get(0))?;
                Ok((runs, series))
            })
            .await?;
        Ok(Figures {
            path: path.display().to_string(),
            bytes_on_disk: on_disk,
            writes_queued: queued,
            runs_stored: runs,
            series,
        })
    }
}

/// Make `dir` (and its parents) if missing, readable by its owner only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(dir)
}

/// Make the file at `path` if missing, empty and readable by its owner only (a file that exists is left as it is).
pub fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create_new(true), 0o600);
    match options.open(path) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => Err(error),
        _ => Ok(()),
    }
}

/// Let the database hold `pages` pages at most (never fewer than it holds now): the limit in force.
fn max_pages(db: &Connection, pages: u64) -> rusqlite::Result<u64> {
    Ok(db.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get::<_, i64>(0))?.unsigned_abs())
}

/// A connection that only reads (with the store's key, if it is encrypted): no migration, no writer, and it works for
/// a user who may only read the database (the command line reads a running server's store this way).
pub fn open_read_only(path: &Path, key: Option<&Secret>) -> Result<Connection, StorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_error = |source| StorageError::Open { path: path.to_path_buf(), source };
    let connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
    connection.busy_timeout(Duration::from_secs(5)).map_err(open_error)?;
    cipher::unlock(&connection, path, key)?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
        found
    }

    /// What makes this the bottom layer and the seam a second engine plugs into: storage imports no capability
    /// (only `config`, for the privacy settings), and outside this folder only the capabilities' `store.rs` files name
    /// the engine's types.
    #[test]
    fn storage_is_the_bottom_layer_and_only_stores_name_the_engine() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut problems = Vec::new();
        for (file, text) in sources(&src) {
            // Tests may reach for anything.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            let in_storage = file.contains("/src/storage/");
            let is_store = file.ends_with("/store.rs") || file.contains("/store/");
            if in_storage {
                for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("//")) {
                    let crate_paths = line.match_indices("crate::").map(|(at, _)| &line[at + 7..]);
                    for path in crate_paths {
                        if !(path.starts_with("storage") || path.starts_with("config")) {
                            problems.push(format!("{file}:{}: storage imports `crate::{path}`", number + 1));
                        }
                    }
                }
            } else if !is_store && text.contains("rusqlite") {
                problems.push(format!("{file}: names rusqlite outside storage/ and the store.rs files"));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
