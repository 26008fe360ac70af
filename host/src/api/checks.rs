//! The checks: `/v1/health` (every check's latest state), a check's past runs, and the recovery history.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::params::{params, path};
use crate::api::query::status::HealthReport;
use crate::checks::store::{StoredAttempt, StoredRun};

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(history)).routes(routes!(recovery))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HealthParams {
    /// Only this check.
    service: Option<String>,
    /// Checks to skip (default 0) and to return (default 1000, at most 1000), by name.
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /v1/health[?service=NAME]`: the latest state of every check.
#[utoipa::path(get, path = "/v1/health", tag = "health", params(HealthParams), responses((status = 200, description = "OK", body = HealthReport), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn health(
    State(state): State<AppState>,
    query: Result<Query<HealthParams>, QueryRejection>,
) -> Result<Json<HealthReport>, ApiError> {
    let params = params(query)?;
    let (offset, limit) = (params.offset.unwrap_or(0), params.limit.unwrap_or(1000).clamp(1, 1000));
    Ok(Json(state.health(params.service.as_deref(), offset, limit)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RecoveryParams {
    /// Only this check's attempts.
    check: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct RecoveryReport {
    attempts: Vec<StoredAttempt>,
}

/// `GET /v1/recovery[?check=NAME][&limit=N]`: stored recovery attempts, newest first.
#[utoipa::path(get, path = "/v1/recovery", tag = "health", params(RecoveryParams), responses((status = 200, description = "OK", body = RecoveryReport), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn recovery(
    State(state): State<AppState>,
    query: Result<Query<RecoveryParams>, QueryRejection>,
) -> Result<Json<RecoveryReport>, ApiError> {
    let params = params(query)?;
    let attempts = state.recovery(params.check, params.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(RecoveryReport { attempts }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    /// At most this many runs, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct History {
    check: String,
    runs: Vec<StoredRun>,
}

/// `GET /v1/health/{service}/history[?limit=N]`: a check's past runs, newest first.
#[utoipa::path(get, path = "/v1/health/{service}/history", tag = "health", params(("service" = String, Path, description = "The check"), HistoryParams), responses((status = 200, description = "OK", body = History), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn history(
    State(state): State<AppState>,
    service: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let check = path(service, "the check name")?;
    let params = params(query)?;
    let runs = state.history(&check, params.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(History { check, runs }))
}
