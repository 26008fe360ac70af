//! Events: the host's internal bus (what changed, for whoever listens: GraphQL subscriptions, webhooks, the
//! dashboard's WebSocket), the outgoing webhooks it feeds ([`webhooks`]), and the one way selfmon delivers a POST to
//! a receiver with retries ([`delivery`]), which alert channels use too, over selfmon's own HTTP client
//! ([`outgoing`]). Publishing never waits; a listener that falls behind misses events and is told how many. Their
//! SQL is in [`store`].
//!
//! Webhooks and subscriptions take the events in [`NAMES`]. Every run and every system sample goes out on a
//! channel of its own ([`Events::subscribe_live`], for the dashboard), so their volume never pushes a status change
//! or an alert out of a slow listener's backlog.

pub mod delivery;
pub mod outgoing;
pub mod store;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::alerting::alert::Alert;
use crate::checks::board::{CheckState, HealthChange};
use crate::checks::health::Health;
use crate::storage::{Sample, rfc3339, to_millis};

/// Events kept for listeners that are behind.
const BACKLOG: usize = 1024;

/// A run of a check, as the board shows the check after it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRan {
    pub check: String,
    pub plugin: String,
    /// The board's status: `degraded` when a dependency is the cause of a failure.
    pub status: Health,
    pub summary: String,
    pub duration_ms: f64,
    /// RFC 3339.
    pub started_at: String,
    pub cause: Option<String>,
}

impl CheckRan {
    pub fn new(state: CheckState, duration_ms: f64, started_at: SystemTime) -> Self {
        Self {
            check: state.name,
            plugin: state.plugin,
            status: state.status,
            summary: state.summary,
            duration_ms,
            started_at: rfc3339(to_millis(started_at)),
            cause: state.cause,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Payload {
    HealthChanged(HealthChange),
    AlertFired(Alert),
    AlertResolved(Alert),
    CheckRan(CheckRan),
    SystemSampled(Arc<[Sample]>),
}

/// One event, with an id unique to this host (for receivers that deduplicate) and its time.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub at: SystemTime,
    pub payload: Payload,
    /// Caused by a run another node made (heard through the store): shown here, sent to webhooks by that node.
    pub relayed: bool,
}

/// The names subscribers choose events by.
pub const NAMES: [&str; 3] = ["health.changed", "alert.fired", "alert.resolved"];

impl Event {
    pub fn name(&self) -> &'static str {
        match self.payload {
            Payload::HealthChanged(_) => NAMES[0],
            Payload::AlertFired(_) => NAMES[1],
            Payload::AlertResolved(_) => NAMES[2],
            Payload::CheckRan(_) => "check.ran",
            Payload::SystemSampled(_) => "system.sampled",
        }
    }

    /// `{"id", "event", "at", "data"}`: what webhooks receive.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "event": self.name(),
            "at": rfc3339(to_millis(self.at)),
            "data": self.data(),
        })
    }

    /// What happened, as JSON.
    pub fn data(&self) -> serde_json::Value {
        match &self.payload {
            Payload::HealthChanged(change) => serde_json::to_value(change),
            Payload::AlertFired(alert) | Payload::AlertResolved(alert) => serde_json::to_value(alert),
            Payload::CheckRan(run) => serde_json::to_value(run),
            Payload::SystemSampled(samples) => Ok(serde_json::json!({
                "samples": samples
                    .iter()
                    .map(|s| serde_json::json!({
                        "name": s.name,
                        "labels": s
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                            .collect::<serde_json::Map<_, _>>(),
                        "value": s.value,
                    }))
                    .collect::<Vec<_>>(),
            })),
        }
        .unwrap_or_default()
    }
}

/// The bus; clones share it.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
    /// Check runs and system samples.
    live: broadcast::Sender<Arc<Event>>,
    next: Arc<AtomicU64>,
    prefix: Arc<str>,
}

impl Default for Events {
    fn default() -> Self {
        let started = to_millis(SystemTime::now());
        Self {
            sender: broadcast::channel(BACKLOG).0,
            live: broadcast::channel(BACKLOG).0,
            next: Arc::new(AtomicU64::new(1)),
            prefix: format!("{started:x}").into(),
        }
    }
}

impl Events {
    pub fn publish(&self, payload: Payload) {
        self.send(payload, false);
    }

    /// Publish what a run made on another node changed here, for this node's listeners; webhooks leave it to the
    /// node that made the run.
    pub fn publish_relayed(&self, payload: Payload) {
        self.send(payload, true);
    }

    fn send(&self, payload: Payload, relayed: bool) {
        let id = format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        let sender = match payload {
            Payload::CheckRan(_) | Payload::SystemSampled(_) => &self.live,
            _ => &self.sender,
        };
        // No listener is not an error.
        let _ = sender.send(Arc::new(Event { id, at: SystemTime::now(), payload, relayed }));
    }

    /// Status changes and alerts: the events in [`NAMES`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Check runs and system samples.
    pub fn subscribe_live(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }
}

/// What a listener of the bus gets next, until `stop`.
pub enum Next {
    Event(Arc<Event>),
    /// It fell behind, and this many events went by.
    Missed(u64),
    /// Stopped, or the bus is gone.
    Done,
}

/// The next thing `receiver` gets from the bus, or [`Next::Done`] once `stop` is cancelled.
pub async fn next(receiver: &mut broadcast::Receiver<Arc<Event>>, stop: &CancellationToken) -> Next {
    tokio::select! {
        () = stop.cancelled() => Next::Done,
        received = receiver.recv() => match received {
            Ok(event) => Next::Event(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Next::Missed(missed),
            Err(broadcast::error::RecvError::Closed) => Next::Done,
        },
    }
}
