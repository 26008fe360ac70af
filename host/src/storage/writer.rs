//! The one thread that writes: it takes whatever is queued (up to a batch), writes it in one transaction, and
//! only then answers flushes.
//!
//! Writes are committed in groups: the first write of a group wakes the writer, which then lets writes gather for
//! [`GROUP_WINDOW`] before committing them together. Senders do not wake the writer during the window, so a busy
//! host pays for a few wake-ups and transactions a second instead of one per check run. A run reaches the database
//! at most that much later (the health board, served by the API, is updated at once).

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{RecoveryRecord, Sample, to_millis};
use crate::health::CheckRun;

/// Queued operations written in one transaction at most.
const BATCH: usize = 1024;

/// How long writes gather before a group is committed.
const GROUP_WINDOW: Duration = Duration::from_millis(200);

pub enum Op {
    Run(Box<CheckRun>),
    Samples(Vec<Sample>),
    /// A recovery attempt; answered with its row id once committed.
    Recovery(Box<RecoveryRecord>, oneshot::Sender<Result<i64, String>>),
    /// The check passed again after the attempt with this id.
    Recovered {
        id: i64,
        at: i64,
    },
    /// A write of its own (an API change such as a new alert rule), run in its own transaction; the closure sends
    /// its result back itself.
    Apply(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Answered once everything queued before it is committed, or with why some of it could not be.
    Flush(oneshot::Sender<Result<(), String>>),
    /// Commit what is queued before it and stop; later writes fail as closed.
    Close,
}

/// Write what arrives on `queue` until it closes or says to; `commits` times each group.
pub fn run(mut connection: Connection, mut queue: mpsc::Receiver<Op>, commits: &prometheus::Histogram) {
    let mut series = SeriesIds::default();
    let mut batch = Vec::with_capacity(BATCH);
    // Why writes failed since the last flush, for the next flush to report.
    let mut failures: Vec<String> = Vec::new();
    let mut closing = false;
    while !closing && let Some(first) = queue.blocking_recv() {
        // A change someone waits for (stored logs, an API change) is written at once; check runs and samples
        // gather for a moment first.
        if !matches!(first, Op::Flush(_) | Op::Close | Op::Apply(_)) {
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
        let (mut writes, flushes): (Vec<Op>, Vec<Op>) =
            batch.drain(..).partition(|op| !matches!(op, Op::Flush(_) | Op::Close));
        // Recovery records are written on their own, so each gets its id (or its error) back.
        let records: Vec<Op> = writes.extract_if(.., |op| matches!(op, Op::Recovery(..) | Op::Apply(_))).collect();
        for op in records {
            match op {
                Op::Recovery(record, done) => {
                    let _ = done.send(write_recovery(&connection, &record).map_err(|e| e.to_string()));
                }
                Op::Apply(change) => change(&mut connection),
                _ => {}
            }
        }
        let timer = commits.start_timer();
        let written = write_all(&mut connection, &mut series, &writes);
        if writes.is_empty() {
            timer.stop_and_discard();
        } else {
            timer.observe_duration();
        }
        if let Err(error) = written {
            // One bad write must not cost the others: retry each on its own and keep what succeeds.
            series.ids.clear();
            tracing::warn!(%error, writes = writes.len(), "Storage batch failed; retrying its writes one by one");
            for op in &writes {
                if let Err(error) = write_all(&mut connection, &mut series, std::slice::from_ref(op)) {
                    series.ids.clear();
                    tracing::error!(%error, "A storage write failed and was not stored");
                    failures.push(error.to_string());
                }
            }
        }
        for flush in flushes {
            if let Op::Flush(done) = flush {
                let result = if failures.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} writes were not stored: {}", failures.len(), failures.join("; ")))
                };
                let _ = done.send(result);
            }
        }
        failures.clear();
    }
}

