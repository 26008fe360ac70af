//! Where notifications go: the `[[channel]]` tables, the payload each kind of receiver expects, and delivery with
//! retries, every attempt recorded.
//!
//! One file per kind of receiver, each making the payload that receiver expects: [`webhook`] (Alertmanager's
//! webhook payload), [`slack`], [`discord`], [`alertmanager`] (its `/api/v2/alerts`), [`email`] and [`telegram`].
//! Every kind is delivered the one way selfmon delivers a POST ([`delivery`](crate::events::delivery::deliver)); email goes
//! over SMTP through the same retries.
//!
//! URLs, header values and passwords are secrets: they appear in no log, record or answer. A receiver's error text
//! is stored with them removed.

pub mod alertmanager;
pub mod discord;
pub mod email;
pub mod slack;
pub mod telegram;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::alerting::dispatch::{Notice, Notification, Pacing, Status};
use crate::config::{AlertingConfig, ChannelConfig, ChannelKind, Config, ConfigError, Env, Secret};
use crate::events::delivery::{self, Failure, Receiver, post};
use crate::events::outgoing::Client;
use crate::ops::telemetry::Telemetry;
use crate::runtime::{Reach, Redactor, TlsConfig};
use crate::storage::Storage;
use email::Email;

/// The name every rule may use for the dashboard, which needs no config.
pub const DASHBOARD: &str = "dashboard";

/// A configured channel.
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    target: Target,
    pub max_attempts: u32,
    /// Its secrets, removed from whatever a receiver answers before it is stored or logged.
    redactor: Redactor,
    /// Telegram: the chat posted to.
    chat_id: Option<String>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("name", &self.name).field("kind", &self.kind).finish_non_exhaustive()
    }
}

enum Target {
    Http { url: Secret, headers: Vec<(String, Secret)>, client: Client },
    Email(Box<Email>),
}

/// Every channel of a config, by name; every problem with any of them is reported.
pub fn build(config: &Config, env: &Env) -> Result<Vec<Arc<Channel>>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut channels: Vec<Arc<Channel>> = Vec::new();
    for spanned in &config.channels {
        let channel = spanned.get_ref();
        let line = config.source.file.as_ref().map(|_| config.source.line_of(spanned.span().start));
        let mut problem = |message: String| {
            errors.push(ConfigError::new(config.source.name(), line, format!("channel `{}`: {message}", channel.name)))
        };
        let kinds: Vec<&str> = ChannelKind::ALL.iter().map(|k| k.as_str()).collect();
        if channel.name == DASHBOARD || kinds.contains(&channel.name.as_str()) {
            problem(
                "the name is a channel kind's; choose another (rules use a kind's name for all its channels)".into(),
            );
            continue;
        }
        if channels.iter().any(|c| c.name == channel.name) {
            problem("the name is used by another channel".into());
            continue;
        }
        if !(1..=20).contains(&channel.max_attempts) {
            problem("`max_attempts` must be between 1 and 20".into());
        }
        match build_one(channel, config, env) {
            Ok(built) => channels.push(Arc::new(built)),
            Err(message) => problem(message),
        }
    }
    if errors.is_empty() { Ok(channels) } else { Err(errors) }
}

