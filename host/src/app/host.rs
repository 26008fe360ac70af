//! What a config builds, before anything runs: the plugins loaded, and the checks, log sources, rules, access keys
//! and privacy settings checked against them, every problem reported at once. `selfmon config check` stops here;
//! a reload builds a new one and puts it in place only when all of it is valid. Also the plugin runtime sized for a
//! config ([`runtime_for`]) and why selfmon could not start ([`StartError`]).

use std::sync::Arc;

use crate::alerting::Alerting;
use crate::analytics::cost::check_config;
use crate::api::access::Access;
use crate::api::origin::public_origin;
use crate::checks::{self, Check};
use crate::config::{Config, ConfigError};
use crate::logs::LEVELS;
use crate::logs::sources::Source;
use crate::logs::sources::syslog::BindError;
use crate::runtime::plugins::Plugins;
use crate::runtime::{CompiledCache, Runtime};
use crate::storage::{KeyFile, Privacy, StorageError};

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
    #[error("the OTLP listener cannot listen on {0} (`[traces] otlp_listen`): {1}")]
    Otlp(std::net::SocketAddr, std::io::Error),
    #[error(transparent)]
    Listen(#[from] BindError),
}

/// Plugins loaded and checks built from a config: everything but storage and the servers.
pub struct Host {
    pub config: Config,
    pub runtime: Arc<Runtime>,
    pub plugins: Arc<Plugins>,
    pub checks: Vec<Arc<Check>>,
    pub access: Arc<Access>,
    /// The `[[log_source]]` tables, built.
    pub log_sources: Vec<Source>,
    /// Rules, channels and escalation policies.
    pub alerting: Arc<Alerting>,
    /// Pseudonymization and redaction of what is stored.
    pub privacy: Arc<Privacy>,
}

