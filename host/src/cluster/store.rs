//! The cluster's SQL (PostgreSQL only): nodes and their heartbeats, leases on checks and on the lead. Every time is
//! the database's clock, so nodes' clocks may differ.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cluster::owner;
use crate::storage::sql::{Engine, OptionalExtension, params};
use crate::storage::{Storage, StorageError, rfc3339, to_millis};

/// The database's clock, in Unix ms.
const NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
/// Rows of nodes that left or vanished this long ago are forgotten.
const FORGET_MS: i64 = 7 * 86_400_000;

/// This node, as it announces itself.
pub struct Me {
    pub node: String,
    pub incarnation: String,
    pub address: String,
    /// The enabled checks of its config.
    pub checks: Vec<String>,
}

/// What a round left this node holding, for the lease time from when the round was sent.
pub struct Round {
    pub checks: BTreeSet<String>,
    pub leader: bool,
}

/// A node, for `/v1/status` and the dashboard.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub name: String,
    /// Its API, as it listens.
    pub address: String,
    pub version: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub last_heartbeat: String,
    pub heartbeat_age_seconds: f64,
    /// Beating within the lease time and not stopped.
    pub live: bool,
    /// Whether it runs alerting and the store's upkeep now.
    pub leader: bool,
    /// The checks it runs now.
    pub checks: Vec<String>,
}

