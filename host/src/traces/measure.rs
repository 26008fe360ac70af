//! What an OTLP protobuf export will take in memory once decoded, read from its wire format without decoding it: the
//! items it carries (spans or log records) and an estimate of the bytes its decoded messages hold. Two bytes on the
//! wire (an empty span) become a struct of a few hundred bytes, so the API measures a body before it decodes it.
//!
//! The walk follows the messages of the OTLP protocol (`opentelemetry/proto/{trace,logs,common,resource}/v1`): a
//! length-delimited field that holds a message is walked into, one that holds a string or bytes is counted by its
//! length. Fields the walk does not know cost what a string would (prost skips unknown fields).

use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Messages nested deeper than this are refused (prost's own limit is 100).
const MAX_DEPTH: usize = 100;

/// What a body will take once decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// Spans, or log records.
    pub items: usize,
    /// Bytes its decoded messages hold, counting a repeated field's vector at twice its length (as it grows).
    pub bytes: u64,
}

/// Which export a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    Traces,
    Logs,
}

/// Measure an export's protobuf body; an error says where the wire format is broken.
pub fn measure(export: Export, body: &[u8]) -> Result<Measure, String> {
    let mut measure = Measure::default();
    let root = match export {
        Export::Traces => Kind::TraceRequest,
        Export::Logs => Kind::LogRequest,
    };
    walk(root, body, 0, &mut measure)?;
    Ok(measure)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TraceRequest,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    LogRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    Resource,
    EntityRef,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Kind {
    /// The message a length-delimited field of this message holds, if it is one.
    fn field(self, number: u64) -> Option<Kind> {
        use Kind::*;
        Some(match (self, number) {
            (TraceRequest, 1) => ResourceSpans,
            (LogRequest, 1) => ResourceLogs,
            (ResourceSpans | ResourceLogs, 1) => Resource,
            (ResourceSpans, 2) => ScopeSpans,
            (ResourceLogs, 2) => ScopeLogs,
            (ScopeSpans | ScopeLogs, 1) => Scope,
            (ScopeSpans, 2) => Span,
            (ScopeLogs, 2) => LogRecord,
            (Span, 9) | (Event, 3) | (Link, 4) | (Resource, 1) | (Scope, 3) | (LogRecord, 6) | (KeyValueList, 1) => {
                KeyValue
            }
            (Resource, 3) => EntityRef,
            (Span, 11) => Event,
            (Span, 13) => Link,
            (Span, 15) => Status,
            (LogRecord, 5) | (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            _ => return None,
        })
    }

    /// The size of its decoded struct.
    fn size(self) -> usize {
        match self {
            Kind::TraceRequest | Kind::LogRequest => 0,
            Kind::ResourceSpans => size_of::<ResourceSpans>(),
            Kind::ScopeSpans => size_of::<ScopeSpans>(),
            Kind::Span => size_of::<Span>(),
            Kind::Event => size_of::<Event>(),
            Kind::Link => size_of::<Link>(),
            Kind::Status => size_of::<Status>(),
            Kind::ResourceLogs => size_of::<ResourceLogs>(),
            Kind::ScopeLogs => size_of::<ScopeLogs>(),
            Kind::LogRecord => size_of::<LogRecord>(),
            Kind::Resource => size_of::<Resource>(),
            Kind::EntityRef => size_of::<EntityRef>(),
            Kind::Scope => size_of::<InstrumentationScope>(),
            Kind::KeyValue => size_of::<KeyValue>(),
            Kind::AnyValue => size_of::<AnyValue>(),
            Kind::ArrayValue => size_of::<ArrayValue>(),
            Kind::KeyValueList => size_of::<KeyValueList>(),
        }
    }
}

fn walk(kind: Kind, mut body: &[u8], depth: usize, measure: &mut Measure) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("messages are nested more than {MAX_DEPTH} deep"));
    }
    while !body.is_empty() {
        let key = varint(&mut body)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut body)?;
            }
            1 => body = skip(body, 8)?,
            5 => body = skip(body, 4)?,
            2 => {
                let length = usize::try_from(varint(&mut body)?).map_err(|_| "a length does not fit".to_string())?;
                let (field, rest) = body.split_at_checked(length).ok_or("a field runs past the end of its message")?;
                body = rest;
                match kind.field(number) {
                    Some(child) => {
                        measure.items += usize::from(matches!(child, Kind::Span | Kind::LogRecord));
                        measure.bytes += 2 * child.size() as u64;
                        walk(child, field, depth + 1, measure)?;
                    }
                    None => measure.bytes += (2 * size_of::<String>() + length) as u64,
                }
            }
            other => return Err(format!("field {number} has wire type {other}, which OTLP does not use")),
        }
    }
    Ok(())
}

fn varint(body: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = body.split_first().ok_or("a number runs past the end of its message")?;
        *body = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a number is longer than ten bytes".into())
}

