//! What a rule's queries read: stored metric samples, log counts and the checks' latest states, as of one
//! evaluation time.
//!
//! Besides every stored metric there are two counted from the stored logs: `log_records_total` (one series per
//! `level`) and `log_errors_total` (error and critical records, one series). They answer `rate`, `increase`, `count`
//! and `sum` over a window (records in it; `rate` per second); other aggregations have no value for them. And one is
//! read from the store itself, not from what it holds, as a store that is full cannot hold it:
//! [`STORAGE_FULL`], one sample of 1 or 0.

use std::sync::Arc;
use std::time::SystemTime;

use crate::checks::board::Board;
use crate::checks::health::Health;
use crate::runtime::{Aggregation, BoxFuture, CheckState, MetricQuery, RuleData, SeriesValue, Status};
use crate::storage::{Storage, to_millis};

/// Series read per query at most; a metric with more is cut short (the newest series ids first are not favoured:
/// the order is by id).
pub const MAX_SERIES: usize = 1000;
/// Samples read per series and query at most: the newest of the window.
pub const MAX_SAMPLES: i64 = 100_000;
/// The longest window a query reads; a longer one is cut to this.
pub const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(31 * 86_400);

pub struct Stored {
    pub storage: Storage,
    pub board: Arc<Board>,
    pub now: SystemTime,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("now", &self.now).finish_non_exhaustive()
    }
}

pub type Labels = Vec<(String, String)>;

/// Whether the store is full and refuses writes, now: 1, or 0.
pub const STORAGE_FULL: &str = "storage_full";

impl RuleData for Stored {
    fn aggregate(&self, query: MetricQuery) -> BoxFuture<Option<f64>> {
        let (storage, now) = (self.storage.clone(), self.now);
        Box::pin(async move {
            let series = read(&storage, query.clone(), now).await;
            if is_log_metric(&query.metric) {
                let records = series.iter().flat_map(|(_, counts)| counts).sum();
                return log_value(query.aggregation, records, query.window_ms);
            }
            reduce_all(query.aggregation, series, query.window_ms)
        })
    }

    fn aggregate_series(&self, query: MetricQuery) -> BoxFuture<Vec<SeriesValue>> {
        let (storage, now) = (self.storage.clone(), self.now);
        Box::pin(async move {
            let log = is_log_metric(&query.metric);
            read(&storage, query.clone(), now)
                .await
                .into_iter()
                .filter_map(|(labels, values)| {
                    let value = if log {
                        log_value(query.aggregation, values.iter().sum(), query.window_ms)?
                    } else {
                        reduce(query.aggregation, &values, query.window_ms)?
                    };
                    Some(SeriesValue { labels, value })
                })
                .collect()
        })
    }

    fn checks(&self) -> Vec<CheckState> {
        self.board
            .snapshot()
            .into_iter()
            .map(|check| CheckState {
                status: match check.own_status {
                    Health::Healthy => Some(Status::Healthy),
                    Health::Degraded => Some(Status::Degraded),
                    Health::Unhealthy => Some(Status::Unhealthy),
                    Health::Unknown => None,
                },
                // A run that failed says why in its error.
                summary: match (check.own_status, check.error) {
                    (Health::Unknown, Some(error)) => error,
                    (_, _) => check.summary,
                },
                last_run_ms: check.last_run.and_then(|t| humantime::parse_rfc3339(&t).ok()).map(to_millis),
                enabled: check.enabled,
                depends_on: check.depends_on,
                plugin: check.plugin,
                name: check.name,
            })
            .collect()
    }
}

pub fn is_log_metric(metric: &str) -> bool {
    matches!(metric, "log_records_total" | "log_errors_total")
}

/// The value of a log counter: records in the window.
fn log_value(aggregation: Aggregation, records: f64, window_ms: u64) -> Option<f64> {
    match aggregation {
        Aggregation::Count | Aggregation::Sum | Aggregation::Increase => Some(records),
        Aggregation::Rate => Some(records / seconds(window_ms)),
        _ => None,
    }
}

fn seconds(window_ms: u64) -> f64 {
    (window_ms as f64 / 1000.0).max(0.001)
}

