//! Events from the platform's services (user activity, AI usage, satisfaction ratings, conversations and
//! assessments): each checked on its own, priced ([`cost`](crate::analytics::cost)), stored and counted.
//!
//! Two metrics are kept as stored samples for the rules: `ai_cost_dollars_total{provider, model}`, a counter of the
//! dollars received so far, and `user_satisfaction_rating`, one sample per rating at the rating's time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::analytics::cost::{Prices, labels};
use crate::config::AiConfig;
use crate::ops::telemetry::Telemetry;
use crate::storage::{Sample, Storage, StorageError, from_millis, to_millis};

/// The event types `POST /v1/events` takes.
pub const KINDS: [&str; 7] = [
    "user_activity",
    "ai_usage",
    "satisfaction",
    "conversation_started",
    "conversation_completed",
    "assessment_started",
    "assessment_completed",
];

/// Events one request may carry.
pub const MAX_BATCH: usize = 10_000;
/// How far ahead of selfmon's clock an event's time may be.
const MAX_AHEAD: Duration = Duration::from_secs(300);
/// The longest text field (`action`, `model`, ...) and user id taken.
const MAX_TEXT: usize = 256;

/// One event as a service sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// One of `user_activity`, `ai_usage`, `satisfaction`, `conversation_started`, `conversation_completed`,
    /// `assessment_started`, `assessment_completed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The platform's user id; stored as a pseudonym when `[privacy] pseudonymize_users` is on.
    pub user_id: Option<String>,
    /// RFC 3339 or Unix seconds; default: when received.
    #[schema(value_type = Option<String>)]
    pub timestamp: Option<serde_json::Value>,
    /// What the user did (`message_sent`, `command_start`); required for `user_activity`.
    pub action: Option<String>,
    /// The service that sent it.
    pub service: Option<String>,
    /// For `ai_usage`: `openai`, `anthropic`, ...; and the model as the provider names it.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub latency_ms: Option<f64>,
    /// Default true.
    pub success: Option<bool>,
    /// What the call cost, when the service knows better than the price table.
    pub cost_usd: Option<f64>,
    /// For `satisfaction`: 1 to 5.
    pub rating: Option<f64>,
    /// Links the event to a trace.
    pub trace_id: Option<String>,
    /// Anything else, as a JSON object; redacted like log messages.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An event to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub ts: SystemTime,
    pub kind: &'static str,
    /// As sent; pseudonymized when stored.
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub service: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub latency_ms: Option<f64>,
    pub success: Option<bool>,
    /// Dollars; filled from the price table when the model has a price.
    pub cost: Option<f64>,
    pub rating: Option<f64>,
    pub trace_id: Option<String>,
    /// The span an AI usage event was taken from.
    pub span_id: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl NewEvent {
    pub fn new(kind: &'static str, ts: SystemTime) -> Self {
        Self {
            ts,
            kind,
            user_id: None,
            action: None,
            service: None,
            provider: None,
            model: None,
            input_tokens: None,
            output_tokens: None,
            latency_ms: None,
            success: None,
            cost: None,
            rating: None,
            trace_id: None,
            span_id: None,
            metadata: None,
        }
    }
}

/// One event of a batch that was not taken, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    /// Its position in the batch, from 0.
    pub index: usize,
    pub error: String,
}

