//! The SQL of traces: spans written (user ids pseudonymized, attributes redacted), a trace read back with the log
//! records that carry its id, traces searched, and the spans the profile and the latency series read.

use std::time::{Duration, SystemTime};

use crate::checks::latency::{self, Item, LatencySeries, MAX_SERIES_ITEMS, Window};
use crate::logs::search::Search;
use crate::storage::sql::{self, Engine, Value, params};
use crate::storage::{Privacy, Storage, StorageError, sql_count, to_millis};
use crate::traces::otlp::USER_ATTRIBUTES;
use crate::traces::profile::{MAX_PROFILED, OperationPerformance, ProfiledSpan, SlowOperation, profile};
use crate::traces::tree::tree;
use crate::traces::{MAX_TRACE_SPANS, NewSpan, Span, Trace, TraceSearch, TraceSummary, millis, rfc3339_nanos};

/// The user id attributes of a map, as pseudonyms.
fn pseudonymize_users(privacy: &Privacy, map: &mut serde_json::Map<String, serde_json::Value>) {
    for key in USER_ATTRIBUTES {
        if let Some(value) = map.get_mut(key) {
            let raw = match &*value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            *value = serde_json::Value::String(privacy.user(&raw));
        }
    }
}

impl Storage {
    /// Store spans (a span received again replaces the one stored); returns once they are committed. User ids are
    /// pseudonymized and attributes redacted on the way.
    pub async fn write_spans(&self, mut spans: Vec<NewSpan>) -> Result<usize, StorageError> {
        let privacy = self.privacy().clone();
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
            // A span is one row per trace and span id (on PostgreSQL, whose partitions are by time, and start).
            let key = match db.engine() {
                Engine::Sqlite => "trace_id, span_id",
                Engine::Postgres => "trace_id, span_id, start_ns",
            };
            for s in &spans {
                let events = (!s.events.is_empty()).then(|| serde_json::Value::from(s.events.clone()).to_string());
                // A span without a user takes the user its trace's stored spans have.
                db.execute(
                    &format!("INSERT INTO spans (trace_id, span_id, parent_id, service, name, kind, start_ns, duration_ns, status,
                                        status_message, user_id, attributes, events, resource)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                             COALESCE(?11, (SELECT user_id FROM spans WHERE trace_id = ?1 AND user_id IS NOT NULL LIMIT 1)),
                             ?12, ?13, ?14)
                     ON CONFLICT ({key}) DO UPDATE SET
                         parent_id = excluded.parent_id, service = excluded.service, name = excluded.name,
                         kind = excluded.kind, start_ns = excluded.start_ns, duration_ns = excluded.duration_ns,
                         status = excluded.status, status_message = excluded.status_message,
                         user_id = excluded.user_id, attributes = excluded.attributes, events = excluded.events,
                         resource = excluded.resource"),
                    params![
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
                    ],
                )?;
            }
            // Spans and AI usage of the same trace stored earlier without a user (exporters send a request's inner
            // spans before the span that names the user) take it now.
            let users: std::collections::BTreeSet<(&str, &str)> =
                spans.iter().filter_map(|s| Some((s.trace_id.as_str(), s.user_id.as_deref()?))).collect();
            for (trace, user) in users {
                for table in ["spans", "events", "logs"] {
                    db.execute(
                        &format!("UPDATE {table} SET user_id = ?2 WHERE trace_id = ?1 AND user_id IS NULL"),
                        params![trace, user],
                    )?;
                }
            }
            Ok(spans.len())
        })
        .await
    }

    /// One trace as a tree, with its log records; `None` when no span of it is stored.
    pub async fn trace(&self, trace_id: String) -> Result<Option<Trace>, StorageError> {
        self.read(move |db| {
            let spans: Vec<Span> = db.query_map(
                "SELECT trace_id, span_id, parent_id, service, name, kind, start_ns, duration_ns, status,
                        status_message, user_id, attributes, events, resource
                 FROM spans WHERE trace_id = ?1 ORDER BY start_ns, id LIMIT ?2",
                params![trace_id, sql_count(MAX_TRACE_SPANS as u64)],
                |row| {
                    let json = |i: usize| -> sql::Result<serde_json::Value> {
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
                },
            )?;
            if spans.is_empty() {
                return Ok(None);
            }
            let logs = crate::logs::store::search(
                db,
                &Search { trace_id: Some(trace_id.clone()), limit: 1000, ..Default::default() },
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
            let mut values: Vec<Value> = Vec::new();
            let mut bind = |condition: &str, value: Value| {
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
            let mut found: Vec<(TraceSummary, i64, i64, bool)> = Vec::new();
            db.query_each(&sql, values, |row| {
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
                Ok(true)
            })?;
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
            let rows: Vec<ProfiledSpan> = db.query_map(
                "SELECT trace_id, span_id, parent_id, service, name, duration_ns, status, start_ns FROM spans
                 WHERE start_ns >= ?1 ORDER BY start_ns DESC LIMIT ?2",
                params![from, MAX_PROFILED],
                |row| {
                    Ok(ProfiledSpan {
                        trace: row.get(0)?,
                        span: row.get(1)?,
                        parent: row.get(2)?,
                        operation: (row.get(3)?, row.get(4)?),
                        duration: row.get(5)?,
                        error: row.get::<_, String>(6)? == "error",
                        start: row.get(7)?,
                    })
                },
            )?;
            Ok(profile(&rows, minutes))
        })
        .await
    }

    /// Latency percentiles and counts of one service's operation over a window, in its steps.
    pub async fn span_latency(
        &self,
        service: String,
        operation: String,
        window: Window,
    ) -> Result<LatencySeries, StorageError> {
        self.read(move |db| {
            let (from, to) = (window.first.saturating_mul(1_000_000), window.to.saturating_mul(1_000_000));
            let items: Vec<Item> = db.query_map(
                "SELECT start_ns / 1000000, duration_ns / 1e6, status = 'error' FROM spans
                 WHERE service = ?1 AND name = ?2 AND start_ns >= ?3 AND start_ns <= ?4
                 ORDER BY start_ns DESC LIMIT ?5",
                params![service, operation, from, to, MAX_SERIES_ITEMS],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(latency::series(window, items))
        })
        .await
    }
}
