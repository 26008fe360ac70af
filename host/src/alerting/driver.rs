//! The engine on the real clock, on the node that leads: it steps once a second and delivers what each step makes
//! due. When this node stops leading the steps stop (deliveries under way finish); when it leads again, or another
//! node takes the lead, the engine is made afresh from the store, carrying on with the alerts as the last leader
//! left them without repeating what it sent. What a leader made due and did not deliver before it died (or before
//! this node restarted) waits in the store's outbox: the leader sends it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::Alerting;
use crate::alerting::channels;
use crate::alerting::dispatch::Notification;
use crate::alerting::engine::{Due, Engine, RuleStatus};
use crate::cluster::{self, Cluster};

/// How often the engine steps.
const STEP: Duration = Duration::from_secs(1);
/// Notifications being delivered (retries included) at most; past this a notification is dropped and logged.
const MAX_DELIVERIES: usize = 64;

/// Run `engine` whenever this node leads, until `stop`, taking up each new configuration sent on `configs`.
/// Messages of one group go out one after the other, in order (a resend still retrying cannot land after the
/// resolution that followed it); one that could not be delivered goes out again with its group's next message.
pub fn spawn(
    mut engine: Engine,
    mut configs: tokio::sync::watch::Receiver<Arc<Alerting>>,
    cluster: Arc<Cluster>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let (undelivered, returned) = tokio::sync::mpsc::unbounded_channel::<Notification>();
    let deliveries = Deliveries {
        tasks: tasks.clone(),
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_DELIVERIES)),
        turns: HashMap::new(),
        stop: stop.clone(),
        undelivered,
        returned,
    };
    tasks.spawn(async move {
        let mut deliveries = deliveries;
        let mut gained = cluster.gained();
        // The engine made at start-up is current on the one node of a SQLite store; on a shared store another node
        // may have led since.
        let mut fresh = !cluster.is_shared();
        // What an earlier run of this node left in the outbox is handed to whoever leads (this node's name may be
        // live again before the leader looks, which would keep them from it).
        if !disown(&engine, &cluster, &stop).await {
            return;
        }
        loop {
            while !cluster.leads() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = gained.changed() => {}
                    () = tokio::time::sleep(cluster::ROUND) => follow_rule_states(&engine).await,
                }
            }
            if !fresh {
                let alerting = configs.borrow_and_update().clone();
                match engine.renewed(alerting).await {
                    Ok(renewed) => engine = renewed,
                    Err(error) => {
                        tracing::error!(%error, "Cannot read the alerts to carry on with; alerting waits");
                        tokio::time::sleep(cluster::ROUND).await;
                        continue;
                    }
                }
            }
            if cluster.is_shared() {
                tracing::info!(node = %cluster.node(), "This node leads: alerting and the store's upkeep run here");
            }
            fresh = false;
            if !lead(&mut engine, &mut configs, &cluster, &mut deliveries, &stop).await {
                return;
            }
            tracing::warn!(node = %cluster.node(), "This node no longer leads: alerting stops here");
        }
    });
}

/// Deliveries under way, each in its group's turn, and those that failed, to go out again with their group's next
/// message (kept across leads: one that fails after this node stopped leading goes out when it leads again).
struct Deliveries {
    tasks: TaskTracker,
    slots: Arc<tokio::sync::Semaphore>,
    /// For each group, the end of its last delivery: the next one starts after it, so a group's messages go out in
    /// the order they fell due (tasks spawned together may start in any order).
    turns: HashMap<String, oneshot::Receiver<()>>,
    stop: CancellationToken,
    undelivered: tokio::sync::mpsc::UnboundedSender<Notification>,
    returned: tokio::sync::mpsc::UnboundedReceiver<Notification>,
}

/// Step `engine` while this node leads: `false` once `stop` is cancelled.
async fn lead(
    engine: &mut Engine,
    configs: &mut tokio::sync::watch::Receiver<Arc<Alerting>>,
    cluster: &Cluster,
    deliveries: &mut Deliveries,
    stop: &CancellationToken,
) -> bool {
    let mut ticks = tokio::time::interval(STEP);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The states last kept for the other nodes.
    let mut shared = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            _ = ticks.tick() => {}
        }
        if !cluster.leads() {
            return true;
        }
        if configs.has_changed().unwrap_or(false) {
            engine.reconfigure(configs.borrow_and_update().clone());
        }
        let now = SystemTime::now();
        while let Ok(notification) = deliveries.returned.try_recv() {
            engine.requeue(&notification, now);
        }
        deliveries.turns.retain(|_, done| matches!(done.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        // Left behind first: they were due before anything this step makes due.
        for due in adopt(engine, cluster).await {
            deliveries.send(engine, due, now);
        }
        for due in engine.tick(now, cluster.node()).await {
            deliveries.send(engine, due, now);
        }
        if cluster.is_shared() {
            share_rule_states(engine, cluster, &mut shared).await;
        }
    }
}

