//! Nodes sharing one PostgreSQL store: who is alive, who runs which check, who leads. Each node writes a heartbeat
//! on the database's clock every [`ROUND`] and renews its leases in the same round; a node whose heartbeat is older
//! than [`TTL`] is gone, and its leases lapse with it. Every check goes to one live node among those whose config
//! has it, by rendezvous hashing (so a node joining or leaving moves only its share), and is run only while that
//! node's lease on it holds; one node at a time holds the `leader` lease and runs alerting and the store's upkeep.
//! A check's runs, wherever they happen, reach every node's board through [`relay`].
//!
//! On SQLite there is one node, which holds everything and never asks the database.

pub mod relay;
mod store;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checks::board::Board;
use crate::storage::sql::Engine;
use crate::storage::{Storage, StorageError};
pub use store::{NodeStatus, Round};

/// How often a node beats and renews its leases.
pub const ROUND: Duration = Duration::from_secs(2);
/// How long a heartbeat and a lease last: past it, a node that has not renewed is gone and its checks move.
pub const TTL: Duration = Duration::from_secs(6);
/// A lease is trusted locally until this long before the database says it ends, for the time its answer took to
/// arrive and for runs starting at the edge.
const MARGIN: Duration = Duration::from_secs(1);
/// How long a stopping node tries to give up its leases.
const LEAVE_PATIENCE: Duration = Duration::from_secs(5);
/// How long a starting node waits for a node of the same name to stop beating (one killed and restarted at once).
const JOIN_PATIENCE: Duration = Duration::from_secs(10);

/// This node, and what it holds.
pub struct Cluster {
    node: String,
    started: SystemTime,
    /// Present when nodes share a PostgreSQL store.
    shared: Option<Shared>,
    board: Arc<Board>,
    held: Mutex<Held>,
    /// Bumped when this node takes a check or the lead, for tasks waiting for one.
    gained: watch::Sender<u64>,
}

struct Shared {
    storage: Storage,
    incarnation: String,
    address: String,
    /// Checks running now: their leases are kept until the run is over, even when they are to move.
    running: Mutex<HashMap<String, usize>>,
}

#[derive(Default)]
struct Held {
    checks: BTreeSet<String>,
    leader: bool,
    /// Until when the leases above are trusted.
    until: Option<Instant>,
}

/// Held while a check runs; see [`Cluster::running`].
pub struct Running<'a> {
    cluster: &'a Cluster,
    check: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(shared) = &self.cluster.shared {
            let mut running = shared.running.lock().expect("running lock");
            if let Some(count) = running.get_mut(&self.check) {
                *count -= 1;
                if *count == 0 {
                    running.remove(&self.check);
                }
            }
        }
    }
}

impl Cluster {
    /// The only node of a SQLite store: it runs every check and leads.
    pub fn alone(node: String, board: Arc<Board>) -> Arc<Self> {
        let started = SystemTime::now();
        Arc::new(Self { node, started, shared: None, board, held: Mutex::default(), gained: watch::Sender::new(0) })
    }

    /// Join the nodes of `storage` as `node`, whose API is at `address`, and take this node's share at once. On
    /// SQLite, [`Cluster::alone`]. Refused while another live node has the same name (after waiting a little for
    /// one that was killed and is restarting).
    pub async fn join(
        storage: &Storage,
        node: String,
        address: String,
        board: Arc<Board>,
    ) -> Result<Arc<Self>, StorageError> {
        if storage.engine() != Engine::Postgres {
            return Ok(Self::alone(node, board));
        }
        let shared = Shared {
            storage: storage.clone(),
            incarnation: format!("{:016x}", fastrand::u64(..)),
            address,
            running: Mutex::default(),
        };
        let cluster = Arc::new(Self {
            node,
            started: SystemTime::now(),
            shared: Some(shared),
            board,
            held: Mutex::default(),
            gained: watch::Sender::new(0),
        });
        let patience = Instant::now() + JOIN_PATIENCE;
        loop {
            match cluster.round().await? {
                Some(()) => return Ok(cluster),
                None if Instant::now() < patience => tokio::time::sleep(ROUND).await,
                None => {
                    return Err(StorageError::Write(format!(
                        "a node named {:?} is already running on this database: give this one another `[cluster] \
                         node` (or SELFMON_NODE)",
                        cluster.node
                    )));
                }
            }
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether nodes share the store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether this node runs `check` now.
    pub fn holds(&self, check: &str) -> bool {
        self.shared.is_none() || {
            let held = self.held.lock().expect("held lock");
            held.until.is_some_and(|until| Instant::now() < until) && held.checks.contains(check)
        }
    }

    /// Whether this node leads now: runs alerting and the store's upkeep.
    pub fn leads(&self) -> bool {
        self.shared.is_none() || {
            let held = self.held.lock().expect("held lock");
            held.until.is_some_and(|until| Instant::now() < until) && held.leader
        }
    }

    /// Changes when this node takes a check or the lead.
    pub fn gained(&self) -> watch::Receiver<u64> {
        self.gained.subscribe()
    }

    /// Say that `check` runs now: its lease is not given up until the returned guard is dropped.
    pub fn running(&self, check: &str) -> Running<'_> {
        if let Some(shared) = &self.shared {
            *shared.running.lock().expect("running lock").entry(check.to_string()).or_default() += 1;
        }
        Running { cluster: self, check: check.to_string() }
    }

    /// Every node the store has seen, with its checks and heartbeat; on SQLite, this node with every check.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, StorageError> {
        match &self.shared {
            Some(shared) => shared.storage.cluster_nodes().await,
            None => Ok(vec![NodeStatus::alone(&self.node, self.started, self.board.runnable())]),
        }
    }