fn build_one(channel: &ChannelConfig, config: &Config, env: &Env) -> Result<Channel, String> {
    let base = &config.source.base_dir;
    let tls = match &channel.ca_file {
        Some(path) => {
            let path = config.source.resolve(path);
            let pem = std::fs::read(&path).map_err(|e| format!("`ca_file` {}: {e}", path.display()))?;
            TlsConfig::new(Some(&pem)).map_err(|e| format!("`ca_file` {}: {e}", path.display()))?
        }
        None => TlsConfig::system(),
    };
    let mut secrets = Vec::new();
    if channel.kind != ChannelKind::Telegram && (channel.token.is_some() || channel.chat_id.is_some()) {
        return Err("`token` and `chat_id` are for `kind = \"telegram\"`".into());
    }
    let target = if channel.kind == ChannelKind::Email {
        if channel.url.is_some() || !channel.headers.is_empty() {
            return Err("`url` and `headers` are for HTTP channels; email takes `smtp`, `from` and `to`".into());
        }
        let smtp = channel.smtp.as_deref().ok_or("`smtp` is required: the server, `host` or `host:port`")?;
        let from = channel.from.as_deref().ok_or("`from` is required: the sender's address")?;
        let from: lettre::message::Mailbox =
            from.parse().map_err(|e| format!("`from`: `{from}` is not an address: {e}"))?;
        if channel.to.is_empty() {
            return Err("`to` is empty: list the recipients".into());
        }
        let to = channel
            .to
            .iter()
            .map(|t| t.parse().map_err(|e| format!("`to`: `{t}` is not an address: {e}")))
            .collect::<Result<Vec<lettre::message::Mailbox>, String>>()?;
        let password = channel
            .password
            .as_ref()
            .map(|p| p.resolve(env, base))
            .transpose()
            .map_err(|e| format!("`password` {e}"))?;
        if let Some(password) = &password {
            secrets.push(password.expose().to_string());
        }
        let transport =
            email::transport(smtp, channel, password, &channel.ca_file.as_ref().map(|p| config.source.resolve(p)))?;
        Target::Email(Box::new(Email { transport, from, to }))
    } else {
        if channel.smtp.is_some() || channel.from.is_some() || !channel.to.is_empty() || channel.password.is_some() {
            return Err("`smtp`, `from`, `to` and `password` are for `kind = \"email\"`".into());
        }
        let url = match channel.kind {
            // The Bot API's address, with the token in its path as Telegram has it.
            ChannelKind::Telegram => {
                if channel.chat_id.as_deref().is_none_or(str::is_empty) {
                    return Err("`chat_id` is required: the chat's id or `@channelname`".into());
                }
                let token =
                    channel.token.as_ref().ok_or("`token` is required: the bot's token, such as \"env:BOT_TOKEN\"")?;
                let token = token.resolve(env, base).map_err(|e| format!("`token` {e}"))?;
                if token.expose().is_empty() || !token.expose().chars().all(|c| c.is_ascii_graphic() && c != '/') {
                    return Err("`token` is not a bot token (digits, `:` and letters)".into());
                }
                secrets.push(token.expose().to_string());
                let api = match &channel.url {
                    Some(url) => url.resolve(env, base).map_err(|e| format!("`url` {e}"))?.expose().to_string(),
                    None => telegram::API.to_string(),
                };
                Secret::new(format!("{}/bot{}/sendMessage", api.trim_end_matches('/'), token.expose()))
            }
            _ => {
                channel.url.as_ref().ok_or("`url` is required")?.resolve(env, base).map_err(|e| format!("`url` {e}"))?
            }
        };
        let uri: http::Uri = url.expose().parse().map_err(|_| "`url` is not a URL".to_string())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err("`url` must be an http:// or https:// URL".into());
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("`url` must not carry credentials: put them in `headers`".into());
        }
        secrets.push(url.expose().to_string());
        secrets.extend(url_secrets(&uri));
        let mut headers = Vec::new();
        for (name, value) in &channel.headers {
            let value = value.resolve(env, base).map_err(|e| format!("header `{name}` {e}"))?;
            if http::HeaderName::try_from(name.as_str()).is_err()
                || http::HeaderValue::try_from(value.expose()).is_err()
            {
                return Err(format!("header `{name}` is not a valid header"));
            }
            secrets.push(value.expose().to_string());
            // `Bearer TOKEN`: a receiver may echo the token alone.
            secrets.extend(value.expose().split_whitespace().filter(|w| w.len() >= SECRET_PART).map(str::to_string));
            headers.push((name.clone(), value));
        }
        Target::Http { url, headers, client: Client::new(&tls, Reach::Anywhere)? }
    };
    Ok(Channel {
        name: channel.name.clone(),
        kind: channel.kind,
        target,
        max_attempts: channel.max_attempts,
        redactor: Redactor::new(secrets),
        chat_id: channel.chat_id.clone(),
    })
}

