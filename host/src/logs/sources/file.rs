//! Tailing log files: every `[[log_source]]` of kind `file` follows its paths and globs, parses new lines with its
//! parser plugin and stores them. The same tailer reads selfmon's own log back when `[logging] ingest` is on.
//!
//! Each file's read offset is stored in the transaction that stores its records, so a restart (or `kill -9`)
//! resumes exactly where the last commit ended: nothing is lost and nothing is stored twice. A file is known by its
//! device, inode and first bytes (see the `identity` module beside this one), not by its path:
//! - renamed (rotation) to a name the source still matches, it is read on from its offset, now or after a restart;
//!   renamed to a name it does not match, or deleted, it is read to its end through the handle already open;
//! - truncated in place (copy-truncate): reading starts again from the start, and a copy the source matches is read
//!   from where the original had been read to;
//! - seen for the first time: read from its start.
//!
//! Only whole lines are read (a line still being written waits for its newline, unless the file has been quiet for
//! [`PARTIAL_AFTER`]). While a file is growing, its last record is held back, so continuation lines (a traceback)
//! that arrive later still join it; it is stored once the file has been quiet for [`SETTLE`].
//!
//! While the store is full, files are still looked for every poll but read only every five seconds.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::identity::{self, FileId, Head, Missing};
use crate::logs::ingest::Sink;
use crate::logs::parsing::{Parsing, parse};
use crate::logs::{FileMark, NewRecord, Origin, ReadTo};
use crate::runtime::Runtime;
use crate::storage::StorageError;

/// The most read from one file in one pass.
const READ_CHUNK: u64 = 4 << 20;
/// How long a file must be quiet before its last record is stored.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a file must be quiet before a last line without its newline is taken as it is.
pub const PARTIAL_AFTER: Duration = Duration::from_secs(5);
/// How often files are read while the store is full (their records are refused until there is room), instead of
/// every poll: reading and parsing the same chunk again and again would only burn CPU.
const FULL_POLL: Duration = Duration::from_secs(5);
/// How often the marks of files no longer found are looked over (see [`identity::FORGET_AFTER`]).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long a truncated file's mark from before its truncation is kept: its copy (copy-truncate) may be found only
/// after the truncation was.
const COPY_WINDOW: Duration = Duration::from_secs(60);

/// Where reading a file stands.
struct Followed {
    file: File,
    id: FileId,
    /// Where the source found it last.
    path: PathBuf,
    offset: u64,
    /// The fingerprint of its first bytes, as far as they have been read.
    head: Head,
    /// Its size when last looked at, and when that changed.
    size: u64,
    grew: Instant,
    /// Where the last commit left it (offset and fingerprint): reading goes back there after a write that failed.
    committed: (u64, Head),
    /// The last chunk's write, still committing while the next chunk is read and parsed, and where it leaves it.
    pending: Option<(u64, Head, Write)>,
}

/// A chunk's records and offset being committed.
type Write = tokio::task::JoinHandle<Result<usize, StorageError>>;

impl Followed {
    /// What is stored of it.
    fn mark(&self) -> FileMark {
        FileMark {
            path: self.path.display().to_string(),
            device: self.id.0,
            inode: self.id.1,
            offset: self.offset,
            head_len: self.head.len,
            head: self.head.hash,
        }
    }

    /// Whether it no longer holds what was read of it: shorter than that, or starting otherwise.
    fn was_truncated(&self) -> std::io::Result<bool> {
        Ok(self.file.metadata()?.len() < self.offset || !self.head.matches(&self.file)?)
    }

    /// Wait for the chunk being committed, if any.
    async fn settle(&mut self) -> Result<(), StorageError> {
        let Some((offset, head, write)) = self.pending.take() else { return Ok(()) };
        write.await.map_err(|e| StorageError::Write(e.to_string()))??;
        self.committed = (offset, head);
        Ok(())
    }

    /// Store what it has been read to (with `records` read up to there) while the next chunk is read.
    fn commit(&mut self, write: impl Future<Output = Result<usize, StorageError>> + Send + 'static) {
        self.pending = Some((self.offset, self.head, tokio::spawn(write)));
    }

    /// Go back to where the last commit left it, after a write that failed.
    fn rewind(&mut self) -> std::io::Result<()> {
        self.pending = None;
        (self.offset, self.head) = self.committed;
        self.file.seek(SeekFrom::Start(self.offset))?;
        Ok(())
    }
}

