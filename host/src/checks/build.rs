//! Building checks from the operator's config: every problem is reported at once, with the file, the line of the
//! key at fault, and the check's name. The plugin's own `validate` runs last, with no network, so a check that
//! reaches the scheduler has a config its plugin accepts.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::Check;
use crate::checks::recovery::Policy;
use crate::checks::recovery::action::Action;
use crate::config::{CheckConfig, Config, ConfigError, Env, RecoveryConfig, Secret, SecretRef};
use crate::runtime::plugins::Plugins;
use crate::runtime::settings::{Problem, settle_config, unknown_key};
use crate::runtime::{CallLabels, Grants, Kind, PluginSource, Redactor, Runtime, Sandbox, Setting, TlsConfig};

/// The longest interval and timeout a check may have; beyond them a typo is likelier than intent.
const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

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
        let span = spanned.span();
        let error = |problem: Problem| {
            let line = line_of(config, &span, problem.key.as_deref());
            ConfigError::new(
                config.source.name_at(span.start),
                line,
                format!("invalid check `{}`: {}", check.name, problem.message),
            )
        };
        if !seen.insert(check.name.as_str()) {
            errors.push(error(Problem::at("name", "the name is used by another check")));
            continue;
        }
        let built = match build_one(config, check, &names, plugins, env) {
            Ok(built) => built,
            Err(problems) => {
                errors.extend(problems.into_iter().map(error));
                continue;
            }
        };
        // `validate` must contact nothing: it runs without the check's grants.
        let offline = Sandbox { grants: Arc::new(Grants::default()), ..built.sandbox.clone() };
        match runtime.validate(&built.plugin, &offline, &built.request()).await {
            Ok(Ok(())) => checks.push(built),
            Ok(Err(reason)) => errors.push(error(plugin_problem(built.sandbox.redactor.apply(&reason).into_owned()))),
            Err(failure) => errors
                .push(error(Problem::general(format!("plugin `{}` failed to validate it: {failure}", check.plugin)))),
        }
    }
    if let Err(cycle) = dependency_order(config) {
        errors.push(ConfigError::new(config.source.name(), None, cycle));
    }
    if errors.is_empty() { Ok(checks) } else { Err(errors) }
}

/// A plugin's reason for refusing a config, at the key it starts with when it names one (`` `expect` is empty ``, or
/// the SDK's own `` invalid config key `expect`: ... ``), so that the error points at that key's line.
fn plugin_problem(reason: String) -> Problem {
    let key = reason
        .strip_prefix("invalid config key ")
        .unwrap_or(&reason)
        .strip_prefix('`')
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_string())
        .filter(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    match key {
        Some(key) => Problem::at(&key, reason),
        None => Problem::general(reason),
    }
}

/// The names of the loaded checkers.
fn checkers(plugins: &Plugins) -> Vec<&str> {
    plugins.iter().filter(|p| p.kind() == Kind::Checker).map(|p| p.info.name.as_str()).collect()
}

/// The line of `key` inside a check's table, else the table's own line; none without a file.
fn line_of(config: &Config, span: &Range<usize>, key: Option<&str>) -> Option<usize> {
    config.source.line_at(span.start)?;
    let in_table = key.and_then(|key| config.source.line_of_key(span.clone(), key));
    Some(in_table.unwrap_or_else(|| config.source.line_of(span.start)))
}

/// Check names with every dependency before its dependents, or the cycle that prevents it.
pub fn dependency_order(config: &Config) -> Result<Vec<String>, String> {
    let checks: Vec<&CheckConfig> = config.checks.iter().map(|c| c.get_ref()).collect();
    let mut order: Vec<String> = Vec::new();
    let mut visiting: Vec<&str> = Vec::new();
    fn visit<'a>(
        name: &'a str,
        checks: &[&'a CheckConfig],
        visiting: &mut Vec<&'a str>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        if order.iter().any(|n| n == name) {
            return Ok(());
        }
        if let Some(start) = visiting.iter().position(|n| *n == name) {
            let cycle: Vec<&str> = visiting[start..].iter().copied().chain([name]).collect();
            return Err(format!("`depends_on` forms a cycle: {}", cycle.join(" -> ")));
        }
        visiting.push(name);
        if let Some(check) = checks.iter().find(|c| c.name == name) {
            for dependency in &check.depends_on {
                visit(dependency, checks, visiting, order)?;
            }
        }
        visiting.pop();
        order.push(name.to_string());
        Ok(())
    }
    for check in &checks {
        visit(&check.name, &checks, &mut visiting, &mut order)?;
    }
    Ok(order)
}