/// The shortest part of a URL or header value treated as a secret of its own.
const SECRET_PART: usize = 6;

/// What of a channel's URL is secret: the whole of it, its path and query, and each longer path segment and query
/// value (a receiver's error page may quote any of them, and webhook tokens live there).
fn url_secrets(uri: &http::Uri) -> Vec<String> {
    let mut secrets = vec![uri.to_string()];
    if let Some(path_and_query) = uri.path_and_query().filter(|p| p.as_str() != "/") {
        secrets.push(path_and_query.as_str().to_string());
        secrets.push(path_and_query.path().to_string());
        let parts = path_and_query.path().split('/').chain(
            path_and_query
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| pair.split_once('=').map(|(_, v)| v)),
        );
        secrets.extend(parts.filter(|part| part.len() >= SECRET_PART).map(str::to_string));
    }
    secrets
}

impl Channel {
    /// How this channel paces its groups: the `[alerting]` settings, except for Alertmanager, which groups by
    /// itself and wants every alert at once and again every minute.
    pub fn pacing(&self, alerting: &AlertingConfig) -> Pacing {
        if self.kind == ChannelKind::Alertmanager {
            return Pacing {
                group_by: Vec::new(),
                group_wait: Duration::ZERO,
                group_interval: Duration::ZERO,
                repeat_interval: alertmanager::RESEND,
            };
        }
        Pacing {
            group_by: alerting.group_by.clone(),
            group_wait: alerting.group_wait,
            group_interval: alerting.group_interval,
            repeat_interval: alerting.repeat_interval,
        }
    }
}

/// One attempt to deliver a notification, as stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: i64,
    pub channel: String,
    pub group_key: String,
    /// firing or resolved.
    pub status: String,
    /// The alerts in the notification.
    pub alerts: Vec<i64>,
    #[serde(flatten)]
    pub attempt: delivery::Attempt,
}

/// What a notification is sent as.
enum Message {
    Http(Bytes),
    Email { subject: String, body: String },
}

/// The message for a channel's kind.
fn message(channel: &Channel, notification: &Notification, external_url: &str, now: SystemTime) -> Message {
    let body = match channel.kind {
        ChannelKind::Webhook => webhook::body(notification, &channel.name, external_url),
        ChannelKind::Slack => slack::body(notification, external_url),
        ChannelKind::Discord => discord::body(notification, external_url),
        ChannelKind::Alertmanager => alertmanager::body(notification, external_url, now),
        ChannelKind::Telegram => {
            telegram::body(notification, channel.chat_id.as_deref().unwrap_or_default(), external_url)
        }
        ChannelKind::Email => {
            let (subject, body) = email::message(notification, external_url);
            return Message::Email { subject, body };
        }
    };
    Message::Http(Bytes::from(body.to_string()))
}

/// One notification on its way to one channel.
struct Sending<'a> {
    storage: &'a Storage,
    telemetry: &'a Telemetry,
    channel: &'a Channel,
    notification: &'a Notification,
    message: Message,
    /// The ids of its alerts, as stored with each attempt.
    alerts: String,
}

