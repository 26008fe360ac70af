//! Logs: `POST /v1/logs` (lines, records or an OTLP log export), search, the live tail as server-sent events,
//! counts over time, the analysis and security events.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::intake::{self, JsonShape};
use crate::api::otlp::{self, refused};
use crate::api::params::HoursParams;
use crate::api::params::{limit, offset, params, parse_time};
use crate::logs::analysis::{Aggregation, Analysis, Period, Security};
use crate::logs::parsing::Parsed;
use crate::logs::search::{Found, Search};
use crate::logs::sources::http;
use crate::logs::{NewRecord, Origin, SELFMON_SOURCE, StoredRecord};
use crate::traces::otlp::{Format, is_json_logs_export};

/// The routes of this area.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search_logs, ingest_logs))
        .routes(routes!(tail_logs))
        .routes(routes!(aggregate_logs))
        .routes(routes!(analyse_logs))
        .routes(routes!(security_events))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AggregateParams {
    /// Hours back from now (default 24, at most 2160).
    #[param(minimum = 1, maximum = 2160)]
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
    parsed: Parsed,
}

/// `POST /v1/logs[?parser=json&source=NAME&service=NAME]`: a JSON array of records (objects) or lines (strings), or
/// NDJSON, optionally gzip-compressed; 202 once everything is committed.
#[utoipa::path(post, path = "/v1/logs", tag = "logs", params(IngestParams), request_body(content = Vec<Object>, description = "A JSON array of objects or strings, or NDJSON (`application/x-ndjson`); or an OTLP/HTTP log export (`application/x-protobuf`, or a JSON object of `resourceLogs`), answered as OTLP answers; `Content-Encoding: gzip` accepted"), responses((status = 202, description = "Stored", body = Ingested), (status = 200, description = "An OTLP log export, stored; answered as OTLP answers, in the encoding it was sent in"), (status = 400, description = "The body or a parameter is not valid", body = ErrorBody), (status = 413, description = "Over `[ingest] max_inflated` once decompressed, more lines or records than `[ingest] max_items`, or more than `[ingest] memory` once decoded", body = ErrorBody), (status = 503, description = "Storage is behind, or other ingests hold `[ingest] memory`; retry after `Retry-After` seconds", body = ErrorBody), (status = 507, description = "Storage is full (the disk, or `[storage] size_limit`): nothing was stored; retry after `Retry-After` seconds", body = ErrorBody)))]
async fn ingest_logs(
    State(state): State<AppState>,
    query: Result<Query<IngestParams>, QueryRejection>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let format = Format::of(&headers);
    // Admitted before the body is inflated and split, which is what takes memory.
    let refuse = |refusal| match format {
        Some(Format::Protobuf) => Ok(refused(refusal, Format::Protobuf)),
        _ => Err(ApiError::from(refusal)),
    };
    let mut admission = match state.admit(body.len() as u64).await {
        Ok(admission) => admission,
        Err(refusal) => return refuse(refusal),
    };
    let max_inflated = state.ingest.max_inflated.as_u64();
    let body = match intake::inflate(&headers, &body, max_inflated, &mut admission).await {
        Ok(inflated) => inflated,
        Err(refusal) => return refuse(refusal),
    };
    // OTLP: protobuf, or a JSON object of `resourceLogs` (the records of this API are an array or NDJSON).
    let otlp_json =
        format == Some(Format::Json) && body.trim_ascii_start().starts_with(b"{") && is_json_logs_export(&body);
    if format == Some(Format::Protobuf) || otlp_json {
        return Ok(otlp::logs(&state, &mut admission, format.unwrap_or(Format::Json), &body).await);
    }
    // Counted and weighed before the body is split: every line becomes a string, then a record.
    let max = state.ingest.max_items;
    let shape = if body.trim_ascii_start().starts_with(b"[") {
        JsonShape::of(&body)
    } else {
        JsonShape { items: intake::count_lines(&body, max)?, tokens: 0 }
    };
    if shape.items > max {
        return Err(intake::too_many("records", max).into());
    }
    let per_item = 2 * size_of::<String>() + size_of::<NewRecord>();
    admission.add(intake::decoded(body.len(), shape, intake::JSON_TOKEN, per_item)).await?;
    let (lines, rejected) =
        http::lines(&body).map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message))?;
    // A configured `kind = "http"` source gives its parser and service to calls naming it.
    let source = params.source.unwrap_or_else(|| "http".into());
    if source == SELFMON_SOURCE {
        state.access.count_refusal(connect.map(|c| c.0.0), &axum::http::Method::POST, "/v1/logs", "reserved_source");
        let message = "`selfmon` is the source of selfmon's own log; name another";
        return Err(ApiError::new(StatusCode::FORBIDDEN, "reserved_source", message));
    }
    let live = state.live();
    let configured = live.http_sources.get(&source);
    let parsing = match (params.parser, configured) {
        (Some(parser), _) => state.parsing(&parser)?,
        (None, Some((parsing, _))) => parsing.clone(),
        (None, None) => state.parsing("json")?,
    };
    let service = params.service.or_else(|| configured.and_then(|(_, service)| service.clone()));
    let origin = Origin { source, service };
    let count = lines.len();
    let parsed = state.ingest(&admission, &parsing, origin, lines).await?;
    Ok((StatusCode::ACCEPTED, Json(Ingested { accepted: count - parsed.skipped - parsed.refused, rejected, parsed }))
        .into_response())
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
    /// Records to skip (default 0), newest first.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Records to return (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// `GET /v1/logs`: stored records, newest first, by text, level, service, source, trace, user and time.
