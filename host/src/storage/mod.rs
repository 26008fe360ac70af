//! Storage: SQLite in WAL mode, written by one thread that batches into transactions, read on connections of
//! their own that never wait for it.
//!
//! Every write and read goes through [`Storage`], so callers never see SQL and a second backend can come later
//! without touching them.

mod metrics;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::health::{CheckRun, Health};
pub use metrics::{MAX_POINTS, MetricName, SeriesError, SeriesPage, SeriesPoints, SeriesQuery};
use writer::Op;

/// Writes waiting for the writer before senders are made to wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 4096;

/// The store's size and backlog.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub path: String,
    /// The database and its write-ahead log.
    pub bytes_on_disk: u64,
    /// Writes waiting for the writer.
    pub writes_queued: usize,
    pub runs_stored: i64,
    pub series: i64,
}

/// A check run as stored.
#[derive(Debug, Clone, serde::Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct StoredRun {
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: f64,
    pub status: Health,
    pub summary: String,
    pub error: Option<String>,
}

/// A recovery attempt as stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StoredAttempt {
    pub check: String,
    pub attempt: u32,
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: f64,
    pub action: String,
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub output: String,
    /// RFC 3339, when the check passed again right after this attempt.
    pub recovered_at: Option<String>,
}

/// A recovery attempt to store.
#[derive(Debug, Clone)]
pub struct RecoveryRecord {
    pub check: String,
    pub attempt: crate::recovery::Attempt,
    pub duration: Duration,
}

/// One metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    pub time: SystemTime,
    pub value: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
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
    #[error(transparent)]
    Query(#[from] rusqlite::Error),
}

/// A handle to the store; clones share it.
#[derive(Clone)]
pub struct Storage {
    queue: mpsc::Sender<Op>,
    path: Arc<PathBuf>,
    readers: Arc<Mutex<Vec<Connection>>>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    commits: prometheus::Histogram,
    /// The id of the newest committed log record, for live tails to follow.
    log_head: Arc<tokio::sync::watch::Sender<i64>>,
    /// What every record, span and event passes through before it is written.
    pub(crate) privacy: Arc<crate::privacy::Privacy>,
}

