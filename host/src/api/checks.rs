//! The checks: `/v1/health` (every check's latest state), a check's past runs, and the recovery history.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::params::{limit, offset, params, path};
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
    /// Checks to skip (default 0), by name.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Checks to return (default 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// `GET /v1/health[?service=NAME]`: the latest state of every check.
#[utoipa::path(get, path = "/v1/health", tag = "health", params(HealthParams), responses((status = 200, description = "OK", body = HealthReport), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn health(
    State(state): State<AppState>,
    query: Result<Query<HealthParams>, QueryRejection>,
) -> Result<Json<HealthReport>, ApiError> {
    let params = params(query)?;
    let (offset, limit) = (offset(params.offset)?, limit(params.limit, 1000, 1000)?);
    // An offset past every check is an empty page; a page is at most 1000.
    let (offset, limit) = (usize::try_from(offset).unwrap_or(usize::MAX), limit as usize);
    Ok(Json(state.health(params.service.as_deref(), offset, limit)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RecoveryParams {
    /// Only this check's attempts.
    check: Option<String>,
    /// At most this many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
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
    let attempts = state.recovery(params.check, page_limit(params.limit)?).await?;
    Ok(Json(RecoveryReport { attempts }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    /// At most this many runs, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
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
    let runs = state.history(&check, page_limit(params.limit)?).await?;
    Ok(Json(History { check, runs }))
}

/// Runs or attempts to return: 100 without `limit`, else 1 to 1000.
fn page_limit(given: Option<u32>) -> Result<u32, ApiError> {
    // At most 1000, so it fits.
    limit(given.map(u64::from), 100, 1000).map(|n| n as u32)
}
