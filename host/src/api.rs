//! The HTTP API on the API port: selfmon's own liveness and status, the health of every check, stored metrics,
//! and the recovery history. Handlers only translate: the answers come from the [query layer](crate::query).
//! Every call passes the [access guard](crate::access) (keys, roles, rate limits), CORS, and the body-size and
//! time limits of `[api]`.
//!
//! Errors are JSON of one shape, `{"error": {"code", "message"}}`, made in one place ([`ApiError`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{Access, Caller, guard};
use crate::alerting::RuleStatus;
use crate::alerting::channels::Attempt;
use crate::alerting::silences::{Silence, SilenceRequest};
use crate::alerts::{Alert, Page, Rule, RuleRequest};
use crate::analysis::{Aggregation, Analysis, Period, Security};
use crate::config::ApiConfig;
use crate::performance::{Errors, LatencySeries, Performance, Subject};
use crate::query::{HealthReport, MetricsAnswer, MetricsRequest, PluginsReport, Queries, QueryError, Status};
use crate::storage::{StoredAttempt, StoredRun};
use crate::webhooks::{Delivery, Webhook, WebhookRequest};

/// What the handlers share.
pub type AppState = Arc<Queries>;

/// The API's routes, behind the access guard, CORS, and limits on body size and time.
pub fn app(state: AppState, access: Arc<Access>, limits: &ApiConfig) -> Router {
    let origins = if limits.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(limits.cors_origins.iter().filter_map(|o| o.parse::<HeaderValue>().ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(3600));
    let max_body = usize::try_from(limits.max_body.as_u64()).unwrap_or(usize::MAX);
    let telemetry = state.telemetry.clone();
    routes(state)
        .layer(middleware::from_fn_with_state(access, guard))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(cors)
        .layer(middleware::from_fn_with_state(telemetry, crate::telemetry::track))
        .layer(middleware::map_response(json_errors))
        .layer(CatchPanicLayer::custom(|_| {
            // A bug, not the caller's fault: the panic itself is in the log; the caller gets the one error shape.
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "selfmon could not answer this request")
                .into_response()
        }))
}

/// Error answers made outside the handlers (by layers, or by extractors such as the WebSocket upgrade) in the API's
/// one error shape, keeping their headers (`Allow`, `Retry-After`, ...).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    // OTLP answers carry their own error bodies, in the request's encoding.
    let json = response.headers().get(header::CONTENT_TYPE).is_some_and(|t| {
        t.as_bytes().starts_with(b"application/json") || t.as_bytes().starts_with(b"application/x-protobuf")
    });
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body is over `[api] max_body`".to_string()),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took longer than `[api] request_timeout`".to_string()),
        _ => {
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            let reason = status.canonical_reason().unwrap_or("error");
            // A server error's own text stays in the log.
            let shown = if text.is_empty() || status.is_server_error() { reason.to_lowercase() } else { text };
            (error_code(status), shown)
        }
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut answer = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        answer.headers_mut().entry(name).or_insert_with(|| value.clone());
    }
    answer
}

/// A stable code for an error status no handler gave its own.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "not_json",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        status if status.is_server_error() => "internal",
        _ => "bad_request",
    }
}

