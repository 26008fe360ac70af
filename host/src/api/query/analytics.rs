//! Events and analytics as the API takes and shows them, and a user's data erased on request (an AUDIT record of
//! selfmon's own log, which never says whose data it was).

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Queries, storage};
use crate::analytics::answers::{Analytics, MAX_DAYS};
use crate::analytics::events::{Erased, MAX_BATCH, Rejected, check_event};
use crate::api::error::QueryError;
use crate::ops::journal::AUDIT;

impl Queries {
    /// Check and store a batch of events: how many were stored, and the ones refused with why.
    pub async fn record_events(
        &self,
        _admission: &crate::api::intake::Admission,
        batch: Vec<serde_json::Value>,
    ) -> Result<(usize, Vec<Rejected>), QueryError> {
        if batch.len() > MAX_BATCH {
            return Err(QueryError::Invalid(format!("a batch holds at most {} events", MAX_BATCH)));
        }
        let now = SystemTime::now();
        let oldest = now.checked_sub(self.retention_events).unwrap_or(UNIX_EPOCH);
        let mut events = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for (index, value) in batch.into_iter().enumerate() {
            match check_event(value, now, oldest) {
                Ok(event) => events.push(event),
                Err(error) => rejected.push(Rejected { index, error }),
            }
        }
        let stored = self.usage.record(events).await.map_err(storage)?;
        Ok((stored, rejected))
    }

    /// Users, engagement, satisfaction, retention and AI cost over the last `days`.
    pub async fn analytics(&self, days: u64) -> Result<Analytics, QueryError> {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(QueryError::Invalid(format!("`days` must be 1 to {}", MAX_DAYS)));
        }
        self.storage
            .analytics(days, SystemTime::now(), self.ai.clone(), self.usage.prices.clone())
            .await
            .map_err(storage)
    }

    /// Erase every event, span and log record of a user, and say so in the audit log.
    pub async fn erase_user(&self, user_id: &str, caller: Option<&str>) -> Result<Erased, QueryError> {
        if user_id.is_empty() || user_id.len() > 256 {
            return Err(QueryError::Invalid("a user id is 1 to 256 bytes".into()));
        }
        let erased = self.storage.erase_user(self.storage.privacy().stored_ids(user_id)).await.map_err(storage)?;
        self.telemetry.observe_erasure(&[
            ("events", erased.events),
            ("spans", erased.spans),
            ("log_records", erased.log_records),
        ]);
        // An AUDIT record of selfmon's own log, stored like its other records (never whose data it was).
        tracing::info!(
            target: AUDIT,
            action = "erase_user_data",
            by = caller,
            events = erased.events,
            spans = erased.spans,
            log_records = erased.log_records,
            "Erased the data of a user on request of {}: {} events, {} spans, {} log records",
            caller.unwrap_or("an open API"),
            erased.events,
            erased.spans,
            erased.log_records
        );
        Ok(erased)
    }
}
