//! The SQL of logs: records written with a full-text index (FTS5, fed in the same transaction) and the read
//! offsets of tailed files, searched, counted and read back for the analyses.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::logs::analysis::{
    Aggregation, Analysis, Bucket, ErrorAnalysis, ErrorRow, MAX_ERRORS_GROUPED, Period, Security, Tally, UserActivity,
    UserCount, hours_ms, ranked, templates,
};
use crate::logs::search::{Found, Search, SearchError};
use crate::logs::tsquery;
use crate::logs::{FileMark, NewRecord, ReadTo, StoredRecord};
use crate::storage::sql::{self, Db, Engine, Param, SqlError, Value, params};
use crate::storage::{Storage, StorageError, rfc3339, sql_count, to_millis};

mod security;

use security::security;

/// Full-text matches past which a search walks an index in time order instead of sorting every match.
const MANY_MATCHES: i64 = 10_000;

/// Log records inserted by one statement on PostgreSQL (each takes [`LOG_COLUMNS`] parameters).
const ROWS_PER_INSERT: usize = 64;
/// The parameters of one log record's row.
const LOG_COLUMNS: usize = 13;

/// The values of one log record's row, its parameters numbered from `base + 1`: a record without a user id takes
/// the one its trace's spans carry, if any.
fn log_row(base: usize) -> String {
    let n = |i: usize| format!("?{}", base + i);
    let leading: Vec<String> = (1..=9).map(n).collect();
    let (user, trace) = (n(10), n(7));
    let user = format!(
        "COALESCE({user}, (SELECT user_id FROM spans WHERE trace_id = {trace} AND user_id IS NOT NULL LIMIT 1))"
    );
    format!("({}, {user}, {}, {}, {})", leading.join(", "), n(11), n(12), n(13))
}

/// Where PostgreSQL tells every node the id of the newest log record just committed.
pub const LOGS_CHANNEL: &str = "selfmon_logs";

impl Storage {
    /// Store records in one transaction, with how far their file has been read when they come from one; returns once
    /// they are committed.
    pub async fn write_logs(
        &self,
        mut records: Vec<NewRecord>,
        read_to: Option<ReadTo>,
    ) -> Result<usize, StorageError> {
        let privacy = self.privacy().clone();
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
                if let Some(ReadTo { source, mark }) = &read_to {
                    db.execute(
                        "INSERT INTO log_files (source, device, inode, path, \"offset\", head_len, head)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (source, device, inode) DO UPDATE SET path = excluded.path,
                             \"offset\" = excluded.\"offset\", head_len = excluded.head_len, head = excluded.head",
                        params![
                            source,
                            mark.device.cast_signed(),
                            mark.inode.cast_signed(),
                            mark.path,
                            mark.offset.cast_signed(),
                            mark.head_len.cast_signed(),
                            mark.head
                        ],
                    )?;
                }
                let (mut first, mut last) = (None, 0);
                // On PostgreSQL each statement is a round trip to the server: many rows go in one.
                let per_statement = if db.engine() == Engine::Postgres { ROWS_PER_INSERT } else { 1 };
                for chunk in records.chunks(per_statement) {
                    let times: Vec<i64> = chunk.iter().map(|r| to_millis(r.ts)).collect();
                    let mut values: Vec<&dyn Param> = Vec::with_capacity(chunk.len() * LOG_COLUMNS);
                    for (r, ts) in chunk.iter().zip(&times) {
                        values.extend([
                            ts as &dyn Param,
                            &r.level,
                            &r.source,
                            &r.service,
                            &r.logger,
                            &r.message,
                            &r.trace_id,
                            &r.span_id,
                            &r.correlation_id,
                            &r.user_id,
                            &r.fields,
                            &r.parsed,
                            &r.error,
                        ]);
                    }
                    let rows: Vec<String> = (0..chunk.len()).map(|i| log_row(i * LOG_COLUMNS)).collect();
                    let sql = format!(
                        "INSERT INTO logs (ts, level, source, service, logger, message, trace_id, span_id,
                                           correlation_id, user_id, fields, parsed, error)
                         VALUES {} RETURNING id",
                        rows.join(", ")
                    );
                    db.query_each(&sql, &values[..], |row| {
                        let id: i64 = row.get(0)?;
                        first = Some(first.map_or(id, |first: i64| first.min(id)));
                        last = last.max(id);
                        Ok(true)
                    })?;
                }
                // PostgreSQL keeps each record's words in a column of its own.
                if let Some(first) = first.filter(|_| db.engine() == Engine::Sqlite) {
                    db.execute(
                        "INSERT INTO logs_fts (rowid, message) SELECT id, message FROM logs WHERE id >= ?1 AND id <= ?2",
                        params![first, last],
                    )?;
                } else if first.is_some() {
                    // Live tails on every node follow (`cluster::relay`).
                    db.execute(&format!("SELECT pg_notify('{LOGS_CHANNEL}', ?1)"), params![last.to_string()])?;
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
        self.read(move |db| Ok(self::search(db, &search))).await?
    }

