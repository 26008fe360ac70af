//! The SQL of analytics: events written (user ids pseudonymized, metadata redacted) with the samples they move,
//! a user's data erased, and the events the answers are made from.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::analytics::answers::{Analytics, Budget, DAY_MS, Row, Users, summarise};
use crate::analytics::cost::Prices;
use crate::analytics::events::{Erased, NewEvent};
use crate::config::AiConfig;
use crate::storage::samples::insert_sample;
use crate::storage::sql::{self, OptionalExtension, params};
use crate::storage::{Sample, Storage, StorageError, rfc3339, to_millis};

impl Storage {
    /// Store events in one transaction (user ids pseudonymized, metadata redacted), with the rating samples and the
    /// AI cost counters they move; `keys` are the counter labels of AI usage events. Which events were stored.
    ///
    /// `ai_cost_dollars_total` is read and advanced inside the transaction, so it only ever grows, and each change
    /// writes the total before it (1 ms earlier) beside the new one: an `increase` over any window sees every
    /// change in it. An event without a user takes the user its trace's spans have.
    pub async fn write_events(
        &self,
        mut events: Vec<NewEvent>,
        keys: Vec<Option<(String, String)>>,
        samples: Vec<Sample>,
    ) -> Result<Vec<bool>, StorageError> {
        let privacy = self.privacy().clone();
        for event in &mut events {
            if let Some(user) = &mut event.user_id {
                *user = privacy.user(user);
            }
            if let Some(metadata) = &mut event.metadata {
                privacy.redact_map(metadata);
            }
        }
        self.apply(move |db| {
            let mut inserted = Vec::with_capacity(events.len());
            let mut increments: BTreeMap<(String, String), f64> = BTreeMap::new();
            for (e, key) in events.iter().zip(&keys) {
                let stored = db.execute(
                    "INSERT INTO events (ts, kind, user_id, action, service, provider, model, input_tokens,
                                         output_tokens, latency_ms, success, cost, rating, trace_id, span_id, metadata)
                     VALUES (?1, ?2, COALESCE(?3, (SELECT user_id FROM spans WHERE trace_id = ?14 AND user_id IS NOT NULL
                                                   LIMIT 1)),
                             ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                     ON CONFLICT DO NOTHING",
                    params![
                    to_millis(e.ts),
                    e.kind,
                    e.user_id,
                    e.action,
                    e.service,
                    e.provider,
                    e.model,
                    e.input_tokens.map(u64::cast_signed),
                    e.output_tokens.map(u64::cast_signed),
                    e.latency_ms,
                    e.success,
                    e.cost,
                    e.rating,
                    e.trace_id,
                    e.span_id,
                    e.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string()),
                    ],
                )? == 1;
                if stored && let Some(key) = key {
                    *increments.entry(key.clone()).or_default() += e.cost.unwrap_or(0.0);
                }
                inserted.push(stored);
            }
            for sample in &samples {
                insert_sample(db, sample)?;
            }
            let now = SystemTime::now();
            for ((provider, model), increment) in increments {
                let labels = vec![("model".to_string(), model), ("provider".to_string(), provider)];
                let before: f64 = db
                    .query_row(
                        "SELECT s.value FROM series AS r JOIN samples AS s ON s.series_id = r.id
                         WHERE r.name = 'ai_cost_dollars_total' AND r.labels = ?1 ORDER BY s.ts DESC LIMIT 1",
                        [serde_json::to_string(&labels).unwrap_or_default()],
                        |row| row.get(0),
                    )
                    .optional()?
                    .unwrap_or(0.0);
                let sample = |time: SystemTime, value: f64| Sample {
                    name: "ai_cost_dollars_total".into(),
                    labels: labels.clone(),
                    time,
                    value,
                };
                insert_sample(db, &sample(now - Duration::from_millis(1), before))?;
                insert_sample(db, &sample(now, before + increment))?;
            }
            Ok(inserted)
        })
        .await
    }

    /// Remove every event, span and log record of a user (stored under any of `ids`), and every log record and
    /// event of the user's traces.
    pub async fn erase_user(&self, ids: Vec<String>) -> Result<Erased, StorageError> {
        self.apply(move |db| {
            let mut erased = Erased::default();
            for id in &ids {
                let traces = "SELECT DISTINCT trace_id FROM spans WHERE user_id = ?1";
                erased.log_records += db.execute(
                    &format!(
                        "DELETE FROM logs WHERE user_id = ?1 OR (trace_id IS NOT NULL AND trace_id IN ({traces}))"
                    ),
                    [id],
                )? as u64;
                erased.events += db.execute(
                    &format!(
                        "DELETE FROM events WHERE user_id = ?1 OR (trace_id IS NOT NULL AND trace_id IN ({traces}))"
                    ),
                    [id],
                )? as u64;
                erased.spans += db.execute("DELETE FROM spans WHERE user_id = ?1", [id])? as u64;
            }
            Ok(erased)
        })
        .await
    }

    /// Analytics over the `days` before now; `prices` tells which models have a price.
    pub async fn analytics(
        &self,
        days: u64,
        now: SystemTime,
        ai: AiConfig,
        prices: Prices,
    ) -> Result<Analytics, StorageError> {
        let to = to_millis(now);
        let from = to - i64::try_from(days).unwrap_or(0) * DAY_MS;
        self.read(move |db| {
            let rows: Vec<Row> = db.query_map(
                "SELECT ts, kind, user_id, action, provider, model, input_tokens, output_tokens, latency_ms, success,
                        cost, rating
                 FROM events WHERE ts >= ?1 AND ts <= ?2 ORDER BY ts",
                params![from, to],
                |row| {
                    Ok(Row {
                        ts: row.get(0)?,
                        kind: row.get(1)?,
                        user: row.get(2)?,
                        action: row.get(3)?,
                        provider: row.get(4)?,
                        model: row.get(5)?,
                        input: row.get::<_, Option<i64>>(6)?.unwrap_or(0),
                        output: row.get::<_, Option<i64>>(7)?.unwrap_or(0),
                        latency: row.get(8)?,
                        success: row.get::<_, Option<bool>>(9)?.unwrap_or(true),
                        cost: row.get(10)?,
                        rating: row.get(11)?,
                    })
                },
            )?;
            let distinct_since = |since: i64| -> sql::Result<u64> {
                db.query_row(
                    "SELECT COUNT(DISTINCT user_id) FROM events WHERE ts > ?1 AND ts <= ?2 AND user_id IS NOT NULL",
                    params![since, to],
                    |r| r.get::<_, i64>(0),
                )
                .map(i64::cast_unsigned)
            };
            let spent_since = |since: i64| -> sql::Result<f64> {
                db.query_row(
                    "SELECT COALESCE(SUM(cost), 0) FROM events WHERE kind = 'ai_usage' AND ts > ?1 AND ts <= ?2",
                    params![since, to],
                    |r| r.get(0),
                )
            };
            let first_seen: HashMap<String, i64> = db
                .query_map("SELECT user_id, MIN(ts) FROM events WHERE user_id IS NOT NULL GROUP BY user_id", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .into_iter()
                .collect();
            let today = to.div_euclid(DAY_MS) * DAY_MS;
            let month_start = humantime::parse_rfc3339(&format!("{}-01T00:00:00Z", &rfc3339(to)[..7]))
                .map(to_millis)
                .unwrap_or(today);
            let users = Users {
                daily_active: distinct_since(to - DAY_MS)?,
                weekly_active: distinct_since(to - 7 * DAY_MS)?,
                monthly_active: distinct_since(to - 30 * DAY_MS)?,
                active: 0,
                new: 0,
                by_day: Vec::new(),
            };
            let budget = Budget {
                daily_budget: ai.daily_budget,
                last_24_hours: spent_since(to - DAY_MS)?,
                today: spent_since(today - 1)?,
                monthly_budget: ai.monthly_budget,
                this_month: spent_since(month_start - 1)?,
                monthly_share: None,
            };
            Ok(summarise(days, from, to, &rows, &first_seen, users, budget, &prices))
        })
        .await
    }
}
