//! The operator's config file: what it may say, how it is read, and how the environment adjusts it.
//!
//! Types here mirror the file exactly (`deny_unknown_fields`, every field documented in `selfmon.example.toml`).
//! They are checked for syntax and types when read; what they mean (does the plugin exist, are the keys right) is
//! checked when the running host is built from them, see [`crate::checks`].

mod alerting;
mod analytics;
mod secret;
mod sidecar;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

pub use alerting::{
    AlertingConfig, ChannelConfig, ChannelKind, EscalationConfig, EscalationStep, RuleConfig, SmtpSecurity,
};
pub use analytics::{AiConfig, PatternConfig, Price, PrivacyConfig, TracesConfig};
pub use secret::{Secret, SecretRef};
pub use sidecar::{Extension, folder_files};

/// The file read when `--config` is not given, if it exists in the working directory.
pub const DEFAULT_FILE: &str = "selfmon.toml";

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub api: ApiConfig,
    pub dashboard: DashboardConfig,
    pub storage: StorageConfig,
    pub plugins: PluginsConfig,
    pub scheduler: SchedulerConfig,
    pub system: SystemConfig,
    pub retention: RetentionConfig,
    pub alerting: AlertingConfig,
    pub privacy: PrivacyConfig,
    pub ai: AiConfig,
    pub traces: TracesConfig,
    pub logging: LoggingConfig,
    /// Alert rules, one `[[rule]]` table each (besides the default ones and those created through the API).
    #[serde(rename = "rule")]
    pub rules: Vec<Spanned<RuleConfig>>,
    /// Where alert notifications go, one `[[channel]]` table each.
    #[serde(rename = "channel")]
    pub channels: Vec<Spanned<ChannelConfig>>,
    /// Escalation policies, one `[[escalation]]` table each.
    #[serde(rename = "escalation")]
    pub escalations: Vec<Spanned<EscalationConfig>>,
    /// The health checks, one `[[check]]` table each.
    #[serde(rename = "check")]
    pub checks: Vec<Spanned<CheckConfig>>,
    /// Where logs come from, one `[[log_source]]` table each.
    #[serde(rename = "log_source")]
    pub log_sources: Vec<Spanned<LogSourceConfig>>,
    /// Where this config came from, for error messages; relative paths in it are resolved against `base_dir`.
    #[serde(skip)]
    pub source: Source,
}

/// `[server]`: where selfmon listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The API: `/health`, `/v1/*`. Env: `SELFMON_API_LISTEN`.
    pub api_listen: SocketAddr,
}

/// `[dashboard]`: the live dashboard in the browser, on a port of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    pub enabled: bool,
    /// Env: `SELFMON_DASHBOARD_LISTEN`.
    pub listen: SocketAddr,
    /// How long a sign-in lasts (with `[api] keys`; without keys the dashboard is open like the API).
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// The address people open the dashboard at when a proxy stands in front of it (`https://monitor.example.com`):
    /// its pages may make changes and open the socket whatever `Host` the proxy passes on.
    pub public_url: Option<String>,
    /// Whether the session cookie is marked `Secure` (sent over HTTPS only): `auto` marks it when the page was
    /// reached over HTTPS (`X-Forwarded-Proto: https` from a proxy) or at a loopback address, where browsers accept
    /// it over plain HTTP.
    pub secure_cookie: SecureCookie,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookie {
    #[default]
    Auto,
    Always,
    Never,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            session_lifetime: Duration::from_secs(7 * 24 * 3600),
            public_url: None,
            secure_cookie: SecureCookie::Auto,
        }
    }
}

