//! `kind = "slack"`: an incoming webhook message, `text` plus `blocks`
//! (<https://api.slack.com/messaging/webhooks>, <https://api.slack.com/reference/block-kit/blocks>).

use serde_json::{Value, json};

use super::{clip, description, lines, link, runbook, title};
use crate::alerting::dispatch::Notification;

/// A Slack incoming-webhook message: `text` for notifications and clients without blocks, and a header and one
/// section per alert (Slack allows 50 blocks; the rest are counted).
pub fn body(notification: &Notification, external_url: &str) -> Value {
    let lines = lines(notification);
    let mut blocks =
        vec![json!({"type": "header", "text": {"type": "plain_text", "text": clip(&title(notification), 150)}})];
    for (line, notice) in lines.iter().zip(&notification.alerts).take(48) {
        let mut text = match link(external_url, notice) {
            Some(link) => format!("{} <{link}|details>", escape_slack(line)),
            None => escape_slack(line),
        };
        if let Some(url) = runbook(notice) {
            text.push_str(&format!(" <{}|runbook>", escape_slack(&url)));
        }
        if let Some(description) = description(notice) {
            text.push_str(&format!("\n{}", escape_slack(description)));
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}}));
    }
    if lines.len() > 48 {
        let more = format!("…and {} more", lines.len() - 48);
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]}));
    }
    json!({"text": clip(&format!("{}\n{}", title(notification), lines.join("\n")), 3000), "blocks": blocks})
}

/// `&`, `<` and `>` are Slack's control characters in text.
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