    /// The files a source has tailed, each with how far it was read.
    pub async fn file_marks(&self, source: String) -> Result<Vec<FileMark>, StorageError> {
        self.read(move |db| {
            db.query_map(
                "SELECT path, device, inode, \"offset\", head_len, head FROM log_files WHERE source = ?1",
                params![source],
                |row| {
                    let head: Vec<u8> = row.get(5)?;
                    Ok(FileMark {
                        path: row.get(0)?,
                        device: row.get::<_, i64>(1)?.cast_unsigned(),
                        inode: row.get::<_, i64>(2)?.cast_unsigned(),
                        offset: row.get::<_, i64>(3)?.unsigned_abs(),
                        head_len: row.get::<_, i64>(4)?.unsigned_abs(),
                        // Marks kept from before fingerprints have none (and a length of 0).
                        head: head.try_into().unwrap_or_default(),
                    })
                },
            )
        })
        .await
    }

    /// Forget a tailed file that is gone for good.
    pub async fn forget_file(&self, source: String, device: u64, inode: u64) -> Result<(), StorageError> {
        self.apply(move |db| {
            db.execute(
                "DELETE FROM log_files WHERE source = ?1 AND device = ?2 AND inode = ?3",
                params![source, device.cast_signed(), inode.cast_signed()],
            )?;
            Ok(())
        })
        .await
    }

    /// Record counts per `period` bucket, level and service over the last `hours`.
    pub async fn aggregate_logs(&self, hours: u64, period: Period) -> Result<Aggregation, StorageError> {
        let to = to_millis(SystemTime::now());
        let step = period.millis();
        let from = (to - hours_ms(hours)).div_euclid(step) * step;
        self.read(move |db| {
            let mut buckets: BTreeMap<i64, Tally> =
                (0..=(to - from) / step).map(|i| (from + i * step, Tally::default())).collect();
            db.query_each(
                "SELECT (ts / ?3) * ?3, level, COALESCE(service, '-'), COUNT(*) FROM logs
                 WHERE ts >= ?1 AND ts <= ?2 GROUP BY 1, 2, 3",
                params![from, to, step],
                |row| {
                    let (start, level, service, count): (i64, String, String, i64) =
                        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                    let count = count.unsigned_abs();
                    let bucket = buckets.entry(start).or_default();
                    bucket.total += count;
                    *bucket.levels.entry(level).or_default() += count;
                    *bucket.services.entry(service).or_default() += count;
                    Ok(true)
                },
            )?;
            let buckets = buckets
                .into_iter()
                .map(|(start, tally)| Bucket {
                    start: rfc3339(start),
                    total: tally.total,
                    by_level: ranked(tally.levels),
                    by_service: ranked(tally.services),
                })
                .collect();
            Ok(Aggregation { period, from: rfc3339(from), to: rfc3339(to), buckets })
        })
        .await
    }

