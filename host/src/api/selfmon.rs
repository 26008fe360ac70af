//! selfmon's own answers: `/health` (is it up), `/metrics` (its metrics for Prometheus), `/v1/status`,
//! `/v1/plugins`, and `POST /v1/reload`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::access::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::params::admin_only;
use crate::api::query::status::{PluginsReport, Status};
use crate::ops::reload::handle::{Outcome, Trigger};
use crate::ops::telemetry::CONTENT_TYPE;

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(liveness))
        .routes(routes!(prometheus))
        .routes(routes!(status))
        .routes(routes!(plugins))
        .routes(routes!(reload))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Liveness {
    status: &'static str,
    version: &'static str,
    uptime_seconds: f64,
}

/// `GET /health`: selfmon itself is up and serving.
#[utoipa::path(get, path = "/health", tag = "selfmon", security(), responses((status = 200, description = "OK", body = Liveness)))]
async fn liveness(State(state): State<AppState>) -> Json<Liveness> {
    Json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
    })
}

/// `GET /metrics`: selfmon's own metrics for Prometheus to scrape.
#[utoipa::path(get, path = "/metrics", tag = "selfmon", responses((status = 200, description = "The Prometheus text format, version 0.0.4", content_type = "text/plain")))]
async fn prometheus(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.prometheus()).into_response()
}

/// `GET /v1/status`: selfmon's own status.
#[utoipa::path(get, path = "/v1/status", tag = "selfmon", responses((status = 200, description = "OK", body = Status)))]
async fn status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(state.status().await?))
}

/// `GET /v1/plugins`: the loaded plugins, what uses each with its grants, failed calls by kind (deadline kills
/// among them) and the latest failed runs; refused plugin files and why.
#[utoipa::path(get, path = "/v1/plugins", tag = "selfmon", responses((status = 200, description = "OK", body = PluginsReport)))]
async fn plugins(State(state): State<AppState>) -> Result<Json<PluginsReport>, ApiError> {
    Ok(Json(state.plugins().await?))
}

/// `POST /v1/reload` (admin): read the config file and the plugins folder again and, when all of it is valid, put
/// it in place (as `SIGHUP` does). 200 with what changed; 422 `reload_refused` with every problem (in `details`) when
/// nothing was changed.
#[utoipa::path(post, path = "/v1/reload", tag = "selfmon", responses((status = 200, description = "Reloaded", body = Outcome), (status = 422, description = "Refused: everything runs as before", body = ErrorBody), (status = 403, description = "Not an admin key", body = ErrorBody)))]
async fn reload(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Outcome>, ApiError> {
    admin_only(&state, &caller, "POST /v1/reload")?;
    let outcome = state
        .reloads
        .reload(Trigger::Api)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "selfmon is stopping"))?;
    if outcome.applied {
        return Ok(Json(outcome));
    }
    let message = format!("the reload was refused, everything runs as before: {}", outcome.errors.join("; "));
    Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reload_refused", message).with_details(outcome.errors))
}
