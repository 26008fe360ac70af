//! The `qdrant` checker: the server is ready, and its collections (all, or the configured ones) are green (grey,
//! "optimizations pending", is normal too).
//!
//! Endpoints and answers: `GET /readyz` (<https://qdrant.tech/documentation/guides/monitoring/#kubernetes-health-endpoints>),
//! `GET /collections` and `GET /collections/{name}` with `result.status` green/yellow/grey/red and
//! `result.points_count` (<https://api.qdrant.tech/api-reference/collections/get-collection>), the `api-key` header
//! (<https://qdrant.tech/documentation/guides/security/>).
//!
//! ```toml
//! [[check]]
//! name = "qdrant"
//! plugin = "qdrant"            # target defaults to QDRANT_URL, the key to QDRANT_API_KEY
//! [check.config]
//! collections = ["memories"]   # default: every collection
//! ```

use std::time::{Duration, Instant};

use selfmon_sdk::prelude::*;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Config {
    collections: Vec<String>,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

/// The most collections one run looks at when none are configured.
const MAX_COLLECTIONS: usize = 50;

pub struct Qdrant;

impl Checker for Qdrant {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "qdrant",
            env!("CARGO_PKG_VERSION"),
            "Checks that Qdrant is ready and its collections are green, with their point counts",
        )
        .default_target("${QDRANT_URL:-http://localhost:6333}")
        .config(
            Setting::list("collections", "Collections to check; empty means every collection")
                .default(Vec::<String>::new()),
        )
        .config(Setting::duration("degraded_after", "Report degraded when Qdrant takes longer to answer").default("1s"))
        .secret(Setting::text("api_key", "Sent as the api-key header").env("QDRANT_API_KEY"))
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let base = ctx.target().ok_or("set `target` to Qdrant's URL, such as http://localhost:6333 (or QDRANT_URL)")?;
        let started = Instant::now();
        let get = |path: &str| {
            let mut request = http::get(&http::url(base, path)).timeout(ctx.time_left());
            if let Some(key) = ctx.secret("api_key") {
                request = request.header("api-key", key);
            }
            request.send()
        };
        let ready = match get("readyz") {
            Ok(response) => response,
            Err(error) => return Ok(CheckResult::unhealthy(format!("Qdrant unreachable: {error}"))),
        };
        if let Some(verdict) = refusal(&ready) {
            return Ok(verdict);
        }
        if ready.status() != 200 {
            return Ok(CheckResult::unhealthy(format!(
                "Qdrant is not ready: HTTP {} {}",
                ready.status(),
                ready.text().trim()
            )));
        }

        let mut unchecked = 0;
        let names = if config.collections.is_empty() {
            let listing = match get("collections") {
                Ok(response) => response,
                Err(error) => return Ok(CheckResult::unhealthy(format!("Qdrant unreachable: {error}"))),
            };
            if let Some(verdict) = refusal(&listing) {
                return Ok(verdict);
            }
            let body: Option<Value> = listing.json().ok();
            let Some(list) = body.as_ref().and_then(|b| b["result"]["collections"].as_array()) else {
                return Ok(CheckResult::unhealthy(format!(
                    "Qdrant answered the collections list with HTTP {} and not the expected JSON",
                    listing.status()
                )));
            };
            let names: Vec<String> = list.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
            if names.len() > MAX_COLLECTIONS {
                unchecked = names.len() - MAX_COLLECTIONS;
            }
            names.into_iter().take(MAX_COLLECTIONS).collect()
        } else {
            config.collections.clone()
        };

        let mut problems = Vec::new();
        let mut worst = Status::Healthy;
        let mut result = CheckResult::healthy(String::new());
        let mut points_total = 0.0;
        for name in &names {
            let response = match get(&format!("collections/{}", encode(name))) {
                Ok(response) => response,
                Err(error) => return Ok(CheckResult::unhealthy(format!("Qdrant unreachable: {error}"))),
            };
            if response.status() == 404 {
                problems.push(format!("collection `{name}` does not exist"));
                worst = Status::Unhealthy;
                continue;
            }
            let body: Option<Value> = response.json().ok();
            let info = body.as_ref().map(|b| &b["result"]);
            let Some(status) = info.and_then(|i| i["status"].as_str()) else {
                problems.push(format!("collection `{name}`: HTTP {} without a status", response.status()));
                worst = Status::Unhealthy;
                continue;
            };
            let points = info.and_then(|i| i["points_count"].as_f64()).unwrap_or(0.0);
            points_total += points;
            // Grey means optimizations are pending until the next write: normal after a restart.
            let (code, severity) = match status {
                "green" => (0.0, Status::Healthy),
                "yellow" => (1.0, Status::Degraded),
                "grey" => (2.0, Status::Healthy),
                _ => (3.0, Status::Unhealthy),
            };
            if severity != Status::Healthy {
                problems.push(format!("collection `{name}` is {status}"));
                worst = worse(worst, severity);
            }
            result = result.metric_with("collection_points", points, &[("collection", name)]).metric_with(
                "collection_status",
                code,
                &[("collection", name)],
            );
        }

        let elapsed = started.elapsed();
        let counted = match unchecked {
            0 => format!("{} collections", names.len()),
            more => format!("the first {} of {} collections", names.len(), names.len() + more),
        };
        let head = format!("Qdrant ready, {counted}, {points_total} points, in {} ms", elapsed.as_millis());
        let (status, summary) = if !problems.is_empty() {
            (worst, format!("{head}: {}", problems.join("; ")))
        } else if elapsed > config.degraded_after {
            (Status::Degraded, format!("{head} (slower than {} ms)", config.degraded_after.as_millis()))
        } else {
            (Status::Healthy, head)
        };
        result.status = status;
        result.summary = summary;
        Ok(result.metric("response_time_seconds", elapsed.as_secs_f64()).metric("collections", names.len() as f64))
    }
}

/// A refused API key is the same answer whichever endpoint gave it.
fn refusal(response: &http::Response) -> Option<CheckResult> {
    matches!(response.status(), 401 | 403).then(|| {
        CheckResult::unhealthy(format!("Qdrant refused the request (HTTP {}): check the API key", response.status()))
    })
}

/// A collection name as one URL path segment.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn worse(a: Status, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Healthy => 0,
        Status::Degraded => 1,
        Status::Unhealthy => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

selfmon_sdk::export_checker!(Qdrant);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_are_one_path_segment() {
        assert_eq!(encode("memories_v2"), "memories_v2");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
