//! OTLP/HTTP: what the OpenTelemetry SDKs' OTLP/HTTP exporters send to `/v1/traces` and `/v1/logs`, taken apart
//! into spans, log records and AI usage events, and the bodies of the answers they expect. The API only hands the
//! request over and sends the answer back.
//!
//! Follows the OTLP specification's HTTP transport (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>): binary
//! protobuf (`application/x-protobuf`) or JSON (`application/json`, ids as hex, 64-bit integers as strings),
//! optionally gzip-compressed; a `200` with a partial success when some items were refused; `400` for a request
//! that cannot be read (the client must not retry it); `429`/`503` with `Retry-After` under back-pressure;
//! error bodies are a `google.rpc.Status` in the request's encoding.

use std::time::SystemTime;

use http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::analytics::events::NewEvent;
use crate::logs::{NewRecord, selfmon_logger};
use crate::storage::rfc3339;
use crate::traces::measure::{Export, Measure, measure};
use crate::traces::{NewSpan, span_kind};

/// Span and log attributes that carry the platform's user id (the first present wins).
pub const USER_ATTRIBUTES: [&str; 3] = ["enduser.id", "user.id", "user_id"];
/// The longest span name and log body kept; longer ones are cut.
const MAX_TEXT: usize = 64 << 10;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// The format a `Content-Type` names, if it is one OTLP uses.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Self::Protobuf),
            "application/json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// A refused request: the status and what to tell the client.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// The answer's body in the request's encoding: a `google.rpc.Status`.
    pub fn body(&self, format: Format) -> Vec<u8> {
        // google.rpc.Status codes: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL.
        let code = match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 13,
        };
        match format {
            Format::Protobuf => RpcStatus { code, message: self.message.clone() }.encode_to_vec(),
            Format::Json => serde_json::json!({"code": code, "message": self.message}).to_string().into_bytes(),
        }
    }
}

/// `google.rpc.Status`, as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(format: Format, body: &[u8]) -> Result<T, Refusal> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Refusal::new(StatusCode::BAD_REQUEST, format!("the body is not a valid OTLP {what} request: {e}"))
    };
    match format {
        Format::Protobuf => T::decode(body).map_err(|e| bad("protobuf", &e)),
        // serde would read an export from an array of its fields too; OTLP/JSON sends an object.
        Format::Json if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') => {
            Err(bad("JSON", &"an export is a JSON object"))
        }
        Format::Json => serde_json::from_slice(body).map_err(|e| bad("JSON", &e)),
    }
}

fn decode_traces(format: Format, body: &[u8]) -> Result<ExportTraceServiceRequest, Refusal> {
    decode(format, body)
}

fn decode_logs(format: Format, body: &[u8]) -> Result<ExportLogsServiceRequest, Refusal> {
    decode(format, body)
}

/// A trace export (decompressed already), decoded and taken apart into spans.
pub fn receive_traces(format: Format, body: &[u8], max_attributes: usize) -> Result<Taken<NewSpan>, Refusal> {
    Ok(spans(decode_traces(format, body)?, max_attributes))
}

/// What a protobuf export's body will take once decoded and taken apart, measured before decoding it: its items and
/// twice its decoded messages (which are taken apart into spans or records of about their size).
pub fn estimate(export: Export, body: &[u8]) -> Result<Measure, Refusal> {
    let measure = measure(export, body).map_err(|e| {
        Refusal::new(StatusCode::BAD_REQUEST, format!("the body is not a valid OTLP protobuf request: {e}"))
    })?;
    Ok(Measure { items: measure.items, bytes: 2 * measure.bytes })
}

/// The most one token (`{`, `[`, `,`, `:`) of an OTLP JSON body may take once decoded and taken apart: `{}` in
/// `spans` is a whole span.
pub const JSON_TOKEN: u64 = 2 * max(std::mem::size_of::<Span>(), std::mem::size_of::<LogRecord>()) as u64;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// A log export (decompressed already) taken apart into log records.
pub fn receive_logs(format: Format, body: &[u8], max_attributes: usize) -> Result<Taken<NewRecord>, Refusal> {
    Ok(records(decode_logs(format, body)?, max_attributes, SystemTime::now()))
}

/// Whether a JSON body is one object with `resourceLogs` (an OTLP log export), read without building its values.
pub fn is_json_logs_export(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "resourceLogs")]
        resource_logs: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|probe| probe.resource_logs.is_some())
}

/// The body of a `200` to a trace export, with the partial success OTLP defines when something was refused.
pub fn traces_answer(format: Format, rejected: usize, message: String) -> Vec<u8> {
    let rejected = i64::try_from(rejected).unwrap_or(i64::MAX);
    let response = ExportTraceServiceResponse {
        partial_success: (rejected > 0)
            .then(|| ExportTracePartialSuccess { rejected_spans: rejected, error_message: message.clone() }),
    };
    answer(format, response.encode_to_vec(), "rejectedSpans", rejected, message)
}

