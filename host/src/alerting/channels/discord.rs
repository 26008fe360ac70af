//! `kind = "discord"`: an execute-webhook body, `content` plus `embeds` within Discord's documented limits
//! (<https://discord.com/developers/docs/resources/webhook#execute-webhook>); a 429 is retried after its
//! `Retry-After`.

use serde_json::{Value, json};

use super::{clip, description, link, runbook, title};
use crate::alerting::dispatch::{Notification, Status};
use crate::storage::{rfc3339, to_millis};

/// A Discord execute-webhook body: the title as `content`, one embed per alert (at most 10), colour by status, and
/// no mentions (an alert's text must not ping anyone). Discord refuses a message whose embeds hold more than 6000
/// characters in all, so each embed gets an equal share.
pub fn body(notification: &Notification, external_url: &str) -> Value {
    const EMBEDS: usize = 10;
    const ALL_EMBEDS: usize = 5900;
    let shown = notification.alerts.len().clamp(1, EMBEDS);
    let share = ALL_EMBEDS / shown;
    let embeds: Vec<Value> = notification
        .alerts
        .iter()
        .take(EMBEDS)
        .map(|notice| {
            let color = match notice.status {
                Status::Firing if notice.severity == "critical" => 0xE0_1E_5A,
                Status::Firing => 0xF2_A9_00,
                Status::Resolved => 0x2E_B6_7D,
            };
            let name = notice.labels.get("alertname").unwrap_or(&notice.rule);
            let title = clip(&format!("[{}] {name}", notice.status.as_str().to_uppercase()), 200.min(share / 4));
            let mut used = title.chars().count();
            let mut fields = Vec::new();
            let since = ("since".to_string(), rfc3339(to_millis(notice.fired_at)));
            for (key, value) in notice.labels.iter().map(|(k, v)| (k.clone(), v.clone())).chain([since]).take(25) {
                let (key, value) = (clip(&key, 64), clip(if value.is_empty() { "-" } else { &value }, 256));
                let size = key.chars().count() + value.chars().count();
                if used + size > share / 2 {
                    break;
                }
                used += size;
                fields.push(json!({"name": key, "value": value, "inline": true}));
            }
            let mut text = notice.summary.clone();
            if let Some(description) = description(notice) {
                text.push_str(&format!("\n{description}"));
            }
            if let Some(url) = runbook(notice) {
                text.push_str(&format!("\n[runbook]({url})"));
            }
            let mut embed = json!({
                "title": title,
                "description": clip(&text, (share - used).clamp(1, 4096)),
                "color": color,
                "fields": fields,
            });
            if let Some(link) = link(external_url, notice) {
                embed["url"] = Value::String(link);
            }
            embed
        })
        .collect();
    let mut content = title(notification);
    if notification.alerts.len() > EMBEDS {
        content.push_str(&format!(" ({} more not shown)", notification.alerts.len() - EMBEDS));
    }
    json!({"content": clip(&content, 2000), "embeds": embeds, "allowed_mentions": {"parse": []}})
}
