//! Analytics: `POST /v1/events`, the answers over the stored events, and erasing a user's data.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics::answers::Analytics;
use crate::analytics::events::{Erased, EventRequest, MAX_BATCH, NewEvent, Rejected};
use crate::api::AppState;
use crate::api::access::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::intake::{self, JsonShape};
use crate::api::params::{admin_only, params, path};

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_events)).routes(routes!(analytics)).routes(routes!(erase_user))
}

/// What `POST /v1/events` did.
#[derive(Serialize, utoipa::ToSchema)]
struct EventsTaken {
    accepted: usize,
    /// Events refused, each with why; the others are stored.
    rejected: Vec<Rejected>,
}

/// `POST /v1/events`: a batch of events (`{"events": [...]}` or an array), each checked on its own; 202 with the
/// ones refused and why, 400 when none could be taken.
#[utoipa::path(post, path = "/v1/events", tag = "analytics", request_body(content = Vec<EventRequest>, description = "An array of events, or `{\"events\": [...]}`; `Content-Encoding: gzip` accepted"), responses((status = 202, description = "Stored (all but `rejected`)", body = EventsTaken), (status = 400, description = "Not a batch of events, or none valid", body = ErrorBody), (status = 413, description = "Over `[ingest] max_inflated` once decompressed, more events than `[ingest] max_items` (10 000 at most), or more than `[ingest] memory` once decoded", body = ErrorBody), (status = 503, description = "Storage is behind, or other ingests hold `[ingest] memory`; retry after `Retry-After` seconds", body = ErrorBody), (status = 507, description = "Storage is full (the disk, or `[storage] size_limit`): nothing was stored; retry after `Retry-After` seconds", body = ErrorBody)))]
async fn post_events(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let ingest = &state.ingest;
    let mut admission = state.admit(body.len() as u64).await?;
    let body = intake::inflate(&headers, &body, ingest.max_inflated.as_u64(), &mut admission).await?;
    // Counted and weighed before the body is parsed: what parsing it would take is held, or it is refused.
    let shape = JsonShape::of(&body);
    let max = ingest.max_items.min(MAX_BATCH);
    if shape.items > max {
        return Err(intake::too_many("events", max).into());
    }
    admission.add(intake::decoded(body.len(), shape, intake::JSON_TOKEN, size_of::<NewEvent>())).await?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message);
    let batch = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(events)) => events,
        Ok(serde_json::Value::Object(mut object)) => match object.remove("events") {
            Some(serde_json::Value::Array(events)) if object.is_empty() => events,
            _ => return Err(bad("send an array of events, or `{\"events\": [...]}`".into())),
        },
        Ok(_) => return Err(bad("send an array of events, or `{\"events\": [...]}`".into())),
        Err(error) => return Err(bad(format!("the body is not JSON: {error}"))),
    };
    let count = batch.len();
    let (accepted, rejected) = state.record_events(&admission, batch).await?;
    if accepted == 0 && count > 0 {
        let details = rejected.iter().take(20).map(|r| format!("event {}: {}", r.index, r.error)).collect();
        return Err(bad(format!("none of the {count} events is valid")).with_details(details));
    }
    Ok((StatusCode::ACCEPTED, Json(EventsTaken { accepted, rejected })).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AnalyticsParams {
    /// Days back from now (default 30, at most 366).
    #[param(minimum = 1, maximum = 366)]
    days: Option<u64>,
}

/// `GET /v1/analytics[?days=30]`: active users, engagement and sessions, completion rates, satisfaction, weekly
/// cohort retention, and AI cost per model, user and day against the budget.
#[utoipa::path(get, path = "/v1/analytics", tag = "analytics", params(AnalyticsParams), responses((status = 200, description = "OK", body = Analytics), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn analytics(
    State(state): State<AppState>,
    query: Result<Query<AnalyticsParams>, QueryRejection>,
) -> Result<Json<Analytics>, ApiError> {
    Ok(Json(state.analytics(params(query)?.days.unwrap_or(30)).await?))
}

/// `DELETE /v1/users/{user_id}/data` (admin): erase every event, span and log record of the user (by the id the
/// platform knows, or its pseudonym); the counts, and an audit record.
#[utoipa::path(delete, path = "/v1/users/{user_id}/data", tag = "analytics", params(("user_id" = String, Path)), responses((status = 200, description = "Erased", body = Erased), (status = 403, description = "Not an admin key", body = ErrorBody)))]
async fn erase_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<Erased>, ApiError> {
    admin_only(&state, &caller, "DELETE /v1/users/{user_id}/data")?;
    Ok(Json(state.erase_user(&path(user, "the user id")?, caller.name.as_deref()).await?))
}
