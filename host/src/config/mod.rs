//! The operator's config file: what it may say, how it is read, and how the environment adjusts it.
//!
//! The types mirror the file exactly (`deny_unknown_fields`, every field documented in `selfmon.example.toml`).
//! [`Config`] is here; each group of tables has a file of its own (`server.rs`, `checks.rs`, `alerting.rs`,
//! `analytics.rs`), beside secrets (`secret.rs`), sidecars (`sidecar.rs`), `${VAR}` references
//! (`interpolate.rs`), and where a config came from with its errors (`source.rs`). They are checked for syntax and types when read; what they mean (does the plugin exist, are
//! the keys right) is checked when the running host is built from them, see [`crate::app::host`].

mod alerting;
mod analytics;
mod checks;
mod interpolate;
mod secret;
mod server;
mod sidecar;
mod source;
pub mod trust;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use alerting::{
    AlertingConfig, ChannelConfig, ChannelKind, EscalationConfig, EscalationStep, RuleConfig, SmtpSecurity,
    WebhooksConfig,
};
pub use analytics::{AiConfig, PatternConfig, Price, PrivacyConfig, TracesConfig};
pub use checks::{CheckConfig, LogSourceConfig, LogSourceKind, RecoveryConfig, RecoveryHttp};
pub use secret::{Env, Secret, SecretRef};
pub use server::{
    ApiConfig, ApiKeyConfig, ClusterConfig, DashboardConfig, IngestConfig, LoggingConfig, PluginsConfig,
    RetentionConfig, Role, SchedulerConfig, SecureCookie, ServerConfig, StorageConfig, SystemConfig, TlsConfig,
    database_url,
};
pub use sidecar::{Extension, folder_files};
pub use source::{ConfigError, Source, without_value};

/// The file read when `--config` is not given, if it exists in the working directory.
pub const DEFAULT_FILE: &str = "selfmon.toml";

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub api: ApiConfig,
    pub ingest: IngestConfig,
    pub dashboard: DashboardConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    pub plugins: PluginsConfig,
    pub scheduler: SchedulerConfig,
    pub system: SystemConfig,
    pub retention: RetentionConfig,
    pub alerting: AlertingConfig,
    pub webhooks: WebhooksConfig,
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

impl std::error::Error for ConfigError {}

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
                let text = interpolate::interpolate(&text, |name| std::env::var(name).ok())
                    .map_err(|p| ConfigError::new(path.display().to_string(), Some(p.line), p.message))?;
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
            tls: TlsConfig::default(),
            api: ApiConfig::default(),
            ingest: IngestConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
            plugins: PluginsConfig::default(),
            scheduler: SchedulerConfig::default(),
            system: SystemConfig::default(),
            dashboard: DashboardConfig::default(),
            retention: RetentionConfig::default(),
            alerting: AlertingConfig::default(),
            webhooks: WebhooksConfig::default(),
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
        if let Some(value) = var("SELFMON_STORAGE_URL") {
            self.storage.url = Some(SecretRef::new(value));
        }
        if let Some(value) = var("SELFMON_NODE") {
            self.cluster.node = Some(value);
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

impl Default for Config {
    fn default() -> Self {
        Self::builtin_default()
    }
}

#[cfg(test)]
mod tests {
    use bytesize::ByteSize;

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

/// Fuzz targets for config loading (`scripts/fuzz` runs them for as long as it is given; the suite runs them
/// briefly).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const EXAMPLE: &str = include_str!("../../../selfmon.example.toml");

    /// A line of the example config, by index, and the example with that line replaced.
    fn replaced(at: prop::sample::Index, with: &str) -> (usize, String) {
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        let at = at.index(lines.len());
        let mut changed: Vec<String> = lines.iter().map(ToString::to_string).collect();
        changed[at] = with.to_string();
        (at, changed.join("\n"))
    }

    fn line_in(error: &ConfigError, text: &str) -> bool {
        error.line.is_none_or(|line| line >= 1 && line <= text.lines().count() + 1)
    }

    proptest! {
        /// Any text loads or is refused with a line inside it: never a panic.
        #[test]
        fn any_text(text in any::<String>()) {
            if let Err(error) = Config::parse(&text, None) {
                prop_assert!(line_in(&error, &text), "{error}");
            }
        }

        /// The example config with any line replaced by anything.
        #[test]
        fn a_damaged_example(at in any::<prop::sample::Index>(), with in any::<String>()) {
            let (_, text) = replaced(at, &with);
            if let Err(error) = Config::parse(&text, None) {
                prop_assert!(line_in(&error, &text), "{error}");
            }
        }

        /// A value put where it does not belong (a key pasted into the wrong line) is refused without being
        /// quoted: an error message never carries a value of the file.
        #[test]
        fn a_misplaced_value_is_not_quoted(at in any::<prop::sample::Index>(), value in "[A-Za-z0-9_-]{12,40}", quoted in any::<bool>()) {
            let lines: Vec<&str> = EXAMPLE.lines().collect();
            let index = at.index(lines.len());
            let Some((key, _)) = lines[index].split_once(" = ").filter(|(key, _)| !key.starts_with('#')) else {
                return Ok(());
            };
            let written = if quoted { format!("{key} = \"{value}\"") } else { format!("{key} = {value}") };
            let (_, text) = replaced(at, &written);
            if let Err(error) = Config::parse(&text, None) {
                prop_assert!(!error.to_string().contains(&value), "{error}");
            }
        }
    }
}
