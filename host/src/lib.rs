//! selfmon: a self-hosted monitoring host whose checks, log parsers and alert rules run as sandboxed WebAssembly
//! components.
//!
//! # Layout
//!
//! One folder per capability; data flows down the list, and [`storage`] at the bottom imports none of the folders
//! above it. Each capability keeps its SQL in a `store.rs` of its own.
//!
//! - [`app`]: the composition root. [`app::host::Host`] is what a config builds (plugins, checks, log sources,
//!   rules, access, privacy, every problem reported at once); [`app::serve`] runs all of it until told to stop.
//! - [`cli`]: the `selfmon` command, and the commands for plugin authors.
//! - [`api`]: the HTTP API (one file per area), its GraphQL face, the access guard, the live dashboard, and the
//!   query layer every one of them answers from.
//! - [`ops`]: selfmon's own running: its metrics, its log, the periodic cleanup, and reloading while running.
//! - [`alerting`]: rules, the alert lifecycle, silences, inhibition, escalation, and the channels notifications go
//!   to.
//! - [`events`]: the internal event bus, outgoing webhooks, and the one retrying way selfmon delivers to a
//!   receiver.
//! - [`analytics`]: events from the platform's services, what AI usage costs, and the answers over them.
//! - [`traces`]: OTLP decoded, spans stored, trace trees, per-operation profiles.
//! - [`logs`]: log sources (files, syslog, HTTP), parsing, the one ingest path, search and analysis.
//! - [`checks`]: checks built and scheduled, the health board, recovery, this machine's figures, and answers over
//!   stored runs.
//! - [`runtime`]: the wasmtime engine, the contract's bindings, grants, the compiled-plugin cache, calls into
//!   plugins, the plugins selfmon knows, and their settings checked against what they declare.
//! - [`storage`]: SQLite, one writer committing in groups, readers of their own, migrations, the privacy
//!   chokepoint, and the seam a second engine plugs into.
//! - [`config`]: the operator's TOML file, environment overrides, secrets by reference.

pub mod alerting;
pub mod analytics;
pub mod api;
pub mod app;
pub mod checks;
pub mod cli;
pub mod config;
pub mod events;
pub mod logs;
pub mod ops;
pub mod runtime;
pub mod storage;
pub mod traces;
