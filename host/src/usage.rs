//! Events from the platform's services (user activity, AI usage, satisfaction ratings, conversations and
//! assessments), what AI usage costs, and the counters the alert rules read.
//!
//! AI cost comes from the price table of `[ai]` (dollars per million input and output tokens). Two metrics are
//! kept as stored samples for the rules: `ai_cost_dollars_total{provider, model}`, a counter of the dollars
//! received so far, and `user_satisfaction_rating`, one sample per rating at the rating's time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::config::{AiConfig, Price};
use crate::storage::{Sample, Storage, StorageError, to_millis};

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

/// The price table shipped with selfmon: US dollars per million tokens, from the providers' published price
/// lists (https://openai.com/api/pricing, https://www.anthropic.com/pricing#api), standard tier.
pub const DEFAULT_PRICES: [(&str, f64, f64); 24] = [
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4-turbo", 10.0, 30.0),
    ("gpt-4", 30.0, 60.0),
    ("gpt-3.5-turbo", 0.5, 1.5),
    ("o1", 15.0, 60.0),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-haiku", 0.25, 1.25),
];

/// Model names to prices, matched exactly or by the longest entry a reported name starts with
/// (`gpt-4o-2024-08-06` is `gpt-4o`, `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`).
#[derive(Debug, Clone, Default)]
pub struct Prices {
    /// Longest names first.
    table: Vec<(String, Price)>,
}

impl Prices {
    pub fn from_config(ai: &AiConfig) -> Self {
        let mut table: BTreeMap<String, Price> = BTreeMap::new();
        if ai.default_prices {
            for (model, input, output) in DEFAULT_PRICES {
                table.insert(model.into(), Price { input, output });
            }
        }
        for (model, price) in &ai.prices {
            table.insert(model.to_ascii_lowercase(), *price);
        }
        let mut table: Vec<(String, Price)> = table.into_iter().collect();
        table.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self { table }
    }

    /// The model's table entry and price; a provider prefix (`openai/gpt-4o`) is ignored.
    pub fn lookup(&self, model: &str) -> Option<(&str, Price)> {
        let model = model.to_ascii_lowercase();
        let model = model.rsplit('/').next().unwrap_or(&model);
        self.table
            .iter()
            .find(|(name, _)| {
                model == name
                    || model.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(['-', '@', ':', '.']))
            })
            .map(|(name, price)| (name.as_str(), *price))
    }

    /// What the tokens cost in US dollars, when the model has a price.
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Option<f64> {
        self.lookup(model)
            .map(|(_, price)| (input_tokens as f64 * price.input + output_tokens as f64 * price.output) / 1e6)
    }
}

/// Checks `[ai]`; every problem is named.
pub fn check_config(ai: &AiConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(budget) = ai.monthly_budget
        && (!budget.is_finite() || budget < 0.0)
    {
        problems.push("`[ai] monthly_budget` must be a number of dollars, 0 or more".into());
    }
    for (model, price) in &ai.prices {
        if !(price.input.is_finite() && price.output.is_finite() && price.input >= 0.0 && price.output >= 0.0) {
            problems.push(format!("`[ai.prices]` `{model}`: prices must be dollars per million tokens, 0 or more"));
        }
        if model.trim().is_empty() {
            problems.push("`[ai.prices]` has an empty model name".into());
        }
    }
    problems
}

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

/// Providers as the OpenTelemetry GenAI conventions name them (`gen_ai.provider.name`); others are `other` in
/// metric labels.
const PROVIDERS: [&str; 14] = [
    "openai",
    "anthropic",
    "azure.ai.openai",
    "azure.ai.inference",
    "aws.bedrock",
    "gcp.gemini",
    "gcp.vertex_ai",
    "gcp.gen_ai",
    "cohere",
    "mistral_ai",
    "groq",
    "deepseek",
    "perplexity",
    "x_ai",
];

/// The provider and model of an AI usage event as metric labels: a known provider or `other`, the model's price
/// table entry or `other` (a label per invented name would grow without bound).
pub fn labels(prices: &Prices, event: &NewEvent) -> (String, String) {
    let provider = event.provider.as_deref().unwrap_or_default();
    let provider = PROVIDERS.iter().find(|p| **p == provider).copied().unwrap_or("other");
    let model = event.model.as_deref().and_then(|m| prices.lookup(m)).map_or("other", |(name, _)| name);
    (provider.to_string(), model.to_string())
}

/// Where events go: priced, stored, counted.
pub struct Usage {
    storage: Storage,
    pub prices: Prices,
    telemetry: Arc<crate::telemetry::Telemetry>,
}

impl Usage {
    pub fn new(storage: Storage, ai: &AiConfig, telemetry: Arc<crate::telemetry::Telemetry>) -> Self {
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
            keys.push((event.kind == "ai_usage").then(|| labels(&self.prices, event)));
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
                time: crate::storage::from_millis(at),
                value: event.rating.unwrap_or_default(),
            });
        }
        let inserted = self.storage.write_events(events.clone(), keys, ratings).await?;
        let stored: Vec<NewEvent> =
            events.into_iter().zip(&inserted).filter(|(_, inserted)| **inserted).map(|(event, _)| event).collect();
        self.telemetry.observe_events(&stored, &self.prices);
        Ok(stored.len())
    }
}