/// `[api]`: who may call the API, and how much.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer keys. With none here and no `MONITORING_API_KEY`, the API is open to anyone who can reach it: keep it
    /// on loopback then. `MONITORING_API_KEY`, when set, is an admin key named `monitoring`.
    pub keys: Vec<ApiKeyConfig>,
    /// Serve `/metrics` without a key, as Prometheus usually scrapes.
    pub metrics_public: bool,
    /// Requests a minute per key (per address for calls without one); 0 turns the limit off.
    pub rate_limit: u32,
    /// Origins allowed to call the API from a browser (CORS), such as `https://grafana.example.com`.
    pub cors_origins: Vec<String>,
    /// Request bodies larger than this are refused (413).
    pub max_body: ByteSize,
    /// Requests taking longer are answered 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds it; logged with its calls, never the key.
    pub name: String,
    /// `env:NAME`, `file:/path`, or the key itself.
    pub key: SecretRef,
    /// `read` (GET), `ingest` (only sending: `POST /v1/traces`, `/v1/logs`, `/v1/events`) or `admin`
    /// (everything).
    #[serde(default)]
    pub role: Role,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Read,
    /// Sends telemetry, reads nothing: what a service's exporter needs.
    Ingest,
    Admin,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            metrics_public: true,
            rate_limit: 600,
            cors_origins: Vec::new(),
            max_body: ByteSize::mib(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `[storage]`: where results and metrics are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database file, created with its directory if missing. Env: `SELFMON_STORAGE_PATH`.
    pub path: PathBuf,
}

/// `[plugins]`: where drop-in plugins live and how every plugin instance is confined.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Folder of drop-in `.wasm` components, loaded at start-up. Env: `SELFMON_PLUGINS_DIR`.
    pub dir: PathBuf,
    /// Compiled plugins are cached here so restarts are fast.
    pub cache_dir: PathBuf,
    /// Linear memory one plugin instance may use; a check may set its own `memory_limit` below `max_memory_limit`.
    pub memory_limit: ByteSize,
    /// The most any check may ask for with its own `memory_limit`.
    pub max_memory_limit: ByteSize,
    /// Plugin files larger than this are refused.
    pub max_file_size: ByteSize,
}

/// `[scheduler]`: how checks are run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Checks running at the same moment, across all checks.
    pub max_concurrent: usize,
    /// Each run starts up to this share of its interval late, so checks with the same interval spread out.
    pub jitter: f64,
    /// Interval of checks that do not set one.
    #[serde(with = "humantime_serde")]
    pub default_interval: Duration,
    /// Timeout of checks that do not set one.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
}

/// `[retention]`: how long stored data is kept, and how large the store may grow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Log records of levels not listed in `log_levels`.
    #[serde(with = "humantime_serde")]
    pub logs: Duration,
    /// Per level: `debug = "3d"`, `security = "365d"`.
    pub log_levels: std::collections::BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// Check runs (each check's latest run is always kept) and recovery attempts.
    #[serde(with = "humantime_serde")]
    pub check_runs: Duration,
    /// Metric samples.
    #[serde(with = "humantime_serde")]
    pub metrics: Duration,
    /// Resolved alerts, notification attempts and silences that are over.
    #[serde(with = "humantime_serde")]
    pub alerts: Duration,
    /// Events (user activity, AI usage, ratings) posted to `/v1/events` or taken from AI spans.
    #[serde(with = "humantime_serde")]
    pub events: Duration,
    /// Spans received over OTLP.
    #[serde(with = "humantime_serde")]
    pub spans: Duration,
    /// The most the database may hold; past it the oldest log records go first (trace, debug and info before
    /// warnings, and those before the rest). No cap when absent.
    pub max_size: Option<ByteSize>,
    /// How often the cleanup runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        Self {
            logs: days(30),
            log_levels: [("trace", 3), ("debug", 7), ("security", 365), ("audit", 365)]
                .into_iter()
                .map(|(level, n)| (level.to_string(), days(n).into()))
                .collect(),
            check_runs: days(30),
            metrics: days(30),
            alerts: days(90),
            events: days(365),
            spans: days(7),
            max_size: None,
            interval: Duration::from_secs(600),
        }
    }
}

/// `[logging]`: selfmon's own log files (JSON lines, rotated by size), written by `selfmon serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Write the files; stderr gets every record either way. The level of both is `SELFMON_LOG` (`info`).
    pub enabled: bool,
    /// The folder of `application/`, `errors/`, `performance/` and `security/`. Env: `SELFMON_LOG_DIR`.
    pub dir: PathBuf,
    /// A file past this size is renamed to `NAME.1` (older ones move up) and a new one started.
    pub max_file_size: ByteSize,
    /// Renamed files kept per kind.
    pub keep: usize,
    /// Store selfmon's own records like any other log source (`source = "selfmon"`), so they can be searched and
    /// alerted on.
    pub ingest: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { enabled: true, dir: PathBuf::from("logs"), max_file_size: ByteSize::mib(50), keep: 5, ingest: true }
    }
}

