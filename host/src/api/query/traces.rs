//! Traces as the API takes and shows them: spans from OTLP exports (with the AI usage their GenAI spans carry),
//! a trace as a tree, and traces searched by the platform's user id.

use super::{Queries, storage};
use crate::api::error::QueryError;
use crate::traces::otlp::ai_events;
use crate::traces::{NewSpan, Trace, TraceSearch, TraceSummary};

impl Queries {
    /// Store what an OTLP trace export held, once admitted with [`Self::admit`]: its spans, and AI usage
    /// events for its GenAI spans. Answers once they are committed.
    pub async fn ingest_spans(
        &self,
        _admission: &crate::api::intake::Admission,
        spans: Vec<NewSpan>,
    ) -> Result<(), QueryError> {
        // Spans first: the events take the user their trace's spans have. A span sent again replaces itself, and its
        // AI usage is not counted twice.
        let events = ai_events(&spans);
        self.storage.write_spans(spans).await.map_err(storage)?;
        if !events.is_empty() {
            self.usage.record(events).await.map_err(storage)?;
        }
        Ok(())
    }

    /// One trace as a tree, with its log records.
    pub async fn trace(&self, trace_id: &str) -> Result<Trace, QueryError> {
        let trace_id = trace_id.to_ascii_lowercase();
        if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(QueryError::Invalid("a trace id is 32 hex digits".into()));
        }
        self.storage.trace(trace_id.clone()).await.map_err(storage)?.ok_or_else(|| QueryError::NotFound {
            code: "no_trace",
            message: format!("no span of trace {trace_id} is stored"),
        })
    }

    /// Traces with a span that matches; `user_id` as the platform knows the user.
    pub async fn search_traces(&self, mut search: TraceSearch) -> Result<Vec<TraceSummary>, QueryError> {
        search.user_id = search.user_id.map(|user| self.storage.privacy().lookup_id(&user));
        self.storage.search_traces(search).await.map_err(storage)
    }
}
