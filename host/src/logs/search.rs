//! A search of the stored log records, and what it finds.

use std::time::SystemTime;

use serde::Serialize;

use crate::logs::StoredRecord;
use crate::storage::StorageError;

/// A search of the stored records.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// An FTS5 query over messages: words, `"a phrase"`, `prefix*`, `AND`/`OR`/`NOT`.
    pub text: Option<String>,
    pub levels: Vec<String>,
    pub service: Option<String>,
    pub source: Option<String>,
    pub trace_id: Option<String>,
    pub user_id: Option<String>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    /// Only records stored after the one with this id, oldest first (a live tail's next page).
    pub after: Option<i64>,
    pub offset: u64,
    pub limit: u64,
}

/// A page of records, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub records: Vec<StoredRecord>,
    /// Whether more records match past this page.
    pub more: bool,
    pub offset: u64,
    pub limit: u64,
}

/// Why a search has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the search text is not a valid query: {0} (words, \"a phrase\", prefix*, AND, OR, NOT)")]
    Syntax(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
