//! Silences: label matchers and a time span during which matching alerts are not notified. They stay visible,
//! and say which silence holds them back.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The longest a silence may last.
const MAX_SPAN: Duration = Duration::from_secs(366 * 86_400);
/// Matchers per silence at most, and the longest label or value.
const MAX_MATCHERS: usize = 16;
const MATCHER_BYTES: usize = 256;
const COMMENT_BYTES: usize = 1024;

/// A silence as a caller sends it: `POST /v1/silences` and the `createSilence` mutation.
#[derive(Debug, Clone, Deserialize, async_graphql::InputObject, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[graphql(name = "SilenceInput")]
pub struct SilenceRequest {
    /// Labels an alert must carry, exactly, to be silenced: `{"check": "db"}`, `{"alertname": "slow_responses"}`.
    /// `alertname` and `rule` match the alert's name and its rule.
    #[serde(default)]
    #[schema(required = true)]
    pub matchers: BTreeMap<String, String>,
    /// How long from `starts_at` (or now): `2h`, `30m`. Give this or `ends_at`.
    pub duration: Option<String>,
    /// RFC 3339; default now.
    pub starts_at: Option<String>,
    /// RFC 3339.
    pub ends_at: Option<String>,
    /// Why; required, as people reading the alert later need it.
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 1024)]
    pub comment: String,
}

/// A stored silence.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Silence {
    pub id: i64,
    pub matchers: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: Option<String>,
    pub comment: String,
    /// pending (not started), active or expired.
    pub state: String,
}

/// A silence in force, as the engine matches it.
#[derive(Debug, Clone)]
pub struct Active {
    pub id: i64,
    pub matchers: BTreeMap<String, String>,
}

impl Active {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl SilenceRequest {
    /// The times the silence holds, or every problem with the request.
    pub fn validate(&self, now: SystemTime) -> Result<(SystemTime, SystemTime), Vec<String>> {
        let mut problems = Vec::new();
        if self.matchers.is_empty() {
            problems.push("`matchers` is empty: a silence of everything is not allowed".to_string());
        }
        if self.matchers.len() > MAX_MATCHERS {
            problems.push(format!("`matchers`: at most {MAX_MATCHERS}"));
        }
        if self.matchers.iter().any(|(k, v)| k.is_empty() || k.len() > MATCHER_BYTES || v.len() > MATCHER_BYTES) {
            problems
                .push(format!("`matchers`: labels must be 1 to {MATCHER_BYTES} bytes, values at most {MATCHER_BYTES}"));
        }
        if self.comment.trim().is_empty() {
            problems.push("`comment` is required: say why".into());
        } else if self.comment.len() > COMMENT_BYTES {
            problems.push(format!("`comment` is longer than {COMMENT_BYTES} bytes"));
        }
        let time = |name: &str, text: &Option<String>, problems: &mut Vec<String>| {
            text.as_deref().and_then(|t| {
                humantime::parse_rfc3339_weak(t)
                    .map_err(|_| problems.push(format!("`{name}`: `{t}` is not an RFC 3339 time")))
                    .ok()
            })
        };
        let starts = time("starts_at", &self.starts_at, &mut problems).unwrap_or(now);
        let ends = match (&self.duration, time("ends_at", &self.ends_at, &mut problems)) {
            (Some(_), Some(_)) => {
                problems.push("give `duration` or `ends_at`, not both".into());
                None
            }
            (Some(text), None) => match humantime::parse_duration(text) {
                Ok(span) => Some(starts + span),
                Err(_) => {
                    problems.push(format!("`duration`: `{text}` is not a duration such as `2h` or `30m`"));
                    None
                }
            },
            (None, Some(ends)) => Some(ends),
            (None, None) => {
                if self.ends_at.is_none() {
                    problems.push("`duration` or `ends_at` is required".into());
                }
                None
            }
        };
        if let Some(ends) = ends {
            match ends.duration_since(starts) {
                Ok(span) if span.is_zero() => problems.push("the silence ends when it starts".into()),
                Ok(span) if span > MAX_SPAN => problems.push("a silence may last at most 366 days".into()),
                Ok(_) => {}
                Err(_) => problems.push("the silence ends before it starts".into()),
            }
            if ends <= now {
                problems.push("the silence would already be over".into());
            }
        }
        match (problems.is_empty(), ends) {
            (true, Some(ends)) => Ok((starts, ends)),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> SilenceRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn requests_are_checked_in_full() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ok = request(serde_json::json!({"matchers": {"check": "db"}, "duration": "2h", "comment": "migration"}));
        assert_eq!(ok.validate(now).unwrap(), (now, now + Duration::from_secs(7200)));
        let bad = request(serde_json::json!({"matchers": {}, "duration": "soon", "ends_at": "nope"}));
        let problems = bad.validate(now).unwrap_err();
        assert!(problems.iter().any(|p| p.contains("`matchers` is empty")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("`comment` is required")));
        assert!(problems.iter().any(|p| p.contains("`ends_at`: `nope`")));
        let past =
            request(serde_json::json!({"matchers": {"a": "b"}, "ends_at": "2020-01-01T00:00:00Z", "comment": "x"}));
        assert!(past.validate(now).unwrap_err().iter().any(|p| p.contains("ends before it starts")));
        let matcher = Active { id: 1, matchers: [("check".to_string(), "db".to_string())].into() };
        assert!(matcher.matches(&[("check".into(), "db".into()), ("alertname".into(), "x".into())].into()));
        assert!(!matcher.matches(&[("check".into(), "api".into())].into()));
    }
}
