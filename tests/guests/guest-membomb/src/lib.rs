//! A checker that allocates memory until something stops it.

use selfmon_sdk::prelude::*;

pub struct MemBomb;

impl Checker for MemBomb {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new("membomb", "0.1.0", "Allocates without bound")
    }

    fn check(_: Self::Config, _: &Context) -> Result<CheckResult, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used.
            hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
        }
    }
}

selfmon_sdk::export_checker!(MemBomb);
