//! Health checks: the [`Checker`] trait and what goes in and out of it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::__private::types;
use crate::Error;
use crate::info::PluginInfo;

/// A health check. Implement it for a unit struct and export it with [`export_checker!`](crate::export_checker).
pub trait Checker {
    /// The check's `[check.config]` table. The host has already rejected undeclared keys, added the declared
    /// defaults and checked the value kinds; deserialising into this type is the plugin's own, finer check.
    type Config: DeserializeOwned;

    /// The plugin's name, version, description and the settings it accepts.
    fn info() -> PluginInfo;

    /// Further checks of a configured instance, run when selfmon loads its config (`selfmon config check` runs them
    /// too). Contact nothing here. By default every config that deserialises is valid.
    fn validate(config: &Self::Config, ctx: &Context) -> Result<(), Error> {
        let _ = (config, ctx);
        Ok(())
    }

    /// Run the check once.
    ///
    /// Return a [`CheckResult`] for every answer the service gave, unhealthy ones included. Return `Err` only when
    /// the check could not be carried out at all (a config the plugin cannot use, a bug): selfmon then reports the
    /// run as unknown with the error's message.
    fn check(config: Self::Config, ctx: &Context) -> Result<CheckResult, Error>;
}

/// What a check knows about the configured instance it is running for.
#[derive(Debug)]
pub struct Context {
    name: String,
    target: Option<String>,
    config: Vec<(String, String)>,
    secrets: BTreeMap<String, String>,
    timeout: Duration,
    started_ns: u64,
}

impl Context {
    pub(crate) fn new(request: types::CheckRequest) -> Self {
        Self {
            name: request.name,
            target: request.target,
            config: request.config,
            secrets: request.secrets.into_iter().collect(),
            timeout: Duration::from_millis(request.timeout_ms.into()),
            started_ns: now_ns(),
        }
    }

    /// The check's name in the operator's config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The check's `target` (a URL, `host:port`, ...), if configured. Connections to it are granted.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// A secret from `[check.secrets]`, if the operator set it. Never put it into a result or a log record.
    pub fn secret(&self, key: &str) -> Option<&str> {
        self.secrets.get(key).map(String::as_str)
    }

    /// The whole time the host allows for this call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The time left before the host stops this call, less a small margin so the plugin can still report a slow
    /// service itself. Use it as the timeout of network calls.
    pub fn time_left(&self) -> Duration {
        let elapsed = Duration::from_nanos(now_ns().saturating_sub(self.started_ns));
        let margin = (self.timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(250));
        self.timeout.saturating_sub(elapsed).saturating_sub(margin)
    }

    pub(crate) fn parse_config<T: DeserializeOwned>(&self) -> Result<T, String> {
        crate::parse::config(&self.config)
    }
}

#[cfg(target_arch = "wasm32")]
fn now_ns() -> u64 {
    wasip2::clocks::monotonic_clock::now()
}

#[cfg(not(target_arch = "wasm32"))]
fn now_ns() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Health of the checked service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Working as expected.
    Healthy,
    /// Working, but slow, close to a limit or partly failing.
    Degraded,
    /// Not working.
    Unhealthy,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Prometheus-style, with the unit as a suffix: `response_time_seconds`, `connections_used_ratio`.
    pub name: String,
    pub value: f64,
    pub labels: Vec<(String, String)>,
}

/// The outcome of one run: a status, one line for people, details and metrics.
///
/// ```
/// use selfmon_sdk::{CheckResult, Status};
///
/// let result = CheckResult::new(Status::Degraded, "HTTP 200 in 2300 ms (slow: over 1000 ms)")
///     .detail("url", "https://example.com/health")
///     .metric("response_time_seconds", 2.3);
/// assert_eq!(result.status, Status::Degraded);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub status: Status,
    pub summary: String,
    pub details: Vec<(String, String)>,
    pub metrics: Vec<Metric>,
}

impl CheckResult {
    /// A result with a status and a one-line summary.
    pub fn new(status: Status, summary: impl Into<String>) -> Self {
        Self { status, summary: summary.into(), details: Vec::new(), metrics: Vec::new() }
    }

    /// A healthy result.
    pub fn healthy(summary: impl Into<String>) -> Self {
        Self::new(Status::Healthy, summary)
    }

    /// A degraded result.
    pub fn degraded(summary: impl Into<String>) -> Self {
        Self::new(Status::Degraded, summary)
    }

    /// An unhealthy result.
    pub fn unhealthy(summary: impl Into<String>) -> Self {
        Self::new(Status::Unhealthy, summary)
    }

    /// Add a fact for the API and the dashboard.
    pub fn detail(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.push((key.into(), value.to_string()));
        self
    }

    /// Add a measurement without labels (the host labels it with the check and plugin names).
    pub fn metric(self, name: impl Into<String>, value: f64) -> Self {
        self.metric_with(name, value, &[])
    }

    /// Add a measurement with labels of its own.
    pub fn metric_with(mut self, name: impl Into<String>, value: f64, labels: &[(&str, &str)]) -> Self {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.metrics.push(Metric { name: name.into(), value, labels });
        self
    }

    pub(crate) fn into_wit(self) -> types::CheckResult {
        types::CheckResult {
            status: match self.status {
                Status::Healthy => types::Status::Healthy,
                Status::Degraded => types::Status::Degraded,
                Status::Unhealthy => types::Status::Unhealthy,
            },
            summary: self.summary,
            details: self.details,
            metrics: self
                .metrics
                .into_iter()
                .map(|m| types::Metric { name: m.name, value: m.value, labels: m.labels })
                .collect(),
        }
    }
}
