//! A checker that never returns: it spins (`mode = "spin"`, stopped by epoch interruption) or blocks in a host
//! wait (`mode = "sleep"`, stopped by the host's wall-clock deadline).

use std::time::Duration;

use selfmon_sdk::prelude::*;

#[derive(Deserialize)]
pub struct Config {
    mode: String,
}

pub struct Loop;

impl Checker for Loop {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new("loop", "0.1.0", "Never returns")
            .config(Setting::text("mode", "`spin` or `sleep`").default("spin"))
    }

    fn check(config: Config, _: &Context) -> Result<CheckResult, Error> {
        if config.mode == "sleep" {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

selfmon_sdk::export_checker!(Loop);
