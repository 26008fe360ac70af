//! Host bindings for the contract in `sdk/wit/` (the SDK crate ships it), generated once here; everything else
//! imports from this module.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "checker",
    exports: { default: async },
    imports: { "selfmon:plugin/tls.inspect": async, "selfmon:plugin/dns.query": async },
});

/// The parser world, sharing the checker world's types and host interface.
pub mod parser {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "parser",
        exports: { default: async },
        with: {
            "selfmon:plugin/types": super::selfmon::plugin::types,
            "selfmon:plugin/host": super::selfmon::plugin::host,
        },
    });
}

/// The rule world: the same types and host interface, and the read-only query interface rules import (async: it
/// reads storage).
pub mod rule {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "rule",
        exports: { default: async },
        imports: { default: async },
        with: {
            "selfmon:plugin/types": super::selfmon::plugin::types,
            "selfmon:plugin/host": super::selfmon::plugin::host,
        },
    });
}

pub use self::rule::selfmon::plugin::query::{Aggregation, CheckState, MetricQuery, SeriesValue};
pub use self::selfmon::plugin::types::{
    Alert, CheckRequest, CheckResult, Level, LogRecord, Metric, ParseOutcome, ParseRequest, PluginInfo, RuleRequest,
    Setting, Severity, Status, ValueKind,
};

/// The contract version this host implements; plugins built against another minor version are refused by name.
pub const CONTRACT_VERSION: &str = "0.1.0";
