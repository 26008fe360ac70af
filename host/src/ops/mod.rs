//! selfmon's own running: its metrics for Prometheus ([`telemetry`]) with its heap's figures ([`heap`]), its own
//! log in rotating files ([`journal`]), the periodic cleanup of the store ([`retention`]), reloading the plugins
//! folder and the config while running ([`reload`]), and telling a service manager when it is ready
//! ([`supervisor`]).

pub mod heap;
pub mod journal;
pub mod reload;
pub mod retention;
pub mod supervisor;
pub mod telemetry;
