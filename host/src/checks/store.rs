//! The SQL of checks: their runs (with the samples each run makes), recovery attempts, and the reads the health
//! board, the history and the performance answers are made from.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::checks::health::{CheckRun, Health};
use crate::checks::latency::{self, Item, LatencySeries, MAX_SERIES_ITEMS, Window};
use crate::checks::performance::{Errors, Performance, Run, errors, performance};
use crate::checks::recovery::status::Attempt;
use crate::storage::sql::{self, Engine, Row, params};
use crate::storage::{Batch, Batched, Sample, Storage, StorageError, from_millis, rfc3339, to_millis};

/// Where PostgreSQL tells every node the name of a check whose run was just committed.
pub const RUNS_CHANNEL: &str = "selfmon_runs";

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
    pub attempt: Attempt,
    pub duration: Duration,
}

impl Batched for CheckRun {
    fn write(&self, batch: &mut Batch) -> sql::Result<()> {
        let run = self;
        let details: BTreeMap<&str, &str> = run.details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let db = batch.db();
        let id: i64 = db.query_row(
            "INSERT INTO check_runs (check_name, plugin, started_at, duration_ms, status, summary, details, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            params![
                run.check,
                run.plugin,
                to_millis(run.started_at),
                run.duration.as_secs_f64() * 1000.0,
                run.health.as_str(),
                run.summary,
                serde_json::to_string(&details).unwrap_or_default(),
                run.error,
            ],
            |r| r.get(0),
        )?;
        db.execute(
            "INSERT INTO check_latest (check_name, run_id) VALUES (?1, ?2)
             ON CONFLICT (check_name) DO UPDATE SET run_id = excluded.run_id",
            params![run.check, id],
        )?;
        if db.engine() == Engine::Postgres {
            // Every node's board hears of the run once it is committed (`cluster::relay`).
            db.execute(&format!("SELECT pg_notify('{RUNS_CHANNEL}', ?1)"), params![run.check])?;
        }

        let base = [("check".to_string(), run.check.clone()), ("plugin".to_string(), run.plugin.clone())];
        let sample = |name: &str, value: f64, extra: &[(String, String)]| {
            let mut labels: Vec<(String, String)> = base.iter().chain(extra).cloned().collect();
            labels.sort();
            labels.dedup_by(|a, b| a.0 == b.0);
            Sample { name: name.to_string(), labels, time: run.started_at, value }
        };
        batch.sample(&sample("check_duration_seconds", run.duration.as_secs_f64(), &[]))?;
        batch.sample(&sample("check_status", f64::from(run.health.nagios_code()), &[]))?;
        for metric in &run.metrics {
            batch.sample(&sample(&metric.name, metric.value, &metric.labels))?;
        }
        Ok(())
    }
}

/// The latest runs, each read by [`latest_run`].
const LATEST: &str =
    "SELECT r.check_name, r.plugin, r.started_at, r.duration_ms, r.status, r.summary, r.details, r.error
     FROM check_latest AS l JOIN check_runs AS r ON r.id = l.run_id";

fn latest_run(row: &Row) -> sql::Result<CheckRun> {
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
}

/// The check passed again after the recovery attempt with this id.
struct Recovered {
    id: i64,
    at: i64,
}

impl Batched for Recovered {
    fn write(&self, batch: &mut Batch) -> sql::Result<()> {
        batch
            .db()
            .execute("UPDATE recovery_attempts SET recovered_at = ?2 WHERE id = ?1", params![self.id, self.at])?;
        Ok(())
    }
}

impl Storage {
    /// Queue a check run (and its metrics) for writing; waits while the writer is behind.
    pub async fn write_run(&self, run: CheckRun) -> Result<(), StorageError> {
        self.queue(run).await
    }

