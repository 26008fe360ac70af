//! Answers over a window of stored check runs (and, from [`crate::traces`], spans): latency percentiles, error
//! rates and throughput per check, the slowest runs, and the errors grouped into patterns (with the log records'
//! error templates beside them).
//!
//! A run counts as an error when it found its check down: unhealthy, or a run that could not be carried out.
//! Percentiles are nearest-rank over every run in the window.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rusqlite::params;
use serde::Serialize;

use crate::analysis::ErrorAnalysis;
use crate::storage::{Storage, StorageError, rfc3339, to_millis};

/// The longest window a question may cover.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// The slowest runs listed.
const SLOWEST: usize = 10;
/// The error patterns listed.
const PATTERNS: usize = 20;

/// `GET /v1/performance`.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Performance {
    pub time_window_seconds: f64,
    /// RFC 3339.
    pub from: String,
    pub to: String,
    pub checks: Vec<CheckPerformance>,
    /// The slowest runs in the window, slowest first.
    pub slowest: Vec<SlowRun>,
    /// Per operation (a service's spans of one name, received over OTLP) in the window.
    pub operations: Vec<crate::traces::OperationPerformance>,
    /// The operations with the highest p95, and the operations that their time is spent in.
    pub slowest_operations: Vec<crate::traces::SlowOperation>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct CheckPerformance {
    pub check: String,
    pub count: u64,
    pub errors: u64,
    /// Errors per run, 0 to 1.
    pub error_rate: f64,
    /// Runs per minute over the window.
    pub throughput_per_minute: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct SlowRun {
    pub check: String,
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: f64,
    pub status: String,
    pub summary: String,
}

/// `GET /v1/errors`.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Errors {
    pub time_window_seconds: f64,
    pub from: String,
    pub to: String,
    pub total_runs: u64,
    pub errors: u64,
    /// Errors per run, 0 to 1.
    pub error_rate: f64,
    pub errors_per_minute: f64,
    /// Errors per check, most first.
    pub by_check: Vec<CheckErrors>,
    /// Errors grouped by their message with numbers masked, most frequent first.
    pub top_patterns: Vec<ErrorPattern>,
    /// Error and critical log records over the same window, grouped into templates.
    pub logs: ErrorAnalysis,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct CheckErrors {
    pub check: String,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct ErrorPattern {
    /// The message with every number replaced by `#`.
    pub pattern: String,
    pub count: u64,
    pub checks: Vec<String>,
    /// RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    /// The latest message as it was.
    pub example: String,
}

/// What a latency series is about: a check's runs, or the spans of one service's operation.
#[derive(Debug, Clone)]
pub enum Subject {
    Check(String),
    Operation { service: String, operation: String },
}

/// `GET /v1/performance/series`: latency percentiles and counts over time, in steps.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LatencySeries {
    /// RFC 3339.
    pub from: String,
    pub to: String,
    pub step_seconds: f64,
    /// Every step of the range, oldest first; steps without runs have a count of 0 and no percentiles.
    pub points: Vec<LatencyPoint>,
    /// More than 500 000 runs or spans fell in the range: only the newest were counted, and the oldest steps are
    /// short of theirs.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LatencyPoint {
    /// The step's start, Unix milliseconds.
    pub t: i64,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The steps a series is cut into: the first that gives at most [`MAX_STEPS`] over the range.
const STEPS: [u64; 14] = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400];
const MAX_STEPS: u64 = 120;
/// The most runs or spans one series reads.
const MAX_SERIES_ITEMS: i64 = 500_000;

/// The step for a range.
pub fn step_for(range: Duration) -> Duration {
    let wanted = range.as_secs().div_ceil(MAX_STEPS);
    Duration::from_secs(STEPS.iter().copied().find(|s| *s >= wanted).unwrap_or(STEPS[STEPS.len() - 1]))
}

/// One run, as the window reads it.
struct Run {
    check: String,
    started_at: i64,
    duration_ms: f64,
    status: String,
    summary: String,
    error: Option<String>,
}

impl Run {
    fn is_error(&self) -> bool {
        self.status == "unhealthy" || (self.status == "unknown" && self.error.is_some())
    }
}

impl Storage {
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
            let mut statement = db.prepare(
                "SELECT check_name, started_at, duration_ms, status, summary, error FROM check_runs
                 WHERE started_at >= ?1 AND started_at <= ?2 ORDER BY started_at",
            )?;
            let rows = statement.query_map(params![from, to], |row| {
                Ok(Run {
                    check: row.get(0)?,
                    started_at: row.get(1)?,
                    duration_ms: row.get(2)?,
                    status: row.get(3)?,
                    summary: row.get(4)?,
                    error: row.get(5)?,
                })
            })?;
            let runs = rows.collect::<rusqlite::Result<Vec<Run>>>()?;
            Ok(summarise(from, to, runs))
        })
        .await
    }

    pub async fn performance(&self, window: Duration) -> Result<Performance, StorageError> {
        self.over_runs(window, move |from, to, runs| performance(window, from, to, &runs)).await
    }

    /// Latency percentiles and counts of `subject` over the last `range`, in steps of [`step_for`] it.
    pub async fn latency_series(&self, subject: Subject, range: Duration) -> Result<LatencySeries, StorageError> {
        let step = i64::try_from(step_for(range).as_millis()).unwrap_or(i64::MAX);
        let to = to_millis(SystemTime::now());
        let from = to - i64::try_from(range.as_millis()).unwrap_or(i64::MAX);
        let first = from.div_euclid(step) * step;
        self.read(move |db| {
            // (start in ms, duration in ms, whether it is an error)
            let items: Vec<(i64, f64, bool)> = match &subject {
                Subject::Check(check) => db
                    .prepare_cached(
                        "SELECT started_at, duration_ms, status = 'unhealthy' OR (status = 'unknown' AND error IS NOT NULL)
                         FROM check_runs WHERE check_name = ?1 AND started_at >= ?2 AND started_at <= ?3
                         ORDER BY started_at DESC LIMIT ?4",
                    )?
                    .query_map(params![check, first, to, MAX_SERIES_ITEMS], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?,
                Subject::Operation { service, operation } => db
                    .prepare_cached(
                        "SELECT start_ns / 1000000, duration_ns / 1e6, status = 'error' FROM spans
                         WHERE service = ?1 AND name = ?2 AND start_ns >= ?3 AND start_ns <= ?4
                         ORDER BY start_ns DESC LIMIT ?5",
                    )?
                    .query_map(
                        params![service, operation, first.saturating_mul(1_000_000), to.saturating_mul(1_000_000), MAX_SERIES_ITEMS],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?
                    .collect::<rusqlite::Result<_>>()?,
            };
            let truncated = items.len() >= usize::try_from(MAX_SERIES_ITEMS).unwrap_or(usize::MAX);
            let mut buckets: BTreeMap<i64, (Vec<f64>, u64)> = BTreeMap::new();
            let mut t = first;
            while t <= to {
                buckets.insert(t, (Vec::new(), 0));
                t += step;
            }
            for (at, duration, error) in items {
                if let Some((durations, errors)) = buckets.get_mut(&(at.div_euclid(step) * step)) {
                    durations.push(duration);
                    *errors += u64::from(error);
                }
            }
            let points = buckets
                .into_iter()
                .map(|(t, (mut durations, errors))| {
                    durations.sort_by(f64::total_cmp);
                    let at = |q| (!durations.is_empty()).then(|| percentile(&durations, q));
                    LatencyPoint {
                        t,
                        count: durations.len() as u64,
                        errors,
                        p50_ms: at(0.50),
                        p95_ms: at(0.95),
                        p99_ms: at(0.99),
                    }
                })
                .collect();
            Ok(LatencySeries { from: rfc3339(first), to: rfc3339(to), step_seconds: step as f64 / 1000.0, points, truncated })
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
            let mut statement = db.prepare_cached(
                "SELECT plugin, started_at, check_name, error FROM check_runs INDEXED BY check_runs_failed
                 WHERE error IS NOT NULL ORDER BY started_at DESC LIMIT ?1",
            )?;
            let mut by_plugin: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
            let rows = statement.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
            })?;
            for row in rows {
                let (plugin, failure) = row?;
                by_plugin.entry(plugin).or_default().push(failure);
            }
            Ok(by_plugin)
        })
        .await
    }

    pub async fn errors(&self, window: Duration) -> Result<Errors, StorageError> {
        self.over_runs(window, move |from, to, runs| errors(window, from, to, &runs)).await
    }
}

