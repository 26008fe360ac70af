//! selfmon: a self-hosted monitoring host whose checks run as sandboxed WebAssembly components.
//!
//! # Layout
//!
//! - [`config`]: the operator's TOML file, environment overrides, secrets by reference.
//! - [`runtime`]: the wasmtime engine, the contract's bindings, grants, compiled-plugin cache, calls into plugins.
//! - [`plugins`]: the built-in plugins and the drop-in folder.
//! - [`checks`]: configured checks, built against what their plugins declare, and one run of a check.
//! - [`health`]: statuses, run outcomes and the board of latest states, with dependency causes.
//! - [`logs`]: log lines parsed by parser plugins, stored with a full-text index, searched; [`tail`]: log files.
//! - [`recovery`]: the operator's recovery actions for checks that keep failing.
//! - [`scheduler`]: runs checks on their intervals; [`reload`]: the plugins folder watched, the config read again.
//! - [`system`]: the host's CPU, memory, disk and network figures.
//! - [`telemetry`]: selfmon's own metrics for Prometheus.
//! - [`storage`]: SQLite, one batching writer, readers of their own.
//! - [`query`]: the one query layer the API answers from; [`performance`]: latency and error answers over runs.
//! - [`dashboard`]: the live dashboard in the browser, on a port of its own.
//! - [`api`]: the HTTP API; [`graphql`]: its GraphQL face; [`access`]: its keys, roles and rate limits.
//! - [`alerting`]: rules evaluated on a schedule, the alert lifecycle, silences, inhibition, escalation and
//!   notification channels; [`alerts`]: the API's alert rules and stored alerts; [`events`]: the internal event bus; [`webhooks`]: its deliveries.
//! - [`otlp`]: OTLP/HTTP spans and logs; [`traces`]: spans stored, trace trees, search and per-operation profiling.
//! - [`usage`]: events, AI cost and the metrics the rules read; [`analytics`]: answers over the events.
//! - [`privacy`]: pseudonymized user ids and redacted personal data, before anything is stored.
//! - [`journal`]: selfmon's own log as JSON lines in rotating files.
//! - [`cli`]: the `selfmon` command; [`authoring`]: its commands for plugin authors.
//!
//! [`Host::build`] turns a [`Config`] into something that can run checks; [`serve`] runs everything until told to
//! stop, and is what tests call in-process.

pub mod access;
pub mod alerting;
pub mod alerts;
pub mod analysis;
pub mod analytics;
pub mod api;
pub mod authoring;
pub mod checks;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod events;
pub mod graphql;
pub mod health;
pub mod journal;
pub mod logs;
pub mod otlp;
pub mod performance;
pub mod plugins;
pub mod privacy;
pub mod query;
pub mod recovery;
pub mod reload;
pub mod retention;
pub mod runtime;
pub mod scheduler;
pub mod storage;
pub mod syslog;
pub mod system;
pub mod tail;
pub mod telemetry;
pub mod traces;
pub mod usage;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use checks::Check;
pub use config::Config;
use config::ConfigError;
use health::Board;
use plugins::Plugins;
use runtime::{CompiledCache, Runtime};
use storage::{Storage, StorageError};

/// Why selfmon could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
    #[error("the dashboard cannot listen on {0} (`[dashboard] listen`): {1}")]
    Dashboard(std::net::SocketAddr, std::io::Error),
    #[error(transparent)]
    Listen(#[from] syslog::BindError),
}

/// Plugins loaded and checks built from a config: everything but storage and the servers.
pub struct Host {
    pub config: Config,
    pub runtime: Arc<Runtime>,
    pub plugins: Arc<Plugins>,
    pub checks: Vec<Arc<Check>>,
    pub access: Arc<access::Access>,
    /// The `[[log_source]]` tables, with their parsers.
    pub log_sources: Vec<(config::LogSourceConfig, logs::Parsing)>,
    /// Rules, channels and escalation policies.
    pub alerting: Arc<alerting::Alerting>,
    /// Pseudonymization and redaction of what is stored.
    pub privacy: Arc<privacy::Privacy>,
}

