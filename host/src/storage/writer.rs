//! The one thread that writes: it takes whatever is queued (up to a batch), writes it in one transaction, and
//! only then answers flushes.
//!
//! Writes are committed in groups: the first write of a group wakes the writer, which then lets writes gather for
//! [`GROUP_WINDOW`] before committing them together. Senders do not wake the writer during the window, so a busy
//! host pays for a few wake-ups and transactions a second instead of one per check run. A run reaches the database
//! at most that much later (the health board, served by the API, is updated at once).
//!
//! What is written is the capabilities' business: each write is a [`Batched`] of theirs; the writer only groups,
//! commits and retries.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use super::postgres::Session;
use super::samples::{Sample, SeriesIds};
use super::sql::{self, Db, SqlError};

/// Queued operations written in one transaction at most.
const BATCH: usize = 1024;

/// How long writes gather before a group is committed.
const GROUP_WINDOW: Duration = Duration::from_millis(200);

/// A write nobody waits for, committed in a group with others ([`Storage::queue`](super::Storage::queue)). It may
/// be written twice: when its group fails, each write of the group is tried again alone.
pub trait Batched: Send {
    fn write(&self, batch: &mut Batch) -> sql::Result<()>;
}

/// The transaction a group is written in.
pub struct Batch<'a> {
    db: Db<'a>,
    series: &'a mut SeriesIds,
}

impl<'a> Batch<'a> {
    pub fn db(&self) -> &Db<'a> {
        &self.db
    }

    /// Write a metric sample (series ids are cached across groups).
    pub fn sample(&mut self, sample: &Sample) -> sql::Result<()> {
        self.series.write(&self.db, sample)
    }
}

impl Batched for Vec<Sample> {
    fn write(&self, batch: &mut Batch) -> sql::Result<()> {
        self.iter().try_for_each(|sample| batch.sample(sample))
    }
}

/// Whether the store is full: a write failed for want of space (on the disk, or under `[storage] size_limit`).
/// Nothing is needed to leave that state but room: a write committed once [`FULL_FOR`] has passed without another
/// failing clears it (a small write may fit where others do not). Each change is logged once, not every write that
/// fails.
#[derive(Debug, Default)]
pub struct Fullness(Mutex<Option<Instant>>);

/// How long after its last refused write the store still counts as full.
pub const FULL_FOR: Duration = Duration::from_secs(10);

impl Fullness {
    pub fn is_full(&self) -> bool {
        self.0.lock().expect("fullness lock").is_some()
    }

    /// After a write failed: whether for want of space.
    pub fn failed(&self, error: &SqlError) -> bool {
        let full = is_full(error);
        if full && self.0.lock().expect("fullness lock").replace(Instant::now()).is_none() {
            tracing::error!(%error, "Storage is full: log records, spans, events and check runs are not stored until there is room");
        }
        full
    }

    /// After a write was committed.
    pub fn wrote(&self) {
        let mut since = self.0.lock().expect("fullness lock");
        if since.is_some_and(|at| at.elapsed() >= FULL_FOR) {
            *since = None;
            tracing::info!("Storage has room again; writing resumed");
        }
    }
}

/// The pauses before writing a group again while the database cannot be reached: about half a minute in all.
const AWAY_RETRIES: [Duration; 6] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// Whether a write failed because the database could not be reached (rather than for the write itself).
fn is_away(error: &SqlError) -> bool {
    use tokio_postgres::error::SqlState;
    match error {
        SqlError::Pool(_) => true,
        SqlError::Postgres(error) => {
            error.is_closed()
                || error.code().is_some_and(|code| {
                    code.code().starts_with("08")
                        || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW]
                            .contains(code)
                })
                || std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
        }
        _ => false,
    }
}

/// Whether the database refused a write for want of space.
pub fn is_full(error: &SqlError) -> bool {
    match error {
        SqlError::Sqlite(error) => error.sqlite_error_code() == Some(ErrorCode::DiskFull),
        SqlError::Postgres(error) => error.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL),
        _ => false,
    }
}

/// What the writer writes with.
pub enum Connection {
    Sqlite(rusqlite::Connection),
    /// A connection from the pool for each transaction, so one lost is replaced.
    Postgres {
        pool: deadpool_postgres::Pool,
        runtime: tokio::runtime::Handle,
    },
}

impl Connection {
    /// Run `change` in one transaction: committed when it succeeds, nothing of it kept when it fails.
    pub fn transaction<T>(&mut self, change: impl FnOnce(&Db) -> sql::Result<T>) -> sql::Result<T> {
        match self {
            Self::Sqlite(connection) => {
                let transaction = connection.transaction()?;
                let value = change(&Db::sqlite(&transaction))?;
                transaction.commit()?;
                Ok(value)
            }
            Self::Postgres { pool, runtime } => {
                let client = runtime.block_on(pool.get())?;
                Session::new(client, runtime.clone()).transaction(change)
            }
        }
    }
}

