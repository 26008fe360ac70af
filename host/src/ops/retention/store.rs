//! The SQL of the cleanup: each kind's expired rows deleted a chunk at a time, each chunk a transaction of its own;
//! the full-text index merged; the oldest log records deleted for the size cap; freed pages handed back.

use tokio_util::sync::CancellationToken;

use crate::storage::sql::{self, Db, Engine, params};
use crate::storage::{Storage, StorageError};

/// Rows deleted in one transaction.
const CHUNK: i64 = 5000;
/// Pages one merge step of the full-text index writes at most.
const MERGE_PAGES: i64 = 500;
/// Pages handed back to the file system in one transaction.
const VACUUM_PAGES: i64 = 2048;
/// Levels in the order the size cap removes them, the least telling first (never SECURITY or AUDIT).
const BY_WORTH: [&[&str]; 3] = [&["trace", "debug", "info"], &["warning"], &["error", "critical"]];

impl Storage {
    /// Log records of `level` from before `cutoff` (Unix ms).
    pub async fn delete_logs(
        &self,
        level: &'static str,
        cutoff: i64,
        stop: &CancellationToken,
    ) -> Result<u64, StorageError> {
        chunked(self, stop, move |db| {
            db.execute(
                "DELETE FROM logs WHERE ts < ?2 AND id IN (SELECT id FROM logs WHERE level = ?1 AND ts < ?2 LIMIT ?3)",
                params![level, cutoff, CHUNK],
            )
        })
        .await
    }

