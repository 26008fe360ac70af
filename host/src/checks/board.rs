//! The health board: every configured check's latest state, with dependencies taken into account, and the change
//! a run makes to it.
//!
//! The board keeps each check's own latest result. What it reports is derived when asked: a check that fails
//! while something it depends on is down is reported as degraded, with that dependency as the cause, instead of as
//! a failure of its own. The cause is the root: when the database is down, the API that depends on it and the bot
//! that depends on the API both name the database.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::checks::health::{CheckRun, Health};
use crate::checks::recovery::status::Status as RecoveryStatus;
use crate::storage::{rfc3339, to_millis};

/// A check's own status changed from one run to the next.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject)]
pub struct HealthChange {
    pub check: String,
    pub plugin: String,
    pub from: Health,
    pub to: Health,
    pub summary: String,
    /// The dependency that is down and explains the failure, if one does.
    pub cause: Option<String>,
}

/// The latest state of every configured check.
#[derive(Debug, Default)]
pub struct Board {
    checks: RwLock<BTreeMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    plugin: String,
    enabled: bool,
    interval: Duration,
    depends_on: Vec<String>,
    run: Option<CheckRun>,
    recovery: Option<RecoveryStatus>,
}

/// What `/v1/health` and `selfmon check` report about one check.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckState {
    pub name: String,
    pub plugin: String,
    /// Its own status, unless a dependency is the cause of its failure: then `degraded`.
    pub status: Health,
    pub summary: String,
    /// The dependency that is down and explains this check's failure (the root of the chain).
    pub cause: Option<String>,
    /// What the check's own last run said.
    pub own_status: Health,
    /// RFC 3339, UTC.
    pub last_run: Option<String>,
    pub response_time_ms: Option<f64>,
    pub details: BTreeMap<String, String>,
    pub error: Option<String>,
    pub enabled: bool,
    pub interval_seconds: f64,
    pub depends_on: Vec<String>,
    /// Where automatic recovery stands, for checks that have it.
    pub recovery: Option<RecoveryStatus>,
}

impl Board {
    /// Add a configured check, with no result yet; a check already there keeps its latest result.
    pub fn register(&self, name: &str, plugin: &str, enabled: bool, interval: Duration, depends_on: &[String]) {
        let mut checks = self.checks.write().expect("board lock");
        let (run, recovery) = checks.remove(name).map(|entry| (entry.run, entry.recovery)).unwrap_or_default();
        let entry =
            Entry { plugin: plugin.to_string(), enabled, interval, depends_on: depends_on.to_vec(), run, recovery };
        checks.insert(name.to_string(), entry);
    }

    /// Take away a check that is no longer configured.
    pub fn unregister(&self, name: &str) {
        self.checks.write().expect("board lock").remove(name);
    }

    /// The names of the checks on the board.
    pub fn names(&self) -> Vec<String> {
        self.checks.read().expect("board lock").keys().cloned().collect()
    }

    /// The enabled checks on the board: those this node's config can run.
    pub fn runnable(&self) -> Vec<String> {
        let checks = self.checks.read().expect("board lock");
        checks.iter().filter(|(_, entry)| entry.enabled).map(|(name, _)| name.clone()).collect()
    }

    /// When `check` last ran, as far as the board knows (its runs on other nodes included).
    pub fn last_run_at(&self, check: &str) -> Option<SystemTime> {
        let checks = self.checks.read().expect("board lock");
        checks.get(check)?.run.as_ref().map(|run| run.started_at)
    }

    /// [`Board::record`] a run made elsewhere, unless the board already has that run or a later one: `None` then,
    /// else what recording it changed.
    pub fn record_newer(&self, run: &CheckRun) -> Option<Option<HealthChange>> {
        let mut checks = self.checks.write().expect("board lock");
        let known = checks.get(&run.check)?.run.as_ref().map(|known| known.started_at);
        known.is_none_or(|known| known < run.started_at).then(|| record(&mut checks, run))
    }

    /// Record a run of a registered check; runs of checks no longer configured are ignored. When the check's own
    /// status differs from its previous run's (or from unknown, for its first), the change.
    pub fn record(&self, run: &CheckRun) -> Option<HealthChange> {
        record(&mut self.checks.write().expect("board lock"), run)
    }

    /// Record where a check's recovery stands.
    pub fn set_recovery(&self, check: &str, status: RecoveryStatus) {
        if let Some(entry) = self.checks.write().expect("board lock").get_mut(check) {
            entry.recovery = Some(status);
        }
    }

    /// The dependency whose being down explains a failure of `check` now, if any.
    pub fn cause_of(&self, check: &str) -> Option<String> {
        let checks = self.checks.read().expect("board lock");
        root_cause(&checks, check, &mut Vec::new())
    }