impl Host {
    /// Load the plugins and build the checks, with the tables of the plugins folder's sidecars. All of the config
    /// is checked, and every problem reported.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let config = config.with_sidecars().map_err(StartError::Config)?;
        let (runtime, plugins) = load_plugins(&config).await?;
        Self::assemble(config, Arc::new(runtime), plugins).await.map_err(StartError::Config)
    }

    /// Build the checks, log sources and rules of `config` (sidecars included) on plugins already loaded.
    pub async fn assemble(config: Config, runtime: Arc<Runtime>, plugins: Plugins) -> Result<Self, Vec<ConfigError>> {
        let sane = config_sanity(&config);
        let env = |name: &str| std::env::var(name).ok();
        let built = checks::build(&config, &plugins, &runtime, &env).await;
        let access = access::Access::from_config(&config.api, &config.source, &env);
        let sources = log_sources(&config, &plugins, &runtime).await;
        let alerting = alerting::Alerting::build(&config, &plugins, &runtime, &env).await;
        let key_file = config.source.resolve(&config.storage.path).with_file_name("privacy.key");
        let privacy = privacy::Privacy::build(&config.privacy, &config.source, &env, &key_file);
        let (checks, access, log_sources, alerting, privacy) = match (sane, built, access, sources, alerting, privacy) {
            (Ok(()), Ok(checks), Ok(access), Ok(sources), Ok(alerting), Ok(privacy)) => {
                (checks, access, sources, alerting, privacy)
            }
            (sane, built, access, sources, alerting, privacy) => {
                let mut errors = sane.err().unwrap_or_default();
                errors.extend(privacy.err().unwrap_or_default());
                errors.extend(built.err().unwrap_or_default());
                errors.extend(access.err().unwrap_or_default());
                errors.extend(sources.err().unwrap_or_default());
                errors.extend(alerting.err().unwrap_or_default());
                return Err(errors);
            }
        };
        Ok(Self {
            config,
            runtime,
            plugins: Arc::new(plugins),
            checks: checks.into_iter().map(Arc::new).collect(),
            access: Arc::new(access),
            log_sources,
            alerting: Arc::new(alerting),
            privacy: Arc::new(privacy),
        })
    }
}

/// The log sources, each with its parser (file paths made absolute); every problem with any `[[log_source]]` is
/// reported.
async fn log_sources(
    config: &Config,
    plugins: &Plugins,
    runtime: &Runtime,
) -> Result<Vec<(config::LogSourceConfig, logs::Parsing)>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut sources = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for spanned in &config.log_sources {
        let source = spanned.get_ref();
        let line = config.source.line_at(spanned.span().start);
        let mut problem = |message: String| {
            errors.push(ConfigError::new(
                config.source.name_at(spanned.span().start),
                line,
                format!("log source `{}`: {message}", source.name),
            ))
        };
        if !names.insert(source.name.clone()) {
            problem("the name is used twice".into());
        }
        let parsing = match logs::Parsing::for_source(source, plugins) {
            Ok(parsing) => match parsing.validate(runtime).await {
                Ok(()) => Some(parsing),
                Err(reason) => {
                    problem(format!("`parser_config`: {reason}"));
                    None
                }
            },
            Err(reason) => {
                problem(format!("`parser`: {reason}"));
                None
            }
        };
        if source.poll < std::time::Duration::from_millis(50) {
            problem("`poll` must be at least 50ms".into());
        }
        match source.kind {
            config::LogSourceKind::File | config::LogSourceKind::Http if !source.listen.is_empty() => {
                problem("`listen` is for `kind = \"syslog\"`".into());
            }
            config::LogSourceKind::File if source.paths.is_empty() => problem("`paths` is empty".into()),
            config::LogSourceKind::File => {
                for pattern in &source.paths {
                    if let Err(error) = glob::Pattern::new(pattern) {
                        problem(format!("`paths`: `{pattern}` is not a valid pattern: {error}"));
                    }
                }
                if let Some(parsing) = parsing {
                    let mut resolved = source.clone();
                    resolved.paths = source
                        .paths
                        .iter()
                        .map(|p| config.source.resolve(std::path::Path::new(p)).display().to_string())
                        .collect();
                    sources.push((resolved, parsing));
                }
            }
            config::LogSourceKind::Http | config::LogSourceKind::Syslog if !source.paths.is_empty() => {
                problem("`paths` is for `kind = \"file\"`".into());
            }
            config::LogSourceKind::Http => sources.extend(parsing.map(|parsing| (source.clone(), parsing))),
            config::LogSourceKind::Syslog => {
                if source.listen.is_empty() {
                    problem("`listen` is empty (for example [\"udp://0.0.0.0:5514\", \"tcp://0.0.0.0:5514\"])".into());
                }
                for address in &source.listen {
                    if let Err(reason) = syslog::Listen::parse(address) {
                        problem(format!("`listen`: {reason}"));
                    }
                }
                sources.extend(parsing.map(|parsing| (source.clone(), parsing)));
            }
        }
    }
    if errors.is_empty() { Ok(sources) } else { Err(errors) }
}

