//! The SQL of what rules read: the samples of the series a query matches, and log records counted as series.

use crate::alerting::data::{Labels, MAX_SAMPLES, MAX_SERIES, is_log_metric};
use crate::runtime::MetricQuery;
use crate::storage::sql::{self, Db, params};
use crate::storage::{Storage, StorageError};

impl Storage {
    /// The series a rule's query matches, each with its samples in the window, oldest first (for a log metric: the
    /// count of records).
    pub async fn rule_series(
        &self,
        query: MetricQuery,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Labels, Vec<f64>)>, StorageError> {
        self.read(move |db| {
            if is_log_metric(&query.metric) {
                return read_logs(db, &query, from, to);
            }
            let matching: Vec<(i64, Labels)> = db
                .query_map("SELECT id, labels FROM series WHERE name = ?1 ORDER BY id", [&query.metric], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })?
                .into_iter()
                .filter_map(|(id, labels)| Some((id, serde_json::from_str::<Labels>(&labels).ok()?)))
                .filter(|(_, labels)| query.matchers.iter().all(|m| labels.contains(m)))
                .take(MAX_SERIES)
                .collect();
            let mut out = Vec::with_capacity(matching.len());
            for (id, labels) in matching {
                let mut values: Vec<f64> = db.query_map(
                    "SELECT value FROM samples WHERE series_id = ?1 AND ts > ?2 AND ts <= ?3 ORDER BY ts DESC LIMIT ?4",
                    params![id, from, to, MAX_SAMPLES],
                    |row| row.get(0),
                )?;
                values.reverse();
                if !values.is_empty() {
                    out.push((labels, values));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Log records of the window as series: per level for `log_records_total`, one for `log_errors_total`; the
/// matchers (`level`, `service`, `source`) filter them.
fn read_logs(db: &Db, query: &MetricQuery, from: i64, to: i64) -> sql::Result<Vec<(Labels, Vec<f64>)>> {
    let mut filters = vec!["ts > ?1".to_string(), "ts <= ?2".to_string()];
    let mut values: Vec<String> = Vec::new();
    for (label, value) in &query.matchers {
        let column = match label.as_str() {
            "level" | "service" | "source" => label.as_str(),
            // A label no record has matches nothing.
            _ => return Ok(Vec::new()),
        };
        values.push(value.clone());
        filters.push(format!("{column} = ?{}", values.len() + 2));
    }
    let errors = query.metric == "log_errors_total";
    if errors {
        filters.push("level IN ('error', 'critical')".into());
    }
    let sql = format!("SELECT level, COUNT(*) FROM logs WHERE {} GROUP BY level", filters.join(" AND "));
    let mut parameters: Vec<&dyn sql::Param> = vec![&from, &to];
    parameters.extend(values.iter().map(|v| v as &dyn sql::Param));
    let counts: Vec<(String, i64)> = db.query_map(&sql, parameters.as_slice(), |row| Ok((row.get(0)?, row.get(1)?)))?;
    let records = |n: i64| vec![n as f64];
    if errors {
        let total: i64 = counts.iter().map(|(_, n)| n).sum();
        return Ok(if total == 0 { Vec::new() } else { vec![(query.matchers.clone(), records(total))] });
    }
    Ok(counts
        .into_iter()
        .map(|(level, n)| {
            let mut labels = query.matchers.clone();
            if !labels.iter().any(|(k, _)| k == "level") {
                labels.push(("level".into(), level));
            }
            labels.sort();
            (labels, records(n))
        })
        .collect())
}