fn performance(window: Duration, from: i64, to: i64, runs: &[Run]) -> Performance {
    let minutes = window.as_secs_f64() / 60.0;
    let mut by_check: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_check.entry(&run.check).or_default().push(run);
    }
    let checks = by_check
        .into_iter()
        .map(|(check, runs)| {
            let mut durations: Vec<f64> = runs.iter().map(|r| r.duration_ms).collect();
            durations.sort_by(f64::total_cmp);
            let count = runs.len() as u64;
            let errors = runs.iter().filter(|r| r.is_error()).count() as u64;
            CheckPerformance {
                check: check.to_string(),
                count,
                errors,
                error_rate: errors as f64 / count as f64,
                throughput_per_minute: count as f64 / minutes,
                mean_ms: durations.iter().sum::<f64>() / count as f64,
                p50_ms: percentile(&durations, 0.50),
                p95_ms: percentile(&durations, 0.95),
                p99_ms: percentile(&durations, 0.99),
                max_ms: durations.last().copied().unwrap_or_default(),
            }
        })
        .collect();
    let mut slowest: Vec<&Run> = runs.iter().collect();
    slowest.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    let slowest = slowest
        .into_iter()
        .take(SLOWEST)
        .map(|run| SlowRun {
            check: run.check.clone(),
            started_at: rfc3339(run.started_at),
            duration_ms: run.duration_ms,
            status: run.status.clone(),
            summary: run.summary.clone(),
        })
        .collect();
    Performance {
        time_window_seconds: window.as_secs_f64(),
        from: rfc3339(from),
        to: rfc3339(to),
        checks,
        slowest,
        operations: Vec::new(),
        slowest_operations: Vec::new(),
    }
}

