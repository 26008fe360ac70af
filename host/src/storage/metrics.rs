//! Reading metric series back: by name and labels, over a time range, raw or averaged into steps.

use std::time::{Duration, SystemTime};

use rusqlite::params;
use serde::Serialize;

use super::{Storage, StorageError, to_millis};

/// The most points one series may return; a longer answer needs a `step`.
pub const MAX_POINTS: usize = 10_000;
/// The most points one answer may hold, all its series together.
pub const MAX_TOTAL_POINTS: usize = 200_000;

/// Which samples to read.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub name: String,
    /// Labels a series must carry, exactly.
    pub matchers: Vec<(String, String)>,
    pub from: SystemTime,
    pub to: SystemTime,
    /// Average the samples into buckets of this width (aligned to the Unix epoch).
    pub step: Option<Duration>,
    /// Series to skip and to return, in a stable order (by labels).
    pub offset: usize,
    pub limit: usize,
}

/// One series and its points, `[unix milliseconds, value]`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeriesPoints {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// A page of series.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeriesPage {
    pub series: Vec<SeriesPoints>,
    /// Matching series in all.
    pub total: usize,
}

/// A metric name and how many series it has.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct MetricName {
    pub name: String,
    pub series: usize,
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("series `{series}` has more than {MAX_POINTS} points in that range: set `step` or narrow the range")]
    TooManyPoints { series: String },
    #[error("the answer would hold more than {MAX_TOTAL_POINTS} points: set `step`, narrow the range or lower `limit`")]
    TooManyInAll,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Storage {
    /// Every metric name with its number of series.
    pub async fn metric_names(&self) -> Result<Vec<MetricName>, StorageError> {
        self.read(|db| {
            let mut statement = db.prepare("SELECT name, COUNT(*) FROM series GROUP BY name ORDER BY name")?;
            let rows = statement.query_map([], |row| {
                Ok(MetricName { name: row.get(0)?, series: usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0) })
            })?;
            rows.collect()
        })
        .await
    }

    /// The series of one metric that match, with their points in the range.
    pub async fn series(&self, query: SeriesQuery) -> Result<SeriesPage, SeriesError> {
        let page = self
            .read(move |db| {
                let mut statement = db.prepare_cached("SELECT id, labels FROM series WHERE name = ?1")?;
                let mut matching: Vec<(i64, Vec<(String, String)>)> = statement
                    .query_map([&query.name], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
                    .filter_map(Result::ok)
                    .filter_map(|(id, labels)| Some((id, serde_json::from_str::<Vec<(String, String)>>(&labels).ok()?)))
                    .filter(|(_, labels)| query.matchers.iter().all(|m| labels.contains(m)))
                    .collect();
                matching.sort_by(|a, b| a.1.cmp(&b.1));
                let total = matching.len();
                let (from, to) = (to_millis(query.from), to_millis(query.to));
                let mut series = Vec::new();
                let mut points_in_all = 0;
                for (id, labels) in matching.into_iter().skip(query.offset).take(query.limit) {
                    if points_in_all > MAX_TOTAL_POINTS {
                        break;
                    }
                    let points = match query.step {
                        Some(step) => {
                            let step = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
                            let mut statement = db.prepare_cached(
                                "SELECT (ts / ?4) * ?4 AS bucket, AVG(value) FROM samples
                                 WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 GROUP BY bucket ORDER BY bucket LIMIT ?5",
                            )?;
                            statement
                                .query_map(params![id, from, to, step, MAX_POINTS as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))?
                                .collect::<rusqlite::Result<Vec<_>>>()?
                        }
                        None => {
                            let mut statement = db.prepare_cached(
                                "SELECT ts, value FROM samples WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 ORDER BY ts LIMIT ?4",
                            )?;
                            statement
                                .query_map(params![id, from, to, MAX_POINTS as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))?
                                .collect::<rusqlite::Result<Vec<_>>>()?
                        }
                    };
                    points_in_all += points.len();
                    series.push(SeriesPoints { name: query.name.clone(), labels: labels.into_iter().collect(), points });
                }
                Ok((SeriesPage { series, total }, points_in_all))
            })
            .await?;
        let (page, points_in_all) = page;
        if points_in_all > MAX_TOTAL_POINTS {
            return Err(SeriesError::TooManyInAll);
        }
        if let Some(long) = page.series.iter().find(|s| s.points.len() > MAX_POINTS) {
            let labels: Vec<String> = long.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            return Err(SeriesError::TooManyPoints { series: format!("{}{{{}}}", long.name, labels.join(",")) });
        }
        Ok(page)
    }
}
