//! Traces: `POST /v1/traces` takes OTLP/HTTP trace exports (decoded in [`traces::otlp`](crate::traces::otlp));
//! traces are searched and read back as trees.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::intake;
use crate::api::otlp::{admit_export, answer, refused, unavailable};
use crate::api::params::{limit, params, parse_time, path};
use crate::traces::measure::Export;
use crate::traces::otlp;
use crate::traces::{Trace, TraceSearch, TraceSummary};

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search_traces, otlp_traces)).routes(routes!(trace))
}

/// `POST /v1/traces`: an OTLP/HTTP trace export (protobuf or JSON, optionally gzip), as the OpenTelemetry SDKs'
/// OTLP/HTTP exporters send it. 200 with a partial success naming what was refused; 400 for a body that cannot be
/// read (do not retry); 503 with `Retry-After` when storage is behind.
#[utoipa::path(post, path = "/v1/traces", tag = "traces", request_body(content((Object = "application/x-protobuf"), (Object = "application/json")), description = "`ExportTraceServiceRequest`, as `application/x-protobuf` or `application/json`; `Content-Encoding: gzip` accepted"), responses((status = 200, description = "Stored; `partialSuccess` counts refused spans; answered in the encoding the request was sent in", content((Object = "application/x-protobuf"), (Object = "application/json"))), (status = 400, description = "Not a valid OTLP request (a `google.rpc.Status`)"), (status = 413, description = "Over `[ingest] max_inflated` once decompressed, more spans than `[ingest] max_items`, or more than `[ingest] memory` once decoded"), (status = 415, description = "Not protobuf or JSON, or an unknown `Content-Encoding`"), (status = 503, description = "Storage is behind or full; retry after `Retry-After` seconds")))]
async fn otlp_traces(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(format) = otlp::Format::of(&headers) else {
        let refusal = otlp::Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send `Content-Type: application/x-protobuf` or `application/json`",
        );
        return refused(refusal, otlp::Format::Json);
    };
    let taken = async {
        let mut admission = state.admit(body.len() as u64).await?;
        let inflated = intake::inflate(&headers, &body, state.ingest.max_inflated.as_u64(), &mut admission).await?;
        admit_export(&state, &mut admission, Export::Traces, format, &inflated).await?;
        Ok((admission, otlp::receive_traces(format, &inflated, state.traces.max_attributes)?))
    };
    let (admission, taken) = match taken.await {
        Ok(taken) => taken,
        Err(refusal) => return refused(refusal, format),
    };
    state.telemetry.observe_otlp("traces", taken.items.len(), taken.rejected);
    let message = taken.message();
    match state.ingest_spans(&admission, taken.items).await {
        Ok(()) => answer(format, otlp::traces_answer(format, taken.rejected, message)),
        Err(error) => refused(unavailable(error), format),
    }
}

/// The longest span duration a search may name, in milliseconds: a year.
const MAX_DURATION_MS: f64 = 31_536_000_000.0;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TraceParams {
    service: Option<String>,
    /// The span name.
    operation: Option<String>,
    /// Spans at least (at most) this long, in milliseconds (a year at most).
    #[param(minimum = 0, maximum = 31536000000.0)]
    min_duration_ms: Option<f64>,
    #[param(minimum = 0, maximum = 31536000000.0)]
    max_duration_ms: Option<f64>,
    /// `true`: traces with an error span; `false`: traces without one.
    error: Option<bool>,
    /// The platform's user id (or its pseudonym).
    user_id: Option<String>,
    /// RFC 3339 or Unix seconds.
    from: Option<String>,
    to: Option<String>,
    /// Traces to return (default 20), newest first.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Traces {
    traces: Vec<TraceSummary>,
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
        ms.map(|ms| {
            if (0.0..=MAX_DURATION_MS).contains(&ms) {
                Ok(Duration::from_secs_f64(ms / 1000.0))
            } else {
                Err(bad(format!("`{what}` must be 0 to {MAX_DURATION_MS} milliseconds (a year)")))
            }
        })
        .transpose()
    };
    let search = TraceSearch {
        service: params.service,
        operation: params.operation,
        min_duration: millis("min_duration_ms", params.min_duration_ms)?,
        max_duration: millis("max_duration_ms", params.max_duration_ms)?,
        error: params.error,
        user_id: params.user_id,
        from: params.from.as_deref().map(|t| parse_time("from", t)).transpose().map_err(bad)?,
        to: params.to.as_deref().map(|t| parse_time("to", t)).transpose().map_err(bad)?,
        limit: limit(params.limit, 20, 200)?,
    };
    Ok(Json(Traces { traces: state.search_traces(search).await? }))
}

/// `GET /v1/traces/{trace_id}`: the trace's spans as a tree, with self times, and the log records carrying its id.
#[utoipa::path(get, path = "/v1/traces/{trace_id}", tag = "traces", params(("trace_id" = String, Path, description = "32 hex digits", pattern = "^[0-9a-fA-F]{32}$")), responses((status = 200, description = "OK", body = Trace), (status = 400, description = "Not a trace id", body = ErrorBody), (status = 404, description = "No span of it is stored", body = ErrorBody)))]
async fn trace(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Trace>, ApiError> {
    Ok(Json(state.trace(&path(id, "the trace id")?).await?))
}
