//! Spans: stored as OTLP delivers them, read back as trace trees, searched, and summarised per operation with the
//! spans that dominate the slow ones.
//!
//! A span's self time is its duration less the time covered by its children (overlapping children counted once,
//! time outside the span ignored).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use rusqlite::params_from_iter;
use serde::Serialize;

use crate::logs::StoredRecord;
use crate::storage::{Storage, StorageError, sql_count, to_millis};

/// Spans nested deeper than this are shown as roots of their own (an answer nests at most this deep).
const MAX_DEPTH: usize = 256;
/// Spans a trace answer holds at most.
pub const MAX_TRACE_SPANS: usize = 10_000;
/// Spans the performance summary reads at most (the newest of the window).
const MAX_PROFILED: i64 = 200_000;
/// Operations listed as the slowest, and the spans listed as dominating each.
const SLOWEST: usize = 10;
const DOMINANT: usize = 5;

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

/// Latency and errors of one operation (a service's spans of one name).
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct OperationPerformance {
    pub service: String,
    pub operation: String,
    pub count: u64,
    pub errors: u64,
    /// Errors per span, 0 to 1.
    pub error_rate: f64,
    /// Spans per minute over the window.
    pub throughput_per_minute: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Mean time spent in the operation's own spans, outside their children.
    pub mean_self_ms: f64,
}

