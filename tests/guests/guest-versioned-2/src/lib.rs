//! Version 2.0.0 of the `guest-versioned-1` checker.

const VERSION: &str = "2.0.0";

include!("../../guest-versioned-1/src/checker.rs");
