//! Host bindings for the contract in `wit/`, generated once here; everything else imports from this module.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "checker",
    exports: { default: async },
});

pub use self::selfmon::plugin::types::{
    CheckRequest, CheckResult, Level, Metric, PluginInfo, Setting, Status, ValueKind,
};

/// The contract version this host implements; plugins built against another minor version are refused by name.
pub const CONTRACT_VERSION: &str = "0.1.0";
