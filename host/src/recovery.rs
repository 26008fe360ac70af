//! Automatic recovery: when a check keeps failing, run the operator's recovery action (a command, or an HTTP
//! request to a process manager), back off between attempts, and record every attempt.
//!
//! - Actions come only from the config file, never from a plugin or the API. A command runs without a shell, with
//!   a clean environment (PATH, HOME, LANG, LC_ALL, TZ, USER, plus what `[check.recovery] env` names), so it cannot
//!   print selfmon's secrets; its output is kept (4 KiB) with the check's secrets redacted.
//! - Only the check's own failures count. A run that fails while a dependency is down changes nothing; and before
//!   an attempt starts, recovery waits until the dependencies have reported since the failing run, so a database
//!   that went down a moment ago is not mistaken for a broken bot.
//! - An attempt `ran` when its command exits 0 or its request gets a 2xx. The check counts as recovered when the
//!   first run after an attempt that ran passes; that is recorded on the attempt.
//! - Back-off doubles per attempt up to `max_backoff`; at most `max_attempts` per episode. An episode ends only
//!   after `after` passing runs in a row, so a service that crashes again right after each restart is not
//!   restarted forever.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Secret;
use crate::health::{Board, CheckRun};
use crate::runtime::{Redactor, Timeouts, TlsConfig, send};
use crate::storage::{RecoveryRecord, Storage};

/// Output of an action kept in the record.
const OUTPUT_BYTES: usize = 4096;
/// Attempts kept in memory for the API (all of them are stored).
const RECENT: usize = 10;
/// Variables a command inherits from selfmon; everything else it gets only through `[check.recovery] env`.
const INHERITED: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"];
/// How long output is still read after a command exits (a daemon it started may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What to do, from `[check.recovery]`.
#[derive(Debug, Clone)]
pub enum Action {
    /// A program and its arguments, run without a shell, with these variables besides the inherited ones.
    Command { argv: Vec<String>, env: Vec<(String, Secret)> },
    /// A request, for example to a process manager's restart endpoint.
    Http { method: http::Method, url: String, headers: Vec<(String, Secret)> },
}

impl Action {
    /// How the action is shown: the program and arguments, or the method and the URL without its query.
    pub fn describe(&self) -> String {
        match self {
            Self::Command { argv, .. } => argv.join(" "),
            Self::Http { method, url, .. } => format!("{method} {}", url.split('?').next().unwrap_or_default()),
        }
    }
}

/// A check's recovery policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub action: Action,
    /// Consecutive failed runs before the first attempt, and passing runs that end an episode.
    pub after: u32,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// The wait after the first attempt; it doubles after each attempt, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The check's and the action's secrets, removed from recorded output.
    pub redactor: Redactor,
}

impl Policy {
    fn wait_after(&self, attempt: u32) -> Duration {
        self.backoff.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(self.max_backoff)
    }
}

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
    #[serde(serialize_with = "rfc3339")]
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

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
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

#[derive(Default)]
struct Episode {
    failures: u32,
    passes: u32,
    attempts: u32,
    next_at: Option<Instant>,
    running: bool,
    passed_while_running: bool,
    /// The stored id of the latest attempt, if storing it worked.
    last_id: Option<i64>,
    recent: VecDeque<Attempt>,
}

impl Episode {
    fn state(&self, policy: &Policy) -> State {
        if self.running {
            State::Attempting
        } else if self.failures == 0 {
            if self.attempts > 0 { State::Recovered } else { State::Idle }
        } else if self.attempts == 0 {
            State::Failing
        } else if self.attempts >= policy.max_attempts {
            State::Exhausted
        } else {
            State::Waiting
        }
    }

    /// Mark the latest attempt as the one after which the check passed, if it ran.
    fn mark_recovered(&mut self, storage: &Storage) {
        let Some(attempt) = self.recent.back_mut().filter(|a| a.outcome == Outcome::Ran && !a.recovered) else {
            return;
        };
        attempt.recovered = true;
        if let Some(id) = self.last_id {
            storage.mark_recovered(id, SystemTime::now());
        }
    }
}

