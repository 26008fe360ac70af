//! The built-in plugins, compiled to `wasm32-wasip2` components by this crate's build script and embedded as bytes.
//!
//! Every directory under `plugins/` (but this one) is a plugin crate named after its directory. With the
//! `test-guests` feature the crates under `tests/guests/` are compiled too and appear in [`guests`].

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