    /// Beat and renew every [`ROUND`] until `stop`, then give up this node's leases so others take them at once.
    pub fn spawn(self: &Arc<Self>, tasks: &TaskTracker, stop: CancellationToken) {
        if self.shared.is_none() {
            return;
        }
        let cluster = self.clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(ROUND);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Said once when rounds start failing, and once when they succeed again.
            let mut failing = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let round = tokio::select! {
                    () = stop.cancelled() => break,
                    round = cluster.round() => round,
                };
                match (&round, failing) {
                    (Ok(Some(())), true) => tracing::info!(node = %cluster.node, "This node renews its leases again"),
                    (Ok(None), false) => tracing::error!(node = %cluster.node, "Another node has taken this node's name; this one runs nothing until it is gone"),
                    (Err(error), false) => tracing::warn!(%error, "Cannot renew this node's leases; it stops running checks when they lapse"),
                    _ => {}
                }
                failing = !matches!(round, Ok(Some(())));
            }
            // A database that is away does not hold up stopping: the leases then lapse by themselves.
            if tokio::time::timeout(LEAVE_PATIENCE, cluster.leave()).await.is_err() {
                tracing::warn!("Could not give up this node's leases in time; other nodes take them when they lapse");
            }
        });
    }

    /// One round: beat, see who is alive, take or renew this node's share, give up the rest. `None` when a live
    /// node of another incarnation has this node's name.
    async fn round(&self) -> Result<Option<()>, StorageError> {
        let Some(shared) = &self.shared else { return Ok(Some(())) };
        let sent = Instant::now();
        let known = self.board.runnable();
        // Kept a round longer than they are wanted: a run may have started under them since the last round.
        let mut keep: Vec<String> = shared.running.lock().expect("running lock").keys().cloned().collect();
        keep.extend(self.held.lock().expect("held lock").checks.iter().cloned());
        let me = store::Me {
            node: self.node.clone(),
            incarnation: shared.incarnation.clone(),
            address: shared.address.clone(),
            checks: known,
        };
        let Some(round) = shared.storage.cluster_round(me, keep, TTL).await? else {
            self.held.lock().expect("held lock").until = None;
            return Ok(None);
        };
        let until = (sent + TTL).checked_sub(MARGIN);
        let gained = {
            let mut held = self.held.lock().expect("held lock");
            let gained = !round.checks.is_subset(&held.checks) || (round.leader && !held.leader);
            *held = Held { checks: round.checks, leader: round.leader, until };
            gained
        };
        if gained {
            self.gained.send_modify(|count| *count += 1);
        }
        Ok(Some(()))
    }

    /// Give up every lease and say this node has left.
    async fn leave(&self) {
        let Some(shared) = &self.shared else { return };
        *self.held.lock().expect("held lock") = Held::default();
        if let Err(error) = shared.storage.cluster_leave(self.node.clone(), shared.incarnation.clone()).await {
            tracing::warn!(%error, "Cannot give up this node's leases; other nodes take them when they lapse");
        }
    }
}

/// The node among `nodes` that runs `check`: the highest score of the pair, the same on every node (FNV-1a over
/// both names, then mixed so that near names spread).
pub fn owner<'a>(check: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by_key(|node| (score(node, check), *node))
}

fn score(node: &str, check: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0]).chain(check.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finalizer.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_one_owner_and_a_leaving_node_moves_only_its_own() {
        let checks: Vec<String> = (0..600).map(|i| format!("check-{i}")).collect();
        let three = ["a", "b", "c"];
        let owners: Vec<&str> = checks.iter().map(|c| owner(c, three).unwrap()).collect();
        for node in three {
            let share = owners.iter().filter(|o| **o == node).count();
            assert!((150..=250).contains(&share), "{node} runs {share} of 600");
        }
        for (check, before) in checks.iter().zip(&owners) {
            let after = owner(check, ["a", "c"]).unwrap();
            if *before == "b" {
                assert!(after == "a" || after == "c");
            } else {
                assert_eq!(after, *before, "{check} moved though its node stayed");
            }
        }
        assert_eq!(owner("x", ["b", "a"]), owner("x", ["a", "b"]), "the order nodes are listed in does not matter");
        assert_eq!(owner("x", std::iter::empty()), None);
    }
}
