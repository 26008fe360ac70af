//! Log records: lines parsed by a parser plugin into records, stored with a full-text index, and searched.
//!
//! Nothing given is dropped. A line the parser does not understand, and every line of a batch whose parser call
//! failed (a crash, the deadline, the memory cap), is stored as it was, flagged unparsed, with the reason. A line
//! that continues the record before it (a traceback) is appended to that record's message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::params_from_iter;
use serde::Serialize;

use crate::plugins::Plugins;
use crate::runtime::{
    CallLabels, Grants, Kind, Level, LogRecord, ParseOutcome, ParseRequest, Plugin, Redactor, Runtime, Sandbox,
    TlsConfig,
};
use crate::storage::{Storage, StorageError, rfc3339, sql_count, to_millis};

/// Lines handed to a parser in one call.
pub const PARSE_BATCH: usize = 1000;
/// The longest line parsed; a longer one is kept unparsed, cut to this length.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// The longest message stored, continuations included.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How long one parser call may take, and how much memory it may use.
const PARSE_TIMEOUT: Duration = Duration::from_secs(10);
const PARSE_MEMORY: usize = 256 << 20;

/// Full-text matches past which a search walks an index in time order instead of sorting every match.
const MANY_MATCHES: i64 = 10_000;

/// Level names from comma-separated lists (`error,Critical`), lowercased, empty ones left out.
pub fn level_list<'a>(lists: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lists
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(|level| level.trim().to_ascii_lowercase())
        .filter(|level| !level.is_empty())
        .collect()
}

/// The level names, as stored and queried.
pub const LEVELS: [&str; 8] = ["trace", "debug", "info", "warning", "error", "critical", "security", "audit"];

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

/// One record to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub ts: SystemTime,
    pub level: &'static str,
    pub source: String,
    pub service: Option<String>,
    pub logger: Option<String>,
    pub message: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    /// A JSON object, when there are further fields.
    pub fields: Option<String>,
    pub parsed: bool,
    pub error: Option<String>,
    /// The index of its first line among the lines given to [`parse`] (not stored).
    pub line: usize,
}

/// Where lines come from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: String,
    /// The service of records that do not name one.
    pub service: Option<String>,
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
    pub fn for_source(source: &crate::config::LogSourceConfig, plugins: &Plugins) -> Result<Self, String> {
        let config = source
            .parser_config
            .iter()
            .map(|(key, value)| (key.clone(), crate::checks::toml_to_json(value).to_string()))
            .collect();
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
        ts: read_at,
        level: "info",
        source: origin.source.clone(),
        service: origin.service.clone(),
        logger: None,
        message: line.to_string(),
        trace_id: None,
        span_id: None,
        correlation_id: None,
        user_id: None,
        fields: None,
        parsed: false,
        error: Some(error),
        line: index,
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

/// How far a tailed file has been read: stored with the records read from it.
#[derive(Debug, Clone)]
pub struct ReadTo {
    pub source: String,
    pub path: String,
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
}

/// A stored record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct StoredRecord {
    pub id: i64,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub level: String,
    pub source: String,
    pub service: Option<String>,
    pub logger: Option<String>,
    pub message: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    /// Further fields, as the record had them.
    #[schema(value_type = Option<Object>)]
    #[graphql(skip)]
    pub fields: Option<serde_json::Value>,
    /// False for a line no parser understood, kept as it was.
    pub parsed: bool,
    /// Why it was not parsed.
    pub error: Option<String>,
}

/// A search of the stored records.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// An FTS5 query over messages: words, `"a phrase"`, `prefix*`, `AND`/`OR`/`NOT`.
    pub text: Option<String>,
    pub levels: Vec<String>,
    pub service: Option<String>,
    pub source: Option<String>,
    pub trace_id: Option<String>,
    pub user_id: Option<String>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    /// Only records stored after the one with this id, oldest first (a live tail's next page).
    pub after: Option<i64>,
    pub offset: u64,
    pub limit: u64,
}

/// A page of records, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub records: Vec<StoredRecord>,
    /// Whether more records match past this page.
    pub more: bool,
    pub offset: u64,
    pub limit: u64,
}

