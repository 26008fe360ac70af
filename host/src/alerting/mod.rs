//! Alerting: rules evaluated on a schedule, the alerts they raise carried through their lifecycle, held back by
//! silences and by down dependencies, escalated while nobody acknowledges them, and delivered to channels in
//! groups.
//!
//! Rules are plugins of the contract's `rule` world (the built-in `expression` and `health` ones, or dropped in);
//! everything after a rule's answer belongs to the host:
//!
//! - [`rules`]: the nine defaults, the config's `[[rule]]` tables and the API's rules, each checked against its
//!   plugin;
//! - [`lifecycle`]: pending → firing → resolved, one alert per fingerprint;
//! - [`silences`] (stored, with label matchers and an expiry) and inhibition (an alert about a check whose dependency
//!   is down is held back, naming that dependency) decide whether a firing alert is notified;
//! - escalation policies raise an unacknowledged alert's severity and add channels as time passes;
//! - [`dispatch`]: grouping and pacing; [`channels`]: payloads and delivery.
//!
//! [`Alerting`] is what the config says (rules, channels, escalation policies), checked; the
//! [`Engine`](engine::Engine) does one step at a time on the clock it is given, so tests drive it through hours in
//! milliseconds, and [`driver::spawn`] drives it on the real clock on the node that leads. Rules the API creates are [`api_rules`]; what
//! rules read is [`data`]; alerts as stored are [`alert`]; all of it is stored through [`store`].

pub mod alert;
pub mod api_rules;
pub mod channels;
pub mod data;
pub mod dispatch;
pub mod driver;
pub mod engine;
pub mod lifecycle;
pub mod rules;
pub mod silences;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::alerting::alert::SEVERITIES;
use crate::alerting::channels::{Channel, DASHBOARD};
use crate::alerting::dispatch::Pacing;
use crate::alerting::rules::RuleSpec;
use crate::config::{AlertingConfig, ChannelKind, Config, ConfigError, Env};
use crate::runtime::plugins::Plugins;
use crate::runtime::{Plugin, Runtime};

/// One step of an escalation policy.
#[derive(Debug, Clone)]
pub struct Step {
    pub after: Duration,
    pub channels: Vec<String>,
    pub severity: Option<String>,
}

/// Everything alerting needs from the config, checked.
#[derive(Debug)]
pub struct Alerting {
    pub config: AlertingConfig,
    /// The config's rules and the defaults (API rules are read from storage on every evaluation).
    pub rules: Vec<RuleSpec>,
    pub channels: Vec<Arc<Channel>>,
    pub escalations: BTreeMap<String, Vec<Step>>,
    /// The plugin API rules run on.
    pub expression: Option<Arc<Plugin>>,
    pub memory_limit: usize,
}

