//! Name lookups made by selfmon for a checker: any common record type, through the system's resolver or a named
//! server, without a resolver in the plugin.
//!
//! The name asked must be granted to the check (its target's host or an `allow` entry), and so must a named
//! server's address (`allow = ["1.1.1.1:53"]`); selfmon refuses the rest.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), String> {
//! let lookup = selfmon_sdk::dns::query("example.com", "MX", None, Duration::from_secs(3))?;
//! for answer in &lookup.answers {
//!     println!("{} {} {}", answer.record_type, answer.ttl, answer.data);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

pub use crate::__private::bindings::selfmon::plugin::dns::{Answer, Lookup};

/// Look up `name`'s records of `record_type` through `server` (or the system's resolver), within `timeout`.
pub fn query(name: &str, record_type: &str, server: Option<&str>, timeout: Duration) -> Result<Lookup, String> {
    let timeout = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    crate::__private::bindings::selfmon::plugin::dns::query(name, record_type, server, timeout)
}