/// The body of a `200` to a log export.
pub fn logs_answer(format: Format, rejected: usize, message: String) -> Vec<u8> {
    let rejected = i64::try_from(rejected).unwrap_or(i64::MAX);
    let response = ExportLogsServiceResponse {
        partial_success: (rejected > 0)
            .then(|| ExportLogsPartialSuccess { rejected_log_records: rejected, error_message: message.clone() }),
    };
    answer(format, response.encode_to_vec(), "rejectedLogRecords", rejected, message)
}

/// The answer in protobuf, or in JSON as the proto3 mapping writes it (a 64-bit count is a string).
fn answer(format: Format, protobuf: Vec<u8>, field: &str, rejected: i64, message: String) -> Vec<u8> {
    match format {
        Format::Protobuf => protobuf,
        Format::Json if rejected == 0 => b"{}".to_vec(),
        Format::Json => {
            let mut partial = serde_json::Map::new();
            partial.insert(field.into(), rejected.to_string().into());
            partial.insert("errorMessage".into(), message.into());
            serde_json::json!({ "partialSuccess": partial }).to_string().into_bytes()
        }
    }
}

/// What a request held: the items taken, and how many were refused and why (the first reasons).
#[derive(Debug)]
pub struct Taken<T> {
    pub items: Vec<T>,
    pub rejected: usize,
    reasons: Vec<String>,
}

impl<T> Taken<T> {
    fn new() -> Self {
        Self { items: Vec::new(), rejected: 0, reasons: Vec::new() }
    }

    fn refuse(&mut self, reason: String) {
        self.rejected += 1;
        if self.reasons.len() < 3 && !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    pub fn message(&self) -> String {
        self.reasons.join("; ")
    }
}

/// A value as JSON: strings, booleans, numbers, arrays and maps as themselves, bytes as hex.
pub fn json(value: &AnyValue) -> serde_json::Value {
    match &value.value {
        None => serde_json::Value::Null,
        Some(any_value::Value::StringValue(text)) => text.clone().into(),
        Some(any_value::Value::BoolValue(flag)) => (*flag).into(),
        Some(any_value::Value::IntValue(number)) => (*number).into(),
        Some(any_value::Value::DoubleValue(number)) => {
            serde_json::Number::from_f64(*number).map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        Some(any_value::Value::ArrayValue(array)) => array.values.iter().map(json).collect(),
        Some(any_value::Value::KvlistValue(list)) => serde_json::Value::Object(attributes(&list.values, usize::MAX).0),
        Some(any_value::Value::BytesValue(bytes)) => hex(bytes).into(),
        // An index into a dictionary that only the profiles signal sends.
        Some(any_value::Value::StringValueStrindex(_)) => serde_json::Value::Null,
    }
}

/// Attributes as a JSON object, at most `max` of them, and how many were left out.
fn attributes(list: &[KeyValue], max: usize) -> (serde_json::Map<String, serde_json::Value>, usize) {
    let mut map = serde_json::Map::new();
    for pair in list.iter().take(max) {
        map.insert(pair.key.clone(), pair.value.as_ref().map_or(serde_json::Value::Null, json));
    }
    (map, list.len().saturating_sub(max))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace id (16 bytes) or span id (8 bytes) as hex; `None` when empty or all zero (invalid in OTLP).
fn id(bytes: &[u8], length: usize) -> Option<String> {
    (bytes.len() == length && bytes.iter().any(|b| *b != 0)).then(|| hex(bytes))
}

fn text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn cut(text: String) -> String {
    cut_to(text, MAX_TEXT)
}

fn cut_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        text.truncate(text.floor_char_boundary(max));
    }
    text
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The user id among attributes (the span's or record's own before its resource's).
fn user(
    own: &serde_json::Map<String, serde_json::Value>,
    resource: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let find =
        |map: &serde_json::Map<String, serde_json::Value>| USER_ATTRIBUTES.iter().find_map(|key| text(map.get(*key)));
    find(own).or_else(|| find(resource))
}

/// How far ahead of selfmon's clock a span may start (anything later would outlive its retention).
const MAX_AHEAD_NANOS: u64 = 3_600_000_000_000;
/// The longest span name kept.
const MAX_NAME: usize = 1024;

/// The spans of a request; a span without valid ids or times is refused.
pub fn spans(request: ExportTraceServiceRequest, max_attributes: usize) -> Taken<NewSpan> {
    let mut taken = Taken::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes, max_attributes).0).unwrap_or_default();
        let service = text(resource.get("service.name")).unwrap_or_else(|| "unknown_service".into());
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let (Some(trace_id), Some(span_id)) = (id(&span.trace_id, 16), id(&span.span_id, 8)) else {
                    taken.refuse("a span has no valid trace_id (16 bytes) or span_id (8 bytes)".into());
                    continue;
                };
                let parent_id = id(&span.parent_span_id, 8);
                if !span.parent_span_id.is_empty() && parent_id.is_none() {
                    taken.refuse(format!("span {span_id}: parent_span_id is not 8 bytes"));
                    continue;
                }
                let (Ok(start), Ok(end)) =
                    (i64::try_from(span.start_time_unix_nano), i64::try_from(span.end_time_unix_nano))
                else {
                    taken.refuse(format!("span {span_id}: its times are out of range"));
                    continue;
                };
                if start == 0 || end < start {
                    taken.refuse(format!("span {span_id}: it has no start time, or ends before it starts"));
                    continue;
                }
                if span.start_time_unix_nano > now_nanos().saturating_add(MAX_AHEAD_NANOS) {
                    taken.refuse(format!("span {span_id}: it starts more than an hour ahead of selfmon's clock"));
                    continue;
                }
                let (own, _) = attributes(&span.attributes, max_attributes);
                let user_id = user(&own, &resource);
                let status = match span.status.as_ref().map(|s| s.code) {
                    Some(1) => "ok",
                    Some(2) => "error",
                    _ => "unset",
                };
                let events = span
                    .events
                    .iter()
                    .map(|event| {
                        serde_json::json!({
                            "time": rfc3339(i64::try_from(event.time_unix_nano / 1_000_000).unwrap_or(0)),
                            "name": event.name,
                            "attributes": attributes(&event.attributes, max_attributes).0,
                        })
                    })
                    .collect();
                taken.items.push(NewSpan {
                    trace_id,
                    span_id,
                    parent_id,
                    service: service.clone(),
                    name: cut_to(span.name, MAX_NAME),
                    kind: span_kind(span.kind),
                    start_ns: start,
                    duration_ns: end - start,
                    status,
                    status_message: span.status.map(|s| s.message).filter(|m| !m.is_empty()),
                    user_id,
                    attributes: own,
                    events,
                    resource: resource.clone(),
                });
            }
        }
    }
    taken
}