impl Receiver for Sending<'_> {
    async fn send(&self) -> Result<Option<u16>, Failure> {
        let channel = self.channel;
        let sent = match (&channel.target, &self.message) {
            (Target::Http { url, headers, client }, Message::Http(body)) => {
                let mut url = url.expose().to_string();
                if channel.kind == ChannelKind::Alertmanager {
                    url = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
                }
                post(client, &url, headers, body).await.map(Some)
            }
            (Target::Email(email), Message::Email { subject, body }) => email.send(subject, body).await,
            _ => Err(Failure::new(None, "the message does not suit the channel".into())),
        };
        sent.map_err(|failure| Failure { message: channel.redactor.apply(&failure.message).into_owned(), ..failure })
    }

    async fn record(&self, attempt: &delivery::Attempt) -> bool {
        let (channel, notification) = (self.channel, self.notification);
        self.telemetry.observe_notification(&channel.name, &attempt.outcome);
        match &attempt.error {
            Some(error) if attempt.outcome == "gave_up" => tracing::error!(
                channel = %channel.name,
                attempt = attempt.attempt,
                group = %notification.group_key,
                error,
                "Alert notification given up: the channel did not take it"
            ),
            Some(error) => {
                tracing::warn!(channel = %channel.name, attempt = attempt.attempt, group = %notification.group_key, error, "Alert notification failed");
            }
            None => {}
        }
        let stored = self
            .storage
            .record_notification(
                channel.name.clone(),
                notification.group_key.clone(),
                notification.status().as_str(),
                self.alerts.clone(),
                attempt.clone(),
            )
            .await;
        if let Err(error) = stored {
            tracing::error!(%error, channel = %channel.name, "Cannot record an alert notification");
        }
        true
    }
}

/// Send one notification, retrying with back-off up to the channel's attempts; every attempt is stored. Whether it
/// was delivered.
pub async fn deliver(
    storage: &Storage,
    telemetry: &Telemetry,
    channel: &Channel,
    notification: &Notification,
    external_url: &str,
) -> bool {
    let ids: Vec<i64> = notification.alerts.iter().map(|a| a.id).collect();
    let sending = Sending {
        storage,
        telemetry,
        channel,
        notification,
        message: message(channel, notification, external_url, SystemTime::now()),
        alerts: serde_json::to_string(&ids).unwrap_or_default(),
    };
    delivery::deliver(&sending, channel.max_attempts).await
}

/// Where a person sees the alert: its page in the API under `[alerting] external_url`, when that is set (a link
/// without it would point nowhere a receiver can reach).
fn link(external_url: &str, notice: &Notice) -> Option<String> {
    (!external_url.is_empty()).then(|| format!("{}/v1/alerts/{}", external_url.trim_end_matches('/'), notice.id))
}

/// Labels and annotations every alert in the notification shares.
fn common(maps: impl Iterator<Item = BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut common: Option<BTreeMap<String, String>> = None;
    for map in maps {
        common = Some(match common {
            None => map,
            Some(mut kept) => {
                kept.retain(|k, v| map.get(k) == Some(v));
                kept
            }
        });
    }
    common.unwrap_or_default()
}

/// Annotations with the summary and description in them, as Alertmanager templates expect: the rule's `summary`
/// annotation, else the alert's own summary.
fn annotations(notice: &Notice) -> BTreeMap<String, String> {
    let mut annotations = notice.annotations.clone();
    annotations.entry("summary".into()).or_insert_with(|| notice.summary.clone());
    annotations
}

/// The alert's `description` annotation, for the channels people read.
fn description(notice: &Notice) -> Option<&str> {
    notice.annotations.get("description").map(String::as_str).filter(|d| !d.is_empty())
}

/// The alert's `runbook_url` annotation, when it is a web address (a chat client would open anything else too),
/// with what ends or breaks a link in a channel's markup (spaces, brackets, `|`, quotes) percent-encoded.
fn runbook(notice: &Notice) -> Option<String> {
    let url = notice.annotations.get("runbook_url")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    Some(
        url.bytes()
            .map(|byte| match byte {
                b'(' | b')' | b'[' | b']' | b'<' | b'>' | b'{' | b'}' | b'|' | b'"' | b'\'' | b'`' | b'\\' => {
                    format!("%{byte:02X}")
                }
                byte if byte.is_ascii_graphic() => char::from(byte).to_string(),
                byte => format!("%{byte:02X}"),
            })
            .collect(),
    )
}

