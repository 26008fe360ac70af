//! The SQL of outgoing webhooks: subscriptions and their delivery attempts; and how any delivery attempt is read
//! back ([`attempt_values`], [`attempt_row`]), for alert channels' attempts too.

use std::time::SystemTime;

use crate::events::delivery::Attempt;
use crate::events::webhooks::{Delivery, MAX_WEBHOOKS, Webhook, WebhookRequest};
use crate::storage::sql::{self, Row, Value, params};
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
                let id = db.query_row(
                    "INSERT INTO webhooks (url, events, secret, created_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    params![request.url, events, request.secret, to_millis(now)],
                    |r| r.get(0),
                )?;
                Ok(Some(Webhook { id, url: request.url, events: request.events, created_at: rfc3339(to_millis(now)) }))
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
            db.query_map("SELECT id, url, events, created_at FROM webhooks ORDER BY id", [], |row| {
                Ok(Webhook {
                    id: row.get(0)?,
                    url: row.get(1)?,
                    events: serde_json::from_str(&row.get::<_, String>(2)?).unwrap_or_default(),
                    created_at: rfc3339(row.get(3)?),
                })
            })
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
            let items = db.query_map(
                "SELECT id, event_id, event, attempt, at, status_code, outcome, error, duration_ms
                 FROM webhook_deliveries WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
                params![webhook, sql_count(limit), sql_count(offset)],
                |row| {
                    Ok(Delivery {
                        id: row.get(0)?,
                        event_id: row.get(1)?,
                        event: row.get(2)?,
                        attempt: attempt_row(row, 3)?,
                    })
                },
            )?;
            Ok(Page { items, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }

    /// The subscriptions to an event, with their secrets: for delivery only.
    pub async fn subscribers(&self, event: &'static str) -> Result<Vec<(i64, String, String)>, StorageError> {
        self.read(move |db| {
            // A few webhooks at most: their event lists are read here rather than in each engine's JSON.
            let all = db.query_map("SELECT id, url, secret, events FROM webhooks ORDER BY id", [], |row| {
                Ok(((row.get(0)?, row.get(1)?, row.get(2)?), row.get::<_, String>(3)?))
            })?;
            Ok(all
                .into_iter()
                .filter(|(_, events)| {
                    serde_json::from_str::<Vec<String>>(events).is_ok_and(|e| e.iter().any(|e| e == event))
                })
                .map(|(subscriber, _)| subscriber)
                .collect())
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
                     SELECT id, CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS BIGINT), CAST(?5 AS BIGINT),
                            CAST(?6 AS BIGINT), CAST(?7 AS TEXT), CAST(?8 AS TEXT), CAST(?9 AS DOUBLE PRECISION)
                     FROM webhooks WHERE id = ?1",
                    [Value::from(webhook), Value::from(event_id), Value::from(event)]
                        .into_iter()
                        .chain(attempt_values(&attempt))
                        .collect::<Vec<_>>(),
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
pub fn attempt_row(row: &Row, first: usize) -> sql::Result<Attempt> {
    Ok(Attempt {
        attempt: row.get(first)?,
        at: from_millis(row.get(first + 1)?),
        status_code: row.get(first + 2)?,
        outcome: row.get(first + 3)?,
        error: row.get(first + 4)?,
        duration_ms: row.get(first + 5)?,
    })
}
