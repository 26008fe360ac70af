//! The SQL of alerting: alerts and their changes, the rules created through the API, the delivery attempts of
//! notifications, and what the engine reads back at start-up; silences (`silences.rs`), what rules read (`data.rs`),
//! the outbox of notifications due (`outbox.rs`) and the rules' states shared by the leader (`states.rs`) have files
//! of their own.

mod data;
mod outbox;
mod silences;
mod states;

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use crate::alerting::alert::Alert;
use crate::alerting::api_rules::Rule;
use crate::alerting::channels::Attempt;
use crate::alerting::lifecycle::{Change, Raised, State, Tracked};
use crate::events::delivery::Attempt as DeliveryAttempt;
use crate::events::store::{attempt_row, attempt_values};
use crate::storage::sql::{self, OptionalExtension, Row, Value, params};
use crate::storage::{ChangeError, Page, Storage, StorageError, from_millis, rfc3339, sql_count, to_millis};

/// Where PostgreSQL tells the other nodes of an alert that fired or resolved on the leader: `node:fired:id` or
/// `node:resolved:id`.
pub const ALERTS_CHANNEL: &str = "selfmon_alerts";

/// The columns [`alert_row`] reads, in its order.
const ALERT_COLUMNS: &str = "id, fingerprint, rule, name, severity, state, summary, labels, annotations, started_at,
    fired_at, resolved_at, acknowledged_at, acknowledged_by, ack_comment, silenced_by, inhibited_by, escalation_step";

fn json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_default()
}

/// How a firing alert is being notified, as stored with it.
pub struct Notifying {
    pub alert: i64,
    pub silenced_by: Option<i64>,
    pub inhibited_by: Option<String>,
    /// Escalation steps taken.
    pub step: usize,
    /// As notified: escalation may have raised it.
    pub severity: String,
}

/// How a firing alert stood when selfmon stopped.
pub struct Restored {
    pub step: usize,
    pub severity: String,
    /// A message had said it fires.
    pub notified: bool,
}