fn skip(body: &[u8], count: usize) -> Result<&[u8], String> {
    body.get(count..).ok_or_else(|| "a fixed-size field runs past the end of its message".into())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    use super::*;

    fn attribute(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
    }

    /// What the decoded message really holds on the heap and inline, for comparison with the estimate.
    fn traces(spans: usize, attributes: usize) -> ExportTraceServiceRequest {
        let span = Span {
            name: "GET /users".into(),
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: (0..attributes).map(|i| attribute(&format!("k{i}"), Value::IntValue(7))).collect(),
            events: vec![Event { name: "retry".into(), ..Event::default() }],
            ..Span::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attribute("service.name", Value::StringValue("bot".into()))],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans { spans: vec![span; spans], ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        }
    }

    #[test]
    fn spans_and_log_records_are_counted_and_their_decoded_size_is_not_underestimated() {
        let request = traces(50, 3);
        let traced = measure(Export::Traces, &request.encode_to_vec()).unwrap();
        assert_eq!(traced.items, 50);
        let inline = 50 * (size_of::<Span>() + 4 * size_of::<KeyValue>() + 4 * size_of::<AnyValue>());
        assert!(traced.bytes as usize > inline, "{} <= {inline}", traced.bytes);

        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord {
                            body: Some(AnyValue { value: Some(Value::StringValue("hello".into())) }),
                            ..LogRecord::default()
                        };
                        7
                    ],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        };
        let logged = measure(Export::Logs, &logs.encode_to_vec()).unwrap();
        assert_eq!(logged.items, 7);
        assert!(logged.bytes as usize >= 7 * size_of::<LogRecord>());
    }

    #[test]
    fn empty_spans_cost_their_struct_not_their_two_bytes() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![Span::default(); 10_000], ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        };
        let body = request.encode_to_vec();
        let measured = measure(Export::Traces, &body).unwrap();
        assert_eq!(measured.items, 10_000);
        assert!(measured.bytes >= 10_000 * size_of::<Span>() as u64);
        assert!(body.len() < 30_000, "two bytes a span on the wire");
    }

    #[test]
    fn broken_wire_format_is_an_error_that_says_what_is_broken() {
        let body = traces(2, 1).encode_to_vec();
        let cut = measure(Export::Traces, &body[..body.len() - 3]).unwrap_err();
        assert!(cut.contains("past the end"), "{cut}");
        let group = measure(Export::Traces, &[0x0b]).unwrap_err();
        assert!(group.contains("wire type 3"), "{group}");
        let mut deep = Vec::new();
        for _ in 0..150 {
            // AnyValue.array_value (5) → ArrayValue.values (1) → AnyValue ..., nested from the inside out.
            let mut array = vec![0x0a];
            array.extend(length(deep.len()));
            array.extend(&deep);
            deep = vec![0x2a];
            deep.extend(length(array.len()));
            deep.extend(array);
        }
        let mut log = vec![0x2a];
        log.extend(length(deep.len()));
        log.extend(deep);
        let nest = |field: u8, inner: Vec<u8>| {
            let mut out = vec![field];
            out.extend(length(inner.len()));
            out.extend(inner);
            out
        };
        let body = nest(0x0a, nest(0x12, nest(0x12, log)));
        let refused = measure(Export::Logs, &body).unwrap_err();
        assert!(refused.contains("nested more than 100"), "{refused}");
        assert!(ExportLogsServiceRequest::decode(body.as_slice()).is_err(), "prost refuses it too");
    }

    use proptest::prelude::*;

    /// An attribute value nested up to `depth` arrays deep.
    fn any_value(depth: u32) -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::StringValue),
            any::<i64>().prop_map(Value::IntValue),
            any::<bool>().prop_map(Value::BoolValue),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::BytesValue),
        ];
        leaf.prop_recursive(depth, 16, 4, |inner| {
            proptest::collection::vec(inner.prop_map(|value| AnyValue { value: Some(value) }), 0..4)
                .prop_map(|values| Value::ArrayValue(ArrayValue { values }))
        })
        .prop_map(|value| AnyValue { value: Some(value) })
    }

    fn generated_span() -> impl Strategy<Value = Span> {
        (any::<String>(), proptest::collection::vec((any::<String>(), any_value(3)), 0..6)).prop_map(
            |(name, attributes)| Span {
                name,
                attributes: attributes
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value: Some(value), ..KeyValue::default() })
                    .collect(),
                ..Span::default()
            },
        )
    }

    proptest! {
        /// Any bytes at all are measured or refused, never a panic.
        #[test]
        fn any_bytes_are_measured_or_refused(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = measure(Export::Traces, &body);
            let _ = measure(Export::Logs, &body);
        }

        /// A generated export is counted exactly, and never estimated below its spans' own structs.
        #[test]
        fn generated_exports_are_counted_exactly(
            groups in proptest::collection::vec(proptest::collection::vec(generated_span(), 0..8), 0..4)
        ) {
            let count: usize = groups.iter().map(Vec::len).sum();
            let request = ExportTraceServiceRequest {
                resource_spans: groups
                    .into_iter()
                    .map(|spans| ResourceSpans {
                        scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
                        ..ResourceSpans::default()
                    })
                    .collect(),
            };
            let measured = measure(Export::Traces, &request.encode_to_vec()).unwrap();
            prop_assert_eq!(measured.items, count);
            prop_assert!(measured.bytes >= (count * size_of::<Span>()) as u64);
        }
    }

    fn length(mut value: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
}
