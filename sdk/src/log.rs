//! Structured records into selfmon's log.
//!
//! The host attributes each record to the plugin, the configured instance and the call, and caps how much one call
//! may write. Never log secrets.
//!
//! ```no_run
//! selfmon_sdk::log::info("Connected", &[("server_version", "16.2")]);
//! ```

pub use crate::__private::types::Level;

macro_rules! levels {
    ($($(#[$doc:meta])* $fn:ident => $level:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(message: &str, fields: &[(&str, &str)]) {
                write(Level::$level, message, fields)
            }
        )*
    };
}

levels! {
    /// Detail for plugin authors.
    debug => Debug,
    /// Something an operator may want to know.
    info => Info,
    /// Something looks wrong but the check goes on.
    warn => Warning,
    /// Something failed.
    error => Error,
}

/// Write a record at any level.
pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    emit(level, message, &fields);
}

#[cfg(target_arch = "wasm32")]
fn emit(level: Level, message: &str, fields: &[(String, String)]) {
    crate::__private::bindings::selfmon::plugin::host::log(level, message, fields);
}

/// Outside WebAssembly (a plugin's unit tests) records go to stderr.
#[cfg(not(target_arch = "wasm32"))]
fn emit(level: Level, message: &str, fields: &[(String, String)]) {
    eprintln!("{level:?} {message} {fields:?}");
}
