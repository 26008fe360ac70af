//! Health as selfmon reports it: the outcome of one check run, and the board of every check's latest state.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The health of a check. `Unknown` means there is no answer: the check has not run yet, or its last run could
/// not be carried out (the plugin failed, crashed or ran out of time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unknown,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unknown => "unknown",
            Self::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Healthy, Self::Degraded, Self::Unknown, Self::Unhealthy].into_iter().find(|h| h.as_str() == text)
    }

    /// The exit code of a check run in the Nagios plugin convention: OK, WARNING, CRITICAL, UNKNOWN.
    pub fn nagios_code(self) -> i32 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Unhealthy => 2,
            Self::Unknown => 3,
        }
    }
}

/// One measurement from a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricValue {
    pub name: String,
    pub value: f64,
    pub labels: Vec<(String, String)>,
}

/// The outcome of one run of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    pub check: String,
    pub plugin: String,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub health: Health,
    pub summary: String,
    pub details: Vec<(String, String)>,
    pub metrics: Vec<MetricValue>,
    /// Why the run could not be carried out, when `health` is unknown because of a failure.
    pub error: Option<String>,
}

/// The latest state of every configured check, as `/v1/health` serves it.
#[derive(Debug, Default)]
pub struct Board {
    checks: RwLock<BTreeMap<String, CheckState>>,
}

/// What the board knows about one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckState {
    pub name: String,
    pub plugin: String,
    pub status: Health,
    pub summary: String,
    /// RFC 3339, UTC.
    pub last_run: Option<String>,
    pub response_time_ms: Option<f64>,
    pub details: BTreeMap<String, String>,
    pub error: Option<String>,
    pub enabled: bool,
    pub interval_seconds: f64,
    pub depends_on: Vec<String>,
}

impl Board {
    /// Add a configured check, with no result yet.
    pub fn register(&self, name: &str, plugin: &str, enabled: bool, interval: Duration, depends_on: &[String]) {
        let summary = if enabled { "not run yet" } else { "disabled" };
        self.checks.write().expect("board lock").insert(
            name.to_string(),
            CheckState {
                name: name.to_string(),
                plugin: plugin.to_string(),
                status: Health::Unknown,
                summary: summary.to_string(),
                last_run: None,
                response_time_ms: None,
                details: BTreeMap::new(),
                error: None,
                enabled,
                interval_seconds: interval.as_secs_f64(),
                depends_on: depends_on.to_vec(),
            },
        );
    }

    /// Record a run of a registered check; runs of checks no longer configured are ignored.
    pub fn record(&self, run: &CheckRun) {
        let mut checks = self.checks.write().expect("board lock");
        if let Some(state) = checks.get_mut(&run.check) {
            state.status = run.health;
            state.summary.clone_from(&run.summary);
            state.last_run = Some(humantime::format_rfc3339_millis(run.started_at).to_string());
            state.response_time_ms = Some(run.duration.as_secs_f64() * 1000.0);
            state.details = run.details.iter().cloned().collect();
            state.error.clone_from(&run.error);
        }
    }

    /// Every check's state, by name.
    pub fn snapshot(&self) -> Vec<CheckState> {
        self.checks.read().expect("board lock").values().cloned().collect()
    }
}
