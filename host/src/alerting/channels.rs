//! Where notifications go: the `[[channel]]` tables, the payload each kind of receiver expects, and delivery with
//! retries, every attempt recorded.
//!
//! - `webhook`: Alertmanager's webhook receiver payload (version 4), so receivers written for Alertmanager work
//!   unchanged (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>).
//! - `slack`: an incoming webhook message, `text` plus `blocks`
//!   (<https://api.slack.com/messaging/webhooks>, <https://api.slack.com/reference/block-kit/blocks>).
//! - `discord`: an execute-webhook body, `content` plus `embeds` within Discord's documented limits
//!   (<https://discord.com/developers/docs/resources/webhook#execute-webhook>); a 429 is retried after its
//!   `Retry-After`.
//! - `alertmanager`: the alerts POSTed to a real Alertmanager's `/api/v2/alerts`, which does its own grouping and
//!   routing; firing alerts are sent again every minute with an `endsAt` a few minutes ahead, as Prometheus does.
//! - `email`: a plain-text message over SMTP, STARTTLS by default.
//! - `telegram`: an HTML message to a chat through the Bot API's `sendMessage`
//!   (<https://core.telegram.org/bots/api#sendmessage>); a 429's `parameters.retry_after` is honoured.
//!
//! URLs, header values and passwords are secrets: they appear in no log, record or answer. A receiver's error text
//! is stored with them removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use rusqlite::params;
use serde_json::{Value, json};

use super::dispatch::{Notice, Notification, Pacing, Status};
use crate::config::{AlertingConfig, ChannelConfig, ChannelKind, Config, ConfigError, Secret, SmtpSecurity};
use crate::runtime::{Redactor, Timeouts, TlsConfig, send};
use crate::storage::{Storage, to_millis};
use crate::telemetry::Telemetry;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before the first retry; it doubles after each, up to [`MAX_RETRY_WAIT`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// How often firing alerts are sent to Alertmanager again, and how far ahead their `endsAt` is.
const ALERTMANAGER_RESEND: Duration = Duration::from_secs(60);
const ALERTMANAGER_ENDS_AFTER: Duration = Duration::from_secs(300);
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
    Http { url: Secret, headers: Vec<(String, Secret)>, tls: TlsConfig },
    Email(Box<Email>),
}

struct Email {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

/// Every channel of a config, by name; every problem with any of them is reported.
pub fn build(config: &Config, env: &crate::checks::Env) -> Result<Vec<Arc<Channel>>, Vec<ConfigError>> {
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

fn build_one(channel: &ChannelConfig, config: &Config, env: &crate::checks::Env) -> Result<Channel, String> {
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
            smtp_transport(smtp, channel, password, &channel.ca_file.as_ref().map(|p| config.source.resolve(p)))?;
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
                    None => TELEGRAM_API.to_string(),
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
        Target::Http { url, headers, tls }
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

/// Where the Telegram Bot API is, unless a channel's `url` says otherwise.
const TELEGRAM_API: &str = "https://api.telegram.org";

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

fn smtp_transport(
    server: &str,
    channel: &ChannelConfig,
    password: Option<Secret>,
    ca_file: &Option<std::path::PathBuf>,
) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, String> {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("`smtp`: `{port}` is not a port"))?),
        None => (server, if channel.security == SmtpSecurity::Tls { 465 } else { 587 }),
    };
    let mut parameters = TlsParameters::builder(host.to_string());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("`ca_file` {}: {e}", path.display()))?;
        let certificate = Certificate::from_pem(&pem).map_err(|e| format!("`ca_file` {}: {e}", path.display()))?;
        parameters = parameters.add_root_certificate(certificate);
    }
    let parameters = parameters.build().map_err(|e| format!("`smtp`: TLS for `{host}`: {e}"))?;
    let tls = match channel.security {
        SmtpSecurity::Starttls => Tls::Required(parameters),
        SmtpSecurity::Tls => Tls::Wrapper(parameters),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(ATTEMPT_TIMEOUT));
    match (&channel.username, password) {
        (Some(user), Some(password)) => {
            builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        (None, None) => {}
        _ => return Err("`username` and `password` go together".into()),
    }
    Ok(builder.build())
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
                repeat_interval: ALERTMANAGER_RESEND,
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
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
    pub status_code: Option<u16>,
    /// delivered, failed (to be retried) or gave_up.
    pub outcome: String,
    /// Why it failed, secrets removed.
    pub error: Option<String>,
    pub duration_ms: f64,
}

