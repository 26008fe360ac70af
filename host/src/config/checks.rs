//! The tables of the config about what selfmon watches: `[[check]]` (with `[check.recovery]`) and
//! `[[log_source]]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::SecretRef;

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

impl LogSourceKind {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Http => "http",
            Self::Syslog => "syslog",
        }
    }
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