/// Runs recovery for every check that has a policy, and keeps the board told where it stands.
#[derive(Clone)]
pub struct Recoverer {
    storage: Storage,
    board: Arc<Board>,
    episodes: Arc<Mutex<HashMap<String, Episode>>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Recoverer {
    /// Attempts run on `tasks` and are abandoned (their command killed) when `stop` is cancelled.
    pub fn new(storage: Storage, board: Arc<Board>, tasks: TaskTracker, stop: CancellationToken) -> Self {
        Self { storage, board, episodes: Arc::default(), tasks, stop }
    }

    /// Take a run into account, and start an attempt if one is due.
    pub fn observe(&self, run: &CheckRun, policy: &Policy) {
        if run.is_down() && self.board.cause_of(&run.check).is_some() {
            // Not this check's own failure: nothing changes.
            return;
        }
        let due = {
            let mut episodes = self.episodes.lock().expect("recovery lock");
            let episode = episodes.entry(run.check.clone()).or_default();
            if run.is_down() {
                episode.passes = 0;
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
            } else {
                episode.failures = 0;
                if episode.running {
                    episode.passed_while_running = true;
                } else if episode.attempts > 0 {
                    if episode.passes == 0 {
                        episode.mark_recovered(&self.storage);
                        tracing::info!(check = %run.check, attempts = episode.attempts, "Check passes again after recovery");
                    }
                    episode.passes += 1;
                    if episode.passes >= policy.after {
                        let recent = std::mem::take(&mut episode.recent);
                        *episode = Episode { recent, ..Episode::default() };
                    }
                }
                None
            }
        };
        self.publish(&run.check, policy);
        if let Some(number) = due {
            let recoverer = self.clone();
            let (policy, check, failed_at) = (policy.clone(), run.check.clone(), run.started_at);
            let stop = self.stop.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = recoverer.attempt(check, number, failed_at, policy) => {}
                }
            });
        }
    }

    async fn attempt(&self, check: String, number: u32, failed_at: SystemTime, policy: Policy) {
        // Its dependencies may not have run since it failed: give them the chance to show they are the cause.
        if let Some(cause) = self.board.settled_cause(&check, failed_at).await {
            tracing::info!(check, cause, "No recovery attempt: a dependency is down");
            let mut episodes = self.episodes.lock().expect("recovery lock");
            if let Some(episode) = episodes.get_mut(&check) {
                episode.running = false;
                episode.attempts -= 1;
                episode.failures = 0;
            }
            drop(episodes);
            self.publish(&check, &policy);
            return;
        }
        let started_at = SystemTime::now();
        let clock = Instant::now();
        tracing::warn!(check, attempt = number, action = %policy.action.describe(), "Running recovery action");
        let (outcome, exit_code, output) = run(&policy.action, policy.timeout).await;
        let attempt = Attempt {
            attempt: number,
            started_at,
            action: policy.action.describe(),
            outcome,
            exit_code,
            output: policy.redactor.apply(&output).into_owned(),
            recovered: false,
        };
        tracing::warn!(check, attempt = number, outcome = outcome.as_str(), exit_code, "Recovery action finished");
        let record = RecoveryRecord { check: check.clone(), attempt: attempt.clone(), duration: clock.elapsed() };
        let id = match self.storage.record_recovery(record).await {
            Ok(id) => Some(id),
            Err(error) => {
                tracing::error!(check, %error, "Could not store a recovery attempt");
                None
            }
        };
        {
            let mut episodes = self.episodes.lock().expect("recovery lock");
            let episode = episodes.entry(check.clone()).or_default();
            episode.running = false;
            episode.next_at = Instant::now().checked_add(policy.wait_after(number));
            episode.last_id = id;
            episode.recent.push_back(attempt);
            while episode.recent.len() > RECENT {
                episode.recent.pop_front();
            }
            if std::mem::take(&mut episode.passed_while_running) && episode.failures == 0 {
                episode.mark_recovered(&self.storage);
            }
        }
        self.publish(&check, &policy);
    }

    /// Tell the board where a check's recovery stands.
    fn publish(&self, check: &str, policy: &Policy) {
        let status = {
            let episodes = self.episodes.lock().expect("recovery lock");
            let Some(episode) = episodes.get(check) else { return };
            let state = episode.state(policy);
            let next_attempt_at = episode.next_at.filter(|_| state == State::Waiting).and_then(|at| {
                let wall = SystemTime::now().checked_add(at.saturating_duration_since(Instant::now()))?;
                Some(humantime::format_rfc3339_seconds(wall).to_string())
            });
            Status {
                state,
                consecutive_failures: episode.failures,
                attempts: episode.attempts,
                next_attempt_at,
                recent_attempts: episode.recent.iter().cloned().collect(),
            }
        };
        self.board.set_recovery(check, status);
    }
}

