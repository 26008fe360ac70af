//! The host's internal event bus: what changed, for whoever listens (GraphQL subscriptions, webhooks, and the
//! dashboard to come). Publishing never waits; a listener that falls behind misses events and is told how many.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::alerts::Alert;
use crate::health::Health;

/// Events kept for listeners that are behind.
const BACKLOG: usize = 1024;

/// A check's own status changed from one run to the next.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject)]
pub struct HealthChange {
    pub check: String,
    pub plugin: String,
    pub from: Health,
    pub to: Health,
    pub summary: String,
    /// The dependency that is down and explains the failure, if one does.
    pub cause: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Payload {
    HealthChanged(HealthChange),
    AlertFired(Alert),
    AlertResolved(Alert),
}

/// One event, with an id unique to this host (for receivers that deduplicate) and its time.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub at: SystemTime,
    pub payload: Payload,
}

/// The names subscribers choose events by.
pub const NAMES: [&str; 3] = ["health.changed", "alert.fired", "alert.resolved"];

impl Event {
    pub fn name(&self) -> &'static str {
        match self.payload {
            Payload::HealthChanged(_) => NAMES[0],
            Payload::AlertFired(_) => NAMES[1],
            Payload::AlertResolved(_) => NAMES[2],
        }
    }

    /// `{"id", "event", "at", "data"}`: what webhooks receive.
    pub fn to_json(&self) -> serde_json::Value {
        let data = match &self.payload {
            Payload::HealthChanged(change) => serde_json::to_value(change),
            Payload::AlertFired(alert) | Payload::AlertResolved(alert) => serde_json::to_value(alert),
        }
        .unwrap_or_default();
        serde_json::json!({
            "id": self.id,
            "event": self.name(),
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "data": data,
        })
    }
}

/// The bus; clones share it.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
    next: Arc<AtomicU64>,
    prefix: Arc<str>,
}

impl Default for Events {
    fn default() -> Self {
        let started = crate::storage::to_millis(SystemTime::now());
        Self {
            sender: broadcast::channel(BACKLOG).0,
            next: Arc::new(AtomicU64::new(1)),
            prefix: format!("{started:x}").into(),
        }
    }
}

impl Events {
    pub fn publish(&self, payload: Payload) {
        let id = format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        // No listener is not an error.
        let _ = self.sender.send(Arc::new(Event { id, at: SystemTime::now(), payload }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}