#[utoipa::path(get, path = "/v1/logs", tag = "logs", params(LogParams), responses((status = 200, description = "OK", body = Found), (status = 400, description = "A bad parameter, or a search text that is not a valid query", body = ErrorBody)))]
async fn search_logs(
    State(state): State<AppState>,
    query: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<Found>, ApiError> {
    let params = params(query)?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message);
    let search = Search {
        from: params.from.as_deref().map(|t| parse_time("from", t)).transpose().map_err(bad)?,
        to: params.to.as_deref().map(|t| parse_time("to", t)).transpose().map_err(bad)?,
        offset: offset(params.offset)?,
        limit: limit(params.limit, 100, 1000)?,
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
) -> Search {
    Search {
        text: q.filter(|q| !q.trim().is_empty()),
        levels: crate::logs::level_list(level.as_deref()),
        service,
        source,
        trace_id,
        user_id,
        ..Search::default()
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
    /// Matching records from before the tail started to send first (default 0).
    #[param(minimum = 0, maximum = 1000)]
    backlog: Option<u64>,
}

/// One server-sent event of a live tail, as an SSE client reads it.
#[derive(utoipa::ToSchema)]
struct TailEvent {
    /// `record` (`error` for a record that could not be encoded).
    event: &'static str,
    /// The record's id: sent back as `Last-Event-ID`, the tail resumes after it.
    id: String,
    /// The record as JSON (a `StoredRecord`).
    data: String,
}

impl TailEvent {
    fn of(record: &StoredRecord) -> Self {
        match serde_json::to_string(record) {
            Ok(data) => Self { event: "record", id: record.id.to_string(), data },
            Err(_) => Self { event: "error", id: record.id.to_string(), data: "a record could not be encoded".into() },
        }
    }
}

/// `GET /v1/logs/tail`: matching records as they are stored, as server-sent events (`event: record`, `id:` the
/// record's id, `data:` the record as JSON), oldest first. A client that reconnects with `Last-Event-ID` (as
/// `EventSource` does) gets what it missed. A comment every 15 s keeps proxies from closing the stream.
#[utoipa::path(get, path = "/v1/logs/tail", tag = "logs", params(TailParams), responses((status = 200, description = "A stream of server-sent events, each a `TailEvent`", content_type = "text/event-stream", body = TailEvent), (status = 400, description = "A bad parameter, or a search text that is not a valid query", body = ErrorBody), (status = 503, description = "Too many live tails are open", body = ErrorBody)))]
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
        let TailEvent { event, id, data } = TailEvent::of(&record);
        Ok::<_, std::convert::Infallible>(axum::response::sse::Event::default().event(event).id(id).data(data))
    });
    Ok(axum::response::sse::Sse::new(events).keep_alive(axum::response::sse::KeepAlive::default()).into_response())
}
