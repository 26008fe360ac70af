//! Latency as checks and traces both report it: one set of figures ([`Latency`]) for a check's runs and for an
//! operation's spans, and latency over time in steps ([`LatencySeries`]). It imports only storage's time helpers.
//!
//! Percentiles are nearest-rank over every run or span counted.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::storage::{rfc3339, to_millis};

/// Count, errors, throughput and latency of a set of runs or spans over a window.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Latency {
    pub count: u64,
    pub errors: u64,
    /// Errors per run or span, 0 to 1.
    pub error_rate: f64,
    /// Runs or spans per minute over the window.
    pub throughput_per_minute: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The figures of `durations` (milliseconds, at least one), `errors` of which failed, over `minutes`.
    pub fn of(mut durations: Vec<f64>, errors: usize, minutes: f64) -> Self {
        durations.sort_by(f64::total_cmp);
        let count = durations.len() as f64;
        Self {
            count: durations.len() as u64,
            errors: errors as u64,
            error_rate: errors as f64 / count,
            throughput_per_minute: count / minutes,
            mean_ms: durations.iter().sum::<f64>() / count,
            p50_ms: percentile(&durations, 0.50),
            p95_ms: percentile(&durations, 0.95),
            p99_ms: percentile(&durations, 0.99),
            max_ms: durations.last().copied().unwrap_or_default(),
        }
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
pub const MAX_SERIES_ITEMS: i64 = 500_000;

/// The step for a range.
pub fn step_for(range: Duration) -> Duration {
    let wanted = range.as_secs().div_ceil(MAX_STEPS);
    Duration::from_secs(STEPS.iter().copied().find(|s| *s >= wanted).unwrap_or(STEPS[STEPS.len() - 1]))
}

/// The steps a series covers: from the step that holds `range` ago, to now. Times are Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub first: i64,
    pub to: i64,
    pub step: i64,
}

impl Window {
    /// The last `range`, in steps of [`step_for`] it.
    pub fn ending_now(range: Duration) -> Self {
        let step = i64::try_from(step_for(range).as_millis()).unwrap_or(i64::MAX);
        let to = to_millis(SystemTime::now());
        let from = to - i64::try_from(range.as_millis()).unwrap_or(i64::MAX);
        Self { first: from.div_euclid(step) * step, to, step }
    }
}

/// One run or span of a series: its start (Unix ms), its duration (ms), and whether it failed.
pub type Item = (i64, f64, bool);

/// The items of a window (newest first, at most [`MAX_SERIES_ITEMS`]) in its steps.
pub fn series(window: Window, items: Vec<Item>) -> LatencySeries {
    let Window { first, to, step } = window;
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
    LatencySeries { from: rfc3339(first), to: rfc3339(to), step_seconds: step as f64 / 1000.0, points, truncated }
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
}
