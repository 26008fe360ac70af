//! Version 1.0.0 of a checker that says which version answered, and takes `delay_ms` to do it: what a replaced
//! plugin file is tested with. `guest-versioned-2` is version 2.0.0 of the same plugin.

const VERSION: &str = "1.0.0";

include!("checker.rs");