/// The plugin runtime sized for a config: its compiled-plugin cache, instance pool and memory cap.
pub fn runtime_for(config: &Config) -> Result<Runtime, StartError> {
    let cache_dir = config.source.resolve(&config.plugins.cache_dir);
    // Room for every check running at once, plus validation and the command line's own calls.
    let concurrent = config.scheduler.max_concurrent.clamp(1, MAX_CONCURRENT);
    let instances = u32::try_from(concurrent).unwrap_or(u32::MAX).saturating_mul(2).max(32);
    let max_memory = usize::try_from(config.plugins.max_memory_limit.as_u64()).unwrap_or(usize::MAX);
    Runtime::new(CompiledCache::new(Some(cache_dir)), instances, max_memory)
        .map_err(|e| StartError::Runtime(format!("{e:#}")))
}

/// The plugin runtime sized for a config, and every plugin it can load (built-in and from the plugins folder).
pub async fn load_plugins(config: &Config) -> Result<(Runtime, Plugins), StartError> {
    let runtime = runtime_for(config)?;
    let plugins_dir = config.source.resolve(&config.plugins.dir);
    let plugins = Plugins::load(&runtime, &plugins_dir, config.plugins.max_file_size.as_u64()).await;
    Ok((runtime, plugins))
}

/// The most checks that may run at once; each needs a slot of reserved address space in the plugin pool.
const MAX_CONCURRENT: usize = 1024;

