//! Storage, the bottom layer, on one of two engines: SQLite (`sqlite.rs`, the default: one file in WAL mode) or
//! PostgreSQL (`postgres/`, chosen by `[storage] url`). Either is written by one thread that commits in groups, and
//! read on connections of its own that never wait for it. It imports no capability, only `config`, for the privacy
//! settings and the trusted roots.
//!
//! # What the stores reach
//!
//! Every capability keeps its SQL in a `store.rs` of its own (`checks/store.rs`, `logs/store.rs`, ...), and those
//! files reach the database only through what this folder provides:
//!
//! - [`sql`]: statements with numbered parameters, values and rows, the same on both engines ([`sql::Db`]); where
//!   their SQL differs, a store asks [`sql::Db::engine`];
//! - [`Storage::open`] (SQLite) and [`Storage::connect`] (PostgreSQL): create the schema if needed and bring it up to
//!   date (versioned migrations: `schema.rs`, `postgres/schema.rs`);
//! - [`Storage::read`]: a query on a connection of its own, off the async threads, never waiting for the writer
//!   ([`open_read_only`] gives the command line such a connection to a SQLite store a server is writing);
//! - [`Storage::apply`]: a change in one transaction on the writer, answered once committed (nothing of a failed
//!   one is kept);
//! - [`Storage::queue`]: a write nobody waits for ([`Batched`]), committed in a group with others; one that fails is
//!   retried alone so it costs the group nothing, and the next [`Storage::flush`] says what was lost;
//! - metric samples ([`samples`]): series by name and labels, written in groups and read back over a range;
//! - [`Storage::flush`] and [`Storage::close`], the newest log record's id ([`Storage::log_head`]) for live tails,
//!   and the store's [`Figures`];
//! - on PostgreSQL, for the nodes sharing a store: statements run at once beside the writer
//!   ([`Storage::coordinate`], for heartbeats and leases) and what other nodes announce ([`Storage::listen`]);
//! - the privacy chokepoint ([`Privacy`]) every record, span and event passes before it is written;
//! - the time helpers of [`time`]: stored times are Unix milliseconds, shown as RFC 3339;
//! - on SQLite, files for the owner only ([`private_dir`], [`private_file`]) and encryption at rest ([`cipher`]: a
//!   store opened with a key ([`Storage::open_with_key`]), converted either way while no server holds its
//!   [`cipher::lock`]); on PostgreSQL, day partitions made ahead and dropped by retention
//!   ([`Storage::drop_partitions`]).
//!
//! Outside this folder, only the `store.rs` files name an engine's types (rusqlite's, for what only SQLite has), and
//! none names PostgreSQL's.

pub mod cipher;
pub mod migrate;
pub mod pages;
mod postgres;
mod privacy;
pub mod samples;
mod schema;
pub mod sql;
mod sqlite;
pub mod time;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::Secret;
use postgres::Postgres;
use sqlite::Sqlite;

pub use postgres::listen::Heard;
pub use privacy::{KeyFile, PSEUDONYM_PREFIX, Privacy, kept_key};
pub use samples::{MAX_POINTS, MetricName, Sample, SeriesError, SeriesPage, SeriesPoints, SeriesQuery};
pub use sql::{Db, SqlError};
pub use sqlite::open_read_only;
pub use time::{from_millis, rfc3339, sql_count, to_millis};
pub use writer::{Batch, Batched};
use writer::{Fullness, Op};

/// Writes waiting for the writer before senders are made to wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 4096;

/// The store's size and backlog.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// Where the store is: a file's path, or PostgreSQL's `postgres://host:port/database`.
    pub path: String,
    /// The database and its write-ahead log (on PostgreSQL, the database's size).
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
    #[error("{0}")]
    Url(String),
    #[error("cannot open the PostgreSQL database {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("storage is closed")]
    Closed,
    #[error("storage writes failed: {0}")]
    Write(String),
    /// No room for the write: the disk is full, or the database is at `[storage] size_limit`.
    #[error("storage is full: {0}")]
    Full(String),
    #[error(transparent)]
    Query(SqlError),
}

