//! Write [selfmon](https://github.com/selfmon/selfmon) plugins in Rust.
//!
//! A plugin is a WebAssembly component that selfmon runs in a sandbox. A **checker** turns its configuration into a
//! health result; parsers and rules follow the same pattern. You write a type implementing [`Checker`], export it
//! with [`export_checker!`], and build the crate for `wasm32-wasip2`. The SDK hides the generated bindings of the
//! contract, which ships inside this crate (`wit/` in the package) for plugins written in other languages.
//!
//! # A checker in thirty lines
//!
//! ```no_run
//! use selfmon_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     expect_status: u16,
//! }
//!
//! struct Ping;
//!
//! impl Checker for Ping {
//!     type Config = Config;
//!
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("ping", env!("CARGO_PKG_VERSION"), "GETs the target URL and expects one status code")
//!             .config(Setting::integer("expect_status", "The status code that means healthy").default(200))
//!     }
//!
//!     fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
//!         let url = ctx.target().ok_or("set `target` to the URL to check")?;
//!         let response = http::get(url).timeout(ctx.time_left()).send()?;
//!         let summary = format!("HTTP {} in {} ms", response.status(), response.elapsed().as_millis());
//!         let status = if response.status() == config.expect_status { Status::Healthy } else { Status::Unhealthy };
//!         Ok(CheckResult::new(status, summary).metric("response_time_seconds", response.elapsed().as_secs_f64()))
//!     }
//! }
//!
//! selfmon_sdk::export_checker!(Ping);
//! ```
//!
//! The crate is a `cdylib` (`[lib] crate-type = ["cdylib"]`); `cargo build --release --target wasm32-wasip2` turns it
//! into `target/wasm32-wasip2/release/<name>.wasm`, a component selfmon loads from its plugins folder.
//!
//! # The sandbox
//!
//! A plugin sees nothing by default. The operator's config grants each configured check its `target` and the hosts in
//! its `allow` list; any other connection fails with [`http::Error::Denied`] or [`tcp::Error::Denied`], and a
//! lookup of any other name fails too. There is no filesystem and no environment. Each call runs in a fresh instance with a deadline
//! ([`Context::time_left`]) and a memory cap: a plugin keeps no state between calls.
//!
//! # Layout
//!
//! - [`check`]: the [`Checker`] trait, its [`Context`] and [`CheckResult`].
//! - [`info`]: [`PluginInfo`] and the [`Setting`]s a plugin declares.
//! - [`http`]: a small blocking HTTP client over `wasi:http`.
//! - [`tcp`]: TCP connections over `wasi:sockets`, for protocols such as PostgreSQL's.
//! - [`tls`]: TLS handshakes made by selfmon, and the certificate chain the server presented.
//! - [`dns`]: DNS lookups made by selfmon, of any common record type.
//! - [`parse`]: the [`Parser`](parse::Parser) trait for log parsers, and helpers for levels and timestamps.
//! - [`rule`]: the [`Rule`](rule::Rule) trait for alert rules, and the read-only [`query`](rule::query) of what
//!   selfmon stored.
//! - [`log`]: structured records into selfmon's log.
//! - [`duration`]: serde support for durations written as `"250ms"`, `"10s"`, `"5m"`.

pub mod check;
pub mod dns;
pub mod duration;
pub mod http;
pub mod info;
pub mod log;
pub mod parse;
pub mod rule;
pub mod tcp;
pub mod tls;

mod export {
    include!(concat!(env!("OUT_DIR"), "/export.rs"));
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use check::{CheckResult, Checker, Context, Metric, Status};
pub use info::{PluginInfo, Setting};

/// The error type of plugin functions: anything that converts into a boxed error, including `&str` and `String`,
/// so `?` and `.ok_or("message")?` work.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The names a checker needs: `use selfmon_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::check::{CheckResult, Checker, Context, Metric, Status};
    pub use crate::info::{PluginInfo, Setting};
    pub use crate::{Error, http, log};
    pub use serde::Deserialize;
}
