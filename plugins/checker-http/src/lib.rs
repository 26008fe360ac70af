//! The `http` checker: requests the check's target and judges the status code, the body and the response time.
//!
//! ```toml
//! [[check]]
//! name = "website"
//! plugin = "http"
//! target = "https://example.com/health"
//! [check.config]
//! expect_status = [200, "3xx"]
//! body_contains = "ok"
//! expect_json = { status = "ok", checks.db = "up" }
//! degraded_after = "1s"
//! ```
//!
//! This is the reference plugin: it shows config with defaults, secrets, HTTP through the SDK, and results a person
//! can act on.

use std::collections::BTreeMap;
use std::time::Duration;

use selfmon_sdk::prelude::*;
use serde_json::Value;

/// The plugin's `[check.config]`; the defaults are declared in `info()` and filled in by the host.
#[derive(Debug, Deserialize)]
pub struct Config {
    method: String,
    expect_status: Vec<StatusMatch>,
    headers: BTreeMap<String, String>,
    body: Option<String>,
    body_contains: Option<String>,
    expect_json: Option<Value>,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
    #[serde(default, with = "optional_duration")]
    unhealthy_after: Option<Duration>,
}

/// An accepted status: an exact code (`200`) or a class (`"2xx"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusMatch {
    Code(u16),
    Class(String),
}

impl StatusMatch {
    fn matches(&self, status: u16) -> bool {
        match self {
            Self::Code(code) => *code == status,
            Self::Class(class) => class_digit(class) == Some(status / 100),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Code(code) => code.to_string(),
            Self::Class(class) => class.clone(),
        }
    }
}

fn class_digit(class: &str) -> Option<u16> {
    match class.as_bytes() {
        [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Some(u16::from(d - b'0')),
        _ => None,
    }
}

mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "selfmon_sdk::duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(d)| d))
    }
}

/// The `http` checker.
pub struct Http;

impl Checker for Http {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "http",
            env!("CARGO_PKG_VERSION"),
            "Requests the check's target URL and checks the status code, optionally the body, and the response time",
        )
        .config(Setting::text("method", "HTTP method").default("GET"))
        .config(
            Setting::list("expect_status", "Status codes that mean healthy: numbers, or classes such as \"2xx\"")
                .default([200]),
        )
        .config(
            Setting::table("headers", "Extra request headers; `user-agent` defaults to selfmon/VERSION")
                .default(serde_json::json!({})),
        )
        .config(Setting::text("body", "Request body to send"))
        .config(Setting::text("body_contains", "Text the response body must contain"))
        .config(Setting::table(
            "expect_json",
            "Fields the JSON response body must have, with these values; nested tables match nested objects",
        ))
        .config(Setting::duration("degraded_after", "Report degraded when the response takes longer").default("2s"))
        .config(Setting::duration("unhealthy_after", "Report unhealthy when the response takes longer"))
        .secret(Setting::text("bearer_token", "Sent as `Authorization: Bearer <token>`"))
        .secret(Setting::text("basic_auth", "`user:password`, sent as HTTP basic authentication"))
    }

    fn validate(config: &Config, ctx: &Context) -> Result<(), Error> {
        let target = ctx.target().ok_or("set `target` to the URL to check")?;
        if !(target.starts_with("http://") || target.starts_with("https://")) {
            return Err(format!("`target` must be an http:// or https:// URL, not `{target}`").into());
        }
        if config.expect_status.is_empty() {
            return Err("`expect_status` lists no status".into());
        }
        for status in &config.expect_status {
            match status {
                StatusMatch::Code(code) if !(100..=599).contains(code) => {
                    return Err(format!("`expect_status`: {code} is not an HTTP status").into());
                }
                StatusMatch::Class(class) if class_digit(class).is_none() => {
                    return Err(format!("`expect_status`: `{class}` is neither a code nor a class like \"2xx\"").into());
                }
                _ => {}
            }
        }
        if let Some(unhealthy) = config.unhealthy_after
            && unhealthy < config.degraded_after
        {
            return Err("`unhealthy_after` is shorter than `degraded_after`".into());
        }
        Ok(())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        Self::validate(&config, ctx)?;
        let url = ctx.target().unwrap_or_default();
        let mut request = http::request(&config.method, url).timeout(ctx.time_left());
        if !config.headers.keys().any(|name| name.eq_ignore_ascii_case("user-agent")) {
            request = request.header("user-agent", concat!("selfmon/", env!("CARGO_PKG_VERSION")));
        }
        for (name, value) in &config.headers {
            request = request.header(name, value);
        }
        if let Some(token) = ctx.secret("bearer_token") {
            request = request.bearer_auth(token);
        }
        if let Some(credentials) = ctx.secret("basic_auth") {
            request = request.header("authorization", format!("Basic {}", base64(credentials.as_bytes())));
        }
        if let Some(body) = &config.body {
            request = request.body(body.as_bytes());
        }

        // Shown without credentials or query, where API keys often travel.
        let shown = http::redact_url(url);
        let response = match request.send() {
            Ok(response) => response,
            Err(error) => {
                return Ok(CheckResult::unhealthy(format!("{} {shown}: {error}", config.method)).detail("url", &shown));
            }
        };
        Ok(judge(&config, &shown, &response))
    }
}

