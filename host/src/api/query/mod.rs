//! The query layer: everything the API answers is computed here, once, so the REST handlers, the GraphQL
//! resolvers and the dashboard only translate parameters and results. One file per area: [`status`] (selfmon and
//! its checks' state), [`checks`] (runs, metrics, performance), [`alerts`] (and webhooks), [`logs`], [`traces`],
//! [`analytics`].
//!
//! [`Queries`] is what every answer sees; [`Live`] is the part a reload replaces whole; the
//! [intake budget](crate::api::intake::Budget) and [`MAX_TAILS`] bound the ingestions and live tails held at once.

pub mod alerts;
pub mod analytics;
pub mod checks;
pub mod logs;
pub mod status;
pub mod traces;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alerting::Alerting;
use crate::alerting::engine::RuleStatus;
use crate::analytics::events::Usage;
use crate::api::access::Access;
use crate::api::error::QueryError;
use crate::app::host::Host;
use crate::checks::board::Board;
use crate::checks::performance::MAX_WINDOW;
use crate::cluster::Cluster;
use crate::config::{AiConfig, IngestConfig, TracesConfig};
use crate::events::Events;
use crate::logs::analysis::MAX_HOURS;
use crate::logs::parsing::Parsing;
use crate::logs::sources::Input;
use crate::ops::reload::handle::Handle;
use crate::ops::telemetry::Telemetry;
use crate::runtime::plugins::Plugins;
use crate::runtime::{CONTRACT_VERSION, Reach, Runtime};
use crate::storage::{ChangeError, Storage, StorageError};
use status::{About, PluginSummary, PluginUse, RefusedPlugin};

/// What the queries can see.
pub struct Queries {
    /// Where events go.
    pub usage: Arc<Usage>,
    pub ai: AiConfig,
    pub traces: TracesConfig,
    /// `[ingest]`: what an ingest request may hold.
    pub ingest: IngestConfig,
    /// How long events are kept: older ones are refused.
    pub retention_events: Duration,
    /// Where webhooks created through the API may deliver.
    pub webhook_reach: Reach,
    pub runtime: Arc<Runtime>,
    /// What a reload replaces, as of the last one.
    pub live: std::sync::RwLock<Arc<Live>>,
    /// Where reloads are asked for, and how the last one went.
    pub reloads: Handle,
    pub board: Arc<Board>,
    /// This node among the others sharing the store.
    pub cluster: Arc<Cluster>,
    pub storage: Storage,
    pub access: Arc<Access>,
    pub telemetry: Arc<Telemetry>,
    pub events: Events,
    pub started: Instant,
    /// Live tails that may be open at once.
    pub tails: Arc<tokio::sync::Semaphore>,
    /// The memory all ingest requests at once may hold (`[ingest] memory`).
    pub intake: crate::api::intake::Budget,
    /// Cancelled when selfmon stops, ending live tails.
    pub stopping: tokio_util::sync::CancellationToken,
    /// How every rule fared at its last evaluation.
    pub rule_status: Arc<std::sync::Mutex<std::collections::BTreeMap<String, RuleStatus>>>,
}

/// The parts of the API's answers that come from the config and the plugins folder, replaced whole by a reload.
pub struct Live {
    /// `[[log_source]]` tables of kind `http`: their parser and default service, by name.
    pub http_sources: std::collections::BTreeMap<String, (Parsing, Option<String>)>,
    pub plugins: Arc<Plugins>,
    pub about: About,
    /// Rules, channels and escalation policies from the config.
    pub alerting: Arc<Alerting>,
}

impl Live {
    /// What the API says of a host just built.
    pub fn of(host: &Host) -> Self {
        Self {
            http_sources: http_sources(host),
            about: about(host),
            plugins: host.plugins.clone(),
            alerting: host.alerting.clone(),
        }
    }
}

impl Queries {
    /// What the config and the plugins folder say now. A request holds on to what it read first, so a reload in the
    /// middle of it does not mix old and new.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().expect("live lock").clone()
    }

    /// Put in what a reload built.
    pub fn replace_live(&self, live: Live) {
        *self.live.write().expect("live lock") = Arc::new(live);
    }
}

/// Live tails open at once, across all callers.
pub const MAX_TAILS: usize = 64;

/// What the API says about the plugins and what uses them.
fn about(host: &Host) -> About {
    About {
        version: env!("CARGO_PKG_VERSION"),
        contract: CONTRACT_VERSION,
        uses: plugin_uses(host),
        plugins: host
            .plugins
            .iter()
            .map(|p| PluginSummary {
                name: p.info.name.clone(),
                kind: p.kind().as_str(),
                version: p.info.version.clone(),
                description: p.info.description.clone(),
                source: p.source.to_string(),
                size_bytes: p.size,
                sha256: p.sha256.clone(),
            })
            .collect(),
        refused_plugins: host
            .plugins
            .refused()
            .iter()
            .map(|r| RefusedPlugin { file: r.file.display().to_string(), reason: r.reason.clone() })
            .collect(),
        max_concurrent_checks: host.config.scheduler.max_concurrent,
    }
}

/// The `kind = "http"` log sources: their parser and default service, by name.
fn http_sources(host: &Host) -> BTreeMap<String, (Parsing, Option<String>)> {
    host.log_sources
        .iter()
        .filter(|source| matches!(source.input, Input::Http))
        .map(|source| (source.config.name.clone(), (source.parsing.clone(), source.config.service.clone())))
        .collect()
}

/// What calls each plugin: (plugin name, use).
fn plugin_uses(host: &Host) -> Vec<(String, PluginUse)> {
    let checks = host.checks.iter().map(|check| {
        (
            check.plugin.info.name.clone(),
            PluginUse {
                kind: "check",
                name: check.name.clone(),
                network: check.sandbox.grants.entries(),
                secrets: check.secret_names(),
            },
        )
    });
    let sources = host.log_sources.iter().flat_map(|source| {
        source.parsing.plugin_names().into_iter().map(|plugin| {
            (
                plugin,
                PluginUse {
                    kind: "log_source",
                    name: source.config.name.clone(),
                    network: Vec::new(),
                    secrets: Vec::new(),
                },
            )
        })
    });
    let rules = host.alerting.rules.iter().map(|rule| {
        (
            rule.plugin.info.name.clone(),
            PluginUse { kind: "rule", name: rule.name.clone(), network: Vec::new(), secrets: Vec::new() },
        )
    });
    checks.chain(sources).chain(rules).collect()
}

fn check_hours(hours: u64) -> Result<(), QueryError> {
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(QueryError::Invalid(format!("`hours` must be between 1 and {MAX_HOURS}")));
    }
    Ok(())
}

fn check_window(window: Duration) -> Result<(), QueryError> {
    if window.is_zero() || window > MAX_WINDOW {
        return Err(QueryError::Invalid(format!(
            "`time_window` must be between 1 and {} seconds",
            MAX_WINDOW.as_secs()
        )));
    }
    Ok(())
}

fn storage(error: StorageError) -> QueryError {
    match error {
        StorageError::Full(_) => QueryError::Full,
        error => QueryError::Storage(error.to_string()),
    }
}

fn change(error: ChangeError) -> QueryError {
    match error {
        ChangeError::Conflict(message) => QueryError::Conflict(message),
        ChangeError::NotFound { code, message } => QueryError::NotFound { code, message },
        ChangeError::Storage(error) => storage(error),
    }
}