impl Storage {
    /// Store events in one transaction (user ids pseudonymized, metadata redacted), with the rating samples and the
    /// AI cost counters they move; `keys` are the counter labels of AI usage events. Which events were stored.
    ///
    /// `ai_cost_dollars_total` is read and advanced inside the transaction, so it only ever grows, and each change
    /// writes the total before it (1 ms earlier) beside the new one: an `increase` over any window sees every
    /// change in it. An event without a user takes the user its trace's spans have.
    pub async fn write_events(
        &self,
        mut events: Vec<NewEvent>,
        keys: Vec<Option<(String, String)>>,
        samples: Vec<Sample>,
    ) -> Result<Vec<bool>, StorageError> {
        let privacy = self.privacy.clone();
        for event in &mut events {
            if let Some(user) = &mut event.user_id {
                *user = privacy.user(user);
            }
            if let Some(metadata) = &mut event.metadata {
                privacy.redact_map(metadata);
            }
        }
        self.apply(move |db| {
            let mut insert = db.prepare_cached(
                "INSERT OR IGNORE INTO events (ts, kind, user_id, action, service, provider, model, input_tokens,
                                               output_tokens, latency_ms, success, cost, rating, trace_id, span_id,
                                               metadata)
                 VALUES (?1, ?2, COALESCE(?3, (SELECT user_id FROM spans WHERE trace_id = ?14 AND user_id IS NOT NULL
                                               LIMIT 1)),
                         ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let mut inserted = Vec::with_capacity(events.len());
            let mut increments: BTreeMap<(String, String), f64> = BTreeMap::new();
            for (e, key) in events.iter().zip(&keys) {
                let stored = insert.execute(rusqlite::params![
                    to_millis(e.ts),
                    e.kind,
                    e.user_id,
                    e.action,
                    e.service,
                    e.provider,
                    e.model,
                    e.input_tokens.map(u64::cast_signed),
                    e.output_tokens.map(u64::cast_signed),
                    e.latency_ms,
                    e.success,
                    e.cost,
                    e.rating,
                    e.trace_id,
                    e.span_id,
                    e.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string()),
                ])? == 1;
                if stored && let Some(key) = key {
                    *increments.entry(key.clone()).or_default() += e.cost.unwrap_or(0.0);
                }
                inserted.push(stored);
            }
            for sample in &samples {
                crate::storage::insert_sample(db, sample)?;
            }
            let now = SystemTime::now();
            for ((provider, model), increment) in increments {
                let labels = vec![("model".to_string(), model), ("provider".to_string(), provider)];
                let before: f64 = db
                    .prepare_cached(
                        "SELECT s.value FROM series AS r JOIN samples AS s ON s.series_id = r.id
                         WHERE r.name = 'ai_cost_dollars_total' AND r.labels = ?1 ORDER BY s.ts DESC LIMIT 1",
                    )?
                    .query_row([serde_json::to_string(&labels).unwrap_or_default()], |row| row.get(0))
                    .optional()?
                    .unwrap_or(0.0);
                let sample = |time: SystemTime, value: f64| Sample {
                    name: "ai_cost_dollars_total".into(),
                    labels: labels.clone(),
                    time,
                    value,
                };
                crate::storage::insert_sample(db, &sample(now - Duration::from_millis(1), before))?;
                crate::storage::insert_sample(db, &sample(now, before + increment))?;
            }
            Ok(inserted)
        })
        .await
    }

    /// Remove every event, span and log record of a user (stored under any of `ids`), and every log record and
    /// event of the user's traces.
    pub async fn erase_user(&self, ids: Vec<String>) -> Result<Erased, StorageError> {
        self.apply(move |db| {
            let mut erased = Erased::default();
            for id in &ids {
                let traces = "SELECT DISTINCT trace_id FROM spans WHERE user_id = ?1";
                erased.log_records += db.execute(
                    &format!(
                        "DELETE FROM logs WHERE user_id = ?1 OR (trace_id IS NOT NULL AND trace_id IN ({traces}))"
                    ),
                    [id],
                )? as u64;
                erased.events += db.execute(
                    &format!(
                        "DELETE FROM events WHERE user_id = ?1 OR (trace_id IS NOT NULL AND trace_id IN ({traces}))"
                    ),
                    [id],
                )? as u64;
                erased.spans += db.execute("DELETE FROM spans WHERE user_id = ?1", [id])? as u64;
            }
            Ok(erased)
        })
        .await
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
    fn models_take_the_longest_price_entry_they_start_with() {
        let mut ai = AiConfig::default();
        ai.prices.insert("gpt-4o".into(), Price { input: 5.0, output: 15.0 });
        ai.prices.insert("my-finetune".into(), Price { input: 1.0, output: 2.0 });
        let prices = Prices::from_config(&ai);
        assert_eq!(prices.lookup("gpt-4o-2024-08-06").map(|p| p.0), Some("gpt-4o"));
        assert_eq!(prices.lookup("gpt-4o-mini-2024-07-18").map(|p| p.0), Some("gpt-4o-mini"));
        assert_eq!(prices.lookup("openai/GPT-4o").map(|p| p.0), Some("gpt-4o"));
        assert_eq!(prices.lookup("claude-3-5-sonnet-20241022").map(|p| p.0), Some("claude-3-5-sonnet"));
        assert_eq!(prices.lookup("gpt-4oz"), None, "a different model, not a version of gpt-4o");
        assert_eq!(prices.lookup("llama-3"), None);
        // 1200 input and 300 output tokens at the operator's $5 and $15 per million.
        let cost = prices.cost("gpt-4o", 1200, 300).unwrap();
        assert!((cost - (1200.0 * 5.0 + 300.0 * 15.0) / 1e6).abs() < 1e-12, "{cost}");
        let none = Prices::from_config(&AiConfig { default_prices: false, ..AiConfig::default() });
        assert_eq!(none.lookup("gpt-4o"), None);
    }

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
