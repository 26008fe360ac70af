//! Health as a run of a check reports it: the status, the run's outcome and the measurements it took. A leaf every
//! capability shares (the board, storage of runs, alerting, the API); it imports nothing.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The health of a check. `Unknown` means there is no answer: the check has not run yet, or its last run could
/// not be carried out (the plugin failed, crashed or ran out of time).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, async_graphql::Enum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unknown,
    Unhealthy,
}

impl Health {
    pub const ALL: [Self; 4] = [Self::Healthy, Self::Degraded, Self::Unknown, Self::Unhealthy];

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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// The kind of failure behind `error` when this process ran it: `plugin_error` (the plugin reported one),
    /// `deadline`, `memory`, `trap` or `instantiate`.
    pub failure: Option<&'static str>,
}

impl CheckRun {
    /// A run without a result yet: unknown, with nothing to say.
    pub fn new(
        check: impl Into<String>,
        plugin: impl Into<String>,
        started_at: SystemTime,
        duration: Duration,
    ) -> Self {
        Self {
            check: check.into(),
            plugin: plugin.into(),
            started_at,
            duration,
            health: Health::Unknown,
            summary: String::new(),
            details: Vec::new(),
            metrics: Vec::new(),
            error: None,
            failure: None,
        }
    }

    /// Whether this run says the check is down: unhealthy, or a run that failed to be carried out.
    pub fn is_down(&self) -> bool {
        self.health == Health::Unhealthy || (self.health == Health::Unknown && self.error.is_some())
    }
}