    /// Check runs (but each check's latest) and recovery attempts from before `cutoff`.
    pub async fn delete_runs(&self, cutoff: i64, stop: &CancellationToken) -> Result<u64, StorageError> {
        chunked(self, stop, move |db| {
            db.execute("DELETE FROM recovery_attempts WHERE started_at < ?1", params![cutoff])?;
            db.execute(
                "DELETE FROM check_runs WHERE id IN (
                     SELECT id FROM check_runs WHERE started_at < ?1 AND id NOT IN (SELECT run_id FROM check_latest)
                     LIMIT ?2)",
                params![cutoff, CHUNK],
            )
        })
        .await
    }

    /// Metric samples from before `cutoff`: whole days of them on PostgreSQL, else series by series.
    pub async fn delete_samples(&self, cutoff: i64, stop: &CancellationToken) -> Result<u64, StorageError> {
        if let Some(removed) = self.drop_partitions("samples", cutoff).await? {
            return Ok(removed);
        }
        let series: Vec<i64> = self.read(|db| db.query_map("SELECT id FROM series", [], |r| r.get(0))).await?;
        let mut deleted = 0;
        for id in series {
            deleted += chunked(self, stop, move |db| {
                // Samples are keyed by (series, time): a range of one series' oldest is cheap to find.
                db.execute(
                    "DELETE FROM samples WHERE series_id = ?1 AND ts IN (
                         SELECT ts FROM samples WHERE series_id = ?1 AND ts < ?2 ORDER BY ts LIMIT ?3)",
                    params![id, cutoff, CHUNK],
                )
            })
            .await?;
        }
        Ok(deleted)
    }

    /// Resolved alerts, notification attempts and silences over, from before `cutoff`.
    pub async fn delete_alerts(&self, cutoff: i64, stop: &CancellationToken) -> Result<u64, StorageError> {
        chunked(self, stop, move |db| {
            let notifications = db.execute(
                "DELETE FROM alert_notifications WHERE id IN (SELECT id FROM alert_notifications WHERE at < ?1 LIMIT ?2)",
                params![cutoff, CHUNK],
            )?;
            let alerts = db.execute(
                "DELETE FROM alerts WHERE id IN (
                     SELECT id FROM alerts WHERE state = 'resolved' AND resolved_at < ?1 LIMIT ?2)",
                params![cutoff, CHUNK],
            )?;
            let silences = db.execute("DELETE FROM silences WHERE ends_at < ?1", params![cutoff])?;
            Ok(notifications + alerts + silences)
        })
        .await
    }

    /// Events from before `cutoff` (whole days of them on PostgreSQL).
    pub async fn delete_events(&self, cutoff: i64, stop: &CancellationToken) -> Result<u64, StorageError> {
        if let Some(removed) = self.drop_partitions("events", cutoff).await? {
            return Ok(removed);
        }
        chunked(self, stop, move |db| {
            db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?1 LIMIT ?2)",
                params![cutoff, CHUNK],
            )
        })
        .await
    }

    /// Spans that started before `cutoff` (Unix ns; whole days of them on PostgreSQL).
    pub async fn delete_spans(&self, cutoff: i64, stop: &CancellationToken) -> Result<u64, StorageError> {
        if let Some(removed) = self.drop_partitions("spans", cutoff).await? {
            return Ok(removed);
        }
        chunked(self, stop, move |db| {
            db.execute(
                "DELETE FROM spans WHERE id IN (SELECT id FROM spans WHERE start_ns < ?1 LIMIT ?2)",
                params![cutoff, CHUNK],
            )
        })
        .await
    }

    /// Up to `steps` ordinary merge steps of the full-text index (each writes at most `MERGE_PAGES` pages, and
    /// only where enough segments have gathered).
    pub async fn merge_log_index(&self, steps: usize) -> Result<(), StorageError> {
        for _ in 0..steps {
            if merge_step(self, MERGE_PAGES).await? < 2 {
                break;
            }
        }
        Ok(())
    }

    /// Delete the oldest log records, least telling levels first, until the pages in use fit in `cap` bytes. Each
    /// round deletes about as many records as the excess takes (from the average size of a record), then compacts
    /// the full-text index, which is what frees their space in it; at most `rounds` rounds. SECURITY and AUDIT
    /// records are never removed for size: they keep their own retention.
    pub async fn shrink_logs_to(&self, cap: u64, rounds: usize, stop: &CancellationToken) -> Result<u64, StorageError> {
        let mut deleted = 0;
        for _ in 0..rounds {
            let (used, records): (u64, i64) = self
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
                    let removed = self
                        .reclaim(move |db| {
                            let places = (1..=levels.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                            let sql = format!(
                                "DELETE FROM logs WHERE id IN (
                                     SELECT id FROM logs WHERE level IN ({places}) ORDER BY ts LIMIT {chunk})"
                            );
                            db.execute(&sql, levels.to_vec())
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
            // Merging every segment into one is what takes deleted records' entries out of the index (until then a
            // deletion adds to it). It rewrites the whole index, so it runs only when the size cap needs the space.
            while merge_step(self, -MERGE_PAGES).await? >= 2 && !stop.is_cancelled() {}
            self.vacuum(stop).await?;
            if wanted > 0 {
                // Every record the cap may remove is gone.
                let used = self.read(used_bytes).await?;
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

    /// Hand free pages back to the file system, a few at a time: how many (none on PostgreSQL, whose own vacuum
    /// does this).
    pub async fn vacuum(&self, stop: &CancellationToken) -> Result<u64, StorageError> {
        let mut freed = 0;
        loop {
            let (before, after) = self
                .reclaim(|db| {
                    if db.engine() == Engine::Postgres {
                        return Ok((0, 0));
                    }
                    let free = || db.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
                    let before = free()?;
                    if before > 0 {
                        // The pragma frees pages as it is stepped: step it to the end.
                        db.query_each(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"), [], |_| Ok(true))?;
                    }
                    Ok((before, free()?))
                })
                .await?;
            freed += (before - after).unsigned_abs();
            if after == 0 || after >= before || stop.is_cancelled() {
                return Ok(freed);
            }
        }
    }
}

/// Run `step` until it deletes less than a chunk (or selfmon stops); the rows deleted.
async fn chunked(
    storage: &Storage,
    stop: &CancellationToken,
    step: impl Fn(&Db) -> sql::Result<usize> + Clone + Send + 'static,
) -> Result<u64, StorageError> {
    let mut total = 0;
    loop {
        let deleted = storage.reclaim(step.clone()).await?;
        total += deleted as u64;
        if (deleted as i64) < CHUNK || stop.is_cancelled() {
            return Ok(total);
        }
    }
}

/// One merge step of the full-text index writing at most `pages` pages (a negative count merges every segment
/// into one, step by step): the rows it changed (under 2 when there was nothing to merge).
async fn merge_step(storage: &Storage, pages: i64) -> Result<u64, StorageError> {
    storage
        .reclaim(move |db| {
            let Some(db) = db.as_sqlite() else { return Ok(0) };
            let before = db.total_changes();
            db.execute(&format!("INSERT INTO logs_fts (logs_fts, rank) VALUES ('merge', {pages})"), [])?;
            Ok(db.total_changes() - before)
        })
        .await
}

/// The bytes the database's pages in use take.
fn used_bytes(db: &Db) -> sql::Result<u64> {
    if db.engine() == Engine::Postgres {
        let size = db.query_row("SELECT pg_database_size(current_database())", [], |r| r.get::<_, i64>(0))?;
        return Ok(size.unsigned_abs());
    }
    let pragma = |name: &str| db.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let used = (pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?;
    Ok(used.unsigned_abs())
}
