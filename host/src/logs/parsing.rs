//! How lines become records: a source's parser plugin (or `auto`, which tries the built-in parsers in turn),
//! called in batches with its own deadline and memory cap.
//!
//! Nothing given is dropped. A line the parser does not understand, and every line of a batch whose parser call
//! failed (a crash, the deadline, the memory cap), is kept as it was, flagged unparsed, with the reason. A line that
//! continues the record before it (a traceback) is appended to that record's message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::LogSourceConfig;
use crate::logs::{LEVELS, NewRecord, Origin};
use crate::runtime::plugins::Plugins;
use crate::runtime::settings::toml_to_json;
use crate::runtime::{
    CallLabels, Grants, Kind, Level, LogRecord, ParseOutcome, ParseRequest, Plugin, Redactor, Runtime, Sandbox,
    TlsConfig,
};

/// Lines handed to a parser in one call.
pub const PARSE_BATCH: usize = 1000;
/// The longest line parsed; a longer one is kept unparsed, cut to this length.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// The longest message stored, continuations included.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How long one parser call may take, and how much memory it may use.
const PARSE_TIMEOUT: Duration = Duration::from_secs(10);
const PARSE_MEMORY: usize = 256 << 20;

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => LEVELS[0],
        Level::Debug => LEVELS[1],
        Level::Info => LEVELS[2],
        Level::Warning => LEVELS[3],
        Level::Error => LEVELS[4],
        Level::Critical => LEVELS[5],
        Level::Security => LEVELS[6],
        Level::Audit => LEVELS[7],
    }
}

/// What became of a set of lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Parsed {
    /// Records made (parsed or kept raw).
    pub records: usize,
    /// Lines no parser understood, kept raw.
    pub unparsed: usize,
    /// Lines the parser skipped (blank lines, headers) or appended to the record before.
    pub skipped: usize,
    pub continued: usize,
    /// Lines whose parser call failed, kept raw.
    pub parser_failures: usize,
    /// Records not stored because they claim to be selfmon's own (a `selfmon::` logger).
    pub refused: usize,
}

/// The parser names `auto` tries, in order: the strictest formats first, Python's last (any line that is not
/// one of its records continues the record before, so it would claim everything).
pub const AUTO_ORDER: [&str; 5] = ["json", "syslog", "combined", "logfmt", "python"];

/// How a source's lines are parsed: one parser with its config, or `auto`.
#[derive(Debug, Clone)]
pub struct Parsing {
    /// The parser as configured: a plugin's name or `auto`.
    pub name: String,
    /// One parser, or for `auto` the candidates in the order tried.
    parsers: Vec<Arc<Plugin>>,
    /// The source's `parser_config`, each value JSON text.
    config: Vec<(String, String)>,
    /// For `auto`: the candidate that won the last batch, tried first next time.
    last: Arc<AtomicUsize>,
}

impl Parsing {
    /// The plugins it may call.
    pub fn plugin_names(&self) -> Vec<String> {
        self.parsers.iter().map(|p| p.info.name.clone()).collect()
    }

    /// The parser of a `[[log_source]]` table, with its `parser_config`.
    pub fn for_source(source: &LogSourceConfig, plugins: &Plugins) -> Result<Self, String> {
        let config =
            source.parser_config.iter().map(|(key, value)| (key.clone(), toml_to_json(value).to_string())).collect();
        Self::resolve(source.parser(), config, plugins)
    }

    /// The parser named `name` (or `auto`) among `plugins`, with a config; the error names the parsers there are.
    pub fn resolve(name: &str, config: Vec<(String, String)>, plugins: &Plugins) -> Result<Self, String> {
        let parser = |name: &str| plugins.get(name).filter(|p| p.kind() == Kind::Parser).cloned();
        let chosen: Vec<Arc<Plugin>> = if name == "auto" {
            if !config.is_empty() {
                return Err("`parser_config` needs a named parser, not `auto`".into());
            }
            AUTO_ORDER.iter().filter_map(|n| parser(n)).collect()
        } else {
            parser(name).into_iter().collect()
        };
        if chosen.is_empty() {
            let names: Vec<&str> =
                plugins.iter().filter(|p| p.kind() == Kind::Parser).map(|p| p.info.name.as_str()).collect();
            return Err(format!("`{name}` is not a parser plugin (parsers: {}, or auto)", names.join(", ")));
        }
        Ok(Self { name: name.to_string(), parsers: chosen, config, last: Arc::default() })
    }

