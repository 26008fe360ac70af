//! Reloading while running. The plugins folder is watched ([`watch`]): a new, replaced or removed component or
//! sidecar takes effect within a second or so. `SIGHUP`, `POST /v1/reload` and GraphQL's `reload` mutation
//! ([`handle`]) read the config file again as well. Either way the
//! whole new set of checks, log sources and rules is built and checked before anything changes: when anything is
//! wrong nothing changes, and every problem is reported.
//!
//! What a reload replaces: checks (a run in progress finishes on the plugin it started with, and schedules carry
//! on), log sources whose table or parser changed (a tailer resumes at its stored offset), rules, channels and
//! escalation policies (alerts in progress carry on), and what the API says about plugins. Settings outside those
//! tables take effect at the next start, and a reload says which ones changed.

pub mod handle;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::Alerting;
use crate::api::query::status::RefusedPlugin;
use crate::api::query::{Live, Queries};
use crate::app::host::Host;
use crate::checks::Check;
use crate::checks::health::CheckRun;
use crate::checks::scheduler::Scheduler;
use crate::config::{ApiConfig, Config};
use crate::events::Payload;
use crate::logs::ingest::Sink;
use crate::logs::parsing::Parsing;
use crate::logs::sources::Source;
use crate::logs::sources::syslog::BindError;
use crate::ops::reload::handle::{Handle, Outcome, Request, Trigger};
use crate::runtime::Runtime;
use crate::runtime::plugins::{Changes, Plugins, Refused};
use crate::storage::{rfc3339, to_millis};

/// The config tables a reload puts in place; a change anywhere else takes effect at the next start.
const RELOADED: &[&str] = &["check", "log_source", "rule", "channel", "escalation", "alerting"];

/// A log source at work, and what it was started from.
struct RunningSource {
    /// Its table and its parsers' digests: a source whose fingerprint is unchanged is left alone.
    fingerprint: String,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// What runs on the plugins of the plugins folder and the tables of the config, and what a reload needs to replace
/// it.
pub struct Reloader {
    /// The config as last applied: the file's own tables (without sidecars), and the settings in force since start-up.
    main: Config,
    /// The config file's text at start-up, which sections outside the reloaded tables are compared with.
    started_text: String,
    checks: Vec<Arc<Check>>,
    /// Checks, log sources and rules out of service because their plugin's file was removed; checks stay on the
    /// board with a result that says so.
    orphans: Orphans,
    /// The sidecars' texts as last applied, to tell a change in the folder from a file merely touched.
    sidecars: Vec<(PathBuf, String)>,
    runtime: Arc<Runtime>,
    scheduler: Arc<Scheduler>,
    queries: Arc<Queries>,
    alerting: tokio::sync::watch::Sender<Arc<Alerting>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// The checks now scheduled: cancelled to retire them, and the tasks that run them.
    retire: CancellationToken,
    scheduled: TaskTracker,
    sources: BTreeMap<String, RunningSource>,
}

#[derive(Default, Clone)]
struct Orphans {
    checks: BTreeSet<String>,
    sources: BTreeSet<String>,
    rules: BTreeSet<String>,
}

impl Reloader {
    /// Start the log sources and checks of `host` (a syslog address that cannot be bound stops start-up before any
    /// check runs). `main` is the config `host` was built from, before its sidecars were added.
    pub async fn start(
        host: &Host,
        main: Config,
        scheduler: Arc<Scheduler>,
        queries: Arc<Queries>,
        alerting: tokio::sync::watch::Sender<Arc<Alerting>>,
        (tasks, stop): (TaskTracker, CancellationToken),
    ) -> Result<Self, BindError> {
        let mut reloader = Self {
            started_text: main.source.text.clone(),
            main,
            checks: host.checks.clone(),
            orphans: Orphans::default(),
            sidecars: sidecar_texts(&host.config),
            runtime: host.runtime.clone(),
            scheduler,
            queries,
            alerting,
            retire: stop.child_token(),
            scheduled: TaskTracker::new(),
            tasks,
            stop,
            sources: BTreeMap::new(),
        };
        for source in &host.log_sources {
            reloader.start_source(source, &host.plugins).await?;
        }
        reloader.schedule(&host.checks);
        Ok(reloader)
    }

