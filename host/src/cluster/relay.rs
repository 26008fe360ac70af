//! What other nodes commit, heard here: the newest log record's id (so live tails on this node follow records
//! stored anywhere), alerts that fire and resolve on the leader (for this node's dashboard and subscriptions), and
//! runs made on other nodes, onto this node's board: the store says (`pg_notify`) which check's run was just
//! committed, this node reads that check's latest run and records it, and publishes what changed for its own
//! listeners (the dashboard, GraphQL subscriptions), marked as relayed so that webhooks go out from the node that
//! made the run only. After a gap (the listening connection was lost, or this node fell behind) every check's
//! latest run is read again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::store::ALERTS_CHANNEL;
use crate::checks::board::Board;
use crate::checks::store::RUNS_CHANNEL;
use crate::events::{self, CheckRan, Events, Next, Payload};
use crate::logs::store::LOGS_CHANNEL;
use crate::storage::{Heard, Storage};

/// Notifications gathered before the runs they name are read, so a burst is read at once.
const GATHER: Duration = Duration::from_millis(100);

/// Record other nodes' runs on `board` until `stop`; nothing on SQLite.
pub fn spawn(
    storage: Storage,
    node: String,
    board: Arc<Board>,
    events: Events,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let Some(mut heard) = storage.listen(&[RUNS_CHANNEL, LOGS_CHANNEL, ALERTS_CHANNEL], stop.clone()) else { return };
    announce_alerts(storage.clone(), node.clone(), &events, tasks, stop.clone());
    tasks.spawn(async move {
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return,
                first = heard.recv() => match first {
                    Some(first) => first,
                    None => return,
                },
            };
            let mut all = false;
            let mut checks = BTreeSet::new();
            let mut alerts = Vec::new();
            let mut take = |heard: Heard| match heard {
                Heard::Reconnected => all = true,
                Heard::Notice { channel, payload } if channel == LOGS_CHANNEL => {
                    if let Ok(id) = payload.parse() {
                        storage.set_log_head(id);
                    }
                }
                Heard::Notice { channel, payload } if channel == ALERTS_CHANNEL => {
                    let mut parts = payload.rsplitn(3, ':');
                    let (id, kind, from) = (parts.next(), parts.next(), parts.next());
                    if from != Some(node.as_str())
                        && let (Some(Ok(id)), Some(kind)) = (id.map(str::parse::<i64>), kind)
                    {
                        alerts.push((kind == "fired", id));
                    }
                }
                Heard::Notice { payload, .. } => {
                    checks.insert(payload);
                }
            };
            take(first);
            let gathered = tokio::time::sleep(GATHER);
            tokio::pin!(gathered);
            loop {
                tokio::select! {
                    () = &mut gathered => break,
                    next = heard.recv() => match next {
                        Some(next) => take(next),
                        None => break,
                    },
                }
            }
            for (fired, id) in alerts {
                if let Ok(Some(alert)) = storage.alert(id).await {
                    events.publish_relayed(if fired { Payload::AlertFired(alert) } else { Payload::AlertResolved(alert) });
                }
            }
            // This node's own runs come back too: the board keeps them as they are, being no newer. (A run of a
            // check this node has just taken over may still be committed by the node that had it.)
            let runs = if all {
                storage.latest_runs().await
            } else if checks.is_empty() {
                continue;
            } else {
                storage.latest_runs_of(checks.into_iter().collect()).await
            };
            let runs = match runs {
                Ok(runs) => runs,
                Err(error) => {
                    tracing::warn!(%error, "Cannot read the runs other nodes made; the board shows them at their next run");
                    continue;
                }
            };
            for run in &runs {
                let Some(change) = board.record_newer(run) else { continue };
                if let Some(change) = change {
                    events.publish_relayed(Payload::HealthChanged(change));
                }
                if let Some(state) = board.state_of(&run.check) {
                    let ran = CheckRan::new(state, run.duration.as_secs_f64() * 1000.0, run.started_at);
                    events.publish_relayed(Payload::CheckRan(ran));
                }
            }
        }
    });
}

/// Tell the other nodes of the alerts that fire and resolve here (on the leader), so that their dashboards and
/// subscriptions show them as they happen.
fn announce_alerts(storage: Storage, node: String, events: &Events, tasks: &TaskTracker, stop: CancellationToken) {
    let mut receiver = events.subscribe();
    tasks.spawn(async move {
        loop {
            let event = match events::next(&mut receiver, &stop).await {
                Next::Event(event) => event,
                Next::Missed(_) => continue,
                Next::Done => return,
            };
            let (fired, id) = match &event.payload {
                Payload::AlertFired(alert) => (true, alert.id),
                Payload::AlertResolved(alert) => (false, alert.id),
                _ => continue,
            };
            if event.relayed {
                continue;
            }
            if let Err(error) = storage.announce_alert(&node, fired, id).await {
                tracing::warn!(%error, alert = id, "Cannot tell the other nodes of an alert; they show it when read");
            }
        }
    });
}
