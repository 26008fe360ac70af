//! How a reload is asked for (a signal, the API, GraphQL, the plugins folder) and how it went, shared by everything
//! that asks and reports; the reloading itself is the [`Reloader`](super::Reloader)'s.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A change in the plugins folder: the config file is not read again.
    Folder,
    Signal,
    Api,
    GraphQl,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Folder => "plugins folder",
            Self::Signal => "SIGHUP",
            Self::Api => "POST /v1/reload",
            Self::GraphQl => "GraphQL reload",
        }
    }
}

/// How a reload went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ReloadOutcome")]
pub struct Outcome {
    /// `plugins folder`, `SIGHUP`, `POST /v1/reload` or `GraphQL reload`.
    pub trigger: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// Whether the new config and plugins are in place. When not, everything runs as before.
    pub applied: bool,
    /// Every problem that kept the reload from being applied, each naming its file (and line); when applied, a log
    /// source that could not start again.
    pub errors: Vec<String>,
    /// What changed (or would have): plugins loaded, replaced, removed or refused; checks, log sources and rules
    /// added or removed.
    pub changes: Vec<String>,
    /// Config sections that differ from the file selfmon started with, which take effect at the next start.
    pub restart_needed: Vec<String>,
}

/// A reload asked for, and where its outcome goes when somebody waits for it.
pub type Request = (Trigger, Option<oneshot::Sender<Outcome>>);

/// Where reloads are asked for, and how the last one went. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    last: Arc<Mutex<Option<Outcome>>>,
}

impl Handle {
    /// A handle, and the requests it sends (for [`Reloader::spawn`](super::Reloader::spawn)).
    pub fn new() -> (Self, mpsc::Receiver<Request>) {
        let (requests, received) = mpsc::channel(16);
        (Self { requests, last: Arc::default() }, received)
    }

    /// Reload and wait for the outcome; none when selfmon is stopping.
    pub async fn reload(&self, trigger: Trigger) -> Option<Outcome> {
        let (reply, outcome) = oneshot::channel();
        self.requests.send((trigger, Some(reply))).await.ok()?;
        outcome.await.ok()
    }

    /// Ask for a reload without waiting (dropped when many are waiting already: the next one covers it).
    pub fn nudge(&self, trigger: Trigger) {
        let _ = self.requests.try_send((trigger, None));
    }

    /// How the last reload went; none since start-up.
    pub fn last(&self) -> Option<Outcome> {
        self.last.lock().expect("reload outcome lock").clone()
    }

    /// Keep how a reload went.
    pub fn set_last(&self, outcome: Outcome) {
        *self.last.lock().expect("reload outcome lock") = Some(outcome);
    }
}
