//! A checker that does nothing and reports healthy: the baseline for call-overhead benchmarks and for checks that
//! must keep their schedule while others misbehave.

use selfmon_sdk::prelude::*;

pub struct Noop;

impl Checker for Noop {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new("noop", "0.1.0", "Reports healthy without doing anything")
    }

    fn check(_: Self::Config, ctx: &Context) -> Result<CheckResult, Error> {
        Ok(CheckResult::healthy(format!("{} is fine", ctx.name())).metric("noop_runs_total", 1.0))
    }
}

selfmon_sdk::export_checker!(Noop);