/// Severity as OTLP numbers it (<https://opentelemetry.io/docs/specs/otel/logs/data-model/#field-severitynumber>),
/// else by its text, as a stored level.
fn level(number: i32, text: &str) -> &'static str {
    match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warning",
        17..=20 => "error",
        21..=24 => "critical",
        _ => match text.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "warn" | "warning" => "warning",
            "error" => "error",
            "fatal" | "critical" => "critical",
            _ => "info",
        },
    }
}

/// The log records of a request, stored with `source = "otlp"`; `now` stands in for a record without times.
pub fn records(request: ExportLogsServiceRequest, max_attributes: usize, now: SystemTime) -> Taken<NewRecord> {
    let mut taken = Taken::new();
    for resource_logs in request.resource_logs {
        let resource = resource_logs.resource.map(|r| attributes(&r.attributes, max_attributes).0).unwrap_or_default();
        let service = text(resource.get("service.name"));
        for scope_logs in resource_logs.scope_logs {
            let logger = scope_logs.scope.map(|s| s.name).filter(|n| !n.is_empty());
            for record in scope_logs.log_records {
                if selfmon_logger(logger.as_deref()) {
                    taken.refuse("a log record's scope may not be one of selfmon's own loggers".into());
                    continue;
                }
                let trace_id = id(&record.trace_id, 16);
                if !record.trace_id.is_empty() && trace_id.is_none() {
                    taken.refuse("a log record's trace_id is not 16 bytes".into());
                    continue;
                }
                let nanos =
                    if record.time_unix_nano != 0 { record.time_unix_nano } else { record.observed_time_unix_nano };
                // A time ahead of the clock would outlive the record's retention: such a record is stored as received.
                let ts = if nanos == 0 || nanos > now_nanos().saturating_add(MAX_AHEAD_NANOS) {
                    now
                } else {
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos)
                };
                let (mut fields, _) = attributes(&record.attributes, max_attributes);
                let user_id = user(&fields, &resource);
                for key in USER_ATTRIBUTES {
                    fields.remove(key);
                }
                let correlation_id = ["correlation_id", "correlation.id"].iter().find_map(|key| text(fields.get(*key)));
                if !record.event_name.is_empty() {
                    fields.insert("event.name".into(), record.event_name.clone().into());
                }
                let message = match record.body.as_ref().map(json) {
                    Some(serde_json::Value::String(text)) => text,
                    None | Some(serde_json::Value::Null) => record.event_name.clone(),
                    Some(other) => other.to_string(),
                };
                taken.items.push(NewRecord {
                    ts,
                    level: level(record.severity_number, &record.severity_text),
                    source: "otlp".into(),
                    service: service.clone(),
                    logger: logger.clone(),
                    message: cut(message),
                    trace_id,
                    span_id: id(&record.span_id, 8),
                    correlation_id,
                    user_id,
                    fields: (!fields.is_empty()).then(|| serde_json::Value::Object(fields).to_string()),
                    parsed: true,
                    error: None,
                    line: taken.items.len(),
                });
            }
        }
    }
    taken
}

