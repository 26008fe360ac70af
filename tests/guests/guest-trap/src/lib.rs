//! A checker that panics, which traps the instance.

use selfmon_sdk::prelude::*;

pub struct Trap;

impl Checker for Trap {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new("trap", "0.1.0", "Panics on every run")
    }

    fn check(_: Self::Config, ctx: &Context) -> Result<CheckResult, Error> {
        panic!("deliberate panic in check `{}`", ctx.name());
    }
}

selfmon_sdk::export_checker!(Trap);