impl NodeStatus {
    /// The one node of a SQLite store.
    pub fn alone(name: &str, started: SystemTime, checks: Vec<String>) -> Self {
        let now = to_millis(SystemTime::now());
        Self {
            name: name.to_string(),
            address: String::new(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: rfc3339(to_millis(started)),
            last_heartbeat: rfc3339(now),
            heartbeat_age_seconds: 0.0,
            live: true,
            leader: true,
            checks,
        }
    }
}

/// `None` from SQLite, where there is no cluster to coordinate.
fn shared<T>(answer: Option<Result<T, StorageError>>) -> Result<T, StorageError> {
    answer.unwrap_or_else(|| Err(StorageError::Write("a SQLite store has one node".into())))
}

impl Storage {
    /// Beat, see who is alive, take or renew `me`'s share of the checks (giving up the others it has, but those in
    /// `keep`) and try for the lead, each lease for `ttl`. `None` when a live node of another incarnation has `me`'s name.
    pub async fn cluster_round(&self, me: Me, keep: Vec<String>, ttl: Duration) -> Result<Option<Round>, StorageError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        shared(
            self.coordinate(move |db| {
                let checks = serde_json::to_string(&me.checks).unwrap_or_default();
                let beat = db
                    .query_row(
                        &format!(
                            "INSERT INTO nodes (name, incarnation, address, version, started_at, heartbeat_at, checks)
                             VALUES (?1, ?2, ?3, ?4, {NOW}, {NOW}, ?5)
                             ON CONFLICT (name) DO UPDATE SET
                                 started_at = CASE WHEN nodes.incarnation = excluded.incarnation
                                              THEN nodes.started_at ELSE excluded.started_at END,
                                 incarnation = excluded.incarnation, address = excluded.address,
                                 version = excluded.version, heartbeat_at = excluded.heartbeat_at,
                                 checks = excluded.checks, left_at = NULL
                             WHERE nodes.incarnation = excluded.incarnation OR nodes.left_at IS NOT NULL
                                 OR nodes.heartbeat_at < {NOW} - ?6
                             RETURNING heartbeat_at"
                        ),
                        params![me.node, me.incarnation, me.address, env!("CARGO_PKG_VERSION"), checks, ttl_ms],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?;
                if beat.is_none() {
                    return Ok(None);
                }
                let live: Vec<(String, Vec<String>)> = db.query_map(
                    &format!("SELECT name, checks FROM nodes WHERE left_at IS NULL AND heartbeat_at >= {NOW} - ?1"),
                    params![ttl_ms],
                    |r| {
                        let checks: String = r.get(1)?;
                        Ok((r.get(0)?, serde_json::from_str(&checks).unwrap_or_default()))
                    },
                )?;
                let mine: Vec<&String> = me
                    .checks
                    .iter()
                    .filter(|check| {
                        let knowing = live.iter().filter(|(_, checks)| checks.contains(check));
                        owner(check, knowing.map(|(name, _)| name.as_str())) == Some(me.node.as_str())
                    })
                    .collect();
                let taken: BTreeSet<String> = db
                    .query_map(
                        &format!(
                            "INSERT INTO leases (name, node, expires_at)
                             SELECT 'check:' || value, ?1, {NOW} + ?2 FROM json_array_elements_text(?3::text::json)
                             ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
                             WHERE leases.node = excluded.node OR leases.expires_at < {NOW}
                             RETURNING substr(name, 7)"
                        ),
                        params![me.node, ttl_ms, serde_json::to_string(&mine).unwrap_or_default()],
                        |r| r.get(0),
                    )?
                    .into_iter()
                    .collect();
                // Those kept but no longer wanted are renewed too (a run under one may outlast the lease), not
                // taken; the wanted ones were renewed above.
                let unwanted: Vec<&String> = keep.iter().filter(|check| !mine.contains(check)).collect();
                if !unwanted.is_empty() {
                    db.execute(
                        &format!(
                            "UPDATE leases SET expires_at = {NOW} + ?2 WHERE node = ?1
                             AND name IN (SELECT 'check:' || value FROM json_array_elements_text(?3::text::json))"
                        ),
                        params![me.node, ttl_ms, serde_json::to_string(&unwanted).unwrap_or_default()],
                    )?;
                }
                let kept: Vec<&String> = mine.iter().copied().chain(unwanted).collect();
                db.execute(
                    "DELETE FROM leases WHERE node = ?1 AND name LIKE 'check:%'
                     AND substr(name, 7) NOT IN (SELECT json_array_elements_text(?2::text::json))",
                    params![me.node, serde_json::to_string(&kept).unwrap_or_default()],
                )?;
                let leader = db
                    .query_row(
                        &format!(
                            "INSERT INTO leases (name, node, expires_at) VALUES ('leader', ?1, {NOW} + ?2)
                             ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
                             WHERE leases.node = excluded.node OR leases.expires_at < {NOW}
                             RETURNING 1"
                        ),
                        params![me.node, ttl_ms],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .is_some();
                if leader {
                    db.execute(&format!("DELETE FROM nodes WHERE heartbeat_at < {NOW} - ?1"), params![FORGET_MS])?;
                }
                Ok(Some(Round { checks: taken, leader }))
            })
            .await,
        )
    }

    /// Give up `node`'s leases and mark it as left, unless another incarnation has taken its name since.
    pub async fn cluster_leave(&self, node: String, incarnation: String) -> Result<(), StorageError> {
        shared(
            self.coordinate(move |db| {
                let ours = db.execute(
                    &format!("UPDATE nodes SET left_at = {NOW} WHERE name = ?1 AND incarnation = ?2"),
                    params![node, incarnation],
                )?;
                if ours > 0 {
                    db.execute("DELETE FROM leases WHERE node = ?1", params![node])?;
                }
                Ok(())
            })
            .await,
        )
    }

    /// Every node the store knows, by name. A read like others (waiting for a turn), so that many asking never
    /// keep the heartbeats from their connections.
    pub async fn cluster_nodes(&self) -> Result<Vec<NodeStatus>, StorageError> {
        let ttl_ms = i64::try_from(super::TTL.as_millis()).unwrap_or(i64::MAX);
        if self.engine() != Engine::Postgres {
            return shared(None);
        }
        self.read(move |db| {
            db.query_map(
                &format!(
                    "SELECT n.name, n.address, n.version, n.started_at, n.heartbeat_at, n.left_at IS NULL, {NOW},
                             COALESCE((SELECT json_agg(substr(l.name, 7) ORDER BY l.name)::text FROM leases AS l
                                       WHERE l.node = n.name AND l.name LIKE 'check:%' AND l.expires_at >= {NOW}),
                                      '[]'),
                             EXISTS (SELECT 1 FROM leases AS l
                                     WHERE l.node = n.name AND l.name = 'leader' AND l.expires_at >= {NOW})
                         FROM nodes AS n ORDER BY n.name"
                ),
                [],
                |r| {
                    let (beat, now): (i64, i64) = (r.get(4)?, r.get(6)?);
                    let checks: String = r.get(7)?;
                    Ok(NodeStatus {
                        name: r.get(0)?,
                        address: r.get(1)?,
                        version: r.get(2)?,
                        started_at: rfc3339(r.get(3)?),
                        last_heartbeat: rfc3339(beat),
                        heartbeat_age_seconds: (now - beat).max(0) as f64 / 1000.0,
                        live: r.get::<_, bool>(5)? && now - beat <= ttl_ms,
                        leader: r.get(8)?,
                        checks: serde_json::from_str(&checks).unwrap_or_default(),
                    })
                },
            )
        })
        .await
    }
}
