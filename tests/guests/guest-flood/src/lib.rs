//! A checker that writes far more log output than anyone should, through the host log and stderr, then succeeds.

use std::io::Write;

use selfmon_sdk::prelude::*;

pub struct Flood;

impl Checker for Flood {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new("flood", "0.1.0", "Floods the log, then reports healthy")
    }

    fn check(_: Self::Config, _: &Context) -> Result<CheckResult, Error> {
        let line = "x".repeat(1000);
        for i in 0..100_000 {
            log::info(&line, &[("i", &i.to_string())]);
        }
        let mut stderr = std::io::stderr();
        for _ in 0..10_000 {
            let _ = stderr.write_all(line.as_bytes());
        }
        Ok(CheckResult::healthy("flooded"))
    }
}

selfmon_sdk::export_checker!(Flood);
