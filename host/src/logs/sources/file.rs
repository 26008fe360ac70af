//! Tailing log files: every `[[log_source]]` of kind `file` follows its paths and globs, parses new lines with its
//! parser plugin and stores them. The same tailer reads selfmon's own log back when `[logging] ingest` is on.
//!
//! Each file's read offset is stored in the transaction that stores its records, so a restart resumes exactly where
//! the last commit ended: nothing is lost and nothing is stored twice. A file is known by its device and inode:
//! - renamed away (rotation) and replaced: the old file is read to its end through the handle already open, then
//!   the new one from its start;
//! - truncated in place (copy-truncate): reading starts again from the start;
//! - seen for the first time: read from its start.
//!
//! Only whole lines are read (a line still being written waits for its newline, unless the file has been quiet for
//! [`PARTIAL_AFTER`]). While a file is growing, its last record is held back, so continuation lines (a traceback)
//! that arrive later still join it; it is stored once the file has been quiet for [`SETTLE`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::logs::ingest::Sink;
use crate::logs::parsing::{Parsing, parse};
use crate::logs::{NewRecord, Origin, ReadTo};
use crate::runtime::Runtime;
use crate::storage::StorageError;

/// The most read from one file in one pass.
const READ_CHUNK: u64 = 4 << 20;
/// How long a file must be quiet before its last record is stored.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a file must be quiet before a last line without its newline is taken as it is.
pub const PARTIAL_AFTER: Duration = Duration::from_secs(5);

/// A file's identity: device and inode.
type FileId = (u64, u64);

/// Where reading a file stands.
struct Followed {
    file: File,
    id: FileId,
    offset: u64,
    /// Its size when last looked at, and when that changed.
    size: u64,
    grew: Instant,
    /// The last chunk's write, still committing while the next chunk is read and parsed.
    pending: Option<tokio::task::JoinHandle<Result<usize, StorageError>>>,
}

impl Followed {
    /// Wait for the chunk being committed, if any.
    async fn settle(&mut self) -> Result<(), StorageError> {
        match self.pending.take() {
            Some(write) => write.await.map_err(|e| StorageError::Write(e.to_string()))?.map(|_| ()),
            None => Ok(()),
        }
    }
}

/// One tailed source.
pub struct Tailer {
    pub sink: Sink,
    pub runtime: Arc<Runtime>,
    pub parsing: Parsing,
    pub origin: Origin,
    pub patterns: Vec<String>,
    pub poll: Duration,
}