/// Why a search has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the search text is not a valid query: {0} (words, \"a phrase\", prefix*, AND, OR, NOT)")]
    Syntax(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Storage {
    /// Store records in one transaction, with how far their file has been read when they come from one; returns once
    /// they are committed.
    pub async fn write_logs(
        &self,
        mut records: Vec<NewRecord>,
        read_to: Option<ReadTo>,
    ) -> Result<usize, StorageError> {
        let privacy = self.privacy.clone();
        for record in &mut records {
            privacy.redact_string(&mut record.message);
            if let Some(user) = &mut record.user_id {
                *user = privacy.user(user);
            }
            if let Some(fields) = &mut record.fields
                && privacy.redacts()
                && let Ok(mut value) = serde_json::from_str::<serde_json::Value>(fields)
            {
                privacy.redact_json(&mut value);
                *fields = value.to_string();
            }
        }
        let (count, last) = self
            .apply(move |db| {
            if let Some(at) = &read_to {
                db.prepare_cached(
                    "INSERT OR REPLACE INTO log_offsets (source, path, device, inode, offset) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(rusqlite::params![
                    at.source,
                    at.path,
                    at.device.cast_signed(),
                    at.inode.cast_signed(),
                    at.offset.cast_signed()
                ])?;
            }
            let mut insert = db.prepare_cached(
                "INSERT INTO logs (ts, level, source, service, logger, message, trace_id, span_id, correlation_id,
                                   user_id, fields, parsed, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                         COALESCE(?10, (SELECT user_id FROM spans WHERE trace_id = ?7 AND user_id IS NOT NULL LIMIT 1)),
                         ?11, ?12, ?13)",
            )?;
            for r in &records {
                insert.execute(rusqlite::params![
                    to_millis(r.ts),
                    r.level,
                    r.source,
                    r.service,
                    r.logger,
                    r.message,
                    r.trace_id,
                    r.span_id,
                    r.correlation_id,
                    r.user_id,
                    r.fields,
                    r.parsed,
                    r.error,
                ])?;
            }
            let last = db.last_insert_rowid();
            if let Some(count) = i64::try_from(records.len()).ok().filter(|n| *n > 0) {
                db.prepare_cached(
                    "INSERT INTO logs_fts (rowid, message) SELECT id, message FROM logs WHERE id > ?1 AND id <= ?2",
                )?
                .execute(rusqlite::params![last - count, last])?;
            }
            Ok((records.len(), last))
        })
        .await?;
        if count > 0 {
            self.set_log_head(last);
        }
        Ok(count)
    }

    pub async fn search_logs(&self, search: Search) -> Result<Found, SearchError> {
        let (offset, limit) = (search.offset, search.limit);
        let result = self.read(move |db| search_records(db, &search)).await;
        let mut records = match result {
            Ok(records) => records,
            Err(StorageError::Query(error)) if is_fts_syntax(&error) => {
                return Err(SearchError::Syntax(fts_message(&error)));
            }
            Err(error) => return Err(error.into()),
        };
        let more = records.len() as u64 > limit;
        records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(Found { records, more, offset, limit })
    }
}

/// Search records on a connection of one's own (the command line reads a database read-only this way); one more
/// than `limit` when there are more. A query SQLite refuses for its syntax is a [`SearchError::Syntax`].
pub fn search(db: &rusqlite::Connection, search: &Search) -> Result<Found, SearchError> {
    let mut records = search_records(db, search).map_err(|error| {
        if is_fts_syntax(&error) { SearchError::Syntax(fts_message(&error)) } else { StorageError::Query(error).into() }
    })?;
    let more = records.len() as u64 > search.limit;
    records.truncate(usize::try_from(search.limit).unwrap_or(usize::MAX));
    Ok(Found { records, more, offset: search.offset, limit: search.limit })
}

