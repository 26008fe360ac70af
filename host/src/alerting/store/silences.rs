//! The SQL of silences: created, read, expired, and the ones in force.

use std::time::SystemTime;

use crate::alerting::silences::{Active, Silence, SilenceRequest};
use crate::storage::sql::{self, OptionalExtension, Row, params};
use crate::storage::{ChangeError, Page, Storage, StorageError, rfc3339, sql_count, to_millis};

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
                db.query_row(
                    "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment) VALUES (?1, ?2, ?3, ?4, ?5)
                     RETURNING id",
                    params![matchers, to_millis(span.0), to_millis(span.1), by, request.comment],
                    |r| r.get(0),
                )
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
            let items = db.query_map(
                "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences
                 ORDER BY ends_at <= ?3, id DESC LIMIT ?1 OFFSET ?2",
                params![sql_count(limit), sql_count(offset), now],
                |row| silence_row(row, now),
            )?;
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
                    "UPDATE silences SET starts_at = CASE WHEN starts_at < ?2 THEN starts_at ELSE ?2 END, ends_at = ?2
                     WHERE id = ?1 AND ends_at > ?2",
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
            db.query_map("SELECT id, matchers FROM silences WHERE starts_at <= ?1 AND ends_at > ?1", [now], |row| {
                let matchers: String = row.get(1)?;
                Ok(Active { id: row.get(0)?, matchers: serde_json::from_str(&matchers).unwrap_or_default() })
            })
        })
        .await
    }
}

fn silence_row(row: &Row, now: i64) -> sql::Result<Silence> {
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
