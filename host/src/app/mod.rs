//! The composition root: [`serve`] builds the [`Host`] a config describes and runs all of it until told to stop:
//! storage, the health board, the scheduler and recovery, alerting, outgoing webhooks, log sources and selfmon's own
//! log read back, the periodic cleanup, the system collector, the reloader with the plugins-folder watch and
//! `SIGHUP`, the API and the dashboard. It commits what was accepted before it returns. Tests run selfmon in-process
//! through it.

pub mod host;
pub mod http;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::driver;
use crate::alerting::engine::Engine;
use crate::analytics::events::Usage;
use crate::api;
use crate::api::access::Access;
use crate::api::dashboard::{self, Sessions};
use crate::api::query::{Live, MAX_TAILS, Queries};
use crate::checks::board::Board;
use crate::checks::recovery::Recoverer;
use crate::checks::scheduler::Scheduler;
use crate::checks::system;
use crate::cluster::{Cluster, relay};
use crate::config::{Config, ConfigError};
use crate::events::outgoing::Client;
use crate::events::{Events, webhooks};
use crate::logs::ingest::Sink;
use crate::logs::parsing::Parsing;
use crate::logs::sources::file::Tailer;
use crate::logs::{Origin, SELFMON_SOURCE};
use crate::ops::reload::Reloader;
use crate::ops::reload::handle::{Handle, Trigger};
use crate::ops::reload::watch::watch;
use crate::ops::telemetry::Telemetry;
use crate::ops::{journal, retention, supervisor};
use crate::runtime::{Reach, TlsConfig};
use crate::storage::{Storage, StorageError, cipher, private_dir};
use host::{Host, StartError};
use tls::{Certificates, TlsListener};

/// The store `config` names: its PostgreSQL database, or its SQLite file, held (with the lock returned) until
/// selfmon stops: no conversion, and no second server, while this one uses it.
async fn open_storage(config: &Config) -> Result<(Storage, Option<cipher::Lock>), StartError> {
    let invalid = |e| StartError::Config(vec![ConfigError::new(config.source.name(), None, e)]);
    let base = &config.source.base_dir;
    if let Some(url) = config.storage.url(base).map_err(invalid)? {
        let read_file = |path: &str| std::fs::read(base.join(path));
        return Ok((Storage::connect(&url, read_file).await?, None));
    }
    let store = config.source.resolve(&config.storage.path);
    let key = config.storage.key(base).map_err(invalid)?;
    if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir).map_err(|source| StorageError::Directory { path: dir.into(), source })?;
    }
    let in_use = cipher::lock(&store)?;
    Ok((Storage::open_with_key(&store, key)?, Some(in_use)))
}

