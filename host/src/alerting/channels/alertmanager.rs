//! `kind = "alertmanager"`: the alerts POSTed to a real Alertmanager's `/api/v2/alerts`, which does its own grouping
//! and routing; firing alerts are sent again every minute ([`RESEND`]) with an `endsAt` a few minutes ahead, as
//! Prometheus does.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{annotations, link};
use crate::alerting::dispatch::Notification;
use crate::storage::{rfc3339, to_millis};

/// How often firing alerts are sent to Alertmanager again, and how far ahead their `endsAt` is.
pub const RESEND: Duration = Duration::from_secs(60);
const ENDS_AFTER: Duration = Duration::from_secs(300);

/// The body of `POST /api/v2/alerts`: each alert with its labels, annotations and times.
pub fn body(notification: &Notification, external_url: &str, now: SystemTime) -> Value {
    Value::Array(
        notification
            .alerts
            .iter()
            .map(|notice| {
                let ends = notice.resolved_at.unwrap_or(now + ENDS_AFTER);
                let mut alert = json!({
                    "labels": notice.labels,
                    "annotations": annotations(notice),
                    "startsAt": rfc3339(to_millis(notice.fired_at)),
                    "endsAt": rfc3339(to_millis(ends)),
                });
                if let Some(link) = link(external_url, notice) {
                    alert["generatorURL"] = Value::String(link);
                }
                alert
            })
            .collect(),
    )
}
