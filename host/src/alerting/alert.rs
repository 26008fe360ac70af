//! An alert as stored, served and carried by the event bus, and the severities alerts have. A leaf: it imports
//! nothing.

use serde::Serialize;

/// Severities, mildest first.
pub const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

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
