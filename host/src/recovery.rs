//! Automatic recovery: after a check has failed a number of times in a row, run the operator's recovery action (a
//! command, or an HTTP request to a process manager), backing off between attempts, and record every attempt.
//!
//! Actions come only from the config file, never from a plugin or the API. An attempt "ran" when its command
//! exits 0 or its request gets a 2xx; the check counts as recovered only when it passes again, and that is
//! recorded on the last attempt. Failures caused by a dependency do not count: restarting a bot does not bring
//! its database back.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::health::{Board, CheckRun};
use crate::runtime::TlsConfig;
use crate::storage::{RecoveryRecord, Storage};

/// Output of an action kept in the record.
const OUTPUT_BYTES: usize = 4096;

/// What to do, from `[check.recovery]`.
#[derive(Debug, Clone)]
pub enum Action {
    /// A program and its arguments, run without a shell.
    Command(Vec<String>),
    /// A request, for example to a process manager's restart endpoint.
    Http { method: http::Method, url: String, headers: Vec<(String, String)> },
}

impl Action {
    /// How the action is shown: the program and arguments, or the method and URL without its query.
    pub fn describe(&self) -> String {
        match self {
            Self::Command(argv) => argv.join(" "),
            Self::Http { method, url, .. } => format!("{method} {}", url.split('?').next().unwrap_or_default()),
        }
    }
}

/// A check's recovery policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub action: Action,
    /// Consecutive failed runs before the first attempt.
    pub after: u32,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// The wait before the second attempt; it doubles after each attempt, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

/// What an attempt did.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    /// RFC 3339.
    pub started_at: String,
    pub action: String,
    /// `ran` (exit 0 or a 2xx), `failed`, `timed_out` or `error` (could not be started).
    pub outcome: &'static str,
    pub exit_code: Option<i32>,
    pub output: String,
    /// Whether the check passed again after this attempt.
    pub recovered: bool,
}

/// Where a check's recovery stands, for the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// `idle`, `waiting` (failing, not yet due), `attempting`, `exhausted` (max attempts made, still failing).
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub attempts: u32,
    /// RFC 3339, when the next attempt is due.
    pub next_attempt_at: Option<String>,
    pub last_attempt: Option<Attempt>,
}

#[derive(Default)]
struct Episode {
    failures: u32,
    attempts: u32,
    next_at: Option<Instant>,
    running: bool,
    last: Option<(i64, Attempt)>,
}

/// Runs recovery for every check that has a policy, and keeps the board told where it stands.
#[derive(Clone)]
pub struct Recoverer {
    storage: Storage,
    board: Arc<Board>,
    episodes: Arc<Mutex<HashMap<String, Episode>>>,
}

impl Recoverer {
    pub fn new(storage: Storage, board: Arc<Board>) -> Self {
        Self { storage, board, episodes: Arc::default() }
    }

    /// Take a run into account, and start an attempt if one is due. A run that failed because a dependency is down
    /// does not count.
    pub fn observe(&self, run: &CheckRun, policy: &Policy) {
        let failed = run.is_down() && self.board.cause_of(&run.check).is_none();
        let due = self.note(run, policy, failed);
        self.board.set_recovery(&run.check, self.status(&run.check, policy));
        if let Some(number) = due {
            let recoverer = self.clone();
            let policy = policy.clone();
            let check = run.check.clone();
            tokio::spawn(async move { recoverer.attempt(check, number, policy).await });
        }
    }

    /// Update the episode; the number of the attempt to start now, if one is due.
    fn note(&self, run: &CheckRun, policy: &Policy, failed: bool) -> Option<u32> {
        {
            let mut episodes = self.episodes.lock().expect("recovery lock");
            let episode = episodes.entry(run.check.clone()).or_default();
            if !failed {
                if episode.attempts > 0
                    && let Some((id, attempt)) = episode.last.as_mut()
                {
                    attempt.recovered = true;
                    tracing::info!(check = %run.check, attempts = episode.attempts, "Check recovered after recovery attempts");
                    let storage = self.storage.clone();
                    let id = *id;
                    tokio::spawn(async move { storage.mark_recovered(id, SystemTime::now()).await });
                }
                let last = episode.last.take();
                *episode = Episode { last, ..Episode::default() };
                return None;
            }
            episode.failures += 1;
            let due = episode.failures >= policy.after
                && episode.attempts < policy.max_attempts
                && !episode.running
                && episode.next_at.is_none_or(|at| Instant::now() >= at);
            if due {
                episode.running = true;
                episode.attempts += 1;
            }
            due.then_some(episode.attempts)
        }
    }

