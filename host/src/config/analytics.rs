//! The tables of the config about what the platform's services send: `[privacy]`, `[ai]` and `[traces]`.

use std::collections::BTreeMap;

use bytesize::ByteSize;
use serde::Deserialize;

use super::SecretRef;

/// `[privacy]`: how user ids and personal data are handled before anything is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Store user ids as keyed hashes (HMAC-SHA256): the same user always gets the same pseudonym, and the raw id
    /// is never stored. The API takes raw ids and pseudonymizes them before it looks.
    pub pseudonymize_users: bool,
    /// The pseudonymization key: `env:NAME`, `file:/path`, or the value itself. When absent, a random key is made
    /// once and kept beside the database (`privacy.key`, readable by its owner only). Changing the key gives every
    /// user a new pseudonym.
    pub key: Option<SecretRef>,
    /// Redact the built-in patterns (emails, phone numbers, card-like numbers, bearer tokens, API keys, Telegram
    /// bot tokens) from log messages, span attributes and event metadata before they are stored.
    pub default_patterns: bool,
    /// Further patterns, redacted as well.
    pub patterns: Vec<PatternConfig>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self { pseudonymize_users: true, key: None, default_patterns: true, patterns: Vec::new() }
    }
}

/// One `[[privacy.patterns]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Shown in place of what matched: `[redacted:NAME]`.
    pub name: String,
    /// A regular expression (Rust `regex` syntax).
    pub regex: String,
}

/// `[ai]`: what AI calls cost, and what may be spent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    /// Spend in US dollars over any 24 hours above which the default `high_ai_costs` rule fires.
    pub daily_budget: f64,
    /// Spend in US dollars per calendar month (UTC) that the analytics compare against; none when absent.
    pub monthly_budget: Option<f64>,
    /// Start from the built-in price table (see the README); `prices` adds models and overrides its entries.
    pub default_prices: bool,
    /// US dollars per million tokens, by model: `"gpt-4o" = { input = 2.5, output = 10.0 }`. A model reported
    /// with a suffix (`gpt-4o-2024-08-06`) takes the price of the longest entry it starts with.
    pub prices: BTreeMap<String, Price>,
}

impl Default for AiConfig {
    fn default() -> Self {
        Self { daily_budget: 50.0, monthly_budget: None, default_prices: true, prices: BTreeMap::new() }
    }
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// `[traces]`: OTLP/HTTP ingestion of spans and logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// Moved to `[ingest] max_inflated`, which holds every ingest route; set here, it is a config error that says so.
    pub max_inflated: Option<ByteSize>,
    /// Attributes kept per span at most; the rest are counted as dropped.
    pub max_attributes: usize,
    /// A listener of its own for OTLP/HTTP (`/v1/traces`, `/v1/logs`), on the port exporters send to by default:
    /// `127.0.0.1:4318`. The API's keys and limits hold there as on the API.
    pub otlp_listen: Option<std::net::SocketAddr>,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self { max_inflated: None, max_attributes: 128, otlp_listen: None }
    }
}