impl Storage {
    /// Open (creating if needed) the database at `path`, bring its schema up to date and start the writer.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Directory { path: dir.into(), source })?;
        }
        let open_error = |source| StorageError::Open { path: path.into(), source };
        let mut connection = Connection::open(path).map_err(open_error)?;
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
        let writer = std::thread::Builder::new()
            .name("selfmon-storage".into())
            .spawn(move || writer::run(connection, receiver, &timer))
            .map_err(StorageError::Writer)?;
        Ok(Self {
            queue,
            path: Arc::new(path.to_path_buf()),
            readers: Arc::default(),
            writer: Arc::new(Mutex::new(Some(writer))),
            commits,
            log_head: Arc::new(tokio::sync::watch::Sender::new(head)),
            privacy: Arc::default(),
        })
    }

    /// The store, with user ids pseudonymized and personal data redacted by `privacy` before anything is written
    /// (without it, nothing is).
    pub fn with_privacy(mut self, privacy: Arc<crate::privacy::Privacy>) -> Self {
        self.privacy = privacy;
        self
    }

    pub fn privacy(&self) -> &crate::privacy::Privacy {
        &self.privacy
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id of the newest committed log record, changing as records are committed.
    pub fn log_head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.log_head.subscribe()
    }

    pub(crate) fn set_log_head(&self, id: i64) {
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

    /// How long the writer's commits take, for `/metrics`.
    pub fn commit_seconds(&self) -> &prometheus::Histogram {
        &self.commits
    }

    /// Queue a check run (and its metrics) for writing; waits while the writer is behind.
    pub async fn write_run(&self, run: CheckRun) -> Result<(), StorageError> {
        self.queue.send(Op::Run(Box::new(run))).await.map_err(|_| StorageError::Closed)
    }

    /// Queue metric samples for writing; waits while the writer is behind.
    pub async fn write_samples(&self, samples: Vec<Sample>) -> Result<(), StorageError> {
        self.queue.send(Op::Samples(samples)).await.map_err(|_| StorageError::Closed)
    }

    /// Store a recovery attempt; its row id once committed.
    pub async fn record_recovery(&self, record: RecoveryRecord) -> Result<i64, StorageError> {
        let (done, committed) = oneshot::channel();
        self.queue.send(Op::Recovery(Box::new(record), done)).await.map_err(|_| StorageError::Closed)?;
        committed.await.map_err(|_| StorageError::Closed)?.map_err(StorageError::Write)
    }

    /// Run a change of its own in one transaction on the writer; its result once committed (nothing of it is kept
    /// when it fails). It may commit before runs and samples queued just before it, which it does not read.
    pub async fn apply<T: Send + 'static>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (done, committed) = oneshot::channel();
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
                let _ = done.send(result);
            }
        }));
        self.queue.send(op).await.map_err(|_| StorageError::Closed)?;
        committed.await.map_err(|_| StorageError::Closed)?.map_err(StorageError::from)
    }

    /// Note that the check passed again after the recovery attempt `id`. Queued without waiting.
    pub fn mark_recovered(&self, id: i64, at: SystemTime) {
        let queue = self.queue.clone();
        tokio::spawn(async move { queue.send(Op::Recovered { id, at: to_millis(at) }).await });
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
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().expect("reader pool lock").pop();
            let connection = match pooled {
                Some(connection) => connection,
                None => {
                    let open = || {
                        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                        let connection = Connection::open_with_flags(path.as_path(), flags)?;
                        connection.busy_timeout(Duration::from_secs(5))?;
                        Ok(connection)
                    };
                    open().map_err(|source| StorageError::Open { path: path.to_path_buf(), source })?
                }
            };
            let result = query(&connection);
            readers.lock().expect("reader pool lock").push(connection);
            result.map_err(StorageError::from)
        })
        .await
        .expect("storage reads do not panic")
    }

    /// Stored recovery attempts, newest first, of one check or all.
    pub async fn recovery_attempts(
        &self,
        check: Option<String>,
        limit: u32,
    ) -> Result<Vec<StoredAttempt>, StorageError> {
        self.read(move |db| {
            let mut statement = db.prepare(
                "SELECT check_name, attempt, started_at, duration_ms, action, outcome, exit_code, output, recovered_at
                 FROM recovery_attempts WHERE ?1 IS NULL OR check_name = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(rusqlite::params![check, limit], |row| {
                let millis = |i| row.get::<_, Option<i64>>(i).map(|m| m.map(rfc3339));
                Ok(StoredAttempt {
                    check: row.get(0)?,
                    attempt: row.get(1)?,
                    started_at: millis(2)?.unwrap_or_default(),
                    duration_ms: row.get(3)?,
                    action: row.get(4)?,
                    outcome: row.get(5)?,
                    exit_code: row.get(6)?,
                    output: row.get(7)?,
                    recovered_at: millis(8)?,
                })
            })?;
            rows.collect()
        })
        .await
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

    /// One check's runs, newest first.
    pub async fn runs(&self, check: String, limit: u32) -> Result<Vec<StoredRun>, StorageError> {
        self.read(move |db| {
            let mut statement = db.prepare(
                "SELECT started_at, duration_ms, status, summary, error FROM check_runs
                 WHERE check_name = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(rusqlite::params![check, limit], |row| {
                Ok(StoredRun {
                    started_at: rfc3339(row.get(0)?),
                    duration_ms: row.get(1)?,
                    status: Health::parse(&row.get::<_, String>(2)?).unwrap_or(Health::Unknown),
                    summary: row.get(3)?,
                    error: row.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The latest run of every check that has run.
    pub async fn latest_runs(&self) -> Result<Vec<CheckRun>, StorageError> {
        self.read(|db| {
            let mut statement = db.prepare(
                "SELECT r.check_name, r.plugin, r.started_at, r.duration_ms, r.status, r.summary, r.details, r.error
                 FROM check_latest AS l JOIN check_runs AS r ON r.id = l.run_id
                 ORDER BY r.check_name",
            )?;
            let rows = statement.query_map([], |row| {
                let details: String = row.get(6)?;
                let started_at = from_millis(row.get(2)?);
                let duration = Duration::try_from_secs_f64(row.get::<_, f64>(3)? / 1000.0).unwrap_or_default();
                Ok(CheckRun {
                    health: Health::parse(&row.get::<_, String>(4)?).unwrap_or(Health::Unknown),
                    summary: row.get(5)?,
                    details: serde_json::from_str::<std::collections::BTreeMap<String, String>>(&details)
                        .map(|d| d.into_iter().collect())
                        .unwrap_or_default(),
                    error: row.get(7)?,
                    ..CheckRun::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?, started_at, duration)
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// Store one sample inside a transaction of one's own (the writer's batches use their own cache of series ids).
pub(crate) fn insert_sample(db: &rusqlite::Transaction, sample: &Sample) -> rusqlite::Result<()> {
    let labels = serde_json::to_string(&sample.labels).unwrap_or_default();
    db.prepare_cached("INSERT OR IGNORE INTO series (name, labels) VALUES (?1, ?2)")?
        .execute(rusqlite::params![sample.name, labels])?;
    let id: i64 = db
        .prepare_cached("SELECT id FROM series WHERE name = ?1 AND labels = ?2")?
        .query_row(rusqlite::params![sample.name, labels], |row| row.get(0))?;
    db.prepare_cached("INSERT OR REPLACE INTO samples (series_id, ts, value) VALUES (?1, ?2, ?3)")?
        .execute(rusqlite::params![id, to_millis(sample.time), sample.value])?;
    Ok(())
}

pub(crate) fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored time (Unix milliseconds) as RFC 3339, as the API shows times.
pub(crate) fn rfc3339(millis: i64) -> String {
    humantime::format_rfc3339_millis(from_millis(millis)).to_string()
}

/// A count (a `LIMIT`, an `OFFSET`) as SQLite takes it.
pub(crate) fn sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(crate) fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}
