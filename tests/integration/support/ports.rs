//! Ports for servers a test starts by number (selfmon binaries, PostgreSQL, syslog listeners).
//!
//! They are handed out below the kernel's ephemeral range: a port the kernel picked for a bind to `:0` goes back to
//! that range once freed and may be given to any outgoing connection before the server binds it by number, which made
//! a busy suite fail now and then with "address in use". Ports under the range are only ever taken by whoever asks for
//! them by number, and each process walks its own sequence, so two tests of one run never get the same one.

use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const LOWEST: u32 = 10_000;

/// A port on loopback that nothing listens on (TCP or UDP) and that no other test of this process was given.
pub fn free_port() -> u16 {
    static GIVEN: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_start() - LOWEST;
    // Test binaries running at the same time start at different places of the span.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = u16::try_from(LOWEST + (start + GIVEN.fetch_add(1, Ordering::Relaxed)) % span).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {LOWEST} and the ephemeral range");
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read or leaves no room below).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|&start: &u32| start > LOWEST + 1_000)
        .unwrap_or(32_768)
}