pub enum Op {
    Write(Box<dyn Batched>),
    /// A write of its own (an API change such as a new alert rule); the closure sends its result back itself.
    Apply(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Answered once everything queued before it is committed, or with why some of it could not be.
    Flush(oneshot::Sender<Result<(), String>>),
    /// Commit what is queued before it and stop; later writes fail as closed.
    Close,
}

/// Write what arrives on `queue` until it closes or says to; `commits` times each group, `fullness` says whether
/// they fit.
pub fn run(
    mut connection: Connection,
    mut queue: mpsc::Receiver<Op>,
    commits: &prometheus::Histogram,
    fullness: &Fullness,
) {
    let mut series = SeriesIds::default();
    let mut batch = Vec::with_capacity(BATCH);
    // Why writes failed since the last flush, for the next flush to report.
    let mut failures = Failures::default();
    let mut closing = false;
    while !closing && let Some(first) = queue.blocking_recv() {
        // A change someone waits for (stored logs, an API change) is written at once; queued writes gather for a
        // moment first.
        if matches!(first, Op::Write(_)) {
            std::thread::sleep(GROUP_WINDOW);
        }
        batch.push(first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        closing = batch.iter().any(|op| matches!(op, Op::Close));
        let mut writes = Vec::new();
        let mut flushes = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Write(write) => writes.push(write),
                // Changes are written on their own, so each gets its result (or its error) back.
                Op::Apply(change) => change(&mut connection),
                Op::Flush(done) => flushes.push(done),
                Op::Close => {}
            }
        }
        let timer = commits.start_timer();
        let mut written = write_all(&mut connection, &mut series, &writes);
        // A database that is away (restarting, failing over, the network down) gets the group again a few times
        // before its writes are given up: meanwhile the queue fills and ingestion is held back, not lost.
        for pause in AWAY_RETRIES {
            match &written {
                Err(error) if is_away(error) => {
                    series.clear();
                    tracing::warn!(%error, retry_in = ?pause, "The database cannot be reached; writing again shortly");
                    std::thread::sleep(pause);
                    written = write_all(&mut connection, &mut series, &writes);
                }
                _ => break,
            }
        }
        if writes.is_empty() {
            timer.stop_and_discard();
        } else {
            timer.observe_duration();
        }
        match written {
            Ok(()) if !writes.is_empty() => fullness.wrote(),
            Ok(()) => {}
            Err(error) if fullness.failed(&error) => {
                // Each write alone would not fit either.
                series.clear();
                failures.note(writes.len(), error.to_string());
            }
            Err(error) => {
                // One bad write must not cost the others: retry each on its own and keep what succeeds.
                series.clear();
                tracing::warn!(%error, writes = writes.len(), "Storage batch failed; retrying its writes one by one");
                for write in &writes {
                    if let Err(error) = write_all(&mut connection, &mut series, std::slice::from_ref(write)) {
                        series.clear();
                        if !fullness.failed(&error) {
                            tracing::error!(%error, "A storage write failed and was not stored");
                        }
                        failures.note(1, error.to_string());
                    }
                }
            }
        }
        // What was lost since the last flush is told to the next one, however many groups later it comes.
        if !flushes.is_empty() {
            let result = failures.take();
            for done in flushes {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// Writes lost since the last flush: how many, and the first few reasons (a database away for hours must not
/// grow the list without bound).
#[derive(Default)]
struct Failures {
    lost: usize,
    reasons: Vec<String>,
}

impl Failures {
    fn note(&mut self, writes: usize, reason: String) {
        self.lost += writes;
        if self.reasons.len() < 16 {
            self.reasons.push(reason);
        }
    }

    /// What a flush answers, starting over.
    fn take(&mut self) -> Result<(), String> {
        let Self { lost, reasons } = std::mem::take(self);
        if lost == 0 { Ok(()) } else { Err(format!("{lost} writes were not stored: {}", reasons.join("; "))) }
    }
}

/// Write in one transaction.
fn write_all(connection: &mut Connection, series: &mut SeriesIds, writes: &[Box<dyn Batched>]) -> sql::Result<()> {
    connection.transaction(|db| {
        let mut batch = Batch { db: *db, series };
        writes.iter().try_for_each(|write| write.write(&mut batch))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: std::ffi::c_int) -> SqlError {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None).into()
    }

    #[test]
    fn a_store_is_full_from_a_write_refused_for_room_until_one_fits_after_a_while() {
        let fullness = Fullness::default();
        assert!(!fullness.failed(&error(rusqlite::ffi::SQLITE_CONSTRAINT)), "not for want of room");
        assert!(!fullness.is_full());
        assert!(fullness.failed(&error(rusqlite::ffi::SQLITE_FULL)));
        assert!(fullness.is_full());
        // A small write that fits right after does not end it: others may still not fit.
        fullness.wrote();
        assert!(fullness.is_full());
        *fullness.0.lock().unwrap() = Some(Instant::now() - FULL_FOR);
        fullness.wrote();
        assert!(!fullness.is_full());
    }
}
