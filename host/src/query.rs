//! The query layer: everything the API answers is computed here, once, so the REST handlers (and the GraphQL
//! resolvers to come) only translate parameters and results.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::access::Access;
use crate::alerting::channels::Attempt;
use crate::alerting::silences::{Silence, SilenceRequest};
use crate::alerting::{Alerting, RuleStatus, rules};
use crate::alerts::{Alert, ChangeError, Page, Rule, RuleRequest};
use crate::analysis::{Aggregation, Analysis, MAX_BUCKETS, MAX_HOURS, Period, Security};
use crate::events::Events;
use crate::health::{Board, CheckState, Health};
use crate::logs::{Found, Origin, Parsed, Parsing, Search, SearchError, StoredRecord};
use crate::performance::{Errors, LatencySeries, MAX_WINDOW, Performance, Subject};
use crate::plugins::Plugins;
use crate::runtime::Runtime;
use crate::storage::{
    Figures, MetricName, SeriesError, SeriesPage, SeriesQuery, Storage, StorageError, StoredAttempt, StoredRun,
};
use crate::telemetry::{Scrape, Telemetry};
use crate::webhooks::{Delivery, Webhook, WebhookRequest};

/// What the queries can see.
pub struct Queries {
    /// Where events go.
    pub usage: Arc<crate::usage::Usage>,
    pub ai: crate::config::AiConfig,
    pub traces: crate::config::TracesConfig,
    /// How long events are kept: older ones are refused.
    pub retention_events: Duration,
    pub runtime: Arc<Runtime>,
    /// What a reload replaces, as of the last one.
    pub live: std::sync::RwLock<Arc<Live>>,
    /// Where reloads are asked for, and how the last one went.
    pub reloads: crate::reload::Handle,
    pub board: Arc<Board>,
    pub storage: Storage,
    pub access: Arc<Access>,
    pub telemetry: Arc<Telemetry>,
    pub events: Events,
    pub started: Instant,
    /// Live tails that may be open at once.
    pub tails: Arc<tokio::sync::Semaphore>,
    /// Log ingestions that may wait for storage at once.
    pub ingesting: Arc<tokio::sync::Semaphore>,
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
    pub fn of(host: &crate::Host) -> Self {
        Self {
            http_sources: crate::http_sources(host),
            about: crate::about(host),
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

/// Log ingestions (inflated, parsed and waiting for their commit) at once; a further one waits [`INGEST_WAIT`] for
/// its turn, then is refused with a 503, so a flood while storage is behind holds few bodies and no connection for
/// long.
pub const MAX_INGESTING: usize = 32;
const INGEST_WAIT: Duration = Duration::from_secs(2);

/// Live tails open at once, across all callers.
pub const MAX_TAILS: usize = 64;

/// The latest failed runs listed over all plugins by `/v1/plugins`.
const RECENT_FAILURES: usize = 50;
/// Records a live tail sends from before it started, at most.
pub const MAX_BACKLOG: u64 = 1000;

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
    pub last_reload: Option<crate::reload::Outcome>,
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

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A request whose fields are wrong, every problem named.
    #[error("{}", .0.join("; "))]
    Rejected(Vec<String>),
    #[error("{0}")]
    Conflict(String),
    /// Storage is behind: the caller should come back later.
    #[error("storage is behind; retry shortly")]
    Busy,
    /// A limit on open streams is reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("storage: {0}")]
    Storage(String),
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
    pub last_reload: Option<crate::reload::Outcome>,
    pub checks: CheckCounts,
    pub scheduler: SchedulerFigures,
    pub storage: Figures,
    pub api: ApiFigures,
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

/// A metrics query, as the API takes it.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    pub name: Option<String>,
    pub matchers: Vec<(String, String)>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub step: Option<Duration>,
    pub offset: usize,
    pub limit: usize,
}

/// `/v1/metrics`: the metric names, or a page of one metric's series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MetricsAnswer {
    Names {
        metrics: Vec<MetricName>,
    },
    Series {
        metric: String,
        /// RFC 3339.
        from: String,
        to: String,
        step_seconds: Option<f64>,
        offset: usize,
        limit: usize,
        #[serde(flatten)]
        page: SeriesPage,
    },
}

/// 9999-12-31T23:59:59Z: times are written as RFC 3339, which has four-digit years.
const LATEST: Duration = Duration::from_secs(253_402_300_799);

/// Writes queued past which log ingestion is refused with a 503, so a flood cannot grow memory.
const BUSY_QUEUE: usize = 2048;

/// The default range of a metrics query without `from`.
const DEFAULT_RANGE: Duration = Duration::from_secs(3600);

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

