//! Alert rules: read what selfmon stored, say which alerts hold now.
//!
//! A rule is called on every evaluation (every 15 seconds by default) with its config. It asks [`query`] about
//! metrics and checks and returns one [`Alert`] per thing that is wrong right now, or none. Everything after that
//! belongs to the host: how long a condition must hold before the alert fires, deduplication (by the alert's name
//! and labels, so return the same labels for the same problem every time), silences, escalation and delivery.
//!
//! ```no_run
//! use selfmon_sdk::prelude::*;
//! use selfmon_sdk::rule::{Aggregation, Alert, Context, Rule, Severity, query};
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     max_ratio: f64,
//! }
//!
//! struct DiskFull;
//!
//! impl Rule for DiskFull {
//!     type Config = Config;
//!
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("disk-full", "0.1.0", "Fires per mount whose disk is fuller than `max_ratio`")
//!             .config(Setting::number("max_ratio", "Share of the disk in use (0 to 1)").default(0.9))
//!     }
//!
//!     fn evaluate(config: Config, ctx: &Context) -> Result<Vec<Alert>, Error> {
//!         let used = query::aggregate_series("system_disk_used_ratio", &[], Aggregation::Last, ctx.minutes(5));
//!         Ok(used
//!             .into_iter()
//!             .filter(|series| series.value > config.max_ratio)
//!             .map(|series| {
//!                 let mount = series.label("mount").unwrap_or("?").to_string();
//!                 Alert::new(Severity::High, format!("{mount} is {:.0}% full", series.value * 100.0))
//!                     .label("mount", &mount)
//!             })
//!             .collect())
//!     }
//! }
//!
//! selfmon_sdk::export_rule!(DiskFull);
//! ```

use std::time::Duration;

use serde::de::DeserializeOwned;

pub use crate::__private::bindings::selfmon::plugin::query::{Aggregation, CheckState};
pub use crate::__private::types::{Severity, Status};
use crate::Error;
use crate::info::PluginInfo;

/// An alert rule. Implement it for a unit struct and export it with [`export_rule!`](crate::export_rule).
pub trait Rule {
    /// The rule's config table, checked like a checker's.
    type Config: DeserializeOwned;

    fn info() -> PluginInfo;

    /// Further checks of a configured rule, run when selfmon loads its config or the API creates the rule. Query
    /// nothing here. By default every config that deserialises is valid.
    fn validate(config: &Self::Config) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }

    /// Every alert whose condition holds now. `Err` means the rule could not be evaluated: the host reports it and
    /// leaves the rule's alerts as they were.
    fn evaluate(config: Self::Config, ctx: &Context) -> Result<Vec<Alert>, Error>;
}

/// What an evaluation knows about the configured rule it runs for.
#[derive(Debug)]
pub struct Context {
    name: String,
    now_ms: i64,
}

impl Context {
    pub(crate) fn new(name: String, now_ms: i64) -> Self {
        Self { name, now_ms }
    }

    /// The rule's name in the operator's config (or the API).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The evaluation time, in milliseconds since the Unix epoch. Queries answer as of this time.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// A window of `n` minutes, for [`query`].
    pub fn minutes(&self, n: u64) -> Duration {
        Duration::from_secs(n * 60)
    }
}

/// An alert a rule raises.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    name: Option<String>,
    severity: Severity,
    summary: String,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
}

impl Alert {
    /// An alert named after the rule. `summary` is one line a person understands.
    pub fn new(severity: Severity, summary: impl Into<String>) -> Self {
        Self { name: None, severity, summary: summary.into(), labels: Vec::new(), annotations: Vec::new() }
    }

    /// Name the alert other than after its rule.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A label: part of the alert's identity. Use labels with few values (`check`, `mount`), never times or counts.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }

    /// An annotation: extra text that is not part of the alert's identity (`description`, `runbook_url`, `value`).
    pub fn annotation(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.push((name.into(), value.into()));
        self
    }

    pub fn severity(&self) -> Severity {
        self.severity
    }

    pub fn summary(&self) -> &str {
        &self.summary
    }

    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    pub fn annotations(&self) -> &[(String, String)] {
        &self.annotations
    }

    pub(crate) fn into_wit(self, rule: &str) -> crate::__private::types::Alert {
        crate::__private::types::Alert {
            name: self.name.unwrap_or_else(|| rule.to_string()),
            severity: self.severity,
            summary: self.summary,
            labels: self.labels,
            annotations: self.annotations,
        }
    }
}

/// One series' value, from [`query::aggregate_series`].
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesValue {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl SeriesValue {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Read-only questions about what selfmon stored, answered as of the evaluation time.
///
/// Metrics are those of `GET /v1/metrics`: `check_duration_seconds` and `check_status` per check (labels `check`
/// and `plugin`), whatever the checkers report, `system_*`; plus `log_records_total` (label `level`, and
/// `service` when the record names one) and `log_errors_total` (error and critical records), counted from the
/// stored logs.
pub mod query {
    use std::time::Duration;

    use super::{Aggregation, CheckState, SeriesValue};
    use crate::__private::bindings::selfmon::plugin::query as wit;

    fn request(
        metric: &str,
        matchers: &[(&str, &str)],
        aggregation: Aggregation,
        window: Duration,
    ) -> wit::MetricQuery {
        wit::MetricQuery {
            metric: metric.to_string(),
            matchers: matchers.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
            aggregation,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Every matching sample of the window, all series together, reduced to one value; `None` without samples.
    pub fn aggregate(
        metric: &str,
        matchers: &[(&str, &str)],
        aggregation: Aggregation,
        window: Duration,
    ) -> Option<f64> {
        wit::aggregate(&request(metric, matchers, aggregation, window))
    }

    /// The same reduction applied to each matching series; series without samples in the window are left out.
    pub fn aggregate_series(
        metric: &str,
        matchers: &[(&str, &str)],
        aggregation: Aggregation,
        window: Duration,
    ) -> Vec<SeriesValue> {
        wit::aggregate_series(&request(metric, matchers, aggregation, window))
            .into_iter()
            .map(|s| SeriesValue { labels: s.labels, value: s.value })
            .collect()
    }

    /// The state of one configured check.
    pub fn check(name: &str) -> Option<CheckState> {
        wit::check(name)
    }

    /// The state of every configured check.
    pub fn checks() -> Vec<CheckState> {
        wit::checks()
    }
}