    /// Ask the parser whether the config is acceptable (`auto` has none).
    pub async fn validate(&self, runtime: &Runtime) -> Result<(), String> {
        let [parser] = self.parsers.as_slice() else { return Ok(()) };
        match runtime.validate_parser(parser, &sandbox(parser), &self.config).await {
            Ok(verdict) => verdict,
            Err(error) => Err(format!("the parser `{}` failed to check its config: {error}", parser.info.name)),
        }
    }
}

fn sandbox(parser: &Plugin) -> Sandbox {
    Sandbox {
        labels: CallLabels { plugin: Arc::from(parser.info.name.as_str()), check: None },
        grants: Arc::new(Grants::default()),
        redactor: Redactor::default(),
        tls: TlsConfig::system(),
        memory_limit: PARSE_MEMORY,
        timeout: PARSE_TIMEOUT,
        data: None,
    }
}

/// Parse `lines` into records, in batches; `read_at` is the time given to records without one.
pub async fn parse(
    runtime: &Runtime,
    parsing: &Parsing,
    origin: &Origin,
    lines: Vec<String>,
    read_at: SystemTime,
) -> (Vec<NewRecord>, Parsed) {
    let mut records: Vec<NewRecord> = Vec::with_capacity(lines.len());
    let mut counts = Parsed::default();
    let raw = |index: usize, line: &str, error: String| NewRecord {
        service: origin.service.clone(),
        parsed: false,
        error: Some(error),
        line: index,
        ..NewRecord::plain(read_at, "info", origin.source.clone(), line.to_string())
    };
    // Runs of lines short enough to parse, in batches; a line too long is kept raw where it was.
    let mut runs: Vec<Vec<(usize, String)>> = vec![Vec::new()];
    for (index, line) in lines.into_iter().enumerate() {
        if line.len() > MAX_LINE_BYTES {
            let mut cut = line;
            cut.truncate(cut.floor_char_boundary(MAX_LINE_BYTES));
            counts.records += 1;
            counts.unparsed += 1;
            runs.push(vec![(index, cut)]);
            runs.push(Vec::new());
        } else {
            runs.last_mut().expect("never empty").push((index, line));
        }
    }
    for (position, run) in runs.into_iter().enumerate() {
        if position % 2 == 1 {
            let reason = format!("longer than {MAX_LINE_BYTES} bytes: cut, not parsed");
            records.extend(run.iter().map(|(index, line)| raw(*index, line, reason.clone())));
            continue;
        }
        for chunk in run.chunks(PARSE_BATCH) {
            let request = ParseRequest {
                source: origin.source.clone(),
                service: origin.service.clone(),
                config: parsing.config.clone(),
                lines: chunk.iter().map(|(_, line)| line.clone()).collect(),
            };
            match outcomes(runtime, parsing, &request).await {
                Ok(outcomes) => apply(chunk, outcomes, origin, read_at, &mut records, &mut counts, &raw),
                Err(reason) => {
                    tracing::warn!(parser = %parsing.name, source = %origin.source, lines = chunk.len(), %reason, "Parser failed; its batch is kept unparsed");
                    counts.parser_failures += chunk.len();
                    counts.records += chunk.len();
                    records.extend(chunk.iter().map(|(index, line)| raw(*index, line, reason.clone())));
                }
            }
        }
    }
    (records, counts)
}

/// The outcomes of one batch. With `auto`, the candidates are tried (last batch's winner first) until one is sure
/// to be right; otherwise the one that started the most records wins.
async fn outcomes(runtime: &Runtime, parsing: &Parsing, request: &ParseRequest) -> Result<Vec<ParseOutcome>, String> {
    let first = parsing.last.load(Ordering::Relaxed).min(parsing.parsers.len() - 1);
    let order = std::iter::once(first).chain((0..parsing.parsers.len()).filter(|i| *i != first));
    let mut best: Option<(usize, usize, Vec<ParseOutcome>)> = None;
    let mut failure = None;
    for index in order {
        let parser = &parsing.parsers[index];
        let outcomes = match runtime.parse(parser, &sandbox(parser), request).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                failure = Some(format!("the parser `{}` failed: {error}", parser.info.name));
                continue;
            }
        };
        let invalid = outcomes.iter().filter(|o| matches!(o, ParseOutcome::Invalid(_))).count();
        let parsed = outcomes.iter().filter(|o| matches!(o, ParseOutcome::Parsed(_))).count();
        let considered = outcomes.iter().filter(|o| !matches!(o, ParseOutcome::Skip)).count();
        // Taken at once: the only parser; last batch's winner understanding every line; or another that
        // understands every line and starts records on at least half of them (a parser that calls every line it
        // does not know a continuation must not glue a batch of another format onto one record).
        let sure =
            parsing.parsers.len() == 1 || (invalid == 0 && parsed > 0 && (index == first || parsed * 2 >= considered));
        if sure {
            parsing.last.store(index, Ordering::Relaxed);
            return Ok(outcomes);
        }
        if best.as_ref().is_none_or(|(_, most, _)| parsed > *most) {
            best = Some((index, parsed, outcomes));
        }
    }
    match best {
        Some((index, _, outcomes)) => {
            parsing.last.store(index, Ordering::Relaxed);
            Ok(outcomes)
        }
        None => Err(failure.unwrap_or_else(|| "no parser answered".into())),
    }
}

