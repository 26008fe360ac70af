//! Checks: built from the operator's `[[check]]` tables against what each plugin declares ([`build()`]), run on
//! their schedules ([`scheduler`]), their latest states on the health board with dependencies taken into account
//! ([`board`]), recovered when they keep failing ([`recovery`]), this machine's own figures ([`system`]), the value
//! types a run reports ([`health`]), latency figures shared with traces ([`latency`]), answers over their stored
//! runs ([`performance`]), and their SQL ([`store`]).
//!
//! Everything a plugin hands back is bounded and scrubbed here, before it reaches storage, the API or the log: a
//! summary is one line of at most 1 KiB, details and metrics are capped in number and size, labels that would
//! impersonate another check are dropped, and the check's secrets are redacted wherever they appear.

pub mod board;
mod build;
pub mod health;
pub mod latency;
pub mod performance;
pub mod recovery;
pub mod scheduler;
pub mod store;
pub mod system;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use build::build;

use crate::checks::health::{CheckRun, Health, MetricValue};
use crate::checks::recovery::Policy;
use crate::config::Secret;
use crate::runtime::{CheckRequest, CheckResult, Plugin, Redactor, Runtime, Sandbox, Status, one_line, truncate};

/// Longest summary or error kept.
const TEXT_BYTES: usize = 1024;
/// Details kept per run, and the longest key and value.
const DETAILS: usize = 32;
const DETAIL_KEY_BYTES: usize = 128;
/// Metrics kept per run, labels per metric, and the longest label value.
const METRICS: usize = 128;
const LABELS: usize = 8;
const LABEL_VALUE_BYTES: usize = 256;
/// Metrics the host records for every run; a plugin may not write them.
const HOST_METRICS: [&str; 2] = ["check_duration_seconds", "check_status"];
/// Labels the host sets on every metric of a run; a plugin's own are dropped.
const HOST_LABELS: [&str; 2] = ["check", "plugin"];

/// A check ready to run.
#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub plugin: Arc<Plugin>,
    pub interval: Duration,
    pub timeout: Duration,
    pub target: Option<String>,
    pub depends_on: Vec<String>,
    pub enabled: bool,
    pub sandbox: Sandbox,
    /// What to do when it keeps failing.
    pub recovery: Option<Policy>,
    /// Every declared key with a value (the operator's or a default), as JSON text.
    config: Vec<(String, String)>,
    secrets: Vec<(String, Secret)>,
}

impl Check {
    /// The request handed to the plugin. This is the one place secrets leave their wrapper.
    pub fn request(&self) -> CheckRequest {
        CheckRequest {
            name: self.name.clone(),
            target: self.target.clone(),
            config: self.config.clone(),
            secrets: self.secrets.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// The names of the secrets it is given.
    pub fn secret_names(&self) -> Vec<String> {
        self.secrets.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Run the check once. Never fails: a run that cannot be carried out is an unknown result saying why.
    pub async fn run(&self, runtime: &Runtime) -> CheckRun {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let outcome = runtime.check(&self.plugin, &self.sandbox, &self.request()).await;
        let duration = clock.elapsed();
        let redactor = &self.sandbox.redactor;
        let mut run = CheckRun::new(&self.name, &self.plugin.info.name, started_at, duration);
        match outcome {
            Ok(Ok(result)) => scrub(result, redactor, &mut run),
            Ok(Err(message)) => {
                let message = text(&message, redactor);
                run.summary = format!("check failed: {message}");
                run.error = Some(message);
                run.failure = Some("plugin_error");
            }
            Err(error) => {
                run.summary = error.to_string();
                run.error = Some(text(&run.summary, redactor));
                run.failure = Some(error.kind());
            }
        }
        if run.error.is_some() {
            tracing::warn!(check = %run.check, plugin = %run.plugin, error = run.error.as_deref(), "Check run failed");
        }
        run
    }
}

/// A plugin's result, bounded and with the check's secrets removed.
fn scrub(result: CheckResult, redactor: &Redactor, run: &mut CheckRun) {
    run.health = match result.status {
        Status::Healthy => Health::Healthy,
        Status::Degraded => Health::Degraded,
        Status::Unhealthy => Health::Unhealthy,
    };
    run.summary = text(&result.summary, redactor);
    run.details = result
        .details
        .iter()
        .take(DETAILS)
        .map(|(k, v)| (text(truncate(k, DETAIL_KEY_BYTES), redactor), text(v, redactor)))
        .collect();
    run.metrics = result
        .metrics
        .into_iter()
        .filter(|m| valid_name(&m.name) && !HOST_METRICS.contains(&m.name.as_str()) && m.value.is_finite())
        .take(METRICS)
        .map(|m| MetricValue {
            labels: m
                .labels
                .iter()
                .filter(|(k, _)| valid_name(k) && !HOST_LABELS.contains(&k.as_str()))
                .take(LABELS)
                .map(|(k, v)| (k.clone(), truncate(&redactor.apply(&one_line(v)), LABEL_VALUE_BYTES).to_string()))
                .collect(),
            name: m.name,
            value: m.value,
        })
        .collect();
}

/// One line, at most [`TEXT_BYTES`], no secrets. Redaction comes before the final cut, so a secret is never cut
/// in half and half shown.
fn text(value: &str, redactor: &Redactor) -> String {
    let redacted = redactor.apply(truncate(value, 4 * TEXT_BYTES));
    truncate(&one_line(&redacted), TEXT_BYTES).to_string()
}

/// Prometheus' rule for metric and label names; anything else is dropped rather than stored.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Metric;

    #[test]
    fn names_follow_prometheus() {
        assert!(valid_name("response_time_seconds"));
        assert!(valid_name("ns:metric_1"));
        assert!(!valid_name("1st"));
        assert!(!valid_name("with space"));
        assert!(!valid_name(""));
    }

    #[test]
    fn plugin_output_is_bounded_scrubbed_and_cannot_impersonate() {
        let redactor = Redactor::new(["tok-12345".to_string()]);
        let result = CheckResult {
            status: Status::Degraded,
            summary: format!("leaked tok-12345\nFAKE LOG LINE {}", "x".repeat(5000)),
            details: (0..100).map(|i| (format!("k{i}"), "tok-12345".to_string())).collect(),
            metrics: vec![
                Metric { name: "check_status".into(), value: 0.0, labels: vec![] },
                Metric { name: "ok_total".into(), value: f64::NAN, labels: vec![] },
                Metric {
                    name: "latency_seconds".into(),
                    value: 1.5,
                    labels: vec![("check".into(), "another".into()), ("region".into(), "tok-12345".into())],
                },
            ],
        };
        let mut run = CheckRun::new("c", "p", SystemTime::now(), Duration::ZERO);
        scrub(result, &redactor, &mut run);
        assert_eq!(run.health, Health::Degraded);
        assert!(run.summary.starts_with("leaked [redacted] FAKE LOG LINE xx") && !run.summary.contains('\n'));
        assert!(run.summary.len() <= TEXT_BYTES);
        assert_eq!(run.details.len(), DETAILS);
        assert!(run.details.iter().all(|(_, v)| v == "[redacted]"));
        assert_eq!(run.metrics.len(), 1, "host metric names and non-finite values are dropped");
        assert_eq!(run.metrics[0].labels, [("region".to_string(), "[redacted]".to_string())]);
    }
}