    /// Everything [`Analysis`] holds, over the last `hours`.
    pub async fn analyse_logs(&self, hours: u64) -> Result<Analysis, StorageError> {
        let to = to_millis(SystemTime::now());
        let from = to - hours_ms(hours);
        self.read(move |db| {
            let mut levels = BTreeMap::new();
            let mut services = BTreeMap::new();
            let mut total = 0;
            db.query_each(
                "SELECT level, COALESCE(service, '-'), COUNT(*) FROM logs WHERE ts >= ?1 AND ts <= ?2 GROUP BY 1, 2",
                params![from, to],
                |row| {
                    let count = row.get::<_, i64>(2)?.unsigned_abs();
                    total += count;
                    *levels.entry(row.get::<_, String>(0)?).or_insert(0) += count;
                    *services.entry(row.get::<_, String>(1)?).or_insert(0) += count;
                    Ok(true)
                },
            )?;
            let unparsed: i64 = db.query_row(
                "SELECT COUNT(*) FROM logs WHERE ts >= ?1 AND ts <= ?2 AND parsed = 0",
                params![from, to],
                |r| r.get(0),
            )?;
            Ok(Analysis {
                hours,
                from: rfc3339(from),
                to: rfc3339(to),
                total_records: total,
                unparsed: unparsed.unsigned_abs(),
                by_level: ranked(levels),
                by_service: ranked(services),
                error_analysis: error_analysis(db, from, to)?,
                user_activity: user_activity(db, from, to)?,
                security: security(db, from, to)?,
            })
        })
        .await
    }

    /// Error templates over the last `window`, for `GET /v1/errors`.
    pub async fn log_errors(&self, window: Duration) -> Result<ErrorAnalysis, StorageError> {
        let to = to_millis(SystemTime::now());
        let from = to - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self.read(move |db| error_analysis(db, from, to)).await
    }

    /// Security events over the last `hours`.
    pub async fn security_events(&self, hours: u64) -> Result<Security, StorageError> {
        let to = to_millis(SystemTime::now());
        let from = to - hours_ms(hours);
        self.read(move |db| security(db, from, to)).await
    }
}

/// Search records on a connection (the command line reads a database read-only this way). A search text the
/// engine cannot read is a [`SearchError::Syntax`].
pub fn search(db: &Db, search: &Search) -> Result<Found, SearchError> {
    let translated;
    let search = match (&search.text, db.engine()) {
        (Some(text), Engine::Postgres) => {
            translated =
                Search { text: Some(tsquery::translate(text).map_err(SearchError::Syntax)?), ..search.clone() };
            &translated
        }
        _ => search,
    };
    let mut records = search_records(db, search).map_err(|error| {
        if is_fts_syntax(&error) { SearchError::Syntax(fts_message(&error)) } else { StorageError::Query(error).into() }
    })?;
    let more = records.len() as u64 > search.limit;
    records.truncate(usize::try_from(search.limit).unwrap_or(usize::MAX));
    Ok(Found { records, more, offset: search.offset, limit: search.limit })
}

