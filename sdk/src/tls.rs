//! TLS handshakes made by selfmon for a checker: what a certificate check needs (the chain the server presents,
//! whether it is trusted for a name, the protocol and cipher), without a TLS stack in the plugin.
//!
//! Only the check's `target` and the addresses in its `allow` list can be asked; selfmon refuses the rest. The chain
//! is verified against the system's roots and the check's `ca_file`; the handshake completes whatever the verdict,
//! and nothing is sent after it.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), String> {
//! let handshake = selfmon_sdk::tls::inspect("example.com:443", "example.com", Duration::from_secs(5))?;
//! let leaf = &handshake.chain[0];
//! println!("{} expires at {} (unix seconds); trusted: {}", leaf.subject, leaf.not_after, handshake.untrusted.is_none());
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

pub use crate::__private::bindings::selfmon::plugin::tls::{Certificate, Handshake};

/// Handshake with `address` (`host:port`) asking for `server_name`, within `timeout` (and the call's deadline).
pub fn inspect(address: &str, server_name: &str, timeout: Duration) -> Result<Handshake, String> {
    let timeout = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    crate::__private::bindings::selfmon::plugin::tls::inspect(address, server_name, timeout)
}

/// Whether `name` is covered by `pattern`, a certificate's DNS name: equal ignoring case, or a `*.` wildcard
/// standing for exactly one leftmost label (RFC 6125 6.4.3).
pub fn covers(pattern: &str, name: &str) -> bool {
    let (pattern, name) =
        (pattern.trim_end_matches('.').to_ascii_lowercase(), name.trim_end_matches('.').to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(parent) => name.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn names_are_covered_as_browsers_cover_them() {
        assert!(covers("example.com", "EXAMPLE.com."));
        assert!(covers("*.example.com", "api.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("example.com", "api.example.com"));
    }
}
