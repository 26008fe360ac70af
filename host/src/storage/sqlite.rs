//! The SQLite engine, the default: one file in WAL mode (SQLCipher-encrypted with `[storage] key`), written by the
//! writer thread, read on read-only connections of its own that never wait for it, and held under `[storage]
//! size_limit` by a page limit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::sql::{self, Db};
use super::{READERS, StorageError, cipher, pages, private_dir, private_file, schema};
use crate::config::Secret;

/// The share of `[storage] size_limit` kept for the cleanup, and the most it keeps.
const RESERVE_SHARE: u64 = 8;
const RESERVE_MAX: u64 = 64 << 20;

/// An open SQLite store: where it is, its key, and its readers.
pub struct Sqlite {
    pub path: PathBuf,
    /// The key of an encrypted store, for every connection that reads it.
    key: Option<Secret>,
    /// Read-only connections, each with a page cache of up to 2 MiB, kept for the next read: a burst of requests
    /// leaves no more than [`READERS`] behind.
    idle: Mutex<Vec<Connection>>,
    turns: Arc<Semaphore>,
    /// Under `[storage] size_limit`: the pages writes may fill, and the pages the cleanup may fill (the reserve
    /// above the first is its own).
    page_limits: Mutex<Option<(u64, u64)>>,
}

/// Open (creating if needed) the database at `path` with `key`, bring its schema up to date: the store, the
/// writer's connection, and the newest log record's id.
pub fn open(path: &Path, key: Option<Secret>) -> Result<(Sqlite, Connection, i64), StorageError> {
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
    // The writer's page cache: 32 MiB keeps a million-line store's ingestion as fast as 64 did (41 900 lines/s
    // against 40 900 in the log_ingest bench) and is full within a few minutes of a busy start, so resident memory
    // stops growing sooner.
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
             PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -{};",
            pages::WRITER_CACHE_KIB
        ))
        .map_err(open_error)?;
    connection.busy_timeout(Duration::from_secs(5)).map_err(open_error)?;
    schema::migrations()
        .to_latest(&mut connection)
        .map_err(|source| StorageError::Migrate { path: path.into(), source })?;
    let head: i64 =
        connection.query_row("SELECT COALESCE(MAX(id), 0) FROM logs", [], |r| r.get(0)).map_err(open_error)?;
    let store = Sqlite {
        path: path.to_path_buf(),
        key,
        idle: Mutex::default(),
        turns: Arc::new(Semaphore::new(READERS)),
        page_limits: Mutex::default(),
    };
    Ok((store, connection, head))
}

impl Sqlite {
    /// Run a read on a read-only connection of its own, off the async threads.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        query: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        // Held until the read is over, even if its caller stops waiting for it.
        let turn = self.turns.clone().acquire_owned().await.map_err(|_| StorageError::Closed)?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = store.idle.lock().expect("reader pool lock").pop();
            let connection = match pooled {
                Some(connection) => connection,
                None => open_read_only(&store.path, store.key.as_ref())?,
            };
            let result = query(&Db::sqlite(&connection));
            store.idle.lock().expect("reader pool lock").push(connection);
            drop(turn);
            result.map_err(StorageError::from)
        })
        .await
        .expect("storage reads do not panic")
    }

    /// On the writer: hold writes to `bytes` at most but for the cleanup's reserve (no limit when `None`); the
    /// limit in force for writes, in bytes, never below the file's size now.
    pub fn limit_size(&self, db: &Connection, bytes: Option<u64>) -> rusqlite::Result<u64> {
        let page_size = db.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))?.unsigned_abs();
        let pages = bytes.map(|bytes| (bytes / page_size).max(1));
        let reserve = pages.map_or(0, |pages| (pages / RESERVE_SHARE).min(RESERVE_MAX / page_size));
        // SQLite's own default, its largest.
        let writes = pages.map_or(0xffff_fffe, |pages| pages - reserve);
        *self.page_limits.lock().expect("page limits lock") = pages.map(|pages| (writes, pages));
        Ok(max_pages(db, writes)? * page_size)
    }

    /// On the writer: run a change of the cleanup's in a transaction that may use the reserve.
    pub fn reclaim<T>(&self, db: &mut Connection, change: impl FnOnce(&Db) -> sql::Result<T>) -> sql::Result<T> {
        let limits = *self.page_limits.lock().expect("page limits lock");
        let transaction = db.transaction()?;
        let Some((writes, all)) = limits else {
            let value = change(&Db::sqlite(&transaction))?;
            transaction.commit()?;
            return Ok(value);
        };
        max_pages(&transaction, all)?;
        let changed = change(&Db::sqlite(&transaction));
        // Never below the file's size: once the cleanup has handed pages back, writes are held to their own limit
        // again.
        max_pages(&transaction, writes)?;
        let value = changed?;
        transaction.commit()?;
        Ok(value)
    }

    /// The database and its write-ahead log, in bytes.
    pub fn bytes_on_disk(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", self.path.display())).ok())
            .map(|m| m.len())
            .sum()
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
