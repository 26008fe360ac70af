//! Outgoing webhooks: subscriptions to events of the [bus](crate::events), delivered as signed JSON POSTs with
//! retries, every attempt logged.
//!
//! Each delivery carries:
//! - `X-Selfmon-Event`: the event's name (`health.changed`, `alert.fired`, `alert.resolved`);
//! - `X-Selfmon-Delivery`: the event's id, the same on every retry, for receivers that deduplicate;
//! - `X-Selfmon-Timestamp`: Unix seconds when the attempt was signed;
//! - `X-Selfmon-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the subscription's secret, of the
//!   timestamp, a `.`, and the body. A receiver recomputes it and rejects old timestamps to stop replays.
//!
//! An attempt that does not get a 2xx within [`ATTEMPT_TIMEOUT`] is retried after 1 s, 2 s, 4 s, 8 s: five attempts
//! in all, then the delivery is given up.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::channels::Failure;
use crate::alerts::{ChangeError, Page};
use crate::config::Secret;
use crate::events::{Event, Events, NAMES};
use crate::runtime::TlsConfig;
use crate::storage::{Storage, StorageError, rfc3339, sql_count, to_millis};

/// Attempts per delivery.
pub const MAX_ATTEMPTS: u32 = 5;
/// The wait before the first retry; it doubles after each.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How long one attempt may take, connection to the end of the answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest secret accepted.
const SECRET_BYTES: usize = 16;
/// Subscriptions at most; each event is delivered to each of them.
const MAX_WEBHOOKS: i64 = 100;
/// Deliveries in progress (retries included) at most; an event past this is not delivered, and says so in the log.
const MAX_IN_FLIGHT: usize = 256;

/// A subscription as a caller sends it: `POST /v1/webhooks`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `http://` or `https://`, without credentials in it.
    #[serde(default)]
    pub url: String,
    /// `health.changed`, `alert.fired`, `alert.resolved`.
    #[serde(default)]
    pub events: Vec<String>,
    /// The key of the signature, at least 16 bytes. Never shown again.
    #[serde(default)]
    pub secret: String,
}

impl std::fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRequest").field("url", &self.url).field("events", &self.events).finish_non_exhaustive()
    }
}

/// A stored subscription, without its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// One attempt to deliver one event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub event: String,
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
    pub status_code: Option<u16>,
    /// `delivered`, `failed` (retried later) or `gave_up` (the last attempt failed).
    pub outcome: String,
    pub error: Option<String>,
    pub duration_ms: f64,
}

