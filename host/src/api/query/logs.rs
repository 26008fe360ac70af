//! Logs as the API takes and shows them: ingestion within the intake budget (so a flood waits or is refused rather
//! than growing memory), search, live tails, counts, analysis and security events.

use super::{MAX_TAILS, Queries, check_hours, storage};
use crate::api::error::QueryError;
use crate::logs::analysis::{Aggregation, Analysis, MAX_BUCKETS, Period, Security};
use crate::logs::ingest::Sink;
use crate::logs::parsing::{Parsed, Parsing};
use crate::logs::search::{Found, Search, SearchError};
use crate::logs::{LEVELS, NewRecord, Origin, StoredRecord};
use crate::traces::otlp::Refusal;

/// Records a live tail sends from before it started, at most.
pub const MAX_BACKLOG: u64 = 1000;

/// Writes queued past which log ingestion is refused with a 503, so a flood cannot grow memory.
const BUSY_QUEUE: usize = 2048;

impl Queries {
    /// Store log records received over OTLP, once admitted with [`Self::admit`].
    pub async fn ingest_records(
        &self,
        _admission: &crate::api::intake::Admission,
        records: Vec<NewRecord>,
    ) -> Result<(), QueryError> {
        self.sink().store("otlp", records, 0, None).await.map_err(storage)?;
        Ok(())
    }

    /// Log record counts per period, level and service over the last `hours`.
    pub async fn aggregate_logs(&self, hours: u64, period: Period) -> Result<Aggregation, QueryError> {
        check_hours(hours)?;
        if hours * 3_600_000 / period.millis().unsigned_abs() > MAX_BUCKETS {
            return Err(QueryError::Invalid(format!(
                "{hours} hours by {} is more than {MAX_BUCKETS} buckets: choose a longer period",
                serde_json::to_value(period).unwrap_or_default().as_str().unwrap_or_default()
            )));
        }
        self.storage.aggregate_logs(hours, period).await.map_err(storage)
    }

    /// Log analysis over the last `hours`: counts, error templates, user activity, security events.
    pub async fn analyse_logs(&self, hours: u64) -> Result<Analysis, QueryError> {
        check_hours(hours)?;
        self.storage.analyse_logs(hours).await.map_err(storage)
    }

    /// Security events over the last `hours`.
    pub async fn security_events(&self, hours: u64) -> Result<Security, QueryError> {
        check_hours(hours)?;
        self.storage.security_events(hours).await.map_err(storage)
    }

    /// How lines posted with `?parser=NAME` are parsed (a parser plugin or `auto`, without config).
    pub fn parsing(&self, parser: &str) -> Result<Parsing, QueryError> {
        Parsing::resolve(parser, Vec::new(), &self.live().plugins).map_err(QueryError::Invalid)
    }

    /// Admit an ingest request holding `bytes` (its body as sent) into the [`Budget`](crate::api::intake::Budget) of
    /// `[ingest] memory`, before its body is inflated and decoded; refused at once while storage is behind.
    pub async fn admit(&self, bytes: u64) -> Result<crate::api::intake::Admission, Refusal> {
        if self.storage.queued() > BUSY_QUEUE {
            return Err(Refusal::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, QueryError::Busy.to_string()));
        }
        self.intake.admit(bytes).await
    }

    /// Parse lines and store them, once admitted with [`Self::admit`]; answers once they are committed.
    pub async fn ingest(
        &self,
        _admission: &crate::api::intake::Admission,
        parsing: &Parsing,
        origin: Origin,
        lines: Vec<String>,
    ) -> Result<Parsed, QueryError> {
        self.sink().ingest(&self.runtime, parsing, &origin, lines).await.map_err(storage)
    }

    /// Follow the records matching `filter` as they are committed, oldest first: after the record with
    /// id `resume` (a reconnecting client's last one), or else starting with up to `backlog` records from before.
    /// Ends when the receiver is dropped or selfmon stops.
    pub async fn tail_logs(
        &self,
        filter: Search,
        resume: Option<i64>,
        backlog: u64,
    ) -> Result<tokio::sync::mpsc::Receiver<StoredRecord>, QueryError> {
        let permit =
            self.tails.clone().try_acquire_owned().map_err(|_| {
                QueryError::Unavailable(format!("{MAX_TAILS} live tails are open already; retry later"))
            })?;
        self.tail_logs_holding(filter, resume, backlog, permit).await
    }

    /// A live tail that holds `permit` (from a pool of its caller's) while it runs.
    pub async fn tail_logs_holding(
        &self,
        mut filter: Search,
        resume: Option<i64>,
        backlog: u64,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<tokio::sync::mpsc::Receiver<StoredRecord>, QueryError> {
        filter.user_id = filter.user_id.map(|user| self.storage.privacy().lookup_id(&user));
        if backlog > MAX_BACKLOG {
            return Err(QueryError::Invalid(format!("`backlog` must be at most {MAX_BACKLOG}")));
        }
        let mut head = self.storage.log_head();
        let now = *head.borrow_and_update();
        // The first search checks the filter (a bad query is a 400 here, not a silent stream) and finds the backlog.
        let recent = self.search_logs(Search { offset: 0, limit: backlog.max(1), ..filter.clone() }).await?;
        let (mut after, first) = match resume {
            Some(id) => (id, Vec::new()),
            None => {
                let mut records: Vec<StoredRecord> =
                    recent.records.into_iter().take(usize::try_from(backlog).unwrap_or(usize::MAX)).collect();
                records.reverse();
                (records.iter().map(|r| r.id).fold(now, i64::max), records)
            }
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        let storage = self.storage.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for record in first {
                if sender.send(record).await.is_err() {
                    return;
                }
            }
            loop {
                loop {
                    let page = Search { after: Some(after), offset: 0, limit: 1000, ..filter.clone() };
                    let Ok(found) = storage.search_logs(page).await else { return };
                    let Some(last) = found.records.last() else { break };
                    after = last.id;
                    let more = found.more;
                    for record in found.records {
                        if sender.send(record).await.is_err() {
                            return;
                        }
                    }
                    if !more {
                        break;
                    }
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                    () = stopping.cancelled() => return,
                }
            }
        });
        Ok(receiver)
    }

    pub async fn search_logs(&self, mut search: Search) -> Result<Found, QueryError> {
        search.user_id = search.user_id.map(|user| self.storage.privacy().lookup_id(&user));
        for level in &search.levels {
            if !LEVELS.contains(&level.as_str()) {
                return Err(QueryError::Invalid(format!("`level`: `{level}` is not one of {}", LEVELS.join(", "))));
            }
        }
        self.storage.search_logs(search).await.map_err(|error| match error {
            SearchError::Syntax(_) => QueryError::Invalid(error.to_string()),
            SearchError::Storage(error) => storage(error),
        })
    }

    /// Where the API's log records go: counted, then stored.
    fn sink(&self) -> Sink {
        Sink { storage: self.storage.clone(), telemetry: self.telemetry.clone() }
    }
}
