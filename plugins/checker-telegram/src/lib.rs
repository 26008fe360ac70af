//! The `telegram` checker: the bot's token works (`getMe`), and its webhook delivers (`getWebhookInfo`).
//!
//! Methods and their answers (`{"ok": true, "result": ...}` or `{"ok": false, "error_code": 401, "description":
//! "Unauthorized"}`, 429 with `parameters.retry_after`): <https://core.telegram.org/bots/api#making-requests>,
//! <https://core.telegram.org/bots/api#getme>, <https://core.telegram.org/bots/api#getwebhookinfo>.
//!
//! The token is part of every URL path, so no URL is ever put in a result; selfmon also redacts the token from
//! anything the plugin returns.
//!
//! ```toml
//! [[check]]
//! name = "bot"
//! plugin = "telegram"      # target defaults to https://api.telegram.org, the token to BOT_TOKEN
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use selfmon_sdk::prelude::*;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Config {
    check_webhook: bool,
    pending_updates_degraded_at: u64,
    #[serde(with = "selfmon_sdk::duration")]
    webhook_error_window: Duration,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

pub struct Telegram;

impl Checker for Telegram {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "telegram",
            env!("CARGO_PKG_VERSION"),
            "Calls getMe and getWebhookInfo: the token works, and the webhook delivers without a backlog",
        )
        .default_target("https://api.telegram.org")
        .config(Setting::boolean("check_webhook", "Also look at the webhook (getWebhookInfo)").default(true))
        .config(
            Setting::integer(
                "pending_updates_degraded_at",
                "Report degraded at this many updates waiting for delivery",
            )
            .default(100),
        )
        .config(
            Setting::duration("webhook_error_window", "Report degraded when the webhook's last error is this recent")
                .default("15m"),
        )
        .config(Setting::duration("degraded_after", "Report degraded when getMe takes longer").default("2s"))
        .secret(Setting::text("bot_token", "The bot's token from @BotFather").env("BOT_TOKEN").required())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let base = ctx.target().ok_or("set `target` to the Bot API's URL, such as https://api.telegram.org")?;
        let token = ctx.secret("bot_token").ok_or("set the `bot_token` secret (or BOT_TOKEN)")?;
        let me = match call(base, token, "getMe", ctx) {
            Ok(me) => me,
            Err(verdict) => return Ok(verdict),
        };
        let took = me.elapsed;
        let bot = me.result["username"].as_str().map_or_else(|| "the bot".to_string(), |name| format!("@{name}"));
        let mut result = if took > config.degraded_after {
            CheckResult::degraded(format!(
                "{bot} answers in {} ms (slower than {} ms)",
                took.as_millis(),
                config.degraded_after.as_millis()
            ))
        } else {
            CheckResult::healthy(format!("{bot} answers in {} ms", took.as_millis()))
        };
        result = result.detail("bot", &bot).metric("response_time_seconds", took.as_secs_f64());
        if let Some(id) = me.result["id"].as_i64() {
            result = result.detail("bot_id", id);
        }
        if !config.check_webhook {
            return Ok(result);
        }
        let webhook = match call(base, token, "getWebhookInfo", ctx) {
            Ok(webhook) => webhook.result,
            Err(verdict) => return Ok(verdict.detail("bot", &bot)),
        };
        Ok(judge_webhook(result, &webhook, &config))
    }
}

struct Answer {
    result: Value,
    elapsed: Duration,
}

/// Call a Bot API method; `Err` is already the verdict (the API said no, or could not be reached).
fn call(base: &str, token: &str, method: &str, ctx: &Context) -> Result<Answer, CheckResult> {
    let url = http::url(base, &format!("bot{token}/{method}"));
    let response = http::get(&url).timeout(ctx.time_left()).send().map_err(|error| match error {
        // These would quote the URL, and the token is in its path.
        http::Error::InvalidUrl(_) | http::Error::InvalidRequest(_) => {
            CheckResult::unhealthy("the bot token cannot be used in a Bot API URL")
        }
        error => CheckResult::unhealthy(format!("Telegram Bot API unreachable ({method}): {error}")),
    })?;
    let elapsed = response.elapsed();
    let body: Value = match response.json() {
        Ok(body) => body,
        Err(_) => {
            return Err(CheckResult::unhealthy(format!(
                "Telegram answered {method} with HTTP {} and a body that is not the Bot API's JSON",
                response.status()
            )));
        }
    };
    if body["ok"] == true {
        return Ok(Answer { result: body["result"].clone(), elapsed });
    }
    let code = body["error_code"].as_u64().unwrap_or(u64::from(response.status()));
    let description = body["description"].as_str().unwrap_or("no description");
    let verdict = match code {
        401 => CheckResult::unhealthy(format!("Telegram rejected the bot token ({description})")),
        404 => CheckResult::unhealthy(format!("Telegram knows no bot with this token ({description})")),
        429 => {
            let retry = body["parameters"]["retry_after"].as_f64();
            let result = CheckResult::degraded(format!("Telegram is rate limiting {method}: {description}"));
            match retry {
                Some(seconds) => result.metric("retry_after_seconds", seconds),
                None => result,
            }
        }
        500..=599 => CheckResult::unhealthy(format!("Telegram server error on {method}: {code} {description}")),
        _ => CheckResult::unhealthy(format!("Telegram refused {method}: {code} {description}")),
    };
    Err(verdict.detail("error_code", code))
}

fn judge_webhook(result: CheckResult, webhook: &Value, config: &Config) -> CheckResult {
    let pending = webhook["pending_update_count"].as_u64().unwrap_or(0);
    // The webhook URL may carry a secret path: show only its host.
    let url = webhook["url"].as_str().unwrap_or_default();
    let host = url.split("://").nth(1).and_then(|rest| rest.split(['/', '?', ':']).next()).unwrap_or_default();
    let mut result = result
        .metric("pending_updates", pending as f64)
        .detail("delivery", if url.is_empty() { "polling" } else { "webhook" });
    if !host.is_empty() {
        result = result.detail("webhook_host", host);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let last_error = webhook["last_error_date"]
        .as_u64()
        .filter(|at| now.saturating_sub(*at) <= config.webhook_error_window.as_secs());
    if let Some(at) = last_error {
        let message = webhook["last_error_message"].as_str().unwrap_or("no message");
        let ago = now.saturating_sub(at);
        return CheckResult {
            status: Status::Degraded,
            summary: format!("{}; the webhook failed {ago} s ago: {message}", result.summary),
            ..result
        }
        .metric("webhook_last_error_age_seconds", ago as f64);
    }
    if pending >= config.pending_updates_degraded_at {
        return CheckResult {
            status: Status::Degraded,
            summary: format!("{}; {pending} updates waiting for delivery", result.summary),
            ..result
        };
    }
    let summary = format!("{}, {pending} updates pending", result.summary);
    CheckResult { summary, ..result }
}

selfmon_sdk::export_checker!(Telegram);