fn routes(state: AppState) -> Router {
    let graphql = Router::new()
        .route("/graphql", post(crate::graphql::execute).get(crate::graphql::subscribe))
        .with_state(crate::graphql::schema(state.clone()));
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(liveness))
        .routes(routes!(prometheus))
        .routes(routes!(health))
        .routes(routes!(history))
        .routes(routes!(status))
        .routes(routes!(metrics))
        .routes(routes!(performance))
        .routes(routes!(performance_series))
        .routes(routes!(plugins))
        .routes(routes!(errors))
        .routes(routes!(alerts))
        .routes(routes!(alert))
        .routes(routes!(acknowledge))
        .routes(routes!(rules, create_rule))
        .routes(routes!(rule, delete_rule))
        .routes(routes!(rule_states))
        .routes(routes!(notifications))
        .routes(routes!(silences, create_silence))
        .routes(routes!(silence, expire_silence))
        .routes(routes!(webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(deliveries))
        .routes(routes!(recovery))
        .routes(routes!(search_logs, ingest_logs))
        .routes(routes!(search_traces, otlp_traces))
        .routes(routes!(trace))
        .routes(routes!(post_events))
        .routes(routes!(analytics))
        .routes(routes!(erase_user))
        .routes(routes!(reload))
        .routes(routes!(aggregate_logs))
        .routes(routes!(tail_logs))
        .routes(routes!(analyse_logs))
        .routes(routes!(security_events))
        .split_for_parts();
    let document = Arc::new(document.to_json().unwrap_or_default());
    router
        .route(
            "/v1/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document.to_string()) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
        .merge(graphql)
}

/// The OpenAPI document's frame; the paths and schemas come from the handlers registered in [`routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "selfmon",
        description = "selfmon's monitoring API. With keys configured, every call but `/health` (and `/metrics` \
                       unless `metrics_public = false`) needs `Authorization: Bearer <key>`: 401 without a valid \
                       key, 403 for a read key on a change, 429 with `Retry-After` over the rate limit. GraphQL is \
                       at `/graphql` (schema: `selfmon graphql-schema`)."
    ),
    modifiers(&BearerKeys),
    security(("bearer" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The bearer scheme, and the error answers the layers in front of every handler can give.
struct BearerKeys;

impl utoipa::Modify for BearerKeys {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                    )
                    .build(),
            )
        };
        for (path, item) in &mut document.paths.paths {
            let operations = [(&mut item.get, false), (&mut item.post, true), (&mut item.delete, true)];
            for (operation, changes) in operations {
                let Some(operation) = operation else { continue };
                let responses = &mut operation.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses.entry(code.to_string()).or_insert_with(|| error(description));
                };
                if path != "/health" {
                    add("401", "No key, or a key that is not valid (when keys are configured)");
                }
                add("429", "Over the rate limit; `Retry-After` says when to come back");
                add("408", "The request took longer than `[api] request_timeout`");
                if changes {
                    add("403", "The key's role is `read`; this needs `admin`");
                    add("413", "The body is over `[api] max_body`");
                    add("415", "The body is not sent as `application/json`");
                }
            }
        }
    }
}

/// Query parameters, with a clear 400 when they do not parse.
fn params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(params)| params).map_err(|e| {
        let text = e.body_text();
        let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", format!("query parameters: {text}"))
    })
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

/// `GET /metrics`: selfmon's own metrics for Prometheus to scrape.
#[utoipa::path(get, path = "/metrics", tag = "selfmon", responses((status = 200, description = "The Prometheus text format, version 0.0.4", content_type = "text/plain")))]
async fn prometheus(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, crate::telemetry::CONTENT_TYPE)], state.prometheus()).into_response()
}

/// `GET /v1/status`: selfmon's own status.
#[utoipa::path(get, path = "/v1/status", tag = "selfmon", responses((status = 200, description = "OK", body = Status)))]
async fn status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(state.status().await?))
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
    /// Series per page (default 100, at most 1000) and series to skip.
    limit: Option<usize>,
    offset: Option<usize>,
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
        offset: params.offset.unwrap_or(0),
        limit: params.limit.unwrap_or(100).clamp(1, 1000),
    };
    Ok(Json(state.metrics(request).await?))
}

/// `check=web,plugin=http` as label pairs.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
            _ => Err(format!("`labels`: `{pair}` is not name=value")),
        })
        .collect()
}

/// RFC 3339 (`2026-11-26T10:00:00Z`) or Unix seconds (`1795730000`, `1795730000.5`).
fn parse_time(what: &str, text: &str) -> Result<SystemTime, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds < 0.0 {
            return Err(format!("`{what}` must not be negative"));
        }
        return Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|since| UNIX_EPOCH.checked_add(since))
            .ok_or_else(|| format!("`{what}` is out of range"));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| format!("`{what}`: `{text}` is neither RFC 3339 nor Unix seconds"))
}

/// `60` (seconds), or a duration such as `1m`.
fn parse_step(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(text))
        .map_err(|_| format!("`step`: `{text}` is neither seconds nor a duration such as \"1m\""))
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

/// A JSON body, with a clear 400 (or 415 without the JSON content type) when it does not parse.
fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(body)| body).map_err(|rejection| match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_json",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        // Valid JSON of the wrong shape (a field of the wrong type, an unknown field) is the caller's mistake in
        // the body, like a failed validation.
        JsonRejection::JsonDataError(error) => {
            let text = error.body_text();
            let text = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(&text);
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the body: {text}"))
        }
        other => {
            let text = other.body_text();
            let text = text.strip_prefix("Failed to parse the request body as JSON: ").unwrap_or(&text);
            ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("the body is not JSON: {text}"))
        }
    })
}

fn path<T>(path: Result<Path<T>, PathRejection>, what: &str) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", format!("{what} in the path is not valid")))
}