/// Run an action within `timeout`: its outcome, exit code (commands) or status (requests), and output.
async fn run(action: &Action, timeout: Duration) -> (Outcome, Option<i32>, String) {
    match action {
        Action::Command { argv, env } => run_command(argv, env, timeout).await,
        Action::Http { method, url, headers } => run_request(method, url, headers, timeout).await,
    }
}

async fn run_command(argv: &[String], env: &[(String, Secret)], timeout: Duration) -> (Outcome, Option<i32>, String) {
    let Some((program, args)) = argv.split_first() else { return (Outcome::Error, None, "no command".into()) };
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear();
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    for (name, value) in env {
        command.env(name, value.expose());
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return (Outcome::Error, None, format!("cannot start `{program}`: {error}")),
    };
    // Both pipes are read at once, past the kept part, so a chatty command never blocks on a full pipe.
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(capture(stdout, output.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(capture(stderr, output.clone())));
    }
    let (outcome, code) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (if status.success() { Outcome::Ran } else { Outcome::Failed }, status.code()),
        Ok(Err(error)) => return (Outcome::Error, None, error.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            (Outcome::TimedOut, None)
        }
    };
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
            abort.abort();
        }
    }
    let mut text = String::from_utf8_lossy(&output.lock().expect("output lock")).trim().to_string();
    if outcome == Outcome::TimedOut {
        text = format!("did not finish within {}; {text}", humantime::format_duration(timeout))
            .trim_end_matches("; ")
            .to_string();
    }
    (outcome, code, text)
}

/// Read a pipe to its end, keeping the first [`OUTPUT_BYTES`] of everything read into `kept`.
async fn capture(mut pipe: impl tokio::io::AsyncRead + Unpin, kept: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    while let Ok(read) = pipe.read(&mut chunk).await {
        if read == 0 {
            return;
        }
        let mut kept = kept.lock().expect("output lock");
        let room = OUTPUT_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..read.min(room)]);
    }
}