/// One of the slowest operations, and where its time goes.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct SlowOperation {
    pub service: String,
    pub operation: String,
    pub p95_ms: f64,
    pub count: u64,
    /// The operations within it (itself included) by the self time they add up to in its spans, most first.
    pub dominated_by: Vec<SelfTime>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct SelfTime {
    pub service: String,
    pub operation: String,
    /// Self time summed over the slow operation's spans.
    pub self_ms: f64,
    /// Of the slow operation's total time, 0 to 1.
    pub share: f64,
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

/// The user id attributes of a map, as pseudonyms.
fn pseudonymize_users(privacy: &crate::privacy::Privacy, map: &mut serde_json::Map<String, serde_json::Value>) {
    for key in crate::otlp::USER_ATTRIBUTES {
        if let Some(value) = map.get_mut(key) {
            let raw = match &*value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            *value = serde_json::Value::String(privacy.user(&raw));
        }
    }
}

/// Unix nanoseconds as RFC 3339 with nanoseconds.
fn rfc3339_nanos(nanos: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    humantime::format_rfc3339_nanos(time).to_string()
}

fn millis(nanos: i64) -> f64 {
    nanos as f64 / 1e6
}

/// Each span's self time: its duration less the union of its children's intervals clipped to it.
fn self_times(spans: &[(i64, i64, Option<usize>)]) -> Vec<i64> {
    let mut children: Vec<Vec<(i64, i64)>> = vec![Vec::new(); spans.len()];
    for &(start, duration, parent) in spans {
        if let Some(parent) = parent {
            children[parent].push((start, start.saturating_add(duration)));
        }
    }
    spans
        .iter()
        .zip(children.iter_mut())
        .map(|(&(start, duration, _), intervals)| {
            let end = start.saturating_add(duration);
            intervals.sort_unstable();
            let (mut covered, mut reach) = (0i64, start);
            for &(from, to) in intervals.iter() {
                let (from, to) = (from.max(reach), to.min(end));
                if to > from {
                    covered += to - from;
                    reach = to;
                }
            }
            (duration - covered).max(0)
        })
        .collect()
}

impl Storage {
    /// Store spans (a span received again replaces the one stored); returns once they are committed. User ids are
    /// pseudonymized and attributes redacted on the way.
    pub async fn write_spans(&self, mut spans: Vec<NewSpan>) -> Result<usize, StorageError> {
        let privacy = self.privacy.clone();
        for span in &mut spans {
            if let Some(user) = &mut span.user_id {
                *user = privacy.user(user);
            }
            privacy.redact_string(&mut span.name);
            if let Some(message) = &mut span.status_message {
                privacy.redact_string(message);
            }
            // User id attributes, wherever they are (the span's, its resource's, its events'), become pseudonyms.
            pseudonymize_users(&privacy, &mut span.attributes);
            pseudonymize_users(&privacy, &mut span.resource);
            for event in &mut span.events {
                if let Some(serde_json::Value::Object(attributes)) = event.get_mut("attributes") {
                    pseudonymize_users(&privacy, attributes);
                }
            }
            privacy.redact_map(&mut span.attributes);
            privacy.redact_map(&mut span.resource);
            span.events.iter_mut().for_each(|event| privacy.redact_json(event));
        }
        self.apply(move |db| {
            // A span without a user takes the user its trace's stored spans have.
            let mut insert = db.prepare_cached(
                "INSERT OR REPLACE INTO spans (trace_id, span_id, parent_id, service, name, kind, start_ns, duration_ns,
                                              status, status_message, user_id, attributes, events, resource)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                         COALESCE(?11, (SELECT user_id FROM spans WHERE trace_id = ?1 AND user_id IS NOT NULL LIMIT 1)),
                         ?12, ?13, ?14)",
            )?;
            for s in &spans {
                let events = (!s.events.is_empty()).then(|| serde_json::Value::from(s.events.clone()).to_string());
                insert.execute(rusqlite::params![
                    s.trace_id,
                    s.span_id,
                    s.parent_id,
                    s.service,
                    s.name,
                    s.kind,
                    s.start_ns,
                    s.duration_ns,
                    s.status,
                    s.status_message,
                    s.user_id,
                    serde_json::Value::Object(s.attributes.clone()).to_string(),
                    events,
                    serde_json::Value::Object(s.resource.clone()).to_string(),
                ])?;
            }
            // Spans and AI usage of the same trace stored earlier without a user (exporters send a request's inner
            // spans before the span that names the user) take it now.
            let users: std::collections::BTreeSet<(&str, &str)> =
                spans.iter().filter_map(|s| Some((s.trace_id.as_str(), s.user_id.as_deref()?))).collect();
            for (trace, user) in users {
                db.prepare_cached("UPDATE spans SET user_id = ?2 WHERE trace_id = ?1 AND user_id IS NULL")?
                    .execute(rusqlite::params![trace, user])?;
                db.prepare_cached("UPDATE events SET user_id = ?2 WHERE trace_id = ?1 AND user_id IS NULL")?
                    .execute(rusqlite::params![trace, user])?;
                db.prepare_cached("UPDATE logs SET user_id = ?2 WHERE trace_id = ?1 AND user_id IS NULL")?
                    .execute(rusqlite::params![trace, user])?;
            }
            Ok(spans.len())
        })
        .await
    }

    /// One trace as a tree, with its log records; `None` when no span of it is stored.
    pub async fn trace(&self, trace_id: String) -> Result<Option<Trace>, StorageError> {
        self.read(move |db| {
            let mut statement = db.prepare(
                "SELECT trace_id, span_id, parent_id, service, name, kind, start_ns, duration_ns, status,
                        status_message, user_id, attributes, events, resource
                 FROM spans WHERE trace_id = ?1 ORDER BY start_ns, id LIMIT ?2",
            )?;
            let spans: Vec<Span> = statement
                .query_map(rusqlite::params![trace_id, sql_count(MAX_TRACE_SPANS as u64)], |row| {
                    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
                        Ok(row
                            .get::<_, Option<String>>(i)?
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or(serde_json::Value::Null))
                    };
                    let start_ns: i64 = row.get(6)?;
                    let duration_ns: i64 = row.get(7)?;
                    Ok(Span {
                        trace_id: row.get(0)?,
                        span_id: row.get(1)?,
                        parent_id: row.get(2)?,
                        service: row.get(3)?,
                        name: row.get(4)?,
                        kind: row.get(5)?,
                        start: rfc3339_nanos(start_ns),
                        duration_ms: millis(duration_ns),
                        self_time_ms: millis(duration_ns),
                        status: row.get(8)?,
                        status_message: row.get(9)?,
                        user_id: row.get(10)?,
                        attributes: json(11)?,
                        events: match json(12)? {
                            serde_json::Value::Null => serde_json::Value::Array(Vec::new()),
                            events => events,
                        },
                        resource: json(13)?,
                        children: Vec::new(),
                        start_ns,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            if spans.is_empty() {
                return Ok(None);
            }
            let logs = crate::logs::search(
                db,
                &crate::logs::Search { trace_id: Some(trace_id.clone()), limit: 1000, ..Default::default() },
            )
            .map(|found| found.records)
            .unwrap_or_default();
            Ok(Some(tree(trace_id, spans, logs)))
        })
        .await
    }

    /// Traces with a span matching the search, newest first.
    pub async fn search_traces(&self, search: TraceSearch) -> Result<Vec<TraceSummary>, StorageError> {
        self.read(move |db| {
            let mut conditions = Vec::new();
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            let mut bind = |condition: &str, value: rusqlite::types::Value| {
                values.push(value);
                conditions.push(condition.replace('?', &format!("?{}", values.len())));
            };
            if let Some(service) = &search.service {
                bind("service = ?", service.clone().into());
            }
            if let Some(operation) = &search.operation {
                bind("name = ?", operation.clone().into());
            }
            let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
            if let Some(min) = search.min_duration {
                bind("duration_ns >= ?", nanos(min).into());
            }
            if let Some(max) = search.max_duration {
                bind("duration_ns <= ?", nanos(max).into());
            }
            if let Some(user) = &search.user_id {
                bind("user_id = ?", user.clone().into());
            }
            let since_epoch = |t: SystemTime| to_millis(t).saturating_mul(1_000_000);
            if let Some(from) = search.from {
                bind("start_ns >= ?", since_epoch(from).into());
            }
            if let Some(to) = search.to {
                bind("start_ns <= ?", since_epoch(to).into());
            }
            match search.error {
                Some(true) => conditions.push("status = 'error'".into()),
                Some(false) => {
                    conditions.push("trace_id NOT IN (SELECT trace_id FROM spans WHERE status = 'error')".into())
                }
                None => {}
            }
            let filter =
                if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
            values.push(sql_count(search.limit).into());
            let sql = format!(
                "WITH found AS (SELECT trace_id, MAX(start_ns) AS latest FROM spans {filter}
                                GROUP BY trace_id ORDER BY latest DESC LIMIT ?{})
                 SELECT s.trace_id, s.span_id, s.parent_id, s.service, s.name, s.start_ns, s.duration_ns, s.status
                 FROM found JOIN spans AS s ON s.trace_id = found.trace_id
                 ORDER BY found.latest DESC, s.trace_id, s.start_ns",
                values.len()
            );
            let mut statement = db.prepare(&sql)?;
            let mut rows = statement.query(params_from_iter(values))?;
            let mut found: Vec<(TraceSummary, i64, i64, bool)> = Vec::new();
            while let Some(row) = rows.next()? {
                let trace_id: String = row.get(0)?;
                let parent: Option<String> = row.get(2)?;
                let service: String = row.get(3)?;
                let name: String = row.get(4)?;
                let (start, duration): (i64, i64) = (row.get(5)?, row.get(6)?);
                let error = row.get::<_, String>(7)? == "error";
                if found.last().is_none_or(|(t, ..)| t.trace_id != trace_id) {
                    found.push((
                        TraceSummary {
                            trace_id,
                            service: service.clone(),
                            operation: name.clone(),
                            start: rfc3339_nanos(start),
                            duration_ms: 0.0,
                            span_count: 0,
                            error_count: 0,
                            services: Vec::new(),
                        },
                        start,
                        start,
                        parent.is_none(),
                    ));
                }
                let (summary, first, last, has_root) = found.last_mut().expect("pushed above");
                if parent.is_none() && !*has_root {
                    (summary.service, summary.operation, *has_root) = (service.clone(), name, true);
                }
                summary.span_count += 1;
                summary.error_count += u64::from(error);
                *last = (*last).max(start.saturating_add(duration));
                summary.duration_ms = millis(*last - *first);
                if !summary.services.contains(&service) {
                    summary.services.push(service);
                }
            }
            Ok(found.into_iter().map(|(summary, ..)| summary).collect())
        })
        .await
    }

    /// Per operation latency and errors over the spans that started in the window, and the slowest operations
    /// with the spans that dominate them.
    pub async fn span_performance(
        &self,
        window: Duration,
    ) -> Result<(Vec<OperationPerformance>, Vec<SlowOperation>), StorageError> {
        let now = SystemTime::now();
        let from = to_millis(now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH)).saturating_mul(1_000_000);
        let minutes = (window.as_secs_f64() / 60.0).max(1.0 / 60.0);
        self.read(move |db| {
            let mut statement = db.prepare(
                "SELECT trace_id, span_id, parent_id, service, name, duration_ns, status, start_ns FROM spans
                 WHERE start_ns >= ?1 ORDER BY start_ns DESC LIMIT ?2",
            )?;
            struct Row {
                trace: String,
                span: String,
                parent: Option<String>,
                operation: (String, String),
                duration: i64,
                error: bool,
                start: i64,
            }
            let rows: Vec<Row> = statement
                .query_map(rusqlite::params![from, MAX_PROFILED], |row| {
                    Ok(Row {
                        trace: row.get(0)?,
                        span: row.get(1)?,
                        parent: row.get(2)?,
                        operation: (row.get(3)?, row.get(4)?),
                        duration: row.get(5)?,
                        error: row.get::<_, String>(6)? == "error",
                        start: row.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let index: HashMap<(&str, &str), usize> =
                rows.iter().enumerate().map(|(i, r)| ((r.trace.as_str(), r.span.as_str()), i)).collect();
            let parents: Vec<Option<usize>> = rows
                .iter()
                .map(|r| r.parent.as_deref().and_then(|p| index.get(&(r.trace.as_str(), p)).copied()))
                .collect();
            let shape: Vec<(i64, i64, Option<usize>)> =
                rows.iter().zip(&parents).map(|(r, p)| (r.start, r.duration, *p)).collect();
            let own = self_times(&shape);
            let mut children: Vec<Vec<usize>> = vec![Vec::new(); rows.len()];
            for (i, parent) in parents.iter().enumerate() {
                if let Some(parent) = parent {
                    children[*parent].push(i);
                }
            }
            let mut by_operation: BTreeMap<&(String, String), Vec<usize>> = BTreeMap::new();
            for (i, row) in rows.iter().enumerate() {
                by_operation.entry(&row.operation).or_default().push(i);
            }
            let mut operations = Vec::new();
            for (operation, spans) in &by_operation {
                let mut durations: Vec<f64> = spans.iter().map(|&i| millis(rows[i].duration)).collect();
                durations.sort_by(f64::total_cmp);
                let count = durations.len();
                let errors = spans.iter().filter(|&&i| rows[i].error).count();
                operations.push(OperationPerformance {
                    service: operation.0.clone(),
                    operation: operation.1.clone(),
                    count: count as u64,
                    errors: errors as u64,
                    error_rate: errors as f64 / count as f64,
                    throughput_per_minute: count as f64 / minutes,
                    mean_ms: durations.iter().sum::<f64>() / count as f64,
                    p50_ms: crate::performance::percentile(&durations, 0.50),
                    p95_ms: crate::performance::percentile(&durations, 0.95),
                    p99_ms: crate::performance::percentile(&durations, 0.99),
                    max_ms: durations[count - 1],
                    mean_self_ms: spans.iter().map(|&i| millis(own[i])).sum::<f64>() / count as f64,
                });
            }
            let mut slow: Vec<&OperationPerformance> = operations.iter().collect();
            slow.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms));
            let slowest = slow
                .into_iter()
                .take(SLOWEST)
                .map(|operation| {
                    let key = (operation.service.clone(), operation.operation.clone());
                    let mut time: BTreeMap<&(String, String), i64> = BTreeMap::new();
                    let mut total = 0i64;
                    for &top in &by_operation[&key] {
                        // The span's subtree, each span's self time to its operation. A nested span of the same
                        // operation is counted within its ancestor's.
                        let mut ancestor = parents[top];
                        let mut nested = false;
                        for _ in 0..MAX_DEPTH {
                            let Some(i) = ancestor else { break };
                            if rows[i].operation == key {
                                nested = true;
                                break;
                            }
                            ancestor = parents[i];
                        }
                        if nested {
                            continue;
                        }
                        total += rows[top].duration;
                        let mut stack = vec![top];
                        while let Some(i) = stack.pop() {
                            *time.entry(&rows[i].operation).or_default() += own[i];
                            stack.extend(&children[i]);
                        }
                    }
                    let mut dominated_by: Vec<SelfTime> = time
                        .into_iter()
                        .map(|((service, name), nanos)| SelfTime {
                            service: service.clone(),
                            operation: name.clone(),
                            self_ms: millis(nanos),
                            share: if total > 0 { nanos as f64 / total as f64 } else { 0.0 },
                        })
                        .collect();
                    dominated_by.sort_by(|a, b| b.self_ms.total_cmp(&a.self_ms));
                    dominated_by.truncate(DOMINANT);
                    SlowOperation {
                        service: key.0,
                        operation: key.1,
                        p95_ms: operation.p95_ms,
                        count: operation.count,
                        dominated_by,
                    }
                })
                .collect();
            Ok((operations, slowest))
        })
        .await
    }
}

/// The spans of one trace (by start time) as trees, with self times, and its summary.
fn tree(trace_id: String, spans: Vec<Span>, logs: Vec<StoredRecord>) -> Trace {
    let index: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
    let parents: Vec<Option<usize>> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| s.parent_id.as_deref().and_then(|p| index.get(p).copied()).filter(|p| *p != i))
        .collect();
    let shape: Vec<(i64, i64, Option<usize>)> =
        spans.iter().zip(&parents).map(|(s, p)| (s.start_ns, (s.duration_ms * 1e6).round() as i64, *p)).collect();
    let own = self_times(&shape);
    let first = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let last = shape.iter().map(|(start, duration, _)| start.saturating_add(*duration)).max().unwrap_or(first);
    let mut services: Vec<String> = spans.iter().map(|s| s.service.clone()).collect();
    services.sort();
    services.dedup();
    let span_count = spans.len();
    let error_count = spans.iter().filter(|s| s.status == "error").count();
    // Children are attached from the last span back, so every span is complete before its parent takes it; a
    // parent cycle (a malformed export) leaves its spans as roots.
    let mut slots: Vec<Option<Span>> = spans
        .into_iter()
        .zip(&own)
        .map(|(mut span, own)| {
            span.self_time_ms = millis(*own);
            Some(span)
        })
        .collect();
    let depths = depths(&parents);
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(depths[i]));
    for i in order {
        if let Some(parent) = parents[i]
            && (1..=MAX_DEPTH).contains(&depths[i])
            && let Some(child) = slots[i].take()
            && let Some(parent) = slots[parent].as_mut()
        {
            parent.children.push(child);
        }
    }
    let mut roots: Vec<Span> = slots.into_iter().flatten().collect();
    sort_children(&mut roots);
    Trace {
        trace_id,
        start: rfc3339_nanos(first),
        duration_ms: millis(last - first),
        span_count,
        error_count,
        services,
        roots,
        logs: logs.into_iter().rev().collect(),
    }
}