/// Webhooks carry URLs that may hold tokens: only admin keys see or follow them.
fn admin_only(state: &AppState, caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    state.access.refused_inside("forbidden", caller.name.as_deref(), what);
    Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this needs a key with the admin role"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageParams {
    /// Items to skip (default 0) and to return (default 100, at most 1000).
    offset: Option<u64>,
    limit: Option<u64>,
}

impl PageParams {
    fn offset_limit(&self) -> (u64, u64) {
        (self.offset.unwrap_or(0), self.limit.unwrap_or(100).clamp(1, 1000))
    }
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
    let (offset, limit) = params(query)?.offset_limit();
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
    json: Result<Json<Acknowledgement>, JsonRejection>,
) -> Result<Json<Alert>, ApiError> {
    let id = path(id, "the alert id")?;
    let comment = body(json)?.comment;
    Ok(Json(state.acknowledge(id, caller.name, comment).await?))
}

/// `GET /v1/alerts/rules[?offset=N][&limit=N]`: alert rules by name.
#[utoipa::path(get, path = "/v1/alerts/rules", tag = "alerts", params(PageParams), responses((status = 200, description = "OK", body = Page<Rule>), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn rules(
    State(state): State<AppState>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<Rule>>, ApiError> {
    let (offset, limit) = params(query)?.offset_limit();
    Ok(Json(state.rules(offset, limit).await?))
}

/// `POST /v1/alerts/rules`: create a rule; 201 with the rule, or 400 naming every problem.
#[utoipa::path(post, path = "/v1/alerts/rules", tag = "alerts", request_body = RuleRequest, responses((status = 201, description = "Created", body = Rule), (status = 400, description = "Every problem with the rule, in `details`", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody)))]
async fn create_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    json: Result<Json<RuleRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let rule = state.create_rule(body(json)?, caller.name).await?;
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
    let (offset, limit) = params(query)?.offset_limit();
    Ok(Json(state.notification_attempts(offset, limit).await?))
}

/// `GET /v1/silences[?offset=N][&limit=N]`: silences not yet over first, then expired ones.
#[utoipa::path(get, path = "/v1/silences", tag = "alerts", params(PageParams), responses((status = 200, description = "OK", body = Page<Silence>), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn silences(
    State(state): State<AppState>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<Silence>>, ApiError> {
    let (offset, limit) = params(query)?.offset_limit();
    Ok(Json(state.silences(offset, limit).await?))
}

/// `POST /v1/silences` with `{"matchers": {"check": "db"}, "duration": "2h", "comment": "..."}`: 201 with the
/// silence, or 400 naming every problem.
#[utoipa::path(post, path = "/v1/silences", tag = "alerts", request_body = SilenceRequest, responses((status = 201, description = "Created", body = Silence), (status = 400, description = "Every problem with the silence, in `details`", body = ErrorBody)))]
async fn create_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    json: Result<Json<SilenceRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let silence = state.create_silence(body(json)?, caller.name).await?;
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct WindowParams {
    /// Seconds back from now (default 3600, at most a week).
    time_window: Option<u64>,
}