/// An event as received, checked: the event, or every problem with it.
pub fn check_event(value: serde_json::Value, now: SystemTime, oldest: SystemTime) -> Result<NewEvent, String> {
    // The error names the field, as the caller wrote it.
    let request: EventRequest = serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string() {
        path if path == "." => e.inner().to_string(),
        path => format!("`{path}`: {}", e.inner()),
    })?;
    let mut problems = Vec::new();
    let kind = KINDS.iter().find(|k| **k == request.kind).copied();
    if kind.is_none() {
        problems.push(format!("`type` `{}` is not one of {}", request.kind, KINDS.join(", ")));
    }
    let text = |name: &str, value: &Option<String>, problems: &mut Vec<String>| {
        if let Some(value) = value
            && (value.trim().is_empty() || value.len() > MAX_TEXT)
        {
            problems.push(format!("`{name}` must be 1 to {MAX_TEXT} bytes"));
        }
    };
    for (name, value) in [
        ("user_id", &request.user_id),
        ("action", &request.action),
        ("service", &request.service),
        ("provider", &request.provider),
        ("model", &request.model),
    ] {
        text(name, value, &mut problems);
    }
    let ts = match &request.timestamp {
        None => now,
        Some(serde_json::Value::Number(seconds)) => match seconds
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .and_then(|since| SystemTime::UNIX_EPOCH.checked_add(since))
        {
            Some(at) => at,
            None => {
                problems.push("`timestamp` must be Unix seconds or RFC 3339".into());
                now
            }
        },
        Some(serde_json::Value::String(text)) => humantime::parse_rfc3339_weak(text).unwrap_or_else(|_| {
            problems.push(format!("`timestamp` `{text}` is not RFC 3339"));
            now
        }),
        Some(_) => {
            problems.push("`timestamp` must be Unix seconds or RFC 3339".into());
            now
        }
    };
    if ts > now + MAX_AHEAD {
        problems.push("`timestamp` is more than 5 minutes ahead of selfmon's clock".into());
    }
    if ts < oldest {
        problems.push("`timestamp` is older than `[retention] events`".into());
    }
    match kind {
        Some("user_activity") if request.action.is_none() => problems.push("`action` is required".into()),
        Some("ai_usage") => {
            if request.provider.is_none() || request.model.is_none() {
                problems.push("`provider` and `model` are required".into());
            }
            if request.latency_ms.is_some_and(|l| !l.is_finite() || l < 0.0) {
                problems.push("`latency_ms` must be 0 or more".into());
            }
            if request.cost_usd.is_some_and(|c| !c.is_finite() || c < 0.0) {
                problems.push("`cost_usd` must be 0 or more".into());
            }
        }
        Some("satisfaction") => match request.rating {
            Some(rating) if (1.0..=5.0).contains(&rating) => {}
            Some(rating) => problems.push(format!("`rating` must be between 1 and 5, not {rating}")),
            None => problems.push("`rating` is required".into()),
        },
        _ => {}
    }
    if let Some(trace) = &request.trace_id
        && (trace.len() != 32 || !trace.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        problems.push("`trace_id` must be 32 hex digits".into());
    }
    let Some(kind) = kind.filter(|_| problems.is_empty()) else {
        return Err(problems.join("; "));
    };
    let ai = kind == "ai_usage";
    Ok(NewEvent {
        ts,
        kind,
        user_id: request.user_id,
        action: request.action,
        service: request.service,
        provider: request.provider.map(|p| p.to_ascii_lowercase()),
        model: request.model,
        input_tokens: request.input_tokens.or(ai.then_some(0)),
        output_tokens: request.output_tokens.or(ai.then_some(0)),
        latency_ms: request.latency_ms,
        success: request.success.or(ai.then_some(true)),
        cost: request.cost_usd,
        rating: request.rating,
        trace_id: request.trace_id.map(|t| t.to_ascii_lowercase()),
        span_id: None,
        metadata: request.metadata,
    })
}

/// Where events go: priced, stored, counted.
pub struct Usage {
    storage: Storage,
    pub prices: Prices,
    telemetry: Arc<Telemetry>,
}

impl Usage {
    pub fn new(storage: Storage, ai: &AiConfig, telemetry: Arc<Telemetry>) -> Self {
        Self { storage, prices: Prices::from_config(ai), telemetry }
    }