fn search_records(db: &rusqlite::Connection, search: &Search) -> rusqlite::Result<Vec<StoredRecord>> {
    let (offset, limit) = (search.offset, search.limit);
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    fn bind(
        conditions: &mut Vec<String>,
        values: &mut Vec<rusqlite::types::Value>,
        condition: &str,
        value: rusqlite::types::Value,
    ) {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    }
    // A live tail's next page reads forward from an id: the other conditions get a `+` so SQLite walks the ids
    // rather than another index.
    let plus = if search.after.is_some() { "+" } else { "" };
    if let Some(text) = &search.text {
        if let Some(after) = search.after {
            values.push(text.clone().into());
            values.push(after.into());
            conditions.push(format!(
                "l.id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?{} AND rowid > ?{})",
                values.len() - 1,
                values.len()
            ));
        } else {
            // Few matches: look them up by id and sort them. Many: walk the time (or another filter's) index
            // newest first and keep the rows among the matches, which stops after a page; the `+` keeps SQLite
            // from looking them all up by id.
            let matches: i64 = db.query_row(
                "SELECT count(*) FROM (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?1 LIMIT ?2)",
                rusqlite::params![text, MANY_MATCHES],
                |row| row.get(0),
            )?;
            let fts = if matches < MANY_MATCHES {
                "l.id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?)"
            } else {
                "+l.id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?)"
            };
            bind(&mut conditions, &mut values, fts, text.clone().into());
        }
    }
    if !search.levels.is_empty() {
        let mut places = Vec::new();
        for level in &search.levels {
            values.push(level.clone().into());
            places.push(format!("?{}", values.len()));
        }
        conditions.push(format!("{plus}l.level IN ({})", places.join(", ")));
    }
    for (column, value) in [
        ("service", &search.service),
        ("source", &search.source),
        ("trace_id", &search.trace_id),
        ("user_id", &search.user_id),
    ] {
        if let Some(value) = value {
            bind(&mut conditions, &mut values, &format!("{plus}l.{column} = ?"), value.clone().into());
        }
    }
    if let Some(from) = search.from {
        bind(&mut conditions, &mut values, &format!("{plus}l.ts >= ?"), to_millis(from).into());
    }
    if let Some(to) = search.to {
        bind(&mut conditions, &mut values, &format!("{plus}l.ts <= ?"), to_millis(to).into());
    }
    if let Some(after) = search.after {
        bind(&mut conditions, &mut values, "l.id > ?", after.into());
    }
    let order = if search.after.is_some() { "l.id" } else { "l.ts DESC, l.id DESC" };
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    values.push(sql_count(limit.saturating_add(1)).into());
    values.push(sql_count(offset).into());
    let sql = format!(
        "SELECT l.id, l.ts, l.level, l.source, l.service, l.logger, l.message, l.trace_id, l.span_id,
                l.correlation_id, l.user_id, l.fields, l.parsed, l.error
         FROM logs AS l {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
        values.len() - 1,
        values.len()
    );
    let mut statement = db.prepare(&sql)?;
    let rows = statement.query_map(params_from_iter(values), |row| {
        Ok(StoredRecord {
            id: row.get(0)?,
            timestamp: rfc3339(row.get(1)?),
            level: row.get(2)?,
            source: row.get(3)?,
            service: row.get(4)?,
            logger: row.get(5)?,
            message: row.get(6)?,
            trace_id: row.get(7)?,
            span_id: row.get(8)?,
            correlation_id: row.get(9)?,
            user_id: row.get(10)?,
            fields: row.get::<_, Option<String>>(11)?.and_then(|f| serde_json::from_str(&f).ok()),
            parsed: row.get(12)?,
            error: row.get(13)?,
        })
    })?;
    rows.collect()
}

/// Whether SQLite refused an FTS5 query for its syntax.
fn is_fts_syntax(error: &rusqlite::Error) -> bool {
    let text = error.to_string();
    text.contains("fts5: syntax error")
        || text.contains("unterminated string")
        || text.contains("no such column")
        || text.contains("unknown special query")
}

fn fts_message(error: &rusqlite::Error) -> String {
    let text = error.to_string();
    text.strip_prefix("fts5: ").unwrap_or(&text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts_millis: u64, level: &'static str, message: String) -> NewRecord {
        NewRecord {
            ts: UNIX_EPOCH + Duration::from_millis(ts_millis),
            level,
            source: "app".into(),
            service: None,
            logger: None,
            message,
            trace_id: None,
            span_id: None,
            correlation_id: None,
            user_id: None,
            fields: None,
            parsed: true,
            error: None,
            line: 0,
        }
    }

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

    /// Both ways of answering a text search (few matches sorted, many matches walked in time order) give the newest
    /// records by time, not by the order they were stored in.
    #[tokio::test]
    async fn text_searches_are_newest_first_however_many_match() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("logs.db")).unwrap();
        // Stored out of time order: a record's time is a scrambled function of its position.
        let records: Vec<NewRecord> = (0..12_000u64)
            .map(|i| {
                let ts = (i * 7_919) % 12_000;
                let word = if ts % 4_000 == 0 { "rare" } else { "common" };
                record(1_000_000 + ts, if ts % 2 == 0 { "error" } else { "info" }, format!("{word} event {ts}"))
            })
            .collect();
        storage.write_logs(records, None).await.unwrap();
        let search = |text: &str, levels: &[&str], limit: u64| Search {
            text: Some(text.into()),
            levels: levels.iter().map(|l| l.to_string()).collect(),
            limit,
            ..Search::default()
        };
        let messages = |found: Found| found.records.into_iter().map(|r| r.message).collect::<Vec<_>>();
        let common = storage.search_logs(search("common", &[], 3)).await.unwrap();
        assert!(common.more);
        assert_eq!(messages(common), ["common event 11999", "common event 11998", "common event 11997"]);
        let errors = storage.search_logs(search("common", &["error"], 2)).await.unwrap();
        assert_eq!(messages(errors), ["common event 11998", "common event 11996"]);
        let rare = storage.search_logs(search("rare", &[], 10)).await.unwrap();
        assert!(!rare.more);
        assert_eq!(messages(rare), ["rare event 8000", "rare event 4000", "rare event 0"]);
        storage.close().await.unwrap();
    }
}
