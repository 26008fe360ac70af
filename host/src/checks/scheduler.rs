//! Runs every enabled check on its interval, with jitter, under a global limit on checks running at once, and
//! hands each result to the health board, the event bus, selfmon's metrics and performance log, recovery and
//! storage. Schedules are kept across reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checks::Check;
use crate::checks::board::Board;
use crate::checks::recovery::Recoverer;
use crate::cluster::{self, Cluster};
use crate::events::{CheckRan, Events, Payload};
use crate::ops::journal::PERFORMANCE;
use crate::ops::telemetry::Telemetry;
use crate::runtime::Runtime;
use crate::storage::Storage;

/// The most the first run of a check waits after start-up, so results appear quickly but not all at once.
const FIRST_RUN_SPREAD: Duration = Duration::from_secs(2);

pub struct Scheduler {
    pub runtime: Arc<Runtime>,
    pub storage: Storage,
    pub board: Arc<Board>,
    /// Which checks this node runs (all of them, unless nodes share a PostgreSQL store).
    pub cluster: Arc<Cluster>,
    pub recoverer: Recoverer,
    pub telemetry: Arc<Telemetry>,
    pub events: Events,
    /// Permits for checks running at once.
    pub limit: Arc<Semaphore>,
    pub jitter: f64,
    /// When each check's next run is due, kept across reloads so a reload does not reset schedules.
    pub schedule: Mutex<HashMap<String, Instant>>,
}

impl Scheduler {
    /// Start one task per enabled check. A task stops at its next wait once `retire` is cancelled (a run in
    /// progress finishes and is recorded), and at once when `stop` is (a run in progress is abandoned).
    pub fn spawn(
        self: &Arc<Self>,
        checks: &[Arc<Check>],
        tracker: &TaskTracker,
        retire: &CancellationToken,
        stop: &CancellationToken,
    ) {
        for check in checks.iter().filter(|c| c.enabled) {
            let scheduler = self.clone();
            let (check, retire, stop) = (check.clone(), retire.clone(), stop.clone());
            tracker.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = scheduler.run_forever(&check, &retire) => {}
                }
            });
        }
    }

    /// Record when `check` is next due, unless its task is retired (then its successor's schedule stands): whether
    /// it was recorded. Retirement is checked under the lock the successor reads the schedule with.
    fn set_due(&self, check: &str, due: Instant, retire: &CancellationToken) -> bool {
        let mut schedule = self.schedule.lock().expect("schedule lock");
        if retire.is_cancelled() {
            return false;
        }
        schedule.insert(check.to_string(), due);
        true
    }

    async fn run_forever(&self, check: &Check, retire: &CancellationToken) {
        let spread = FIRST_RUN_SPREAD.min(check.interval);
        let now = Instant::now();
        // `base` keeps the schedule; each run starts at `base` plus its own jitter, so jitter never accumulates. A
        // check that ran before a reload keeps its schedule, unless its new interval is shorter than the wait.
        let resumed = self.schedule.lock().expect("schedule lock").get(&check.name).copied();
        let mut base =
            resumed.filter(|due| *due <= now + check.interval).unwrap_or_else(|| now + spread.mul_f64(fastrand::f64()));
        let mut next = base;
        loop {
            tokio::select! {
                biased;
                () = retire.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            // Each run is a span of selfmon's own log, with a correlation id of its own.
            let span = tracing::info_span!("check_run", check = %check.name, plugin = %check.plugin.info.name);
            let (run, running) = {
                let permit = tokio::select! {
                    biased;
                    () = retire.cancelled() => return,
                    permit = self.limit.acquire() => permit,
                };
                let Ok(permit) = permit else { return };
                // Said before the lease is looked at, so the lease is not given up under the run.
                let running = self.cluster.running(&check.name);
                if !self.cluster.holds(&check.name) {
                    // Another node runs it now; should this one take it over, it runs when the check is next due
                    // after its last run, wherever that was.
                    drop((running, permit));
                    let Some(due) = self.taken_over(check, retire).await else { return };
                    (base, next) = (due, due);
                    continue;
                }
                // The run is claimed, due again one interval on: a successor started by a reload either sees the
                // claim (and does not repeat the run) or finds this task gone (and makes the run).
                if !self.set_due(&check.name, base + check.interval, retire) {
                    return;
                }
                self.telemetry.observe_lag(Instant::now().saturating_duration_since(next));
                (tracing::Instrument::instrument(check.run(&self.runtime), span.clone()).await, running)
            };
            span.in_scope(|| {
                tracing::info!(
                    target: PERFORMANCE,
                    operation = "check_run",
                    status = run.health.as_str(),
                    duration_ms = run.duration.as_secs_f64() * 1000.0,
                    "Check ran"
                );
            });
            if let Some(change) = self.board.record(&run) {
                self.events.publish(Payload::HealthChanged(change));
            }
            if let Some(state) = self.board.state_of(&run.check) {
                let ran = CheckRan::new(state, run.duration.as_secs_f64() * 1000.0, run.started_at);
                self.events.publish(Payload::CheckRan(ran));
            }
            self.telemetry.observe_run(&run.check, &run.plugin, run.health.as_str(), run.duration, run.failure);
            if let Some(policy) = &check.recovery {
                self.recoverer.observe(&run, policy);
            }
            if self.storage.write_run(run).await.is_err() {
                return;
            }
            drop(running);
            // Keep to the schedule (a slow run does not push later runs back), skip runs that are already late, and
            // add jitter so checks with equal intervals spread out.
            base += check.interval;
            let now = Instant::now();
            while base <= now {
                base += check.interval;
            }
            self.set_due(&check.name, base, retire);
            next = base + check.interval.mul_f64(self.jitter * fastrand::f64());
        }
    }

    /// Wait until this node holds `check`'s lease (`None` if retired first): then when the check is next due.
    async fn taken_over(&self, check: &Check, retire: &CancellationToken) -> Option<Instant> {
        let mut gained = self.cluster.gained();
        while !self.cluster.holds(&check.name) {
            tokio::select! {
                biased;
                () = retire.cancelled() => return None,
                _ = gained.changed() => {}
                () = tokio::time::sleep(cluster::ROUND) => {}
            }
        }
        let since = self.board.last_run_at(&check.name).and_then(|at| SystemTime::now().duration_since(at).ok());
        let wait = since.map_or(Duration::ZERO, |since| check.interval.saturating_sub(since));
        Some(Instant::now() + wait)
    }
}
