//! The alerting tables of the config: `[alerting]`, `[[rule]]`, `[[channel]]`, `[[escalation]]`, and `[webhooks]`
//! for the subscriptions made through the API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::SecretRef;

/// `[alerting]`: how often rules run and how notifications are paced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// How often every rule is evaluated.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Include the nine default rules (each can be replaced or disabled by a `[[rule]]` of the same name).
    pub default_rules: bool,
    /// Channels of rules that name none.
    pub default_channels: Vec<String>,
    /// Alerts with the same values of these labels go out in one notification (`alertname` is the rule's alert).
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// How long a group that was notified waits before notifying a change (new alerts, resolved ones).
    #[serde(with = "humantime_serde")]
    pub group_interval: Duration,
    /// How long before a group that has not changed is notified again while it fires.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Where people reach selfmon, for the links in notifications (`https://selfmon.example.com`).
    pub external_url: Option<String>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            default_rules: true,
            default_channels: vec!["dashboard".into()],
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            external_url: None,
        }
    }
}

/// `[webhooks]`: where webhooks created through the API may deliver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Networks beyond the public internet that webhooks may reach, as addresses or CIDR blocks (`10.20.0.0/16`,
    /// `127.0.0.1`, `fd00::/8`). Loopback, private, link-local and other non-public addresses are refused otherwise.
    pub allow_networks: Vec<String>,
}

impl WebhooksConfig {
    /// `allow_networks` read as networks; an address alone is a network of one.
    pub fn networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.allow_networks
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .map(|network| network.trunc())
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!(
                            "`[webhooks] allow_networks`: `{entry}` is not an address or a network such as \
                             \"10.20.0.0/16\""
                        )
                    })
            })
            .collect()
    }
}

/// One `[[rule]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique among rules; the alerts' `alertname` unless the plugin names them.
    pub name: String,
    /// A rule plugin; `expression` when absent.
    #[serde(default = "expression")]
    pub plugin: String,
    /// For the `expression` plugin: `avg(check_duration_seconds[5m]) > 5`.
    pub condition: Option<String>,
    /// For the `expression` plugin: what the condition's value is compared with when it has no comparison.
    pub threshold: Option<f64>,
    /// info, low, medium, high or critical: replaces what the plugin says.
    pub severity: Option<String>,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub hold: Option<Duration>,
    /// Channels by name (or every channel of a kind, by the kind's name); `[alerting] default_channels` when absent.
    pub channels: Option<Vec<String>>,
    /// An `[[escalation]]` policy by name.
    pub escalation: Option<String>,
    /// The alerts' `description` annotation (as `annotations.description`).
    pub description: Option<String>,
    /// Annotations of every alert of the rule, sent in every channel's payload as Alertmanager sends them:
    /// `summary`, `description`, `runbook_url`, or any other. `{{ $labels.NAME }}` in a value is the alert's label.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Labels added to every alert of the rule (`team = "bot"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `false` keeps the rule (a default one too) without evaluating it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The plugin's own settings, checked by the plugin.
    #[serde(default)]
    pub config: toml::Table,
}

/// One `[[channel]]` table: where notifications go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Unique; rules name it in `channels`.
    pub name: String,
    pub kind: ChannelKind,
    /// The URL to POST to (webhook, slack, discord) or Alertmanager's base URL. A secret, since webhook URLs
    /// carry tokens: `env:NAME`, `file:/path`, or the URL itself.
    pub url: Option<SecretRef>,
    /// Further request headers, values as secrets (`Authorization = "env:RECEIVER_TOKEN"`).
    #[serde(default)]
    pub headers: BTreeMap<String, SecretRef>,
    /// Email: the SMTP server, `host` or `host:port` (587 by default).
    pub smtp: Option<String>,
    /// Email: `starttls` (required, the default), `tls` (implicit TLS, port 465) or `none` (a local relay only).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Email: the account to log in with, if the server wants one.
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// Email: the sender, `selfmon <alerts@example.com>`.
    pub from: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Telegram: the bot's token from @BotFather, as a secret (`env:BOT_TOKEN`).
    pub token: Option<SecretRef>,
    /// Telegram: the chat to post to (a user's, a group's or a channel's id, or `@channelname`).
    pub chat_id: Option<String>,
    /// PEM certificates of further authorities to trust (a private CA), besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Attempts per notification before it is given up.
    #[serde(default = "five")]
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Alertmanager's webhook receiver payload, POSTed as JSON.
    Webhook,
    Slack,
    Discord,
    /// A real Alertmanager, through its v2 API.
    Alertmanager,
    Email,
    /// A Telegram chat, through the Bot API's `sendMessage`.
    Telegram,
}

impl ChannelKind {
    pub const ALL: [Self; 6] =
        [Self::Webhook, Self::Slack, Self::Discord, Self::Alertmanager, Self::Email, Self::Telegram];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Alertmanager => "alertmanager",
            Self::Email => "email",
            Self::Telegram => "telegram",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

/// One `[[escalation]]` policy: what happens while an alert fires unacknowledged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    pub name: String,
    /// In order; each step's `after` counts from when the alert fired.
    #[serde(rename = "step")]
    pub steps: Vec<EscalationStep>,
}

/// `[[escalation.step]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// How long after firing, unacknowledged.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Further channels to notify from this step on.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Raise the alert to this severity.
    pub severity: Option<String>,
}

fn expression() -> String {
    "expression".into()
}

fn yes() -> bool {
    true
}

fn five() -> u32 {
    5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_networks_are_blocks_or_single_addresses() {
        let config =
            |entries: &[&str]| WebhooksConfig { allow_networks: entries.iter().map(|e| e.to_string()).collect() };
        let networks = config(&["10.20.1.7/16", "127.0.0.1", "fd00::/8"]).networks().unwrap();
        let shown: Vec<String> = networks.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.20.0.0/16", "127.0.0.1/32", "fd00::/8"]);
        let error = config(&["10.0.0.0/8", "intranet"]).networks().unwrap_err();
        assert!(error.contains("[webhooks] allow_networks") && error.contains("`intranet`"), "{error}");
        assert!(config(&["10.0.0.0/33"]).networks().is_err());
    }
}
