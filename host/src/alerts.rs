//! Alert rules as the API creates them, validated in full before they are stored, and alerts as they are stored.
//!
//! A rule's condition is in the [condition language](selfmon_condition); a rule that does not parse, names an
//! unknown severity or channel, or has a threshold that disagrees with its condition is refused with every problem
//! named.

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension, params};
use selfmon_condition::Condition;
use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError, sql_count, to_millis};

/// Severities, mildest first.
pub const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];
/// The longest rule name.
const NAME_BYTES: usize = 64;
/// What a rule name may be (rules of the API and of the config alike).
pub const NAME_RULE: &str = "1 to 64 letters, digits, `_` or `-`";
/// The longest a condition may have to hold before its alert fires.
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 86_400);
/// The longest description.
const DESCRIPTION_BYTES: usize = 1024;

/// A rule as a caller sends it: `POST /v1/alerts/rules` and the `createAlertRule` mutation.
#[derive(Debug, Clone, Deserialize, async_graphql::InputObject, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[graphql(name = "AlertRuleInput")]
pub struct RuleRequest {
    /// Letters, digits, `_` and `-`; unique.
    #[serde(default)]
    pub name: String,
    /// `avg(check_duration_seconds{check="openai"}[5m]) > 5`, or a value alone with `threshold`.
    #[serde(default)]
    pub condition: String,
    /// What the condition's value is compared with; when the condition has its own comparison, they must agree.
    pub threshold: Option<f64>,
    /// info, low, medium, high or critical.
    #[serde(default)]
    pub severity: String,
    /// Channels by name, or a kind's name for all its channels: dashboard, webhook, slack, discord, alertmanager,
    /// email, telegram.
    #[serde(default)]
    #[graphql(default)]
    pub notification_channels: Vec<String>,
    /// How long the condition must hold before the alert fires: `5m` (default: at once).
    #[serde(default, rename = "for")]
    #[graphql(name = "for")]
    pub hold: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
#[graphql(name = "AlertRule")]
pub struct Rule {
    pub name: String,
    pub condition: String,
    pub threshold: Option<f64>,
    pub severity: String,
    pub notification_channels: Vec<String>,
    /// Seconds the condition must hold before the alert fires.
    #[serde(rename = "for_seconds")]
    #[graphql(name = "forSeconds")]
    pub hold_seconds: f64,
    pub description: String,
    /// RFC 3339.
    pub created_at: String,
    /// The name of the API key that created it.
    pub created_by: Option<String>,
}

impl RuleRequest {
    /// The rule to store, or every problem with the request.
    /// `channels` are the names a rule may use.
    pub fn validate(
        self,
        channels: &[String],
        created_by: Option<String>,
        now: SystemTime,
    ) -> Result<Rule, Vec<String>> {
        let mut problems = Vec::new();
        if !valid_rule_name(&self.name) {
            problems.push(format!("`name` must be {NAME_RULE}"));
        }
        match Condition::parse(&self.condition) {
            Err(_) if self.condition.trim().is_empty() => problems.push("`condition` is required".into()),
            Ok(condition) => match (condition.comparison, self.threshold) {
                (None, None) => problems.push(
                    "`condition` has no comparison (such as `> 5`) and there is no `threshold` to compare with".into(),
                ),
                (Some((_, number)), Some(threshold)) if number != threshold => problems.push(format!(
                    "`condition` compares with {number} but `threshold` is {threshold}: make them agree or leave one out"
                )),
                _ => {}
            },
            Err(error) => problems.push(format!("`condition` {error}")),
        }
        if self.threshold.is_some_and(|t| !t.is_finite()) {
            problems.push("`threshold` must be a finite number".into());
        }
        if self.severity.is_empty() {
            problems.push(format!("`severity` is required: one of {}", SEVERITIES.join(", ")));
        } else if !SEVERITIES.contains(&self.severity.as_str()) {
            problems.push(format!("`severity` must be one of {}, not `{}`", SEVERITIES.join(", "), self.severity));
        }
        for channel in &self.notification_channels {
            if !channels.contains(channel) {
                problems.push(format!("`notification_channels`: `{channel}` is not one of {}", channels.join(", ")));
            }
        }
        let hold = match self.hold.as_deref().map(humantime::parse_duration).transpose() {
            Ok(hold) if hold.is_some_and(|h| h > MAX_HOLD) => {
                problems.push("`for` must be at most 7 days".into());
                Duration::ZERO
            }
            Ok(hold) => hold.unwrap_or(Duration::ZERO),
            Err(_) => {
                let text = self.hold.as_deref().unwrap_or_default();
                problems.push(format!("`for`: `{text}` is not a duration such as `5m` or `30s`"));
                Duration::ZERO
            }
        };
        let description = self.description.unwrap_or_default();
        if description.len() > DESCRIPTION_BYTES {
            problems.push(format!("`description` is longer than {DESCRIPTION_BYTES} bytes"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut channels: Vec<String> = Vec::new();
        for channel in self.notification_channels {
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        Ok(Rule {
            name: self.name,
            condition: self.condition,
            threshold: self.threshold,
            severity: self.severity,
            notification_channels: channels,
            hold_seconds: hold.as_secs_f64(),
            description,
            created_at: humantime::format_rfc3339_millis(now).to_string(),
            created_by,
        })
    }
}

/// An alert as stored.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Alert {
    pub id: i64,
    /// The alert's identity: a hash of its rule, name and labels.
    pub fingerprint: String,
    pub rule: String,
    /// The alert's name (`alertname`): the rule's, unless its plugin names it.
    pub name: String,
    /// As notified: escalation may have raised it.
    pub severity: String,
    /// pending, firing or resolved.
    pub state: String,
    pub summary: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `description`, `value`, `condition`, ...
    pub annotations: std::collections::BTreeMap<String, String>,
    /// RFC 3339: when the condition was first seen to hold.
    pub started_at: String,
    /// When it began firing (after `for`).
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub ack_comment: Option<String>,
    /// The silence that keeps it from being notified.
    pub silenced_by: Option<i64>,
    /// The check, down, that it depends on: while that is down this alert is not notified.
    pub inhibited_by: Option<String>,
    /// Escalation steps taken.
    pub escalation_step: u32,
}

/// A page of a list, and how many there are in all.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// Why a change to rules or alerts was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Whether a rule name is [`NAME_RULE`].
pub fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The columns [`alert_row`] reads, in its order.
const ALERT_COLUMNS: &str = "id, fingerprint, rule, name, severity, state, summary, labels, annotations, started_at,
    fired_at, resolved_at, acknowledged_at, acknowledged_by, ack_comment, silenced_by, inhibited_by, escalation_step";

fn rfc3339(millis: Option<i64>) -> Option<String> {
    millis.map(crate::storage::rfc3339)
}

impl Storage {
    pub async fn create_rule(&self, rule: Rule) -> Result<Rule, ChangeError> {
        let created_at = humantime::parse_rfc3339(&rule.created_at).map_or(0, to_millis);
        let stored = rule.clone();
        let inserted = self
            .apply(move |db| {
                db.execute(
                    "INSERT OR IGNORE INTO alert_rules
                     (name, condition, threshold, severity, channels, for_ms, description, created_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
            let mut statement = db.prepare(
                "SELECT name, condition, threshold, severity, channels, for_ms, description, created_at, created_by
                 FROM alert_rules ORDER BY name LIMIT ?1 OFFSET ?2",
            )?;
            let items = statement
                .query_map(params![sql_count(limit), sql_count(offset)], rule_row)?
                .collect::<Result<_, _>>()?;
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
            let mut statement = db.prepare(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE {filter} ORDER BY started_at DESC, id DESC LIMIT ?1 OFFSET ?2"
            ))?;
            let items = statement
                .query_map(params![sql_count(limit), sql_count(offset)], alert_row)?
                .collect::<Result<_, _>>()?;
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
}

fn rule_row(row: &rusqlite::Row) -> rusqlite::Result<Rule> {
    Ok(Rule {
        name: row.get(0)?,
        condition: row.get(1)?,
        threshold: row.get(2)?,
        severity: row.get(3)?,
        notification_channels: serde_json::from_str(&row.get::<_, String>(4)?).unwrap_or_default(),
        hold_seconds: row.get::<_, i64>(5)? as f64 / 1000.0,
        description: row.get(6)?,
        created_at: rfc3339(row.get(7)?).unwrap_or_default(),
        created_by: row.get(8)?,
    })
}

fn alert_row(row: &rusqlite::Row) -> rusqlite::Result<Alert> {
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
        started_at: rfc3339(row.get(9)?).unwrap_or_default(),
        fired_at: rfc3339(row.get(10)?),
        resolved_at: rfc3339(row.get(11)?),
        acknowledged_at: rfc3339(row.get(12)?),
        acknowledged_by: row.get(13)?,
        ack_comment: row.get(14)?,
        silenced_by: row.get(15)?,
        inhibited_by: row.get(16)?,
        escalation_step: u32::try_from(row.get::<_, i64>(17)?).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Vec<String> {
        ["dashboard", "webhook", "email", "ops"].map(String::from).to_vec()
    }

    fn request(json: serde_json::Value) -> RuleRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_original_platforms_example_is_accepted() {
        let rule = request(serde_json::json!({
            "name": "high_user_errors", "condition": "user_error_rate > 5", "threshold": 5.0,
            "severity": "high", "notification_channels": ["webhook", "email"]
        }))
        .validate(&channels(), Some("ops".into()), SystemTime::UNIX_EPOCH)
        .unwrap();
        assert_eq!(rule.notification_channels, ["webhook", "email"]);
        assert_eq!(rule.created_at, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_problem_is_named() {
        let problems = request(serde_json::json!({
            "name": "bad name", "condition": "avg(latency) > 5", "severity": "urgent",
            "notification_channels": ["pager", "email", "pager"], "for": "soon"
        }))
        .validate(&channels(), None, SystemTime::UNIX_EPOCH)
        .unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[1].starts_with("`condition` at column 5: `avg` needs a range"), "{}", problems[1]);
        assert!(problems[2].contains("not `urgent`") && problems[3].contains("`pager`"));
        assert_eq!(problems[5], "`for`: `soon` is not a duration such as `5m` or `30s`");
        let missing =
            request(serde_json::json!({"name": "a"})).validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap_err();
        assert_eq!(
            missing,
            ["`condition` is required", "`severity` is required: one of info, low, medium, high, critical"]
        );
        let repeated = request(serde_json::json!({
            "name": "a", "condition": "x > 1", "severity": "low", "notification_channels": ["webhook", "email", "webhook"]
        }));
        assert_eq!(
            repeated.validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap().notification_channels,
            ["webhook", "email"]
        );

        let disagree =
            request(serde_json::json!({"name": "a", "condition": "x > 5", "threshold": 6, "severity": "low"}));
        assert!(
            disagree.validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap_err()[0]
                .contains("compares with 5 but")
        );
        let neither = request(serde_json::json!({"name": "a", "condition": "x", "severity": "low"}));
        assert!(neither.validate(&channels(), None, SystemTime::UNIX_EPOCH).unwrap_err()[0].contains("no comparison"));
        let threshold_only =
            request(serde_json::json!({"name": "a", "condition": "x", "threshold": 1, "severity": "low"}));
        assert!(threshold_only.validate(&channels(), None, SystemTime::UNIX_EPOCH).is_ok());
    }
}
