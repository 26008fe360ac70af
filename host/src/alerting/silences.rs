//! Silences: label matchers and a time span during which matching alerts are not notified. They stay visible,
//! and say which silence holds them back.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::alerts::{ChangeError, Page};
use crate::storage::{Storage, StorageError, rfc3339, sql_count, to_millis};

/// The longest a silence may last.
const MAX_SPAN: Duration = Duration::from_secs(366 * 86_400);
/// Matchers per silence at most, and the longest label or value.
const MAX_MATCHERS: usize = 16;
const MATCHER_BYTES: usize = 256;
const COMMENT_BYTES: usize = 1024;

/// A silence as a caller sends it: `POST /v1/silences` and the `createSilence` mutation.
#[derive(Debug, Clone, Deserialize, async_graphql::InputObject, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[graphql(name = "SilenceInput")]
pub struct SilenceRequest {
    /// Labels an alert must carry, exactly, to be silenced: `{"check": "db"}`, `{"alertname": "slow_responses"}`.
    /// `alertname` and `rule` match the alert's name and its rule.
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    /// How long from `starts_at` (or now): `2h`, `30m`. Give this or `ends_at`.
    pub duration: Option<String>,
    /// RFC 3339; default now.
    pub starts_at: Option<String>,
    /// RFC 3339.
    pub ends_at: Option<String>,
    /// Why; required, as people reading the alert later need it.
    #[serde(default)]
    pub comment: String,
}

/// A stored silence.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Silence {
    pub id: i64,
    pub matchers: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: Option<String>,
    pub comment: String,
    /// pending (not started), active or expired.
    pub state: String,
}

/// A silence in force, as the engine matches it.
#[derive(Debug, Clone)]
pub struct Active {
    pub id: i64,
    matchers: BTreeMap<String, String>,
}

impl Active {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl SilenceRequest {
    /// The times the silence holds, or every problem with the request.
    pub fn validate(&self, now: SystemTime) -> Result<(SystemTime, SystemTime), Vec<String>> {
        let mut problems = Vec::new();
        if self.matchers.is_empty() {
            problems.push("`matchers` is empty: a silence of everything is not allowed".to_string());
        }
        if self.matchers.len() > MAX_MATCHERS {
            problems.push(format!("`matchers`: at most {MAX_MATCHERS}"));
        }
        if self.matchers.iter().any(|(k, v)| k.is_empty() || k.len() > MATCHER_BYTES || v.len() > MATCHER_BYTES) {
            problems
                .push(format!("`matchers`: labels must be 1 to {MATCHER_BYTES} bytes, values at most {MATCHER_BYTES}"));
        }
        if self.comment.trim().is_empty() {
            problems.push("`comment` is required: say why".into());
        } else if self.comment.len() > COMMENT_BYTES {
            problems.push(format!("`comment` is longer than {COMMENT_BYTES} bytes"));
        }
        let time = |name: &str, text: &Option<String>, problems: &mut Vec<String>| {
            text.as_deref().and_then(|t| {
                humantime::parse_rfc3339_weak(t)
                    .map_err(|_| problems.push(format!("`{name}`: `{t}` is not an RFC 3339 time")))
                    .ok()
            })
        };
        let starts = time("starts_at", &self.starts_at, &mut problems).unwrap_or(now);
        let ends = match (&self.duration, time("ends_at", &self.ends_at, &mut problems)) {
            (Some(_), Some(_)) => {
                problems.push("give `duration` or `ends_at`, not both".into());
                None
            }
            (Some(text), None) => match humantime::parse_duration(text) {
                Ok(span) => Some(starts + span),
                Err(_) => {
                    problems.push(format!("`duration`: `{text}` is not a duration such as `2h` or `30m`"));
                    None
                }
            },
            (None, Some(ends)) => Some(ends),
            (None, None) => {
                if self.ends_at.is_none() {
                    problems.push("`duration` or `ends_at` is required".into());
                }
                None
            }
        };
        if let Some(ends) = ends {
            match ends.duration_since(starts) {
                Ok(span) if span.is_zero() => problems.push("the silence ends when it starts".into()),
                Ok(span) if span > MAX_SPAN => problems.push("a silence may last at most 366 days".into()),
                Ok(_) => {}
                Err(_) => problems.push("the silence ends before it starts".into()),
            }
            if ends <= now {
                problems.push("the silence would already be over".into());
            }
        }
        match (problems.is_empty(), ends) {
            (true, Some(ends)) => Ok((starts, ends)),
            _ => Err(problems),
        }
    }
}

impl Storage {
    pub async fn create_silence(
        &self,
        request: SilenceRequest,
        span: (SystemTime, SystemTime),
        by: Option<String>,
    ) -> Result<Silence, StorageError> {
        let matchers = serde_json::to_string(&request.matchers).unwrap_or_default();
        let id = self
            .apply(move |db| {
                db.execute(
                    "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![matchers, to_millis(span.0), to_millis(span.1), by, request.comment],
                )?;
                Ok(db.last_insert_rowid())
            })
            .await?;
        Ok(self.silence(id).await?.expect("the silence just stored"))
    }

