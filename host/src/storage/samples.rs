//! Metric samples: a series is a name and a set of labels; samples are written in the writer's groups (series ids
//! cached across them) or inside a capability's own transaction ([`insert_sample`]), and read back by name and labels, over a time range, raw or averaged into steps.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::sql::{self, Db, params};
use super::{Storage, StorageError, to_millis};

/// One metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    pub time: SystemTime,
    pub value: f64,
}

/// Series ids cached at most; past this the cache starts over (a plugin inventing label values must not grow the
/// host's memory without bound).
const SERIES_CACHE: usize = 100_000;

/// Series ids by name and canonical labels, cached across the writer's groups.
#[derive(Default)]
pub struct SeriesIds {
    ids: HashMap<(String, String), i64>,
}

impl SeriesIds {
    /// Write a sample, making its series when it is new.
    pub fn write(&mut self, db: &Db, sample: &Sample) -> sql::Result<()> {
        let id = self.id(db, &sample.name, &sample.labels)?;
        db.execute(
            "INSERT INTO samples (series_id, ts, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (series_id, ts) DO UPDATE SET value = excluded.value",
            params![id, to_millis(sample.time), sample.value],
        )?;
        Ok(())
    }

    /// Forget the cached ids (after a failed transaction, some may not exist).
    pub fn clear(&mut self) {
        self.ids.clear();
    }

    fn id(&mut self, db: &Db, name: &str, labels: &[(String, String)]) -> sql::Result<i64> {
        let labels = serde_json::to_string(labels).unwrap_or_default();
        let key = (name.to_string(), labels);
        if let Some(id) = self.ids.get(&key) {
            return Ok(*id);
        }
        db.execute("INSERT INTO series (name, labels) VALUES (?1, ?2) ON CONFLICT DO NOTHING", params![key.0, key.1])?;
        let id =
            db.query_row("SELECT id FROM series WHERE name = ?1 AND labels = ?2", params![key.0, key.1], |row| {
                row.get(0)
            })?;
        if self.ids.len() >= SERIES_CACHE {
            self.ids.clear();
        }
        self.ids.insert(key, id);
        Ok(id)
    }
}

/// Store one sample inside a transaction of one's own (the writer's groups use their own cache of series ids).
pub fn insert_sample(db: &Db, sample: &Sample) -> sql::Result<()> {
    SeriesIds::default().write(db, sample)
}

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
            db.query_map("SELECT name, COUNT(*) FROM series GROUP BY name ORDER BY name", [], |row| {
                Ok(MetricName { name: row.get(0)?, series: usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0) })
            })
        })
        .await
    }

    /// The series of one metric that match, with their points in the range.
    pub async fn series(&self, query: SeriesQuery) -> Result<SeriesPage, SeriesError> {
        let page = self
            .read(move |db| {
                let mut matching: Vec<(i64, Vec<(String, String)>)> = db
                    .query_map("SELECT id, labels FROM series WHERE name = ?1", [&query.name], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                    })?
                    .into_iter()
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
                            db.query_map(
                                "SELECT (ts / ?4) * ?4 AS bucket, AVG(value) FROM samples
                                 WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 GROUP BY bucket ORDER BY bucket LIMIT ?5",
                                params![id, from, to, step, MAX_POINTS as i64 + 1],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )?
                        }
                        None => {
                            db.query_map(
                                "SELECT ts, value FROM samples WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 ORDER BY ts LIMIT ?4",
                                params![id, from, to, MAX_POINTS as i64 + 1],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )?
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