/// `[system]`: the host's own CPU, memory, disk and network figures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

/// One `[[log_source]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSourceConfig {
    /// Unique name, stored with every record as `source`.
    pub name: String,
    /// `file`: tail `paths`; `http`: defaults for `POST /v1/logs?source=NAME`; `syslog`: receive on `listen`.
    pub kind: LogSourceKind,
    /// Files and glob patterns (`/var/log/bot/*.log`), for `kind = "file"`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Addresses to receive syslog on, for `kind = "syslog"`: `udp://0.0.0.0:5514`, `tcp://0.0.0.0:5514`.
    #[serde(default)]
    pub listen: Vec<String>,
    /// The parser plugin: `json`, `logfmt`, `python`, `combined`, `syslog`, a dropped-in parser, or `auto` (each
    /// batch goes to the first of json, syslog, combined, logfmt and python that understands all of it). Default:
    /// `syslog` for `kind = "syslog"`, else `json`.
    parser: Option<String>,
    /// The parser's own settings (`[log_source.parser_config]`), checked by the parser when the config is loaded.
    #[serde(default)]
    pub parser_config: toml::Table,
    /// The service of records that do not name one.
    pub service: Option<String>,
    /// How often files are checked for new lines.
    #[serde(default = "half_second", with = "humantime_serde")]
    pub poll: Duration,
}

