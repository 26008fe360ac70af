//! Outgoing webhook subscriptions (admin keys only: their URLs may hold tokens) and their delivery attempts.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::access::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::params::{PageParams, admin_only, object_body, params, path};
use crate::events::webhooks::{Delivery, Webhook, WebhookRequest};
use crate::storage::Page;

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(deliveries))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Webhooks {
    webhooks: Vec<Webhook>,
}

/// `GET /v1/webhooks`: the subscriptions (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, description = "OK", body = Webhooks)))]
async fn webhooks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Webhooks>, ApiError> {
    admin_only(&state, &caller, "GET /v1/webhooks")?;
    Ok(Json(Webhooks { webhooks: state.webhooks().await? }))
}

/// `POST /v1/webhooks` with `{"url", "events", "secret"}`: 201 with the subscription.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookRequest, responses((status = 201, description = "Created", body = Webhook), (status = 400, description = "Every problem with the subscription, in `details`", body = ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    json: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let webhook = state.create_webhook(object_body(json)?, caller.name.as_deref()).await?;
    let location = format!("/v1/webhooks/{}", webhook.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(webhook)).into_response())
}

/// `DELETE /v1/webhooks/{id}`: 204; deliveries in progress stop.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path)), responses((status = 204, description = "Deleted"), (status = 404, description = "Not found", body = ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    state.delete_webhook(path(id, "the webhook id")?, caller.name.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/webhooks/{id}/deliveries[?offset=N&limit=N]`: every delivery attempt, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = i64, Path), PageParams), responses((status = 200, description = "OK", body = Page<Delivery>), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    admin_only(&state, &caller, "GET /v1/webhooks/{id}/deliveries")?;
    let id = path(id, "the webhook id")?;
    let (offset, limit) = params(query)?.offset_limit()?;
    Ok(Json(state.deliveries(id, offset, limit).await?))
}
