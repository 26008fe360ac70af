//! `kind = "telegram"`: an HTML message to a chat through the Bot API's `sendMessage`
//! (<https://core.telegram.org/bots/api#sendmessage>); a 429's `parameters.retry_after` is honoured.

use serde_json::{Value, json};

use super::{description, lines, link, runbook, title};
use crate::alerting::dispatch::Notification;

/// Where the Telegram Bot API is, unless a channel's `url` says otherwise.
pub const API: &str = "https://api.telegram.org";

/// A Telegram `sendMessage` body: the title in bold and a line per alert, as HTML (Telegram's `HTML` parse mode
/// knows `<b>`, `<a>` and the `&lt;` `&gt;` `&amp;` entities), within its 4096 characters, without link previews.
pub fn body(notification: &Notification, chat_id: &str, external_url: &str) -> Value {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut text = format!("<b>{}</b>", escape(&title(notification)));
    for (line, notice) in lines(notification).iter().zip(&notification.alerts) {
        let mut line = match link(external_url, notice) {
            Some(link) => format!("\n{} <a href=\"{}\">details</a>", escape(line), escape(&link)),
            None => format!("\n{}", escape(line)),
        };
        if let Some(url) = runbook(notice) {
            line.push_str(&format!(" <a href=\"{}\">runbook</a>", escape(&url)));
        }
        if let Some(description) = description(notice) {
            line.push_str(&format!("\n<i>{}</i>", escape(description)));
        }
        if text.chars().count() + line.chars().count() > 4000 {
            text.push_str("\n…");
            break;
        }
        text.push_str(&line);
    }
    json!({"chat_id": chat_id, "text": text, "parse_mode": "HTML", "link_preview_options": {"is_disabled": true}})
}