/// Turn a batch's outcomes into records: continuations join the record before, invalid lines are kept raw.
fn apply(
    chunk: &[(usize, String)],
    outcomes: Vec<ParseOutcome>,
    origin: &Origin,
    read_at: SystemTime,
    records: &mut Vec<NewRecord>,
    counts: &mut Parsed,
    raw: &impl Fn(usize, &str, String) -> NewRecord,
) {
    for ((index, line), outcome) in chunk.iter().zip(outcomes) {
        match outcome {
            ParseOutcome::Parsed(record) => {
                counts.records += 1;
                records.push(record_of(record, origin, read_at, *index));
            }
            ParseOutcome::Continuation => match records.last_mut() {
                Some(previous) if previous.message.len() + line.len() < MAX_MESSAGE_BYTES => {
                    counts.continued += 1;
                    previous.message.push('\n');
                    previous.message.push_str(line);
                }
                _ => {
                    counts.records += 1;
                    counts.unparsed += 1;
                    records.push(raw(*index, line, "continues a record that is not in this batch".into()));
                }
            },
            ParseOutcome::Skip => counts.skipped += 1,
            ParseOutcome::Invalid(reason) => {
                counts.records += 1;
                counts.unparsed += 1;
                records.push(raw(*index, line, reason));
            }
        }
    }
}

fn record_of(record: LogRecord, origin: &Origin, read_at: SystemTime, line: usize) -> NewRecord {
    let ts = record
        .timestamp_ns
        .and_then(|ns| u64::try_from(ns).ok())
        .and_then(|ns| UNIX_EPOCH.checked_add(Duration::from_nanos(ns)))
        .unwrap_or(read_at);
    let fields = (!record.fields.is_empty()).then(|| fields_object(record.fields));
    let mut message = record.message;
    if message.len() > MAX_MESSAGE_BYTES {
        message.truncate(message.floor_char_boundary(MAX_MESSAGE_BYTES));
    }
    NewRecord {
        ts,
        level: level_name(record.level),
        source: origin.source.clone(),
        service: record.service.or_else(|| origin.service.clone()),
        logger: record.logger,
        message,
        trace_id: record.trace_id,
        span_id: record.span_id,
        correlation_id: record.correlation_id,
        user_id: record.user_id,
        fields,
        parsed: true,
        error: None,
        line,
    }
}

/// A record's fields as one JSON object. A value that is JSON text is kept as it is (checked, not rebuilt); any
/// other becomes a string. A key given twice keeps its last value.
fn fields_object(mut fields: Vec<(String, String)>) -> String {
    let mut seen = std::collections::HashSet::with_capacity(fields.len());
    let mut keep: Vec<bool> = fields.iter().rev().map(|(key, _)| seen.insert(key.clone())).collect();
    keep.reverse();
    let mut keep = keep.into_iter();
    fields.retain(|_| keep.next().unwrap_or(false));
    let mut out = String::with_capacity(2 + fields.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>());
    out.push('{');
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(key.clone()).to_string());
        out.push(':');
        match serde_json::from_str::<&serde_json::value::RawValue>(value) {
            Ok(raw) => out.push_str(raw.get()),
            Err(_) => out.push_str(&serde_json::Value::String(value.clone()).to_string()),
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_json_values_and_quote_the_rest() {
        let fields = vec![
            ("status".to_string(), "502".to_string()),
            ("path".to_string(), "\"/a\\\"b\"".to_string()),
            ("note".to_string(), "plain text, not JSON".to_string()),
            ("tags".to_string(), " [1, {\"a\": null}] ".to_string()),
            ("status".to_string(), "503".to_string()),
            ("bad".to_string(), "{\"open\": ".to_string()),
        ];
        let object: serde_json::Value = serde_json::from_str(&fields_object(fields)).unwrap();
        assert_eq!(
            object,
            serde_json::json!({"status": 503, "path": "/a\"b", "note": "plain text, not JSON",
                               "tags": [1, {"a": null}], "bad": "{\"open\": "})
        );
    }
}
