//! selfmon's own running: its metrics for Prometheus ([`telemetry`]) with its heap's figures ([`heap`]), its own log in rotating files ([`journal`]),
//! the periodic cleanup of the store ([`retention`]), and reloading the plugins folder and the config while
//! running ([`reload`]).

pub mod heap;
pub mod journal;
pub mod reload;
pub mod retention;
pub mod telemetry;