async fn run_request(
    method: &http::Method,
    url: &str,
    headers: &[(String, Secret)],
    timeout: Duration,
) -> (Outcome, Option<i32>, String) {
    let mut request = http::Request::builder().method(method.clone()).uri(url);
    for (name, value) in headers {
        request = request.header(name, value.expose());
    }
    let empty = http_body_util::Empty::new().map_err(|never: std::convert::Infallible| match never {}).boxed_unsync();
    let request = match request.body(empty) {
        Ok(request) => request,
        Err(error) => return (Outcome::Error, None, format!("invalid request: {error}")),
    };
    let timeouts = Timeouts { connect: timeout, first_byte: timeout, between_bytes: timeout };
    let exchange = async {
        let (response, io) = send(request, timeouts, &TlsConfig::system()).await?;
        tokio::spawn(io);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Ok::<_, wasmtime_wasi_http::Error>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, body))) => {
            let output = String::from_utf8_lossy(&body[..body.len().min(OUTPUT_BYTES)]).trim().to_string();
            (if (200..300).contains(&status) { Outcome::Ran } else { Outcome::Failed }, Some(i32::from(status)), output)
        }
        Ok(Err(error)) => (Outcome::Error, None, format!("request failed: {error}")),
        Err(_) => (Outcome::TimedOut, None, format!("no answer within {}", humantime::format_duration(timeout))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::Health;

    fn run(check: &str, health: Health) -> CheckRun {
        CheckRun { health, ..CheckRun::new(check, "p", SystemTime::now(), Duration::ZERO) }
    }

    fn policy(argv: &[&str]) -> Policy {
        Policy {
            action: Action::Command { argv: argv.iter().map(|s| s.to_string()).collect(), env: Vec::new() },
            after: 2,
            max_attempts: 3,
            timeout: Duration::from_secs(10),
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            redactor: Redactor::default(),
        }
    }

    fn status(board: &Board, check: &str) -> Option<Status> {
        board.snapshot().into_iter().find(|s| s.name == check).and_then(|s| s.recovery)
    }

    async fn settle(tasks: &TaskTracker) {
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
    }

    #[tokio::test]
    async fn only_own_failures_count_and_a_pass_during_an_attempt_is_credited_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("s.db")).unwrap();
        let board = Arc::new(Board::default());
        let second = Duration::from_secs(1);
        board.register("db", "postgres", true, second, &[]);
        board.register("app", "http", true, second, &["db".into()]);
        let tasks = TaskTracker::new();
        let recoverer = Recoverer::new(storage.clone(), board.clone(), tasks.clone(), CancellationToken::new());

        // The database is down: the app's failures are not its own.
        let slow = policy(&["sleep", "0.5"]);
        board.record(&run("db", Health::Unhealthy));
        for _ in 0..3 {
            let failing = run("app", Health::Unhealthy);
            board.record(&failing);
            recoverer.observe(&failing, &slow);
        }
        assert!(status(&board, "app").is_none(), "nothing happened");

        // Its own failures: the second one starts an attempt; the app passes while it runs.
        board.record(&run("db", Health::Healthy));
        for _ in 0..2 {
            let failing = run("app", Health::Unhealthy);
            board.record(&failing);
            recoverer.observe(&failing, &slow);
        }
        assert_eq!(status(&board, "app").unwrap().state, State::Attempting);
        recoverer.observe(&run("app", Health::Healthy), &slow);
        settle(&tasks).await;
        let after = status(&board, "app").unwrap();
        assert_eq!(after.recent_attempts.len(), 1);
        assert!(after.recent_attempts[0].recovered, "the attempt that was running gets the credit");
        assert_eq!(after.state, State::Recovered);

        // One pass does not end the episode: failing again right away continues it, with the next attempt number.
        for _ in 0..2 {
            recoverer.observe(&run("app", Health::Unhealthy), &slow);
        }
        settle(&tasks).await;
        let again = status(&board, "app").unwrap();
        assert_eq!(again.recent_attempts.last().unwrap().attempt, 2, "{again:?}");
        assert!(!again.recent_attempts.last().unwrap().recovered);
        storage.close().await.unwrap();
    }

    #[tokio::test]
    async fn commands_run_with_a_clean_environment_and_redacted_output() {
        // SAFETY: the variable is set before anything else in this test reads the environment.
        unsafe { std::env::set_var("SELFMON_TEST_LEAK", "do-not-show-me") };
        let env = vec![("GIVEN".to_string(), Secret::new("shown-secret".into()))];
        let argv: Vec<String> = ["sh", "-c", "echo \"[$SELFMON_TEST_LEAK][$GIVEN]\"; echo oops >&2; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (outcome, code, output) = run_command(&argv, &env, Duration::from_secs(10)).await;
        assert_eq!((outcome, code), (Outcome::Failed, Some(3)));
        assert!(output.starts_with("[][shown-secret]") && output.contains("oops"), "{output}");
        assert_eq!(
            Redactor::new(["shown-secret".to_string()]).apply(&output),
            output.replace("shown-secret", "[redacted]")
        );

        let (outcome, _, output) =
            run_command(&["sleep".to_string(), "5".to_string()], &[], Duration::from_millis(200)).await;
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(output.starts_with("did not finish within 200ms"), "{output}");
        let (outcome, _, output) = run_command(&["/no/such/program".to_string()], &[], Duration::from_secs(1)).await;
        assert_eq!(outcome, Outcome::Error);
        assert!(output.starts_with("cannot start `/no/such/program`"), "{output}");
    }
}
