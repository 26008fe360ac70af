//! The periodic cleanup: log records past their level's retention, check runs, metric samples, alerts, events and
//! spans past theirs, then, when the database is over `[retention] max_size`, the oldest log records until it is
//! not. Freed pages are handed back to the file system (incremental vacuum), so the file shrinks.
//!
//! Every step is a small transaction of its own on the writer, so ingestion waits at most for one step, never for
//! the whole cleanup.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::params;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RetentionConfig;
use crate::logs::LEVELS;
use crate::storage::{Storage, StorageError, to_millis};
use crate::telemetry::Telemetry;

/// Rows deleted in one transaction.
const CHUNK: i64 = 5000;
/// Pages one merge step of the full-text index writes at most.
const MERGE_PAGES: i64 = 500;
/// Pages handed back to the file system in one transaction.
const VACUUM_PAGES: i64 = 2048;
/// Levels in the order the size cap removes them, the least telling first (never SECURITY or AUDIT).
const BY_WORTH: [&[&str]; 3] = [&["trace", "debug", "info"], &["warning"], &["error", "critical"]];
/// Ordinary full-text index merge steps after records expire.
const MERGE_STEPS: usize = 8;
/// Rounds of deletion and compaction a cleanup spends on the size cap at most.
const SHRINK_ROUNDS: usize = 3;

/// The smallest `[retention] interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What one cleanup removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Log records past their retention, and removed for the size cap.
    pub logs_expired: u64,
    pub logs_over_size: u64,
    pub check_runs: u64,
    pub samples: u64,
    /// Resolved alerts, notification attempts and silences over.
    pub alerts: u64,
    /// Events and spans past their retention.
    pub events: u64,
    pub spans: u64,
    /// Pages handed back to the file system.
    pub pages_freed: u64,
}

/// Clean up every `interval`, the first time right away.
pub fn spawn(
    storage: Storage,
    config: RetentionConfig,
    telemetry: Arc<Telemetry>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            match sweep(&storage, &config, &stop).await {
                Ok(swept) => {
                    telemetry.observe_cleanup(&swept);
                    if swept != Swept::default() {
                        tracing::info!(
                            logs_expired = swept.logs_expired,
                            logs_over_size = swept.logs_over_size,
                            check_runs = swept.check_runs,
                            samples = swept.samples,
                            alerts = swept.alerts,
                            events = swept.events,
                            spans = swept.spans,
                            pages_freed = swept.pages_freed,
                            "Cleaned up the store"
                        );
                    }
                }
                Err(StorageError::Closed) => return,
                Err(error) => tracing::warn!(%error, "Cleanup of the store failed; it is tried again next time"),
            }
        }
    });
}

/// One cleanup.
pub async fn sweep(
    storage: &Storage,
    config: &RetentionConfig,
    stop: &CancellationToken,
) -> Result<Swept, StorageError> {
    let now = SystemTime::now();
    let before = |age: Duration| to_millis(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
    let mut swept = Swept::default();
    for level in LEVELS {
        let keep = config.log_levels.get(level).map_or(config.logs, |d| **d);
        let cutoff = before(keep);
        swept.logs_expired += chunked(storage, stop, move |db| {
            db.prepare_cached(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE level = ?1 AND ts < ?2 LIMIT ?3)",
            )?
            .execute(params![level, cutoff, CHUNK])
        })
        .await?;
    }
    let cutoff = before(config.check_runs);
    swept.check_runs += chunked(storage, stop, move |db| {
        db.execute("DELETE FROM recovery_attempts WHERE started_at < ?1", params![cutoff])?;
        db.prepare_cached(
            "DELETE FROM check_runs WHERE id IN (
                 SELECT id FROM check_runs WHERE started_at < ?1 AND id NOT IN (SELECT run_id FROM check_latest)
                 LIMIT ?2)",
        )?
        .execute(params![cutoff, CHUNK])
    })
    .await?;
    let cutoff = before(config.metrics);
    let series: Vec<i64> =
        storage.read(|db| db.prepare("SELECT id FROM series")?.query_map([], |r| r.get(0))?.collect()).await?;
    for id in series {
        swept.samples += chunked(storage, stop, move |db| {
            // Samples are keyed by (series, time): a range of one series' oldest is cheap to find.
            db.prepare_cached(
                "DELETE FROM samples WHERE series_id = ?1 AND ts IN (
                     SELECT ts FROM samples WHERE series_id = ?1 AND ts < ?2 ORDER BY ts LIMIT ?3)",
            )?
            .execute(params![id, cutoff, CHUNK])
        })
        .await?;
    }
    let cutoff = before(config.alerts);
    swept.alerts += chunked(storage, stop, move |db| {
        let notifications = db
            .prepare_cached(
                "DELETE FROM alert_notifications WHERE id IN (SELECT id FROM alert_notifications WHERE at < ?1 LIMIT ?2)",
            )?
            .execute(params![cutoff, CHUNK])?;
        let alerts = db
            .prepare_cached(
                "DELETE FROM alerts WHERE id IN (
                     SELECT id FROM alerts WHERE state = 'resolved' AND resolved_at < ?1 LIMIT ?2)",
            )?
            .execute(params![cutoff, CHUNK])?;
        let silences = db.prepare_cached("DELETE FROM silences WHERE ends_at < ?1")?.execute(params![cutoff])?;
        Ok(notifications + alerts + silences)
    })
    .await?;
    let cutoff = before(config.events);
    swept.events += chunked(storage, stop, move |db| {
        db.prepare_cached("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?1 LIMIT ?2)")?
            .execute(params![cutoff, CHUNK])
    })
    .await?;
    let cutoff = before(config.spans).saturating_mul(1_000_000);
    swept.spans += chunked(storage, stop, move |db| {
        db.prepare_cached("DELETE FROM spans WHERE id IN (SELECT id FROM spans WHERE start_ns < ?1 LIMIT ?2)")?
            .execute(params![cutoff, CHUNK])
    })
    .await?;
    if swept.logs_expired > 0 {
        // Deleted records leave tombstones in the full-text index until its segments merge; a few ordinary merge
        // steps each time keep that from piling up without rewriting the whole index.
        merge_index(storage, MERGE_STEPS).await?;
    }
    if let Some(cap) = config.max_size {
        swept.logs_over_size = shrink_to(storage, stop, cap.as_u64()).await?;
    }
    swept.pages_freed = vacuum(storage, stop).await?;
    Ok(swept)
}

