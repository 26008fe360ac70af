//! A checker that puts its secret everywhere it can: summary, details, metric labels, the log, stderr, and, when
//! `fail` is set, its error. The host must let none of it through.

use selfmon_sdk::prelude::*;

#[derive(Deserialize)]
pub struct Config {
    fail: bool,
}

pub struct Echo;

impl Checker for Echo {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new("echo", "0.1.0", "Leaks its secret on purpose")
            .config(Setting::boolean("fail", "Return the secret as an error instead").default(false))
            .secret(Setting::text("token", "The secret to leak").required())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let token = ctx.secret("token").unwrap_or_default();
        log::info(&format!("the token is {token}"), &[("token", token)]);
        eprintln!("stderr says the token is {token}");
        if config.fail {
            return Err(format!("failed with token {token}").into());
        }
        Ok(CheckResult::healthy(format!("token {token}")).detail("token", token).metric_with(
            "echo_total",
            1.0,
            &[("token", token)],
        ))
    }
}

selfmon_sdk::export_checker!(Echo);