/// AI usage events for the spans that carry the OpenTelemetry GenAI semantic conventions
/// (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/>): a provider, a model and token counts.
pub fn ai_events(spans: &[NewSpan]) -> Vec<NewEvent> {
    let tokens = |span: &NewSpan, keys: [&str; 2]| {
        keys.iter().find_map(|key| span.attributes.get(*key).and_then(serde_json::Value::as_u64))
    };
    spans
        .iter()
        .filter_map(|span| {
            let a = &span.attributes;
            let provider = text(a.get("gen_ai.provider.name")).or_else(|| text(a.get("gen_ai.system")))?;
            let model = text(a.get("gen_ai.response.model")).or_else(|| text(a.get("gen_ai.request.model")))?;
            let input = tokens(span, ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"]);
            let output = tokens(span, ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"]);
            if input.is_none() && output.is_none() {
                return None;
            }
            let start = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(span.start_ns.cast_unsigned());
            let mut event = NewEvent::new("ai_usage", start);
            event.user_id = span.user_id.clone();
            event.service = Some(span.service.clone());
            event.provider = Some(provider.to_ascii_lowercase());
            event.model = Some(model);
            event.input_tokens = Some(input.unwrap_or(0));
            event.output_tokens = Some(output.unwrap_or(0));
            event.latency_ms = Some(span.duration_ns as f64 / 1e6);
            event.success = Some(span.status != "error");
            event.trace_id = Some(span.trace_id.clone());
            event.span_id = Some(span.span_id.clone());
            Some(event)
        })
        .collect()
}

/// Fuzz targets for OTLP decoding (`scripts/fuzz` runs them for as long as it is given; the suite runs them
/// briefly).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_export_is_an_object() {
        for body in [&b"[]"[..], b" [[]]", b"\"resourceSpans\"", b"7"] {
            let refused = decode_traces(Format::Json, body).unwrap_err();
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        }
        assert!(decode_traces(Format::Json, b" {\"resourceSpans\": []}").unwrap().resource_spans.is_empty());
        assert!(decode_logs(Format::Json, b"{}").is_ok());
    }
}

#[cfg(test)]
mod fuzz {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use proptest::prelude::*;

    use super::*;

    /// A trace export of spans with any names, ids of any length and string attributes.
    fn export() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let span = (
            any::<String>(),
            prop::collection::vec(any::<u8>(), 0..20),
            prop::collection::vec(any::<u8>(), 0..10),
            prop::collection::vec((any::<String>(), any::<String>()), 0..4),
        )
            .prop_map(|(name, trace_id, span_id, attributes)| Span {
                name,
                trace_id,
                span_id,
                start_time_unix_nano: 1_795_687_200_000_000_000,
                end_time_unix_nano: 1_795_687_200_100_000_000,
                attributes: attributes
                    .into_iter()
                    .map(|(key, value)| KeyValue {
                        key,
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
                        ..KeyValue::default()
                    })
                    .collect(),
                ..Span::default()
            });
        prop::collection::vec(span, 0..16).prop_map(|spans| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        })
    }

    proptest! {
        /// Any body, in either encoding, is taken apart or refused: never a panic.
        #[test]
        fn any_body(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            for format in [Format::Protobuf, Format::Json] {
                let _ = receive_traces(format, &body, 128);
                let _ = receive_logs(format, &body, 128);
            }
            let _ = estimate(Export::Traces, &body);
            let _ = estimate(Export::Logs, &body);
        }

        /// Every span of an export is taken or counted as refused, and the estimate counts them all.
        #[test]
        fn every_span_is_accounted_for(export in export()) {
            let sent = export.resource_spans[0].scope_spans[0].spans.len();
            let body = export.encode_to_vec();
            prop_assert_eq!(estimate(Export::Traces, &body).unwrap().items, sent);
            let taken = receive_traces(Format::Protobuf, &body, 128).unwrap();
            prop_assert_eq!(taken.items.len() + taken.rejected, sent);
        }

        /// An export damaged anywhere (a byte changed) is taken apart or refused: never a panic.
        #[test]
        fn a_damaged_export(export in export(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut body = export.encode_to_vec();
            if !body.is_empty() {
                let at = at.index(body.len());
                body[at] = byte;
            }
            let _ = estimate(Export::Traces, &body);
            if let Ok(taken) = receive_traces(Format::Protobuf, &body, 128) {
                prop_assert!(taken.items.len() + taken.rejected <= body.len());
            }
        }
    }
}
