//! The HTTP API on the API port, one file per area: selfmon's own ([`selfmon`]: liveness, `/metrics`, status,
//! plugins, reload), [`checks`], [`metrics`], [`alerts`], [`webhooks`], [`logs`], [`traces`] (OTLP), and
//! [`analytics`]; [`graphql`] is its GraphQL face, and [`dashboard`] the live dashboard on a port of its own.
//! Handlers only translate: the answers come from the [query layer](query). Every call passes the
//! [access guard](access) (which pages and names may call, keys, roles, rate limits), CORS, the body-size and time limits of `[api]`, and [`track`]
//! (counted, timed, a span of selfmon's own log).
//!
//! Errors are JSON of one shape, `{"error": {"code", "message", "details"}}`, made in one place ([`error`]); OTLP
//! answers carry a `google.rpc.Status` in the request's encoding instead ([`otlp`]).

pub mod access;
pub mod alerts;
pub mod analytics;
pub mod checks;
pub mod dashboard;
pub mod error;
pub mod graphql;
pub mod intake;
pub mod logs;
pub mod metrics;
pub mod origin;
pub mod otlp;
pub mod params;
pub mod query;
pub mod selfmon;
pub mod traces;
pub mod track;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::api::access::{Access, guard, same_site};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::query::Queries;
use crate::config::ApiConfig;

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
        .layer(middleware::from_fn_with_state(access.clone(), guard))
        .layer(middleware::from_fn_with_state(access, same_site))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(cors)
        .layer(middleware::from_fn_with_state(telemetry, track::track))
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
        .route("/graphql", post(graphql::execute).get(graphql::subscribe))
        .with_state(graphql::schema(state.clone()));
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(selfmon::routes())
        .merge(checks::routes())
        .merge(metrics::routes())
        .merge(alerts::routes())
        .merge(webhooks::routes())
        .merge(logs::routes())
        .merge(traces::routes())
        .merge(analytics::routes())
        .split_for_parts();
    let mut document = document;
    // After the handlers' paths are in: it adds to every operation.
    utoipa::Modify::modify(&Common, &mut document);
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
    security(("bearer" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// What operations have in common: the bearer scheme, the error answers the layers in front of every handler can
/// give, and the pattern of every time parameter (`from`, `to`); applied to the document once every handler's path
/// is in it.
struct Common;

impl utoipa::Modify for Common {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Schema};
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
                if path == "/metrics" {
                    // Public unless `metrics_public = false`.
                    operation.security = Some(vec![
                        utoipa::openapi::security::SecurityRequirement::default(),
                        utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
                    ]);
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    if let RefOr::T(parameter) = parameter
                        && matches!(parameter.name.as_str(), "from" | "to")
                        && let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema
                    {
                        schema.pattern = Some(params::TIME_PATTERN.into());
                    }
                }
                let body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses.entry(code.to_string()).or_insert_with(|| error(description));
                };
                if path != "/health" {
                    add("401", "No key, or a key that is not valid (when keys are configured)");
                    add(
                        "403",
                        "The key's role does not allow this call (a `read` key on a change, an `ingest` key off ingestion)",
                    );
                }
                if path.contains('{') {
                    add("400", "A path parameter that is not valid");
                }
                add("429", "Over the rate limit; `Retry-After` says when to come back");
                add("408", "The request took longer than `[api] request_timeout`");
                add("413", "The body is over `[api] max_body`");
                if body {
                    add("415", "The body is not sent as `application/json`");
                }
                // OTLP exports are answered 503 instead, which their exporters retry.
                if changes && path != "/v1/traces" {
                    add("507", "Storage is full (the disk, or `[storage] size_limit`): nothing was changed");
                }
            }
        }
    }
}