impl From<SqlError> for StorageError {
    fn from(error: SqlError) -> Self {
        if writer::is_full(&error) { Self::Full(error.to_string()) } else { Self::Query(error) }
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(error: rusqlite::Error) -> Self {
        SqlError::from(error).into()
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
    engine: Engine,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    commits: prometheus::Histogram,
    /// The id of the newest committed log record, for live tails to follow.
    log_head: Arc<tokio::sync::watch::Sender<i64>>,
    /// What every record, span and event passes through before it is written.
    privacy: Arc<Privacy>,
    fullness: Arc<Fullness>,
}

/// The database behind a store.
#[derive(Clone)]
enum Engine {
    Sqlite(Arc<Sqlite>),
    Postgres(Arc<Postgres>),
}

/// Reads that run at once; more wait for a turn.
pub const READERS: usize = 16;

impl Storage {
    /// Open (creating if needed) the plain database at `path`, bring its schema up to date and start the writer.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with_key(path, None)
    }

    /// [`Storage::open`] a database encrypted with `key` (created encrypted if new), or a plain one without.
    pub fn open_with_key(path: &Path, key: Option<Secret>) -> Result<Self, StorageError> {
        let (store, connection, head) = sqlite::open(path, key)?;
        Self::start(Engine::Sqlite(Arc::new(store)), writer::Connection::Sqlite(connection), head)
    }

    /// Connect to the PostgreSQL database of `url` (`[storage] url`), bring its schema up to date and start the
    /// writer; `read_file` reads the CA file the URL may name.
    pub async fn connect(
        url: &Secret,
        read_file: impl Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, StorageError> {
        let target = postgres::Target::parse(url.expose(), read_file).map_err(StorageError::Url)?;
        let failed = |reason: String| StorageError::Connect { target: target.name.clone(), reason };
        let store = postgres::open(&target, to_millis(std::time::SystemTime::now())).await.map_err(failed)?;
        let head = store.read(|db| db.query_row("SELECT COALESCE(MAX(id), 0) FROM logs", [], |r| r.get(0))).await?;
        let connection =
            writer::Connection::Postgres { pool: store.pool.clone(), runtime: tokio::runtime::Handle::current() };
        Self::start(Engine::Postgres(Arc::new(store)), connection, head)
    }

    fn start(engine: Engine, connection: writer::Connection, head: i64) -> Result<Self, StorageError> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let commits = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "selfmon_storage_commit_seconds",
                "Time to write and commit one group of writes to the store.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )
        .map_err(|e| StorageError::Writer(std::io::Error::other(e)))?;
        let timer = commits.clone();
        let fullness = Arc::new(Fullness::default());
        let full = fullness.clone();
        let writer = std::thread::Builder::new()
            .name("selfmon-storage".into())
            .spawn(move || writer::run(connection, receiver, &timer, &full))
            .map_err(StorageError::Writer)?;
        Ok(Self {
            queue,
            engine,
            writer: Arc::new(Mutex::new(Some(writer))),
            commits,
            log_head: Arc::new(tokio::sync::watch::Sender::new(head)),
            privacy: Arc::default(),
            fullness,
        })
    }

    /// Which engine the store is on.
    pub fn engine(&self) -> sql::Engine {
        match self.engine {
            Engine::Sqlite(_) => sql::Engine::Sqlite,
            Engine::Postgres(_) => sql::Engine::Postgres,
        }
    }

    /// Let the database file grow to `bytes` at most (no limit but the disk's when `None`). Writes may fill it but
    /// for a reserve (an eighth, at most 64 MiB) that only the cleanup may use: deleting from a full store takes
    /// room before it frees any, as the full-text index notes each deletion. The limit in force for writes, in
    /// bytes, which is never below the file's size now. SQLite only.
    pub async fn limit_size(&self, bytes: Option<u64>) -> Result<u64, StorageError> {
        let Engine::Sqlite(store) = self.engine.clone() else {
            return Err(StorageError::Write("`[storage] size_limit` applies to SQLite only".into()));
        };
        self.on_writer(move |connection| match connection {
            writer::Connection::Sqlite(db) => Ok(store.limit_size(db, bytes)?),
            writer::Connection::Postgres { .. } => unreachable!("a SQLite store has a SQLite writer"),
        })
        .await
    }

    /// Run a change of the cleanup's, which may use the reserve kept under `[storage] size_limit`, in one
    /// transaction on the writer (as [`Storage::apply`]).
    pub async fn reclaim<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let store = match &self.engine {
            Engine::Sqlite(store) => Some(store.clone()),
            Engine::Postgres(_) => None,
        };
        self.on_writer(move |connection| match (connection, store) {
            (writer::Connection::Sqlite(db), Some(store)) => store.reclaim(db, change),
            (connection, _) => connection.transaction(change),
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

    /// Where the store is: a file's path, or PostgreSQL's host, port and database.
    pub fn location(&self) -> String {
        match &self.engine {
            Engine::Sqlite(store) => store.path.display().to_string(),
            Engine::Postgres(store) => format!("postgres://{}", store.name),
        }
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

    /// Bytes SQLite holds for every store of the process: page caches (at most 32 MiB for the writer, 2 MiB per
    /// reader; in the block [`pages`] sets aside, when it did), schemas and prepared statements.
    pub fn heap_bytes() -> i64 {
        // SAFETY: reads one process-wide counter; takes no pointer and SQLite is built thread-safe.
        unsafe { rusqlite::ffi::sqlite3_memory_used() + pages::used_bytes() }
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
        change: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.on_writer(move |connection| connection.transaction(change)).await
    }

    /// Run `work` on the writer's connection; its result once it is done.
    async fn on_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut writer::Connection) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (done, committed) = oneshot::channel();
        let fullness = self.fullness.clone();
        let op = Op::Apply(Box::new(move |connection: &mut writer::Connection| {
            // A change that panics rolls back and fails alone; the writer goes on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(connection)));
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
        query: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        match &self.engine {
            Engine::Sqlite(store) => store.read(query).await,
            Engine::Postgres(store) => store.read(query).await,
        }
    }

    /// Run statements that coordinate the nodes sharing a PostgreSQL store (their heartbeats and leases) at once,
    /// each committed as it runs, beside the writer and the reads; `None` on SQLite, which has one node.
    pub async fn coordinate<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Option<Result<T, StorageError>> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(store) => Some(store.coordinate(query).await),
        }
    }

    /// On PostgreSQL, what any node sends on `channels` (`pg_notify`), heard on a connection of its own until
    /// `stop`; `None` on SQLite.
    pub fn listen(
        &self,
        channels: &[&str],
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<mpsc::Receiver<Heard>> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(store) => Some(postgres::listen::listen(store.target.clone(), channels, stop)),
        }
    }

    /// On PostgreSQL, make the day partitions from yesterday to a week ahead where missing; nothing to do on
    /// SQLite.
    pub async fn prepare_partitions(&self) -> Result<(), StorageError> {
        self.prepare_partitions_for(&[]).await
    }

    /// [`Storage::prepare_partitions`], and those of the days of `days` (Unix ms, any time of the day).
    pub async fn prepare_partitions_for(&self, days: &[i64]) -> Result<(), StorageError> {
        let Engine::Postgres(store) = &self.engine else { return Ok(()) };
        let mut client = store.pool.get().await.map_err(SqlError::from)?;
        let now = to_millis(std::time::SystemTime::now());
        Ok(postgres::partitions::prepare(&mut client, days, now).await.map_err(SqlError::from)?)
    }

    /// On PostgreSQL, drop the day partitions of `table` (logs, spans, events or samples) that end by `cutoff` (in
    /// its time column's units) and delete older rows of its default partition: about how many rows went. `None`
    /// on SQLite, whose rows are deleted one by one.
    pub async fn drop_partitions(&self, table: &'static str, cutoff: i64) -> Result<Option<u64>, StorageError> {
        let Engine::Postgres(store) = &self.engine else { return Ok(None) };
        let mut client = store.pool.get().await.map_err(SqlError::from)?;
        let removed = postgres::partitions::drop_before(&mut client, table, cutoff).await.map_err(SqlError::from)?;
        Ok(Some(removed))
    }

    /// How big the store is and how far behind its writer.
    pub async fn figures(&self) -> Result<Figures, StorageError> {
        let queued = self.queued();
        let on_disk = match &self.engine {
            Engine::Sqlite(store) => store.bytes_on_disk(),
            Engine::Postgres(_) => self
                .read(|db| db.query_row("SELECT pg_database_size(current_database())", [], |r| r.get::<_, i64>(0)))
                .await?
                .unsigned_abs(),
        };
        let (runs, series) = self
            .read(|db| {
                let runs: i64 = db.query_row("SELECT COALESCE(MAX(id), 0) FROM check_runs", [], |r| r.get(0))?;
                let series: i64 = db.query_row("SELECT COUNT(*) FROM series", [], |r| r.get(0))?;
                Ok((runs, series))
            })
            .await?;
        Ok(Figures { path: self.location(), bytes_on_disk: on_disk, writes_queued: queued, runs_stored: runs, series })
    }
}

/// A store read beside the server writing it (the command line's `logs search`): a read-only connection to a
/// SQLite file, or connections to a PostgreSQL database, with no migration, writer or node lock.
pub struct Reader(ReaderOf);

enum ReaderOf {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Box<Postgres>),
}

impl Reader {
    /// The SQLite file at `path`, with its key if it is encrypted.
    pub fn sqlite(path: &Path, key: Option<&Secret>) -> Result<Self, StorageError> {
        Ok(Self(ReaderOf::Sqlite(Arc::new(Mutex::new(open_read_only(path, key)?)))))
    }

