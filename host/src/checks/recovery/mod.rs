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

pub mod action;
pub mod status;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checks::board::Board;
use crate::checks::health::CheckRun;
use crate::checks::recovery::action::{Action, run};
use crate::checks::recovery::status::{Attempt, Outcome, State, Status};
use crate::checks::store::RecoveryRecord;
use crate::runtime::Redactor;
use crate::storage::Storage;

/// Attempts kept in memory for the API (all of them are stored).
const RECENT: usize = 10;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checks::health::Health;

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
}
