//! selfmon's own state and its checks' as the API shows them: `/v1/health`, `/v1/status`, `/v1/plugins` and
//! `/metrics`.

use serde::Serialize;

use super::Queries;
use crate::api::error::QueryError;
use crate::checks::board::CheckState;
use crate::checks::health::Health;
use crate::cluster::NodeStatus;
use crate::ops::heap::Heap;
use crate::ops::reload::handle::Outcome;
use crate::ops::telemetry::{CheckFigures, PluginMetric, Scrape};
use crate::storage::{Figures, Storage, rfc3339};

/// The latest failed runs listed over all plugins by `/v1/plugins`.
const RECENT_FAILURES: usize = 50;

/// What selfmon runs: its version, contract, plugins and their users (as of the last reload).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct About {
    pub version: &'static str,
    pub contract: &'static str,
    pub plugins: Vec<PluginSummary>,
    /// The configured checks, log sources and rules, each with its plugin.
    pub uses: Vec<(String, PluginUse)>,
    pub refused_plugins: Vec<RefusedPlugin>,
    pub max_concurrent_checks: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginSummary {
    pub name: String,
    /// `checker`, `parser` or `rule`.
    pub kind: &'static str,
    pub version: String,
    pub description: String,
    /// `built-in`, or the file it was loaded from.
    pub source: String,
    pub size_bytes: usize,
    pub sha256: String,
}

/// Something configured that calls a plugin, and what it was granted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginUse {
    /// `check`, `log_source` or `rule`.
    pub kind: &'static str,
    pub name: String,
    /// Where it may connect (checks; parsers and rules have no network).
    pub network: Vec<String>,
    /// The names of the secrets it is given; never their values.
    pub secrets: Vec<String>,
}