impl LogSourceConfig {
    /// The parser's name, as configured or the kind's default.
    pub fn parser(&self) -> &str {
        self.parser.as_deref().unwrap_or(match self.kind {
            LogSourceKind::Syslog => "syslog",
            LogSourceKind::File | LogSourceKind::Http => "json",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSourceKind {
    File,
    Http,
    Syslog,
}

fn half_second() -> Duration {
    Duration::from_millis(500)
}

/// One `[[check]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Unique name; used in the API, metrics labels and `depends_on`.
    pub name: String,
    /// A built-in or dropped-in plugin, by the name its `info()` gives.
    pub plugin: String,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The check's own target (URL or `host:port`); network access to it is granted.
    pub target: Option<String>,
    /// Further network grants: `host:port`, `host:*`, `*.example.com:443`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// PEM certificates of further authorities this check's HTTPS requests trust (a private CA), besides the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Checks this one depends on.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// `false` keeps the check in the config without running it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides `[plugins] memory_limit` for this check.
    pub memory_limit: Option<ByteSize>,
    /// Plugin-specific keys, checked against what the plugin declares.
    #[serde(default)]
    pub config: toml::Table,
    /// Secrets handed only to this check's plugin instance: `env:NAME`, `file:/path`, or the value itself.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// What to do when the check keeps failing.
    pub recovery: Option<RecoveryConfig>,
}

/// `[check.recovery]`: an action run after `after` failed runs in a row, with exponential back-off between attempts.
/// Exactly one of `command` and `http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Consecutive failed runs (unhealthy, or not carried out) before the first attempt.
    #[serde(default = "three")]
    pub after: u32,
    /// A program and its arguments, run without a shell: `["systemctl", "restart", "bot"]`. It inherits only
    /// PATH, HOME, LANG, LC_ALL, TZ and USER from selfmon; a relative program is looked up on that PATH.
    pub command: Option<Vec<String>>,
    /// Further environment for the command, values as secrets: `env:NAME`, `file:/path`, or the value itself.
    #[serde(default)]
    pub env: BTreeMap<String, SecretRef>,
    /// A request, for example to a process manager's restart endpoint.
    pub http: Option<RecoveryHttp>,
    /// How long one attempt may take.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per failure episode; the episode ends when the check passes again.
    #[serde(default = "three")]
    pub max_attempts: u32,
    /// The wait after the first attempt; doubled after each further one, up to `max_backoff`.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "ten_minutes", with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// `[check.recovery.http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryHttp {
    /// Without credentials in it: put them in `headers`.
    pub url: String,
    #[serde(default = "post")]
    pub method: String,
    /// Header values as secrets: `env:NAME`, `file:/path`, or the value itself.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretRef>,
}

fn three() -> u32 {
    3
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

fn post() -> String {
    "POST".into()
}

fn yes() -> bool {
    true
}

/// Where a config came from.
#[derive(Clone, Default)]
pub struct Source {
    /// The file, or `None` for the built-in default.
    pub file: Option<PathBuf>,
    /// The file's text, to turn byte offsets into line numbers.
    pub text: String,
    /// Relative paths in the config are relative to this directory.
    pub base_dir: PathBuf,
    /// Sidecar files from the plugins folder whose tables were added (see [`Config::with_sidecars`]).
    pub sidecars: Vec<sidecar::Text>,
}

impl Source {
    /// The file name as shown in messages.
    pub fn name(&self) -> String {
        self.file.as_ref().map_or_else(|| "the built-in default config".into(), |f| f.display().to_string())
    }

    /// The file that holds the table at `offset`, as shown in messages.
    pub fn name_at(&self, offset: usize) -> String {
        match self.sidecar_at(offset) {
            Some(sidecar) => sidecar.file.display().to_string(),
            None => self.name(),
        }
    }

    /// The 1-based line of `offset` in the file that holds it; none for the built-in default.
    pub fn line_at(&self, offset: usize) -> Option<usize> {
        (self.file.is_some() || self.sidecar_at(offset).is_some()).then(|| self.line_of(offset))
    }

    /// The 1-based line of a byte offset in the file (or sidecar) that holds it.
    pub fn line_of(&self, offset: usize) -> usize {
        let (text, offset) = self.text_at(offset);
        text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
    }

    fn sidecar_at(&self, offset: usize) -> Option<&sidecar::Text> {
        self.sidecars.iter().rev().find(|sidecar| offset >= sidecar.offset)
    }

    /// The text that holds `offset`, and the offset within it.
    fn text_at(&self, offset: usize) -> (&str, usize) {
        match self.sidecar_at(offset) {
            Some(sidecar) => (&sidecar.text, offset - sidecar.offset),
            None => (&self.text, offset),
        }
    }

    /// The line where `key = ...` is written in the `[[check]]` table whose header is at `header`, its
    /// `[check.*]` sub-tables included, if it is.
    pub fn line_of_key(&self, header: std::ops::Range<usize>, key: &str) -> Option<usize> {
        let (text, start) = self.text_at(header.start);
        let shift = header.start - start;
        let header = start..header.end - shift;
        // The parser's span covers only the `[[check]]` header: the table runs to the next header that is neither
        // one of its sub-tables nor a line inside them.
        let rest = text.get(header.end..)?;
        let mut end = text.len();
        let mut offset = header.end;
        for line in rest.split_inclusive('\n') {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') && !trimmed.starts_with("[check.") {
                end = offset;
                break;
            }
            offset += line.len();
        }
        let table = text.get(header.start..end)?;
        let mut offset = header.start;
        for line in table.split_inclusive('\n') {
            let trimmed = line.trim_start();
            let unquoted = trimmed.strip_prefix(key).or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")));
            if unquoted.is_some_and(|rest| rest.trim_start().starts_with('=')) {
                return Some(self.line_of(offset + shift));
            }
            offset += line.len();
        }
        None
    }

    /// Resolve a path from the config against the config's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// A config that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `environment variable X`).
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(origin: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self { origin: origin.into(), line, message: message.into() }
    }
}

/// A TOML error's message without the value it quotes: the value may be a secret (a token written without quotes is
/// "invalid type: integer `123...`, expected a string"), and errors are logged and shown by the API.
pub(crate) fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(at) = message.find(prefix) {
            let rest = &message[at + prefix.len()..];
            let end = rest.find(", expected").unwrap_or(rest.len());
            let kind = &rest[..end];
            let kind = kind.find(['`', '"']).map_or(kind, |quote| kind[..quote].trim_end());
            return format!("{}{prefix}{kind}{}", &message[..at], &rest[end..]);
        }
    }
    message.to_string()
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {line}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The file's text is left out: it may hold literal secrets.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("file", &self.file).field("base_dir", &self.base_dir).finish_non_exhaustive()
    }
}