impl Tailer {
    pub fn spawn(self, tasks: &TaskTracker, stop: CancellationToken) {
        tasks.spawn(async move {
            let mut files: HashMap<PathBuf, Followed> = HashMap::new();
            loop {
                for path in self.paths() {
                    if stop.is_cancelled() {
                        break;
                    }
                    let Err(error) = self.follow(&path, &mut files, &stop).await else { continue };
                    match error {
                        TailError::Storage(StorageError::Closed) => return,
                        TailError::Storage(error) => {
                            tracing::error!(source = %self.origin.source, path = %path.display(), %error, "Cannot store log records; trying again");
                        }
                        TailError::Io(error) => {
                            tracing::warn!(source = %self.origin.source, path = %path.display(), %error, "Cannot read a log file");
                        }
                    }
                    // The file is opened again at its stored offset next time, once a write in flight has ended.
                    if let Some(mut followed) = files.remove(&path) {
                        let _ = followed.settle().await;
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(self.poll) => {}
                }
            }
            // Writes in flight end before the task does, so a tailer started after it (by a reload) reads on from
            // where this one's last commit ended.
            for followed in files.values_mut() {
                let _ = followed.settle().await;
            }
        });
    }

    /// The files the patterns match now.
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .patterns
            .iter()
            .filter_map(|pattern| glob::glob(pattern).ok())
            .flat_map(|matches| matches.filter_map(Result::ok))
            .filter(|path| path.is_file())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Read what is new in one file, and store it (a file renamed away is read to its end even when stopping).
    async fn follow(
        &self,
        path: &Path,
        files: &mut HashMap<PathBuf, Followed>,
        stop: &CancellationToken,
    ) -> Result<(), TailError> {
        let metadata = std::fs::metadata(path)?;
        let id = (metadata.dev(), metadata.ino());
        if let Some(followed) = files.get_mut(path)
            && followed.id != id
        {
            // Rotated: finish the old file through the open handle, then start on the new one.
            while self.read(path, followed, true).await? {}
            followed.settle().await?;
            files.remove(path);
        }
        if !files.contains_key(path) {
            let stored = self.stored_offset(path, id).await?;
            let mut file = File::open(path)?;
            let offset = stored.filter(|offset| *offset <= metadata.len()).unwrap_or(0);
            file.seek(SeekFrom::Start(offset))?;
            let size = metadata.len();
            files.insert(path.to_path_buf(), Followed { file, id, offset, size, grew: Instant::now(), pending: None });
        }
        let followed = files.get_mut(path).expect("inserted above");
        if metadata.len() != followed.size {
            followed.size = metadata.len();
            followed.grew = Instant::now();
        }
        if metadata.len() < followed.offset {
            tracing::info!(source = %self.origin.source, path = %path.display(), "Log file truncated; reading from its start");
            followed.offset = 0;
            followed.file.seek(SeekFrom::Start(0))?;
        }
        // A stopped tailer leaves the rest to its successor, which starts where the last commit ended.
        while !stop.is_cancelled() && self.read(path, followed, false).await? {}
        followed.settle().await?;
        Ok(())
    }

    /// Read one chunk from the offset, parse and store it; whether there may be more to read now.
    async fn read(&self, path: &Path, followed: &mut Followed, draining: bool) -> Result<bool, TailError> {
        let mut buffer = Vec::new();
        (&followed.file).take(READ_CHUNK).read_to_end(&mut buffer)?;
        let quiet = followed.grew.elapsed();
        if buffer.is_empty() {
            return Ok(false);
        }
        let full_chunk = buffer.len() as u64 == READ_CHUNK;
        // Whole lines only, unless the file has been quiet long enough (or is being finished after rotation), or a
        // single line is longer than a chunk (taken as it is, so the file keeps moving).
        let complete = match buffer.iter().rposition(|b| *b == b'\n') {
            _ if draining || quiet >= PARTIAL_AFTER => buffer.len(),
            Some(end) => end + 1,
            None if full_chunk => buffer.len(),
            None => {
                followed.file.seek(SeekFrom::Start(followed.offset))?;
                return Ok(false);
            }
        };
        let mut starts = Vec::new();
        let mut lines = Vec::new();
        let mut at = 0;
        for line in buffer[..complete].split_inclusive(|b| *b == b'\n') {
            starts.push(followed.offset + at as u64);
            at += line.len();
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            lines.push(String::from_utf8_lossy(line).into_owned());
        }
        let read_to = followed.offset + complete as u64;
        let (mut records, parsed) = parse(&self.runtime, &self.parsing, &self.origin, lines, SystemTime::now()).await;
        // Hold the last record back while the file grows: its continuation lines may still be on their way. (Not
        // when the parser failed: raw lines take no continuations.)
        let growing = !draining && quiet < SETTLE && !full_chunk && parsed.parser_failures == 0;
        let commit_to = match records.last() {
            Some(last) if growing && records.len() > 1 => {
                let held = starts[last.line];
                records.pop();
                held
            }
            Some(_) if growing => {
                // Only one record so far, still growing: wait for it to settle.
                followed.file.seek(SeekFrom::Start(followed.offset))?;
                return Ok(false);
            }
            _ => read_to,
        };
        // This chunk commits while the next one is read and parsed; one write is in flight at a time, so offsets
        // are stored in order, and a failed one is seen before the next is sent.
        followed.settle().await?;
        followed.pending =
            Some(tokio::spawn(self.store(path, followed.id, commit_to, records, parsed.parser_failures)));
        followed.offset = commit_to;
        followed.file.seek(SeekFrom::Start(commit_to))?;
        Ok(commit_to == read_to && full_chunk)
    }

    async fn stored_offset(&self, path: &Path, id: FileId) -> Result<Option<u64>, StorageError> {
        let stored = self.sink.storage.read_offset(self.origin.source.clone(), path.display().to_string()).await?;
        // A stored offset counts only for the same file: after rotation the path names another one.
        Ok(stored.filter(|(device, inode, _)| (*device, *inode) == id).map(|(_, _, offset)| offset))
    }

    /// Count and store records and the offset they were read up to, in one transaction; `failed` of them were kept
    /// raw because their parser call failed.
    fn store(
        &self,
        path: &Path,
        id: FileId,
        offset: u64,
        records: Vec<NewRecord>,
        failed: usize,
    ) -> impl Future<Output = Result<usize, StorageError>> + Send + 'static {
        let at = ReadTo {
            source: self.origin.source.clone(),
            path: path.display().to_string(),
            device: id.0,
            inode: id.1,
            offset,
        };
        let (sink, parser) = (self.sink.clone(), self.parsing.name.clone());
        async move { sink.store(&parser, records, failed, Some(at)).await }
    }
}

#[derive(Debug, thiserror::Error)]
enum TailError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
