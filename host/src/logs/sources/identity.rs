//! Which file is which. A tailed file is known by its device and inode and by a fingerprint of its first bytes (as
//! Vector and Fluent Bit know theirs), never by its path:
//! - renamed (rotation), it is the same file wherever its source finds it, and is read on from its offset;
//! - truncated and written again in place, or a new file on a reused inode, its first bytes differ: read from the
//!   start;
//! - copied (copy-truncate), the copy starts with the very bytes the original did, as far as they were read (up to
//!   [`FINGERPRINT`] of them): it is read from where the original was read to. A new file that starts with every
//!   byte read so far of another file of its source is taken for its copy; a timestamp in the first line is enough
//!   to tell files apart.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::logs::FileMark;

/// How many of a file's first bytes make its fingerprint.
pub const FINGERPRINT: u64 = 256;

/// A file's device and inode.
pub type FileId = (u64, u64);

/// A fingerprint: the SHA-256 of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: u64,
    pub hash: [u8; 32],
}

impl Head {
    /// No fingerprint: every file matches it.
    pub const NONE: Head = Head { len: 0, hash: [0; 32] };

    /// The fingerprint of `file`'s first `len` bytes; `None` when it has fewer.
    pub fn of(file: &File, len: u64) -> io::Result<Option<Head>> {
        let mut bytes = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => Ok(Some(Head { len, hash: Sha256::digest(&bytes).into() })),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Whether `file` still starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        if self.len == 0 {
            return Ok(true);
        }
        Ok(Head::of(file, self.len)?.as_ref() == Some(self))
    }

    /// The fingerprint to keep once `file` has been read to `offset`: it grows with what has been read, up to
    /// [`FINGERPRINT`] bytes.
    pub fn grown(self, file: &File, offset: u64) -> io::Result<Head> {
        let len = offset.min(FINGERPRINT);
        if len <= self.len {
            return Ok(self);
        }
        Ok(Head::of(file, len)?.unwrap_or(self))
    }

    pub fn of_mark(mark: &FileMark) -> Head {
        Head { len: mark.head_len, hash: mark.head }
    }
}

/// Where to read on in `file` (of `size` bytes, known as `id`, found at `path`) if it was read before: it has a mark
/// of its own and still starts with the bytes that mark's fingerprint was taken of. The offset and the fingerprint
/// to keep.
///
/// A mark with no fingerprint but an offset (kept from before fingerprints were) is trusted only where the file is
/// found at the mark's own path: on another path, the inode may have been given to another file since.
pub fn resume(file: &File, path: &Path, size: u64, id: FileId, marks: &[FileMark]) -> io::Result<Option<(u64, Head)>> {
    let Some(mark) = marks.iter().find(|mark| (mark.device, mark.inode) == id) else { return Ok(None) };
    let head = Head::of_mark(mark);
    if head.len == 0 && mark.offset > 0 && Path::new(&mark.path) != path {
        return Ok(None);
    }
    Ok((mark.offset <= size && head.matches(file)?).then_some((mark.offset, head)))
}

/// Whether `copy` holds the bytes `original` holds just before `end` (a fingerprint's length of them, or all when
/// `end` is shorter): with matching first bytes, a copy of what was read of `original`, not a file that only starts
/// the same (a banner every file of a source begins with).
pub fn agree_before(copy: &File, original: &File, end: u64) -> io::Result<bool> {
    let start = end.saturating_sub(FINGERPRINT);
    let len = usize::try_from(end - start).unwrap_or(usize::MAX);
    let (mut theirs, mut ours) = (vec![0; len], vec![0; len]);
    for (file, bytes) in [(copy, &mut theirs), (original, &mut ours)] {
        match file.read_exact_at(bytes, start) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(error) => return Err(error),
        }
    }
    Ok(theirs == ours)
}

