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
//! An attempt that gets no answer within [`ATTEMPT_TIMEOUT`](crate::events::delivery::ATTEMPT_TIMEOUT), a 429 or a
//! 5xx is retried after about 1 s, 2 s, 4 s, 8 s (or the receiver's `Retry-After`): five attempts in all, then the
//! delivery is given up; any other answer ends it at once (see [`delivery`](crate::events::delivery)).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Secret;
use crate::events::delivery::{Attempt, Failure, Receiver, deliver, post};
use crate::events::outgoing::Client;
use crate::events::{self, Event, Events, NAMES, Next};
use crate::storage::Storage;

/// Attempts per delivery.
pub const MAX_ATTEMPTS: u32 = 5;
/// The shortest secret accepted, in characters (as the OpenAPI document's `minLength` counts).
const SECRET_CHARS: usize = 16;
/// Subscriptions at most; each event is delivered to each of them.
pub const MAX_WEBHOOKS: i64 = 100;
/// Deliveries in progress (retries included) at most; an event past this is not delivered, and says so in the log.
const MAX_IN_FLIGHT: usize = 256;

/// A subscription as a caller sends it: `POST /v1/webhooks`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `http://` or `https://`, without credentials in it.
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    pub url: String,
    /// `health.changed`, `alert.fired`, `alert.resolved`.
    #[serde(default)]
    #[schema(required = true, min_items = 1)]
    pub events: Vec<String>,
    /// The key of the signature, at least 16 characters. Never shown again.
    #[serde(default)]
    #[schema(required = true, min_length = 16)]
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
    #[serde(flatten)]
    pub attempt: Attempt,
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
            problems.push(format!("`secret` is required: at least {SECRET_CHARS} characters, to sign deliveries with"));
        } else if self.secret.chars().count() < SECRET_CHARS {
            problems.push(format!("`secret` must be at least {SECRET_CHARS} characters"));
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

/// Deliver every event of the bus to its subscribers through `client` (which reaches only where webhooks may),
/// until `stop`.
pub fn spawn(storage: Storage, client: Client, events: &Events, tasks: &TaskTracker, stop: CancellationToken) {
    let mut receiver = events.subscribe();
    let deliveries = tasks.clone();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    tasks.spawn(async move {
        loop {
            let event = match events::next(&mut receiver, &stop).await {
                Next::Event(event) => event,
                Next::Missed(missed) => {
                    tracing::warn!(missed, "Webhook delivery fell behind the event bus; events were not delivered");
                    continue;
                }
                Next::Done => return,
            };
            if event.relayed {
                continue;
            }
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
                let (storage, client, event, stop) = (storage.clone(), client.clone(), event.clone(), stop.clone());
                deliveries.spawn(async move {
                    let _slot = slot;
                    let body = Bytes::from(event.to_json().to_string());
                    let subscriber = Subscriber {
                        storage: &storage,
                        webhook: id,
                        url: &url,
                        client: &client,
                        secret: secret.as_bytes(),
                        event: &event,
                        body,
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = deliver(&subscriber, MAX_ATTEMPTS) => {}
                    }
                });
            }
        }
    });
}

/// One subscription's delivery of one event.
struct Subscriber<'a> {
    storage: &'a Storage,
    webhook: i64,
    url: &'a str,
    client: &'a Client,
    secret: &'a [u8],
    event: &'a Event,
    body: Bytes,
}

impl Receiver for Subscriber<'_> {
    async fn wanted(&self) -> bool {
        self.storage.webhook_exists(self.webhook).await.unwrap_or(false)
    }

    /// A signed POST; an answer other than a 2xx is a failure with its status alone.
    async fn send(&self) -> Result<Option<u16>, Failure> {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let headers: Vec<(String, Secret)> = [
            ("x-selfmon-event", self.event.name().to_string()),
            ("x-selfmon-delivery", self.event.id.clone()),
            ("x-selfmon-timestamp", timestamp.to_string()),
            ("x-selfmon-signature", signature(self.secret, timestamp, &self.body)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), Secret::new(value)))
        .collect();
        match post(self.client, self.url, &headers, &self.body).await {
            Ok(status) => Ok(Some(status)),
            Err(failure @ Failure { code: Some(status), .. }) => {
                Err(Failure { message: format!("answered HTTP {status}"), ..failure })
            }
            Err(failure) => Err(failure),
        }
    }

    async fn record(&self, attempt: &Attempt) -> bool {
        let (webhook, event) = (self.webhook, self.event);
        if let Some(error) = &attempt.error {
            tracing::warn!(webhook, attempt = attempt.attempt, event = event.name(), error, "Webhook delivery failed");
        }
        match self.storage.record_delivery(webhook, event.id.clone(), event.name(), attempt.clone()).await {
            // The subscription was deleted meanwhile: stop trying.
            Ok(false) => false,
            Ok(true) => true,
            Err(error) => {
                tracing::error!(%error, webhook, "Cannot log a webhook delivery");
                true
            }
        }
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