impl WebhookRequest {
    /// Every problem with the request; repeated event names are dropped.
    pub fn validate(&mut self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        match self.url.parse::<http::Uri>() {
            Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => problems
                .push("`url` must not carry credentials (user:password@): selfmon signs each delivery instead".into()),
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty()) => {}
            _ if self.url.is_empty() => problems.push("`url` is required".into()),
            _ => problems.push(format!("`url` must be an absolute http:// or https:// URL, not `{}`", self.url)),
        }
        let mut seen = Vec::new();
        self.events.retain(|event| {
            let first = !seen.contains(event);
            seen.push(event.clone());
            first
        });
        if self.events.is_empty() {
            problems.push(format!("`events` must name at least one of {}", NAMES.join(", ")));
        }
        for event in &self.events {
            if !NAMES.contains(&event.as_str()) {
                problems.push(format!("`events`: `{event}` is not one of {}", NAMES.join(", ")));
            }
        }
        if self.secret.is_empty() {
            problems.push(format!("`secret` is required: at least {SECRET_BYTES} bytes, to sign deliveries with"));
        } else if self.secret.len() < SECRET_BYTES {
            problems.push(format!("`secret` must be at least {SECRET_BYTES} bytes"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `timestamp.body` under `secret`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Storage {
    pub async fn create_webhook(&self, request: WebhookRequest) -> Result<Webhook, ChangeError> {
        let now = SystemTime::now();
        let events = serde_json::to_string(&request.events).unwrap_or_default();
        let created = self
            .apply(move |db| {
                let count: i64 = db.query_row("SELECT COUNT(*) FROM webhooks", [], |r| r.get(0))?;
                if count >= MAX_WEBHOOKS {
                    return Ok(None);
                }
                db.execute(
                    "INSERT INTO webhooks (url, events, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![request.url, events, request.secret, to_millis(now)],
                )?;
                Ok(Some(Webhook {
                    id: db.last_insert_rowid(),
                    url: request.url,
                    events: request.events,
                    created_at: humantime::format_rfc3339_millis(now).to_string(),
                }))
            })
            .await?;
        created.ok_or_else(|| ChangeError::Conflict(format!("there are {MAX_WEBHOOKS} webhooks already")))
    }

    pub async fn delete_webhook(&self, id: i64) -> Result<(), ChangeError> {
        let deleted = self.apply(move |db| db.execute("DELETE FROM webhooks WHERE id = ?1", [id])).await?;
        if deleted == 0 {
            Err(ChangeError::NotFound { code: "unknown_webhook", message: format!("no webhook with id {id}") })
        } else {
            Ok(())
        }
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StorageError> {
        self.read(|db| {
            let mut statement = db.prepare("SELECT id, url, events, created_at FROM webhooks ORDER BY id")?;
            let rows = statement.query_map([], |row| {
                Ok(Webhook {
                    id: row.get(0)?,
                    url: row.get(1)?,
                    events: serde_json::from_str(&row.get::<_, String>(2)?).unwrap_or_default(),
                    created_at: rfc3339(row.get(3)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Whether a webhook exists.
    pub async fn webhook_exists(&self, id: i64) -> Result<bool, StorageError> {
        self.read(move |db| db.query_row("SELECT COUNT(*) FROM webhooks WHERE id = ?1", [id], |r| r.get::<_, i64>(0)))
            .await
            .map(|count| count > 0)
    }

    /// A webhook's delivery attempts, newest first.
    pub async fn deliveries(&self, webhook: i64, offset: u64, limit: u64) -> Result<Page<Delivery>, StorageError> {
        self.read(move |db| {
            let total: i64 =
                db.query_row("SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = ?1", [webhook], |r| r.get(0))?;
            let mut statement = db.prepare(
                "SELECT id, event_id, event, attempt, at, status_code, outcome, error, duration_ms
                 FROM webhook_deliveries WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let rows = statement.query_map(params![webhook, sql_count(limit), sql_count(offset)], |row| {
                Ok(Delivery {
                    id: row.get(0)?,
                    event_id: row.get(1)?,
                    event: row.get(2)?,
                    attempt: row.get(3)?,
                    at: rfc3339(row.get(4)?),
                    status_code: row.get(5)?,
                    outcome: row.get(6)?,
                    error: row.get(7)?,
                    duration_ms: row.get(8)?,
                })
            })?;
            Ok(Page { items: rows.collect::<Result<_, _>>()?, total: total.unsigned_abs(), offset, limit })
        })
        .await
    }

    /// The subscriptions to an event, with their secrets: for delivery only.
    async fn subscribers(&self, event: &'static str) -> Result<Vec<(i64, String, String)>, StorageError> {
        self.read(move |db| {
            let mut statement = db.prepare(
                "SELECT w.id, w.url, w.secret FROM webhooks AS w, json_each(w.events) AS e WHERE e.value = ?1",
            )?;
            let rows = statement.query_map([event], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect()
        })
        .await
    }
}

/// Deliver every event of the bus to its subscribers until `stop`.
pub fn spawn(storage: Storage, events: &Events, tasks: &TaskTracker, stop: CancellationToken) {
    let mut receiver = events.subscribe();
    let deliveries = tasks.clone();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    tasks.spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                received = receiver.recv() => match received {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "Webhook delivery fell behind the event bus; events were not delivered");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            let subscribers = match storage.subscribers(event.name()).await {
                Ok(subscribers) => subscribers,
                Err(error) => {
                    tracing::error!(%error, "Cannot read webhook subscriptions");
                    continue;
                }
            };
            for (id, url, secret) in subscribers {
                let Ok(slot) = in_flight.clone().try_acquire_owned() else {
                    tracing::warn!(
                        webhook = id,
                        event = event.name(),
                        "Too many webhook deliveries in progress; this event is not delivered"
                    );
                    continue;
                };
                let (storage, event, stop) = (storage.clone(), event.clone(), stop.clone());
                deliveries.spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = deliver(&storage, id, &url, secret.as_bytes(), &event) => {}
                    }
                });
            }
        }
    });
}

async fn deliver(storage: &Storage, webhook: i64, url: &str, secret: &[u8], event: &Arc<Event>) {
    let body = Bytes::from(event.to_json().to_string());
    let mut wait = FIRST_RETRY;
    for attempt in 1..=MAX_ATTEMPTS {
        // A subscription deleted meanwhile gets nothing more.
        if !storage.webhook_exists(webhook).await.unwrap_or(false) {
            return;
        }
        let started = Instant::now();
        let at = SystemTime::now();
        let timestamp = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let result = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            post(url, event, &body, &signature(secret, timestamp, &body), timestamp),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(ATTEMPT_TIMEOUT))));
        let (status, error) = match result {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (Some(status), Some(format!("answered HTTP {status}"))),
            Err(error) => (None, Some(error)),
        };
        let outcome = match (&error, attempt) {
            (None, _) => "delivered",
            (Some(_), MAX_ATTEMPTS) => "gave_up",
            (Some(_), _) => "failed",
        };
        if let Some(error) = &error {
            tracing::warn!(webhook, attempt, event = event.name(), error, "Webhook delivery failed");
        }
        let record = (event.id.clone(), event.name(), started.elapsed().as_secs_f64() * 1000.0, error.clone());
        let stored = storage
            .apply(move |db| {
                db.execute(
                    "INSERT INTO webhook_deliveries
                     (webhook_id, event_id, event, attempt, at, status_code, outcome, error, duration_ms)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?1)",
                    params![webhook, record.0, record.1, attempt, to_millis(at), status, outcome, record.3, record.2],
                )
            })
            .await;
        match stored {
            // The subscription was deleted meanwhile: stop trying.
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => tracing::error!(%error, webhook, "Cannot log a webhook delivery"),
        }
        if error.is_none() {
            return;
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

/// One POST, through the alert channels' sender; the status code, or why there is none.
async fn post(url: &str, event: &Event, body: &Bytes, signature: &str, timestamp: u64) -> Result<u16, String> {
    let headers: Vec<(String, Secret)> = [
        ("x-selfmon-event", event.name().to_string()),
        ("x-selfmon-delivery", event.id.clone()),
        ("x-selfmon-timestamp", timestamp.to_string()),
        ("x-selfmon-signature", signature.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), Secret::new(value)))
    .collect();
    match crate::alerting::channels::post(url, &headers, body, &TlsConfig::system()).await {
        Ok(status) | Err(Failure { code: Some(status), .. }) => Ok(status),
        Err(failure) => Err(failure.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently: hmac.new(b"Jefe", b"1700000000.{}", hashlib.sha256).hexdigest() in Python.
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, b"{}"),
            "sha256=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
    }

    #[test]
    fn requests_are_validated() {
        let request = |url: &str, events: &[&str], secret: &str| WebhookRequest {
            url: url.into(),
            events: events.iter().map(ToString::to_string).collect(),
            secret: secret.into(),
        };
        let mut twice =
            request("https://hooks.example.com/x", &["health.changed", "health.changed"], "0123456789abcdef");
        assert!(twice.validate().is_ok());
        assert_eq!(twice.events, ["health.changed"]);
        let problems = request("ftp://x", &["health.changed", "deploy"], "short").validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(request("https://x", &[], "0123456789abcdef").validate().unwrap_err()[0].contains("at least one"));
        let credentials = request("https://u:p@x/hook", &["alert.fired"], "0123456789abcdef").validate().unwrap_err();
        assert!(credentials[0].contains("credentials"), "{credentials:?}");
        assert!(!format!("{twice:?}").contains("0123456789abcdef"), "Debug hides the secret");
    }
}
