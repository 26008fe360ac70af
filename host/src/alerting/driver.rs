//! The engine on the real clock, on the node that leads: it steps once a second and delivers what each step makes
//! due. When this node stops leading the steps stop (deliveries under way finish); when it leads again, or another
//! node takes the lead, the engine is made afresh from the store, carrying on with the alerts as the last leader
//! left them without repeating what it sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::Alerting;
use crate::alerting::channels;
use crate::alerting::dispatch::Notification;
use crate::alerting::engine::Engine;
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
        loop {
            while !cluster.leads() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = gained.changed() => {}
                    () = tokio::time::sleep(cluster::ROUND) => {}
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
    turns: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
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
        deliveries.turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        let external_url = engine.alerting.external_url();
        for (channel, notification) in engine.tick(now).await {
            let Ok(slot) = deliveries.slots.clone().try_acquire_owned() else {
                tracing::warn!(channel = %channel.name, group = %notification.group_key, "Too many notifications in progress; this one waits for the group's next message");
                engine.requeue(&notification, now);
                continue;
            };
            let turn = deliveries.turns.entry(notification.group_key.clone()).or_default().clone();
            let (storage, stop, external_url) = (engine.storage.clone(), deliveries.stop.clone(), external_url.clone());
            let (telemetry, undelivered) = (engine.telemetry.clone(), deliveries.undelivered.clone());
            deliveries.tasks.spawn(async move {
                let _slot = slot;
                let _turn = turn.lock().await;
                tokio::select! {
                    () = stop.cancelled() => {}
                    delivered = channels::deliver(&storage, &telemetry, &channel, &notification, &external_url) => {
                        if !delivered {
                            let _ = undelivered.send(notification);
                        }
                    }
                }
            });
        }
    }
}