    /// The dependency whose being down explains `check`'s failure at `failed_at`, judged once every dependency has
    /// reported since then (or twice its interval has passed): right after a failure, a dependency may not have
    /// run since it went down.
    pub async fn settled_cause(&self, check: &str, failed_at: SystemTime) -> Option<String> {
        let patience = {
            let checks = self.checks.read().expect("board lock");
            let entry = checks.get(check)?;
            entry.depends_on.iter().filter_map(|d| checks.get(d)).map(|d| d.interval * 2).max()?
        };
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            let reported = {
                let checks = self.checks.read().expect("board lock");
                let entry = checks.get(check)?;
                entry
                    .depends_on
                    .iter()
                    .filter_map(|d| checks.get(d))
                    .all(|d| !d.enabled || d.run.as_ref().is_some_and(|r| r.started_at >= failed_at))
            };
            if reported {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.cause_of(check)
    }

    /// One check's state, with its dependency cause applied.
    pub fn state_of(&self, check: &str) -> Option<CheckState> {
        let checks = self.checks.read().expect("board lock");
        checks.get(check).map(|entry| state(&checks, check, entry))
    }

    /// The latest run of every enabled check that has run, by check.
    pub fn latest_runs(&self) -> BTreeMap<String, CheckRun> {
        let checks = self.checks.read().expect("board lock");
        checks.iter().filter(|(_, e)| e.enabled).filter_map(|(name, e)| Some((name.clone(), e.run.clone()?))).collect()
    }

    /// Every check's state, by name, with dependency causes applied.
    pub fn snapshot(&self) -> Vec<CheckState> {
        let checks = self.checks.read().expect("board lock");
        checks.iter().map(|(name, entry)| state(&checks, name, entry)).collect()
    }
}

/// [`Board::record`] under the board's lock.
fn record(checks: &mut BTreeMap<String, Entry>, run: &CheckRun) -> Option<HealthChange> {
    let entry = checks.get_mut(&run.check)?;
    let from = entry.run.as_ref().map_or(Health::Unknown, |r| r.health);
    entry.run = Some(run.clone());
    (from != run.health).then(|| HealthChange {
        check: run.check.clone(),
        plugin: run.plugin.clone(),
        from,
        to: run.health,
        summary: run.summary.clone(),
        cause: if run.is_down() { root_cause(checks, &run.check, &mut Vec::new()) } else { None },
    })
}

/// The root of the chain of down dependencies under `name`, if a failure of `name` is explained by one.
fn root_cause(checks: &BTreeMap<String, Entry>, name: &str, visiting: &mut Vec<String>) -> Option<String> {
    if visiting.iter().any(|v| v == name) {
        return None;
    }
    visiting.push(name.to_string());
    let entry = checks.get(name)?;
    let cause = entry.depends_on.iter().find_map(|dependency| {
        let down = checks.get(dependency)?.run.as_ref().is_some_and(CheckRun::is_down);
        down.then(|| root_cause(checks, dependency, visiting).unwrap_or_else(|| dependency.clone()))
    });
    visiting.pop();
    cause
}

fn state(checks: &BTreeMap<String, Entry>, name: &str, entry: &Entry) -> CheckState {
    let run = entry.run.as_ref();
    let own_status = run.map_or(Health::Unknown, |r| r.health);
    let own_summary = run.map_or_else(
        || if entry.enabled { "not run yet".to_string() } else { "disabled".to_string() },
        |r| r.summary.clone(),
    );
    let cause = run.filter(|r| r.is_down()).and_then(|_| root_cause(checks, name, &mut Vec::new()));
    let (status, summary) = match &cause {
        Some(cause) => {
            let cause_status = checks.get(cause).and_then(|c| c.run.as_ref()).map_or(Health::Unknown, |r| r.health);
            (Health::Degraded, format!("depends on {cause}, which is {}: {own_summary}", cause_status.as_str()))
        }
        None => (own_status, own_summary),
    };
    CheckState {
        name: name.to_string(),
        plugin: entry.plugin.clone(),
        status,
        summary,
        cause,
        own_status,
        last_run: run.map(|r| rfc3339(to_millis(r.started_at))),
        response_time_ms: run.map(|r| r.duration.as_secs_f64() * 1000.0),
        details: run.map(|r| r.details.iter().cloned().collect()).unwrap_or_default(),
        error: run.and_then(|r| r.error.clone()),
        enabled: entry.enabled,
        interval_seconds: entry.interval.as_secs_f64(),
        depends_on: entry.depends_on.clone(),
        recovery: entry.recovery.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(check: &str, health: Health) -> CheckRun {
        let summary = format!("{check} says {}", health.as_str());
        CheckRun { health, summary, ..CheckRun::new(check, "p", SystemTime::now(), Duration::ZERO) }
    }

    #[test]
    fn a_failure_explained_by_a_dependency_names_the_root_cause() {
        let board = Board::default();
        let second = Duration::from_secs(1);
        board.register("db", "postgres", true, second, &[]);
        board.register("api", "http", true, second, &["db".into()]);
        board.register("bot", "http", true, second, &["api".into(), "openai".into()]);
        board.register("openai", "openai", true, second, &[]);
        for (name, health) in [
            ("db", Health::Unhealthy),
            ("api", Health::Unhealthy),
            ("bot", Health::Unhealthy),
            ("openai", Health::Healthy),
        ] {
            board.record(&run(name, health));
        }
        let states: BTreeMap<String, CheckState> = board.snapshot().into_iter().map(|s| (s.name.clone(), s)).collect();
        assert_eq!(states["db"].status, Health::Unhealthy);
        assert_eq!(states["db"].cause, None);
        assert_eq!(states["api"].status, Health::Degraded);
        assert_eq!(states["api"].cause.as_deref(), Some("db"));
        assert_eq!(states["api"].own_status, Health::Unhealthy);
        assert_eq!(states["api"].summary, "depends on db, which is unhealthy: api says unhealthy");
        assert_eq!(states["bot"].cause.as_deref(), Some("db"), "the root, not the nearest");
        assert_eq!(board.cause_of("bot").as_deref(), Some("db"));

        // A check that works although its dependency is down is reported as it is.
        board.record(&run("api", Health::Healthy));
        let api = board.snapshot().into_iter().find(|s| s.name == "api").unwrap();
        assert_eq!((api.status, api.cause), (Health::Healthy, None));

        // Once the dependency is back, a failure is the check's own.
        board.record(&run("db", Health::Healthy));
        board.record(&run("api", Health::Unhealthy));
        let api = board.snapshot().into_iter().find(|s| s.name == "api").unwrap();
        assert_eq!((api.status, api.cause), (Health::Unhealthy, None));
    }
}