/// How many ancestors each span has; 0 for a span in a parent cycle. Each span is walked once.
fn depths(parents: &[Option<usize>]) -> Vec<usize> {
    let mut known: Vec<Option<usize>> = vec![None; parents.len()];
    let mut on_path = vec![false; parents.len()];
    for start in 0..parents.len() {
        let mut path = Vec::new();
        let mut at = Some(start);
        // The depth where the walk stopped: a root's parent (-1 as 0 ancestors above), a known span, or a cycle.
        let (base, cycle) = loop {
            match at {
                None => break (0, false),
                Some(i) if known[i].is_some() => break (known[i].unwrap_or(0) + 1, false),
                Some(i) if on_path[i] => break (0, true),
                Some(i) => {
                    on_path[i] = true;
                    path.push(i);
                    at = parents[i];
                }
            }
        };
        for (steps, i) in path.iter().rev().enumerate() {
            on_path[*i] = false;
            known[*i] = Some(if cycle { 0 } else { base + steps });
        }
    }
    known.into_iter().map(Option::unwrap_or_default).collect()
}

fn sort_children(spans: &mut [Span]) {
    spans.sort_by_key(|s| s.start_ns);
    for span in spans {
        sort_children(&mut span.children);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_are_counted_once_and_cycles_are_roots() {
        // 0 <- 1 <- 2, 3 alone, 4 <-> 5 a cycle, 6 under the cycle.
        let parents = [None, Some(0), Some(1), None, Some(5), Some(4), Some(5)];
        assert_eq!(depths(&parents), vec![0, 1, 2, 0, 0, 0, 1]);
        let chain: Vec<Option<usize>> = (0..100_000usize).map(|i| i.checked_sub(1)).collect();
        assert_eq!(depths(&chain)[99_999], 99_999);
    }

    #[test]
    fn self_time_leaves_out_what_children_cover_once() {
        // A 100 ns parent with children at 10–40 and 30–60 (overlapping) and one running past its end (90–120).
        let spans = [(0, 100, None), (10, 30, Some(0)), (30, 30, Some(0)), (90, 30, Some(0))];
        assert_eq!(self_times(&spans), vec![100 - 50 - 10, 30, 30, 30]);
    }
}
