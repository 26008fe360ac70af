//! Where a check's recovery stands and what its attempts did, as the board, the API and storage show it.

use std::time::SystemTime;

use serde::Serialize;

use crate::storage::time::serialize_rfc3339;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RecoveryOutcome)]
pub enum Outcome {
    /// The command exited 0, or the request got a 2xx.
    Ran,
    Failed,
    TimedOut,
    /// It could not be started at all.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ran => "ran",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Error => "error",
        }
    }
}

/// Where a check's recovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RecoveryState)]
pub enum State {
    /// Passing, nothing to do.
    Idle,
    /// Failing, not yet `after` times in a row.
    Failing,
    Attempting,
    /// Still failing after an attempt; the next one is due at `next_attempt_at`.
    Waiting,
    /// `max_attempts` made and still failing.
    Exhausted,
    /// Passing again after attempts; the episode ends after `after` passing runs.
    Recovered,
}

/// What an attempt did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = RecoveryAttempt)]
pub struct Attempt {
    /// Its number within the episode, from 1.
    pub attempt: u32,
    /// RFC 3339.
    #[serde(serialize_with = "serialize_rfc3339")]
    #[schema(value_type = String)]
    pub started_at: SystemTime,
    pub action: String,
    pub outcome: Outcome,
    /// The command's exit code, or the request's HTTP status.
    pub exit_code: Option<i32>,
    pub output: String,
    /// Whether the check passed again right after it.
    pub recovered: bool,
}

/// Where a check's recovery stands, for the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = RecoveryStatus)]
pub struct Status {
    pub state: State,
    pub consecutive_failures: u32,
    pub attempts: u32,
    /// RFC 3339, when the next attempt is due.
    pub next_attempt_at: Option<String>,
    /// The latest attempts, oldest first (all of them are in the `recovery_attempts` table and `/v1/recovery`).
    pub recent_attempts: Vec<Attempt>,
}
