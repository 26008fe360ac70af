//! Durations in config, written as text: `"250ms"`, `"10s"`, `"1m 30s"`.
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     #[serde(with = "selfmon_sdk::duration")]
//!     slow_after: Duration,
//! }
//!
//! let config: Config = serde_json::from_str(r#"{"slow_after": "1500ms"}"#).unwrap();
//! assert_eq!(config.slow_after, Duration::from_millis(1500));
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};

/// Parse a duration written as text (`"250ms"`, `"6m0s"`, `"1h 30m"`), as APIs write them in headers too.
pub fn parse(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// Parse a duration from text.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| de::Error::custom(format!("`{text}` is not a duration such as \"10s\" or \"250ms\": {e}")))
}

/// Write a duration as text.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}
