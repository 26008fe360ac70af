//! One block of memory for every SQLite page cache of the process, set aside before SQLite's first use.
//!
//! SQLite's caches take and give back a page (4 KiB and a header) at the rate rows are written and read. On glibc's
//! malloc that churn, among SQLite's smaller allocations of every lifetime, left free pieces in glibc's heap that it
//! could not hand back: an hour's soak grew about 0.3 MiB a minute in free space while what SQLite held stayed flat
//! (`selfmon_c_heap_free_bytes`; `malloc_trim` gave back under 1 MiB of it). From a block of fixed slots, a page
//! freed is the next one taken, so the caches cannot fragment anything: the block's resident part grows to the most
//! pages ever cached at once and stays there. Pages beyond the block's slots (more readers busy at once than it was
//! sized for) come from malloc as before.

use std::ffi::c_int;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The writer's cache, in KiB (`PRAGMA cache_size` takes it negated).
pub const WRITER_CACHE_KIB: usize = 32 * 1024;
/// A reader's cache, in KiB: SQLite's default.
const READER_CACHE_KIB: usize = 2_000;
/// The page size selfmon's stores are made with (SQLite's default).
const PAGE: usize = 4096;

/// The size of one slot of the block, once it is set aside.
static SLOT: OnceLock<usize> = OnceLock::new();

/// Set aside the block, sized for the writer's cache and every reader's. Call before SQLite is first used: after
/// that SQLite refuses (and says so here), and the caches stay on malloc.
pub fn set_aside() {
    let mut header: c_int = 0;
    // SAFETY: SQLITE_CONFIG_PCACHE_HDRSZ writes one int through the pointer it is given.
    if unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE_HDRSZ, &raw mut header) } != ffi::SQLITE_OK {
        eprintln!("warning: SQLite's page caches stay on malloc (it was started before their memory was set aside)");
        return;
    }
    let slot = (PAGE + usize::try_from(header).unwrap_or(0)).next_multiple_of(8);
    let bytes = (WRITER_CACHE_KIB + super::READERS * READER_CACHE_KIB) * 1024;
    let slots = bytes / slot;
    // Mapped, not allocated: untouched slots take no memory, and neither allocator counts the block as its own.
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing; nothing else refers to it.
    let block = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            slots * slot,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if block == libc::MAP_FAILED {
        eprintln!("warning: SQLite's page caches stay on malloc (cannot map {} MiB)", (slots * slot) >> 20);
        return;
    }
    let (Ok(slot_int), Ok(slots_int)) = (c_int::try_from(slot), c_int::try_from(slots)) else {
        return;
    };
    // SAFETY: the block is `slots` slots of `slot` bytes, 8-byte aligned (page-aligned), mapped for the rest of the
    // process's life and given to SQLite alone, before its first use.
    let code = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PAGECACHE, block, slot_int, slots_int) };
    if code == ffi::SQLITE_OK {
        let _ = SLOT.set(slot);
    } else {
        eprintln!("warning: SQLite's page caches stay on malloc (sqlite3_config returned {code})");
    }
}

/// Bytes of the block holding cached pages now (0 when it was not set aside).
pub fn used_bytes() -> i64 {
    let Some(slot) = SLOT.get() else { return 0 };
    let (mut current, mut highest) = (0, 0);
    // SAFETY: reads one process-wide counter into the two integers given.
    let code =
        unsafe { ffi::sqlite3_status64(ffi::SQLITE_STATUS_PAGECACHE_USED, &raw mut current, &raw mut highest, 0) };
    if code == ffi::SQLITE_OK { current * i64::try_from(*slot).unwrap_or(0) } else { 0 }
}