/// `GET /v1/plugins`: the loaded plugins, what uses them, and how their calls fail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginsReport {
    pub contract: &'static str,
    pub plugins: Vec<PluginReport>,
    pub refused: Vec<RefusedPlugin>,
    /// How the last reload of the plugins folder or the config went; none since start-up.
    pub last_reload: Option<Outcome>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginReport {
    #[serde(flatten)]
    pub plugin: PluginSummary,
    pub used_by: Vec<PluginUse>,
    /// Failed check calls since start-up by kind: `plugin_error` (reported by the plugin), `deadline` (stopped at
    /// its deadline), `memory` (over its memory limit), `trap`, `instantiate`.
    pub failures: std::collections::BTreeMap<&'static str, u64>,
    /// The latest stored runs of its checks that could not be carried out, newest first.
    pub recent_failures: Vec<PluginFailure>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginFailure {
    /// RFC 3339.
    pub at: String,
    pub check: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefusedPlugin {
    pub file: String,
    pub reason: String,
}

/// `/v1/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// The worst status among the enabled checks (of the one check, when `service` names one), across all pages.
    pub status: Health,
    /// A page of the checks, by name.
    pub checks: Vec<CheckState>,
    /// Checks in all.
    pub total: usize,
}

/// `/v1/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub version: &'static str,
    pub contract: &'static str,
    pub uptime_seconds: f64,
    pub plugins: Vec<PluginSummary>,
    pub refused_plugins: Vec<RefusedPlugin>,
    /// How the last reload (of the config or the plugins folder) went; none since start-up.
    pub last_reload: Option<Outcome>,
    pub checks: CheckCounts,
    pub scheduler: SchedulerFigures,
    pub storage: Figures,
    pub api: ApiFigures,
    /// This node's name.
    pub node: String,
    /// The nodes sharing the store, each with the checks it runs and its last heartbeat; on SQLite, this node alone.
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiFigures {
    /// Whether calls need a key.
    pub open: bool,
    /// Calls refused (missing or wrong key, role too weak) since start-up.
    pub refused_calls: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckCounts {
    pub configured: usize,
    pub enabled: usize,
    pub by_status: std::collections::BTreeMap<&'static str, usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SchedulerFigures {
    pub max_concurrent: usize,
    /// Check runs started since start-up.
    pub runs: u64,
    /// Runs whose plugin failed (reported an error, ran out of time or memory, crashed, did not start).
    pub plugin_failures: u64,
    /// How late runs started after their slot, on average.
    pub mean_lag_ms: f64,
}

impl Queries {
    /// Every check's latest state (a page of them), or one check's.
    pub fn health(&self, service: Option<&str>, offset: usize, limit: usize) -> Result<HealthReport, QueryError> {
        let mut checks = self.board.snapshot();
        if let Some(service) = service {
            checks.retain(|c| c.name == service);
            if checks.is_empty() {
                return Err(QueryError::NotFound {
                    code: "unknown_check",
                    message: format!("no check named `{service}`"),
                });
            }
        }
        let considered = |c: &&CheckState| c.enabled || service.is_some();
        let status = checks.iter().filter(considered).map(|c| c.status).max().unwrap_or(Health::Healthy);
        let total = checks.len();
        let checks = checks.into_iter().skip(offset).take(limit).collect();
        Ok(HealthReport { status, checks, total })
    }

    /// The plugins, with their users' grants, failure counts and latest failures.
    pub async fn plugins(&self) -> Result<PluginsReport, QueryError> {
        let mut recent =
            self.storage.recent_failures(RECENT_FAILURES).await.map_err(|e| QueryError::Storage(e.to_string()))?;
        let live = self.live();
        let plugins = live
            .about
            .plugins
            .iter()
            .map(|plugin| PluginReport {
                plugin: plugin.clone(),
                used_by: live.about.uses.iter().filter(|(p, _)| *p == plugin.name).map(|(_, u)| u.clone()).collect(),
                failures: self.telemetry.plugin_failures(&plugin.name),
                recent_failures: recent
                    .remove(&plugin.name)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(at, check, message)| PluginFailure { at: rfc3339(at), check, message })
                    .collect(),
            })
            .collect();
        Ok(PluginsReport {
            contract: live.about.contract,
            plugins,
            refused: live.about.refused_plugins.clone(),
            last_reload: self.reloads.last(),
        })
    }

    pub async fn status(&self) -> Result<Status, QueryError> {
        let live = self.live();
        let checks = self.board.snapshot();
        let mut by_status = std::collections::BTreeMap::new();
        for check in checks.iter().filter(|c| c.enabled) {
            *by_status.entry(check.status.as_str()).or_insert(0) += 1;
        }
        Ok(Status {
            version: live.about.version,
            contract: live.about.contract,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            plugins: live.about.plugins.clone(),
            refused_plugins: live.about.refused_plugins.clone(),
            last_reload: self.reloads.last(),
            checks: CheckCounts {
                configured: checks.len(),
                enabled: checks.iter().filter(|c| c.enabled).count(),
                by_status,
            },
            scheduler: {
                let totals = self.telemetry.scheduler_totals();
                SchedulerFigures {
                    max_concurrent: live.about.max_concurrent_checks,
                    runs: totals.runs,
                    plugin_failures: totals.plugin_failures,
                    mean_lag_ms: totals.mean_lag.as_secs_f64() * 1000.0,
                }
            },
            storage: self.storage.figures().await.map_err(|e| QueryError::Storage(e.to_string()))?,
            api: ApiFigures { open: self.access.is_open(), refused_calls: self.access.refused() },
            node: self.cluster.node().to_string(),
            nodes: self.cluster.nodes().await.map_err(|e| QueryError::Storage(e.to_string()))?,
        })
    }

    /// `/metrics`: selfmon's own metrics in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        let live = self.live();
        let states = self.board.snapshot();
        let runs = self.board.latest_runs();
        let checks = states
            .iter()
            .filter(|c| c.enabled)
            .map(|c| {
                let run = runs.get(&c.name);
                CheckFigures {
                    name: &c.name,
                    plugin: &c.plugin,
                    serving: matches!(c.own_status, Health::Healthy | Health::Degraded),
                    status: c.status.as_str(),
                    last_run: run.map(|r| (r.started_at, r.duration)),
                    metrics: run
                        .into_iter()
                        .flat_map(|r| &r.metrics)
                        .map(|m| PluginMetric {
                            name: &m.name,
                            value: m.value,
                            labels: m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                        })
                        .collect(),
                }
            })
            .collect();
        let statuses = Health::ALL.map(Health::as_str);
        self.telemetry.render(&Scrape {
            checks,
            statuses: &statuses,
            writes_queued: self.storage.queued(),
            storage_full: self.storage.is_full(),
            storage_heap_bytes: Storage::heap_bytes(),
            heap: Heap::now(),
            refused_calls: self.access.refused(),
            version: live.about.version,
            contract: live.about.contract,
        })
    }
}
