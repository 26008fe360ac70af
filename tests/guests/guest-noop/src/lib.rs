//! A checker that does nothing and reports healthy: the baseline for call-overhead benchmarks and for checks that
//! must keep their schedule while others misbehave. With `fail` set it cannot carry out the check instead.

use selfmon_sdk::prelude::*;

#[derive(Deserialize)]
pub struct Config {
    fail: Option<String>,
}

pub struct Noop;

impl Checker for Noop {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new("noop", "0.1.0", "Reports healthy without doing anything")
            .config(Setting::text("fail", "Fail to carry out the check, with this message"))
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        if let Some(message) = config.fail {
            return Err(message.into());
        }
        Ok(CheckResult::healthy(format!("{} is fine", ctx.name())).metric("noop_runs_total", 1.0))
    }
}

selfmon_sdk::export_checker!(Noop);
