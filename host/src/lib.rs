//! selfmon: a self-hosted monitoring host whose checks, log parsers and alert rules run as sandboxed WebAssembly
//! components.
//!
//! # Layout
//!
//! One folder per capability, listed from the composition root down to what everything uses. No two files import
//! each other, directly or through others (the one exception is inside [`runtime`]: name lookups and the store
//! state). [`config`] imports nothing of the crate; [`storage`] and [`runtime`] import only [`config`]. The folders
//! above them import one another where they need to (the scheduler publishes on [`events`] and counts in [`ops`],
//! a reload rebuilds through [`app`]), so their order is for reading. Each capability keeps its SQL in a `store.rs`
//! (or `store/`) of its own, and only those files and [`storage`] name the database engine's types.
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
//! - [`cluster`]: nodes sharing a PostgreSQL store: heartbeats, who runs which check, who leads, and other nodes'
//!   runs onto this node's board.
//! - [`checks`]: checks built and scheduled, the health board, recovery, this machine's figures, and answers over
//!   stored runs.
//! - [`runtime`]: the wasmtime engine, the contract's bindings, grants, the compiled-plugin cache, calls into
//!   plugins, the plugins selfmon knows, and their settings checked against what they declare.
//! - [`storage`]: SQLite, one writer committing in groups, readers of their own, migrations, the privacy
//!   chokepoint, and the seam a second engine plugs into.
//! - [`config`]: the operator's TOML file, sidecars from the plugins folder, environment overrides, secrets by
//!   reference.

pub mod alerting;
pub mod analytics;
pub mod api;
pub mod app;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
pub mod logs;
pub mod ops;
pub mod runtime;
pub mod storage;
pub mod traces;