impl Alerting {
    /// Build from a config with its plugins loaded: every problem with channels, escalations and rules is
    /// reported.
    pub async fn build(
        config: &Config,
        plugins: &Plugins,
        runtime: &Runtime,
        env: &Env,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let alerting = &config.alerting;
        let mut problem = |message: String| errors.push(ConfigError::new(config.source.name(), None, message));
        if alerting.interval < Duration::from_secs(1) {
            problem("`[alerting] interval` must be at least 1s".into());
        }
        if alerting.repeat_interval < Duration::from_secs(60) {
            problem("`[alerting] repeat_interval` must be at least 1m".into());
        }
        if !config.ai.daily_budget.is_finite() || config.ai.daily_budget < 0.0 {
            problem("`[ai] daily_budget` must be a number of dollars, 0 or more".into());
        }
        if let Some(url) = &alerting.external_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problem(format!("`[alerting] external_url`: `{url}` is not an http:// or https:// URL"));
        }
        let channels = channels::build(config, env).unwrap_or_else(|more| {
            errors.extend(more);
            Vec::new()
        });
        // A channel with a mistake of its own is reported once, not again by every rule that names it.
        let mut names = channel_names(&channels);
        for channel in &config.channels {
            if !names.contains(&channel.get_ref().name) {
                names.push(channel.get_ref().name.clone());
            }
        }
        for channel in &alerting.default_channels {
            if !names.contains(channel) {
                errors.push(ConfigError::new(
                    config.source.name(),
                    None,
                    format!("`[alerting] default_channels`: no channel `{channel}`"),
                ));
            }
        }
        let mut escalations = BTreeMap::new();
        for spanned in &config.escalations {
            let policy = spanned.get_ref();
            let line = config.source.file.as_ref().map(|_| config.source.line_of(spanned.span().start));
            let mut problem = |message: String| {
                errors.push(ConfigError::new(
                    config.source.name(),
                    line,
                    format!("escalation `{}`: {message}", policy.name),
                ))
            };
            if escalations.contains_key(&policy.name) {
                problem("the name is used by another escalation".into());
            }
            if policy.steps.is_empty() {
                problem("it has no `[[escalation.step]]`".into());
            }
            if policy.steps.windows(2).any(|w| w[1].after <= w[0].after) {
                problem("each step's `after` must be later than the one before".into());
            }
            for step in &policy.steps {
                if step.after.is_zero() {
                    problem(
                        "a step's `after` must be longer than 0s (the rule's own channels are the first step)".into(),
                    );
                }
                if step.channels.is_empty() && step.severity.is_none() {
                    problem("a step needs `channels`, a `severity`, or both".into());
                }
                if let Some(severity) = &step.severity
                    && !SEVERITIES.contains(&severity.as_str())
                {
                    problem(format!("`severity` must be one of {}, not `{severity}`", SEVERITIES.join(", ")));
                }
                for channel in &step.channels {
                    if !names.contains(channel) {
                        problem(format!("no channel `{channel}`"));
                    }
                }
            }
            let steps = policy
                .steps
                .iter()
                .map(|s| Step { after: s.after, channels: s.channels.clone(), severity: s.severity.clone() })
                .collect();
            escalations.insert(policy.name.clone(), steps);
        }
        let rules = rules::build(config, plugins, runtime, &names).await.unwrap_or_else(|more| {
            errors.extend(more);
            Vec::new()
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            config: alerting.clone(),
            rules,
            channels,
            escalations,
            expression: plugins.get("expression").cloned(),
            memory_limit: usize::try_from(config.plugins.memory_limit.as_u64()).unwrap_or(usize::MAX),
        })
    }

    /// Every name a rule may use in `channels`.
    pub fn channel_names(&self) -> Vec<String> {
        channel_names(&self.channels)
    }

    /// The channels behind the names a rule uses: a channel's own name, or a kind's for all its channels.
    pub fn expand(&self, names: &[String]) -> Vec<Arc<Channel>> {
        let mut out: Vec<Arc<Channel>> = Vec::new();
        for name in names {
            for channel in &self.channels {
                if (&channel.name == name || channel.kind.as_str() == name)
                    && !out.iter().any(|c| c.name == channel.name)
                {
                    out.push(channel.clone());
                }
            }
        }
        out
    }

    pub fn pacing(&self, channel: &str) -> Option<Pacing> {
        self.channels.iter().find(|c| c.name == channel).map(|c| c.pacing(&self.config))
    }

    pub fn external_url(&self) -> String {
        self.config.external_url.clone().unwrap_or_default()
    }
}

/// The names a rule may use in `channels`: `dashboard`, each channel's, and each kind that has channels (for all of
/// them).
fn channel_names(channels: &[Arc<Channel>]) -> Vec<String> {
    let mut names: Vec<String> = vec![DASHBOARD.to_string()];
    names.extend(
        ChannelKind::ALL.iter().filter(|k| channels.iter().any(|c| c.kind == **k)).map(|k| k.as_str().to_string()),
    );
    names.extend(channels.iter().map(|c| c.name.clone()));
    names
}