impl Config {
    /// Read the config: `path` if given; else `selfmon.toml` in the working directory if it exists; else the
    /// built-in default. Environment overrides are applied in every case.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = path.map(Path::to_path_buf).or_else(|| {
            let default = PathBuf::from(DEFAULT_FILE);
            default.is_file().then_some(default)
        });
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::new(path.display().to_string(), None, format!("cannot read: {e}")))?;
                Self::parse(&text, Some(&path))?
            }
            None => Self::builtin_default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        if config.source.file.is_none() {
            config.add_self_check();
        }
        Ok(config)
    }

    /// Parse config text. `file` names it in errors and anchors its relative paths (the working directory when
    /// `None`).
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Self, ConfigError> {
        let origin = file.map_or_else(|| "config".into(), |f| f.display().to_string());
        let base_dir = file.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let source =
            Source { file: file.map(Path::to_path_buf), text: text.to_string(), base_dir, sidecars: Vec::new() };
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| source.line_of(span.start));
            ConfigError::new(origin, line, without_value(e.message().trim_end()))
        })?;
        config.source = source;
        Ok(config)
    }

    /// The config used when there is no file: SQLite under `./data`, the system collector, and a check of
    /// selfmon's own API.
    pub fn builtin_default() -> Self {
        Self {
            server: ServerConfig::default(),
            api: ApiConfig::default(),
            storage: StorageConfig::default(),
            plugins: PluginsConfig::default(),
            scheduler: SchedulerConfig::default(),
            system: SystemConfig::default(),
            dashboard: DashboardConfig::default(),
            retention: RetentionConfig::default(),
            alerting: AlertingConfig::default(),
            privacy: PrivacyConfig::default(),
            ai: AiConfig::default(),
            traces: TracesConfig::default(),
            logging: LoggingConfig::default(),
            rules: Vec::new(),
            channels: Vec::new(),
            escalations: Vec::new(),
            checks: Vec::new(),
            log_sources: Vec::new(),
            source: Source::default(),
        }
    }

    /// The default config's check of selfmon itself, through the built-in `http` plugin, at whatever address the
    /// API listens on.
    fn add_self_check(&mut self) {
        let mut address = self.server.api_listen;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        self.checks.push(Spanned::new(
            0..0,
            CheckConfig {
                name: "selfmon-api".into(),
                plugin: "http".into(),
                interval: Some(Duration::from_secs(30)),
                timeout: Some(Duration::from_secs(5)),
                target: Some(format!("http://{address}/health")),
                allow: Vec::new(),
                ca_file: None,
                depends_on: Vec::new(),
                enabled: true,
                memory_limit: None,
                config: toml::Table::new(),
                secrets: BTreeMap::new(),
                recovery: None,
            },
        ));
    }

    /// Apply `SELFMON_*` environment overrides, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let invalid = |name: &str, value: &str, expected: &str| {
            ConfigError::new(format!("environment variable {name}"), None, format!("`{value}` is not {expected}"))
        };
        if let Some(value) = var("SELFMON_API_LISTEN") {
            self.server.api_listen = value
                .parse()
                .map_err(|_| invalid("SELFMON_API_LISTEN", &value, "an address such as 127.0.0.1:8001"))?;
        }
        if let Some(value) = var("SELFMON_DASHBOARD_LISTEN") {
            self.dashboard.listen = value
                .parse()
                .map_err(|_| invalid("SELFMON_DASHBOARD_LISTEN", &value, "an address such as 127.0.0.1:8000"))?;
        }
        if let Some(value) = var("SELFMON_STORAGE_PATH") {
            self.storage.path = value.into();
        }
        if let Some(value) = var("SELFMON_PLUGINS_DIR") {
            self.plugins.dir = value.into();
        }
        if let Some(value) = var("SELFMON_LOG_DIR") {
            self.logging.dir = value.into();
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { api_listen: SocketAddr::from(([127, 0, 0, 1], 8001)) }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("data/selfmon.db") }
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("plugins"),
            cache_dir: PathBuf::from("data/cache"),
            memory_limit: ByteSize::mib(64),
            max_memory_limit: ByteSize::mib(512),
            max_file_size: ByteSize::mib(32),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            jitter: 0.1,
            default_interval: Duration::from_secs(30),
            default_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self { enabled: true, interval: Duration::from_secs(15) }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::builtin_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_line_and_field() {
        let text = "[server]\napi_listen = \"127.0.0.1:9000\"\n\n[[check]]\nname = \"web\"\nplugin = \"http\"\nintervall = \"5s\"\n";
        let err = Config::parse(text, Some(Path::new("conf/selfmon.toml"))).unwrap_err();
        assert_eq!(err.origin, "conf/selfmon.toml");
        assert_eq!(err.line, Some(7));
        assert!(err.message.contains("unknown field `intervall`"), "{err}");

        let err = Config::parse("[scheduler]\ndefault_interval = 5\n", None).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("invalid type: integer"), "{err}");
    }

    #[test]
    fn a_mistyped_value_is_not_quoted_in_the_error() {
        let text = "[[check]]\nname = \"a\"\nplugin = \"http\"\n[check.secrets]\ntoken = 987654321987\n";
        let err = Config::parse(text, None).unwrap_err();
        assert!(!err.to_string().contains("987654321987"), "{err}");
        assert!(err.message.contains("invalid type: integer, expected"), "{err}");
        let text = "[api]\nkeys = [\"admin-key-0123456789\"]\n";
        let err = Config::parse(text, None).unwrap_err();
        assert!(!err.to_string().contains("admin-key"), "{err}");
        assert!(err.message.contains("invalid type: string, expected"), "{err}");
    }

    #[test]
    fn keys_are_found_on_their_own_lines_and_the_text_is_not_debug_printed() {
        let text = "[[check]]\nname = \"a\"\nplugin = \"http\"\ntarget = \"x\"\n[check.config]\nexpect_status = 1\n[check.secrets]\ntoken = \"hunter2\"\n";
        let config = Config::parse(text, Some(Path::new("s.toml"))).unwrap();
        let span = config.checks[0].span();
        assert_eq!(config.source.line_of_key(span.clone(), "target"), Some(4));
        assert_eq!(config.source.line_of_key(span.clone(), "expect_status"), Some(6), "sub-tables belong to the check");
        assert_eq!(config.source.line_of_key(span, "nope"), None);
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let config =
            Config::parse("[storage]\npath = \"db/s.db\"\n", Some(Path::new("/etc/selfmon/selfmon.toml"))).unwrap();
        assert_eq!(config.source.resolve(&config.storage.path), Path::new("/etc/selfmon/db/s.db"));
        assert_eq!(config.source.resolve(Path::new("/abs")), Path::new("/abs"));
    }

    #[test]
    fn environment_overrides_and_rejects_bad_values() {
        let mut config = Config::builtin_default();
        config
            .apply_env(|name| match name {
                "SELFMON_API_LISTEN" => Some("0.0.0.0:9100".into()),
                "SELFMON_STORAGE_PATH" => Some("/var/lib/selfmon/db.sqlite".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.server.api_listen.port(), 9100);
        assert_eq!(config.storage.path, Path::new("/var/lib/selfmon/db.sqlite"));

        let err = config.apply_env(|name| (name == "SELFMON_API_LISTEN").then(|| "nowhere".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable SELFMON_API_LISTEN: `nowhere` is not an address such as 127.0.0.1:8001"
        );
    }

    #[test]
    fn the_builtin_default_checks_selfmon_itself_where_it_listens() {
        let mut config = Config::builtin_default();
        config.server.api_listen = "0.0.0.0:9200".parse().unwrap();
        config.add_self_check();
        let check = config.checks[0].get_ref();
        assert_eq!(check.plugin, "http");
        assert_eq!(check.target.as_deref(), Some("http://127.0.0.1:9200/health"));
    }

    #[test]
    fn sizes_and_durations_read_as_operators_write_them() {
        let config =
            Config::parse("[plugins]\nmemory_limit = \"32 MiB\"\n[system]\ninterval = \"1m 30s\"\n", None).unwrap();
        assert_eq!(config.plugins.memory_limit, ByteSize::mib(32));
        assert_eq!(config.system.interval, Duration::from_secs(90));
    }
}
