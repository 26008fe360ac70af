//! The outbox: notifications due and not yet known to be delivered. Each is written in the transaction that marks
//! its alerts notified and removed once it is delivered or given up, so a leader that stops between the two leaves
//! it for the next leader (or for itself, restarted) instead of losing it.

use std::time::SystemTime;

use crate::alerting::dispatch::{Notification, Status};
use crate::storage::sql::params;
use crate::storage::{Storage, StorageError, to_millis};

/// A notification the outbox holds.
pub struct Held {
    pub id: i64,
    /// The node sending it.
    pub node: String,
    /// `None` when its JSON no longer reads as a notification (written by another version).
    pub notification: Option<Notification>,
}

impl Storage {
    /// Mark the firing alerts of `due` notified and hold each notification in the outbox as `node`'s to send, in
    /// one transaction: their outbox ids, in order.
    pub async fn hold_notifications(&self, node: String, due: Vec<Notification>) -> Result<Vec<i64>, StorageError> {
        let now = to_millis(SystemTime::now());
        self.apply(move |db| {
            let mut ids = Vec::with_capacity(due.len());
            for notification in &due {
                for alert in notification.alerts.iter().filter(|a| a.status == Status::Firing) {
                    db.execute("UPDATE alerts SET notified = 1 WHERE id = ?1 AND notified = 0", [alert.id])?;
                }
                // Strings, numbers and string-keyed maps: nothing in a notification fails to serialise.
                let json = serde_json::to_string(notification).unwrap_or_default();
                ids.push(db.query_row(
                    "INSERT INTO alert_outbox (node, channel, group_key, notification, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                    params![node, notification.channel, notification.group_key, json, now],
                    |r| r.get(0),
                )?);
            }
            Ok(ids)
        })
        .await
    }

    /// The notifications the outbox holds for nodes other than `node` (or for none), oldest first.
    pub async fn held_notifications(&self, node: String) -> Result<Vec<Held>, StorageError> {
        let rows: Vec<(i64, String, String)> = self
            .read(move |db| {
                db.query_map(
                    "SELECT id, node, notification FROM alert_outbox WHERE node <> ?1 ORDER BY id",
                    params![node],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, node, json)| Held { id, node, notification: serde_json::from_str(&json).ok() })
            .collect())
    }

    /// Hand what the outbox holds for `node` to no node (an empty name, which no node has), for the leader to take
    /// over: done by a node as it starts, since whatever it holds then is an earlier run's. How many.
    pub async fn disown_notifications(&self, node: String) -> Result<usize, StorageError> {
        self.apply(move |db| db.execute("UPDATE alert_outbox SET node = '' WHERE node = ?1", params![node])).await
    }

    /// Take a held notification over from the node `from` for `to`: whether it was still `from`'s.
    pub async fn claim_notification(&self, id: i64, from: String, to: String) -> Result<bool, StorageError> {
        self.apply(move |db| {
            db.execute("UPDATE alert_outbox SET node = ?3 WHERE id = ?1 AND node = ?2", params![id, from, to])
        })
        .await
        .map(|changed| changed == 1)
    }

    /// Forget a held notification: it was delivered or given up.
    pub async fn release_notification(&self, id: i64) -> Result<(), StorageError> {
        self.apply(move |db| db.execute("DELETE FROM alert_outbox WHERE id = ?1", [id])).await.map(|_| ())
    }
}