/// How long shutdown waits for API requests in progress before it stops waiting and commits what it has.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
    let address = listener.local_addr().map_err(StartError::Serve)?;
    open_only_on_loopback(&host.config, &access, address, "the API", "`[server] api_listen`")?;
    let certificates = Certificates::load(&host.config).map_err(|e| StartError::Config(vec![e]))?;
    let dashboard_listener = prepare_dashboard(&host.config, &access).await?;
    let otlp_listener = match host.config.traces.otlp_listen {
        Some(address) => {
            open_only_on_loopback(&host.config, &access, address, "the OTLP listener", "`[traces] otlp_listen`")?;
            Some(TcpListener::bind(address).await.map_err(|e| StartError::Otlp(address, e))?)
        }
        None => None,
    };
    let (storage, _in_use) = open_storage(&host.config).await?;
    let storage = storage.with_privacy(host.privacy.clone());
    if let Some(limit) = host.config.storage.size_limit {
        let in_force = storage.limit_size(Some(limit.as_u64())).await?;
        if in_force > limit.as_u64() {
            tracing::warn!(size_limit = %limit, in_force, "The database is already larger than `[storage] size_limit`: it may not grow further");
        }
    }
    let board = Arc::new(Board::default());
    for check in &host.checks {
        board.register(&check.name, &check.plugin.info.name, check.enabled, check.interval, &check.depends_on);
    }
    for run in storage.latest_runs().await? {
        board.record(&run);
    }
    let node = host.config.cluster.node_name();
    let cluster = Cluster::join(&storage, node, address.to_string(), board.clone()).await?;

    let telemetry =
        Arc::new(Telemetry::new(&storage).map_err(|e| StartError::Runtime(format!("cannot set up metrics: {e}")))?);

    for plugin in host.plugins.iter() {
        telemetry.register_plugin(&plugin.info.name);
    }
    let events = Events::default();

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    cluster.spawn(&tasks, stop.clone());
    let node = cluster.node().to_string();
    relay::spawn(storage.clone(), node, board.clone(), events.clone(), &tasks, stop.clone());
    let scheduler = Arc::new(Scheduler {
        runtime: host.runtime.clone(),
        storage: storage.clone(),
        board: board.clone(),
        cluster: cluster.clone(),
        recoverer: Recoverer::new(storage.clone(), board.clone(), tasks.clone(), stop.clone()),
        telemetry: telemetry.clone(),
        events: events.clone(),
        limit: Arc::new(tokio::sync::Semaphore::new(host.config.scheduler.max_concurrent.max(1))),
        jitter: host.config.scheduler.jitter,
        schedule: std::sync::Mutex::default(),
    });
    let webhook_reach = Reach::Public(
        host.config
            .webhooks
            .networks()
            .map_err(|e| StartError::Config(vec![ConfigError::new(host.config.source.name(), None, e)]))?
            .into(),
    );
    let webhook_client = Client::new(&TlsConfig::system(), webhook_reach.clone()).map_err(StartError::Runtime)?;
    webhooks::spawn(storage.clone(), webhook_client, &events, &tasks, stop.clone());
    let engine = Engine::new(
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
    driver::spawn(engine, configs, cluster.clone(), &tasks, stop.clone());
    let sink = Sink { storage: storage.clone(), telemetry: telemetry.clone() };
    if host.config.logging.enabled && host.config.logging.ingest {
        // selfmon's own log, read back like any other file source.
        let path = host.config.source.resolve(&host.config.logging.dir).join(journal::FILES[0].1);
        match Parsing::resolve("json", Vec::new(), &host.plugins) {
            Ok(parsing) => Tailer {
                sink: sink.clone(),
                runtime: host.runtime.clone(),
                parsing,
                origin: Origin { source: SELFMON_SOURCE.into(), service: Some("selfmon".into()) },
                patterns: vec![path.display().to_string()],
                poll: std::time::Duration::from_secs(1),
            }
            .spawn(&tasks, stop.clone()),
            _ => tracing::warn!("The built-in `json` parser is missing: selfmon's own log is not stored"),
        }
    }
    let retention = host.config.retention.clone();
    retention::spawn(storage.clone(), retention, telemetry.clone(), cluster.clone(), &tasks, stop.clone());
    if host.config.system.enabled {
        system::spawn(
            host.config.system.interval,
            storage.clone(),
            telemetry.clone(),
            events.clone(),
            &tasks,
            stop.clone(),
        );
    }
    let address = listener.local_addr().map_err(StartError::Serve)?;
    let usage = Arc::new(Usage::new(storage.clone(), &host.config.ai, telemetry.clone()));
    let (reloads, reload_requests) = Handle::new();
    let queries = Arc::new(Queries {
        usage,
        ai: host.config.ai.clone(),
        traces: host.config.traces.clone(),
        ingest: host.config.ingest.clone(),
        retention_events: host.config.retention.events,
        webhook_reach,
        runtime: host.runtime.clone(),
        live: std::sync::RwLock::new(Arc::new(Live::of(&host))),
        reloads: reloads.clone(),
        board,
        cluster,
        storage: storage.clone(),
        access: access.clone(),
        telemetry,
        events,
        started,
        tails: Arc::new(tokio::sync::Semaphore::new(MAX_TAILS)),
        intake: crate::api::intake::Budget::new(host.config.ingest.memory.as_u64()),
        stopping: stop.clone(),
        rule_status,
    });
    let started_sources =
        Reloader::start(&host, main, scheduler, queries.clone(), alerting_configs, (tasks.clone(), stop.clone())).await;
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
    watch(&host.config.source.resolve(&host.config.plugins.dir), reloads.clone(), &tasks, stop.clone());
    spawn_hangup(reloads, &tasks, stop.clone());
    if let Some(certificates) = &certificates {
        certificates.watch(&tasks, stop.clone());
        certificates.reload_on_hangup(&tasks, stop.clone());
    }
    let scheme = if certificates.is_some() { "https" } else { "http" };
    tracing::info!(
        api = %format!("{scheme}://{address}"),
        checks = host.checks.len(),
        rules = host.alerting.rules.iter().filter(|r| r.enabled).count(),
        plugins = host.plugins.iter().count(),
        storage = %storage.location(),
        "selfmon is running"
    );
    supervisor::ready(&format!("serving {} checks on {scheme}://{address}", host.checks.len()));
    supervisor::spawn_watchdog(&tasks, stop.clone());
    let tls = certificates.as_ref().map(|c| c.server_config());
    if let Some(prepared) = dashboard_listener {
        spawn_dashboard(&host.config, prepared, tls.clone(), queries.clone(), access.clone(), &tasks, stop.clone());
    }
    if let Some(listener) = otlp_listener {
        let otlp =
            api::app(queries.clone(), access.clone(), &host.config.api).layer(axum::middleware::from_fn(only_otlp));
        let server = serve_on(listener, tls.clone(), otlp, &host.config, &tasks, stop.clone());
        spawn_server("OTLP listener", server, &tasks, stop.clone());
    }
    let app = api::app(queries, access, &host.config.api);
    let mut server = std::pin::pin!(serve_on(listener, tls, app, &host.config, &tasks, stop.clone()));
    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown => {
            tracing::info!("Shutting down");
            supervisor::stopping();
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

/// Reload on `SIGHUP`.
fn spawn_hangup(reloads: Handle, tasks: &TaskTracker, stop: CancellationToken) {
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
            reloads.nudge(Trigger::Signal);
        }
    });
}

