//! selfmon's own log: one JSON object per line, with trace, span and correlation ids, written to rotating files by
//! kind, besides the lines on stderr (human-readable, or these same JSON lines with `--log-format json`).
//!
//! | File | What |
//! |---|---|
//! | `application/selfmon.log` | every record |
//! | `errors/errors.log` | ERROR records |
//! | `performance/performance.log` | check runs and slow API requests (`selfmon::performance`) |
//! | `security/security.log` | SECURITY and AUDIT records: refused API calls, admin changes, erasures |
//!
//! A line is `{"timestamp", "level", "logger", "message", "service": "selfmon", "trace_id", "span_id",
//! "correlation_id", "span", ...fields}`. Each API request and each check run is a span: its records share a
//! trace id (taken from the request's W3C `traceparent` when it has one) and a correlation id (the request's
//! `X-Correlation-ID` or `X-Request-ID`, else made up; API answers carry it back).
//!
//! Writing happens on a thread of its own: a record never waits for the disk. When more than [`QUEUE`] lines wait,
//! further ones are dropped (and counted) until the writer catches up.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate, compression::Compression};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LoggingConfig, Source};
use crate::storage::{private_dir, private_file};

/// Lines waiting for the writer at most.
pub const QUEUE: usize = 8192;

/// The files, by kind: where under `[logging] dir` each lives.
pub const FILES: [(Kind, &str); 4] = [
    (Kind::Application, "application/selfmon.log"),
    (Kind::Errors, "errors/errors.log"),
    (Kind::Performance, "performance/performance.log"),
    (Kind::Security, "security/security.log"),
];

/// The log targets of performance and security records.
pub const PERFORMANCE: &str = "selfmon::performance";
pub const SECURITY: &str = "selfmon::security";
pub const AUDIT: &str = "selfmon::audit";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Application,
    Errors,
    Performance,
    Security,
}

/// Where lines go once [`open`] has run.
static SINK: OnceLock<SyncSender<Message>> = OnceLock::new();
/// Lines dropped because the writer was behind.
static DROPPED: AtomicU64 = AtomicU64::new(0);

enum Message {
    Line(Vec<Kind>, String),
    /// Write out what is queued, then answer.
    Flush(SyncSender<()>),
}

