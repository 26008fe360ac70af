//! The `anthropic` checker: lists the models with the API key against the Anthropic (Claude) API and judges the
//! answer the way the API documents it.
//!
//! Errors (`{"type": "error", "error": {"type": "authentication_error", ...}}`, 401/403/429/529):
//! <https://docs.anthropic.com/en/api/errors>; rate-limit headers (`anthropic-ratelimit-requests-remaining`,
//! `...-reset` as RFC 3339, `retry-after`): <https://docs.anthropic.com/en/api/rate-limits>; the models list:
//! <https://docs.anthropic.com/en/api/models-list>.
//!
//! ```toml
//! [[check]]
//! name = "claude"
//! plugin = "anthropic"     # target defaults to https://api.anthropic.com, the key to ANTHROPIC_API_KEY
//! ```

use std::time::{Duration, SystemTime};

use selfmon_sdk::prelude::*;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Config {
    api_version: String,
    model: Option<String>,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

pub struct Anthropic;

impl Checker for Anthropic {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "anthropic",
            env!("CARGO_PKG_VERSION"),
            "Lists the Claude models with the API key: key valid, rate limits, overload, latency",
        )
        .default_target("https://api.anthropic.com")
        .config(Setting::text("api_version", "Sent as anthropic-version").default("2023-06-01"))
        .config(Setting::text("model", "A model that must be available to the key (the one the service uses)"))
        .config(Setting::duration("degraded_after", "Report degraded when the answer takes longer").default("3s"))
        .secret(Setting::text("api_key", "The API key").env("ANTHROPIC_API_KEY").required())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let base = ctx.target().ok_or("set `target` to the API's base URL, such as https://api.anthropic.com")?;
        let key = ctx.secret("api_key").ok_or("set the `api_key` secret (or ANTHROPIC_API_KEY)")?;
        let request = http::get(&http::url(base, "v1/models?limit=1000"))
            .header("x-api-key", key)
            .header("anthropic-version", &config.api_version)
            .timeout(ctx.time_left());
        let response = match request.send() {
            Ok(response) => response,
            Err(error) => return Ok(CheckResult::unhealthy(format!("Anthropic API unreachable: {error}"))),
        };
        Ok(with_figures(judge(&config, &response), &response))
    }
}

fn judge(config: &Config, response: &http::Response) -> CheckResult {
    let status = response.status();
    let took = response.elapsed().as_millis();
    let body: Option<Value> = response.json().ok();
    let kind = body.as_ref().and_then(|b| b["error"]["type"].as_str()).unwrap_or("no error type").to_string();
    let message = body.as_ref().and_then(|b| b["error"]["message"].as_str()).unwrap_or_default().to_string();
    match status {
        200 => {
            let Some(models) = body.as_ref().and_then(|b| b["data"].as_array()) else {
                return CheckResult::unhealthy(format!(
                    "Anthropic answered HTTP 200 in {took} ms, but not with a models list"
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
            let summary = format!("Anthropic API: {} models in {took} ms", models.len());
            let result = if response.elapsed() > config.degraded_after {
                CheckResult::degraded(format!("{summary} (slower than {} ms)", config.degraded_after.as_millis()))
            } else {
                CheckResult::healthy(summary)
            };
            result.metric("models_available", models.len() as f64)
        }
        401 => CheckResult::unhealthy(format!("Anthropic rejected the API key ({kind})")),
        403 => CheckResult::unhealthy(format!("Anthropic refused access ({kind}): {message}")),
        429 => {
            let retry = response.header("retry-after").map(|s| format!("; retry after {s} s")).unwrap_or_default();
            CheckResult::degraded(format!("Anthropic is rate limiting this key ({kind}){retry}"))
        }
        529 => CheckResult::degraded(format!("Anthropic is overloaded ({kind}): {message}")),
        500..=599 => CheckResult::unhealthy(format!("Anthropic server error: HTTP {status} ({kind})")),
        _ => CheckResult::unhealthy(format!("unexpected HTTP {status} from Anthropic ({kind})")),
    }
    .detail("status_code", status)
}

/// Latency and the rate-limit headers, whatever the verdict.
fn with_figures(mut result: CheckResult, response: &http::Response) -> CheckResult {
    result = result.metric("response_time_seconds", response.elapsed().as_secs_f64());
    for limit in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let name = limit.replace('-', "_");
        for (part, metric) in [("limit", "limit"), ("remaining", "remaining")] {
            let header = format!("anthropic-ratelimit-{limit}-{part}");
            if let Some(value) = response.header(&header).and_then(|v| v.trim().parse::<f64>().ok()) {
                result = result.metric(format!("ratelimit_{metric}_{name}"), value);
            }
        }
        let reset = response
            .header(&format!("anthropic-ratelimit-{limit}-reset"))
            .and_then(|v| humantime::parse_rfc3339(v.trim()).ok())
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
        if let Some(reset) = reset {
            result = result.metric(format!("ratelimit_reset_{name}_seconds"), reset.as_secs_f64());
        }
    }
    if let Some(retry) = response.header("retry-after").and_then(|v| v.trim().parse::<f64>().ok()) {
        result = result.metric("retry_after_seconds", retry);
    }
    if let Some(id) = response.header("request-id") {
        result = result.detail("request_id", id);
    }
    result
}

selfmon_sdk::export_checker!(Anthropic);
