//! Answers over a window of stored check runs: latency percentiles, error rates and throughput per check
//! ([`Latency`]), the slowest runs, and the errors grouped into patterns. The answers also carry the spans'
//! per-operation figures ([`crate::traces::profile`]) and the log records' error templates
//! ([`crate::logs::analysis`]); the query layer fills those in.
//!
//! A run counts as an error when it found its check down: unhealthy, or a run that could not be carried out.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::checks::latency::Latency;
use crate::logs::analysis::ErrorAnalysis;
use crate::storage::rfc3339;
use crate::traces::profile::{OperationPerformance, SlowOperation};

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
    pub operations: Vec<OperationPerformance>,
    /// The operations with the highest p95, and the operations that their time is spent in.
    pub slowest_operations: Vec<SlowOperation>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct CheckPerformance {
    pub check: String,
    /// Over its runs in the window.
    #[serde(flatten)]
    #[graphql(flatten)]
    pub latency: Latency,
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

/// One run, as the window reads it.
pub struct Run {
    pub check: String,
    pub started_at: i64,
    pub duration_ms: f64,
    pub status: String,
    pub summary: String,
    pub error: Option<String>,
}

impl Run {
    fn is_error(&self) -> bool {
        self.status == "unhealthy" || (self.status == "unknown" && self.error.is_some())
    }
}

pub fn performance(window: Duration, from: i64, to: i64, runs: &[Run]) -> Performance {
    let minutes = window.as_secs_f64() / 60.0;
    let mut by_check: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_check.entry(&run.check).or_default().push(run);
    }
    let checks = by_check
        .into_iter()
        .map(|(check, runs)| {
            let durations = runs.iter().map(|r| r.duration_ms).collect();
            let errors = runs.iter().filter(|r| r.is_error()).count();
            CheckPerformance { check: check.to_string(), latency: Latency::of(durations, errors, minutes) }
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

pub fn errors(window: Duration, from: i64, to: i64, runs: &[Run]) -> Errors {
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