impl Host {
    /// Load the plugins and build the checks, with the tables of the plugins folder's sidecars. All of the config
    /// is checked, and every problem reported.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with(config, KeyFile::Make).await
    }

    /// As [`Host::build`], for a command that checks or reads rather than serves: nothing is written for it (a
    /// pseudonymization key that does not exist yet is not made).
    pub async fn for_command(config: Config) -> Result<Self, StartError> {
        Self::build_with(config, KeyFile::Read).await
    }

    async fn build_with(config: Config, key_file: KeyFile) -> Result<Self, StartError> {
        let config = config.with_sidecars().map_err(StartError::Config)?;
        let (runtime, plugins) = load_plugins(&config).await?;
        Self::assemble_with(config, Arc::new(runtime), plugins, key_file).await.map_err(StartError::Config)
    }

    /// Build the checks, log sources and rules of `config` (sidecars included) on plugins already loaded.
    pub async fn assemble(config: Config, runtime: Arc<Runtime>, plugins: Plugins) -> Result<Self, Vec<ConfigError>> {
        Self::assemble_with(config, runtime, plugins, KeyFile::Make).await
    }

    async fn assemble_with(
        config: Config,
        runtime: Arc<Runtime>,
        plugins: Plugins,
        key_file: KeyFile,
    ) -> Result<Self, Vec<ConfigError>> {
        let sane = config_sanity(&config);
        let env = |name: &str| std::env::var(name).ok();
        let built = checks::build(&config, &plugins, &runtime, &env).await;
        let access = Access::from_config(&config.api, &config.source, &env);
        let sources = Source::build(&config, &plugins, &runtime).await;
        let alerting = Alerting::build(&config, &plugins, &runtime, &env).await;
        let key_path = config.source.resolve(&config.storage.path).with_file_name("privacy.key");
        let privacy = Privacy::build(&config.privacy, &config.source, &env, &key_path, key_file);
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
                // As an operator reads them: each file's problems in the order of its lines, the file's own first.
                let files: Vec<String> = errors.iter().map(|e| e.origin.clone()).collect();
                errors.sort_by_key(|e| (files.iter().position(|f| *f == e.origin), e.line));
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

/// The plugin runtime sized for a config: its compiled-plugin cache, instance pool and memory cap.
pub fn runtime_for(config: &Config) -> Result<Runtime, StartError> {
    let cache_dir = config.source.resolve(&config.plugins.cache_dir);
    // Room for every check running at once, plus validation and the command line's own calls.
    let concurrent = config.scheduler.max_concurrent.clamp(1, MAX_CONCURRENT);
    let instances = u32::try_from(concurrent).unwrap_or(u32::MAX).saturating_mul(2).max(32);
    let max_memory = usize::try_from(config.plugins.max_memory_limit.as_u64()).unwrap_or(usize::MAX);
    let cache = CompiledCache::private(cache_dir)
        .map_err(|reason| StartError::Config(vec![ConfigError::new(config.source.name(), None, reason)]))?;
    Runtime::new(cache, instances, max_memory).map_err(|e| StartError::Runtime(format!("{e:#}")))
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

/// Settings outside any check that cannot work.
fn config_sanity(config: &Config) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut problem = |message: String| errors.push(ConfigError::new(config.source.name(), None, message));
    if !(1..=MAX_CONCURRENT).contains(&config.scheduler.max_concurrent) {
        problem(format!("`[scheduler] max_concurrent` must be between 1 and {MAX_CONCURRENT}"));
    }
    for message in config.storage.conflicts().into_iter().chain(config.cluster.problem()) {
        problem(message);
    }
    if config.storage.url.is_some() {
        if config.retention.max_size.is_some() {
            problem(
                "`[retention] max_size` measures a SQLite file; with `[storage] url`, keep data by `[retention]` days"
                    .into(),
            );
        }
        if config.privacy.pseudonymize_users && config.privacy.key.is_none() {
            problem(
                "with `[storage] url`, set `[privacy] key` (the same on every node): user pseudonyms must not depend \
                 on which node stored them"
                    .into(),
            );
        }
    }
    if !(0.0..=1.0).contains(&config.scheduler.jitter) {
        problem(format!("`[scheduler] jitter` must be between 0 and 1, not {}", config.scheduler.jitter));
    }
    for message in check_config(&config.ai) {
        problem(message);
    }
    if config.logging.keep == 0 || config.logging.max_file_size.as_u64() < 1024 {
        problem("`[logging]`: `keep` must be at least 1 and `max_file_size` at least 1 KiB".into());
    }
    if config.traces.max_inflated.is_some() {
        problem("`[traces] max_inflated` is now `[ingest] max_inflated`, and holds every ingest route".into());
    }
    let ingest = &config.ingest;
    if ingest.max_inflated.as_u64() < 1024 || ingest.memory.as_u64() < 1024 * 1024 || ingest.max_items == 0 {
        problem(
            "`[ingest]`: `max_inflated` must be at least 1 KiB, `memory` at least 1 MiB, `max_items` at least 1".into(),
        );
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
    if let Err(message) = config.webhooks.networks() {
        problem(message);
    }
    for name in &config.api.allowed_hosts {
        if name.is_empty() || name.contains("://") || name.contains(['/', ' ', ':']) {
            problem(format!("`[api] allowed_hosts`: `{name}` is not a host name such as \"monitor.internal\""));
        }
    }
    if config.dashboard.enabled && config.dashboard.listen == config.server.api_listen {
        problem(format!("`[dashboard] listen` and `[server] api_listen` are both {}", config.server.api_listen));
    }
    if !(60..=366 * 86_400).contains(&config.dashboard.session_lifetime.as_secs()) {
        problem("`[dashboard] session_lifetime` must be between 1m and 366d".into());
    }
    if let Some(url) = &config.dashboard.public_url
        && public_origin(url).is_none()
    {
        problem(format!(
            "`[dashboard] public_url`: `{url}` is not an address such as \"https://monitor.example.com\" (no path)"
        ));
    }
    if config.system.interval < crate::checks::system::MIN_INTERVAL {
        problem("`[system] interval` must be at least 1s".into());
    }
    if config.retention.max_size.is_some_and(|cap| cap < bytesize::ByteSize::mib(1)) {
        problem("`[retention] max_size` must be at least 1 MiB".into());
    }
    if config.retention.interval < crate::ops::retention::MIN_INTERVAL {
        problem("`[retention] interval` must be at least 1s".into());
    }
    for (level, keep) in &config.retention.log_levels {
        if !LEVELS.contains(&level.as_str()) {
            problem(format!("`[retention.log_levels]`: `{level}` is not one of {}", LEVELS.join(", ")));
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
