//! How the rules fared at the leader's last evaluation, kept in a shared store for the nodes that do not lead, so
//! `/v1/alerts/rule-states` answers alike on every node. A SQLite store has one node, which leads: nothing is kept.

use std::time::SystemTime;

use crate::alerting::engine::RuleStatus;
use crate::storage::sql::{Engine, OptionalExtension, params};
use crate::storage::{Storage, StorageError, to_millis};

impl Storage {
    /// Keep `states` as the leader `node` evaluated them.
    pub async fn share_rule_states(&self, node: String, states: Vec<RuleStatus>) -> Result<(), StorageError> {
        if self.engine() != Engine::Postgres {
            return Ok(());
        }
        let states = serde_json::to_string(&states).unwrap_or_default();
        let now = to_millis(SystemTime::now());
        self.apply(move |db| {
            db.execute(
                "INSERT INTO rule_states (name, node, states, updated_at) VALUES ('leader', ?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET node = excluded.node, states = excluded.states,
                     updated_at = excluded.updated_at",
                params![node, states, now],
            )
        })
        .await
        .map(|_| ())
    }

    /// The states the leader kept last; `None` before any or on SQLite.
    pub async fn shared_rule_states(&self) -> Result<Option<Vec<RuleStatus>>, StorageError> {
        if self.engine() != Engine::Postgres {
            return Ok(None);
        }
        let states: Option<String> = self
            .read(|db| {
                db.query_row("SELECT states FROM rule_states WHERE name = 'leader'", [], |r| r.get(0)).optional()
            })
            .await?;
        Ok(states.and_then(|states| serde_json::from_str(&states).ok()))
    }
}