/// How long shutdown waits for API requests in progress before it stops waiting and commits what it has.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Settings outside any check that cannot work.
fn config_sanity(config: &Config) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut problem = |message: String| errors.push(ConfigError::new(config.source.name(), None, message));
    if !(1..=MAX_CONCURRENT).contains(&config.scheduler.max_concurrent) {
        problem(format!("`[scheduler] max_concurrent` must be between 1 and {MAX_CONCURRENT}"));
    }
    if !(0.0..=1.0).contains(&config.scheduler.jitter) {
        problem(format!("`[scheduler] jitter` must be between 0 and 1, not {}", config.scheduler.jitter));
    }
    for message in usage::check_config(&config.ai) {
        problem(message);
    }
    if config.logging.keep == 0 || config.logging.max_file_size.as_u64() < 1024 {
        problem("`[logging]`: `keep` must be at least 1 and `max_file_size` at least 1 KiB".into());
    }
    if config.traces.max_inflated.as_u64() < 1024 {
        problem("`[traces] max_inflated` must be at least 1 KiB".into());
    }
    for origin in &config.api.cors_origins {
        let valid = origin == "*"
            || ((origin.starts_with("http://") || origin.starts_with("https://"))
                && origin.parse::<http::HeaderValue>().is_ok()
                && !origin.ends_with('/'));
        if !valid {
            problem(format!(
                "`[api] cors_origins`: `{origin}` is not an origin such as \"https://grafana.example.com\" (or \"*\")"
            ));
        }
    }
    if config.dashboard.enabled && config.dashboard.listen == config.server.api_listen {
        problem(format!("`[dashboard] listen` and `[server] api_listen` are both {}", config.server.api_listen));
    }
    if !(60..=366 * 86_400).contains(&config.dashboard.session_lifetime.as_secs()) {
        problem("`[dashboard] session_lifetime` must be between 1m and 366d".into());
    }
    if let Some(url) = &config.dashboard.public_url
        && dashboard::public_origin(url).is_none()
    {
        problem(format!(
            "`[dashboard] public_url`: `{url}` is not an address such as \"https://monitor.example.com\" (no path)"
        ));
    }
    if config.system.interval < system::MIN_INTERVAL {
        problem("`[system] interval` must be at least 1s".into());
    }
    if config.retention.max_size.is_some_and(|cap| cap < bytesize::ByteSize::mib(1)) {
        problem("`[retention] max_size` must be at least 1 MiB".into());
    }
    if config.retention.interval < retention::MIN_INTERVAL {
        problem("`[retention] interval` must be at least 1s".into());
    }
    for (level, keep) in &config.retention.log_levels {
        if !logs::LEVELS.contains(&level.as_str()) {
            problem(format!("`[retention.log_levels]`: `{level}` is not one of {}", logs::LEVELS.join(", ")));
        }
        if keep.is_zero() {
            problem(format!("`[retention.log_levels] {level}` must be longer than 0s"));
        }
    }
    for (name, keep) in [
        ("logs", config.retention.logs),
        ("check_runs", config.retention.check_runs),
        ("metrics", config.retention.metrics),
        ("alerts", config.retention.alerts),
    ] {
        if keep.is_zero() {
            problem(format!("`[retention] {name}` must be longer than 0s"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Run selfmon until `shutdown` completes: checks on their schedules, the system collector, the API on `listener`.
/// On shutdown the API stops accepting, runs in progress are abandoned, and everything already accepted for
/// storage is committed before this returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let started = Instant::now();
    let main = config.clone();
    let host = Host::build(config).await?;
    let access = host.access.clone();
    let dashboard_listener = prepare_dashboard(&host.config, &access).await?;
    let storage =
        Storage::open(&host.config.source.resolve(&host.config.storage.path))?.with_privacy(host.privacy.clone());
    let board = Arc::new(Board::default());
    for check in &host.checks {
        board.register(&check.name, &check.plugin.info.name, check.enabled, check.interval, &check.depends_on);
    }
    for run in storage.latest_runs().await? {
        board.record(&run);
    }

    let telemetry = Arc::new(
        telemetry::Telemetry::new(&storage).map_err(|e| StartError::Runtime(format!("cannot set up metrics: {e}")))?,
    );

    for plugin in host.plugins.iter() {
        telemetry.register_plugin(&plugin.info.name);
    }
    let events = events::Events::default();

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let scheduler = Arc::new(scheduler::Scheduler {
        runtime: host.runtime.clone(),
        storage: storage.clone(),
        board: board.clone(),
        recoverer: recovery::Recoverer::new(storage.clone(), board.clone(), tasks.clone(), stop.clone()),
        telemetry: telemetry.clone(),
        events: events.clone(),
        limit: Arc::new(tokio::sync::Semaphore::new(host.config.scheduler.max_concurrent.max(1))),
        jitter: host.config.scheduler.jitter,
        schedule: std::sync::Mutex::default(),
    });
    webhooks::spawn(storage.clone(), &events, &tasks, stop.clone());
    let engine = alerting::Engine::new(
        host.alerting.clone(),
        host.runtime.clone(),
        storage.clone(),
        board.clone(),
        events.clone(),
        telemetry.clone(),
    )
    .await?;
    let rule_status = engine.status();
    let (alerting_configs, configs) = tokio::sync::watch::channel(host.alerting.clone());
    alerting::spawn(engine, configs, &tasks, stop.clone());
    if host.config.logging.enabled && host.config.logging.ingest {
        // selfmon's own log, read back like any other file source.
        let path = host.config.source.resolve(&host.config.logging.dir).join(journal::FILES[0].1);
        match logs::Parsing::resolve("json", Vec::new(), &host.plugins) {
            Ok(parsing) => tail::Tailer {
                storage: storage.clone(),
                runtime: host.runtime.clone(),
                parsing,
                origin: logs::Origin { source: "selfmon".into(), service: Some("selfmon".into()) },
                patterns: vec![path.display().to_string()],
                poll: std::time::Duration::from_secs(1),
                telemetry: telemetry.clone(),
            }
            .spawn(&tasks, stop.clone()),
            _ => tracing::warn!("The built-in `json` parser is missing: selfmon's own log is not stored"),
        }
    }
    retention::spawn(storage.clone(), host.config.retention.clone(), telemetry.clone(), &tasks, stop.clone());
    if host.config.system.enabled {
        spawn_system_collector(
            host.config.system.interval,
            storage.clone(),
            telemetry.clone(),
            events.clone(),
            &tasks,
            stop.clone(),
        );
    }
    let address = listener.local_addr().map_err(StartError::Serve)?;
    if access.is_open() && !address.ip().is_loopback() {
        tracing::warn!(%address, "The API has no keys and listens beyond this machine: set [api] keys or MONITORING_API_KEY");
    }
    let usage = Arc::new(usage::Usage::new(storage.clone(), &host.config.ai, telemetry.clone()));
    let (reloads, reload_requests) = reload::Handle::new();
    let queries = Arc::new(query::Queries {
        usage,
        ai: host.config.ai.clone(),
        traces: host.config.traces.clone(),
        retention_events: host.config.retention.events,
        runtime: host.runtime.clone(),
        live: std::sync::RwLock::new(Arc::new(query::Live::of(&host))),
        reloads: reloads.clone(),
        board,
        storage: storage.clone(),
        access: access.clone(),
        telemetry,
        events,
        started,
        tails: Arc::new(tokio::sync::Semaphore::new(query::MAX_TAILS)),
        ingesting: Arc::new(tokio::sync::Semaphore::new(query::MAX_INGESTING)),
        stopping: stop.clone(),
        rule_status,
    });
    let started_sources = reload::Reloader::start(
        &host,
        main,
        scheduler,
        queries.clone(),
        alerting_configs,
        (tasks.clone(), stop.clone()),
    )
    .await;
    let reloader = match started_sources {
        Ok(reloader) => reloader,
        Err(error) => {
            stop.cancel();
            tasks.close();
            tasks.wait().await;
            storage.close().await?;
            return Err(error.into());
        }
    };
    reloader.spawn(reloads.clone(), reload_requests);
    reload::watch(&host.config.source.resolve(&host.config.plugins.dir), reloads.clone(), &tasks, stop.clone());
    spawn_hangup(reloads, &tasks, stop.clone());
    tracing::info!(
        api = %address,
        checks = host.checks.len(),
        rules = host.alerting.rules.iter().filter(|r| r.enabled).count(),
        plugins = host.plugins.iter().count(),
        storage = %storage.path().display(),
        "selfmon is running"
    );
    if let Some(prepared) = dashboard_listener {
        spawn_dashboard(&host.config, prepared, queries.clone(), access.clone(), &tasks, stop.clone());
    }
    let app = api::app(queries, access, &host.config.api).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stopping = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move { stopping.cancelled().await });
    let mut server = std::pin::pin!(server.into_future());
    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown => {
            tracing::info!("Shutting down");
            stop.cancel();
            // Requests in progress may finish; one that never does must not keep selfmon (and its unwritten results)
            // from stopping.
            tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.unwrap_or(Ok(()))
        }
    };
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    storage.close().await?;
    served.map_err(StartError::Serve)
}

/// What the API says about the plugins and what uses them.
fn about(host: &Host) -> query::About {
    query::About {
        version: env!("CARGO_PKG_VERSION"),
        contract: runtime::CONTRACT_VERSION,
        uses: plugin_uses(host),
        plugins: host
            .plugins
            .iter()
            .map(|p| query::PluginSummary {
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
            .map(|r| query::RefusedPlugin { file: r.file.display().to_string(), reason: r.reason.clone() })
            .collect(),
        max_concurrent_checks: host.config.scheduler.max_concurrent,
    }
}

/// The `kind = "http"` log sources: their parser and default service, by name.
fn http_sources(host: &Host) -> std::collections::BTreeMap<String, (logs::Parsing, Option<String>)> {
    host.log_sources
        .iter()
        .filter(|(s, _)| s.kind == config::LogSourceKind::Http)
        .map(|(s, parsing)| (s.name.clone(), (parsing.clone(), s.service.clone())))
        .collect()
}

/// Reload on `SIGHUP`.
fn spawn_hangup(reloads: reload::Handle, tasks: &TaskTracker, stop: CancellationToken) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "Cannot listen for SIGHUP: reload with POST /v1/reload");
            return;
        }
    };
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                hangup = hangups.recv() => if hangup.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the config");
            reloads.nudge(reload::Trigger::Signal);
        }
    });
}

