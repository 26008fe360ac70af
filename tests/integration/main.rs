//! selfmon's integration tests: the real host (in-process through `selfmon::serve`, or the real binary where exit
//! codes and signals matter) against real HTTP servers on loopback, real SQLite files, and real plugins compiled
//! from this workspace, hostile ones included.

mod support;

mod alerting;
mod analytics;
mod api;
mod authoring;
mod checks;
mod cli;
mod cluster;
mod dashboard;
mod dependencies;
mod durability;
mod engines;
mod graphql;
mod https;
mod journal;
mod limits;
mod logs;
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
mod storage;
mod traces;
mod webhooks;
