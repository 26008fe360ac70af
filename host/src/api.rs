//! The HTTP API on the API port. This is its first slice: selfmon's own liveness, the health of every check, and
//! the recovery history.
//!
//! Errors are JSON of one shape, `{"error": {"code", "message"}}`, made in one place ([`ApiError`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::health::{Board, CheckState, Health};
use crate::storage::{Storage, StoredAttempt};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub board: Arc<Board>,
    pub storage: Storage,
    pub started: Instant,
}

/// The API's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(liveness))
        .route("/v1/health", get(health))
        .route("/v1/recovery", get(recovery))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

#[derive(Serialize)]
struct Liveness {
    status: &'static str,
    version: &'static str,
    uptime_seconds: f64,
}

/// `GET /health`: selfmon itself is up and serving.
async fn liveness(State(state): State<AppState>) -> Json<Liveness> {
    Json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthQuery {
    /// Only this check.
    service: Option<String>,
}

#[derive(Serialize)]
struct HealthReport {
    /// The worst status among the enabled checks reported (of the one check, when `service` names one).
    status: Health,
    checks: Vec<CheckState>,
}

/// `GET /v1/health[?service=NAME]`: the latest state of every check.
async fn health(
    State(state): State<AppState>,
    query: Result<Query<HealthQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HealthReport>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let mut checks = state.board.snapshot();
    if let Some(service) = &query.service {
        checks.retain(|c| &c.name == service);
        if checks.is_empty() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_check", format!("no check named `{service}`")));
        }
    }
    let considered = |c: &&CheckState| c.enabled || query.service.is_some();
    let status = checks.iter().filter(considered).map(|c| c.status).max().unwrap_or(Health::Healthy);
    Ok(Json(HealthReport { status, checks }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryQuery {
    /// Only this check's attempts.
    check: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

#[derive(Serialize)]
struct RecoveryReport {
    attempts: Vec<StoredAttempt>,
}

/// `GET /v1/recovery[?check=NAME][&limit=N]`: stored recovery attempts, newest first.
async fn recovery(
    State(state): State<AppState>,
    query: Result<Query<RecoveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RecoveryReport>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let attempts = state.storage.recovery_attempts(query.check, limit).await.map_err(|error| {
        tracing::error!(%error, "Reading recovery attempts failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", "the recovery history could not be read")
    })?;
    Ok(Json(RecoveryReport { attempts }))
}

/// An error answer: a status code, a stable machine-readable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