/// Keep the rules' states in the store for the nodes that do not lead, when they changed since `shared` (the
/// states last kept by this lead).
async fn share_rule_states(engine: &Engine, cluster: &Cluster, shared: &mut Option<Vec<RuleStatus>>) {
    let states: Vec<RuleStatus> = engine.status().lock().expect("rule status lock").values().cloned().collect();
    if shared.as_ref() == Some(&states) {
        return;
    }
    match engine.storage.share_rule_states(cluster.node().to_string(), states.clone()).await {
        Ok(()) => *shared = Some(states),
        Err(error) => tracing::warn!(%error, "Cannot keep the rules' states for the other nodes"),
    }
}

/// Show the rules' states as the leader kept them, on a node that does not lead.
async fn follow_rule_states(engine: &Engine) {
    match engine.storage.shared_rule_states().await {
        Ok(Some(states)) => {
            let status = engine.status();
            let mut status = status.lock().expect("rule status lock");
            *status = states.into_iter().map(|state| (state.name.clone(), state)).collect();
        }
        Ok(None) => {}
        Err(error) => tracing::debug!(%error, "Cannot read the rules' states the leader kept"),
    }
}

/// Hand what an earlier run of this node left in the outbox to whoever leads, trying every round until the store
/// answers: `false` if `stop` came first.
async fn disown(engine: &Engine, cluster: &Cluster, stop: &CancellationToken) -> bool {
    loop {
        match engine.storage.disown_notifications(cluster.node().to_string()).await {
            Ok(0) => return true,
            Ok(left) => {
                tracing::info!(left, "Notifications an earlier run left unsent go to the leader");
                return true;
            }
            Err(error) => {
                tracing::error!(%error, "Cannot hand over the notifications an earlier run left; alerting waits")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(cluster::ROUND) => {}
        }
    }
}

/// The outbox's notifications that no live node is sending, taken over by this node: those of nodes that died,
/// stopped or were renamed, and those an earlier run of a node handed over. Empty when the store could not be
/// read (the next step tries again); what was claimed before a failure is kept.
async fn adopt(engine: &Engine, cluster: &Cluster) -> Vec<Due> {
    let me = cluster.node().to_string();
    let held = match engine.storage.held_notifications(me.clone()).await {
        Ok(held) => held,
        Err(error) => {
            tracing::error!(%error, "Cannot read the notifications left to send");
            return Vec::new();
        }
    };
    if held.is_empty() {
        return Vec::new();
    }
    let live: HashSet<String> = match cluster.nodes().await {
        Ok(nodes) => nodes.into_iter().filter(|n| n.live && n.name != me).map(|n| n.name).collect(),
        Err(error) => {
            tracing::error!(%error, "Cannot read which nodes are live to take over their notifications");
            return Vec::new();
        }
    };
    let mut adopted = Vec::new();
    for held in held.into_iter().filter(|held| !live.contains(&held.node)) {
        match engine.storage.claim_notification(held.id, held.node.clone(), me.clone()).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::error!(%error, "Cannot take over a notification left to send");
                break;
            }
        }
        let notification = held.notification;
        let channel = notification.as_ref().and_then(|notification| {
            engine.alerting.channels.iter().find(|channel| channel.name == notification.channel).cloned()
        });
        let (Some(channel), Some(notification)) = (channel, notification) else {
            tracing::warn!(from = %held.node, "A notification left to send is dropped: its channel is no longer configured, or it cannot be read");
            if let Err(error) = engine.storage.release_notification(held.id).await {
                tracing::error!(%error, "Cannot drop a notification left to send");
            }
            continue;
        };
        tracing::info!(channel = %channel.name, group = %notification.group_key, from = %held.node, "Sending a notification left by a node that stopped before it went out");
        adopted.push(Due { channel, notification, held: Some(held.id) });
    }
    adopted
}

impl Deliveries {
    /// Deliver `due` in its group's turn; it leaves the outbox once delivered or given up (one given up goes back to
    /// the engine, for its group's next message). One cut short by selfmon stopping stays there, for the next run.
    fn send(&mut self, engine: &mut Engine, due: Due, now: SystemTime) {
        let Due { channel, notification, held } = due;
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(channel = %channel.name, group = %notification.group_key, "Too many notifications in progress; this one waits for the group's next message");
            engine.requeue(&notification, now);
            if let Some(id) = held {
                let storage = engine.storage.clone();
                self.tasks.spawn(async move { release(&storage, id).await });
            }
            return;
        };
        let (finished, done) = oneshot::channel::<()>();
        let previous = self.turns.insert(notification.group_key.clone(), done);
        let (storage, stop, external_url) = (engine.storage.clone(), self.stop.clone(), engine.alerting.external_url());
        let (telemetry, undelivered) = (engine.telemetry.clone(), self.undelivered.clone());
        self.tasks.spawn(async move {
            let _slot = slot;
            // Dropped when this delivery is over, which starts the group's next one.
            let _finished = finished;
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            tokio::select! {
                () = stop.cancelled() => {}
                delivered = channels::deliver(&storage, &telemetry, &channel, &notification, &external_url) => {
                    if let Some(id) = held {
                        release(&storage, id).await;
                    }
                    if !delivered {
                        let _ = undelivered.send(notification);
                    }
                }
            }
        });
    }
}

/// Take a notification out of the outbox.
async fn release(storage: &crate::storage::Storage, id: i64) {
    if let Err(error) = storage.release_notification(id).await {
        tracing::error!(%error, "Cannot take a sent notification out of the outbox; a restart may send it again");
    }
}