impl Storage {
    pub async fn create_rule(&self, rule: Rule) -> Result<Rule, ChangeError> {
        let created_at = humantime::parse_rfc3339(&rule.created_at).map_or(0, to_millis);
        let stored = rule.clone();
        let inserted = self
            .apply(move |db| {
                db.execute(
                    "INSERT INTO alert_rules
                     (name, condition, threshold, severity, channels, for_ms, description, created_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                    params![
                        rule.name,
                        rule.condition,
                        rule.threshold,
                        rule.severity,
                        serde_json::to_string(&rule.notification_channels).unwrap_or_default(),
                        (rule.hold_seconds * 1000.0) as i64,
                        rule.description,
                        created_at,
                        rule.created_by,
                    ],
                )
            })
            .await?;
        if inserted == 0 {
            return Err(ChangeError::Conflict(format!("a rule named `{}` exists already", stored.name)));
        }
        Ok(stored)
    }

    pub async fn delete_rule(&self, name: String) -> Result<(), ChangeError> {
        let message = format!("no rule named `{name}`");
        let deleted = self.apply(move |db| db.execute("DELETE FROM alert_rules WHERE name = ?1", [name])).await?;
        if deleted == 0 { Err(ChangeError::NotFound { code: "unknown_rule", message }) } else { Ok(()) }
    }

    /// Rules by name, a page at a time.
    pub async fn rules(&self, offset: u64, limit: u64) -> Result<Page<Rule>, StorageError> {
        self.read(move |db| {
            let total: i64 = db.query_row("SELECT COUNT(*) FROM alert_rules", [], |r| r.get(0))?;
            let items = db.query_map(
                "SELECT name, condition, threshold, severity, channels, for_ms, description, created_at, created_by
                 FROM alert_rules ORDER BY name LIMIT ?1 OFFSET ?2",
                params![sql_count(limit), sql_count(offset)],
                rule_row,
            )?;
            Ok(Page { items, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }

    pub async fn rule(&self, name: String) -> Result<Option<Rule>, StorageError> {
        self.read(move |db| {
            db.query_row(
                "SELECT name, condition, threshold, severity, channels, for_ms, description, created_at, created_by
                 FROM alert_rules WHERE name = ?1",
                [name],
                rule_row,
            )
            .optional()
        })
        .await
    }

    /// Alerts newest first: the active ones (pending or firing) or the resolved ones, a page at a time.
    pub async fn alerts(&self, active: bool, offset: u64, limit: u64) -> Result<Page<Alert>, StorageError> {
        self.read(move |db| {
            let filter = if active { "state != 'resolved'" } else { "state = 'resolved'" };
            let total: i64 = db.query_row(&format!("SELECT COUNT(*) FROM alerts WHERE {filter}"), [], |r| r.get(0))?;
            let items = db.query_map(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE {filter} ORDER BY started_at DESC, id DESC LIMIT ?1 OFFSET ?2"
                ),
                params![sql_count(limit), sql_count(offset)],
                alert_row,
            )?;
            Ok(Page { items, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }

    pub async fn alert(&self, id: i64) -> Result<Option<Alert>, StorageError> {
        self.read(move |db| {
            db.query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), [id], alert_row).optional()
        })
        .await
    }

    /// On PostgreSQL, tell the other nodes that the alert `id` fired (or resolved), as the node `node` saw it;
    /// nothing on SQLite.
    pub async fn announce_alert(&self, node: &str, fired: bool, id: i64) -> Result<(), StorageError> {
        let payload = format!("{node}:{}:{id}", if fired { "fired" } else { "resolved" });
        let notify = move |db: &sql::Db| db.execute(&format!("SELECT pg_notify('{ALERTS_CHANNEL}', ?1)"), [payload]);
        self.coordinate(notify).await.transpose().map(|_| ())
    }

    /// Acknowledge an active alert: who and why; escalation stops, the alert stays visible.
    pub async fn acknowledge(&self, id: i64, by: Option<String>, comment: String) -> Result<Alert, ChangeError> {
        let now = to_millis(SystemTime::now());
        let changed = self
            .apply(move |db| {
                let changed = db.execute(
                    "UPDATE alerts SET acknowledged_at = ?2, acknowledged_by = ?3, ack_comment = ?4
                     WHERE id = ?1 AND state != 'resolved'",
                    params![id, now, by, comment],
                )?;
                if changed == 0 {
                    return Ok(None);
                }
                db.query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), [id], alert_row).map(Some)
            })
            .await?;
        changed.ok_or_else(|| ChangeError::NotFound {
            code: "unknown_alert",
            message: format!("no active alert with id {id}"),
        })
    }

    /// The ids of active alerts someone acknowledged.
    pub async fn acknowledged_alerts(&self) -> Result<Vec<i64>, StorageError> {
        self.read(|db| {
            db.query_map("SELECT id FROM alerts WHERE state != 'resolved' AND acknowledged_at IS NOT NULL", [], |row| {
                row.get(0)
            })
        })
        .await
    }

    /// Delivery attempts, newest first.
    pub async fn notification_attempts(&self, offset: u64, limit: u64) -> Result<Page<Attempt>, StorageError> {
        self.read(move |db| {
            let total: i64 = db.query_row("SELECT COUNT(*) FROM alert_notifications", [], |r| r.get(0))?;
            let items = db.query_map(
                "SELECT id, channel, group_key, status, alerts, attempt, at, status_code, outcome, error, duration_ms
                 FROM alert_notifications ORDER BY id DESC LIMIT ?1 OFFSET ?2",
                params![sql_count(limit), sql_count(offset)],
                |row| {
                    Ok(Attempt {
                        id: row.get(0)?,
                        channel: row.get(1)?,
                        group_key: row.get(2)?,
                        status: row.get(3)?,
                        alerts: serde_json::from_str(&row.get::<_, String>(4)?).unwrap_or_default(),
                        attempt: attempt_row(row, 5)?,
                    })
                },
            )?;
            Ok(Page { items, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }

    /// Store an attempt to deliver a notification of `alerts` (their ids, as JSON) to a channel.
    pub async fn record_notification(
        &self,
        channel: String,
        group_key: String,
        status: &'static str,
        alerts: String,
        attempt: DeliveryAttempt,
    ) -> Result<(), StorageError> {
        self.apply(move |db| {
            db.execute(
                "INSERT INTO alert_notifications
                 (channel, group_key, status, alerts, attempt, at, status_code, outcome, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                [Value::from(channel), Value::from(group_key), Value::from(status), Value::from(alerts)]
                    .into_iter()
                    .chain(attempt_values(&attempt))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map(|_| ())
    }

    /// Store what an evaluation changed, in one transaction: the ids of the new alerts, by fingerprint.
    pub async fn store_alert_changes(&self, changes: Vec<Change>) -> Result<Vec<(String, i64)>, StorageError> {
        self.apply(move |db| {
            let mut ids = Vec::new();
            for change in &changes {
                match change {
                    Change::Pending(t) | Change::Fired(t) | Change::Updated(t) => match t.id {
                        Some(id) => {
                            // The severity is the engine's to write: escalation may have raised it.
                            db.execute(
                                "UPDATE alerts SET state = ?2, summary = ?3, annotations = ?4, fired_at = ?5
                                     WHERE id = ?1",
                                params![
                                    id,
                                    t.state.as_str(),
                                    t.raised.summary,
                                    json(&t.raised.annotations),
                                    t.fired_at.map(to_millis)
                                ],
                            )?;
                        }
                        None => {
                            // A row left active by a change that failed to commit ends here, so the new one
                            // can take its fingerprint.
                            db.execute(
                                "UPDATE alerts SET state = 'resolved', resolved_at = ?2
                                     WHERE fingerprint = ?1 AND state != 'resolved'",
                                params![t.fingerprint, to_millis(t.started_at)],
                            )?;
                            let id = db.query_row(
                                "INSERT INTO alerts (fingerprint, rule, name, severity, state, summary, labels,
                                     annotations, started_at, fired_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                                     RETURNING id",
                                params![
                                    t.fingerprint,
                                    t.rule,
                                    t.raised.name,
                                    t.raised.severity,
                                    t.state.as_str(),
                                    t.raised.summary,
                                    json(&t.raised.labels),
                                    json(&t.raised.annotations),
                                    to_millis(t.started_at),
                                    t.fired_at.map(to_millis)
                                ],
                                |r| r.get(0),
                            )?;
                            ids.push((t.fingerprint.clone(), id));
                        }
                    },
                    Change::Resolved(t, at) => {
                        db.execute(
                            "UPDATE alerts SET state = 'resolved', resolved_at = ?2 WHERE fingerprint = ?1
                                 AND state != 'resolved'",
                            params![t.fingerprint, to_millis(*at)],
                        )?;
                    }
                    Change::Dropped(t) => {
                        db.execute(
                            "DELETE FROM alerts WHERE fingerprint = ?1 AND state = 'pending'",
                            [&t.fingerprint],
                        )?;
                    }
                }
            }
            Ok(ids)
        })
        .await
    }

    /// Store how firing alerts are being notified.
    pub async fn store_notifying(&self, updates: Vec<Notifying>) -> Result<(), StorageError> {
        self.apply(move |db| {
            for update in &updates {
                db.execute(
                    "UPDATE alerts SET silenced_by = ?2, inhibited_by = ?3, escalation_step = ?4, severity = ?5
                     WHERE id = ?1",
                    params![update.alert, update.silenced_by, update.inhibited_by, update.step as i64, update.severity],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The alerts active when selfmon stopped, and how the firing ones stood.
    pub async fn active_alerts(&self) -> Result<(Vec<Tracked>, HashMap<String, Restored>), StorageError> {
        self.read(|db| {
            let mut tracked = Vec::new();
            let mut steps = HashMap::new();
            let rows = db.query_map(
                "SELECT id, fingerprint, rule, name, severity, state, summary, labels, annotations, started_at,
                        fired_at, escalation_step, notified
                 FROM alerts WHERE state != 'resolved'",
                [],
                |row| {
                    let labels: String = row.get(7)?;
                    let annotations: String = row.get(8)?;
                    let state: String = row.get(5)?;
                    Ok((
                        Tracked {
                            id: Some(row.get(0)?),
                            fingerprint: row.get(1)?,
                            rule: row.get(2)?,
                            raised: Raised {
                                name: row.get(3)?,
                                severity: row.get(4)?,
                                summary: row.get(6)?,
                                labels: serde_json::from_str(&labels).unwrap_or_default(),
                                annotations: serde_json::from_str(&annotations).unwrap_or_default(),
                            },
                            state: if state == "firing" { State::Firing } else { State::Pending },
                            started_at: from_millis(row.get(9)?),
                            fired_at: row.get::<_, Option<i64>>(10)?.map(from_millis),
                        },
                        row.get::<_, i64>(11)?,
                        row.get::<_, bool>(12)?,
                    ))
                },
            )?;
            for (t, step, notified) in rows {
                if t.state == State::Firing {
                    let step = usize::try_from(step).unwrap_or(0);
                    steps.insert(
                        t.fingerprint.clone(),
                        Restored { step, severity: t.raised.severity.clone(), notified },
                    );
                }
                tracked.push(t);
            }
            Ok((tracked, steps))
        })
        .await
    }
}

fn rule_row(row: &Row) -> sql::Result<Rule> {
    Ok(Rule {
        name: row.get(0)?,
        condition: row.get(1)?,
        threshold: row.get(2)?,
        severity: row.get(3)?,
        notification_channels: serde_json::from_str(&row.get::<_, String>(4)?).unwrap_or_default(),
        hold_seconds: row.get::<_, i64>(5)? as f64 / 1000.0,
        description: row.get(6)?,
        created_at: rfc3339(row.get(7)?),
        created_by: row.get(8)?,
    })
}

fn alert_row(row: &Row) -> sql::Result<Alert> {
    Ok(Alert {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        rule: row.get(2)?,
        name: row.get(3)?,
        severity: row.get(4)?,
        state: row.get(5)?,
        summary: row.get(6)?,
        labels: serde_json::from_str(&row.get::<_, String>(7)?).unwrap_or_default(),
        annotations: serde_json::from_str(&row.get::<_, String>(8)?).unwrap_or_default(),
        started_at: rfc3339(row.get(9)?),
        fired_at: row.get::<_, Option<i64>>(10)?.map(rfc3339),
        resolved_at: row.get::<_, Option<i64>>(11)?.map(rfc3339),
        acknowledged_at: row.get::<_, Option<i64>>(12)?.map(rfc3339),
        acknowledged_by: row.get(13)?,
        ack_comment: row.get(14)?,
        silenced_by: row.get(15)?,
        inhibited_by: row.get(16)?,
        escalation_step: u32::try_from(row.get::<_, i64>(17)?).unwrap_or(0),
    })
}