    /// The PostgreSQL database of `url`; `read_file` reads the CA file the URL may name.
    pub async fn postgres(
        url: &Secret,
        read_file: impl Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, StorageError> {
        let target = postgres::Target::parse(url.expose(), read_file).map_err(StorageError::Url)?;
        let store = postgres::open_reader(&target)
            .await
            .map_err(|reason| StorageError::Connect { target: target.name.clone(), reason })?;
        Ok(Self(ReaderOf::Postgres(Box::new(store))))
    }

    /// Run a read, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        match &self.0 {
            ReaderOf::Sqlite(connection) => {
                let connection = connection.clone();
                tokio::task::spawn_blocking(move || query(&Db::sqlite(&connection.lock().expect("reader lock"))))
                    .await
                    .expect("storage reads do not panic")
                    .map_err(StorageError::from)
            }
            ReaderOf::Postgres(store) => store.read(query).await,
        }
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

    /// What makes this the bottom layer and the seam the engines plug into: storage imports no capability (only
    /// `config`), outside this folder only the capabilities' `store.rs` files name SQLite's types, and none names
    /// PostgreSQL's client.
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
            } else if text.contains("tokio_postgres") || text.contains("deadpool") {
                problems.push(format!("{file}: names the PostgreSQL client outside storage/"));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
