//! JSON lines, one record per line, in the shapes Python's `python-json-logger` and `structlog`, Node's `pino` and
//! `bunyan` and Go's `slog` write. Field names are normalized:
//!
//! | Record field | Accepted names |
//! |---|---|
//! | time | `timestamp`, `ts`, `time`, `@timestamp`, `asctime`, `created` (RFC 3339 or Unix time) |
//! | level | `level`, `levelname`, `severity`, `log.level`, `lvl` (names; a number on pino's scale), `levelno` (Python's numbers) |
//! | message | `message`, `msg`, `event` (structlog), `@message` |
//! | logger | `logger`, `name`, `logger_name` |
//! | service | `service`, `service.name`, `app` |
//! | trace, span, correlation, user | `trace_id`/`traceId`, `span_id`/`spanId`, `correlation_id`/`request_id`, `user_id`/`userId` |
//!
//! Everything else is kept in the record's fields. An `exception` (an object with a `traceback`, or a string) or
//! `exc_info` is appended to the message, so a search finds the traceback. A line that is not a JSON object is
//! invalid (kept raw by the host); an empty line is skipped.

use selfmon_sdk::parse::names::*;
use selfmon_sdk::parse::{self, Batch, Level, Outcome, Parser, Record};
use selfmon_sdk::prelude::*;
use serde_json::{Map, Value};

pub struct Json;

impl Parser for Json {
    type Config = Value;

    fn info() -> PluginInfo {
        PluginInfo::new("json", env!("CARGO_PKG_VERSION"), "JSON log lines, field names normalized")
    }

    fn parse(_config: &Value, batch: &Batch) -> Vec<Outcome> {
        batch.lines.iter().map(|line| parse_line(line)).collect()
    }
}

selfmon_sdk::export_parser!(Json);

pub fn parse_line(line: &str) -> Outcome {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Outcome::Skip;
    }
    let mut object = match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Outcome::Invalid("a JSON value, but not an object".into()),
        Err(error) => return Outcome::Invalid(format!("not JSON: {error}")),
    };
    let level = take_level(&mut object);
    let mut message = take_text(&mut object, MESSAGE).unwrap_or_default();
    if let Some(exception) = object.remove("exception").or_else(|| object.remove("exc_info")) {
        let text = match exception {
            Value::String(text) => text,
            Value::Object(mut exception) => {
                let head = [exception.remove("type"), exception.remove("message")]
                    .into_iter()
                    .flatten()
                    .map(|v| text_of(&v))
                    .collect::<Vec<_>>()
                    .join(": ");
                let traceback = exception.remove("traceback").map(|t| match t {
                    Value::Array(lines) => lines.iter().map(text_of).collect::<Vec<_>>().join("\n"),
                    other => text_of(&other),
                });
                [traceback, (!head.is_empty()).then_some(head)].into_iter().flatten().collect::<Vec<_>>().join("\n")
            }
            other => other.to_string(),
        };
        if !text.is_empty() {
            message = if message.is_empty() { text } else { format!("{message}\n{text}") };
        }
    }
    let mut record = Record::new(level.unwrap_or(Level::Info), message);
    record.timestamp_ns = take_time(&mut object);
    record.logger = take_text(&mut object, LOGGER);
    record.service = take_text(&mut object, SERVICE);
    record.trace_id = take_text(&mut object, TRACE);
    record.span_id = take_text(&mut object, SPAN);
    record.correlation_id = take_text(&mut object, CORRELATION);
    record.user_id = take_text(&mut object, USER);
    record.fields = object.into_iter().map(|(key, value)| (key, value.to_string())).collect();
    Outcome::Parsed(record)
}

/// A value as text: strings as they are, anything else as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The first of `names` present (top level, or nested for dotted names), removed from the object.
fn take(object: &mut Map<String, Value>, names: &[&str]) -> Option<Value> {
    for name in names {
        // An object under a plain name (`"service": {"name": ...}`) is for a dotted name to look into.
        if object.get(*name).is_some_and(|v| !v.is_object()) {
            return object.remove(*name);
        }
        if let Some((outer, inner)) = name.split_once('.')
            && let Some(Value::Object(nested)) = object.get_mut(outer)
            && let Some(value) = nested.remove(inner)
        {
            if nested.is_empty() {
                object.remove(outer);
            }
            return Some(value);
        }
    }
    None
}

fn take_text(object: &mut Map<String, Value>, names: &[&str]) -> Option<String> {
    take(object, names).filter(|v| !v.is_null()).map(|v| text_of(&v))
}

/// A level name, Python's `levelno` (10 debug … 50 critical), or a numeric `level` on pino's and bunyan's scale
/// (10 trace … 60 fatal).
fn take_level(object: &mut Map<String, Value>) -> Option<Level> {
    let python = object.remove("levelno").and_then(|n| n.as_i64()).map(parse::python_level);
    match take(object, LEVEL) {
        Some(Value::String(name)) => parse::level(&name).or(python),
        Some(Value::Number(number)) => number.as_i64().map(|n| match n {
            ..=10 => Level::Trace,
            11..=20 => Level::Debug,
            21..=30 => Level::Info,
            31..=40 => Level::Warning,
            41..=50 => Level::Error,
            _ => Level::Critical,
        }),
        _ => python,
    }
}

