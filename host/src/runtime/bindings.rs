//! Host bindings for the contract in `wit/`, generated once here; everything else imports from this module.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "checker",
    exports: { default: async },
});

/// The parser world, sharing the checker world's types and host interface.
pub mod parser {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "parser",
        exports: { default: async },
        with: {
            "selfmon:plugin/types": super::selfmon::plugin::types,
            "selfmon:plugin/host": super::selfmon::plugin::host,
        },
    });
}

pub use self::selfmon::plugin::types::{
    CheckRequest, CheckResult, Level, LogRecord, Metric, ParseOutcome, ParseRequest, PluginInfo, Setting, Status,
    ValueKind,
};

/// The contract version this host implements; plugins built against another minor version are refused by name.
pub const CONTRACT_VERSION: &str = "0.1.0";