    /// Latency percentiles and counts of a check or an operation over time.
    pub async fn latency_series(&self, subject: Subject, range: Duration) -> Result<LatencySeries, QueryError> {
        if range.is_zero() || range > MAX_WINDOW {
            return Err(QueryError::Invalid(format!(
                "`range` must be longer than 0s and at most {}",
                humantime::format_duration(MAX_WINDOW)
            )));
        }
        if let Subject::Check(check) = &subject
            && !self.board.snapshot().iter().any(|c| c.name == *check)
        {
            return Err(QueryError::NotFound {
                code: "unknown_check",
                message: format!("no check is named `{check}`"),
            });
        }
        self.storage.latency_series(subject, range).await.map_err(|e| QueryError::Storage(e.to_string()))
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
                    .map(|(at, check, message)| PluginFailure { at: crate::storage::rfc3339(at), check, message })
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
        })
    }

    pub async fn metrics(&self, request: MetricsRequest) -> Result<MetricsAnswer, QueryError> {
        let Some(name) = request.name else {
            let metrics = self.storage.metric_names().await.map_err(|e| QueryError::Storage(e.to_string()))?;
            return Ok(MetricsAnswer::Names { metrics });
        };
        let to = request.to.unwrap_or_else(SystemTime::now);
        let from = request.from.unwrap_or_else(|| to.checked_sub(DEFAULT_RANGE).unwrap_or(SystemTime::UNIX_EPOCH));
        if from > to {
            return Err(QueryError::Invalid("`from` is after `to`".into()));
        }
        if to > UNIX_EPOCH + LATEST {
            return Err(QueryError::Invalid("`from` and `to` must be before the year 10000".into()));
        }
        if request.step.is_some_and(|s| s < Duration::from_secs(1)) {
            return Err(QueryError::Invalid("`step` must be at least 1s".into()));
        }
        let query = SeriesQuery {
            name: name.clone(),
            matchers: request.matchers,
            from,
            to,
            step: request.step,
            offset: request.offset,
            limit: request.limit,
        };
        let page = self.storage.series(query).await.map_err(|error| match error {
            SeriesError::TooManyPoints { .. } | SeriesError::TooManyInAll => QueryError::Invalid(error.to_string()),
            SeriesError::Storage(e) => QueryError::Storage(e.to_string()),
        })?;
        Ok(MetricsAnswer::Series {
            metric: name,
            from: humantime::format_rfc3339_millis(from).to_string(),
            to: humantime::format_rfc3339_millis(to).to_string(),
            step_seconds: request.step.map(|s| s.as_secs_f64()),
            offset: request.offset,
            limit: request.limit,
            page,
        })
    }

    /// `/metrics`: selfmon's own metrics in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        let live = self.live();
        self.telemetry.render(&Scrape {
            checks: &self.board.snapshot(),
            storage: &self.storage,
            refused_calls: self.access.refused(),
            version: live.about.version,
            contract: live.about.contract,
        })
    }

    /// Past runs of one check, newest first.
    pub async fn history(&self, check: &str, limit: u32) -> Result<Vec<StoredRun>, QueryError> {
        if !self.board.snapshot().iter().any(|c| c.name == check) {
            return Err(QueryError::NotFound { code: "unknown_check", message: format!("no check named `{check}`") });
        }
        self.storage.runs(check.to_string(), limit).await.map_err(storage)
    }

    pub async fn rules(&self, offset: u64, limit: u64) -> Result<Page<Rule>, QueryError> {
        self.storage.rules(offset, limit).await.map_err(storage)
    }

    pub async fn rule(&self, name: &str) -> Result<Rule, QueryError> {
        self.storage.rule(name.to_string()).await.map_err(storage)?.ok_or_else(|| {
            let message = if self.config_rule(name) {
                format!("`{name}` is a rule of the config, not of the API: see /v1/alerts/rule-states")
            } else {
                format!("no rule named `{name}`")
            };
            QueryError::NotFound { code: "unknown_rule", message }
        })
    }

    /// Whether a rule of that name comes from the config (or is one of the defaults).
    fn config_rule(&self, name: &str) -> bool {
        self.live().alerting.rules.iter().any(|r| r.name == name)
    }

    /// Validate and store a new rule; `caller` is the name of the key that asked.
    pub async fn create_rule(&self, request: RuleRequest, caller: Option<String>) -> Result<Rule, QueryError> {
        let live = self.live();
        let rule = request
            .validate(&live.alerting.channel_names(), caller, SystemTime::now())
            .map_err(QueryError::Rejected)?;
        if self.config_rule(&rule.name) {
            return Err(QueryError::Conflict(format!("the config has a rule named `{}`", rule.name)));
        }
        let expression = live.alerting.expression.as_ref().ok_or_else(|| {
            QueryError::Unavailable("the `expression` rule plugin is not loaded, so rules cannot be created".into())
        })?;
        let spec = rules::from_api(&rule, expression, &live.alerting.config, live.alerting.memory_limit);
        match self.runtime.validate_rule(expression, &spec.sandbox, &spec.config).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(QueryError::Rejected(vec![reason])),
            Err(failure) => return Err(QueryError::Unavailable(format!("the `expression` plugin failed: {failure}"))),
        }
        let rule = self.storage.create_rule(rule).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", rule = %rule.name, by = rule.created_by.as_deref(), "Alert rule created");
        Ok(rule)
    }

    pub async fn delete_rule(&self, name: &str, caller: Option<&str>) -> Result<(), QueryError> {
        if self.config_rule(name) {
            return Err(QueryError::Conflict(format!(
                "`{name}` is a rule of the config: change or disable it there (`enabled = false`)"
            )));
        }
        self.storage.delete_rule(name.to_string()).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", rule = name, by = caller, "Alert rule deleted");
        Ok(())
    }

    /// Active alerts (pending and firing) or the resolved history, newest first.
    pub async fn alerts(&self, active: bool, offset: u64, limit: u64) -> Result<Page<Alert>, QueryError> {
        self.storage.alerts(active, offset, limit).await.map_err(storage)
    }

    pub async fn alert(&self, id: i64) -> Result<Alert, QueryError> {
        self.storage
            .alert(id)
            .await
            .map_err(storage)?
            .ok_or_else(|| QueryError::NotFound { code: "unknown_alert", message: format!("no alert with id {id}") })
    }

    pub async fn acknowledge(&self, id: i64, caller: Option<String>, comment: String) -> Result<Alert, QueryError> {
        if comment.len() > 1024 {
            return Err(QueryError::Invalid("`comment` is longer than 1024 bytes".into()));
        }
        let alert = self.storage.acknowledge(id, caller, comment).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", alert = id, by = alert.acknowledged_by.as_deref(), "Alert acknowledged");
        Ok(alert)
    }

    /// Every rule (defaults, config and API) with how it fared at its last evaluation, by name.
    pub fn rule_states(&self) -> Vec<RuleStatus> {
        self.rule_status.lock().expect("rule status lock").values().cloned().collect()
    }

    pub async fn create_silence(&self, request: SilenceRequest, caller: Option<String>) -> Result<Silence, QueryError> {
        let span = request.validate(SystemTime::now()).map_err(QueryError::Rejected)?;
        let silence = self.storage.create_silence(request, span, caller).await.map_err(storage)?;
        tracing::info!(target: "selfmon::security", silence = silence.id, by = silence.created_by.as_deref(), matchers = ?silence.matchers, "Silence created");
        Ok(silence)
    }

    /// Attempts to deliver notifications, newest first.
    pub async fn notification_attempts(&self, offset: u64, limit: u64) -> Result<Page<Attempt>, QueryError> {
        self.storage.notification_attempts(offset, limit).await.map_err(storage)
    }

    pub async fn silences(&self, offset: u64, limit: u64) -> Result<Page<Silence>, QueryError> {
        self.storage.silences(offset, limit).await.map_err(storage)
    }

    pub async fn silence(&self, id: i64) -> Result<Silence, QueryError> {
        self.storage
            .silence(id)
            .await
            .map_err(storage)?
            .ok_or_else(|| QueryError::NotFound { code: "unknown_silence", message: format!("no silence {id}") })
    }

    pub async fn expire_silence(&self, id: i64, caller: Option<&str>) -> Result<Silence, QueryError> {
        let silence = self.storage.expire_silence(id).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", silence = id, by = caller, "Silence expired");
        Ok(silence)
    }

    /// Latency percentiles, error rates and throughput per check over the last `window`, and the slowest runs.
    pub async fn performance(&self, window: Duration) -> Result<Performance, QueryError> {
        check_window(window)?;
        let mut performance = self.storage.performance(window).await.map_err(storage)?;
        (performance.operations, performance.slowest_operations) =
            self.storage.span_performance(window).await.map_err(storage)?;
        Ok(performance)
    }

    /// Store what an OTLP trace export held, in a turn taken with [`Self::ingest_turn`]: its spans, and AI usage
    /// events for its GenAI spans. Answers once they are committed.
    pub async fn ingest_spans(
        &self,
        _turn: &tokio::sync::OwnedSemaphorePermit,
        spans: Vec<crate::traces::NewSpan>,
    ) -> Result<(), QueryError> {
        // Spans first: the events take the user their trace's spans have. A span sent again replaces itself, and its
        // AI usage is not counted twice.
        let events = crate::otlp::ai_events(&spans);
        self.storage.write_spans(spans).await.map_err(storage)?;
        if !events.is_empty() {
            self.usage.record(events).await.map_err(storage)?;
        }
        Ok(())
    }

    /// Store log records received over OTLP, in a turn taken with [`Self::ingest_turn`].
    pub async fn ingest_records(
        &self,
        _turn: &tokio::sync::OwnedSemaphorePermit,
        records: Vec<crate::logs::NewRecord>,
    ) -> Result<(), QueryError> {
        self.telemetry.observe_logs("otlp", &records, 0);
        self.storage.write_logs(records, None).await.map_err(storage)?;
        Ok(())
    }

    /// Check and store a batch of events: how many were stored, and the ones refused with why.
    pub async fn record_events(
        &self,
        _turn: &tokio::sync::OwnedSemaphorePermit,
        batch: Vec<serde_json::Value>,
    ) -> Result<(usize, Vec<crate::usage::Rejected>), QueryError> {
        if batch.len() > crate::usage::MAX_BATCH {
            return Err(QueryError::Invalid(format!("a batch holds at most {} events", crate::usage::MAX_BATCH)));
        }
        let now = SystemTime::now();
        let oldest = now.checked_sub(self.retention_events).unwrap_or(UNIX_EPOCH);
        let mut events = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for (index, value) in batch.into_iter().enumerate() {
            match crate::usage::check_event(value, now, oldest) {
                Ok(event) => events.push(event),
                Err(error) => rejected.push(crate::usage::Rejected { index, error }),
            }
        }
        let stored = self.usage.record(events).await.map_err(storage)?;
        Ok((stored, rejected))
    }

    /// One trace as a tree, with its log records.
    pub async fn trace(&self, trace_id: &str) -> Result<crate::traces::Trace, QueryError> {
        let trace_id = trace_id.to_ascii_lowercase();
        if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(QueryError::Invalid("a trace id is 32 hex digits".into()));
        }
        self.storage.trace(trace_id.clone()).await.map_err(storage)?.ok_or_else(|| QueryError::NotFound {
            code: "no_trace",
            message: format!("no span of trace {trace_id} is stored"),
        })
    }

    /// Traces with a span that matches; `user_id` as the platform knows the user.
    pub async fn search_traces(
        &self,
        mut search: crate::traces::TraceSearch,
    ) -> Result<Vec<crate::traces::TraceSummary>, QueryError> {
        search.user_id = search.user_id.map(|user| self.storage.privacy().lookup_id(&user));
        self.storage.search_traces(search).await.map_err(storage)
    }

    /// Users, engagement, satisfaction, retention and AI cost over the last `days`.
    pub async fn analytics(&self, days: u64) -> Result<crate::analytics::Analytics, QueryError> {
        if !(1..=crate::analytics::MAX_DAYS).contains(&days) {
            return Err(QueryError::Invalid(format!("`days` must be 1 to {}", crate::analytics::MAX_DAYS)));
        }
        self.storage
            .analytics(days, SystemTime::now(), self.ai.clone(), self.usage.prices.clone())
            .await
            .map_err(storage)
    }

    /// Erase every event, span and log record of a user, and say so in the audit log.
    pub async fn erase_user(&self, user_id: &str, caller: Option<&str>) -> Result<crate::usage::Erased, QueryError> {
        if user_id.is_empty() || user_id.len() > 256 {
            return Err(QueryError::Invalid("a user id is 1 to 256 bytes".into()));
        }
        let erased = self.storage.erase_user(self.storage.privacy().stored_ids(user_id)).await.map_err(storage)?;
        self.telemetry.observe_erasure(&erased);
        // An AUDIT record of selfmon's own log, stored like its other records (never whose data it was).
        tracing::info!(
            target: crate::journal::AUDIT,
            action = "erase_user_data",
            by = caller,
            events = erased.events,
            spans = erased.spans,
            log_records = erased.log_records,
            "Erased the data of a user on request of {}: {} events, {} spans, {} log records",
            caller.unwrap_or("an open API"),
            erased.events,
            erased.spans,
            erased.log_records
        );
        Ok(erased)
    }

    /// Error counts, rates and the most frequent error patterns over the last `window`.
    pub async fn errors(&self, window: Duration) -> Result<Errors, QueryError> {
        check_window(window)?;
        let mut errors = self.storage.errors(window).await.map_err(storage)?;
        errors.logs = self.storage.log_errors(window).await.map_err(storage)?;
        Ok(errors)
    }

    /// Log record counts per period, level and service over the last `hours`.
    pub async fn aggregate_logs(&self, hours: u64, period: Period) -> Result<Aggregation, QueryError> {
        check_hours(hours)?;
        if hours * 3_600_000 / period.millis().unsigned_abs() > MAX_BUCKETS {
            return Err(QueryError::Invalid(format!(
                "{hours} hours by {} is more than {MAX_BUCKETS} buckets: choose a longer period",
                serde_json::to_value(period).unwrap_or_default().as_str().unwrap_or_default()
            )));
        }
        self.storage.aggregate_logs(hours, period).await.map_err(storage)
    }

    /// Log analysis over the last `hours`: counts, error templates, user activity, security events.
    pub async fn analyse_logs(&self, hours: u64) -> Result<Analysis, QueryError> {
        check_hours(hours)?;
        self.storage.analyse_logs(hours).await.map_err(storage)
    }

    /// Security events over the last `hours`.
    pub async fn security_events(&self, hours: u64) -> Result<Security, QueryError> {
        check_hours(hours)?;
        self.storage.security_events(hours).await.map_err(storage)
    }

    /// How lines posted with `?parser=NAME` are parsed (a parser plugin or `auto`, without config).
    pub fn parsing(&self, parser: &str) -> Result<Parsing, QueryError> {
        Parsing::resolve(parser, Vec::new(), &self.live().plugins).map_err(QueryError::Invalid)
    }

    /// A turn to ingest logs, taken before a request's body is inflated and parsed: at most [`MAX_INGESTING`] hold
    /// one; the caller waits [`INGEST_WAIT`] for it, or is told storage is busy.
    pub async fn ingest_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, QueryError> {
        if self.storage.queued() > BUSY_QUEUE {
            return Err(QueryError::Busy);
        }
        tokio::time::timeout(INGEST_WAIT, self.ingesting.clone().acquire_owned())
            .await
            .map_err(|_| QueryError::Busy)?
            .map_err(|_| QueryError::Busy)
    }

    /// Parse lines and store them, in a turn taken with [`Self::ingest_turn`]; answers once they are committed.
    pub async fn ingest(
        &self,
        _turn: &tokio::sync::OwnedSemaphorePermit,
        parsing: &Parsing,
        origin: Origin,
        lines: Vec<String>,
    ) -> Result<Parsed, QueryError> {
        let (records, parsed) = crate::logs::parse(&self.runtime, parsing, &origin, lines, SystemTime::now()).await;
        self.telemetry.observe_logs(&parsing.name, &records, parsed.parser_failures);
        self.storage.write_logs(records, None).await.map_err(storage)?;
        Ok(parsed)
    }

    /// Follow the records matching `filter` as they are committed, oldest first: after the record with
    /// id `resume` (a reconnecting client's last one), or else starting with up to `backlog` records from before.
    /// Ends when the receiver is dropped or selfmon stops.
    pub async fn tail_logs(
        &self,
        filter: Search,
        resume: Option<i64>,
        backlog: u64,
    ) -> Result<tokio::sync::mpsc::Receiver<StoredRecord>, QueryError> {
        let permit =
            self.tails.clone().try_acquire_owned().map_err(|_| {
                QueryError::Unavailable(format!("{MAX_TAILS} live tails are open already; retry later"))
            })?;
        self.tail_logs_holding(filter, resume, backlog, permit).await
    }

    /// A live tail that holds `permit` (from a pool of its caller's) while it runs.
    pub async fn tail_logs_holding(
        &self,
        mut filter: Search,
        resume: Option<i64>,
        backlog: u64,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<tokio::sync::mpsc::Receiver<StoredRecord>, QueryError> {
        filter.user_id = filter.user_id.map(|user| self.storage.privacy().lookup_id(&user));
        if backlog > MAX_BACKLOG {
            return Err(QueryError::Invalid(format!("`backlog` must be at most {MAX_BACKLOG}")));
        }
        let mut head = self.storage.log_head();
        let now = *head.borrow_and_update();
        // The first search checks the filter (a bad query is a 400 here, not a silent stream) and finds the backlog.
        let recent = self.search_logs(Search { offset: 0, limit: backlog.max(1), ..filter.clone() }).await?;
        let (mut after, first) = match resume {
            Some(id) => (id, Vec::new()),
            None => {
                let mut records: Vec<StoredRecord> =
                    recent.records.into_iter().take(usize::try_from(backlog).unwrap_or(usize::MAX)).collect();
                records.reverse();
                (records.iter().map(|r| r.id).fold(now, i64::max), records)
            }
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        let storage = self.storage.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for record in first {
                if sender.send(record).await.is_err() {
                    return;
                }
            }
            loop {
                loop {
                    let page = Search { after: Some(after), offset: 0, limit: 1000, ..filter.clone() };
                    let Ok(found) = storage.search_logs(page).await else { return };
                    let Some(last) = found.records.last() else { break };
                    after = last.id;
                    let more = found.more;
                    for record in found.records {
                        if sender.send(record).await.is_err() {
                            return;
                        }
                    }
                    if !more {
                        break;
                    }
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                    () = stopping.cancelled() => return,
                }
            }
        });
        Ok(receiver)
    }

    pub async fn search_logs(&self, mut search: Search) -> Result<Found, QueryError> {
        search.user_id = search.user_id.map(|user| self.storage.privacy().lookup_id(&user));
        for level in &search.levels {
            if !crate::logs::LEVELS.contains(&level.as_str()) {
                return Err(QueryError::Invalid(format!(
                    "`level`: `{level}` is not one of {}",
                    crate::logs::LEVELS.join(", ")
                )));
            }
        }
        self.storage.search_logs(search).await.map_err(|error| match error {
            SearchError::Syntax(_) => QueryError::Invalid(error.to_string()),
            SearchError::Storage(error) => storage(error),
        })
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, QueryError> {
        self.storage.webhooks().await.map_err(storage)
    }

    pub async fn create_webhook(
        &self,
        mut request: WebhookRequest,
        caller: Option<&str>,
    ) -> Result<Webhook, QueryError> {
        request.validate().map_err(QueryError::Rejected)?;
        let webhook = self.storage.create_webhook(request).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", webhook = webhook.id, url = %webhook.url, by = caller, "Webhook created");
        Ok(webhook)
    }

    pub async fn delete_webhook(&self, id: i64, caller: Option<&str>) -> Result<(), QueryError> {
        self.storage.delete_webhook(id).await.map_err(change)?;
        tracing::info!(target: "selfmon::security", webhook = id, by = caller, "Webhook deleted");
        Ok(())
    }

    /// A webhook's delivery attempts, newest first.
    pub async fn deliveries(&self, id: i64, offset: u64, limit: u64) -> Result<Page<Delivery>, QueryError> {
        if !self.storage.webhook_exists(id).await.map_err(storage)? {
            return Err(QueryError::NotFound { code: "unknown_webhook", message: format!("no webhook with id {id}") });
        }
        self.storage.deliveries(id, offset, limit).await.map_err(storage)
    }

    pub async fn recovery(&self, check: Option<String>, limit: u32) -> Result<Vec<StoredAttempt>, QueryError> {
        self.storage.recovery_attempts(check, limit).await.map_err(storage)
    }
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
    QueryError::Storage(error.to_string())
}

fn change(error: ChangeError) -> QueryError {
    match error {
        ChangeError::Conflict(message) => QueryError::Conflict(message),
        ChangeError::NotFound { code, message } => QueryError::NotFound { code, message },
        ChangeError::Storage(error) => storage(error),
    }
}