/// What calls each plugin: (plugin name, use).
fn plugin_uses(host: &Host) -> Vec<(String, query::PluginUse)> {
    let checks = host.checks.iter().map(|check| {
        (
            check.plugin.info.name.clone(),
            query::PluginUse {
                kind: "check",
                name: check.name.clone(),
                network: check.sandbox.grants.entries(),
                secrets: check.secret_names(),
            },
        )
    });
    let sources = host.log_sources.iter().flat_map(|(source, parsing)| {
        parsing.plugin_names().into_iter().map(|plugin| {
            (
                plugin,
                query::PluginUse {
                    kind: "log_source",
                    name: source.name.clone(),
                    network: Vec::new(),
                    secrets: Vec::new(),
                },
            )
        })
    });
    let rules = host.alerting.rules.iter().map(|rule| {
        (
            rule.plugin.info.name.clone(),
            query::PluginUse { kind: "rule", name: rule.name.clone(), network: Vec::new(), secrets: Vec::new() },
        )
    });
    checks.chain(sources).chain(rules).collect()
}

/// The dashboard's listener and session signing, made before anything starts, so that a taken port or an
/// unreadable key stops selfmon before it has begun.
async fn prepare_dashboard(
    config: &Config,
    access: &access::Access,
) -> Result<Option<(TcpListener, Option<dashboard::Sessions>)>, StartError> {
    if !config.dashboard.enabled {
        return Ok(None);
    }
    let address = config.dashboard.listen;
    let sessions = if access.is_open() {
        None
    } else {
        let dir =
            config.source.resolve(&config.storage.path).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let sessions = dashboard::Sessions::open(&dir).map_err(|reason| {
            StartError::Config(vec![ConfigError::new(config.source.name(), None, format!("`[dashboard]`: {reason}"))])
        })?;
        Some(sessions)
    };
    let listener = TcpListener::bind(address).await.map_err(|e| StartError::Dashboard(address, e))?;
    if access.is_open() && !address.ip().is_loopback() {
        tracing::warn!(%address, "The dashboard has no sign-in and listens beyond this machine: set [api] keys or MONITORING_API_KEY");
    }
    Ok(Some((listener, sessions)))
}