fn judge(config: &Config, url: &str, response: &http::Response) -> CheckResult {
    let elapsed = response.elapsed();
    let status = response.status();
    let took = format!("HTTP {status} in {} ms", elapsed.as_millis());
    let verdict = if !config.expect_status.iter().any(|m| m.matches(status)) {
        let expected: Vec<String> = config.expect_status.iter().map(StatusMatch::describe).collect();
        CheckResult::unhealthy(format!("{took} (expected {})", expected.join(" or ")))
    } else if let Some(problem) = body_problem(config, response) {
        CheckResult::unhealthy(format!("{took}, but {problem}"))
    } else if config.unhealthy_after.is_some_and(|limit| elapsed > limit) {
        let limit = config.unhealthy_after.unwrap_or_default();
        CheckResult::unhealthy(format!("{took} (slower than {} ms)", limit.as_millis()))
    } else if elapsed > config.degraded_after {
        CheckResult::degraded(format!("{took} (slower than {} ms)", config.degraded_after.as_millis()))
    } else {
        CheckResult::healthy(took)
    };
    let mut result = verdict
        .detail("url", url)
        .detail("method", &config.method)
        .detail("status_code", status)
        .metric("response_time_seconds", elapsed.as_secs_f64())
        .metric("time_to_first_byte_seconds", response.time_to_first_byte().as_secs_f64())
        .metric("http_status_code", f64::from(status))
        .metric("response_size_bytes", response.body().len() as f64);
    if let Some(content_type) = response.header("content-type") {
        result = result.detail("content_type", content_type);
    }
    result
}

/// What is wrong with the body, if anything.
fn body_problem(config: &Config, response: &http::Response) -> Option<String> {
    if let Some(needle) = &config.body_contains
        && !response.text().contains(needle.as_str())
    {
        return Some(format!("the body does not contain `{needle}`"));
    }
    let expected = config.expect_json.as_ref()?;
    let actual: Value = match response.json() {
        Ok(actual) => actual,
        Err(_) => return Some("the body is not JSON".into()),
    };
    json_mismatch(expected, &actual, "")
}

/// The first field of `expected` that `actual` lacks or holds differently, described with its dotted path.
fn json_mismatch(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match expected {
        Value::Object(fields) => fields.iter().find_map(|(key, want)| {
            let field = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            match actual.get(key) {
                Some(got) => json_mismatch(want, got, &field),
                None => Some(format!("the JSON has no `{field}`")),
            }
        }),
        _ if expected == actual => None,
        _ => Some(format!("JSON `{path}` is {actual}, expected {expected}")),
    }
}

/// Standard base64 (RFC 4648) for the basic-auth header; small enough not to warrant a dependency in the plugin.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

selfmon_sdk::export_checker!(Http);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn status_classes_match_their_hundred() {
        let class = StatusMatch::Class("2xx".into());
        assert!(class.matches(204));
        assert!(!class.matches(301));
        assert!(StatusMatch::Code(503).matches(503));
        assert_eq!(class_digit("6xx"), None);
    }

    #[test]
    fn json_mismatch_names_the_nested_field() {
        let expected = serde_json::json!({"status": "ok", "checks": {"db": "up"}});
        let good = serde_json::json!({"status": "ok", "checks": {"db": "up", "cache": "down"}});
        assert_eq!(json_mismatch(&expected, &good, ""), None);
        let bad = serde_json::json!({"status": "ok", "checks": {"db": "down"}});
        assert_eq!(json_mismatch(&expected, &bad, "").unwrap(), r#"JSON `checks.db` is "down", expected "up""#);
        let missing = serde_json::json!({"status": "ok"});
        assert_eq!(json_mismatch(&expected, &missing, "").unwrap(), "the JSON has no `checks`");
    }
}