/// The mark of the file `file` (known as `id`) is a copy of: a file of another identity whose fingerprinted first
/// bytes `file` starts with (the one with the longest fingerprint, then read furthest, if several are).
pub fn original<'a>(file: &File, id: FileId, marks: &'a [FileMark]) -> io::Result<Option<&'a FileMark>> {
    let mut candidates: Vec<&FileMark> =
        marks.iter().filter(|mark| mark.head_len > 0 && (mark.device, mark.inode) != id).collect();
    candidates.sort_by_key(|mark| std::cmp::Reverse((mark.head_len, mark.offset)));
    let mut own: Option<Head> = None;
    for mark in candidates {
        if own.is_none_or(|head| head.len != mark.head_len) {
            own = Head::of(file, mark.head_len)?;
        }
        if own == Some(Head::of_mark(mark)) {
            return Ok(Some(mark));
        }
    }
    Ok(None)
}

/// How long the mark of a file that no pattern finds is kept (found again, the file is read on from it), counted
/// from when its tailer first noticed it missing, at most 10 minutes after the fact (a restart, or a reload of the
/// source, starts the count again). Without
/// this, every rotated file deleted while selfmon was down, or renamed out of its source's patterns, would leave
/// its mark behind for good.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Since when each marked file has been missing.
#[derive(Debug, Default)]
pub struct Missing(HashMap<FileId, Instant>);