/// Each matching series with its samples of the window, oldest first (for log metrics: the count of records).
async fn read(storage: &Storage, query: MetricQuery, now: SystemTime) -> Vec<(Labels, Vec<f64>)> {
    if query.metric == STORAGE_FULL {
        return vec![(Vec::new(), vec![f64::from(u8::from(storage.is_full()))])];
    }
    let to = to_millis(now);
    let window = query.window_ms.min(u64::try_from(MAX_WINDOW.as_millis()).unwrap_or(u64::MAX));
    let from = to.saturating_sub(i64::try_from(window).unwrap_or(i64::MAX));
    let result = storage.rule_series(query, from, to).await;
    result.unwrap_or_else(|error| {
        tracing::error!(%error, "A rule's query could not be read");
        Vec::new()
    })
}

/// All series together, reduced to one value.
fn reduce_all(aggregation: Aggregation, series: Vec<(Labels, Vec<f64>)>, window_ms: u64) -> Option<f64> {
    match aggregation {
        // Counters are per series; their increases add up.
        Aggregation::Rate | Aggregation::Increase => {
            let each: Vec<f64> = series.iter().filter_map(|(_, v)| reduce(aggregation, v, window_ms)).collect();
            (!each.is_empty()).then(|| each.iter().sum())
        }
        Aggregation::Last => series.iter().filter_map(|(_, v)| v.last().copied()).reduce(f64::max),
        _ => {
            let all: Vec<f64> = series.into_iter().flat_map(|(_, v)| v).collect();
            reduce(aggregation, &all, window_ms)
        }
    }
}

/// One series' samples, oldest first, reduced to one value.
fn reduce(aggregation: Aggregation, values: &[f64], window_ms: u64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    Some(match aggregation {
        Aggregation::Avg => values.iter().sum::<f64>() / n,
        Aggregation::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregation::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregation::Sum => values.iter().sum(),
        Aggregation::Count => n,
        Aggregation::Last => *values.last()?,
        Aggregation::Increase => increase(values)?,
        Aggregation::Rate => increase(values)? / seconds(window_ms),
        Aggregation::P50 => quantile(values, 0.50),
        Aggregation::P95 => quantile(values, 0.95),
        Aggregation::P99 => quantile(values, 0.99),
    })
}

/// How much a counter grew over its samples; a drop is a reset (the process restarted), after which the counter
/// counted from zero. Needs two samples.
fn increase(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    Some(values.windows(2).map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] }).sum())
}

/// The nearest-rank quantile.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_of_one_series() {
        let values = [3.0, 1.0, 4.0, 1.0, 5.0];
        let of = |aggregation| reduce(aggregation, &values, 10_000).unwrap();
        assert_eq!(of(Aggregation::Avg), 2.8);
        assert_eq!((of(Aggregation::Min), of(Aggregation::Max), of(Aggregation::Sum)), (1.0, 5.0, 14.0));
        assert_eq!((of(Aggregation::Count), of(Aggregation::Last)), (5.0, 5.0));
        assert_eq!((of(Aggregation::P50), of(Aggregation::P99)), (3.0, 5.0));
        assert_eq!(reduce(Aggregation::Avg, &[], 1000), None);
    }

    #[test]
    fn counters_allow_for_resets() {
        assert_eq!(increase(&[10.0, 15.0, 20.0]), Some(10.0));
        assert_eq!(increase(&[10.0, 15.0, 2.0, 5.0]), Some(10.0), "5 before the reset, 2 and 3 after");
        assert_eq!(increase(&[7.0]), None, "one sample says nothing about growth");
        assert_eq!(reduce(Aggregation::Rate, &[0.0, 30.0], 60_000), Some(0.5));
        let two = vec![(Vec::new(), vec![0.0, 6.0]), (Vec::new(), vec![1.0, 5.0])];
        assert_eq!(reduce_all(Aggregation::Increase, two, 60_000), Some(10.0));
    }

    #[test]
    fn log_counters_count_records_in_the_window() {
        assert_eq!(log_value(Aggregation::Rate, 30.0, 60_000), Some(0.5));
        assert_eq!(log_value(Aggregation::Increase, 30.0, 60_000), Some(30.0));
        assert_eq!(log_value(Aggregation::Avg, 30.0, 60_000), None);
    }
}
