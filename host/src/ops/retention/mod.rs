//! The periodic cleanup: log records past their level's retention, check runs, metric samples, alerts, events and
//! spans past theirs, then, when the database is over `[retention] max_size`, the oldest log records until it is
//! not. Freed pages are handed back to the file system (incremental vacuum), so the file shrinks.
//!
//! Every step is a small transaction of its own on the writer, so ingestion waits at most for one step, never for
//! the whole cleanup.

mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::RetentionConfig;
use crate::logs::LEVELS;
use crate::ops::telemetry::Telemetry;
use crate::storage::{Storage, StorageError, to_millis};

/// Ordinary full-text index merge steps after records expire.
const MERGE_STEPS: usize = 8;
/// Rounds of deletion and compaction a cleanup spends on the size cap at most.
const SHRINK_ROUNDS: usize = 3;

/// The smallest `[retention] interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What one cleanup removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Log records past their retention, and removed for the size cap.
    pub logs_expired: u64,
    pub logs_over_size: u64,
    pub check_runs: u64,
    pub samples: u64,
    /// Resolved alerts, notification attempts and silences over.
    pub alerts: u64,
    /// Events and spans past their retention.
    pub events: u64,
    pub spans: u64,
    /// Pages handed back to the file system.
    pub pages_freed: u64,
}

/// Clean up every `interval` while this node leads, the first time right away.
pub fn spawn(
    storage: Storage,
    config: RetentionConfig,
    telemetry: Arc<Telemetry>,
    cluster: Arc<Cluster>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            // One node cleans up a shared store: the one that leads.
            if !cluster.leads() {
                continue;
            }
            let Sweep { swept, failed } = sweep(&storage, &config, &stop).await;
            telemetry.observe_cleanup(&[
                ("logs_expired", swept.logs_expired),
                ("logs_over_size", swept.logs_over_size),
                ("check_runs", swept.check_runs),
                ("samples", swept.samples),
                ("alerts", swept.alerts),
                ("events", swept.events),
                ("spans", swept.spans),
            ]);
            if swept != Swept::default() {
                tracing::info!(
                    logs_expired = swept.logs_expired,
                    logs_over_size = swept.logs_over_size,
                    check_runs = swept.check_runs,
                    samples = swept.samples,
                    alerts = swept.alerts,
                    events = swept.events,
                    spans = swept.spans,
                    pages_freed = swept.pages_freed,
                    "Cleaned up the store"
                );
            }
            if failed.iter().any(|(_, error)| matches!(error, StorageError::Closed)) {
                return;
            }
            for (step, error) in failed {
                tracing::warn!(step, %error, "A step of the store's cleanup failed; it is tried again next time");
            }
        }
    });
}

/// What one cleanup did: what it removed, and the steps that failed (with why). A step that fails does not keep the
/// others from running: expired check runs still go when the log index cannot be merged.
#[derive(Debug, Default)]
pub struct Sweep {
    pub swept: Swept,
    pub failed: Vec<(&'static str, StorageError)>,
}

impl Sweep {
    /// What a step removed (nothing when it failed, which is noted).
    fn took<T: Default>(&mut self, step: &'static str, outcome: Result<T, StorageError>) -> T {
        outcome.unwrap_or_else(|error| {
            self.failed.push((step, error));
            T::default()
        })
    }
}

/// One cleanup.
pub async fn sweep(storage: &Storage, config: &RetentionConfig, stop: &CancellationToken) -> Sweep {
    let now = SystemTime::now();
    let before = |age: Duration| to_millis(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
    let mut sweep = Sweep::default();
    sweep.took("partitions ahead", storage.prepare_partitions().await);
    let expired = async {
        let mut deleted = 0;
        let mut longest = Duration::ZERO;
        for level in LEVELS {
            let keep = config.log_levels.get(level).map_or(config.logs, |d| **d);
            longest = longest.max(keep);
            deleted += storage.delete_logs(level, before(keep), stop).await?;
        }
        // Days past every level's retention go whole.
        deleted += storage.drop_partitions("logs", before(longest)).await?.unwrap_or(0);
        Ok(deleted)
    };
    sweep.swept.logs_expired = sweep.took("expired logs", expired.await);
    sweep.swept.check_runs = sweep.took("check runs", storage.delete_runs(before(config.check_runs), stop).await);
    sweep.swept.samples = sweep.took("metric samples", storage.delete_samples(before(config.metrics), stop).await);
    sweep.swept.alerts = sweep.took("alerts", storage.delete_alerts(before(config.alerts), stop).await);
    sweep.swept.events = sweep.took("events", storage.delete_events(before(config.events), stop).await);
    let spans_before = before(config.spans).saturating_mul(1_000_000);
    sweep.swept.spans = sweep.took("spans", storage.delete_spans(spans_before, stop).await);
    if sweep.swept.logs_expired > 0 {
        // Deleted records leave tombstones in the full-text index until its segments merge; a few ordinary merge
        // steps each time keep that from piling up without rewriting the whole index.
        sweep.took("log index merge", storage.merge_log_index(MERGE_STEPS).await);
    }
    if let Some(cap) = config.max_size {
        sweep.swept.logs_over_size =
            sweep.took("size cap", storage.shrink_logs_to(cap.as_u64(), SHRINK_ROUNDS, stop).await);
    }
    sweep.swept.pages_freed = sweep.took("vacuum", storage.vacuum(stop).await);
    sweep
}