impl WindowParams {
    fn window(&self) -> Duration {
        Duration::from_secs(self.time_window.unwrap_or(3600))
    }
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

/// `GET /v1/plugins`: the loaded plugins, what uses each with its grants, failed calls by kind (deadline kills
/// among them) and the latest failed runs; refused plugin files and why.
#[utoipa::path(get, path = "/v1/plugins", tag = "selfmon", responses((status = 200, description = "OK", body = PluginsReport)))]
async fn plugins(State(state): State<AppState>) -> Result<Json<PluginsReport>, ApiError> {
    Ok(Json(state.plugins().await?))
}

/// `GET /v1/errors[?time_window=SECONDS]`: error counts and rate, per check, and the top error patterns.
#[utoipa::path(get, path = "/v1/errors", tag = "metrics", params(WindowParams), responses((status = 200, description = "OK", body = Errors), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn errors(
    State(state): State<AppState>,
    query: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Json<Errors>, ApiError> {
    Ok(Json(state.errors(params(query)?.window()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AggregateParams {
    /// Hours back from now (default 24, at most 2160).
    hours: Option<u64>,
    /// `minute`, `hour` (default) or `day`.
    period: Option<Period>,
}

/// `GET /v1/logs/aggregate[?hours=24&period=hour]`: record counts per bucket, by level and by service.
#[utoipa::path(get, path = "/v1/logs/aggregate", tag = "logs", params(AggregateParams), responses((status = 200, description = "OK", body = Aggregation), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn aggregate_logs(
    State(state): State<AppState>,
    query: Result<Query<AggregateParams>, QueryRejection>,
) -> Result<Json<Aggregation>, ApiError> {
    let params = params(query)?;
    Ok(Json(state.aggregate_logs(params.hours.unwrap_or(24), params.period.unwrap_or(Period::Hour)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HoursParams {
    /// Hours back from now (default 24, at most 2160).
    hours: Option<u64>,
}

/// `GET /v1/logs/analysis[?hours=24]`: counts by level and service, error templates with spikes, user activity
/// and security events.
#[utoipa::path(get, path = "/v1/logs/analysis", tag = "logs", params(HoursParams), responses((status = 200, description = "OK", body = Analysis), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn analyse_logs(
    State(state): State<AppState>,
    query: Result<Query<HoursParams>, QueryRejection>,
) -> Result<Json<Analysis>, ApiError> {
    Ok(Json(state.analyse_logs(params(query)?.hours.unwrap_or(24)).await?))
}

/// `GET /v1/logs/security[?hours=24]`: SECURITY and AUDIT records, attack probes in access logs, failed logins
/// and their bursts.
#[utoipa::path(get, path = "/v1/logs/security", tag = "logs", params(HoursParams), responses((status = 200, description = "OK", body = Security), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn security_events(
    State(state): State<AppState>,
    query: Result<Query<HoursParams>, QueryRejection>,
) -> Result<Json<Security>, ApiError> {
    Ok(Json(state.security_events(params(query)?.hours.unwrap_or(24)).await?))
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
    json: Result<Json<WebhookRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let webhook = state.create_webhook(body(json)?, caller.name.as_deref()).await?;
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
    let (offset, limit) = params(query)?.offset_limit();
    Ok(Json(state.deliveries(id, offset, limit).await?))
}

/// The most a gzip body may grow to when decompressed.
const MAX_INFLATED: u64 = 64 << 20;

/// A retryable OTLP answer for a query error; the details of a storage failure stay in the log.
fn otlp_unavailable(error: QueryError) -> crate::otlp::Refusal {
    let message = match error {
        QueryError::Storage(detail) => {
            tracing::error!(detail, "An OTLP export could not be stored");
            "selfmon could not store the export; retry later".to_string()
        }
        other => other.to_string(),
    };
    crate::otlp::Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// The error code of a refused body.
fn refusal_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_encoding",
        _ => "bad_body",
    }
}

/// An OTLP log export, answered as OTLP answers.
async fn otlp_logs(
    state: &AppState,
    turn: &tokio::sync::OwnedSemaphorePermit,
    format: crate::otlp::Format,
    body: &[u8],
) -> Response {
    let request = match crate::otlp::decode_logs(format, body) {
        Ok(request) => request,
        Err(refusal) => return refusal.answer(format),
    };
    let taken = crate::otlp::records(request, state.traces.max_attributes, SystemTime::now());
    state.telemetry.observe_otlp("logs", taken.items.len(), taken.rejected);
    let message = taken.message();
    match state.ingest_records(turn, taken.items).await {
        Ok(()) => crate::otlp::logs_answer(format, taken.rejected, message),
        Err(error) => otlp_unavailable(error).answer(format),
    }
}

/// `POST /v1/traces`: an OTLP/HTTP trace export (protobuf or JSON, optionally gzip), as the OpenTelemetry SDKs'
/// OTLP/HTTP exporters send it. 200 with a partial success naming what was refused; 400 for a body that cannot be
/// read (do not retry); 503 with `Retry-After` when storage is behind.
#[utoipa::path(post, path = "/v1/traces", tag = "traces", request_body(content = Object, description = "`ExportTraceServiceRequest`, as `application/x-protobuf` or `application/json`; `Content-Encoding: gzip` accepted", content_type = "application/x-protobuf"), responses((status = 200, description = "Stored; `partialSuccess` counts refused spans", content_type = "application/x-protobuf"), (status = 400, description = "Not a valid OTLP request (a `google.rpc.Status`)"), (status = 413, description = "Over `[traces] max_inflated` once decompressed"), (status = 415, description = "Not protobuf or JSON, or an unknown `Content-Encoding`"), (status = 503, description = "Storage is behind; retry after `Retry-After` seconds")))]
async fn otlp_traces(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(format) = crate::otlp::Format::of(&headers) else {
        return crate::otlp::Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send `Content-Type: application/x-protobuf` or `application/json`",
        )
        .answer(crate::otlp::Format::Json);
    };
    let turn = match state.ingest_turn().await {
        Ok(turn) => turn,
        Err(error) => {
            return otlp_unavailable(error).answer(format);
        }
    };
    let result = crate::otlp::inflate(&headers, &body, state.traces.max_inflated.as_u64())
        .and_then(|body| crate::otlp::decode_traces(format, &body));
    let request = match result {
        Ok(request) => request,
        Err(refusal) => return refusal.answer(format),
    };
    let taken = crate::otlp::spans(request, state.traces.max_attributes);
    state.telemetry.observe_otlp("traces", taken.items.len(), taken.rejected);
    let message = taken.message();
    match state.ingest_spans(&turn, taken.items).await {
        Ok(()) => crate::otlp::traces_answer(format, taken.rejected, message),
        Err(error) => otlp_unavailable(error).answer(format),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TraceParams {
    service: Option<String>,
    /// The span name.
    operation: Option<String>,
    /// Spans at least (at most) this long, in milliseconds.
    min_duration_ms: Option<f64>,
    max_duration_ms: Option<f64>,
    /// `true`: traces with an error span; `false`: traces without one.
    error: Option<bool>,
    /// The platform's user id (or its pseudonym).
    user_id: Option<String>,
    /// RFC 3339 or Unix seconds.
    from: Option<String>,
    to: Option<String>,
    /// Traces to return (default 20, at most 200), newest first.
    limit: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Traces {
    traces: Vec<crate::traces::TraceSummary>,
}

/// `GET /v1/traces`: traces with a span matching every filter, newest first.
#[utoipa::path(get, path = "/v1/traces", tag = "traces", params(TraceParams), responses((status = 200, description = "OK", body = Traces), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn search_traces(
    State(state): State<AppState>,
    query: Result<Query<TraceParams>, QueryRejection>,
) -> Result<Json<Traces>, ApiError> {
    let params = params(query)?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message);
    let millis = |what: &str, ms: Option<f64>| {
        ms.map(|ms| Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| bad(format!("`{what}` must be 0 or more"))))
            .transpose()
    };
    let search = crate::traces::TraceSearch {
        service: params.service,
        operation: params.operation,
        min_duration: millis("min_duration_ms", params.min_duration_ms)?,
        max_duration: millis("max_duration_ms", params.max_duration_ms)?,
        error: params.error,
        user_id: params.user_id,
        from: params.from.as_deref().map(|t| parse_time("from", t)).transpose().map_err(bad)?,
        to: params.to.as_deref().map(|t| parse_time("to", t)).transpose().map_err(bad)?,
        limit: params.limit.unwrap_or(20).clamp(1, 200),
    };
    Ok(Json(Traces { traces: state.search_traces(search).await? }))
}

/// `GET /v1/traces/{trace_id}`: the trace's spans as a tree, with self times, and the log records carrying its id.
#[utoipa::path(get, path = "/v1/traces/{trace_id}", tag = "traces", params(("trace_id" = String, Path, description = "32 hex digits")), responses((status = 200, description = "OK", body = crate::traces::Trace), (status = 400, description = "Not a trace id", body = ErrorBody), (status = 404, description = "No span of it is stored", body = ErrorBody)))]
async fn trace(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::traces::Trace>, ApiError> {
    Ok(Json(state.trace(&path(id, "the trace id")?).await?))
}

/// What `POST /v1/events` did.
#[derive(Serialize, utoipa::ToSchema)]
struct EventsTaken {
    accepted: usize,
    /// Events refused, each with why; the others are stored.
    rejected: Vec<crate::usage::Rejected>,
}

/// `POST /v1/events`: a batch of events (`{"events": [...]}` or an array), each checked on its own; 202 with the
/// ones refused and why, 400 when none could be taken.
#[utoipa::path(post, path = "/v1/events", tag = "analytics", request_body(content = Vec<crate::usage::EventRequest>, description = "An array of events, or `{\"events\": [...]}`; `Content-Encoding: gzip` accepted"), responses((status = 202, description = "Stored (all but `rejected`)", body = EventsTaken), (status = 400, description = "Not a batch of events, or none valid", body = ErrorBody), (status = 503, description = "Storage is behind; retry after `Retry-After` seconds", body = ErrorBody)))]
async fn post_events(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let turn = state.ingest_turn().await?;
    let body = crate::otlp::inflate(&headers, &body, MAX_INFLATED)
        .map_err(|refusal| ApiError::new(refusal.status, refusal_code(refusal.status), refusal.message))?;
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
    let (accepted, rejected) = state.record_events(&turn, batch).await?;
    if accepted == 0 && count > 0 {
        let mut error = bad(format!("none of the {count} events is valid"));
        error.details = rejected.iter().take(20).map(|r| format!("event {}: {}", r.index, r.error)).collect();
        return Err(error);
    }
    Ok((StatusCode::ACCEPTED, Json(EventsTaken { accepted, rejected })).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AnalyticsParams {
    /// Days back from now (default 30, at most 366).
    days: Option<u64>,
}

/// `GET /v1/analytics[?days=30]`: active users, engagement and sessions, completion rates, satisfaction, weekly
/// cohort retention, and AI cost per model, user and day against the budget.
#[utoipa::path(get, path = "/v1/analytics", tag = "analytics", params(AnalyticsParams), responses((status = 200, description = "OK", body = crate::analytics::Analytics), (status = 400, description = "A bad parameter", body = ErrorBody)))]
async fn analytics(
    State(state): State<AppState>,
    query: Result<Query<AnalyticsParams>, QueryRejection>,
) -> Result<Json<crate::analytics::Analytics>, ApiError> {
    Ok(Json(state.analytics(params(query)?.days.unwrap_or(30)).await?))
}

/// `DELETE /v1/users/{user_id}/data` (admin): erase every event, span and log record of the user (by the id the
/// platform knows, or its pseudonym); the counts, and an audit record.
#[utoipa::path(delete, path = "/v1/users/{user_id}/data", tag = "analytics", params(("user_id" = String, Path)), responses((status = 200, description = "Erased", body = crate::usage::Erased), (status = 403, description = "Not an admin key", body = ErrorBody)))]
async fn erase_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::usage::Erased>, ApiError> {
    admin_only(&state, &caller, "DELETE /v1/users/{user_id}/data")?;
    Ok(Json(state.erase_user(&path(user, "the user id")?, caller.name.as_deref()).await?))
}

/// `POST /v1/reload` (admin): read the config file and the plugins folder again and, when all of it is valid, put
/// it in place (as `SIGHUP` does). 200 with what changed; 422 `reload_refused` with every problem (in `details`) when
/// nothing was changed.
#[utoipa::path(post, path = "/v1/reload", tag = "selfmon", responses((status = 200, description = "Reloaded", body = crate::reload::Outcome), (status = 422, description = "Refused: everything runs as before", body = ErrorBody), (status = 403, description = "Not an admin key", body = ErrorBody)))]
async fn reload(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<crate::reload::Outcome>, ApiError> {
    admin_only(&state, &caller, "POST /v1/reload")?;
    let outcome = state
        .reloads
        .reload(crate::reload::Trigger::Api)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "selfmon is stopping"))?;
    if outcome.applied {
        return Ok(Json(outcome));
    }
    let message = format!("the reload was refused, everything runs as before: {}", outcome.errors.join("; "));
    Err(ApiError {
        details: outcome.errors,
        ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reload_refused", message)
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct IngestParams {
    /// The parser plugin (default: the named source's, else `json`).
    parser: Option<String>,
    /// The source name stored with the records (default `http`); a `[[log_source]]` of kind `http` by this name
    /// gives its parser and service.
    source: Option<String>,
    /// The service of records that do not name one (default: the named source's).
    service: Option<String>,
}

/// What `POST /v1/logs` did.
#[derive(Serialize, utoipa::ToSchema)]
struct Ingested {
    /// Lines stored (as records, or appended to the record before).
    accepted: usize,
    /// Array items that were neither a string nor an object; not stored.
    rejected: usize,
    #[serde(flatten)]
    parsed: crate::logs::Parsed,
}

/// `POST /v1/logs[?parser=json&source=NAME&service=NAME]`: a JSON array of records (objects) or lines (strings), or
/// NDJSON, optionally gzip-compressed; 202 once everything is committed.
#[utoipa::path(post, path = "/v1/logs", tag = "logs", params(IngestParams), request_body(content = Vec<Object>, description = "A JSON array of objects or strings, or NDJSON (`application/x-ndjson`); or an OTLP/HTTP log export (`application/x-protobuf`, or a JSON object of `resourceLogs`), answered as OTLP answers; `Content-Encoding: gzip` accepted"), responses((status = 202, description = "Stored", body = Ingested), (status = 400, description = "The body or a parameter is not valid", body = ErrorBody), (status = 503, description = "Storage is behind; retry after `Retry-After` seconds", body = ErrorBody)))]
async fn ingest_logs(
    State(state): State<AppState>,
    query: Result<Query<IngestParams>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let otlp = crate::otlp::Format::of(&headers);
    // The turn comes before the body is inflated and split, which is what takes memory.
    let turn = match (state.ingest_turn().await, otlp) {
        (Ok(turn), _) => turn,
        (Err(error), Some(crate::otlp::Format::Protobuf)) => {
            return Ok(otlp_unavailable(error).answer(crate::otlp::Format::Protobuf));
        }
        (Err(error), _) => return Err(error.into()),
    };
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message);
    let body = match crate::otlp::inflate(&headers, &body, MAX_INFLATED) {
        Ok(body) => body,
        Err(refusal) if otlp == Some(crate::otlp::Format::Protobuf) => {
            return Ok(refusal.answer(crate::otlp::Format::Protobuf));
        }
        Err(refusal) => return Err(ApiError::new(refusal.status, refusal_code(refusal.status), refusal.message)),
    };
    // OTLP: protobuf, or a JSON object of `resourceLogs` (the records of this API are an array or NDJSON).
    let otlp_json = otlp == Some(crate::otlp::Format::Json)
        && body.trim_ascii_start().starts_with(b"{")
        && crate::otlp::is_json_logs_export(&body);
    if otlp == Some(crate::otlp::Format::Protobuf) || otlp_json {
        let format = otlp.unwrap_or(crate::otlp::Format::Json);
        return Ok(otlp_logs(&state, &turn, format, &body).await);
    }
    let text = String::from_utf8_lossy(&body);
    let (lines, rejected) = if text.trim_start().starts_with('[') {
        let items: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| bad(format!("the body starts like a JSON array but is not one: {e}")))?;
        let mut lines = Vec::with_capacity(items.len());
        let mut rejected = 0;
        for item in items {
            match item {
                serde_json::Value::String(line) => lines.push(line),
                object @ serde_json::Value::Object(_) => lines.push(object.to_string()),
                _ => rejected += 1,
            }
        }
        (lines, rejected)
    } else {
        (text.lines().map(str::to_string).collect(), 0)
    };
    // A configured `kind = "http"` source gives its parser and service to calls naming it.
    let source = params.source.unwrap_or_else(|| "http".into());
    let live = state.live();
    let configured = live.http_sources.get(&source);
    let parsing = match (params.parser, configured) {
        (Some(parser), _) => state.parsing(&parser)?,
        (None, Some((parsing, _))) => parsing.clone(),
        (None, None) => state.parsing("json")?,
    };
    let service = params.service.or_else(|| configured.and_then(|(_, service)| service.clone()));
    let origin = crate::logs::Origin { source, service };
    let count = lines.len();
    let parsed = state.ingest(&turn, &parsing, origin, lines).await?;
    Ok((StatusCode::ACCEPTED, Json(Ingested { accepted: count - parsed.skipped, rejected, parsed })).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LogParams {
    /// Full-text query over messages: words, `"a phrase"`, `prefix*`, `AND`, `OR`, `NOT`.
    q: Option<String>,
    /// Levels, comma-separated: `error,critical`.
    level: Option<String>,
    service: Option<String>,
    source: Option<String>,
    trace_id: Option<String>,
    user_id: Option<String>,
    /// RFC 3339 or Unix seconds.
    from: Option<String>,
    to: Option<String>,
    /// Records to skip (default 0) and to return (default 100, at most 1000), newest first.
    offset: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/logs`: stored records, newest first, by text, level, service, source, trace, user and time.
#[utoipa::path(get, path = "/v1/logs", tag = "logs", params(LogParams), responses((status = 200, description = "OK", body = crate::logs::Found), (status = 400, description = "A bad parameter, or a search text that is not a valid query", body = ErrorBody)))]
async fn search_logs(
    State(state): State<AppState>,
    query: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<crate::logs::Found>, ApiError> {
    let params = params(query)?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message);
    let search = crate::logs::Search {
        from: params.from.as_deref().map(|t| parse_time("from", t)).transpose().map_err(bad)?,
        to: params.to.as_deref().map(|t| parse_time("to", t)).transpose().map_err(bad)?,
        offset: params.offset.unwrap_or(0),
        limit: params.limit.unwrap_or(100).clamp(1, 1000),
        ..log_filter(params.q, params.level, params.service, params.source, params.trace_id, params.user_id)
    };
    Ok(Json(state.search_logs(search).await?))
}

/// A search by text, levels (comma-separated), service, source, trace and user.
fn log_filter(
    q: Option<String>,
    level: Option<String>,
    service: Option<String>,
    source: Option<String>,
    trace_id: Option<String>,
    user_id: Option<String>,
) -> crate::logs::Search {
    crate::logs::Search {
        text: q.filter(|q| !q.trim().is_empty()),
        levels: crate::logs::level_list(level.as_deref()),
        service,
        source,
        trace_id,
        user_id,
        ..crate::logs::Search::default()
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TailParams {
    /// Full-text query over messages: words, `"a phrase"`, `prefix*`, `AND`, `OR`, `NOT`.
    q: Option<String>,
    /// Levels, comma-separated: `error,critical`.
    level: Option<String>,
    service: Option<String>,
    source: Option<String>,
    trace_id: Option<String>,
    user_id: Option<String>,
    /// Matching records from before the tail started to send first (default 0, at most 1000).
    backlog: Option<u64>,
}

/// `GET /v1/logs/tail`: matching records as they are stored, as server-sent events (`event: record`, `id:` the
/// record's id, `data:` the record as JSON), oldest first. A client that reconnects with `Last-Event-ID` (as
/// `EventSource` does) gets what it missed. A comment every 15 s keeps proxies from closing the stream.
#[utoipa::path(get, path = "/v1/logs/tail", tag = "logs", params(TailParams), responses((status = 200, description = "A stream of server-sent events", content_type = "text/event-stream", body = crate::logs::StoredRecord), (status = 400, description = "A bad parameter, or a search text that is not a valid query", body = ErrorBody), (status = 503, description = "Too many live tails are open", body = ErrorBody)))]
async fn tail_logs(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    query: Result<Query<TailParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let filter = log_filter(params.q, params.level, params.service, params.source, params.trace_id, params.user_id);
    let records = state.tail_logs(filter, resume, params.backlog.unwrap_or(0)).await?;
    let events = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(records), |record| {
        let event = axum::response::sse::Event::default().event("record").id(record.id.to_string());
        Ok::<_, std::convert::Infallible>(event.json_data(&record).unwrap_or_else(|_| {
            axum::response::sse::Event::default().event("error").data("a record could not be encoded")
        }))
    });
    Ok(axum::response::sse::Sse::new(events).keep_alive(axum::response::sse::KeepAlive::default()).into_response())
}

/// An error answer: a status code, a stable machine-readable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Each problem on its own, when there are several.
    details: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new() }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::NotFound { code, message } => Self::new(StatusCode::NOT_FOUND, code, message),
            QueryError::Invalid(message) => Self::new(StatusCode::BAD_REQUEST, "bad_query", message),
            QueryError::Rejected(problems) => {
                Self { details: problems.clone(), ..Self::new(StatusCode::BAD_REQUEST, "invalid", problems.join("; ")) }
            }
            QueryError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            QueryError::Busy => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", error.to_string()),
            QueryError::Unavailable(message) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            QueryError::Storage(detail) => {
                // The details are for the log; the caller learns only that it failed.
                tracing::error!(detail, "A query failed in storage");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", "the data could not be read")
            }
        }
    }
}

/// Every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// Stable and machine-readable: `not_found`, `bad_query`, `invalid`, `missing_key`, `rate_limited`, ...
    code: &'static str,
    message: String,
    /// Each problem on its own, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let busy = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, details: self.details } };
        let mut response = (self.status, Json(body)).into_response();
        if busy {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_labels("check=web,plugin=http").unwrap(),
            [("check".into(), "web".into()), ("plugin".into(), "http".into())]
        );
        assert_eq!(parse_labels("check").unwrap_err(), "`labels`: `check` is not name=value");
        assert_eq!(parse_time("from", "60").unwrap(), UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(parse_time("from", "1970-01-01T00:01:00Z").unwrap(), UNIX_EPOCH + Duration::from_secs(60));
        assert!(parse_time("to", "yesterday").unwrap_err().contains("neither RFC 3339 nor Unix seconds"));
        assert!(parse_time("to", "-5").is_err());
        assert_eq!(parse_time("to", "1e300").unwrap_err(), "`to` is out of range");
        assert_eq!(parse_time("to", "NaN").unwrap_err(), "`to` is out of range");
        assert_eq!(parse_step("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_step("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_step("often").is_err());
    }
}
