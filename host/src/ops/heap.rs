//! The process's heap as its two allocators count it: jemalloc for selfmon's own allocations, glibc's malloc for the
//! C libraries (SQLite, libcrypto, the resolver). `/metrics` shows both, so growth can be told apart: live data, or
//! free space an allocator keeps.

/// The heap's figures at one moment. Zero where a figure cannot be read: jemalloc's where the process does not
/// allocate through it (the binary does; tests running selfmon in process do not), glibc's off glibc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Heap {
    /// Bytes selfmon's own allocations hold.
    pub allocated: u64,
    /// Bytes jemalloc keeps resident for them (freed pages not yet handed back and its bookkeeping included).
    pub resident: u64,
    /// Bytes the C libraries' allocations hold in glibc's heap (its arenas and its own mappings).
    pub c_allocated: u64,
    /// Bytes glibc keeps free in its arenas: space freed but not handed back, in pieces between live allocations.
    pub c_free: u64,
}

impl Heap {
    /// The figures now.
    pub fn now() -> Self {
        let (allocated, resident) = jemalloc();
        let (c_allocated, c_free) = glibc();
        Self { allocated, resident, c_allocated, c_free }
    }
}

/// jemalloc's allocated and resident bytes (it refreshes its statistics when its epoch is advanced).
fn jemalloc() -> (u64, u64) {
    if tikv_jemalloc_ctl::epoch::advance().is_err() {
        return (0, 0);
    }
    let read = |figure: tikv_jemalloc_ctl::Result<usize>| figure.map_or(0, |bytes| bytes as u64);
    (read(tikv_jemalloc_ctl::stats::allocated::read()), read(tikv_jemalloc_ctl::stats::resident::read()))
}

/// glibc's bytes in use (in arenas and mapped on their own) and free in its arenas, summed over all arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc() -> (u64, u64) {
    // SAFETY: mallinfo2 only reads the allocator's counters, under its own locks.
    let info = unsafe { libc::mallinfo2() };
    ((info.uordblks + info.hblkhd) as u64, info.fordblks as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc() -> (u64, u64) {
    (0, 0)
}
