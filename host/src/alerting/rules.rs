//! Rules ready to evaluate: the nine defaults, the config's `[[rule]]` tables over them, and the rules created
//! through the API, each checked against its plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::alerting::alert::SEVERITIES;
use crate::alerting::api_rules::{MAX_HOLD, NAME_RULE, Rule, valid_rule_name};
use crate::config::{AiConfig, AlertingConfig, Config, ConfigError, RuleConfig};
use crate::runtime::plugins::Plugins;
use crate::runtime::settings::{Problem, settle_config};
use crate::runtime::{CallLabels, Grants, Kind, Plugin, Redactor, Runtime, Sandbox, TlsConfig};

/// How long one evaluation of a rule may take.
pub const RULE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a rule was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// One of the nine that ship with selfmon.
    Default,
    Config,
    Api,
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub name: String,
    pub plugin: Arc<Plugin>,
    /// The plugin's config, each value JSON text, defaults filled in.
    pub config: Vec<(String, String)>,
    /// Replaces the severity the plugin gives.
    pub severity: Option<String>,
    pub hold: Duration,
    /// Channel names, as the rule wrote them (a kind's name stands for every channel of that kind).
    pub channels: Vec<String>,
    pub escalation: Option<String>,
    /// Annotations the rule adds to its alerts (`description` among them when the rule has one), templates not yet
    /// filled in.
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub enabled: bool,
    pub origin: Origin,
    pub sandbox: Sandbox,
}

/// The eight rules of the original platform, and `storage_full`. Each is replaced by a `[[rule]]` of the same name (`enabled = false`
/// turns one off).
pub fn defaults(ai: &AiConfig) -> Vec<RuleConfig> {
    let expression = |name: &str, condition: String, severity: &str, hold: u64, description: &str| RuleConfig {
        name: name.into(),
        plugin: "expression".into(),
        condition: Some(condition),
        threshold: None,
        severity: Some(severity.into()),
        hold: Some(Duration::from_secs(hold)),
        channels: None,
        escalation: None,
        description: Some(description.into()),
        annotations: BTreeMap::new(),
        labels: BTreeMap::new(),
        enabled: true,
        config: toml::Table::new(),
    };
    let health = |name: &str, plugins: &[&str], status: &str, severity: &str, description: &str| {
        let mut config = toml::Table::new();
        config.insert("plugins".into(), toml::Value::Array(plugins.iter().map(|p| toml::Value::from(*p)).collect()));
        config.insert("status".into(), status.into());
        RuleConfig {
            plugin: "health".into(),
            condition: None,
            config,
            ..expression(name, String::new(), severity, 0, description)
        }
    };
    let mut costs = expression(
        "high_ai_costs",
        format!("increase(ai_cost_dollars_total[1d]) > {}", ai.daily_budget),
        "high",
        0,
        "AI spend over the last 24 hours, every model and provider together, is above `[ai] daily_budget`",
    );
    costs.config.insert("series".into(), "all".into());
    vec![
        expression(
            "high_error_rate",
            "rate(log_errors_total[1m]) * 60 > 10".into(),
            "high",
            60,
            "More than 10 error or critical log records a minute",
        ),
        expression(
            "slow_responses",
            "avg(check_duration_seconds[5m]) > 5".into(),
            "medium",
            0,
            "A check's responses took more than 5 seconds on average over 5 minutes",
        ),
        health("service_down", &[], "unhealthy", "critical", "A configured service is down"),
        expression(
            "memory_usage",
            "last(system_memory_used_ratio) > 0.9".into(),
            "high",
            300,
            "More than 90% of this machine's memory is in use",
        ),
        health(
            "database_issues",
            &["postgres"],
            "degraded",
            "high",
            "PostgreSQL is failing or slow (connections refused, slow queries)",
        ),
        health(
            "ai_api_issues",
            &["openai", "anthropic"],
            "degraded",
            "high",
            "OpenAI or Claude is rate limiting or failing",
        ),
        expression(
            "user_satisfaction",
            "avg(user_satisfaction_rating[1h]) < 3".into(),
            "medium",
            0,
            "Users rated their sessions below 3.0 of 5 on average over the last hour",
        ),
        costs,
        expression(
            "storage_full",
            format!("max({}[1m]) > 0", super::data::STORAGE_FULL),
            "critical",
            0,
            "selfmon's store is full (the disk, or `[storage] size_limit`): logs, spans, events and check runs are not \
             being stored",
        ),
    ]
}