    async fn attempt(&self, check: String, number: u32, policy: Policy) {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        tracing::warn!(check, attempt = number, action = %policy.action.describe(), "Running recovery action");
        let (outcome, exit_code, output) = run(&policy.action, policy.timeout).await;
        let attempt = Attempt {
            attempt: number,
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            action: policy.action.describe(),
            outcome,
            exit_code,
            output,
            recovered: false,
        };
        tracing::warn!(check, attempt = number, outcome, exit_code, "Recovery action finished");
        let record =
            RecoveryRecord { check: check.clone(), attempt: attempt.clone(), started_at, duration: clock.elapsed() };
        let id = match self.storage.record_recovery(record).await {
            Ok(id) => id,
            Err(error) => {
                tracing::error!(check, %error, "Could not store a recovery attempt");
                0
            }
        };
        {
            let mut episodes = self.episodes.lock().expect("recovery lock");
            let episode = episodes.entry(check.clone()).or_default();
            episode.running = false;
            let wait =
                policy.backoff.saturating_mul(2u32.saturating_pow(number.saturating_sub(1))).min(policy.max_backoff);
            episode.next_at = Some(Instant::now() + wait);
            episode.last = Some((id, attempt));
        }
        self.board.set_recovery(&check, self.status(&check, &policy));
    }

    /// Where a check's recovery stands.
    pub fn status(&self, check: &str, policy: &Policy) -> Status {
        let episodes = self.episodes.lock().expect("recovery lock");
        let Some(episode) = episodes.get(check) else {
            return Status { state: "idle", ..Status::default() };
        };
        let state = if episode.running {
            "attempting"
        } else if episode.failures == 0 {
            "idle"
        } else if episode.attempts >= policy.max_attempts {
            "exhausted"
        } else {
            "waiting"
        };
        let next_attempt_at = episode.next_at.filter(|_| state == "waiting").map(|at| {
            let wall = SystemTime::now() + at.saturating_duration_since(Instant::now());
            humantime::format_rfc3339_seconds(wall).to_string()
        });
        Status {
            state,
            consecutive_failures: episode.failures,
            attempts: episode.attempts,
            next_attempt_at,
            last_attempt: episode.last.as_ref().map(|(_, attempt)| attempt.clone()),
        }
    }
}

/// Run an action within `timeout`: its outcome, exit code (commands) or status (requests), and output.
async fn run(action: &Action, timeout: Duration) -> (&'static str, Option<i32>, String) {
    match action {
        Action::Command(argv) => {
            let Some((program, args)) = argv.split_first() else { return ("error", None, "no command".into()) };
            let child = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(error) => return ("error", None, format!("cannot start `{program}`: {error}")),
            };
            let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
            let collect = async {
                let mut output = Vec::new();
                if let Some(stdout) = stdout.as_mut() {
                    let _ = stdout.take(OUTPUT_BYTES as u64).read_to_end(&mut output).await;
                }
                if let Some(stderr) = stderr.as_mut() {
                    let _ = stderr.take(OUTPUT_BYTES as u64).read_to_end(&mut output).await;
                }
                let status = child.wait().await;
                (status, output)
            };
            match tokio::time::timeout(timeout, collect).await {
                Ok((Ok(status), output)) => {
                    let output = String::from_utf8_lossy(&output[..output.len().min(OUTPUT_BYTES)]).trim().to_string();
                    (if status.success() { "ran" } else { "failed" }, status.code(), output)
                }
                Ok((Err(error), _)) => ("error", None, error.to_string()),
                Err(_) => ("timed_out", None, format!("did not finish within {}", humantime::format_duration(timeout))),
            }
        }
        Action::Http { method, url, headers } => {
            let mut request = http::Request::builder().method(method.clone()).uri(url.as_str());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let empty =
                http_body_util::Empty::new().map_err(|never: std::convert::Infallible| match never {}).boxed_unsync();
            let request = match request.body(empty) {
                Ok(request) => request,
                Err(error) => return ("error", None, format!("invalid request: {error}")),
            };
            let timeouts = crate::runtime::Timeouts { connect: timeout, first_byte: timeout, between_bytes: timeout };
            let exchange = async {
                let (response, io) = crate::runtime::send(request, timeouts, &TlsConfig::system()).await?;
                tokio::spawn(io);
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Ok::<_, wasmtime_wasi_http::Error>((status, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok((status, body))) => {
                    let output = String::from_utf8_lossy(&body[..body.len().min(OUTPUT_BYTES)]).trim().to_string();
                    (if (200..300).contains(&status) { "ran" } else { "failed" }, Some(i32::from(status)), output)
                }
                Ok(Err(error)) => ("error", None, format!("request failed: {error}")),
                Err(_) => ("timed_out", None, format!("no answer within {}", humantime::format_duration(timeout))),
            }
        }
    }
}
