// The checker both versions share; each crate sets `VERSION` and includes this.

use std::time::Duration;

use selfmon_sdk::prelude::*;

#[derive(Deserialize)]
pub struct Config {
    delay_ms: u64,
}

pub struct Versioned;

impl Checker for Versioned {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new("versioned", VERSION, "Says which version it is")
            .config(Setting::integer("delay_ms", "How long a check takes").default(0))
    }

    fn check(config: Config, _: &Context) -> Result<CheckResult, Error> {
        std::thread::sleep(Duration::from_millis(config.delay_ms));
        Ok(CheckResult::healthy(format!("version {VERSION}")))
    }
}

selfmon_sdk::export_checker!(Versioned);