/// The rules of a config: the defaults (unless `[alerting] default_rules = false`) with `[[rule]]` tables over
/// them. Every problem with every rule is reported.
pub async fn build(
    config: &Config,
    plugins: &Plugins,
    runtime: &Runtime,
    channels: &[String],
) -> Result<Vec<RuleSpec>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    let mut seen = BTreeSet::new();
    let escalations: Vec<&str> = config.escalations.iter().map(|e| e.get_ref().name.as_str()).collect();
    for spanned in &config.rules {
        let rule = spanned.get_ref();
        let line = config.source.line_at(spanned.span().start);
        let error = |message: String| {
            ConfigError::new(
                config.source.name_at(spanned.span().start),
                line,
                format!("invalid rule `{}`: {message}", rule.name),
            )
        };
        if !seen.insert(rule.name.clone()) {
            errors.push(error("the name is used by another rule".into()));
            continue;
        }
        match build_one(rule, Origin::Config, &config.alerting, plugins, runtime, channels, &escalations, config).await
        {
            Ok(spec) => rules.push(spec),
            Err(problems) => errors.extend(problems.into_iter().map(error)),
        }
    }
    if config.alerting.default_rules {
        for rule in defaults(&config.ai).iter().filter(|r| !seen.contains(&r.name)) {
            match build_one(rule, Origin::Default, &config.alerting, plugins, runtime, channels, &escalations, config)
                .await
            {
                Ok(spec) => rules.push(spec),
                Err(problems) => errors.extend(problems.into_iter().map(|message| {
                    ConfigError::new(config.source.name(), None, format!("default rule `{}`: {message}", rule.name))
                })),
            }
        }
    }
    if errors.is_empty() { Ok(rules) } else { Err(errors) }
}

#[allow(clippy::too_many_arguments)]
async fn build_one(
    rule: &RuleConfig,
    origin: Origin,
    alerting: &AlertingConfig,
    plugins: &Plugins,
    runtime: &Runtime,
    channels: &[String],
    escalations: &[&str],
    config: &Config,
) -> Result<RuleSpec, Vec<String>> {
    let mut problems = Vec::new();
    if !valid_rule_name(&rule.name) {
        problems.push(format!("the name must be {NAME_RULE}"));
    }
    if let Some(severity) = &rule.severity
        && !SEVERITIES.contains(&severity.as_str())
    {
        problems.push(format!("`severity` must be one of {}, not `{severity}`", SEVERITIES.join(", ")));
    }
    let hold = rule.hold.unwrap_or_default();
    if hold > MAX_HOLD {
        problems.push("`for` must be at most 7 days".into());
    }
    let wanted = rule.channels.clone().unwrap_or_else(|| alerting.default_channels.clone());
    for channel in &wanted {
        if !channels.contains(channel) {
            problems.push(format!("`channels`: no channel `{channel}` (there are: {})", channels.join(", ")));
        }
    }
    if let Some(escalation) = &rule.escalation
        && !escalations.contains(&escalation.as_str())
    {
        problems.push(format!("`escalation`: no `[[escalation]]` named `{escalation}`"));
    }
    problems.extend(annotation_problems(rule));
    let plugin = match plugins.get(&rule.plugin) {
        Some(plugin) if plugin.kind() == Kind::Rule => Some(plugin.clone()),
        _ => {
            let rules: Vec<&str> =
                plugins.iter().filter(|p| p.kind() == Kind::Rule).map(|p| p.info.name.as_str()).collect();
            problems.push(format!("`plugin`: `{}` is not a rule plugin (rules: {})", rule.plugin, rules.join(", ")));
            None
        }
    };
    let mut table = rule.config.clone();
    for (key, value) in [
        ("condition", rule.condition.clone().map(toml::Value::from)),
        ("threshold", rule.threshold.map(toml::Value::from)),
    ] {
        if let Some(value) = value {
            if rule.plugin != "expression" {
                problems
                    .push(format!("`{key}` is for the `expression` plugin; put this plugin's settings in `config`"));
            }
            table.insert(key.into(), value);
        }
    }
    let Some(plugin) = plugin else { return Err(problems) };
    let settled = settle_config(&plugin.info.config, &table, None)
        .map_err(|p| p.into_iter().map(|Problem { message, .. }| message).collect::<Vec<_>>());
    let values = match settled {
        Ok(values) => values,
        Err(more) => {
            problems.extend(more);
            return Err(problems);
        }
    };
    let memory_limit = usize::try_from(config.plugins.memory_limit.as_u64()).unwrap_or(usize::MAX);
    let sandbox = sandbox(&plugin, &rule.name, memory_limit);
    match runtime.validate_rule(&plugin, &sandbox, &values).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => problems.push(reason),
        Err(failure) => problems.push(format!("plugin `{}` failed to validate it: {failure}", plugin.info.name)),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RuleSpec {
        name: rule.name.clone(),
        plugin,
        config: values,
        severity: rule.severity.clone(),
        hold,
        channels: wanted,
        escalation: rule.escalation.clone(),
        annotations: annotations(rule),
        labels: rule.labels.clone(),
        enabled: rule.enabled,
        origin,
        sandbox,
    })
}

