//! Stored runs, spans and metrics as the API shows them: `/v1/metrics`, a check's history, `/v1/performance` (check
//! runs and the spans' operations) and its series (of a check or an operation), `/v1/errors` (with the log records'
//! error templates), and the recovery history.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Queries, check_window, storage};
use crate::api::error::QueryError;
use crate::checks::latency::{LatencySeries, Window};
use crate::checks::performance::{Errors, MAX_WINDOW, Performance};
use crate::checks::store::{StoredAttempt, StoredRun};
use crate::storage::{MetricName, SeriesError, SeriesPage, SeriesQuery, rfc3339, to_millis};

/// What a latency series is about: a check's runs, or the spans of one service's operation.
#[derive(Debug, Clone)]
pub enum Subject {
    Check(String),
    Operation { service: String, operation: String },
}

/// A metrics query, as the API takes it.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    pub name: Option<String>,
    pub matchers: Vec<(String, String)>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub step: Option<Duration>,
    pub offset: usize,
    pub limit: usize,
}

/// `/v1/metrics`: the metric names, or a page of one metric's series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MetricsAnswer {
    Names {
        metrics: Vec<MetricName>,
    },
    Series {
        metric: String,
        /// RFC 3339.
        from: String,
        to: String,
        step_seconds: Option<f64>,
        offset: usize,
        limit: usize,
        #[serde(flatten)]
        page: SeriesPage,
    },
}

/// 9999-12-31T23:59:59Z: times are written as RFC 3339, which has four-digit years.
const LATEST: Duration = Duration::from_secs(253_402_300_799);

/// The default range of a metrics query without `from`.
const DEFAULT_RANGE: Duration = Duration::from_secs(3600);

impl Queries {
    /// Latency percentiles and counts of a check or an operation over time.
    pub async fn latency_series(&self, subject: Subject, range: Duration) -> Result<LatencySeries, QueryError> {
        if range.is_zero() || range > MAX_WINDOW {
            return Err(QueryError::Invalid(format!(
                "`range` must be longer than 0s and at most {}",
                humantime::format_duration(MAX_WINDOW)
            )));
        }
        if let Subject::Check(check) = &subject
            && !self.board.snapshot().iter().any(|c| c.name == *check)
        {
            return Err(QueryError::NotFound {
                code: "unknown_check",
                message: format!("no check is named `{check}`"),
            });
        }
        let window = Window::ending_now(range);
        match subject {
            Subject::Check(check) => self.storage.run_latency(check, window).await,
            Subject::Operation { service, operation } => self.storage.span_latency(service, operation, window).await,
        }
        .map_err(|e| QueryError::Storage(e.to_string()))
    }

    pub async fn metrics(&self, request: MetricsRequest) -> Result<MetricsAnswer, QueryError> {
        let Some(name) = request.name else {
            let metrics = self.storage.metric_names().await.map_err(|e| QueryError::Storage(e.to_string()))?;
            return Ok(MetricsAnswer::Names { metrics });
        };
        let to = request.to.unwrap_or_else(SystemTime::now);
        let from = request.from.unwrap_or_else(|| to.checked_sub(DEFAULT_RANGE).unwrap_or(SystemTime::UNIX_EPOCH));
        if from > to {
            return Err(QueryError::Invalid("`from` is after `to`".into()));
        }
        if to > UNIX_EPOCH + LATEST {
            return Err(QueryError::Invalid("`from` and `to` must be before the year 10000".into()));
        }
        if request.step.is_some_and(|s| s < Duration::from_secs(1)) {
            return Err(QueryError::Invalid("`step` must be at least 1s".into()));
        }
        let query = SeriesQuery {
            name: name.clone(),
            matchers: request.matchers,
            from,
            to,
            step: request.step,
            offset: request.offset,
            limit: request.limit,
        };
        let page = self.storage.series(query).await.map_err(|error| match error {
            SeriesError::TooManyPoints { .. } | SeriesError::TooManyInAll => QueryError::Invalid(error.to_string()),
            SeriesError::Storage(e) => QueryError::Storage(e.to_string()),
        })?;
        Ok(MetricsAnswer::Series {
            metric: name,
            from: rfc3339(to_millis(from)),
            to: rfc3339(to_millis(to)),
            step_seconds: request.step.map(|s| s.as_secs_f64()),
            offset: request.offset,
            limit: request.limit,
            page,
        })
    }

    /// Past runs of one check, newest first.
    pub async fn history(&self, check: &str, limit: u32) -> Result<Vec<StoredRun>, QueryError> {
        if !self.board.snapshot().iter().any(|c| c.name == check) {
            return Err(QueryError::NotFound { code: "unknown_check", message: format!("no check named `{check}`") });
        }
        self.storage.runs(check.to_string(), limit).await.map_err(storage)
    }

    /// Latency percentiles, error rates and throughput per check over the last `window`, and the slowest runs.
    pub async fn performance(&self, window: Duration) -> Result<Performance, QueryError> {
        check_window(window)?;
        let mut performance = self.storage.performance(window).await.map_err(storage)?;
        (performance.operations, performance.slowest_operations) =
            self.storage.span_performance(window).await.map_err(storage)?;
        Ok(performance)
    }

    /// Error counts, rates and the most frequent error patterns over the last `window`.
    pub async fn errors(&self, window: Duration) -> Result<Errors, QueryError> {
        check_window(window)?;
        let mut errors = self.storage.errors(window).await.map_err(storage)?;
        errors.logs = self.storage.log_errors(window).await.map_err(storage)?;
        Ok(errors)
    }

    pub async fn recovery(&self, check: Option<String>, limit: u32) -> Result<Vec<StoredAttempt>, QueryError> {
        self.storage.recovery_attempts(check, limit).await.map_err(storage)
    }
}
