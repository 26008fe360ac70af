//! The one way log records are taken in, whatever their source (a tailed file, syslog, the HTTP API, OTLP): they
//! are stored, then counted for `/metrics`; lines are first parsed by their source's parser.

use std::sync::Arc;
use std::time::SystemTime;

use crate::logs::parsing::{Parsed, Parsing, parse};
use crate::logs::{NewRecord, Origin, ReadTo, SELFMON_SOURCE, selfmon_logger};
use crate::ops::journal::SECURITY;
use crate::ops::telemetry::Telemetry;
use crate::runtime::Runtime;
use crate::storage::{Storage, StorageError};

/// Where records go: stored, then counted. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    pub storage: Storage,
    pub telemetry: Arc<Telemetry>,
}

impl Sink {
    /// Store `records` and count them under their parser (`failed` of them were kept raw because their parser call
    /// failed; the other raw ones are lines the parser did not understand), with how far their file has been
    /// read when they come from one. Answers once they are committed.
    ///
    /// Records are counted here, once they are committed, so a record a tailer holds back and parses again later,
    /// or one refused (the store full or behind) and sent again, is counted once.
    ///
    /// A record that claims one of selfmon's own loggers is not stored (but in selfmon's own log, read back), and
    /// that is a security record.
    pub async fn store(
        &self,
        parser: &str,
        mut records: Vec<NewRecord>,
        failed: usize,
        read_to: Option<ReadTo>,
    ) -> Result<usize, StorageError> {
        let before = records.len();
        let source = records.first().map(|r| r.source.clone()).unwrap_or_default();
        records.retain(|r| r.source == SELFMON_SOURCE || !selfmon_logger(r.logger.as_deref()));
        if records.len() < before {
            tracing::warn!(target: SECURITY, %source, refused = before - records.len(), "Log records claiming selfmon's own loggers were not stored");
        }
        let levels: Vec<&str> = records.iter().map(|r| r.level).collect();
        let raw = records.iter().filter(|r| !r.parsed).count();
        let stored = self.storage.write_logs(records, read_to).await?;
        self.telemetry.observe_logs(parser, &levels, raw, failed);
        Ok(stored)
    }

    /// Parse `lines` with `parsing` and store the records: what became of the lines, once they are committed.
    pub async fn ingest(
        &self,
        runtime: &Runtime,
        parsing: &Parsing,
        origin: &Origin,
        lines: Vec<String>,
    ) -> Result<Parsed, StorageError> {
        let (records, mut parsed) = parse(runtime, parsing, origin, lines, SystemTime::now()).await;
        let made = records.len();
        parsed.refused = made - self.store(&parsing.name, records, parsed.parser_failures, None).await?;
        Ok(parsed)
    }
}