fn take_time(object: &mut Map<String, Value>) -> Option<i64> {
    match take(object, TIME)? {
        Value::String(text) => parse::timestamp_ns(&text).or_else(|| text.parse().ok().and_then(parse::epoch_ns)),
        Value::Number(number) => number.as_f64().and_then(parse::epoch_ns),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Record {
        match parse_line(line) {
            Outcome::Parsed(record) => record,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn python_json_logger_with_a_traceback() {
        let record = parsed(
            r#"{"timestamp": "2026-11-26T10:00:00.123+00:00", "levelname": "ERROR", "name": "bot.handlers",
               "message": "Reply failed", "module": "handlers", "function": "reply", "line": 42,
               "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "user_id": 1234,
               "exception": {"type": "TimeoutError", "message": "read timed out",
                             "traceback": ["Traceback (most recent call last):", "  File \"bot.py\", line 42"]}}"#,
        );
        assert_eq!(record.level, Level::Error);
        assert_eq!(record.timestamp_ns, Some(1_795_687_200_123_000_000));
        assert_eq!(record.logger.as_deref(), Some("bot.handlers"));
        assert_eq!(record.user_id.as_deref(), Some("1234"));
        assert!(record.message.starts_with("Reply failed\nTraceback (most recent call last):\n"), "{}", record.message);
        assert!(record.message.ends_with("TimeoutError: read timed out"));
        assert!(record.fields.contains(&("line".to_string(), "42".to_string())));
        assert!(record.fields.contains(&("module".to_string(), "\"handlers\"".to_string())));
    }

    #[test]
    fn other_shapes_and_bad_lines() {
        let pino = parsed(r#"{"level":30,"time":1795687200000,"msg":"hello","pid":7}"#);
        assert_eq!((pino.level, pino.message.as_str()), (Level::Info, "hello"));
        assert_eq!(pino.timestamp_ns, Some(1_795_687_200_000_000_000));
        let slog = parsed(r#"{"time":"2026-11-26T10:00:00Z","level":"WARN","msg":"disk","service":{"name":"api"}}"#);
        assert_eq!((slog.level, slog.service.as_deref()), (Level::Warning, Some("api")));
        let security = parsed(r#"{"level":"security","event":"login failed","user.id":"u1"}"#);
        assert_eq!((security.level, security.user_id.as_deref()), (Level::Security, Some("u1")));
        assert!(matches!(parse_line("   "), Outcome::Skip));
        assert!(matches!(parse_line("[1, 2]"), Outcome::Invalid(_)));
        assert!(
            matches!(parse_line("2026-11-26 plain text"), Outcome::Invalid(reason) if reason.starts_with("not JSON"))
        );
        assert!(matches!(parse_line("{\"msg\": \"unterminated"), Outcome::Invalid(_)));
    }
}

/// Fuzz targets (`scripts/fuzz` runs them for as long as it is given; the suite runs them briefly).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Lines of the shapes this parser reads, to be damaged.
    const VALID: &[&str] = &[
        r#"{"timestamp": "2026-11-26T10:00:00.123+00:00", "levelname": "ERROR", "name": "bot.handlers", "message": "Reply failed", "exception": {"type": "ValueError", "message": "bad", "traceback": "Traceback ..."}}"#,
        r#"{"level":30,"time":1795687200000,"pid":1,"hostname":"h","msg":"hello","userId":"tg:1","traceId":"abc"}"#,
        r#"{"ts": 1795687200.5, "lvl": "warn", "event": "slow", "service.name": "api", "exc_info": "Traceback"}"#,
    ];

    proptest! {
        /// Any line is parsed, refused or skipped: never a panic.
        #[test]
        fn any_line(line in any::<String>()) {
            let _ = parse_line(&line);
        }

        /// A line of a known shape with anything put in anywhere.
        #[test]
        fn a_damaged_line(valid in prop::sample::select(VALID), at in any::<prop::sample::Index>(), junk in any::<String>()) {
            let line = selfmon_sdk::parse::damaged(valid, at.index(valid.len() + 1), &junk);
            let _ = parse_line(&line);
        }

        /// A JSON object with a level and a message is parsed to them, whatever the message holds.
        #[test]
        fn a_record_keeps_its_message(message in any::<String>(), level in prop::sample::select(&["debug", "info", "warning", "error", "critical"][..])) {
            let line = serde_json::json!({"level": level, "msg": message}).to_string();
            match parse_line(&line) {
                Outcome::Parsed(record) => prop_assert_eq!(record.message, message),
                other => prop_assert!(false, "{line}: {other:?}"),
            }
        }
    }
}
