//! The SQL of outgoing webhooks: subscriptions and their delivery attempts; and how any delivery attempt is read
//! back ([`attempt_values`], [`attempt_row`]), for alert channels' attempts too.

use std::time::SystemTime;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter};

use crate::events::delivery::Attempt;
use crate::events::webhooks::{Delivery, MAX_WEBHOOKS, Webhook, WebhookRequest};
use crate::storage::{ChangeError, Page, Storage, StorageError, from_millis, rfc3339, sql_count, to_millis};

impl Storage {
    pub async fn create_webhook(&self, request: WebhookRequest) -> Result<Webhook, ChangeError> {
        let now = SystemTime::now();
        let events = serde_json::to_string(&request.events).unwrap_or_default();
        let created = self
            .apply(move |db| {
                let count: i64 = db.query_row("SELECT COUNT(*) FROM webhooks", [], |r| r.get(0))?;
                if count >= MAX_WEBHOOKS {
                    return Ok(None);
                }
                db.execute(
                    "INSERT INTO webhooks (url, events, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![request.url, events, request.secret, to_millis(now)],
                )?;
                Ok(Some(Webhook {
                    id: db.last_insert_rowid(),
                    url: request.url,
                    events: request.events,
                    created_at: rfc3339(to_millis(now)),
                }))
            })
            .await?;
        created.ok_or_else(|| ChangeError::Conflict(format!("there are {MAX_WEBHOOKS} webhooks already")))
    }

    pub async fn delete_webhook(&self, id: i64) -> Result<(), ChangeError> {
        let deleted = self.apply(move |db| db.execute("DELETE FROM webhooks WHERE id = ?1", [id])).await?;
        if deleted == 0 {
            Err(ChangeError::NotFound { code: "unknown_webhook", message: format!("no webhook with id {id}") })
        } else {
            Ok(())
        }
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StorageError> {
        self.read(|db| {
            let mut statement = db.prepare("SELECT id, url, events, created_at FROM webhooks ORDER BY id")?;
            let rows = statement.query_map([], |row| {
                Ok(Webhook {
                    id: row.get(0)?,
                    url: row.get(1)?,
                    events: serde_json::from_str(&row.get::<_, String>(2)?).unwrap_or_default(),
                    created_at: rfc3339(row.get(3)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Whether a webhook exists.
    pub async fn webhook_exists(&self, id: i64) -> Result<bool, StorageError> {
        self.read(move |db| db.query_row("SELECT COUNT(*) FROM webhooks WHERE id = ?1", [id], |r| r.get::<_, i64>(0)))
            .await
            .map(|count| count > 0)
    }

    /// A webhook's delivery attempts, newest first.
    pub async fn deliveries(&self, webhook: i64, offset: u64, limit: u64) -> Result<Page<Delivery>, StorageError> {
        self.read(move |db| {
            let total: i64 =
                db.query_row("SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = ?1", [webhook], |r| r.get(0))?;
            let mut statement = db.prepare(
                "SELECT id, event_id, event, attempt, at, status_code, outcome, error, duration_ms
                 FROM webhook_deliveries WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let rows = statement.query_map(params![webhook, sql_count(limit), sql_count(offset)], |row| {
                Ok(Delivery {
                    id: row.get(0)?,
                    event_id: row.get(1)?,
                    event: row.get(2)?,
                    attempt: attempt_row(row, 3)?,
                })
            })?;
            Ok(Page { items: rows.collect::<Result<_, _>>()?, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }

    /// The subscriptions to an event, with their secrets: for delivery only.
    pub async fn subscribers(&self, event: &'static str) -> Result<Vec<(i64, String, String)>, StorageError> {
        self.read(move |db| {
            let mut statement = db.prepare(
                "SELECT w.id, w.url, w.secret FROM webhooks AS w, json_each(w.events) AS e WHERE e.value = ?1",
            )?;
            let rows = statement.query_map([event], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    /// Store an attempt to deliver `event` to a webhook: whether it was stored (not when the webhook is gone).
    pub async fn record_delivery(
        &self,
        webhook: i64,
        event_id: String,
        event: &'static str,
        attempt: Attempt,
    ) -> Result<bool, StorageError> {
        let stored = self
            .apply(move |db| {
                db.execute(
                    "INSERT INTO webhook_deliveries
                     (webhook_id, event_id, event, attempt, at, status_code, outcome, error, duration_ms)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?1)",
                    params_from_iter(
                        [Value::from(webhook), Value::from(event_id), Value::from(event.to_string())]
                            .into_iter()
                            .chain(attempt_values(&attempt)),
                    ),
                )
            })
            .await?;
        Ok(stored > 0)
    }
}

/// A delivery attempt's columns `attempt, at, status_code, outcome, error, duration_ms`, to write after a row's
/// own.
pub fn attempt_values(attempt: &Attempt) -> [Value; 6] {
    [
        attempt.attempt.into(),
        to_millis(attempt.at).into(),
        attempt.status_code.into(),
        attempt.outcome.clone().into(),
        attempt.error.clone().into(),
        attempt.duration_ms.into(),
    ]
}

/// A delivery attempt from its row: `attempt, at, status_code, outcome, error, duration_ms` from column `first` on.
pub fn attempt_row(row: &rusqlite::Row, first: usize) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        attempt: row.get(first)?,
        at: from_millis(row.get(first + 1)?),
        status_code: row.get(first + 2)?,
        outcome: row.get(first + 3)?,
        error: row.get(first + 4)?,
        duration_ms: row.get(first + 5)?,
    })
}