/// Run `step` until it deletes less than a chunk (or selfmon stops); the rows deleted.
async fn chunked(
    storage: &Storage,
    stop: &CancellationToken,
    step: impl Fn(&rusqlite::Transaction) -> rusqlite::Result<usize> + Clone + Send + 'static,
) -> Result<u64, StorageError> {
    let mut total = 0;
    loop {
        let deleted = storage.apply(step.clone()).await?;
        total += deleted as u64;
        if (deleted as i64) < CHUNK || stop.is_cancelled() {
            return Ok(total);
        }
    }
}

/// Up to `steps` ordinary merge steps of the full-text index (each writes at most [`MERGE_PAGES`] pages, and only
/// where enough segments have gathered).
async fn merge_index(storage: &Storage, steps: usize) -> Result<(), StorageError> {
    for _ in 0..steps {
        let changed = storage
            .apply(|db| {
                let before = db.total_changes();
                db.execute(&format!("INSERT INTO logs_fts (logs_fts, rank) VALUES ('merge', {MERGE_PAGES})"), [])?;
                Ok(db.total_changes() - before)
            })
            .await?;
        if changed < 2 {
            break;
        }
    }
    Ok(())
}

/// Merge every segment of the full-text index into one, step by step, which is what takes deleted records' entries
/// out of it (until then a deletion adds to the index). It rewrites the whole index, so it runs only when the size
/// cap needs the space.
async fn compact_index(storage: &Storage, stop: &CancellationToken) -> Result<(), StorageError> {
    loop {
        let changed = storage
            .apply(|db| {
                let before = db.total_changes();
                db.execute(&format!("INSERT INTO logs_fts (logs_fts, rank) VALUES ('merge', -{MERGE_PAGES})"), [])?;
                Ok(db.total_changes() - before)
            })
            .await?;
        if changed < 2 || stop.is_cancelled() {
            return Ok(());
        }
    }
}

/// The bytes the database's pages in use take.
fn used_bytes(db: &rusqlite::Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| db.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let used = (pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?;
    Ok(used.unsigned_abs())
}

/// Delete the oldest log records, least telling levels first, until the pages in use fit in `cap` bytes. Each
/// round deletes about as many records as the excess takes (from the average size of a record), then compacts the
/// full-text index, which is what frees their space in it; at most [`SHRINK_ROUNDS`] rounds a cleanup. SECURITY and
/// AUDIT records are never removed for size: they keep their own retention.
async fn shrink_to(storage: &Storage, stop: &CancellationToken, cap: u64) -> Result<u64, StorageError> {
    let mut deleted = 0;
    for _ in 0..SHRINK_ROUNDS {
        let (used, records): (u64, i64) = storage
            .read(|db| Ok((used_bytes(db)?, db.query_row("SELECT count(*) FROM logs", [], |r| r.get(0))?)))
            .await?;
        if used <= cap {
            return Ok(deleted);
        }
        let per_record = used / records.unsigned_abs().max(1);
        let mut wanted = ((used - cap) / per_record.max(1)).max(1) * 11 / 10 + 1;
        for levels in BY_WORTH {
            while wanted > 0 && !stop.is_cancelled() {
                let chunk = wanted.min(CHUNK.unsigned_abs());
                let removed = storage
                    .apply(move |db| {
                        let places = (1..=levels.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                        let sql = format!(
                            "DELETE FROM logs WHERE id IN (
                                 SELECT id FROM logs WHERE level IN ({places}) ORDER BY ts LIMIT {chunk})"
                        );
                        db.execute(&sql, rusqlite::params_from_iter(levels.iter()))
                    })
                    .await? as u64;
                deleted += removed;
                wanted = wanted.saturating_sub(removed);
                if removed < chunk {
                    break;
                }
            }
        }
        if stop.is_cancelled() {
            return Ok(deleted);
        }
        compact_index(storage, stop).await?;
        vacuum(storage, stop).await?;
        if wanted > 0 {
            // Every record the cap may remove is gone.
            let used = storage.read(used_bytes).await?;
            if used > cap {
                tracing::warn!(
                    used,
                    cap,
                    "The store is over [retention] max_size with no log records left that the cap may remove"
                );
            }
            return Ok(deleted);
        }
    }
    Ok(deleted)
}

/// Hand free pages back to the file system, a few at a time.
async fn vacuum(storage: &Storage, stop: &CancellationToken) -> Result<u64, StorageError> {
    let mut freed = 0;
    loop {
        let (before, after) = storage
            .apply(|db| {
                let free =
                    |db: &rusqlite::Connection| db.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
                let before = free(db)?;
                if before > 0 {
                    // The pragma frees pages as it is stepped: step it to the end.
                    let mut statement = db.prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
                    let mut rows = statement.query([])?;
                    while rows.next()?.is_some() {}
                }
                Ok((before, free(db)?))
            })
            .await?;
        freed += (before - after).unsigned_abs();
        if after == 0 || after >= before || stop.is_cancelled() {
            return Ok(freed);
        }
    }
}