    pub async fn silence(&self, id: i64) -> Result<Option<Silence>, StorageError> {
        let now = to_millis(SystemTime::now());
        self.read(move |db| {
            db.query_row(
                "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences WHERE id = ?1",
                [id],
                |row| silence_row(row, now),
            )
            .optional()
        })
        .await
    }

    /// Silences newest first: those not yet over, and a page of the expired ones.
    pub async fn silences(&self, offset: u64, limit: u64) -> Result<Page<Silence>, StorageError> {
        let now = to_millis(SystemTime::now());
        self.read(move |db| {
            let total: i64 = db.query_row("SELECT COUNT(*) FROM silences", [], |r| r.get(0))?;
            let mut statement = db.prepare(
                "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences
                 ORDER BY ends_at <= ?3, id DESC LIMIT ?1 OFFSET ?2",
            )?;
            let items = statement
                .query_map(params![sql_count(limit), sql_count(offset), now], |row| silence_row(row, now))?
                .collect::<Result<_, _>>()?;
            Ok(Page { items, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }

    /// End a silence now (it stays in the history, expired).
    pub async fn expire_silence(&self, id: i64) -> Result<Silence, ChangeError> {
        let now = to_millis(SystemTime::now());
        let changed = self
            .apply(move |db| {
                db.execute(
                    "UPDATE silences SET starts_at = MIN(starts_at, ?2), ends_at = ?2 WHERE id = ?1 AND ends_at > ?2",
                    params![id, now],
                )
            })
            .await?;
        if changed == 0 {
            return Err(ChangeError::NotFound {
                code: "unknown_silence",
                message: format!("no silence {id} in force"),
            });
        }
        Ok(self.silence(id).await?.expect("the silence just changed"))
    }

    /// The silences in force at `now`.
    pub async fn active_silences(&self, now: SystemTime) -> Result<Vec<Active>, StorageError> {
        let now = to_millis(now);
        self.read(move |db| {
            let mut statement =
                db.prepare_cached("SELECT id, matchers FROM silences WHERE starts_at <= ?1 AND ends_at > ?1")?;
            let rows = statement.query_map([now], |row| {
                let matchers: String = row.get(1)?;
                Ok(Active { id: row.get(0)?, matchers: serde_json::from_str(&matchers).unwrap_or_default() })
            })?;
            rows.collect()
        })
        .await
    }

    /// The ids of active alerts someone acknowledged.
    pub async fn acknowledged_alerts(&self) -> Result<Vec<i64>, StorageError> {
        self.read(|db| {
            let mut statement =
                db.prepare_cached("SELECT id FROM alerts WHERE state != 'resolved' AND acknowledged_at IS NOT NULL")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }
}

fn silence_row(row: &rusqlite::Row, now: i64) -> rusqlite::Result<Silence> {
    let (starts, ends): (i64, i64) = (row.get(2)?, row.get(3)?);
    let state = if now < starts {
        "pending"
    } else if now < ends {
        "active"
    } else {
        "expired"
    };
    Ok(Silence {
        id: row.get(0)?,
        matchers: serde_json::from_str(&row.get::<_, String>(1)?).unwrap_or_default(),
        starts_at: rfc3339(starts),
        ends_at: rfc3339(ends),
        created_by: row.get(4)?,
        comment: row.get(5)?,
        state: state.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> SilenceRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn requests_are_checked_in_full() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ok = request(serde_json::json!({"matchers": {"check": "db"}, "duration": "2h", "comment": "migration"}));
        assert_eq!(ok.validate(now).unwrap(), (now, now + Duration::from_secs(7200)));
        let bad = request(serde_json::json!({"matchers": {}, "duration": "soon", "ends_at": "nope"}));
        let problems = bad.validate(now).unwrap_err();
        assert!(problems.iter().any(|p| p.contains("`matchers` is empty")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("`comment` is required")));
        assert!(problems.iter().any(|p| p.contains("`ends_at`: `nope`")));
        let past =
            request(serde_json::json!({"matchers": {"a": "b"}, "ends_at": "2020-01-01T00:00:00Z", "comment": "x"}));
        assert!(past.validate(now).unwrap_err().iter().any(|p| p.contains("ends before it starts")));
        let matcher = Active { id: 1, matchers: [("check".to_string(), "db".to_string())].into() };
        assert!(matcher.matches(&[("check".into(), "db".into()), ("alertname".into(), "x".into())].into()));
        assert!(!matcher.matches(&[("check".into(), "api".into())].into()));
    }
}