fn build_one(
    config: &Config,
    check: &CheckConfig,
    names: &BTreeSet<&str>,
    plugins: &Plugins,
    env: &Env,
) -> Result<Check, Vec<Problem>> {
    let mut problems = Vec::new();
    if check.name.is_empty() || !check.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        problems.push(Problem::at("name", "the name must be letters, digits, `-`, `_` and `.`"));
    }
    let interval = check.interval.unwrap_or(config.scheduler.default_interval);
    let timeout = check.timeout.unwrap_or(config.scheduler.default_timeout.min(interval));
    if !(Duration::from_secs(1)..=MAX_INTERVAL).contains(&interval) {
        problems.push(Problem::at(
            "interval",
            format!("`interval` of {} is not between 1s and 7days", humantime::format_duration(interval)),
        ));
    }
    if timeout.is_zero() || timeout > interval || timeout > MAX_TIMEOUT {
        problems.push(Problem::at(
            "timeout",
            format!(
                "`timeout` of {} must be above zero, at most 1h, and no longer than the interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
    let memory_limit = check.memory_limit.unwrap_or(config.plugins.memory_limit);
    if memory_limit > config.plugins.max_memory_limit {
        problems.push(Problem::at(
            "memory_limit",
            format!(
                "`memory_limit` of {memory_limit} is over `[plugins] max_memory_limit` ({})",
                config.plugins.max_memory_limit
            ),
        ));
    }
    for dependency in &check.depends_on {
        if dependency == &check.name {
            problems.push(Problem::at("depends_on", "it depends on itself"));
        } else if !names.contains(dependency.as_str()) {
            problems.push(Problem::at(
                "depends_on",
                format!("`depends_on` names `{dependency}`, which is not a configured check"),
            ));
        }
    }
    let Some(plugin) = plugins.get(&check.plugin) else {
        let refused = plugins
            .refused()
            .iter()
            .map(|r| format!("; refused: {} ({})", r.file.display(), r.reason))
            .collect::<String>();
        problems.push(Problem::at(
            "plugin",
            format!("unknown plugin `{}` (checkers: {}{refused})", check.plugin, checkers(plugins).join(", ")),
        ));
        return Err(problems);
    };
    if plugin.kind() != Kind::Checker {
        let checkers = checkers(plugins);
        problems.push(Problem::at(
            "plugin",
            format!(
                "`{}` is a {} plugin; a check needs a checker ({})",
                check.plugin,
                plugin.kind().as_str(),
                checkers.join(", ")
            ),
        ));
        return Err(problems);
    }
    // Environment defaults come from the plugin's own declarations, so only plugins shipped with selfmon may use
    // them: a dropped-in plugin must not pick which of the host's variables (or which hosts) it gets.
    let defaults_from_env = matches!(plugin.source, PluginSource::Builtin(_)).then_some(env);
    let target = match (&check.target, &plugin.info.default_target, defaults_from_env) {
        (Some(target), _, _) => Some(target.clone()),
        (None, Some(template), Some(env)) => {
            expand(template, env).map_err(|e| problems.push(Problem::at("target", e))).ok()
        }
        _ => None,
    };
    let tls = match &check.ca_file {
        None => Some(TlsConfig::system()),
        Some(path) => {
            let path = config.source.resolve(path);
            std::fs::read(&path)
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|pem| TlsConfig::new(Some(&pem)))
                .map_err(|e| problems.push(Problem::at("ca_file", format!("`ca_file` {} {e}", path.display()))))
                .ok()
        }
    };
    let grants = Grants::for_check(target.as_deref(), &check.allow)
        .map_err(|e| problems.push(Problem::at(if e.starts_with("`allow`") { "allow" } else { "target" }, e)))
        .ok();
    let config_values =
        settle_config(&plugin.info.config, &check.config, defaults_from_env).map_err(|e| problems.extend(e)).ok();
    let secrets = settle_secrets(
        &plugin.info.secrets,
        check,
        &SecretSources { env, base: &config.source.base_dir },
        defaults_from_env.is_some(),
    )
    .map_err(|e| problems.extend(e))
    .ok();
    let sources = SecretSources { env, base: &config.source.base_dir };
    let check_secrets: Vec<String> = secrets.iter().flatten().map(|(_, s)| s.expose().to_string()).collect();
    let recovery = match &check.recovery {
        Some(recovery) => recovery_policy(recovery, &sources, &check_secrets)
            .map(Some)
            .map_err(|e| problems.push(Problem::at("recovery", e)))
            .unwrap_or(None),
        None => None,
    };
    match (grants, config_values, secrets, tls) {
        (Some(grants), Some(config_values), Some(secrets), Some(tls)) if problems.is_empty() => Ok(Check {
            name: check.name.clone(),
            plugin: plugin.clone(),
            interval,
            timeout,
            target,
            depends_on: check.depends_on.clone(),
            enabled: check.enabled,
            recovery,
            sandbox: Sandbox {
                labels: CallLabels {
                    plugin: Arc::from(plugin.info.name.as_str()),
                    check: Some(Arc::from(check.name.as_str())),
                },
                grants: Arc::new(grants),
                redactor: Redactor::new(check_secrets),
                tls,
                memory_limit: usize::try_from(memory_limit.as_u64()).unwrap_or(usize::MAX),
                timeout,
                data: None,
            },
            config: config_values,
            secrets,
        }),
        _ => Err(problems),
    }
}

/// The longest back-off between recovery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// A recovery policy from `[check.recovery]`; `redactor` already holds the check's secrets.
fn recovery_policy(
    config: &RecoveryConfig,
    sources: &SecretSources<'_>,
    check_secrets: &[String],
) -> Result<Policy, String> {
    let resolve = |table: &std::collections::BTreeMap<String, SecretRef>, what: &str| {
        table
            .iter()
            .map(|(name, reference)| {
                reference
                    .resolve(sources.env, sources.base)
                    .map(|secret| (name.clone(), secret))
                    .map_err(|e| format!("`{what}.{name}` {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let action = match (&config.command, &config.http) {
        (Some(argv), None) if argv.first().is_some_and(|p| !p.is_empty()) => {
            Action::Command { argv: argv.clone(), env: resolve(&config.env, "recovery.env")? }
        }
        (Some(_), None) => return Err("`recovery.command` names no program".into()),
        (None, Some(request)) => {
            let url: http::Uri = request.url.parse().map_err(|e| format!("`recovery.http.url` is not a URL: {e}"))?;
            if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
                return Err("`recovery.http.url` must be an http:// or https:// URL".into());
            }
            if url.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Err(
                    "`recovery.http.url` must not carry credentials: put them in `recovery.http.headers`".into()
                );
            }
            let method = request
                .method
                .to_ascii_uppercase()
                .parse()
                .map_err(|_| format!("`recovery.http.method` `{}` is not an HTTP method", request.method))?;
            Action::Http {
                method,
                url: request.url.clone(),
                headers: resolve(&request.headers, "recovery.http.headers")?,
            }
        }
        _ => return Err("`recovery` needs exactly one of `command` and `http`".into()),
    };
    if config.after == 0 || config.max_attempts == 0 {
        return Err("`recovery.after` and `recovery.max_attempts` must be at least 1".into());
    }
    if config.timeout.is_zero() || config.timeout > MAX_TIMEOUT {
        return Err("`recovery.timeout` must be above zero and at most 1h".into());
    }
    if config.backoff > MAX_BACKOFF || config.max_backoff > MAX_BACKOFF {
        return Err("`recovery.backoff` and `recovery.max_backoff` must be at most 1day".into());
    }
    let action_secrets = match &action {
        Action::Command { env, .. } => env,
        Action::Http { headers, .. } => headers,
    };
    let redactor = Redactor::new(
        check_secrets.iter().cloned().chain(action_secrets.iter().map(|(_, secret)| secret.expose().to_string())),
    );
    Ok(Policy {
        action,
        after: config.after,
        max_attempts: config.max_attempts,
        timeout: config.timeout,
        backoff: config.backoff,
        max_backoff: config.max_backoff.max(config.backoff),
        redactor,
    })
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

/// Where `env:` and `file:` secret references are looked up.
struct SecretSources<'a> {
    env: &'a Env,
    /// `file:` paths are relative to the config file's directory.
    base: &'a std::path::Path,
}

/// `defaults_from_env` says whether declared `env` defaults apply.
fn settle_secrets(
    declared: &[Setting],
    check: &CheckConfig,
    sources: &SecretSources<'_>,
    defaults_from_env: bool,
) -> Result<Vec<(String, Secret)>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut secrets = Vec::new();
    for (key, reference) in &check.secrets {
        if !declared.iter().any(|s| &s.name == key) {
            problems.push(unknown_key("secret", key, declared));
            continue;
        }
        match reference.resolve(sources.env, sources.base) {
            Ok(secret) => secrets.push((key.clone(), secret)),
            Err(reason) => problems.push(Problem::at(key, format!("secret `{key}` {reason}"))),
        }
    }
    for setting in declared.iter().filter(|s| !check.secrets.contains_key(&s.name)) {
        let from_env = setting.env.as_deref().filter(|_| defaults_from_env).and_then(sources.env);
        match from_env {
            Some(value) => secrets.push((setting.name.clone(), Secret::new(value))),
            None if setting.required => problems
                .push(Problem::general(format!("secret `{}` is required: {}", setting.name, setting.description))),
            None => {}
        }
    }
    if problems.is_empty() { Ok(secrets) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ValueKind;
    use crate::runtime::settings::tests::{messages, setting};

    fn sources(env: &Env) -> SecretSources<'_> {
        SecretSources { env, base: std::path::Path::new("/etc/selfmon") }
    }

    #[test]
    fn a_plugin_reason_that_names_a_key_is_placed_at_it() {
        let key = |reason: &str| plugin_problem(reason.to_string()).key;
        assert_eq!(key("`expect` is empty").as_deref(), Some("expect"));
        assert_eq!(key("invalid config key `days`: expected a number").as_deref(), Some("days"));
        assert_eq!(key("invalid config key `a.b`: nested"), None);
        assert_eq!(key("the target is not host:port"), None);
    }

    #[test]
    fn secrets_must_be_declared_and_resolvable() {
        let declared = [setting("token", ValueKind::Text, None, false)];
        let check: CheckConfig = toml::from_str(
            "name = \"c\"\nplugin = \"p\"\n[secrets]\ntoken = \"env:API_TOKEN\"\npassword = \"hunter2\"",
        )
        .unwrap();
        let env = |name: &str| (name == "API_TOKEN").then(|| "abc".to_string());
        let problems = messages(settle_secrets(&declared, &check, &sources(&env), false).unwrap_err());
        assert_eq!(problems, ["unknown secret `password` (accepted: token)"]);
        assert!(!problems.concat().contains("hunter2"));

        let problems = messages(settle_secrets(&declared, &check, &sources(&|_| None), false).unwrap_err());
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
        let problems = messages(settle_config(&[port], &toml::Table::new(), Some(&bad)).unwrap_err());
        assert_eq!(problems, ["config key `port` from environment variable DB_PORT must be a whole number"]);

        let mut password = setting("password", ValueKind::Text, None, false);
        password.env = Some("DB_PASSWORD".into());
        let check: CheckConfig = toml::from_str("name = \"db\"\nplugin = \"postgres\"").unwrap();
        let env = |name: &str| (name == "DB_PASSWORD").then(|| "pw".to_string());
        let secrets = settle_secrets(std::slice::from_ref(&password), &check, &sources(&env), true).unwrap();
        assert_eq!(secrets[0].1.expose(), "pw");
        assert!(settle_secrets(&[password], &check, &sources(&env), false).unwrap().is_empty());
    }

    #[test]
    fn dependency_cycles_are_named() {
        let config = Config::parse(
            "[[check]]\nname = \"a\"\nplugin = \"http\"\ndepends_on = [\"b\"]\n\
             [[check]]\nname = \"b\"\nplugin = \"http\"\ndepends_on = [\"c\"]\n\
             [[check]]\nname = \"c\"\nplugin = \"http\"\ndepends_on = [\"a\"]\n\
             [[check]]\nname = \"d\"\nplugin = \"http\"\n",
            None,
        )
        .unwrap();
        assert_eq!(dependency_order(&config).unwrap_err(), "`depends_on` forms a cycle: a -> b -> c -> a");
        let config = Config::parse(
            "[[check]]\nname = \"bot\"\nplugin = \"http\"\ndepends_on = [\"db\", \"ai\"]\n\
             [[check]]\nname = \"ai\"\nplugin = \"http\"\n[[check]]\nname = \"db\"\nplugin = \"http\"\n",
            None,
        )
        .unwrap();
        assert_eq!(dependency_order(&config).unwrap(), ["db", "ai", "bot"]);
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
}
