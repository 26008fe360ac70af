//! Logs: lines from files, syslog and the HTTP API ([`sources`]) parsed by parser plugins into records
//! ([`parsing`]), and records from OTLP log exports (decoded in [`crate::traces::otlp`]). All of them are counted and
//! stored on the one ingest path ([`ingest`]), stored with a full-text index and searched ([`store`], [`search`]),
//! and analysed: counts, error templates, user activity, security events ([`analysis`]). The record types every
//! path shares are here.

pub mod analysis;
pub mod ingest;
pub mod parsing;
pub mod search;
pub mod sources;
pub mod store;
mod tsquery;

use std::time::SystemTime;

use serde::Serialize;

/// Level names from comma-separated lists (`error,Critical`), lowercased, empty ones left out.
pub fn level_list<'a>(lists: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lists
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(|level| level.trim().to_ascii_lowercase())
        .filter(|level| !level.is_empty())
        .collect()
}

/// The source of selfmon's own log, read back: no other source may use it.
pub const SELFMON_SOURCE: &str = "selfmon";

/// Whether a logger is one of selfmon's own (`selfmon`, `selfmon::security`, `selfmon::audit`, ...): only selfmon's
/// own log may hold records of them, so nobody can plant a security or audit record of selfmon's.
pub fn selfmon_logger(logger: Option<&str>) -> bool {
    logger.is_some_and(|logger| {
        logger.eq_ignore_ascii_case("selfmon")
            || logger.get(..9).is_some_and(|start| start.eq_ignore_ascii_case("selfmon::"))
    })
}

/// The level names, as stored and queried.
pub const LEVELS: [&str; 8] = ["trace", "debug", "info", "warning", "error", "critical", "security", "audit"];

/// One record to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub ts: SystemTime,
    pub level: &'static str,
    pub source: String,
    pub service: Option<String>,
    pub logger: Option<String>,
    pub message: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    /// A JSON object, when there are further fields.
    pub fields: Option<String>,
    pub parsed: bool,
    pub error: Option<String>,
    /// The index of its first line among the lines given to [`parse`](parsing::parse) (not stored).
    pub line: usize,
}

impl NewRecord {
    /// A record of `message` alone: parsed, with no other field.
    pub fn plain(ts: SystemTime, level: &'static str, source: String, message: String) -> Self {
        Self {
            ts,
            level,
            source,
            service: None,
            logger: None,
            message,
            trace_id: None,
            span_id: None,
            correlation_id: None,
            user_id: None,
            fields: None,
            parsed: true,
            error: None,
            line: 0,
        }
    }
}

/// Where lines come from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: String,
    /// The service of records that do not name one.
    pub service: Option<String>,
}

/// How far a tailed file has been read: stored with the records read from it.
#[derive(Debug, Clone)]
pub struct ReadTo {
    pub source: String,
    pub mark: FileMark,
}

/// A tailed file as stored: which file it is and how far it has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMark {
    /// Where it was last read (the file is known by the rest; one without a fingerprint but read past its start, by
    /// its path too).
    pub path: String,
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
    /// How many of its first bytes the fingerprint covers (0: none yet).
    pub head_len: u64,
    /// The SHA-256 of those bytes.
    pub head: [u8; 32],
}

/// A stored record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct StoredRecord {
    pub id: i64,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub level: String,
    pub source: String,
    pub service: Option<String>,
    pub logger: Option<String>,
    pub message: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    /// Further fields, as the record had them.
    #[schema(value_type = Option<Object>)]
    #[graphql(skip)]
    pub fields: Option<serde_json::Value>,
    /// False for a line no parser understood, kept as it was.
    pub parsed: bool,
    /// Why it was not parsed.
    pub error: Option<String>,
}