    /// Price, store and count events; returns how many were stored (an AI usage event of a span stored before is
    /// not stored again) once they are committed.
    pub async fn record(&self, mut events: Vec<NewEvent>) -> Result<usize, StorageError> {
        let mut keys = Vec::with_capacity(events.len());
        for event in &mut events {
            if event.kind == "ai_usage" && event.cost.is_none() {
                let model = event.model.as_deref().unwrap_or_default();
                event.cost = self.prices.cost(model, event.input_tokens.unwrap_or(0), event.output_tokens.unwrap_or(0));
            }
            keys.push(
                (event.kind == "ai_usage")
                    .then(|| labels(&self.prices, event.provider.as_deref(), event.model.as_deref())),
            );
        }
        let mut ratings = Vec::new();
        // Ratings sharing a millisecond are moved apart by one, so each stays a sample of its own.
        let mut rating_times = std::collections::BTreeSet::new();
        for event in events.iter().filter(|e| e.kind == "satisfaction") {
            let mut at = to_millis(event.ts);
            while !rating_times.insert(at) {
                at += 1;
            }
            ratings.push(Sample {
                name: "user_satisfaction_rating".into(),
                labels: Vec::new(),
                time: from_millis(at),
                value: event.rating.unwrap_or_default(),
            });
        }
        let inserted = self.storage.write_events(events.clone(), keys, ratings).await?;
        let stored: Vec<NewEvent> =
            events.into_iter().zip(&inserted).filter(|(_, inserted)| **inserted).map(|(event, _)| event).collect();
        for event in &stored {
            self.telemetry.observe_event(event.kind);
            if event.kind == "ai_usage" {
                let (provider, model) = labels(&self.prices, event.provider.as_deref(), event.model.as_deref());
                let tokens = (event.input_tokens.unwrap_or(0), event.output_tokens.unwrap_or(0));
                let (ok, cost) = (event.success.unwrap_or(true), event.cost.unwrap_or(0.0));
                self.telemetry.observe_ai_request(&provider, &model, ok, tokens, cost);
            }
            if let Some(rating) = event.rating.filter(|_| event.kind == "satisfaction") {
                self.telemetry.observe_rating(rating);
            }
        }
        Ok(stored.len())
    }
}

/// What `DELETE /v1/users/{user_id}/data` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Erased {
    pub events: u64,
    pub spans: u64,
    pub log_records: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked_field_by_field() {
        let now = SystemTime::now();
        let oldest = now - Duration::from_secs(86_400);
        let check = |value: serde_json::Value| check_event(value, now, oldest);
        let event = check(serde_json::json!({"type": "ai_usage", "provider": "OpenAI", "model": "gpt-4o",
            "input_tokens": 10, "user_id": "42"}))
        .unwrap();
        assert_eq!(
            (event.provider.as_deref(), event.output_tokens, event.success),
            (Some("openai"), Some(0), Some(true))
        );
        let error = check(serde_json::json!({"type": "satisfaction", "rating": 7})).unwrap_err();
        assert_eq!(error, "`rating` must be between 1 and 5, not 7");
        let error = check(serde_json::json!({"type": "user_activity"})).unwrap_err();
        assert_eq!(error, "`action` is required");
        let error = check(serde_json::json!({"type": "satisfaction", "rating": "4"})).unwrap_err();
        assert!(error.starts_with("`rating`: invalid type: string \"4\""), "{error}");
        let error = check(serde_json::json!({"type": "login", "colour": 1})).unwrap_err();
        assert!(error.contains("unknown field `colour`"), "{error}");
        let error = check(serde_json::json!({"type": "conversation_started", "timestamp": "yesterday"})).unwrap_err();
        assert!(error.contains("is not RFC 3339"), "{error}");
        let ahead = humantime::format_rfc3339(now + Duration::from_secs(3600)).to_string();
        let error = check(serde_json::json!({"type": "conversation_started", "timestamp": ahead})).unwrap_err();
        assert!(error.contains("ahead"), "{error}");
        let seconds = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64() - 60.0;
        let event = check(serde_json::json!({"type": "assessment_completed", "timestamp": seconds})).unwrap();
        assert_eq!(to_millis(event.ts), (seconds * 1000.0) as i64, "Unix seconds");
        for hostile in [serde_json::json!(1e20), serde_json::json!(-5), serde_json::json!(1.7e308)] {
            let error = check(serde_json::json!({"type": "conversation_started", "timestamp": hostile})).unwrap_err();
            assert!(error.contains("`timestamp`"), "{hostile}: {error}");
        }
    }
}