/// The dashboard's listener and session signing, made before anything starts, so that a taken port or an
/// unreadable key stops selfmon before it has begun.
async fn prepare_dashboard(
    config: &Config,
    access: &Access,
) -> Result<Option<(TcpListener, Option<Sessions>)>, StartError> {
    if !config.dashboard.enabled {
        return Ok(None);
    }
    let address = config.dashboard.listen;
    let sessions = if access.is_open() {
        None
    } else {
        let dir =
            config.source.resolve(&config.storage.path).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let sessions = Sessions::open(&dir).map_err(|reason| {
            StartError::Config(vec![ConfigError::new(config.source.name(), None, format!("`[dashboard]`: {reason}"))])
        })?;
        Some(sessions)
    };
    open_only_on_loopback(config, access, address, "the dashboard", "`[dashboard] listen`")?;
    let listener = TcpListener::bind(address).await.map_err(|e| StartError::Dashboard(address, e))?;
    Ok(Some((listener, sessions)))
}

/// An API without keys (and its dashboard, without sign-in) lets anyone who reaches it read and change everything:
/// beyond this machine only when the operator says so.
fn open_only_on_loopback(
    config: &Config,
    access: &Access,
    address: std::net::SocketAddr,
    what: &str,
    setting: &str,
) -> Result<(), StartError> {
    if !access.is_open() || address.ip().is_loopback() {
        return Ok(());
    }
    if config.api.open_to_network {
        tracing::warn!(%address, "{what} has no keys and listens beyond this machine, as `[api] open_to_network` allows");
        return Ok(());
    }
    let message = format!(
        "{setting} is {address}, beyond this machine, and the API has no keys: anyone who reaches {what} could read \
         and change everything. Set `[api] keys` (or MONITORING_API_KEY), listen on 127.0.0.1, or set \
         `[api] open_to_network = true`"
    );
    Err(StartError::Config(vec![ConfigError::new(config.source.name(), None, message)]))
}

/// Serve `app` on `listener` (over TLS with `tls`) until `stop`, within the `[server]` bounds.
fn serve_on(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    config: &Config,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> {
    let bounds =
        http::Bounds { header_timeout: config.server.header_timeout, max_connections: config.server.max_connections };
    match tls {
        None => Box::pin(http::serve(listener, app, bounds, stop)),
        Some(tls) => match TlsListener::new(listener, tls, tasks, stop.clone()) {
            Ok(listener) => Box::pin(http::serve(listener, app, bounds, stop)),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        },
    }
}

/// Serve the dashboard on its listener until `stop`.
fn spawn_dashboard(
    config: &Config,
    (listener, sessions): (TcpListener, Option<Sessions>),
    tls: Option<Arc<rustls::ServerConfig>>,
    queries: Arc<Queries>,
    access: Arc<Access>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(dashboard = %format!("{scheme}://{address}"), "Dashboard is serving");
    }
    let api = api::app(queries.clone(), access.clone(), &config.api);
    let app = dashboard::app(queries, access, api, &config.dashboard, sessions, tls.is_some());
    spawn_server("dashboard server", serve_on(listener, tls, app, config, tasks, stop.clone()), tasks, stop);
}

/// Run a server beside the API until `stop`, and its requests in progress a grace period longer.
fn spawn_server(
    what: &'static str,
    server: impl Future<Output = std::io::Result<()>> + Send + 'static,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let gave_up = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = server => if let Err(error) = served {
                tracing::error!(%error, "The {what} failed");
            },
            () = gave_up => {}
        }
    });
}

/// The OTLP listener takes OTLP/HTTP exports only (POSTs to their two paths; reads stay on the API); anything else
/// there is a 404, in the API's error shape.
async fn only_otlp(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    match (request.method(), request.uri().path()) {
        (&::http::Method::POST, "/v1/traces" | "/v1/logs") => next.run(request).await,
        (_, path) => crate::api::error::ApiError::new(
            ::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("`{path}`: this listener takes OTLP/HTTP exports only (/v1/traces, /v1/logs)"),
        )
        .into_response(),
    }
}