/// The alerts as lines a person reads: `[FIRING] service_down (critical): api is unhealthy: HTTP 503`.
fn lines(notification: &Notification) -> Vec<String> {
    notification
        .alerts
        .iter()
        .map(|a| {
            let status = a.status.as_str().to_uppercase();
            format!("[{status}] {} ({}): {}", a.labels.get("alertname").unwrap_or(&a.rule), a.severity, a.summary)
        })
        .collect()
}

/// `[FIRING:2] service_down`, as Alertmanager titles a group.
fn title(notification: &Notification) -> String {
    let firing = notification.alerts.iter().filter(|a| a.status == Status::Firing).count();
    let values: Vec<&str> = notification.group_labels.values().map(String::as_str).filter(|v| !v.is_empty()).collect();
    let name = if values.is_empty() { "alerts".to_string() } else { values.join(" ") };
    match notification.status() {
        Status::Firing => format!("[FIRING:{firing}] {name}"),
        Status::Resolved => format!("[RESOLVED] {name}"),
    }
}

/// At most `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(max - 1).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn notification() -> Notification {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let notice = |id: i64, check: &str, status: Status| Notice {
            id,
            fingerprint: format!("{id:016x}"),
            rule: "service_down".into(),
            severity: "critical".into(),
            summary: format!("{check} is unhealthy: HTTP 503 <b>"),
            labels: [
                ("alertname".to_string(), "service_down".to_string()),
                ("check".into(), check.into()),
                ("severity".into(), "critical".into()),
            ]
            .into(),
            annotations: [("description".to_string(), "A configured service is down".to_string())].into(),
            status,
            fired_at: at,
            resolved_at: (status == Status::Resolved).then(|| at + Duration::from_secs(60)),
        };
        Notification {
            channel: "ops".into(),
            group_key: "ops:{alertname=\"service_down\"}".into(),
            group_labels: [("alertname".to_string(), "service_down".to_string())].into(),
            alerts: vec![notice(1, "api", Status::Firing), notice(2, "bot", Status::Resolved)],
        }
    }

    #[test]
    fn the_webhook_payload_has_alertmanagers_shape() {
        let payload = webhook::body(&notification(), "ops", "http://selfmon:8001");
        assert_eq!(payload["version"], "4");
        assert_eq!(payload["status"], "firing");
        assert_eq!(payload["commonLabels"], json!({"alertname": "service_down", "severity": "critical"}));
        assert_eq!(payload["commonAnnotations"], json!({"description": "A configured service is down"}));
        assert_eq!(payload["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(payload["alerts"][1]["status"], "resolved");
        assert_eq!(payload["alerts"][1]["endsAt"], "2027-01-15T08:01:00.000Z");
        assert_eq!(payload["alerts"][0]["generatorURL"], "http://selfmon:8001/v1/alerts/1");
        let unlinked = webhook::body(&notification(), "ops", "");
        assert_eq!(unlinked["alerts"][0]["generatorURL"], "");
    }

    #[test]
    fn every_part_of_a_url_a_receiver_may_quote_is_secret() {
        let uri: http::Uri =
            "https://hooks.example.com/services/T000/B000/XXslackTOKEN?sig=abcdef123&x=1".parse().unwrap();
        let redactor = Redactor::new(url_secrets(&uri));
        assert_eq!(
            redactor.apply("bad request for /services/T000/B000/XXslackTOKEN, token XXslackTOKEN, sig abcdef123"),
            "bad request for [redacted], token [redacted], sig [redacted]"
        );
        assert_eq!(url_secrets(&"http://127.0.0.1:9/".parse().unwrap()), ["http://127.0.0.1:9/"]);
        let header = Redactor::new(["Bearer PARTIALSECRET".to_string(), "PARTIALSECRET".to_string()]);
        assert_eq!(header.apply("bad token PARTIALSECRET"), "bad token [redacted]");
    }

    #[test]
    fn chat_messages_escape_and_stay_within_limits() {
        let slack = slack::body(&notification(), "http://s");
        assert_eq!(slack["blocks"][0]["text"]["text"], "[FIRING:1] service_down");
        let section = slack["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.contains("HTTP 503 &lt;b&gt;"), "{section}");
        assert!(section.ends_with("<http://s/v1/alerts/1|details>\nA configured service is down"), "{section}");
        // A runbook link is shown only when it is a web address: chat clients would open anything.
        let mut linked = notification();
        linked.alerts[0].annotations.insert("runbook_url".into(), "https://r.example/api".into());
        linked.alerts[1].annotations.insert("runbook_url".into(), "javascript:alert(1)".into());
        let slack = slack::body(&linked, "");
        assert!(slack["blocks"][1]["text"]["text"].as_str().unwrap().contains(" <https://r.example/api|runbook>"));
        assert!(!slack["blocks"][2]["text"]["text"].as_str().unwrap().contains("javascript"));
        let telegram = telegram::body(&linked, "1", "")["text"].as_str().unwrap().to_string();
        assert!(telegram.contains("<a href=\"https://r.example/api\">runbook</a>") && !telegram.contains("javascript"));
        // A link that would end early or break out of the markup is percent-encoded, in every channel alike.
        linked.alerts[0].annotations.insert("runbook_url".into(), "https://r.example/a b(c)|d>\"é".into());
        let encoded = "https://r.example/a%20b%28c%29%7Cd%3E%22%C3%A9";
        let discord = discord::body(&linked, "");
        assert!(discord["embeds"][0]["description"].as_str().unwrap().ends_with(&format!("[runbook]({encoded})")));
        let slack = slack::body(&linked, "");
        assert!(slack["blocks"][1]["text"]["text"].as_str().unwrap().contains(&format!(" <{encoded}|runbook>")));
        let telegram = telegram::body(&linked, "1", "")["text"].as_str().unwrap().to_string();
        assert!(telegram.contains(&format!("<a href=\"{encoded}\">runbook</a>")), "{telegram}");
        let discord = discord::body(&notification(), "http://s");
        assert_eq!(discord["allowed_mentions"], json!({"parse": []}));
        assert_eq!(discord["embeds"].as_array().unwrap().len(), 2);
        assert_eq!(discord["embeds"][1]["color"], 0x2E_B6_7D);
        assert_eq!(discord["embeds"][0]["url"], "http://s/v1/alerts/1");
        assert!(discord::body(&notification(), "")["embeds"][0].get("url").is_none(), "Discord refuses a relative URL");

        // Ten alerts with long summaries and many labels stay within Discord's 6000 characters of embeds.
        let mut big = notification();
        big.alerts = (0..12)
            .map(|n| {
                let mut notice = big.alerts[0].clone();
                notice.summary = "x".repeat(1024);
                notice.labels.extend((0..30).map(|l| (format!("label{l}"), "v".repeat(300))));
                notice.fingerprint = format!("{n}");
                notice
            })
            .collect();
        let discord = discord::body(&big, "http://s");
        let embeds = discord["embeds"].as_array().unwrap();
        assert_eq!(embeds.len(), 10);
        let size: usize = embeds
            .iter()
            .map(|e| {
                let text = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
                let fields: usize =
                    e["fields"].as_array().unwrap().iter().map(|f| text(&f["name"]) + text(&f["value"])).sum();
                text(&e["title"]) + text(&e["description"]) + fields
            })
            .sum();
        assert!(size <= 6000, "{size} characters of embeds");
        assert!(discord["content"].as_str().unwrap().ends_with("(2 more not shown)"));
        assert_eq!(clip("abcdef", 4), "abc…");
        let (subject, body) = email::message(&notification(), "http://s");
        assert_eq!(subject, "[FIRING:1] service_down (selfmon)");
        assert!(body.contains("[RESOLVED] service_down (critical)\nbot is unhealthy"), "{body}");
    }
}