/// A rule created through the API: an expression rule. It was validated when it was created; without channels of its
/// own it has `[alerting] default_channels`.
pub fn from_api(rule: &Rule, expression: &Arc<Plugin>, alerting: &AlertingConfig, memory_limit: usize) -> RuleSpec {
    let mut config = vec![("condition".to_string(), serde_json::Value::from(rule.condition.clone()).to_string())];
    if let Some(threshold) = rule.threshold {
        config.push(("threshold".into(), serde_json::Value::from(threshold).to_string()));
    }
    RuleSpec {
        name: rule.name.clone(),
        plugin: expression.clone(),
        config,
        severity: Some(rule.severity.clone()),
        hold: Duration::from_secs_f64(rule.hold_seconds),
        channels: if rule.notification_channels.is_empty() {
            alerting.default_channels.clone()
        } else {
            rule.notification_channels.clone()
        },
        escalation: None,
        annotations: [("description".to_string(), rule.description.clone())]
            .into_iter()
            .filter(|(_, d)| !d.is_empty())
            .collect(),
        labels: BTreeMap::new(),
        enabled: true,
        origin: Origin::Api,
        sandbox: sandbox(expression, &rule.name, memory_limit),
    }
}

/// A rule's calls reach no network and no secrets; the queries are added per evaluation.
pub fn sandbox(plugin: &Plugin, rule: &str, memory_limit: usize) -> Sandbox {
    Sandbox {
        labels: CallLabels { plugin: Arc::from(plugin.info.name.as_str()), check: Some(Arc::from(rule)) },
        grants: Arc::new(Grants::default()),
        redactor: Redactor::default(),
        tls: TlsConfig::system(),
        memory_limit,
        timeout: RULE_TIMEOUT,
        data: None,
    }
}

/// Annotations a rule may have: how many, their names, their size.
const MAX_ANNOTATIONS: usize = 16;
const ANNOTATION_BYTES: usize = 4096;

/// What is wrong with a rule's `annotations`.
fn annotation_problems(rule: &RuleConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if rule.annotations.len() > MAX_ANNOTATIONS {
        problems.push(format!("`annotations`: at most {MAX_ANNOTATIONS}"));
    }
    if rule.description.is_some() && rule.annotations.contains_key("description") {
        problems.push("`description` and `annotations.description` both set: keep one".into());
    }
    for (name, value) in &rule.annotations {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(format!("`annotations`: `{name}` is not a name (letters, digits and `_`)"));
        }
        if value.len() > ANNOTATION_BYTES {
            problems.push(format!("`annotations.{name}` is longer than {ANNOTATION_BYTES} bytes"));
        }
    }
    problems
}

/// The annotations a rule gives its alerts: its `annotations`, and its `description` as one.
fn annotations(rule: &RuleConfig) -> BTreeMap<String, String> {
    let mut annotations = rule.annotations.clone();
    if let Some(description) = rule.description.as_ref().filter(|d| !d.is_empty()) {
        annotations.insert("description".into(), description.clone());
    }
    annotations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> RuleConfig {
        toml::from_str(&format!("name = \"r\"\n{text}")).unwrap()
    }

    #[test]
    fn annotations_are_checked_and_the_description_is_one_of_them() {
        let good =
            rule("description = \"down\"\n[annotations]\nrunbook_url = \"https://r.example/{{ $labels.check }}\"\n");
        assert!(annotation_problems(&good).is_empty());
        assert_eq!(
            annotations(&good),
            BTreeMap::from([
                ("description".to_string(), "down".to_string()),
                ("runbook_url".to_string(), "https://r.example/{{ $labels.check }}".to_string()),
            ])
        );
        let twice = rule("description = \"a\"\n[annotations]\ndescription = \"b\"\n");
        assert_eq!(annotation_problems(&twice), ["`description` and `annotations.description` both set: keep one"]);
        let named = rule("[annotations]\n\"runbook url\" = \"x\"\n");
        assert!(annotation_problems(&named)[0].contains("`runbook url` is not a name"));
        let long = rule(&format!("[annotations]\nsummary = \"{}\"\n", "x".repeat(ANNOTATION_BYTES + 1)));
        assert!(annotation_problems(&long)[0].contains("longer than 4096 bytes"));
    }
}