impl Storage {
    /// Delivery attempts, newest first.
    pub async fn notification_attempts(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<crate::alerts::Page<Attempt>, crate::storage::StorageError> {
        self.read(move |db| {
            let total: i64 = db.query_row("SELECT COUNT(*) FROM alert_notifications", [], |r| r.get(0))?;
            let mut statement = db.prepare(
                "SELECT id, channel, group_key, status, alerts, attempt, at, status_code, outcome, error, duration_ms
                 FROM alert_notifications ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            )?;
            let items = statement
                .query_map(params![crate::storage::sql_count(limit), crate::storage::sql_count(offset)], |row| {
                    Ok(Attempt {
                        id: row.get(0)?,
                        channel: row.get(1)?,
                        group_key: row.get(2)?,
                        status: row.get(3)?,
                        alerts: serde_json::from_str(&row.get::<_, String>(4)?).unwrap_or_default(),
                        attempt: row.get(5)?,
                        at: crate::storage::rfc3339(row.get(6)?),
                        status_code: row.get(7)?,
                        outcome: row.get(8)?,
                        error: row.get(9)?,
                        duration_ms: row.get(10)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(crate::alerts::Page { items, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }
}

/// What a notification is sent as.
enum Message {
    Http(Bytes),
    Email { subject: String, body: String },
}

/// Send one notification, retrying with backoff up to the channel's attempts; every attempt is stored. Whether it
/// was delivered.
pub async fn deliver(
    storage: &Storage,
    telemetry: &Telemetry,
    channel: &Channel,
    notification: &Notification,
    external_url: &str,
) -> bool {
    let message = message(channel, notification, external_url, SystemTime::now());
    let ids: Vec<i64> = notification.alerts.iter().map(|a| a.id).collect();
    let ids = serde_json::to_string(&ids).unwrap_or_default();
    let mut wait = FIRST_RETRY;
    for attempt in 1..=channel.max_attempts {
        let started = Instant::now();
        let at = SystemTime::now();
        let result =
            tokio::time::timeout(ATTEMPT_TIMEOUT, attempt_once(channel, &message)).await.unwrap_or_else(|_| {
                Err(Failure::new(None, format!("no answer within {}", humantime::format_duration(ATTEMPT_TIMEOUT))))
            });
        let (code, error, retry_after) = match result {
            Ok(code) => (code, None, None),
            Err(failure) => {
                (failure.code, Some(channel.redactor.apply(&failure.message).into_owned()), failure.retry_after)
            }
        };
        let outcome = match (&error, attempt == channel.max_attempts) {
            (None, _) => "delivered",
            (Some(_), true) => "gave_up",
            (Some(_), false) => "failed",
        };
        telemetry.observe_notification(&channel.name, outcome);
        match (&error, outcome) {
            (Some(error), "gave_up") => tracing::error!(
                channel = %channel.name,
                attempt,
                group = %notification.group_key,
                error,
                "Alert notification given up: the channel did not take it"
            ),
            (Some(error), _) => {
                tracing::warn!(channel = %channel.name, attempt, group = %notification.group_key, error, "Alert notification failed");
            }
            (None, _) => {}
        }
        let record = (
            channel.name.clone(),
            notification.group_key.clone(),
            notification.status().as_str(),
            ids.clone(),
            error.clone(),
            started.elapsed().as_secs_f64() * 1000.0,
        );
        let stored = storage
            .apply(move |db| {
                db.execute(
                    "INSERT INTO alert_notifications
                     (channel, group_key, status, alerts, attempt, at, status_code, outcome, error, duration_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        record.0,
                        record.1,
                        record.2,
                        record.3,
                        attempt,
                        to_millis(at),
                        code,
                        outcome,
                        record.4,
                        record.5
                    ],
                )
            })
            .await;
        if let Err(error) = stored {
            tracing::error!(%error, channel = %channel.name, "Cannot record an alert notification");
        }
        if error.is_none() || attempt == channel.max_attempts {
            return error.is_none();
        }
        tokio::time::sleep(retry_after.unwrap_or(wait).min(MAX_RETRY_WAIT)).await;
        wait = (wait * 2).min(MAX_RETRY_WAIT);
    }
    false
}

/// Why a POST did not get a 2xx: the status (none without an answer), what to say, and how long the receiver asked
/// to wait.
pub(crate) struct Failure {
    pub code: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn new(code: Option<u16>, message: String) -> Self {
        Self { code, message, retry_after: None }
    }
}

async fn attempt_once(channel: &Channel, message: &Message) -> Result<Option<u16>, Failure> {
    match (&channel.target, message) {
        (Target::Http { url, headers, tls }, Message::Http(body)) => {
            let mut url = url.expose().to_string();
            if channel.kind == ChannelKind::Alertmanager {
                url = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
            }
            post(&url, headers, body, tls).await.map(Some)
        }
        (Target::Email(email), Message::Email { subject, body }) => {
            use lettre::AsyncTransport;
            let mut builder = lettre::Message::builder().from(email.from.clone()).subject(subject.clone());
            for to in &email.to {
                builder = builder.to(to.clone());
            }
            let mail = builder
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(body.clone())
                .map_err(|e| Failure::new(None, format!("cannot build the message: {e}")))?;
            email
                .transport
                .send(mail)
                .await
                .map(|response| Some(response.code().into()))
                .map_err(|e| Failure::new(e.status().map(u16::from), format!("SMTP: {e}")))
        }
        _ => Err(Failure::new(None, "the message does not suit the channel".into())),
    }
}

/// One POST of JSON; the status code, or why there is none.
pub(crate) async fn post(
    url: &str,
    headers: &[(String, Secret)],
    body: &Bytes,
    tls: &TlsConfig,
) -> Result<u16, Failure> {
    let full = http_body_util::Full::new(body.clone()).map_err(|never| match never {}).boxed_unsync();
    let mut request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("selfmon/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        request = request.header(name.as_str(), value.expose());
    }
    let request = request.body(full).map_err(|e| Failure::new(None, format!("invalid request: {e}")))?;
    let timeouts = Timeouts { connect: ATTEMPT_TIMEOUT, first_byte: ATTEMPT_TIMEOUT, between_bytes: ATTEMPT_TIMEOUT };
    let (response, io) =
        send(request, timeouts, tls).await.map_err(|e| Failure::new(None, format!("request failed: {e}")))?;
    tokio::spawn(io);
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let text = tokio::time::timeout(Duration::from_secs(2), response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    // Telegram says how long to wait in the body: `{"parameters": {"retry_after": 5}}`.
    let retry_after = retry_after.or_else(|| {
        let body: Value = serde_json::from_str(&text).ok()?;
        body["parameters"]["retry_after"].as_f64().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
    });
    let text = crate::runtime::truncate(text.trim(), 200);
    let message =
        if text.is_empty() { format!("answered HTTP {status}") } else { format!("answered HTTP {status}: {text}") };
    Err(Failure { code: Some(status), message, retry_after })
}

/// The message for a channel's kind.
fn message(channel: &Channel, notification: &Notification, external_url: &str, now: SystemTime) -> Message {
    let body = match channel.kind {
        ChannelKind::Webhook => alertmanager_webhook(notification, &channel.name, external_url),
        ChannelKind::Slack => slack(notification, external_url),
        ChannelKind::Discord => discord(notification, external_url),
        ChannelKind::Alertmanager => alertmanager_v2(notification, external_url, now),
        ChannelKind::Telegram => telegram(notification, channel.chat_id.as_deref().unwrap_or_default(), external_url),
        ChannelKind::Email => {
            let (subject, body) = email(notification, external_url);
            return Message::Email { subject, body };
        }
    };
    Message::Http(Bytes::from(body.to_string()))
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
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

/// Annotations with the summary and description in them, as Alertmanager templates expect.
fn annotations(notice: &Notice) -> BTreeMap<String, String> {
    let mut annotations = notice.annotations.clone();
    annotations.insert("summary".into(), notice.summary.clone());
    annotations
}

/// Alertmanager's webhook receiver payload, version 4.
fn alertmanager_webhook(notification: &Notification, receiver: &str, external_url: &str) -> Value {
    let alerts: Vec<Value> = notification
        .alerts
        .iter()
        .map(|notice| {
            json!({
                "status": notice.status.as_str(),
                "labels": notice.labels,
                "annotations": annotations(notice),
                "startsAt": rfc3339(notice.fired_at),
                // Alertmanager's zero time for an alert that has not ended.
                "endsAt": notice.resolved_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
                "generatorURL": link(external_url, notice).unwrap_or_default(),
                "fingerprint": notice.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": 0,
        "status": notification.status().as_str(),
        "receiver": receiver,
        "groupLabels": notification.group_labels,
        "commonLabels": common(notification.alerts.iter().map(|a| a.labels.clone())),
        "commonAnnotations": common(notification.alerts.iter().map(annotations)),
        "externalURL": external_url,
        "alerts": alerts,
    })
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

/// A Slack incoming-webhook message: `text` for notifications and clients without blocks, and a header and one
/// section per alert (Slack allows 50 blocks; the rest are counted).
fn slack(notification: &Notification, external_url: &str) -> Value {
    let lines = lines(notification);
    let mut blocks =
        vec![json!({"type": "header", "text": {"type": "plain_text", "text": clip(&title(notification), 150)}})];
    for (line, notice) in lines.iter().zip(&notification.alerts).take(48) {
        let text = match link(external_url, notice) {
            Some(link) => format!("{} <{link}|details>", escape_slack(line)),
            None => escape_slack(line),
        };
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}}));
    }
    if lines.len() > 48 {
        let more = format!("…and {} more", lines.len() - 48);
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]}));
    }
    json!({"text": clip(&format!("{}\n{}", title(notification), lines.join("\n")), 3000), "blocks": blocks})
}

/// `&`, `<` and `>` are Slack's control characters in text.
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A Discord execute-webhook body: the title as `content`, one embed per alert (at most 10), colour by status, and
/// no mentions (an alert's text must not ping anyone). Discord refuses a message whose embeds hold more than 6000
/// characters in all, so each embed gets an equal share.
fn discord(notification: &Notification, external_url: &str) -> Value {
    const EMBEDS: usize = 10;
    const ALL_EMBEDS: usize = 5900;
    let shown = notification.alerts.len().clamp(1, EMBEDS);
    let share = ALL_EMBEDS / shown;
    let embeds: Vec<Value> = notification
        .alerts
        .iter()
        .take(EMBEDS)
        .map(|notice| {
            let color = match notice.status {
                Status::Firing if notice.severity == "critical" => 0xE0_1E_5A,
                Status::Firing => 0xF2_A9_00,
                Status::Resolved => 0x2E_B6_7D,
            };
            let name = notice.labels.get("alertname").unwrap_or(&notice.rule);
            let title = clip(&format!("[{}] {name}", notice.status.as_str().to_uppercase()), 200.min(share / 4));
            let mut used = title.chars().count();
            let mut fields = Vec::new();
            let since = ("since".to_string(), rfc3339(notice.fired_at));
            for (key, value) in notice.labels.iter().map(|(k, v)| (k.clone(), v.clone())).chain([since]).take(25) {
                let (key, value) = (clip(&key, 64), clip(if value.is_empty() { "-" } else { &value }, 256));
                let size = key.chars().count() + value.chars().count();
                if used + size > share / 2 {
                    break;
                }
                used += size;
                fields.push(json!({"name": key, "value": value, "inline": true}));
            }
            let mut embed = json!({
                "title": title,
                "description": clip(&notice.summary, (share - used).clamp(1, 4096)),
                "color": color,
                "fields": fields,
            });
            if let Some(link) = link(external_url, notice) {
                embed["url"] = Value::String(link);
            }
            embed
        })
        .collect();
    let mut content = title(notification);
    if notification.alerts.len() > EMBEDS {
        content.push_str(&format!(" ({} more not shown)", notification.alerts.len() - EMBEDS));
    }
    json!({"content": clip(&content, 2000), "embeds": embeds, "allowed_mentions": {"parse": []}})
}

/// The body of `POST /api/v2/alerts`: each alert with its labels, annotations and times.
fn alertmanager_v2(notification: &Notification, external_url: &str, now: SystemTime) -> Value {
    Value::Array(
        notification
            .alerts
            .iter()
            .map(|notice| {
                let ends = notice.resolved_at.unwrap_or(now + ALERTMANAGER_ENDS_AFTER);
                let mut alert = json!({
                    "labels": notice.labels,
                    "annotations": annotations(notice),
                    "startsAt": rfc3339(notice.fired_at),
                    "endsAt": rfc3339(ends),
                });
                if let Some(link) = link(external_url, notice) {
                    alert["generatorURL"] = Value::String(link);
                }
                alert
            })
            .collect(),
    )
}

/// A Telegram `sendMessage` body: the title in bold and a line per alert, as HTML (Telegram's `HTML` parse mode
/// knows `<b>`, `<a>` and the `&lt;` `&gt;` `&amp;` entities), within its 4096 characters, without link previews.
fn telegram(notification: &Notification, chat_id: &str, external_url: &str) -> Value {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut text = format!("<b>{}</b>", escape(&title(notification)));
    for (line, notice) in lines(notification).iter().zip(&notification.alerts) {
        let line = match link(external_url, notice) {
            Some(link) => format!("\n{} <a href=\"{}\">details</a>", escape(line), escape(&link)),
            None => format!("\n{}", escape(line)),
        };
        if text.chars().count() + line.chars().count() > 4000 {
            text.push_str("\n…");
            break;
        }
        text.push_str(&line);
    }
    json!({"chat_id": chat_id, "text": text, "parse_mode": "HTML", "link_preview_options": {"is_disabled": true}})
}

/// A subject like Alertmanager's and a plain-text body: one paragraph per alert.
fn email(notification: &Notification, external_url: &str) -> (String, String) {
    let mut body = String::new();
    for notice in &notification.alerts {
        body.push_str(&format!(
            "[{}] {} ({})\n{}\nSince: {}\n",
            notice.status.as_str().to_uppercase(),
            notice.labels.get("alertname").unwrap_or(&notice.rule),
            notice.severity,
            notice.summary,
            rfc3339(notice.fired_at)
        ));
        if let Some(resolved) = notice.resolved_at {
            body.push_str(&format!("Resolved: {}\n", rfc3339(resolved)));
        }
        for (k, v) in &notice.labels {
            body.push_str(&format!("  {k} = {v}\n"));
        }
        if let Some(link) = link(external_url, notice) {
            body.push_str(&format!("Details: {link}\n"));
        }
        body.push('\n');
    }
    body.push_str("-- \nselfmon\n");
    (format!("{} (selfmon)", title(notification)), body)
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
        let payload = alertmanager_webhook(&notification(), "ops", "http://selfmon:8001");
        assert_eq!(payload["version"], "4");
        assert_eq!(payload["status"], "firing");
        assert_eq!(payload["commonLabels"], json!({"alertname": "service_down", "severity": "critical"}));
        assert_eq!(payload["commonAnnotations"], json!({"description": "A configured service is down"}));
        assert_eq!(payload["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(payload["alerts"][1]["status"], "resolved");
        assert_eq!(payload["alerts"][1]["endsAt"], "2027-01-15T08:01:00.000Z");
        assert_eq!(payload["alerts"][0]["generatorURL"], "http://selfmon:8001/v1/alerts/1");
        let unlinked = alertmanager_webhook(&notification(), "ops", "");
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
        let slack = slack(&notification(), "http://s");
        assert_eq!(slack["blocks"][0]["text"]["text"], "[FIRING:1] service_down");
        let section = slack["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.contains("HTTP 503 &lt;b&gt;") && section.ends_with("<http://s/v1/alerts/1|details>"));
        let discord = discord(&notification(), "http://s");
        assert_eq!(discord["allowed_mentions"], json!({"parse": []}));
        assert_eq!(discord["embeds"].as_array().unwrap().len(), 2);
        assert_eq!(discord["embeds"][1]["color"], 0x2E_B6_7D);
        assert_eq!(discord["embeds"][0]["url"], "http://s/v1/alerts/1");
        assert!(
            super::discord(&notification(), "")["embeds"][0].get("url").is_none(),
            "Discord refuses a relative URL"
        );

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
        let discord = super::discord(&big, "http://s");
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
        let (subject, body) = email(&notification(), "http://s");
        assert_eq!(subject, "[FIRING:1] service_down (selfmon)");
        assert!(body.contains("[RESOLVED] service_down (critical)\nbot is unhealthy"), "{body}");
    }
}
