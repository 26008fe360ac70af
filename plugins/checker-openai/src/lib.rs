//! The `openai` checker: an authenticated, cheap call (the models list) against the OpenAI API or any
//! OpenAI-compatible endpoint, judged the way the API documents its answers.
//!
//! Status codes and error bodies: <https://platform.openai.com/docs/guides/error-codes>; rate-limit headers
//! (`x-ratelimit-limit-requests`, `x-ratelimit-remaining-tokens`, `x-ratelimit-reset-requests`, ...):
//! <https://platform.openai.com/docs/guides/rate-limits>.
//!
//! ```toml
//! [[check]]
//! name = "openai"
//! plugin = "openai"        # target defaults to https://api.openai.com/v1, the key to OPENAI_API_KEY
//! [check.config]
//! model = "gpt-4o-mini"    # optional: the model the service uses must be available to the key
//! ```

use std::time::Duration;

use selfmon_sdk::prelude::*;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Config {
    model: Option<String>,
    organization: Option<String>,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

pub struct OpenAi;

impl Checker for OpenAi {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "openai",
            env!("CARGO_PKG_VERSION"),
            "Lists the models with the API key: key valid, quota left, rate limits, latency",
        )
        .default_target("https://api.openai.com/v1")
        .config(Setting::text("model", "A model that must be available to the key (the one the service uses)"))
        .config(Setting::text("organization", "Sent as OpenAI-Organization"))
        .config(Setting::duration("degraded_after", "Report degraded when the answer takes longer").default("3s"))
        .secret(Setting::text("api_key", "The API key").env("OPENAI_API_KEY").required())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let base = ctx.target().ok_or("set `target` to the API's base URL, such as https://api.openai.com/v1")?;
        let key = ctx.secret("api_key").ok_or("set the `api_key` secret (or OPENAI_API_KEY)")?;
        let mut request = http::get(&http::url(base, "models")).bearer_auth(key).timeout(ctx.time_left());
        if let Some(organization) = &config.organization {
            request = request.header("openai-organization", organization);
        }
        let response = match request.send() {
            Ok(response) => response,
            Err(error) => return Ok(CheckResult::unhealthy(format!("OpenAI API unreachable: {error}"))),
        };
        Ok(with_figures(judge(&config, &response), &response))
    }
}

fn judge(config: &Config, response: &http::Response) -> CheckResult {
    let status = response.status();
    let took = response.elapsed().as_millis();
    let body: Option<Value> = response.json().ok();
    let error = body.as_ref().map(|b| &b["error"]);
    let code = error.and_then(|e| e["code"].as_str().or(e["type"].as_str())).unwrap_or("no error code").to_string();
    let message = error.and_then(|e| e["message"].as_str()).map(scrub).unwrap_or_default();
    match status {
        200 => {
            let Some(models) = body.as_ref().and_then(|b| b["data"].as_array()) else {
                return CheckResult::unhealthy(format!(
                    "OpenAI answered HTTP 200 in {took} ms, but not with a models list"
                ));
            };
            if let Some(model) = &config.model
                && !models.iter().any(|m| m["id"].as_str() == Some(model.as_str()))
            {
                return CheckResult::unhealthy(format!(
                    "model `{model}` is not available to this key ({} models listed)",
                    models.len()
                ))
                .metric("models_available", models.len() as f64);
            }
            let summary = format!("OpenAI API: {} models in {took} ms", models.len());
            let result = if response.elapsed() > config.degraded_after {
                CheckResult::degraded(format!("{summary} (slower than {} ms)", config.degraded_after.as_millis()))
            } else {
                CheckResult::healthy(summary)
            };
            result.metric("models_available", models.len() as f64)
        }
        401 => CheckResult::unhealthy(format!("OpenAI rejected the API key ({code})")),
        403 => CheckResult::unhealthy(format!("OpenAI refused access ({code}): {message}")),
        429 if code == "insufficient_quota" => {
            CheckResult::unhealthy(format!("OpenAI quota exhausted (insufficient_quota): {message}"))
        }
        429 => {
            let reset = response.header("x-ratelimit-reset-requests").unwrap_or("unknown");
            CheckResult::degraded(format!("OpenAI is rate limiting this key ({code}); requests reset in {reset}"))
        }
        500..=599 => CheckResult::unhealthy(format!("OpenAI server error: HTTP {status} ({code})")),
        _ => CheckResult::unhealthy(format!("unexpected HTTP {status} from OpenAI ({code})")),
    }
    .detail("status_code", status)
}

/// Latency and the rate-limit headers, whatever the verdict.
fn with_figures(mut result: CheckResult, response: &http::Response) -> CheckResult {
    result = result.metric("response_time_seconds", response.elapsed().as_secs_f64());
    for (header, metric) in [
        ("x-ratelimit-limit-requests", "ratelimit_limit_requests"),
        ("x-ratelimit-remaining-requests", "ratelimit_remaining_requests"),
        ("x-ratelimit-limit-tokens", "ratelimit_limit_tokens"),
        ("x-ratelimit-remaining-tokens", "ratelimit_remaining_tokens"),
    ] {
        if let Some(value) = response.header(header).and_then(|v| v.trim().parse::<f64>().ok()) {
            result = result.metric(metric, value);
        }
    }
    for (header, metric) in [
        ("x-ratelimit-reset-requests", "ratelimit_reset_requests_seconds"),
        ("x-ratelimit-reset-tokens", "ratelimit_reset_tokens_seconds"),
    ] {
        if let Some(reset) = response.header(header).and_then(selfmon_sdk::duration::parse) {
            result = result.metric(metric, reset.as_secs_f64());
        }
    }
    if let Some(id) = response.header("x-request-id") {
        result = result.detail("request_id", id);
    }
    result
}

/// OpenAI's messages quote part of a rejected key (`sk-abc***xyz`); keep no part of any key.
fn scrub(message: &str) -> String {
    message.split(' ').map(|word| if word.starts_with("sk-") { "[key]" } else { word }).collect::<Vec<_>>().join(" ")
}

selfmon_sdk::export_checker!(OpenAi);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_keys_are_removed_from_messages() {
        assert_eq!(
            scrub("Incorrect API key provided: sk-proj-abc***wxyz. You can find your API key at https://x."),
            "Incorrect API key provided: [key] You can find your API key at https://x."
        );
    }
}
