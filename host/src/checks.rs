//! Configured checks: built from the operator's `[[check]]` tables against what each plugin declares, and run.
//!
//! Building is all-or-nothing and reports every problem at once, each with the file, the line and the check's name.
//! The plugin's own `validate` runs last, so a check that reaches the scheduler has a config its plugin accepts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::config::{CheckConfig, Config, ConfigError, Secret};
use crate::health::{CheckRun, Health, MetricValue};
use crate::plugins::Plugins;
use crate::runtime::{
    CallLabels, CheckRequest, Grants, Plugin, PluginSource, Runtime, Sandbox, Setting, Status, ValueKind,
};

/// Looks up an environment variable (the process environment, or a stand-in in tests).
pub type Env = dyn Fn(&str) -> Option<String> + Sync;

/// A check ready to run.
#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub plugin: Arc<Plugin>,
    pub interval: Duration,
    pub timeout: Duration,
    pub target: Option<String>,
    pub depends_on: Vec<String>,
    pub enabled: bool,
    pub sandbox: Sandbox,
    /// Every declared key with a value (the operator's or the default), as JSON text.
    config: Vec<(String, String)>,
    secrets: Vec<(String, Secret)>,
}

impl Check {
    /// The request handed to the plugin. This is the one place secrets leave their wrapper.
    pub fn request(&self) -> CheckRequest {
        CheckRequest {
            name: self.name.clone(),
            target: self.target.clone(),
            config: self.config.clone(),
            secrets: self.secrets.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// Run the check once. Never fails: a run that cannot be carried out is an unknown result saying why.
    pub async fn run(&self, runtime: &Runtime) -> CheckRun {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let outcome = runtime.check(&self.plugin, &self.sandbox, &self.request()).await;
        let duration = clock.elapsed();
        let mut run = CheckRun {
            check: self.name.clone(),
            plugin: self.plugin.info.name.clone(),
            started_at,
            duration,
            health: Health::Unknown,
            summary: String::new(),
            details: Vec::new(),
            metrics: Vec::new(),
            error: None,
        };
        match outcome {
            Ok(Ok(result)) => {
                run.health = match result.status {
                    Status::Healthy => Health::Healthy,
                    Status::Degraded => Health::Degraded,
                    Status::Unhealthy => Health::Unhealthy,
                };
                run.summary = crate::runtime::truncate(&result.summary, 1024).to_string();
                run.details = result.details;
                run.metrics = result
                    .metrics
                    .into_iter()
                    .filter(|m| valid_metric_name(&m.name) && m.value.is_finite())
                    .map(|m| MetricValue { name: m.name, value: m.value, labels: m.labels })
                    .collect();
            }
            Ok(Err(message)) => {
                run.summary = format!("check failed: {message}");
                run.error = Some(message);
            }
            Err(error) => {
                run.summary = error.to_string();
                run.error = Some(error.to_string());
            }
        }
        if run.error.is_some() {
            tracing::warn!(check = %run.check, plugin = %run.plugin, error = run.error.as_deref(), "Check run failed");
        }
        run
    }
}

/// Prometheus' metric name rule; anything else is dropped rather than stored.
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Build every configured check, or say everything that is wrong.
pub async fn build(
    config: &Config,
    plugins: &Plugins,
    runtime: &Runtime,
    env: &Env,
) -> Result<Vec<Check>, Vec<ConfigError>> {
    let mut checks = Vec::new();
    let mut errors = Vec::new();
    let names: BTreeSet<&str> = config.checks.iter().map(|c| c.get_ref().name.as_str()).collect();
    let mut seen = BTreeSet::new();
    for spanned in &config.checks {
        let check = spanned.get_ref();
        let line = config.source.file.as_ref().map(|_| config.source.line_of(spanned.span().start));
        let error = |reason: String| {
            ConfigError::new(config.source.name(), line, format!("invalid check `{}`: {reason}", check.name))
        };
        if !seen.insert(check.name.as_str()) {
            errors.push(error("the name is used by another check".into()));
            continue;
        }
        let built = match build_one(config, check, &names, plugins, env) {
            Ok(built) => built,
            Err(reasons) => {
                errors.extend(reasons.into_iter().map(error));
                continue;
            }
        };
        match runtime.validate(&built.plugin, &built.sandbox, &built.request()).await {
            Ok(Ok(())) => checks.push(built),
            Ok(Err(reason)) => errors.push(error(reason)),
            Err(failure) => errors.push(error(format!("plugin `{}` failed to validate it: {failure}", check.plugin))),
        }
    }
    if errors.is_empty() { Ok(checks) } else { Err(errors) }
}

fn build_one(
    config: &Config,
    check: &CheckConfig,
    names: &BTreeSet<&str>,
    plugins: &Plugins,
    env: &Env,
) -> Result<Check, Vec<String>> {
    let mut problems = Vec::new();
    if check.name.is_empty() || !check.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        problems.push("the name must be letters, digits, `-`, `_` and `.`".to_string());
    }
    let interval = check.interval.unwrap_or(config.scheduler.default_interval);
    let timeout = check.timeout.unwrap_or(config.scheduler.default_timeout.min(interval));
    if interval < Duration::from_secs(1) {
        problems.push(format!("`interval` of {} is below the minimum of 1s", humantime::format_duration(interval)));
    }
    if timeout.is_zero() || timeout > interval {
        problems.push(format!(
            "`timeout` of {} must be above zero and no longer than the interval ({})",
            humantime::format_duration(timeout),
            humantime::format_duration(interval)
        ));
    }
    let memory_limit = check.memory_limit.unwrap_or(config.plugins.memory_limit);
    if memory_limit > config.plugins.max_memory_limit {
        problems.push(format!(
            "`memory_limit` of {memory_limit} is over `[plugins] max_memory_limit` ({})",
            config.plugins.max_memory_limit
        ));
    }
    for dependency in &check.depends_on {
        if dependency == &check.name {
            problems.push("it depends on itself".into());
        } else if !names.contains(dependency.as_str()) {
            problems.push(format!("`depends_on` names `{dependency}`, which is not a configured check"));
        }
    }
    let Some(plugin) = plugins.get(&check.plugin) else {
        let refused = plugins
            .refused()
            .iter()
            .map(|r| format!("; refused: {} ({})", r.file.display(), r.reason))
            .collect::<String>();
        problems.push(format!("unknown plugin `{}` (loaded: {}{refused})", check.plugin, plugins.names().join(", ")));
        return Err(problems);
    };
    // Environment defaults come from the plugin's own declarations, so only plugins shipped with selfmon may use
    // them: a dropped-in plugin must not pick which of the host's variables (or which hosts) it gets.
    let defaults_from_env = matches!(plugin.source, PluginSource::Builtin(_)).then_some(env);
    let target = match (&check.target, &plugin.info.default_target, defaults_from_env) {
        (Some(target), _, _) => Some(target.clone()),
        (None, Some(template), Some(env)) => expand(template, env).map_err(|e| problems.push(e)).ok(),
        _ => None,
    };
    let grants = Grants::for_check(target.as_deref(), &check.allow).map_err(|e| problems.push(e)).ok();
    let config_values =
        settle_config(&plugin.info.config, &check.config, defaults_from_env).map_err(|e| problems.extend(e)).ok();
    let secrets = settle_secrets(&plugin.info.secrets, check, env, defaults_from_env.is_some())
        .map_err(|e| problems.extend(e))
        .ok();
    match (grants, config_values, secrets) {
        (Some(grants), Some(config_values), Some(secrets)) if problems.is_empty() => Ok(Check {
            name: check.name.clone(),
            plugin: plugin.clone(),
            interval,
            timeout,
            target,
            depends_on: check.depends_on.clone(),
            enabled: check.enabled,
            sandbox: Sandbox {
                labels: CallLabels {
                    plugin: Arc::from(plugin.info.name.as_str()),
                    check: Some(Arc::from(check.name.as_str())),
                },
                grants: Arc::new(grants),
                memory_limit: usize::try_from(memory_limit.as_u64()).unwrap_or(usize::MAX),
                timeout,
            },
            config: config_values,
            secrets,
        }),
        _ => Err(problems),
    }
}

/// A default target with `${VAR}` and `${VAR:-fallback}` taken from the environment.
fn expand(template: &str, env: &Env) -> Result<String, String> {
    shellexpand::env_with_context(template, |name| env(name).map(Some).ok_or("not set"))
        .map(|expanded| expanded.into_owned())
        .map_err(|e| {
            format!(
                "no `target`, and its default `{template}` needs environment variable {}, which is not set",
                e.var_name
            )
        })
}

/// The operator's config table against the declared settings: no unknown keys, every required key, the right
/// kinds, defaults (from the environment where allowed, then the declared ones) filled in.
fn settle_config(
    settings: &[Setting],
    table: &toml::Table,
    env: Option<&Env>,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut problems = Vec::new();
    for key in table.keys() {
        if !settings.iter().any(|s| &s.name == key) {
            let accepted: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
            problems.push(match accepted.is_empty() {
                true => format!("unknown config key `{key}` (the plugin takes no config)"),
                false => format!("unknown config key `{key}` (accepted: {})", accepted.join(", ")),
            });
        }
    }
    let mut values = Vec::new();
    for setting in settings {
        match table.get(&setting.name) {
            Some(value) => {
                let json = toml_to_json(value);
                if let Err(expected) = check_kind(setting.kind, &json) {
                    problems.push(format!("config key `{}` must be {expected}", setting.name));
                }
                values.push((setting.name.clone(), json.to_string()));
            }
            None => {
                let from_env = setting.env.as_deref().and_then(|var| Some((var, env?(var)?)));
                if let Some((var, text)) = from_env {
                    let json = env_value(setting.kind, &text);
                    if let Err(expected) = check_kind(setting.kind, &json) {
                        problems.push(format!(
                            "config key `{}` from environment variable {var} must be {expected}",
                            setting.name
                        ));
                    }
                    values.push((setting.name.clone(), json.to_string()));
                } else if let Some(default) = &setting.default {
                    values.push((setting.name.clone(), default.clone()));
                } else if setting.required {
                    problems.push(format!("config key `{}` is required: {}", setting.name, setting.description));
                }
            }
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(problems) }
}

/// An environment variable's text as the JSON value of a setting: numbers and booleans parsed, the rest as text.
fn env_value(kind: ValueKind, text: &str) -> Value {
    match kind {
        ValueKind::Text | ValueKind::Duration => Value::String(text.to_string()),
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
    }
}

/// `env` resolves `env:` references; `defaults_from_env` says whether declared `env` defaults apply.
fn settle_secrets(
    declared: &[Setting],
    check: &CheckConfig,
    env: &Env,
    defaults_from_env: bool,
) -> Result<Vec<(String, Secret)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut secrets = Vec::new();
    for (key, reference) in &check.secrets {
        if !declared.iter().any(|s| &s.name == key) {
            let accepted: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
            problems.push(format!("unknown secret `{key}` (accepted: {})", accepted.join(", ")));
            continue;
        }
        match reference.resolve(env) {
            Ok(secret) => secrets.push((key.clone(), secret)),
            Err(reason) => problems.push(format!("secret `{key}` {reason}")),
        }
    }
    for setting in declared.iter().filter(|s| !check.secrets.contains_key(&s.name)) {
        let from_env = setting.env.as_deref().filter(|_| defaults_from_env).and_then(env);
        match from_env {
            Some(value) => secrets.push((setting.name.clone(), Secret::new(value))),
            None if setting.required => {
                problems.push(format!("secret `{}` is required: {}", setting.name, setting.description));
            }
            None => {}
        }
    }
    if problems.is_empty() { Ok(secrets) } else { Err(problems) }
}

fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(table.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// How a value kind is called in listings.
pub fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Text => "text",
        ValueKind::Integer => "integer",
        ValueKind::Number => "number",
        ValueKind::Boolean => "boolean",
        ValueKind::Duration => "duration",
        ValueKind::List => "list",
        ValueKind::Table => "table",
        ValueKind::Any => "any",
    }
}

