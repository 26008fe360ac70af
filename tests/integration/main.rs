//! selfmon's integration tests: the real host (in-process through `selfmon::serve`, or the real binary where exit
//! codes and signals matter) against real HTTP servers on loopback, real SQLite files, and real plugins compiled
//! from this workspace, hostile ones included.

mod support;

/// The tests' HTTP clients are reqwest's, as selfmon's own are, and take the process's TLS provider: the one selfmon
/// uses, installed before any test runs.
#[ctor::ctor(unsafe)]
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

mod alerting;
mod analytics;
mod api;
mod authoring;
mod checks;
mod cli;
mod cluster;
mod container;
mod dashboard;
mod dependencies;
mod durability;
mod engines;
mod graphql;
mod https;
mod journal;
mod limits;
mod logs;
mod network;
mod notifications;
mod openapi;
mod plugins;
mod postgres;
mod prometheus;
mod recovery;
mod reload;
mod saas;
mod sandbox;
mod security;
mod service;
mod storage;
mod traces;
mod webhooks;