    /// Run `checks` as a generation of their own, retired by the next reload.
    fn schedule(&mut self, checks: &[Arc<Check>]) {
        self.retire = self.stop.child_token();
        self.scheduled = TaskTracker::new();
        self.scheduler.spawn(checks, &self.scheduled, &self.retire, &self.stop);
        self.scheduled.close();
        let scheduled = self.scheduled.clone();
        self.tasks.spawn(async move { scheduled.wait().await });
    }

    /// Serve reload requests one after the other until `stop`.
    pub fn spawn(mut self, handle: Handle, mut requests: mpsc::Receiver<Request>) {
        let (tasks, stop) = (self.tasks.clone(), self.stop.clone());
        tasks.spawn(async move {
            loop {
                let (trigger, reply) = tokio::select! {
                    () = stop.cancelled() => return,
                    request = requests.recv() => match request {
                        Some(request) => request,
                        None => return,
                    },
                };
                // A change in the folder that changed nothing (a file touched, or events of a change already
                // taken up) leaves the last outcome as it was.
                let Some(outcome) = self.reload(trigger).await else { continue };
                handle.set_last(outcome.clone());
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
        });
    }

    /// Build everything again and, when all of it is valid, put it in place. None for a change in the plugins
    /// folder that changed no component or sidecar.
    pub async fn reload(&mut self, trigger: Trigger) -> Option<Outcome> {
        let mut outcome = Outcome {
            trigger: trigger.as_str().into(),
            at: rfc3339(to_millis(SystemTime::now())),
            applied: false,
            errors: Vec::new(),
            changes: Vec::new(),
            restart_needed: Vec::new(),
        };
        let main = match (trigger, &self.main.source.file) {
            (Trigger::Signal | Trigger::Api | Trigger::GraphQl, Some(file)) => match Config::load(Some(file)) {
                Ok(config) => config,
                Err(error) => {
                    outcome.errors.push(error.to_string());
                    return Some(self.report(outcome));
                }
            },
            _ => self.main.clone(),
        };
        let dir = self.main.source.resolve(&self.main.plugins.dir);
        let before = self.queries.live().plugins.clone();
        let mut plugins = Plugins::clone(&before);
        let changes = plugins.rescan(&self.runtime, &dir, self.main.plugins.max_file_size.as_u64()).await;
        // Only the reloaded tables come from the file read now; every other setting stays as it was at start-up.
        let config = Config {
            rules: main.rules.clone(),
            channels: main.channels.clone(),
            escalations: main.escalations.clone(),
            checks: main.checks.clone(),
            log_sources: main.log_sources.clone(),
            alerting: main.alerting.clone(),
            api: ApiConfig { keys: main.api.keys.clone(), ..self.main.api.clone() },
            source: main.source.clone(),
            ..self.main.clone()
        };
        let config = config.with_sidecars();
        let sidecars = config.as_ref().map(sidecar_texts).ok();
        if trigger == Trigger::Folder && changes.is_empty() && sidecars.as_ref() == Some(&self.sidecars) {
            return None;
        }
        outcome.changes.extend(describe(&changes, &before, &plugins));
        if trigger != Trigger::Folder {
            outcome.restart_needed = restart_needed(&self.started_text, &main.source.text);
        }
        let mut config = match config {
            Ok(config) => config,
            Err(errors) => {
                outcome.errors.extend(errors.iter().map(ToString::to_string));
                self.show_refusals(&changes.refused);
                return Some(self.report(outcome));
            }
        };
        let orphans = if trigger == Trigger::Folder {
            self.take_out_of_service(&mut config, &plugins)
        } else {
            Orphans::default()
        };
        let host = match Host::assemble(config, self.runtime.clone(), plugins).await {
            Ok(host) => host,
            Err(errors) => {
                outcome.errors.extend(errors.iter().map(ToString::to_string));
                self.show_refusals(&changes.refused);
                return Some(self.report(outcome));
            }
        };
        if host.access.is_open() != self.queries.access.is_open() {
            let error = "`[api] keys`: adding the first key or removing the last takes effect at the next start";
            outcome.errors.push(format!("{}: {error}", self.main.source.name()));
            self.show_refusals(&changes.refused);
            return Some(self.report(outcome));
        }
        let (said, failed) = self.apply(host, orphans, &changes).await;
        outcome.changes.extend(said);
        outcome.errors.extend(failed);
        self.main = main;
        self.sidecars = sidecars.unwrap_or_default();
        outcome.applied = true;
        Some(self.report(outcome))
    }

    /// Take the checks, log sources and rules that ran on a plugin no longer loaded out of `config` (a dependency
    /// on such a check is set aside while it is out of service); a new table must still name a plugin that is
    /// there.
    fn take_out_of_service(&self, config: &mut Config, plugins: &Plugins) -> Orphans {
        let live = self.queries.live();
        let running_rules = rule_names(&live.alerting);
        let mut orphans = Orphans::default();
        config.checks.retain(|check| {
            let check = check.get_ref();
            let ran = self.orphans.checks.contains(&check.name) || self.checks.iter().any(|c| c.name == check.name);
            plugins.get(&check.plugin).is_some() || !ran || !orphans.checks.insert(check.name.clone())
        });
        for check in &mut config.checks {
            let depends_on = &mut check.get_mut().depends_on;
            depends_on.retain(|name| !orphans.checks.contains(name));
        }
        config.log_sources.retain(|source| {
            let source = source.get_ref();
            let ran = self.orphans.sources.contains(&source.name)
                || self.sources.contains_key(&source.name)
                || live.http_sources.contains_key(&source.name);
            Parsing::resolve(source.parser(), Vec::new(), plugins).is_ok()
                || !ran
                || !orphans.sources.insert(source.name.clone())
        });
        config.rules.retain(|rule| {
            let rule = rule.get_ref();
            let ran = self.orphans.rules.contains(&rule.name) || running_rules.contains(&rule.name);
            plugins.get(&rule.plugin).is_some() || !ran || !orphans.rules.insert(rule.name.clone())
        });
        orphans
    }

    /// Show files refused by a reload that was not applied in `/v1/status` and `/v1/plugins` too.
    fn show_refusals(&self, refused: &[Refused]) {
        if refused.is_empty() {
            return;
        }
        let live = self.queries.live();
        let mut about = live.about.clone();
        for refusal in refused {
            let file = refusal.file.display().to_string();
            about.refused_plugins.retain(|r| r.file != file);
            about.refused_plugins.push(RefusedPlugin { file, reason: refusal.reason.clone() });
        }
        self.queries.replace_live(Live {
            http_sources: live.http_sources.clone(),
            plugins: live.plugins.clone(),
            about,
            alerting: live.alerting.clone(),
        });
    }

    fn report(&self, outcome: Outcome) -> Outcome {
        if outcome.applied {
            let changes = if outcome.changes.is_empty() { "none".into() } else { outcome.changes.join("; ") };
            tracing::info!(trigger = %outcome.trigger, %changes, "Reloaded");
            if !outcome.errors.is_empty() {
                tracing::error!(errors = %outcome.errors.join("\n"), "Reloaded, but not everything could start");
            }
            if !outcome.restart_needed.is_empty() {
                tracing::warn!(sections = %outcome.restart_needed.join(", "), "These config changes take effect at the next start");
            }
        } else {
            tracing::error!(trigger = %outcome.trigger, errors = %outcome.errors.join("\n"), "Reload refused; everything runs as before");
        }
        outcome
    }

    /// Put `host` in place of what runs now: what changed, and what could not start.
    async fn apply(&mut self, host: Host, orphans: Orphans, changes: &Changes) -> (Vec<String>, Vec<String>) {
        let (mut said, mut failed) = (Vec::new(), Vec::new());
        let board = &self.scheduler.board;
        let before: BTreeSet<&str> = self.checks.iter().map(|c| c.name.as_str()).collect();
        let after: BTreeSet<&str> = host.checks.iter().map(|c| c.name.as_str()).collect();
        said.extend(after.difference(&before).map(|name| format!("check `{name}` added")));
        for name in board.names() {
            if !after.contains(name.as_str()) && !orphans.checks.contains(&name) {
                board.unregister(&name);
                self.scheduler.schedule.lock().expect("schedule lock").remove(&name);
                said.push(format!("check `{name}` removed"));
            }
        }
        for check in &host.checks {
            board.register(&check.name, &check.plugin.info.name, check.enabled, check.interval, &check.depends_on);
        }
        self.retire.cancel();
        let retired = self.scheduled.clone();
        self.schedule(&host.checks);
        let stopped: Vec<Arc<Check>> = self
            .checks
            .iter()
            .filter(|check| orphans.checks.contains(&check.name) && !self.orphans.checks.contains(&check.name))
            .cloned()
            .collect();
        said.extend(stopped.iter().map(|check| format!("check `{}` stopped: its plugin was removed", check.name)));
        self.record_stopped(stopped, retired, changes);

        let keep: BTreeSet<&str> = host
            .log_sources
            .iter()
            .map(|source| (source.config.name.as_str(), source.fingerprint(&host.plugins)))
            .filter(|(name, fingerprint)| self.sources.get(*name).is_some_and(|s| s.fingerprint == *fingerprint))
            .map(|(name, _)| name)
            .collect();
        let stale: Vec<String> = self.sources.keys().filter(|name| !keep.contains(name.as_str())).cloned().collect();
        for name in stale {
            if !host.log_sources.iter().any(|source| source.config.name == name) {
                said.push(format!("log source `{name}` stopped"));
            }
            let source = self.sources.remove(&name).expect("listed above");
            source.stop.cancel();
            // Its replacement starts where its last commit ended, so it must not start before that commit.
            tokio::select! {
                () = source.tasks.wait() => {}
                () = self.stop.cancelled() => return (said, failed),
            }
        }
        for source in &host.log_sources {
            if keep.contains(source.config.name.as_str()) {
                continue;
            }
            match self.start_source(source, &host.plugins).await {
                Ok(true) => said.push(format!("log source `{}` (re)started", source.config.name)),
                Ok(false) => {}
                Err(error) => failed.push(error.to_string()),
            }
        }

        let (before, after) = (rule_names(&self.alerting.borrow()), rule_names(&host.alerting));
        said.extend(after.difference(&before).map(|r| format!("rule `{r}` added")));
        said.extend(before.difference(&after).map(|r| format!("rule `{r}` removed")));
        self.alerting.send_replace(host.alerting.clone());

        for plugin in host.plugins.iter() {
            self.scheduler.telemetry.register_plugin(&plugin.info.name);
        }
        match self.queries.access.take_keys(&host.access) {
            Ok(keys) => said.extend(keys),
            Err(error) => failed.push(error),
        }
        self.queries.replace_live(Live::of(&host));
        self.checks = host.checks;
        self.orphans = orphans;
        (said, failed)
    }

    /// Once the runs in flight of the retired checks have ended (one may be of a check whose plugin was just
    /// removed), record that each of `stopped` no longer runs, as its latest (unknown) result.
    fn record_stopped(&self, stopped: Vec<Arc<Check>>, retired: TaskTracker, changes: &Changes) {
        if stopped.is_empty() {
            return;
        }
        let removed = changes.removed.clone();
        let scheduler = self.scheduler.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = retired.wait() => {}
                () = stop.cancelled() => return,
            }
            // A check another node runs is that node's to report.
            for check in stopped.into_iter().filter(|check| scheduler.cluster.holds(&check.name)) {
                let plugin = &check.plugin.info.name;
                let why = removed.iter().find(|(name, _)| name == plugin).map(|(_, why)| why.as_str());
                let mut run = CheckRun::new(&check.name, plugin.clone(), SystemTime::now(), Duration::ZERO);
                run.summary = format!("not running: its plugin `{plugin}` was unloaded");
                run.error = Some(format!(
                    "the plugin `{plugin}` was unloaded because {}; put it back, or take the check out of the config",
                    why.unwrap_or("its file is gone")
                ));
                if let Some(change) = scheduler.board.record(&run) {
                    scheduler.events.publish(Payload::HealthChanged(change));
                }
                tracing::warn!(check = %check.name, plugin = %plugin, "Check stopped: its plugin was removed");
                let _ = scheduler.storage.write_run(run).await;
            }
        });
    }

    /// Start a file or syslog source (an `http` source is served by the API): whether one was started.
    async fn start_source(&mut self, source: &Source, plugins: &Plugins) -> Result<bool, BindError> {
        let stop = self.stop.child_token();
        let tasks = TaskTracker::new();
        let sink = Sink { storage: self.scheduler.storage.clone(), telemetry: self.scheduler.telemetry.clone() };
        if !source.start(&self.runtime, &sink, &tasks, stop.clone()).await? {
            return Ok(false);
        }
        // Shutdown waits for the source like for everything else.
        tasks.close();
        let waited = tasks.clone();
        self.tasks.spawn(async move { waited.wait().await });
        let fingerprint = source.fingerprint(plugins);
        self.sources.insert(source.config.name.clone(), RunningSource { fingerprint, stop, tasks });
        Ok(true)
    }
}