fn errors(window: Duration, from: i64, to: i64, runs: &[Run]) -> Errors {
    let failed: Vec<&Run> = runs.iter().filter(|r| r.is_error()).collect();
    let mut by_check: BTreeMap<&str, u64> = BTreeMap::new();
    let mut patterns: BTreeMap<String, ErrorPattern> = BTreeMap::new();
    for run in &failed {
        *by_check.entry(&run.check).or_default() += 1;
        let message = run.error.as_deref().unwrap_or(&run.summary);
        let entry = patterns.entry(pattern(message)).or_insert_with_key(|pattern| ErrorPattern {
            pattern: pattern.clone(),
            count: 0,
            checks: Vec::new(),
            first_seen: rfc3339(run.started_at),
            last_seen: String::new(),
            example: String::new(),
        });
        entry.count += 1;
        entry.last_seen = rfc3339(run.started_at);
        entry.example = message.to_string();
        if !entry.checks.contains(&run.check) {
            entry.checks.push(run.check.clone());
        }
    }
    let mut by_check: Vec<CheckErrors> =
        by_check.into_iter().map(|(check, errors)| CheckErrors { check: check.to_string(), errors }).collect();
    by_check.sort_by(|a, b| b.errors.cmp(&a.errors).then_with(|| a.check.cmp(&b.check)));
    let mut top_patterns: Vec<ErrorPattern> = patterns.into_values().collect();
    top_patterns.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| b.last_seen.cmp(&a.last_seen)));
    top_patterns.truncate(PATTERNS);
    let errors = failed.len() as u64;
    Errors {
        time_window_seconds: window.as_secs_f64(),
        from: rfc3339(from),
        to: rfc3339(to),
        total_runs: runs.len() as u64,
        errors,
        error_rate: if runs.is_empty() { 0.0 } else { errors as f64 / runs.len() as f64 },
        errors_per_minute: errors as f64 / (window.as_secs_f64() / 60.0),
        by_check,
        top_patterns,
        logs: ErrorAnalysis::default(),
    }
}

/// The nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A message with its numbers (counts, ports, addresses, durations) masked, so repeats of one failure group. A
/// number right after `HTTP`, `status` or `code` is kept: 500 and 503 are different failures.
fn pattern(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut end = at + c.len_utf8();
        // 127.0.0.1 and 2.5 are one number.
        while let Some(&(next_at, next)) = chars.peek() {
            if next.is_ascii_digit()
                || (next == '.' && message[next_at + 1..].starts_with(|d: char| d.is_ascii_digit()))
            {
                end = next_at + next.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        // The word right before the number, at most a few bytes of it.
        let before = message[..at].trim_end();
        let word = &before[before.floor_char_boundary(before.len().saturating_sub(6))..];
        if ["http", "status", "code"].iter().any(|w| word.to_ascii_lowercase().ends_with(w)) {
            out.push_str(&message[at..end]);
        } else {
            out.push('#');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.95), 95.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn numbers_are_masked_so_repeats_group() {
        assert_eq!(
            pattern("connect to 127.0.0.1:5432 failed after 2.5 s"),
            pattern("connect to 10.1.2.3:6543 failed after 10 s")
        );
        assert_eq!(pattern("HTTP 503 in 12 ms (expected 200)"), "HTTP 503 in # ms (expected #)");
        assert_eq!(pattern("status code 500 after 1.5 s"), "status code 500 after # s");
        assert_ne!(pattern("HTTP 503"), pattern("HTTP 500"));
        assert_eq!(pattern("v1.2. done"), "v#. done");
    }
}
