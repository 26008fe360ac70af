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

use super::{Sample, to_millis};
use crate::health::CheckRun;

/// Queued operations written in one transaction at most.
const BATCH: usize = 1024;

/// How long writes gather before a group is committed.
const GROUP_WINDOW: Duration = Duration::from_millis(200);

pub enum Op {
    Run(Box<CheckRun>),
    Samples(Vec<Sample>),
    Flush(oneshot::Sender<()>),
}

pub fn run(mut connection: Connection, mut queue: mpsc::Receiver<Op>) {
    let mut series = SeriesIds::default();
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = queue.blocking_recv() {
        if !matches!(first, Op::Flush(_)) {
            std::thread::sleep(GROUP_WINDOW);
        }
        batch.push(first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let writes = batch.len();
        if let Err(error) = write_batch(&mut connection, &mut series, batch.drain(..), &mut flushes) {
            // The ids cached for this transaction may have been rolled back with it.
            series.ids.clear();
            tracing::error!(%error, writes, "Storage write failed; the batch was not stored");
        }
        for flush in flushes {
            let _ = flush.send(());
        }
    }
}

fn write_batch(
    connection: &mut Connection,
    series: &mut SeriesIds,
    ops: impl Iterator<Item = Op>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    for op in ops {
        match op {
            Op::Run(run) => write_run(&transaction, series, &run)?,
            Op::Samples(samples) => {
                for sample in &samples {
                    write_sample(&transaction, series, sample)?;
                }
            }
            Op::Flush(done) => flushes.push(done),
        }
    }
    transaction.commit()
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
        self.ids.insert(key, id);
        Ok(id)
    }
}
