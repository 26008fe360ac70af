//! Stored metrics and what is made of them: `/v1/metrics`, `/v1/performance` (and its series), `/v1/errors`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::params::{WindowParams, parse_labels, parse_step};
use crate::api::params::{limit, offset, params, parse_time};
use crate::api::query::checks::{MetricsAnswer, MetricsRequest, Subject};
use crate::checks::latency::LatencySeries;
use crate::checks::performance::{Errors, Performance};

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(performance))
        .routes(routes!(performance_series))
        .routes(routes!(errors))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MetricsParams {
    /// The metric; without it, the list of metric names.
    name: Option<String>,
    /// Labels a series must carry: `check=web,plugin=http`.
    labels: Option<String>,
    /// RFC 3339 or Unix seconds; default: an hour before `to`.
    from: Option<String>,
    /// RFC 3339 or Unix seconds; default: now.
    to: Option<String>,
    /// Average into buckets of this width: `60`, `1m`, `1h`.
    step: Option<String>,
    /// Series per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Series to skip (default 0).
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// `GET /v1/metrics`: stored samples of one metric's series, filtered by labels and time, optionally downsampled;
/// without `name`, every metric name.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics", params(MetricsParams), responses((status = 200, description = "OK", body = MetricsAnswer), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn metrics(
    State(state): State<AppState>,
    query: Result<Query<MetricsParams>, QueryRejection>,
) -> Result<Json<MetricsAnswer>, ApiError> {
    let params = params(query)?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message);
    if params.name.is_none()
        && (params.labels.is_some() || params.from.is_some() || params.to.is_some() || params.step.is_some())
    {
        return Err(bad("`labels`, `from`, `to` and `step` select a metric's series: give `name` too".into()));
    }
    let request = MetricsRequest {
        name: params.name,
        matchers: params.labels.as_deref().map(parse_labels).transpose().map_err(bad)?.unwrap_or_default(),
        from: params.from.as_deref().map(|t| parse_time("from", t)).transpose().map_err(bad)?,
        to: params.to.as_deref().map(|t| parse_time("to", t)).transpose().map_err(bad)?,
        step: params.step.as_deref().map(parse_step).transpose().map_err(bad)?,
        // An offset past every series is an empty page; a page is at most 1000.
        offset: usize::try_from(offset(params.offset)?).unwrap_or(usize::MAX),
        limit: limit(params.limit, 100, 1000)? as usize,
    };
    Ok(Json(state.metrics(request).await?))
}

/// `GET /v1/performance[?time_window=SECONDS]`: per check count, error rate, p50/p95/p99 and throughput, and the
/// slowest runs.
#[utoipa::path(get, path = "/v1/performance", tag = "metrics", params(WindowParams), responses((status = 200, description = "OK", body = Performance), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn performance(
    State(state): State<AppState>,
    query: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Json<Performance>, ApiError> {
    Ok(Json(state.performance(params(query)?.window()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    /// A check's name; or `service` and `operation` for spans received over OTLP.
    check: Option<String>,
    service: Option<String>,
    operation: Option<String>,
    /// How far back: `1h` (default), `24h`, `7d` (at most 7 days). The step follows from it: 30 s for an hour,
    /// 15 min for a day, 2 h for a week.
    #[param(value_type = Option<String>)]
    #[serde(default, with = "humantime_serde")]
    range: Option<Duration>,
}

/// `GET /v1/performance/series?check=NAME[&range=24h]` or `?service=S&operation=O`: p50/p95/p99 latency, count and
/// errors per step, for charts.
#[utoipa::path(get, path = "/v1/performance/series", tag = "metrics", params(SeriesParams), responses((status = 200, description = "OK", body = LatencySeries), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "No such check", body = ErrorBody)))]
async fn performance_series(
    State(state): State<AppState>,
    query: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Json<LatencySeries>, ApiError> {
    let params = params(query)?;
    let subject = match (params.check, params.service, params.operation) {
        (Some(check), None, None) => Subject::Check(check),
        (None, Some(service), Some(operation)) => Subject::Operation { service, operation },
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "give `check`, or `service` and `operation`",
            ));
        }
    };
    let range = params.range.unwrap_or(Duration::from_secs(3600));
    Ok(Json(state.latency_series(subject, range).await?))
}

/// `GET /v1/errors[?time_window=SECONDS]`: error counts and rate, per check, and the top error patterns.
#[utoipa::path(get, path = "/v1/errors", tag = "metrics", params(WindowParams), responses((status = 200, description = "OK", body = Errors), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn errors(
    State(state): State<AppState>,
    query: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Json<Errors>, ApiError> {
    Ok(Json(state.errors(params(query)?.window()).await?))
}
