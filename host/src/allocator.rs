//! Where the process's memory comes from: jemalloc for selfmon's own allocations and SQLite's, glibc's malloc
//! (tuned) for the other C libraries.

use std::ffi::{c_int, c_void};

use rusqlite::ffi;
use tikv_jemalloc_sys as jemalloc;

/// selfmon's own allocations go to jemalloc. At a steady load glibc's heap kept growing (about 0.1 MiB a minute in
/// an hour's soak) by free fragments left in its pages by allocations of different lifetimes: heaptrack showed
/// nothing live behind it and `malloc_trim` released none of it. jemalloc's size classes keep like with like and it
/// hands freed pages back on its own.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (read at its start; `_RJEM_MALLOC_CONF` in the environment adds to them): allocations of
/// 256 KiB and more (bodies as they inflate, decoded batches) come from an arena that returns them to the system as
/// soon as they are freed, so a flood of large requests leaves nothing behind.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_SETTINGS: &[u8; 26] = b"oversize_threshold:262144\0";

/// Sets up both allocators. Runs first in `main`, before any thread starts and before SQLite is first used.
pub fn configure() {
    sqlite_on_jemalloc();
    keep_large_buffers_apart();
}

/// SQLite allocates through jemalloc too. Its page caches churn pages at the rate rows are written (4 KiB and a
/// header each, among its smaller allocations of every lifetime); on glibc's malloc that churn left the same kind
/// of free fragments as selfmon's own allocations did (an hour's soak grew ~0.2 MiB a minute outside
/// `sqlite3_memory_used`), jemalloc keeps them in their size class. SQLite takes the functions only before its
/// first use: if it refuses (another part of the process initialised it first), it stays on glibc and says so.
fn sqlite_on_jemalloc() {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(sqlite_malloc),
        xFree: Some(sqlite_free),
        xRealloc: Some(sqlite_realloc),
        xSize: Some(sqlite_size),
        xRoundup: Some(sqlite_roundup),
        xInit: Some(sqlite_init),
        xShutdown: Some(sqlite_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLITE_CONFIG_MALLOC takes one pointer to a sqlite3_mem_methods, which SQLite copies before it
    // returns; every function in it is a thin wrapper of jemalloc's, which gives the 8-byte alignment SQLite needs.
    let code = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) };
    if code != ffi::SQLITE_OK {
        eprintln!("warning: SQLite keeps the system allocator (sqlite3_config returned {code})");
    }
}

/// SQLite asks for sizes as `int`, never negative; anything that does not fit is refused as out of memory.
fn size(bytes: c_int) -> Option<usize> {
    usize::try_from(bytes).ok().filter(|&bytes| bytes > 0)
}

unsafe extern "C" fn sqlite_malloc(bytes: c_int) -> *mut c_void {
    // SAFETY: jemalloc's malloc takes any size.
    size(bytes).map_or(std::ptr::null_mut(), |bytes| unsafe { jemalloc::malloc(bytes) })
}

unsafe extern "C" fn sqlite_free(pointer: *mut c_void) {
    // SAFETY: SQLite frees only what sqlite_malloc or sqlite_realloc returned.
    unsafe { jemalloc::free(pointer) }
}

unsafe extern "C" fn sqlite_realloc(pointer: *mut c_void, bytes: c_int) -> *mut c_void {
    // SAFETY: as sqlite_free; SQLite keeps the old block when this returns null.
    size(bytes).map_or(std::ptr::null_mut(), |bytes| unsafe { jemalloc::realloc(pointer, bytes) })
}

unsafe extern "C" fn sqlite_size(pointer: *mut c_void) -> c_int {
    // SAFETY: as sqlite_free.
    let bytes = unsafe { jemalloc::malloc_usable_size(pointer) };
    c_int::try_from(bytes).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn sqlite_roundup(bytes: c_int) -> c_int {
    // SAFETY: nallocx only computes the size class of a request.
    let class = size(bytes).map_or(0, |bytes| unsafe { jemalloc::nallocx(bytes, 0) });
    if class == 0 { bytes } else { c_int::try_from(class).unwrap_or(bytes) }
}

unsafe extern "C" fn sqlite_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn sqlite_shutdown(_: *mut c_void) {}

/// glibc's malloc serves the other C libraries (libcrypto's buffers above all). Allocations of 256 KiB and more get
/// their own mapping, given back to the system when freed; glibc would otherwise raise that threshold to the size of
/// each large buffer freed, up to 32 MiB, and keep later ones in its arenas. The heap is also kept in two arenas
/// (unless `MALLOC_ARENA_MAX` is set in the environment selfmon starts with): glibc gives each thread that allocates
/// its own arena, up to eight per core, and each arena keeps the free fragments its threads left.
fn keep_large_buffers_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