impl Missing {
    /// After a look at the files `present` (found by the patterns, or followed): the marked files missing for
    /// `after` or longer, to forget (until their marks are gone, they are due again each time). A file present
    /// again starts over.
    pub fn overdue(
        &mut self,
        marks: &[FileMark],
        present: &HashSet<FileId>,
        now: Instant,
        after: Duration,
    ) -> Vec<FileId> {
        self.0.retain(|id, _| !present.contains(id) && marks.iter().any(|mark| (mark.device, mark.inode) == *id));
        marks
            .iter()
            .map(|mark| (mark.device, mark.inode))
            .filter(|id| !present.contains(id))
            .filter(|id| now.saturating_duration_since(*self.0.entry(*id).or_insert(now)) >= after)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn lines(from: usize, to: usize) -> String {
        (from..to).map(|n| format!("2026-12-03T17:00:{n:02}Z line {n} of the bot's log\n")).collect()
    }

    fn mark_of(file: &File, path: &std::path::Path, offset: u64) -> FileMark {
        let metadata = file.metadata().unwrap();
        let head = Head::NONE.grown(file, offset).unwrap();
        FileMark {
            path: path.display().to_string(),
            device: metadata.dev(),
            inode: metadata.ino(),
            offset,
            head_len: head.len,
            head: head.hash,
        }
    }

    fn id(file: &File) -> FileId {
        let metadata = file.metadata().unwrap();
        (metadata.dev(), metadata.ino())
    }

    #[test]
    fn a_file_is_told_from_its_copy_its_rewrite_and_a_stranger() {
        let dir = tempfile::tempdir().unwrap();
        let (log, copy, other) = (dir.path().join("app.log"), dir.path().join("app.log.1"), dir.path().join("x.log"));
        std::fs::write(&log, lines(0, 20)).unwrap();
        let file = File::open(&log).unwrap();
        let read_to = lines(0, 12).len() as u64;
        let marks = vec![mark_of(&file, &log, read_to)];
        let size = file.metadata().unwrap().len();

        // The same file, renamed: on from its offset.
        let moved = dir.path().join("app.log.0");
        std::fs::rename(&log, &moved).unwrap();
        let renamed = File::open(&moved).unwrap();
        let (offset, head) = resume(&renamed, &moved, size, id(&renamed), &marks).unwrap().unwrap();
        assert_eq!((offset, head.len), (read_to, FINGERPRINT));
        assert!(original(&renamed, id(&renamed), &marks).unwrap().is_none(), "not a copy of itself");

        // A copy: not the file read before, but a copy of it.
        std::fs::copy(&moved, &copy).unwrap();
        let copied = File::open(&copy).unwrap();
        assert_eq!(resume(&copied, &copy, size, id(&copied), &marks).unwrap(), None);
        assert_eq!(original(&copied, id(&copied), &marks).unwrap(), Some(&marks[0]));

        // Rewritten in place (truncated, then more than was read written again): neither.
        let mut rewritten = std::fs::OpenOptions::new().write(true).truncate(true).open(&moved).unwrap();
        rewritten.write_all(lines(30, 59).as_bytes()).unwrap();
        let reopened = File::open(&moved).unwrap();
        let size = reopened.metadata().unwrap().len();
        assert!(size > read_to);
        assert_eq!(resume(&reopened, &moved, size, id(&reopened), &marks).unwrap(), None);
        assert!(original(&reopened, id(&reopened), &marks).unwrap().is_none());
        // Truncated to less than was read, though starting the same: not resumed.
        std::fs::write(&moved, lines(0, 10)).unwrap();
        let shorter = File::open(&moved).unwrap();
        assert_eq!(resume(&shorter, &moved, lines(0, 10).len() as u64, id(&shorter), &marks).unwrap(), None);

        // A file shorter than what was fingerprinted of the original: no copy.
        std::fs::write(&other, &lines(0, 20)[..100]).unwrap();
        let stranger = File::open(&other).unwrap();
        assert!(original(&stranger, id(&stranger), &marks).unwrap().is_none());
    }

    #[test]
    fn a_mark_without_a_fingerprint_is_trusted_only_at_its_own_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, lines(0, 20)).unwrap();
        let file = File::open(&log).unwrap();
        let size = file.metadata().unwrap().len();
        let read_to = lines(0, 12).len() as u64;
        let kept = FileMark { head_len: 0, head: [0; 32], ..mark_of(&file, &log, read_to) };
        let marks = [kept];
        assert_eq!(resume(&file, &log, size, id(&file), &marks).unwrap(), Some((read_to, Head::NONE)));
        // The same inode under another name: maybe another file by now, so read from its start.
        let elsewhere = dir.path().join("other.log");
        assert_eq!(resume(&file, &elsewhere, size, id(&file), &marks).unwrap(), None);
        // Nothing read of it yet: where it is found does not matter.
        let empty = [FileMark { offset: 0, ..marks[0].clone() }];
        assert_eq!(resume(&file, &elsewhere, size, id(&file), &empty).unwrap(), Some((0, Head::NONE)));
    }

    #[test]
    fn marks_of_files_missing_long_enough_are_forgotten_and_present_ones_never() {
        let mark = |inode| FileMark {
            path: format!("/var/log/app.log.{inode}"),
            device: 1,
            inode,
            offset: 10,
            head_len: 10,
            head: [7; 32],
        };
        let marks = [mark(1), mark(2), mark(3)];
        let hour = Duration::from_secs(3600);
        let start = Instant::now();
        let mut missing = Missing::default();
        let present = |ids: &[u64]| ids.iter().map(|inode| (1, *inode)).collect::<HashSet<FileId>>();
        assert!(missing.overdue(&marks, &present(&[1]), start, hour).is_empty(), "first missed now");
        // 2 comes back before its time, so its clock starts over when it goes again; 3 stays away.
        assert!(missing.overdue(&marks, &present(&[1, 2]), start + hour / 2, hour).is_empty());
        assert_eq!(missing.overdue(&marks, &present(&[1]), start + hour, hour), [(1, 3)]);
        // Due until its mark is gone (forgetting it may have failed).
        assert_eq!(missing.overdue(&marks, &present(&[1]), start + hour + hour / 8, hour), [(1, 3)]);
        assert!(missing.overdue(&marks[..2], &present(&[1]), start + hour + hour / 4, hour).is_empty());
        assert_eq!(missing.overdue(&marks[..2], &present(&[1]), start + 2 * hour, hour), [(1, 2)]);
        // A file followed (or found) is never forgotten, however long.
        assert!(missing.overdue(&marks[..1], &present(&[1]), start + 100 * hour, hour).is_empty());
    }

    #[test]
    fn a_copy_of_a_file_read_less_than_a_fingerprint_is_known_by_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let (log, copy) = (dir.path().join("app.log"), dir.path().join("app.log.1"));
        std::fs::write(&log, lines(0, 3)).unwrap();
        let file = File::open(&log).unwrap();
        let read_to = lines(0, 2).len() as u64;
        assert!(read_to < FINGERPRINT);
        let short = mark_of(&file, &log, read_to);
        let long = FileMark { inode: u64::MAX, ..mark_of(&file, &log, lines(0, 3).len() as u64) };
        std::fs::write(&copy, lines(0, 9)).unwrap();
        let copied = File::open(&copy).unwrap();
        assert_eq!(original(&copied, id(&copied), std::slice::from_ref(&short)).unwrap(), Some(&short));
        // The longest fingerprint that fits wins.
        let both = [short.clone(), long.clone()];
        assert_eq!(original(&copied, id(&copied), &both).unwrap(), Some(&long));
        // Not a copy of itself, nor of a file it no longer starts like.
        assert!(original(&file, id(&file), std::slice::from_ref(&short)).unwrap().is_none());
        std::fs::write(&copy, lines(5, 9)).unwrap();
        assert!(original(&copied, id(&copied), &both).unwrap().is_none());
    }

    #[test]
    fn a_copy_holds_what_was_read_and_a_file_that_only_starts_the_same_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let banner = "=".repeat(300) + "\n";
        let (log, copy, other) = (dir.path().join("app.log"), dir.path().join("app.log.1"), dir.path().join("b.log"));
        std::fs::write(&log, banner.clone() + &lines(0, 20)).unwrap();
        std::fs::write(&other, banner.clone() + &lines(40, 60)).unwrap();
        let file = File::open(&log).unwrap();
        let read_to = (banner.len() + lines(0, 12).len()) as u64;
        let marks = vec![mark_of(&file, &log, read_to)];
        let stranger = File::open(&other).unwrap();
        // Its first bytes are the banner's, as are the original's.
        assert_eq!(original(&stranger, id(&stranger), &marks).unwrap(), Some(&marks[0]));
        assert!(!agree_before(&stranger, &file, read_to).unwrap());
        // A copy agrees, whole or still being written; a file shorter than the bytes compared does not.
        std::fs::copy(&log, &copy).unwrap();
        assert!(agree_before(&File::open(&copy).unwrap(), &file, read_to).unwrap());
        let partial = banner.len() as u64 + 100;
        std::fs::write(&copy, &std::fs::read(&log).unwrap()[..partial as usize]).unwrap();
        assert!(agree_before(&File::open(&copy).unwrap(), &file, partial).unwrap());
        assert!(!agree_before(&File::open(&copy).unwrap(), &file, read_to).unwrap());
    }

    #[test]
    fn a_fingerprint_grows_with_what_was_read_and_no_further() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, lines(0, 20)).unwrap();
        let file = File::open(&path).unwrap();
        let small = Head::NONE.grown(&file, 40).unwrap();
        assert_eq!(small.len, 40);
        assert!(small.matches(&file).unwrap());
        assert_eq!(small.grown(&file, 30).unwrap(), small);
        let full = small.grown(&file, 10_000).unwrap();
        assert_eq!(full.len, FINGERPRINT);
        assert_eq!(full.grown(&file, 20_000).unwrap(), full);
        // A file shorter than its fingerprint no longer matches it.
        std::fs::write(&path, "short\n").unwrap();
        assert!(!full.matches(&file).unwrap());
        assert!(Head::NONE.matches(&file).unwrap());
    }
}