/// Serve the dashboard on its listener until `stop`.
fn spawn_dashboard(
    config: &Config,
    (listener, sessions): (TcpListener, Option<dashboard::Sessions>),
    queries: Arc<query::Queries>,
    access: Arc<access::Access>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(dashboard = %format!("http://{address}"), "Dashboard is serving");
    }
    let api = api::app(queries.clone(), access.clone(), &config.api);
    let app = dashboard::app(queries, access, api, &config.dashboard, sessions)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tasks.spawn(async move {
        let stopping = stop.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move { stopping.cancelled().await });
        let gave_up = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = server => if let Err(error) = served {
                tracing::error!(%error, "The dashboard server failed");
            },
            () = gave_up => {}
        }
    });
}

fn spawn_system_collector(
    interval: std::time::Duration,
    storage: Storage,
    telemetry: Arc<telemetry::Telemetry>,
    events: events::Events,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let mut collector = match system::Collector::new() {
            Ok(collector) => collector,
            Err(error) => {
                tracing::error!(%error, "System collector unavailable");
                return;
            }
        };
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + system::MIN_INTERVAL, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Ok((back, samples)) = tokio::task::spawn_blocking(move || {
                let samples = collector.sample();
                (collector, samples)
            })
            .await
            else {
                return;
            };
            collector = back;
            telemetry.set_system(&samples);
            events.publish(events::Payload::SystemSampled(samples.clone().into()));
            if storage.write_samples(samples).await.is_err() {
                return;
            }
        }
    });
}