/// Write operations in one transaction.
fn write_all(connection: &mut Connection, series: &mut SeriesIds, ops: &[Op]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    for op in ops {
        match op {
            Op::Run(run) => write_run(&transaction, series, run)?,
            Op::Samples(samples) => {
                for sample in samples {
                    write_sample(&transaction, series, sample)?;
                }
            }
            Op::Recovered { id, at } => {
                transaction
                    .prepare_cached("UPDATE recovery_attempts SET recovered_at = ?2 WHERE id = ?1")?
                    .execute(params![id, at])?;
            }
            Op::Flush(_) | Op::Close | Op::Recovery(..) | Op::Apply(_) => {}
        }
    }
    transaction.commit()
}

fn write_recovery(db: &Connection, record: &RecoveryRecord) -> rusqlite::Result<i64> {
    db.prepare_cached(
        "INSERT INTO recovery_attempts (check_name, attempt, started_at, duration_ms, action, outcome, exit_code, output)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        record.check,
        record.attempt.attempt,
        to_millis(record.attempt.started_at),
        record.duration.as_secs_f64() * 1000.0,
        record.attempt.action,
        record.attempt.outcome.as_str(),
        record.attempt.exit_code,
        record.attempt.output,
    ])?;
    Ok(db.last_insert_rowid())
}

fn write_run(db: &Connection, series: &mut SeriesIds, run: &CheckRun) -> rusqlite::Result<()> {
    let details: std::collections::BTreeMap<&str, &str> =
        run.details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    db.prepare_cached(
        "INSERT INTO check_runs (check_name, plugin, started_at, duration_ms, status, summary, details, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        run.check,
        run.plugin,
        to_millis(run.started_at),
        run.duration.as_secs_f64() * 1000.0,
        run.health.as_str(),
        run.summary,
        serde_json::to_string(&details).unwrap_or_default(),
        run.error,
    ])?;
    db.prepare_cached("INSERT OR REPLACE INTO check_latest (check_name, run_id) VALUES (?1, ?2)")?
        .execute(params![run.check, db.last_insert_rowid()])?;

    let base = [("check".to_string(), run.check.clone()), ("plugin".to_string(), run.plugin.clone())];
    let sample = |name: &str, value: f64, extra: &[(String, String)]| {
        let mut labels: Vec<(String, String)> = base.iter().chain(extra).cloned().collect();
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        Sample { name: name.to_string(), labels, time: run.started_at, value }
    };
    write_sample(db, series, &sample("check_duration_seconds", run.duration.as_secs_f64(), &[]))?;
    write_sample(db, series, &sample("check_status", f64::from(run.health.nagios_code()), &[]))?;
    for metric in &run.metrics {
        write_sample(db, series, &sample(&metric.name, metric.value, &metric.labels))?;
    }
    Ok(())
}

fn write_sample(db: &Connection, series: &mut SeriesIds, sample: &Sample) -> rusqlite::Result<()> {
    let id = series.id(db, &sample.name, &sample.labels)?;
    db.prepare_cached("INSERT OR REPLACE INTO samples (series_id, ts, value) VALUES (?1, ?2, ?3)")?
        .execute(params![id, to_millis(sample.time), sample.value])?;
    Ok(())
}

/// Series ids cached at most; past this the cache starts over (a plugin inventing label values must not grow the
/// host's memory without bound).
const SERIES_CACHE: usize = 100_000;

/// Series ids by name and canonical labels, cached across batches.
#[derive(Default)]
struct SeriesIds {
    ids: HashMap<(String, String), i64>,
}

impl SeriesIds {
    fn id(&mut self, db: &Connection, name: &str, labels: &[(String, String)]) -> rusqlite::Result<i64> {
        let labels = serde_json::to_string(labels).unwrap_or_default();
        let key = (name.to_string(), labels);
        if let Some(id) = self.ids.get(&key) {
            return Ok(*id);
        }
        db.prepare_cached("INSERT OR IGNORE INTO series (name, labels) VALUES (?1, ?2)")?
            .execute(params![key.0, key.1])?;
        let id = db
            .prepare_cached("SELECT id FROM series WHERE name = ?1 AND labels = ?2")?
            .query_row(params![key.0, key.1], |row| row.get(0))?;
        if self.ids.len() >= SERIES_CACHE {
            self.ids.clear();
        }
        self.ids.insert(key, id);
        Ok(id)
    }
}
