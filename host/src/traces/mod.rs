//! Traces: spans received over OTLP ([`otlp`]: decoded outside the HTTP layer, with the log records and AI usage
//! they carry), stored ([`store`]), read back as trace trees ([`tree`]), searched, and summarised per operation
//! with the spans that dominate the slow ones ([`profile`]).

pub mod measure;
pub mod otlp;
pub mod profile;
pub mod store;
pub mod tree;

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::logs::StoredRecord;

/// Spans nested deeper than this are shown as roots of their own (an answer nests at most this deep).
pub const MAX_DEPTH: usize = 256;
/// Spans a trace answer holds at most.
pub const MAX_TRACE_SPANS: usize = 10_000;

/// A span to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: &'static str,
    /// Unix nanoseconds.
    pub start_ns: i64,
    pub duration_ns: i64,
    /// `unset`, `ok` or `error`.
    pub status: &'static str,
    pub status_message: Option<String>,
    /// As sent; pseudonymized when stored.
    pub user_id: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// `{time, name, attributes}` objects.
    pub events: Vec<serde_json::Value>,
    pub resource: serde_json::Map<String, serde_json::Value>,
}

/// A stored span.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
#[graphql(complex)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: Option<String>,
    pub service: String,
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// RFC 3339 with nanoseconds.
    pub start: String,
    pub duration_ms: f64,
    /// Its duration less the time its children cover.
    pub self_time_ms: f64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    pub status_message: Option<String>,
    pub user_id: Option<String>,
    #[schema(value_type = Object)]
    #[graphql(skip)]
    pub attributes: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    #[graphql(skip)]
    pub events: serde_json::Value,
    #[schema(value_type = Object)]
    #[graphql(skip)]
    pub resource: serde_json::Value,
    /// The spans whose parent this is, by start time.
    #[schema(no_recursion)]
    pub children: Vec<Span>,
    #[serde(skip)]
    #[graphql(skip)]
    start_ns: i64,
}

#[async_graphql::ComplexObject]
impl Span {
    /// The attributes as a JSON object.
    async fn attributes_json(&self) -> String {
        self.attributes.to_string()
    }
}

/// `GET /v1/traces/{trace_id}`.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Trace {
    pub trace_id: String,
    /// RFC 3339, the first span's start.
    pub start: String,
    /// From the first start to the last end.
    pub duration_ms: f64,
    pub span_count: usize,
    pub error_count: usize,
    pub services: Vec<String>,
    /// Spans without a parent in the trace (the root, and any whose parent was not received), each with its
    /// children.
    pub roots: Vec<Span>,
    /// Log records carrying this trace id, oldest first.
    pub logs: Vec<StoredRecord>,
}

/// One trace found by a search.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root span's service and name (the earliest span's when the root was not received).
    pub service: String,
    pub operation: String,
    pub start: String,
    pub duration_ms: f64,
    pub span_count: u64,
    pub error_count: u64,
    pub services: Vec<String>,
}

/// A search of the stored traces: those with a span that matches every given filter.
#[derive(Debug, Clone, Default)]
pub struct TraceSearch {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub min_duration: Option<Duration>,
    pub max_duration: Option<Duration>,
    /// Only traces with (`true`) or without (`false`) an error span.
    pub error: Option<bool>,
    /// As stored (the caller pseudonymizes).
    pub user_id: Option<String>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub limit: u64,
}

/// The OTLP span kind's name.
pub fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// Unix nanoseconds as RFC 3339 with nanoseconds.
pub fn rfc3339_nanos(nanos: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Nanoseconds as milliseconds.
pub fn millis(nanos: i64) -> f64 {
    nanos as f64 / 1e6
}
