//! Alerts and what governs them: active and resolved alerts, acknowledgements, the rules created through the API,
//! every rule's state, notification attempts, and silences.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::alerting::alert::Alert;
use crate::alerting::api_rules::{Rule, RuleRequest};
use crate::alerting::channels::Attempt;
use crate::alerting::engine::RuleStatus;
use crate::alerting::silences::{Silence, SilenceRequest};
use crate::api::AppState;
use crate::api::access::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::params::{PageParams, object_body, params, path};
use crate::storage::Page;

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(alerts))
        .routes(routes!(alert))
        .routes(routes!(acknowledge))
        .routes(routes!(rules, create_rule))
        .routes(routes!(rule, delete_rule))
        .routes(routes!(rule_states))
        .routes(routes!(notifications))
        .routes(routes!(silences, create_silence))
        .routes(routes!(silence, expire_silence))
}

#[derive(Serialize, utoipa::ToSchema)]
struct AlertsReport {
    /// Pending and firing alerts, newest first.
    active: Vec<Alert>,
    /// Resolved alerts, newest first, a page at a time.
    history: Page<Alert>,
}

/// `GET /v1/alerts[?offset=N][&limit=N]`: active alerts, and a page of the resolved ones.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(PageParams), responses((status = 200, description = "OK", body = AlertsReport), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn alerts(
    State(state): State<AppState>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<AlertsReport>, ApiError> {
    let (offset, limit) = params(query)?.offset_limit()?;
    let active = state.alerts(true, 0, 1000).await?.items;
    let history = state.alerts(false, offset, limit).await?;
    Ok(Json(AlertsReport { active, history }))
}

/// `GET /v1/alerts/{id}`: one alert, active or resolved (the link in notifications).
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts", params(("id" = i64, Path, description = "The alert")), responses((status = 200, description = "OK", body = Alert), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn alert(State(state): State<AppState>, id: Result<Path<i64>, PathRejection>) -> Result<Json<Alert>, ApiError> {
    Ok(Json(state.alert(path(id, "the alert id")?).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Acknowledgement {
    #[serde(default)]
    comment: String,
}

/// `POST /v1/alerts/{id}/acknowledge` with `{"comment": "..."}`: escalation stops, the alert stays visible.
#[utoipa::path(post, path = "/v1/alerts/{id}/acknowledge", tag = "alerts", params(("id" = i64, Path, description = "The alert")), request_body = Acknowledgement, responses((status = 200, description = "OK", body = Alert), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn acknowledge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, PathRejection>,
    json: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<Alert>, ApiError> {
    let id = path(id, "the alert id")?;
    let comment = object_body::<Acknowledgement>(json)?.comment;
    Ok(Json(state.acknowledge(id, caller.name, comment).await?))
}

/// `GET /v1/alerts/rules[?offset=N][&limit=N]`: alert rules by name.
#[utoipa::path(get, path = "/v1/alerts/rules", tag = "alerts", params(PageParams), responses((status = 200, description = "OK", body = Page<Rule>), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn rules(
    State(state): State<AppState>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<Rule>>, ApiError> {
    let (offset, limit) = params(query)?.offset_limit()?;
    Ok(Json(state.rules(offset, limit).await?))
}

/// `POST /v1/alerts/rules`: create a rule; 201 with the rule, or 400 naming every problem.
#[utoipa::path(post, path = "/v1/alerts/rules", tag = "alerts", request_body = RuleRequest, responses((status = 201, description = "Created", body = Rule), (status = 400, description = "Every problem with the rule, in `details`", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody)))]
async fn create_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    json: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let rule = state.create_rule(object_body(json)?, caller.name).await?;
    let location = format!("/v1/alerts/rules/{}", rule.name);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(rule)).into_response())
}

/// `GET /v1/alerts/rules/{name}`.
#[utoipa::path(get, path = "/v1/alerts/rules/{name}", tag = "alerts", params(("name" = String, Path)), responses((status = 200, description = "OK", body = Rule), (status = 404, description = "Not found", body = ErrorBody)))]
async fn rule(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Rule>, ApiError> {
    Ok(Json(state.rule(&path(name, "the rule name")?).await?))
}

/// `DELETE /v1/alerts/rules/{name}`: 204, or 404 when there is no such rule.
#[utoipa::path(delete, path = "/v1/alerts/rules/{name}", tag = "alerts", params(("name" = String, Path)), responses((status = 204, description = "Deleted"), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "A rule of the config", body = ErrorBody)))]
async fn delete_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    state.delete_rule(&path(name, "the rule name")?, caller.name.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/alerts/rule-states`: every rule (the defaults, the config's and the API's) with its state and how its
/// last evaluation went.
#[utoipa::path(get, path = "/v1/alerts/rule-states", tag = "alerts", responses((status = 200, description = "OK", body = Vec<RuleStatus>)))]
async fn rule_states(State(state): State<AppState>) -> Json<Vec<RuleStatus>> {
    Json(state.rule_states())
}

/// `GET /v1/alerts/notifications[?offset=N][&limit=N]`: every attempt to deliver a notification, newest first.
#[utoipa::path(get, path = "/v1/alerts/notifications", tag = "alerts", params(PageParams), responses((status = 200, description = "OK", body = Page<Attempt>), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn notifications(
    State(state): State<AppState>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<Attempt>>, ApiError> {
    let (offset, limit) = params(query)?.offset_limit()?;
    Ok(Json(state.notification_attempts(offset, limit).await?))
}

/// `GET /v1/silences[?offset=N][&limit=N]`: silences not yet over first, then expired ones.
#[utoipa::path(get, path = "/v1/silences", tag = "alerts", params(PageParams), responses((status = 200, description = "OK", body = Page<Silence>), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn silences(
    State(state): State<AppState>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<Silence>>, ApiError> {
    let (offset, limit) = params(query)?.offset_limit()?;
    Ok(Json(state.silences(offset, limit).await?))
}

/// `POST /v1/silences` with `{"matchers": {"check": "db"}, "duration": "2h", "comment": "..."}`: 201 with the
/// silence, or 400 naming every problem.
#[utoipa::path(post, path = "/v1/silences", tag = "alerts", request_body = SilenceRequest, responses((status = 201, description = "Created", body = Silence), (status = 400, description = "Every problem with the silence, in `details`", body = ErrorBody)))]
async fn create_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    json: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let silence = state.create_silence(object_body(json)?, caller.name).await?;
    let location = format!("/v1/silences/{}", silence.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(silence)).into_response())
}

/// `GET /v1/silences/{id}`.
#[utoipa::path(get, path = "/v1/silences/{id}", tag = "alerts", params(("id" = i64, Path, description = "The silence")), responses((status = 200, description = "OK", body = Silence), (status = 400, description = "A bad parameter", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn silence(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Silence>, ApiError> {
    Ok(Json(state.silence(path(id, "the silence id")?).await?))
}

/// `DELETE /v1/silences/{id}`: end a silence now; 200 with it, expired, or 404.
#[utoipa::path(delete, path = "/v1/silences/{id}", tag = "alerts", params(("id" = i64, Path, description = "The silence")), responses((status = 200, description = "Expired", body = Silence), (status = 404, description = "Not found or already over", body = ErrorBody)))]
async fn expire_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Silence>, ApiError> {
    let id = path(id, "the silence id")?;
    Ok(Json(state.expire_silence(id, caller.name.as_deref()).await?))
}