/// The sidecars a config was built with, and their texts.
fn sidecar_texts(config: &Config) -> Vec<(PathBuf, String)> {
    config.source.sidecars.iter().map(|sidecar| (sidecar.file.clone(), sidecar.text.clone())).collect()
}

/// The names of the rules in force.
fn rule_names(alerting: &Alerting) -> BTreeSet<String> {
    alerting.rules.iter().map(|rule| rule.name.clone()).collect()
}

/// Plugin changes in words.
fn describe(changes: &Changes, before: &Plugins, after: &Plugins) -> Vec<String> {
    let version = |plugins: &Plugins, name: &str| plugins.get(name).map(|p| p.info.version.clone()).unwrap_or_default();
    let mut said = Vec::new();
    for name in &changes.added {
        said.push(format!("plugin `{name}` {} loaded", version(after, name)));
    }
    for name in &changes.replaced {
        said.push(format!("plugin `{name}` {} replaced by {}", version(before, name), version(after, name)));
    }
    for (name, why) in &changes.removed {
        said.push(format!("plugin `{name}` unloaded: {why}"));
    }
    for refused in &changes.refused {
        said.push(format!("{} refused: {}", refused.file.display(), refused.reason));
    }
    said
}

/// The top-level sections, other than those a reload puts in place, that differ between two config texts (`[api]`
/// but for its keys, which a reload puts in place).
fn restart_needed(before: &str, after: &str) -> Vec<String> {
    let table = |text: &str| {
        let mut table = text.parse::<toml::Table>().unwrap_or_default();
        if let Some(toml::Value::Table(api)) = table.get_mut("api") {
            api.remove("keys");
            if api.is_empty() {
                table.remove("api");
            }
        }
        table
    };
    let (before, after) = (table(before), table(after));
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| !RELOADED.contains(&key.as_str()) && before.get(*key) != after.get(*key))
        .map(|key| format!("[{key}]"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sections_a_reload_does_not_replace_need_a_restart() {
        let before = "[server]\napi_listen = \"127.0.0.1:1\"\n\n[[check]]\nname = \"a\"\nplugin = \"http\"\n";
        let after = "[server]\napi_listen = \"127.0.0.1:2\"\n\n[[check]]\nname = \"b\"\nplugin = \"http\"\n\n[retention]\nlogs = \"1d\"\n";
        assert_eq!(restart_needed(before, after), ["[retention]", "[server]"]);
        assert!(restart_needed(before, before).is_empty());
        let keys = |key: &str, limit: u32| {
            format!("[api]\nrate_limit = {limit}\n[[api.keys]]\nname = \"ops\"\nkey = \"{key}\"\n")
        };
        assert!(restart_needed(&keys("a-key-0123456789ab", 60), &keys("b-key-0123456789ab", 60)).is_empty());
        assert_eq!(restart_needed(&keys("a-key-0123456789ab", 60), &keys("a-key-0123456789ab", 90)), ["[api]"]);
    }
}