    /// Store a recovery attempt; its row id once committed.
    pub async fn record_recovery(&self, record: RecoveryRecord) -> Result<i64, StorageError> {
        self.apply(move |db| {
            db.query_row(
                "INSERT INTO recovery_attempts
                 (check_name, attempt, started_at, duration_ms, action, outcome, exit_code, output)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                params![
                    record.check,
                    record.attempt.attempt,
                    to_millis(record.attempt.started_at),
                    record.duration.as_secs_f64() * 1000.0,
                    record.attempt.action,
                    record.attempt.outcome.as_str(),
                    record.attempt.exit_code,
                    record.attempt.output,
                ],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Note that the check passed again after the recovery attempt `id`. Queued without waiting.
    pub fn mark_recovered(&self, id: i64, at: SystemTime) {
        self.queue_later(Recovered { id, at: to_millis(at) });
    }

    /// Stored recovery attempts, newest first, of one check or all.
    pub async fn recovery_attempts(
        &self,
        check: Option<String>,
        limit: u32,
    ) -> Result<Vec<StoredAttempt>, StorageError> {
        self.read(move |db| {
            db.query_map(
                "SELECT check_name, attempt, started_at, duration_ms, action, outcome, exit_code, output, recovered_at
                 FROM recovery_attempts WHERE CAST(?1 AS TEXT) IS NULL OR check_name = ?1 ORDER BY id DESC LIMIT ?2",
                params![check, limit],
                |row| {
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
                },
            )
        })
        .await
    }

    /// One check's runs, newest first.
    pub async fn runs(&self, check: String, limit: u32) -> Result<Vec<StoredRun>, StorageError> {
        self.read(move |db| {
            db.query_map(
                "SELECT started_at, duration_ms, status, summary, error FROM check_runs
                 WHERE check_name = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2",
                params![check, limit],
                |row| {
                    Ok(StoredRun {
                        started_at: rfc3339(row.get(0)?),
                        duration_ms: row.get(1)?,
                        status: Health::parse(&row.get::<_, String>(2)?).unwrap_or(Health::Unknown),
                        summary: row.get(3)?,
                        error: row.get(4)?,
                    })
                },
            )
        })
        .await
    }

    /// The latest run of every check that has run.
    pub async fn latest_runs(&self) -> Result<Vec<CheckRun>, StorageError> {
        self.read(|db| db.query_map(&format!("{LATEST} ORDER BY r.check_name"), [], latest_run)).await
    }

    /// The latest runs of `checks` (PostgreSQL only: for nodes hearing of runs made elsewhere).
    pub async fn latest_runs_of(&self, checks: Vec<String>) -> Result<Vec<CheckRun>, StorageError> {
        let names = serde_json::to_string(&checks).unwrap_or_default();
        self.read(move |db| {
            db.query_map(
                &format!("{LATEST} WHERE l.check_name IN (SELECT json_array_elements_text(?1::text::json))"),
                params![names],
                latest_run,
            )
        })
        .await
    }

    /// The window's bounds in Unix milliseconds, and `summarise` of its runs, computed off the async threads.
    async fn over_runs<T: Send + 'static>(
        &self,
        window: Duration,
        summarise: impl FnOnce(i64, i64, Vec<Run>) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        let to = SystemTime::now();
        let from = to.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let (from, to) = (to_millis(from), to_millis(to));
        self.read(move |db| {
            let runs = db.query_map(
                "SELECT check_name, started_at, duration_ms, status, summary, error FROM check_runs
                 WHERE started_at >= ?1 AND started_at <= ?2 ORDER BY started_at",
                params![from, to],
                |row| {
                    Ok(Run {
                        check: row.get(0)?,
                        started_at: row.get(1)?,
                        duration_ms: row.get(2)?,
                        status: row.get(3)?,
                        summary: row.get(4)?,
                        error: row.get(5)?,
                    })
                },
            )?;
            Ok(summarise(from, to, runs))
        })
        .await
    }

    pub async fn performance(&self, window: Duration) -> Result<Performance, StorageError> {
        self.over_runs(window, move |from, to, runs| performance(window, from, to, &runs)).await
    }

    /// Latency percentiles and counts of a check's runs over a window, in its steps.
    pub async fn run_latency(&self, check: String, window: Window) -> Result<LatencySeries, StorageError> {
        self.read(move |db| {
            let items: Vec<Item> = db.query_map(
                "SELECT started_at, duration_ms, status = 'unhealthy' OR (status = 'unknown' AND error IS NOT NULL)
                 FROM check_runs WHERE check_name = ?1 AND started_at >= ?2 AND started_at <= ?3
                 ORDER BY started_at DESC LIMIT ?4",
                params![check, window.first, window.to, MAX_SERIES_ITEMS],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(latency::series(window, items))
        })
        .await
    }

    /// The latest runs that could not be carried out, per plugin (at most `limit` in all), newest first: (start in
    /// Unix ms, check, why).
    pub async fn recent_failures(
        &self,
        limit: usize,
    ) -> Result<BTreeMap<String, Vec<(i64, String, String)>>, StorageError> {
        self.read(move |db| {
            let mut by_plugin: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
            // SQLite is told which index serves this; PostgreSQL's planner finds it.
            let hint = if db.engine() == Engine::Sqlite { "INDEXED BY check_runs_failed" } else { "" };
            db.query_each(
                &format!(
                    "SELECT plugin, started_at, check_name, error FROM check_runs {hint}
                     WHERE error IS NOT NULL ORDER BY started_at DESC LIMIT ?1"
                ),
                [i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    let failure = (r.get(1)?, r.get(2)?, r.get(3)?);
                    by_plugin.entry(r.get::<_, String>(0)?).or_default().push(failure);
                    Ok(true)
                },
            )?;
            Ok(by_plugin)
        })
        .await
    }

    pub async fn errors(&self, window: Duration) -> Result<Errors, StorageError> {
        self.over_runs(window, move |from, to, runs| errors(window, from, to, &runs)).await
    }
}
