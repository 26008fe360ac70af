//! `kind = "webhook"`: Alertmanager's webhook receiver payload (version 4), so receivers written for Alertmanager work
//! unchanged (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>).

use serde_json::{Value, json};

use super::{annotations, common, link};
use crate::alerting::dispatch::Notification;
use crate::storage::{rfc3339, to_millis};

/// Alertmanager's webhook receiver payload, version 4.
pub fn body(notification: &Notification, receiver: &str, external_url: &str) -> Value {
    let alerts: Vec<Value> = notification
        .alerts
        .iter()
        .map(|notice| {
            json!({
                "status": notice.status.as_str(),
                "labels": notice.labels,
                "annotations": annotations(notice),
                "startsAt": rfc3339(to_millis(notice.fired_at)),
                // Alertmanager's zero time for an alert that has not ended.
                "endsAt": notice.resolved_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |at| rfc3339(to_millis(at))),
                "generatorURL": link(external_url, notice).unwrap_or_default(),
                "fingerprint": notice.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": 0,
        "status": notification.status().as_str(),
        "receiver": receiver,
        "groupLabels": notification.group_labels,
        "commonLabels": common(notification.alerts.iter().map(|a| a.labels.clone())),
        "commonAnnotations": common(notification.alerts.iter().map(annotations)),
        "externalURL": external_url,
        "alerts": alerts,
    })
}