/// Keep the mark a file had when it was found truncated, once, for a copy of it found later.
fn remember_truncated(truncated: &mut Vec<(Instant, FileMark)>, mark: FileMark) {
    if !truncated.iter().any(|(_, known)| *known == mark) {
        truncated.push((Instant::now(), mark));
    }
}

/// What a tailer keeps from one look at its files to the next.
#[derive(Default)]
struct Tailing {
    files: HashMap<FileId, Followed>,
    /// The marks files had when they were found truncated lately, for copies of them found later.
    truncated: Vec<(Instant, FileMark)>,
    /// Followed files the last look did not find.
    unseen: HashSet<FileId>,
    missing: Missing,
    /// When the marks of missing files were last looked over (or the tailer started).
    pruned: Option<Instant>,
    /// When files were last read while the store was full.
    read_while_full: Option<Instant>,
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
            let mut tailing = Tailing::default();
            while !stop.is_cancelled() {
                if !self.look(&mut tailing, &stop).await {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(self.poll) => {}
                }
            }
            // A file missed by the last look and still missing is finished now: no successor would find it.
            let seen: HashSet<FileId> = if tailing.unseen.is_empty() {
                HashSet::new()
            } else {
                self.found().into_iter().map(|(id, _)| id).collect()
            };
            let left: Vec<FileId> = tailing.unseen.iter().filter(|id| !seen.contains(id)).copied().collect();
            for id in left {
                let result = self.finish(id, &mut tailing.files).await;
                if !self.carry_on(id, result, &mut tailing.files).await {
                    return;
                }
            }
            // Writes in flight end before the task does, so a tailer started after it (by a reload) reads on from
            // where this one's last commit ended.
            for followed in tailing.files.values_mut() {
                let _ = followed.settle().await;
            }
        });
    }

    /// One look at the source's files: the marks of long-missing ones pruned, new ones opened, followed ones read
    /// on, and ones no longer found finished. Whether to go on (not once storage has closed).
    async fn look(&self, tailing: &mut Tailing, stop: &CancellationToken) -> bool {
        let Tailing { files, truncated, unseen, missing, pruned, read_while_full } = tailing;
        let found = self.found();
        // The first look over is `PRUNE_EVERY` after the tailer starts: at start-up `open_new` reads the marks.
        if pruned.get_or_insert_with(Instant::now).elapsed() >= PRUNE_EVERY {
            *pruned = Some(Instant::now());
            match self.prune(&found, files, missing).await {
                Ok(()) => {}
                Err(StorageError::Closed) => return false,
                Err(error) => tracing::warn!(source = %self.origin.source, %error, "Cannot forget missing log files"),
            }
        }
        truncated.retain(|(when, _)| when.elapsed() < COPY_WINDOW);
        if let Err(StorageError::Closed) = self.open_new(&found, files, truncated).await {
            return false;
        }
        // While the store is full, what is read would only be refused again: files are looked for every poll but
        // read every `FULL_POLL`.
        let full = self.sink.storage.is_full();
        if full && read_while_full.is_some_and(|at| at.elapsed() < FULL_POLL) {
            return true;
        }
        *read_while_full = full.then(Instant::now);
        for (id, path) in &found {
            if stop.is_cancelled() {
                break;
            }
            let Some(followed) = files.get_mut(id) else { continue };
            followed.path.clone_from(path);
            let result = self.follow(followed, truncated, stop).await;
            if !self.carry_on(*id, result, files).await {
                return false;
            }
        }
        let seen: HashSet<FileId> = found.iter().map(|(id, _)| *id).collect();
        let gone: Vec<FileId> = files.keys().filter(|id| !seen.contains(id)).copied().collect();
        for id in gone {
            // Missed by one look but not deleted, it may have been renamed while its directory was read: it is
            // finished (a last line without its newline taken as it is) once a second look misses it too.
            let linked = files[&id].file.metadata().is_ok_and(|metadata| metadata.nlink() > 0);
            if linked && !stop.is_cancelled() && unseen.insert(id) {
                continue;
            }
            let result = self.finish(id, files).await;
            if !self.carry_on(id, result, files).await {
                return false;
            }
        }
        unseen.retain(|id| files.contains_key(id) && !seen.contains(id));
        true
    }

    /// After a file's turn: whether to go on. A file whose records could not be stored is read again from where
    /// its last commit left it, through the handle it has (it may have been renamed away or deleted meanwhile); one
    /// that could not be read is opened again at its stored offset next time, once a write in flight has ended.
    async fn carry_on(&self, id: FileId, result: Result<(), TailError>, files: &mut HashMap<FileId, Followed>) -> bool {
        let Err(error) = result else { return true };
        let Some(followed) = files.get_mut(&id) else { return true };
        let path = followed.path.display().to_string();
        let error = match error {
            TailError::Storage(StorageError::Closed) => return false,
            TailError::Storage(error) => {
                // Said once by the storage when it is full; other failures each time.
                if !matches!(error, StorageError::Full(_)) {
                    tracing::error!(source = %self.origin.source, %path, %error, "Cannot store log records; trying again");
                }
                let _ = followed.settle().await;
                match followed.rewind() {
                    Ok(()) => return true,
                    Err(error) => error,
                }
            }
            TailError::Io(error) => error,
        };
        tracing::warn!(source = %self.origin.source, %path, %error, "Cannot read a log file");
        if let Some(mut followed) = files.remove(&id) {
            let _ = followed.settle().await;
        }
        true
    }

    /// Forget the marks of files missing (neither found nor followed) for [`identity::FORGET_AFTER`].
    async fn prune(
        &self,
        found: &[(FileId, PathBuf)],
        files: &HashMap<FileId, Followed>,
        missing: &mut Missing,
    ) -> Result<(), StorageError> {
        let source = &self.origin.source;
        let marks = self.sink.storage.file_marks(source.clone()).await?;
        let present: HashSet<FileId> = found.iter().map(|(id, _)| *id).chain(files.keys().copied()).collect();
        for id in missing.overdue(&marks, &present, Instant::now(), identity::FORGET_AFTER) {
            tracing::info!(%source, device = id.0, inode = id.1, "Forgetting a log file missing for a day");
            self.sink.storage.forget_file(source.clone(), id.0, id.1).await?;
        }
        Ok(())
    }

    /// The files the patterns match now, each once (the first of its names) and the least recently written first,
    /// so a rotated file the patterns still match is read to its end before its successor is read.
    fn found(&self) -> Vec<(FileId, PathBuf)> {
        let mut found: Vec<(SystemTime, FileId, PathBuf)> = self
            .patterns
            .iter()
            .filter_map(|pattern| glob::glob(pattern).ok())
            .flat_map(|matches| matches.filter_map(Result::ok))
            .filter_map(|path| {
                let metadata = std::fs::metadata(&path).ok().filter(std::fs::Metadata::is_file)?;
                let written = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                Some((written, (metadata.dev(), metadata.ino()), path))
            })
            .collect();
        found.sort();
        let mut seen = HashSet::new();
        found.retain(|(_, id, _)| seen.insert(*id));
        found.into_iter().map(|(_, id, path)| (id, path)).collect()
    }

    /// Open the files found for the first time, each where its identity says: its stored offset, the offset of the
    /// file it is a copy of, or its start. The marks are read after every write in flight has ended, so they hold
    /// the offsets of the files followed too (a copy may be of one of them, or of one `truncated` lately). A file
    /// whose mark no longer fits it was truncated: its mark is kept in `truncated` for a copy of it found later.
    async fn open_new(
        &self,
        found: &[(FileId, PathBuf)],
        files: &mut HashMap<FileId, Followed>,
        truncated: &mut Vec<(Instant, FileMark)>,
    ) -> Result<(), StorageError> {
        if found.iter().all(|(id, _)| files.contains_key(id)) {
            return Ok(());
        }
        let followed: Vec<FileId> = files.keys().copied().collect();
        for id in followed {
            let settled = files.get_mut(&id).expect("listed above").settle().await;
            if !self.carry_on(id, settled.map_err(TailError::from), files).await {
                return Err(StorageError::Closed);
            }
        }
        let mut marks = match self.sink.storage.file_marks(self.origin.source.clone()).await {
            Ok(marks) => marks,
            Err(StorageError::Closed) => return Err(StorageError::Closed),
            Err(error) => {
                tracing::error!(source = %self.origin.source, %error, "Cannot read how far log files were read; trying again");
                return Ok(());
            }
        };
        marks.extend(truncated.iter().map(|(_, mark)| mark.clone()));
        let mut opened: Vec<(FileId, &PathBuf, File, u64)> = Vec::new();
        for (id, path) in found {
            if files.contains_key(id) {
                continue;
            }
            match open(path, *id) {
                Ok(Some((file, size))) => opened.push((*id, path, file, size)),
                Ok(None) => {}
                Err(error) => self.unreadable(path, &error),
            }
        }
        // Files read before first, so a copy is seen to be of one of them.
        let mut copies = Vec::new();
        for (id, path, file, size) in opened {
            match identity::resume(&file, path, size, id, &marks) {
                Ok(Some((offset, head))) => {
                    let own = marks.iter().find(|mark| (mark.device, mark.inode) == id);
                    self.follow_from(files, (id, path), (file, size), own, (offset, head));
                }
                Ok(None) => {
                    let own = marks.iter().find(|mark| (mark.device, mark.inode) == id);
                    truncated.extend(own.map(|mark| (Instant::now(), mark.clone())));
                    copies.push((id, path, file, size));
                }
                Err(error) => self.unreadable(path, &error),
            }
        }
        // A followed file truncated since it was last read is known so before copies are looked for (copy-truncate
        // copies first): its copy is read from where it was, and that copy's mark is stored before the file's own
        // new start is, so that a kill in between loses neither.
        for followed in files.values() {
            match followed.was_truncated() {
                Ok(true) => remember_truncated(truncated, followed.mark()),
                Ok(false) => {}
                Err(error) => self.unreadable(&followed.path, &error),
            }
        }
        // A copy is of a file followed now (resumed just above included) or truncated lately: the mark of a file gone (renamed out of the glob,
        // deleted) is no original, or a new file that starts like the one before it would be taken for its copy.
        let originals: Vec<FileMark> = marks
            .iter()
            .filter(|mark| files.contains_key(&(mark.device, mark.inode)))
            .cloned()
            .chain(truncated.iter().map(|(_, mark)| mark.clone()))
            .collect();
        for (id, path, file, size) in copies {
            // Followed and still as it was when `original` was taken of it (not truncated since).
            let followed = |original: &FileMark| {
                let id = (original.device, original.inode);
                let head = Head::of_mark(original);
                let cut = truncated.iter().any(|(_, m)| (m.device, m.inode) == id && Head::of_mark(m) == head);
                files.get(&id).filter(|f| f.head == head && !cut)
            };
            match identity::original(&file, id, &originals) {
                // The original is still followed and still starts the same, and the copy holds what it held as far
                // as it was read: what the copy holds is read there (until the original is truncated, when the
                // copy is read from where the original was). A file that only starts the same is a new one.
                Ok(Some(original)) if let Some(followed) = followed(original) => {
                    let end = size.min(original.offset);
                    let agrees = identity::agree_before(&file, &followed.file, end);
                    // Unless the original was truncated since it was last read: then its copy is known as such
                    // once the truncation is seen.
                    let intact = || {
                        Ok::<_, std::io::Error>(
                            followed.file.metadata()?.len() >= end && followed.head.matches(&followed.file)?,
                        )
                    };
                    match agrees.and_then(|agrees| Ok(agrees || !intact()?)) {
                        Ok(true) => {}
                        Ok(false) => self.follow_from(files, (id, path), (file, size), None, (0, Head::NONE)),
                        Err(error) => self.unreadable(path, &error),
                    }
                }
                Ok(Some(original)) => {
                    let offset = original.offset.min(size);
                    tracing::info!(source = %self.origin.source, path = %path.display(), original = %original.path, offset, "Log file is a copy of one read before; reading on from where that one was");
                    self.follow_from(files, (id, path), (file, size), None, (offset, Head::of_mark(original)));
                }
                Ok(None) => {
                    self.follow_from(files, (id, path), (file, size), None, (0, Head::NONE));
                }
                Err(error) => self.unreadable(path, &error),
            }
        }
        Ok(())
    }

    /// Follow a file from an offset, with the fingerprint of what was read before it. Its mark is stored at once
    /// when it differs from the `stored` one (a new file, a copy, a file found under another name), so the file is
    /// known from now on, though nothing of it may be left to read.
    fn follow_from(
        &self,
        files: &mut HashMap<FileId, Followed>,
        (id, path): (FileId, &Path),
        (mut file, size): (File, u64),
        stored: Option<&FileMark>,
        (offset, head): (u64, Head),
    ) {
        if let Err(error) = file.seek(SeekFrom::Start(offset)) {
            self.unreadable(path, &error);
            return;
        }
        let path = path.to_path_buf();
        let committed = (offset, head);
        let mut followed =
            Followed { file, id, path, offset, head, size, grew: Instant::now(), committed, pending: None };
        if stored != Some(&followed.mark()) {
            followed.commit(self.store(&followed, Vec::new(), 0));
        }
        files.insert(id, followed);
    }

    fn unreadable(&self, path: &Path, error: &std::io::Error) {
        tracing::warn!(source = %self.origin.source, path = %path.display(), %error, "Cannot read a log file");
    }

    /// Read what is new in a followed file, and store it; a file found truncated is added to `truncated` as it was.
    async fn follow(
        &self,
        followed: &mut Followed,
        truncated: &mut Vec<(Instant, FileMark)>,
        stop: &CancellationToken,
    ) -> Result<(), TailError> {
        let size = followed.file.metadata()?.len();
        if size != followed.size {
            followed.size = size;
            followed.grew = Instant::now();
        }
        if size < followed.offset || !followed.head.matches(&followed.file)? {
            tracing::info!(source = %self.origin.source, path = %followed.path.display(), "Log file truncated; reading from its start");
            followed.settle().await?;
            remember_truncated(truncated, followed.mark());
            followed.offset = 0;
            followed.head = Head::NONE;
            followed.file.seek(SeekFrom::Start(0))?;
        }
        // A stopped tailer leaves the rest to its successor, which starts where the last commit ended.
        while !stop.is_cancelled() && self.read(followed, false).await? {}
        followed.settle().await?;
        Ok(())
    }

    /// A file the patterns no longer match (renamed away or deleted): read it to its end through the handle, even
    /// when stopping, then let it go. A deleted file is forgotten; the mark of one renamed away is kept for a day,
    /// should the patterns match it again.
    async fn finish(&self, id: FileId, files: &mut HashMap<FileId, Followed>) -> Result<(), TailError> {
        let followed = files.get_mut(&id).expect("a followed file");
        while self.read(followed, true).await? {}
        followed.settle().await?;
        let deleted = followed.file.metadata()?.nlink() == 0;
        files.remove(&id);
        if deleted {
            self.sink.storage.forget_file(self.origin.source.clone(), id.0, id.1).await?;
        }
        Ok(())
    }

    /// Read one chunk from the offset, parse and store it; whether there may be more to read now.
    async fn read(&self, followed: &mut Followed, draining: bool) -> Result<bool, TailError> {
        let mut buffer = Vec::new();
        (&followed.file).take(READ_CHUNK).read_to_end(&mut buffer)?;
        let quiet = followed.grew.elapsed();
        if buffer.is_empty() {
            return Ok(false);
        }
        let full_chunk = buffer.len() as u64 == READ_CHUNK;
        // Whole lines only, unless the file has been quiet long enough (or is being finished), or a single line is
        // longer than a chunk (taken as it is, so the file keeps moving).
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
        followed.head = followed.head.grown(&followed.file, commit_to)?;
        followed.offset = commit_to;
        followed.commit(self.store(followed, records, parsed.parser_failures));
        followed.file.seek(SeekFrom::Start(commit_to))?;
        Ok(commit_to == read_to && full_chunk)
    }

    /// Count and store records and the mark of the file they were read from (up to its offset now), in one
    /// transaction; `failed` of them were kept raw because their parser call failed.
    fn store(
        &self,
        followed: &Followed,
        records: Vec<NewRecord>,
        failed: usize,
    ) -> impl Future<Output = Result<usize, StorageError>> + Send + 'static {
        let at = ReadTo { source: self.origin.source.clone(), mark: followed.mark() };
        let (sink, parser) = (self.sink.clone(), self.parsing.name.clone());
        async move { sink.store(&parser, records, failed, Some(at)).await }
    }
}

/// Open a file found at `path` as `id`, with its size (`None` if the path now names another file: it is opened
/// next time).
fn open(path: &Path, id: FileId) -> std::io::Result<Option<(File, u64)>> {
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    Ok(((metadata.dev(), metadata.ino()) == id).then_some((file, metadata.len())))
}

#[derive(Debug, thiserror::Error)]
enum TailError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