/// One more than `limit` records when there are more; on PostgreSQL, the search text is a `tsquery` already.
fn search_records(db: &Db, search: &Search) -> sql::Result<Vec<StoredRecord>> {
    let (offset, limit) = (search.offset, search.limit);
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    fn bind(conditions: &mut Vec<String>, values: &mut Vec<Value>, condition: &str, value: Value) {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    }
    // A live tail's next page reads forward from an id: the other conditions get a `+` so SQLite walks the ids
    // rather than another index.
    let sqlite = db.engine() == Engine::Sqlite;
    let plus = if search.after.is_some() && sqlite { "+" } else { "" };
    if let Some(text) = search.text.as_ref().filter(|_| !sqlite) {
        // PostgreSQL's planner chooses between the words' index and the others itself.
        bind(&mut conditions, &mut values, "l.words @@ to_tsquery('simple', ?)", text.clone().into());
    } else if let Some(text) = &search.text {
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
                params![text, MANY_MATCHES],
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
    db.query_map(&sql, values, |row| {
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
    })
}

/// Whether SQLite refused an FTS5 query for its syntax.
fn is_fts_syntax(error: &SqlError) -> bool {
    let text = error.to_string();
    text.contains("fts5: syntax error")
        || text.contains("unterminated string")
        || text.contains("no such column")
        || text.contains("unknown special query")
}

fn fts_message(error: &SqlError) -> String {
    let text = error.to_string();
    text.strip_prefix("fts5: ").unwrap_or(&text).to_string()
}

/// The id of the newest record, on a connection of one's own.
pub fn head(db: &Db) -> sql::Result<i64> {
    db.query_row("SELECT COALESCE(MAX(id), 0) FROM logs", [], |r| r.get(0))
}

fn error_analysis(db: &Db, from: i64, to: i64) -> sql::Result<ErrorAnalysis> {
    let limit = i64::try_from(MAX_ERRORS_GROUPED).unwrap_or(i64::MAX);
    // The start of a message and its end (a traceback's exception line) are all a template needs.
    let tail = match db.engine() {
        Engine::Sqlite => "substr(message, -512)",
        Engine::Postgres => "right(message, 512)",
    };
    let rows = db.query_map(
        &format!(
            "SELECT ts, service, user_id, substr(message, 1, 2048), length(message) > 2048, {tail}
             FROM logs WHERE level IN ('error', 'critical') AND ts >= ?1 AND ts <= ?2 ORDER BY ts DESC LIMIT ?3"
        ),
        params![from, to, limit],
        |row| {
            let (head, long, tail): (String, bool, String) = (row.get(3)?, row.get(4)?, row.get(5)?);
            let message = if long { format!("{head}\n…\n{tail}") } else { head };
            Ok(ErrorRow { ts: row.get(0)?, service: row.get(1)?, user: row.get(2)?, message })
        },
    )?;
    let mut services = BTreeMap::new();
    let mut total = 0;
    db.query_each(
        "SELECT COALESCE(service, '-'), COUNT(*) FROM logs
         WHERE level IN ('error', 'critical') AND ts >= ?1 AND ts <= ?2 GROUP BY 1",
        params![from, to],
        |row| {
            let count = row.get::<_, i64>(1)?.unsigned_abs();
            total += count;
            services.insert(row.get::<_, String>(0)?, count);
            Ok(true)
        },
    )?;
    let minutes = ((to - from) as f64 / 60_000.0).max(1.0 / 60.0);
    Ok(ErrorAnalysis {
        total_errors: total,
        errors_per_minute: total as f64 / minutes,
        by_service: ranked(services),
        truncated: total > rows.len() as u64,
        templates: templates(&rows, from, to),
    })
}

fn user_activity(db: &Db, from: i64, to: i64) -> sql::Result<UserActivity> {
    let mut users: Vec<UserCount> = db.query_map(
        "SELECT user_id, COUNT(*), SUM(CASE WHEN level IN ('error', 'critical') THEN 1 ELSE 0 END) FROM logs
         WHERE user_id IS NOT NULL AND ts >= ?1 AND ts <= ?2 GROUP BY user_id",
        params![from, to],
        |row| {
            Ok(UserCount {
                user_id: row.get(0)?,
                records: row.get::<_, i64>(1)?.unsigned_abs(),
                errors: row.get::<_, i64>(2)?.unsigned_abs(),
            })
        },
    )?;
    let records_with_user = users.iter().map(|u| u.records).sum();
    let unique_users = users.len() as u64;
    users.sort_by(|a, b| b.records.cmp(&a.records).then_with(|| a.user_id.cmp(&b.user_id)));
    users.truncate(10);
    Ok(UserActivity { unique_users, records_with_user, top_users: users })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn record(ts_millis: u64, level: &'static str, message: String) -> NewRecord {
        NewRecord::plain(UNIX_EPOCH + Duration::from_millis(ts_millis), level, "app".into(), message)
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