/// `Err` names what the value should have been.
fn check_kind(kind: ValueKind, value: &Value) -> Result<(), &'static str> {
    let ok = match kind {
        ValueKind::Text => value.is_string(),
        ValueKind::Integer => value.is_i64() || value.is_u64(),
        ValueKind::Number => value.is_number(),
        ValueKind::Boolean => value.is_boolean(),
        ValueKind::Duration => value.as_str().is_some_and(|s| humantime::parse_duration(s).is_ok()),
        ValueKind::List => value.is_array(),
        ValueKind::Table => value.is_object(),
        ValueKind::Any => true,
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        ValueKind::Text => "a string",
        ValueKind::Integer => "a whole number",
        ValueKind::Number => "a number",
        ValueKind::Boolean => "true or false",
        ValueKind::Duration => "a duration such as \"10s\" or \"250ms\"",
        ValueKind::List => "a list",
        ValueKind::Table => "a table",
        ValueKind::Any => "any value",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(name: &str, kind: ValueKind, default: Option<&str>, required: bool) -> Setting {
        Setting {
            name: name.into(),
            description: format!("the {name}"),
            kind,
            default: default.map(Into::into),
            required,
            env: None,
        }
    }

    #[test]
    fn config_gets_defaults_and_rejects_unknown_missing_and_mistyped_keys() {
        let settings = [
            setting("method", ValueKind::Text, Some("\"GET\""), false),
            setting("expect_status", ValueKind::List, Some("[200]"), false),
            setting("slow", ValueKind::Duration, None, false),
            setting("url", ValueKind::Text, None, true),
        ];
        let table: toml::Table = toml::from_str("url = \"http://x\"\nexpect_status = [200, \"3xx\"]").unwrap();
        let values = settle_config(&settings, &table, None).unwrap();
        assert_eq!(
            values,
            [
                ("method".into(), "\"GET\"".into()),
                ("expect_status".into(), "[200,\"3xx\"]".into()),
                ("url".into(), "\"http://x\"".into())
            ]
        );

        let table: toml::Table = toml::from_str("methd = \"GET\"\nslow = \"soon\"").unwrap();
        let problems = settle_config(&settings, &table, None).unwrap_err();
        assert_eq!(
            problems,
            [
                "unknown config key `methd` (accepted: method, expect_status, slow, url)",
                "config key `slow` must be a duration such as \"10s\" or \"250ms\"",
                "config key `url` is required: the url",
            ]
        );
    }

    #[test]
    fn secrets_must_be_declared_and_resolvable() {
        let declared = [setting("token", ValueKind::Text, None, false)];
        let check: CheckConfig = toml::from_str(
            "name = \"c\"\nplugin = \"p\"\n[secrets]\ntoken = \"env:API_TOKEN\"\npassword = \"hunter2\"",
        )
        .unwrap();
        let env = |name: &str| (name == "API_TOKEN").then(|| "abc".to_string());
        let problems = settle_secrets(&declared, &check, &env, false).unwrap_err();
        assert_eq!(problems, ["unknown secret `password` (accepted: token)"]);
        assert!(!problems.concat().contains("hunter2"));

        let problems = settle_secrets(&declared, &check, &|_| None, false).unwrap_err();
        assert!(
            problems
                .contains(&"secret `token` refers to environment variable `API_TOKEN`, which is not set".to_string())
        );
    }

    #[test]
    fn environment_defaults_fill_what_the_operator_left_out() {
        let mut port = setting("port", ValueKind::Integer, Some("5432"), false);
        port.env = Some("DB_PORT".into());
        let mut user = setting("user", ValueKind::Text, Some("\"postgres\""), false);
        user.env = Some("DB_USER".into());
        let env = |name: &str| match name {
            "DB_PORT" => Some("6543".to_string()),
            "DB_USER" => Some("bot".to_string()),
            _ => None,
        };
        let values = settle_config(&[port.clone(), user.clone()], &toml::Table::new(), Some(&env)).unwrap();
        assert_eq!(values, [("port".into(), "6543".into()), ("user".into(), "\"bot\"".into())]);
        let explicit: toml::Table = toml::from_str("user = \"admin\"").unwrap();
        let values = settle_config(&[user.clone()], &explicit, Some(&env)).unwrap();
        assert_eq!(values, [("user".into(), "\"admin\"".into())], "the operator's value wins");
        let values = settle_config(&[user], &toml::Table::new(), None).unwrap();
        assert_eq!(values, [("user".into(), "\"postgres\"".into())], "no environment for drop-in plugins");
        let bad = |_: &str| Some("many".to_string());
        let problems = settle_config(&[port], &toml::Table::new(), Some(&bad)).unwrap_err();
        assert_eq!(problems, ["config key `port` from environment variable DB_PORT must be a whole number"]);

        let mut password = setting("password", ValueKind::Text, None, false);
        password.env = Some("DB_PASSWORD".into());
        let check: CheckConfig = toml::from_str("name = \"db\"\nplugin = \"postgres\"").unwrap();
        let env = |name: &str| (name == "DB_PASSWORD").then(|| "pw".to_string());
        let secrets = settle_secrets(std::slice::from_ref(&password), &check, &env, true).unwrap();
        assert_eq!(secrets[0].1.expose(), "pw");
        assert!(settle_secrets(&[password], &check, &env, false).unwrap().is_empty());
    }

    #[test]
    fn default_targets_expand_from_the_environment() {
        let env = |name: &str| (name == "DB_HOST").then(|| "db.internal".to_string());
        assert_eq!(expand("${DB_HOST:-localhost}:${DB_PORT:-5432}", &env).unwrap(), "db.internal:5432");
        assert_eq!(
            expand("${QDRANT_URL}", &env).unwrap_err(),
            "no `target`, and its default `${QDRANT_URL}` needs environment variable QDRANT_URL, which is not set"
        );
    }

    #[test]
    fn metric_names_follow_prometheus() {
        assert!(valid_metric_name("response_time_seconds"));
        assert!(valid_metric_name("ns:metric_1"));
        assert!(!valid_metric_name("1st"));
        assert!(!valid_metric_name("with space"));
        assert!(!valid_metric_name(""));
    }
}