/// Lines dropped so far because the writer was behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Start writing to the files of `[logging]`; records before this go to stderr only. Errors name the file.
pub fn open(config: &LoggingConfig, source: &Source) -> Result<Writer, String> {
    if config.keep == 0 || config.max_file_size.as_u64() < 1024 {
        return Err("`keep` must be at least 1 and `max_file_size` at least 1 KiB".into());
    }
    let dir = source.resolve(&config.dir);
    let mut files = Vec::new();
    for (kind, name) in FILES {
        let path = dir.join(name);
        let parent = path.parent().expect("every file is in a folder");
        private_dir(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        // For the owner only, as the files rotated out of it are.
        private_file(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let limit = ContentLimit::BytesSurpassed(usize::try_from(config.max_file_size.as_u64()).unwrap_or(usize::MAX));
        let mut private = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(private.read(true).create(true).append(true), 0o600);
        let file = FileRotate::new(&path, AppendCount::new(config.keep), limit, Compression::None, Some(private));
        files.push((kind, file));
    }
    let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    // The thread runs as long as the process does: the global sink keeps its channel open.
    std::thread::Builder::new()
        .name("selfmon-journal".into())
        .spawn(move || write(receiver, files))
        .map_err(|e| format!("cannot start the log writer: {e}"))?;
    SINK.set(sender.clone()).map_err(|_| "the log files are open already".to_string())?;
    Ok(Writer { sender })
}

/// The open log files; dropping it writes out what is queued.
pub struct Writer {
    sender: SyncSender<Message>,
}

impl Writer {
    /// Wait until every line queued so far is written.
    pub fn flush(&self) {
        let (done, written) = std::sync::mpsc::sync_channel(1);
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}

fn write(receiver: Receiver<Message>, mut files: Vec<(Kind, FileRotate<AppendCount>)>) {
    let mut failed = false;
    while let Ok(message) = receiver.recv() {
        match message {
            Message::Line(kinds, line) => {
                for (kind, file) in &mut files {
                    if kinds.contains(kind)
                        && let Err(error) = file.write_all(line.as_bytes())
                        && !failed
                    {
                        // Said once: the stderr sink still has every record.
                        failed = true;
                        eprintln!("selfmon: cannot write its log files: {error}");
                    }
                }
            }
            Message::Flush(done) => {
                for (_, file) in &mut files {
                    let _ = file.flush();
                }
                let _ = done.send(());
            }
        }
    }
}

/// The layer that turns records into JSON lines for the files, and for stderr too when `stderr` is set.
#[derive(Debug, Default)]
pub struct Journal {
    pub stderr: bool,
}

/// What a span carries for the records inside it.
struct SpanIds {
    trace_id: String,
    span_id: String,
    correlation_id: String,
    name: &'static str,
    fields: Map<String, Value>,
}

/// Fields as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// A random id of `bytes` bytes, as hex.
pub fn random_id(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", fastrand::u8(..))).collect()
}

fn text(fields: &Map<String, Value>, key: &str) -> Option<String> {
    fields.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string)
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Journal {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        let mut fields = fields.0;
        let parent = span.parent();
        let inherited = parent.as_ref().and_then(|parent| {
            parent.extensions().get::<SpanIds>().map(|p| (p.trace_id.clone(), p.correlation_id.clone()))
        });
        let trace_id = text(&fields, "trace_id")
            .or_else(|| inherited.as_ref().map(|i| i.0.clone()))
            .unwrap_or_else(|| random_id(16));
        let correlation_id =
            text(&fields, "correlation_id").or_else(|| inherited.map(|i| i.1)).unwrap_or_else(|| trace_id.clone());
        for key in ["trace_id", "correlation_id"] {
            fields.remove(key);
        }
        span.extensions_mut().insert(SpanIds {
            trace_id,
            span_id: random_id(8),
            correlation_id,
            name: span.metadata().name(),
            fields,
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let sink = SINK.get();
        if sink.is_none() && !self.stderr {
            return;
        }
        let metadata = event.metadata();
        let target = metadata.target();
        let level = match (*metadata.level(), target) {
            (_, SECURITY) => "SECURITY",
            (_, AUDIT) => "AUDIT",
            (Level::ERROR, _) => "ERROR",
            (Level::WARN, _) => "WARNING",
            (Level::INFO, _) => "INFO",
            (Level::DEBUG, _) => "DEBUG",
            (Level::TRACE, _) => "TRACE",
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        // Records of libraries that use the `log` crate carry their own target as a field.
        let logger = match fields.0.remove("log.target") {
            Some(Value::String(logger)) => logger,
            _ => target.to_string(),
        };
        fields.0.retain(|key, _| !key.starts_with("log."));
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string().into(),
        );
        line.insert("level".into(), level.into());
        line.insert("logger".into(), logger.into());
        line.insert("message".into(), fields.0.remove("message").unwrap_or_default());
        line.insert("service".into(), "selfmon".into());
        if let Some(span) = ctx.event_span(event) {
            // The innermost span's ids, and the fields of every span it is in (inner ones win).
            for (i, scope) in span.scope().enumerate() {
                if let Some(ids) = scope.extensions().get::<SpanIds>() {
                    if i == 0 {
                        line.insert("trace_id".into(), ids.trace_id.clone().into());
                        line.insert("span_id".into(), ids.span_id.clone().into());
                        line.insert("correlation_id".into(), ids.correlation_id.clone().into());
                        line.insert("span".into(), ids.name.into());
                    }
                    for (key, value) in &ids.fields {
                        line.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        for (key, value) in fields.0 {
            line.entry(key).or_insert(value);
        }
        let mut kinds = vec![Kind::Application];
        if *metadata.level() == Level::ERROR {
            kinds.push(Kind::Errors);
        }
        match target {
            PERFORMANCE => kinds.push(Kind::Performance),
            SECURITY | AUDIT => kinds.push(Kind::Security),
            _ => {}
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if self.stderr {
            // As the text lines are: written at once, whole.
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
        if let Some(sink) = sink
            && let Err(TrySendError::Full(_)) = sink.try_send(Message::Line(kinds, text))
        {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The trace id and parent span id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn traceparent(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then(|| trace.to_ascii_lowercase())
}

/// A caller's correlation id, if it is a sensible one (1 to 128 of letters, digits, `-`, `_`, `.`, `:`).
pub fn correlation_id(header: &str) -> Option<String> {
    let id = header.trim();
    let fine = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    fine.then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_headers_are_taken_only_when_well_formed() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(header).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None);
        assert_eq!(traceparent("garbage"), None);
        assert_eq!(correlation_id(" req-42.a:b ").as_deref(), Some("req-42.a:b"));
        assert_eq!(correlation_id("a b"), None);
        assert_eq!(correlation_id(&"x".repeat(129)), None);
    }
}
