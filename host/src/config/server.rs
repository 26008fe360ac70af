//! The tables of the config about selfmon itself: `[server]`, `[api]`, `[dashboard]`, `[storage]`, `[plugins]`,
//! `[scheduler]`, `[system]`, `[retention]` and `[logging]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{Secret, SecretRef};

/// `[server]`: where selfmon listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The API: `/health`, `/v1/*`. Env: `SELFMON_API_LISTEN`.
    pub api_listen: SocketAddr,
    /// How long a client has to send a request's headers, and may stay silent between requests on a kept
    /// connection (API and dashboard).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections open at once on the API's listener, and on the dashboard's; one more is closed at once.
    pub max_connections: usize,
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
    /// Origins allowed to call the API from a browser (CORS), such as `https://grafana.example.com`. A page of any
    /// other origin may not change anything or open a WebSocket; `"*"` allows every origin.
    pub cors_origins: Vec<String>,
    /// Names the API answers to when it has no keys, besides its addresses and `localhost`, such as
    /// `monitor.internal`: any other `Host` is refused, so a site whose name points at this machine cannot use it.
    pub allowed_hosts: Vec<String>,
    /// Let an API without keys (and its dashboard) listen beyond loopback: selfmon refuses to start so otherwise.
    pub open_to_network: bool,
    /// Request bodies larger than this are refused (413).
    pub max_body: ByteSize,
    /// Requests taking longer are answered 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// `[ingest]`: what requests that send telemetry (`POST /v1/logs`, `/v1/traces`, `/v1/events`) may hold in memory.
/// Every bound is applied before the body is decoded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The most a request body may inflate to once decompressed (the body as sent is held to `[api] max_body`).
    pub max_inflated: ByteSize,
    /// Items in one request at most: lines, records, spans, log records or events.
    pub max_items: usize,
    /// The memory all ingest requests at once may hold: their bodies, inflated and decoded, as estimated before
    /// decoding. A request that does not fit waits up to 2 seconds, then is answered 503 with `Retry-After`.
    pub memory: ByteSize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_inflated: ByteSize::mib(16), max_items: 100_000, memory: ByteSize::mib(64) }
    }
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
            allowed_hosts: Vec::new(),
            open_to_network: false,
            max_body: ByteSize::mib(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `[tls]`: HTTPS on the API and the dashboard.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM), the server's own certificate first. Read again when it changes and on `SIGHUP`.
    pub cert_file: Option<PathBuf>,
    /// The private key of the certificate (PEM: PKCS #8, PKCS #1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// `[storage]`: where results and metrics are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database file, created with its directory if missing. Env: `SELFMON_STORAGE_PATH`.
    pub path: PathBuf,
    /// Store in PostgreSQL instead: a `postgres://` URL (or `env:NAME` / `file:/path` holding one), with
    /// `sslmode` and `sslrootcert` as libpq reads them. Nodes on the same database form a cluster. Env:
    /// `SELFMON_STORAGE_URL`.
    pub url: Option<SecretRef>,
    /// Encrypt the database at rest with this key (`env:NAME` or `file:/path`): a new store is made encrypted; an
    /// existing plain one is converted with `selfmon storage encrypt`.
    pub key: Option<SecretRef>,
    /// The most the database file may grow to. Short of it by a reserve the cleanup keeps (an eighth, at most
    /// 64 MiB), writes are refused as on a full disk (ingest answers 507, or 503 to OTLP) until retention or the
    /// operator frees room in it; no limit but the disk's when absent.
    pub size_limit: Option<ByteSize>,
}

/// `[cluster]`: this node among the others storing in the same PostgreSQL database (`[storage] url`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name, unique among the nodes on the database: letters, digits, `.`, `-` and `_`, at most 63.
    /// Env: `SELFMON_NODE`. Default: the machine's host name.
    pub node: Option<String>,
}

impl ClusterConfig {
    /// The node's name: the one set, or the machine's host name (`selfmon` if it has none that fits).
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
            if valid_node_name(&host) { host } else { "selfmon".into() }
        })
    }

    /// What is wrong with the name set, if anything.
    pub fn problem(&self) -> Option<String> {
        let name = self.node.as_deref()?;
        (!valid_node_name(name)).then(|| {
            format!(
                "`[cluster] node` must be 1 to 63 letters, digits, `.`, `-` or `_`, not {:?}",
                name.chars().take(64).collect::<String>()
            )
        })
    }
}

fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl StorageConfig {
    /// The PostgreSQL URL, looked up; `None` for SQLite. Errors name the setting, never the URL.
    pub fn url(&self, base: &std::path::Path) -> Result<Option<Secret>, String> {
        self.url.as_ref().map(|reference| database_url(reference, base, "`[storage] url`")).transpose()
    }

    /// What cannot go together with `[storage] url`.
    pub fn conflicts(&self) -> Vec<String> {
        if self.url.is_none() {
            return Vec::new();
        }
        let mut found = Vec::new();
        if self.key.is_some() {
            found.push(
                "`[storage] key` encrypts a SQLite file; with `[storage] url`, use PostgreSQL's TLS and its disk's \
                 encryption instead"
                    .to_string(),
            );
        }
        if self.size_limit.is_some() {
            found.push(
                "`[storage] size_limit` holds a SQLite file; with `[storage] url`, bound the database in PostgreSQL \
                 and keep data by `[retention]` days"
                    .to_string(),
            );
        }
        found
    }

    /// The key, looked up; `None` when the store is not encrypted. Errors name the setting, never the key.
    pub fn key(&self, base: &std::path::Path) -> Result<Option<Secret>, String> {
        let Some(reference) = &self.key else { return Ok(None) };
        let key =
            reference.resolve(|name| std::env::var(name).ok(), base).map_err(|e| format!("`[storage] key` {e}"))?;
        if key.expose().is_empty() {
            return Err("`[storage] key` is empty".into());
        }
        Ok(Some(key))
    }
}

/// A PostgreSQL URL `reference` names (itself, `env:NAME` or `file:/path`), looked up; errors name the setting it
/// came from (`named`), never the URL.
pub fn database_url(reference: &SecretRef, base: &std::path::Path, named: &str) -> Result<Secret, String> {
    let url = reference.resolve(|name| std::env::var(name).ok(), base).map_err(|e| format!("{named} {e}"))?;
    Ok(Secret::new(url.expose().trim().to_string()))
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
    /// Sidecars (file names in `dir`) that may do what only this config file may otherwise: recovery actions,
    /// `env:` and `file:` secret references, `ca_file`, and log sources of kind `file` or `syslog`.
    pub trusted_sidecars: Vec<String>,
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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("data/selfmon.db"), url: None, key: None, size_limit: None }
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
            trusted_sidecars: Vec::new(),
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
