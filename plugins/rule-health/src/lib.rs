//! The health rule: an alert per configured check whose latest run is unhealthy or could not be carried out (the
//! plugin failed, crashed or ran out of time), or with `status = "degraded"` also degraded.
//!
//! ```toml
//! [[rule]]
//! name = "database_issues"
//! plugin = "health"
//! config = { plugins = ["postgres"], status = "degraded" }
//! ```
//!
//! The alert carries the check's name and plugin as labels, so the host can hold it back while a check it depends
//! on is down. Disabled checks, and checks that have not run yet, raise nothing.

use selfmon_sdk::prelude::*;
use selfmon_sdk::rule::{Alert, CheckState, Context, Rule, Severity, Status, query};

pub struct Health;

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Worst {
    Degraded,
    Unhealthy,
}

#[derive(Deserialize)]
pub struct Config {
    /// Only checks run by these plugins (all when empty).
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Only these checks (all when empty).
    #[serde(default)]
    pub checks: Vec<String>,
    /// The status from which a check raises an alert.
    pub status: Worst,
}

impl Rule for Health {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "health",
            env!("CARGO_PKG_VERSION"),
            "An alert per configured check that is unhealthy or degraded",
        )
        .config(
            Setting::list("plugins", "Only checks run by these plugins, such as [\"postgres\"] (all when empty)")
                .default(Vec::<String>::new()),
        )
        .config(Setting::list("checks", "Only these checks, by name (all when empty)").default(Vec::<String>::new()))
        .config(Setting::text("status", "`unhealthy`, or `degraded` for degraded or worse").default("unhealthy"))
    }

    fn evaluate(config: Config, _: &Context) -> Result<Vec<Alert>, Error> {
        Ok(alerts(&config, query::checks()))
    }
}

selfmon_sdk::export_rule!(Health);

pub fn alerts(config: &Config, checks: Vec<CheckState>) -> Vec<Alert> {
    checks
        .into_iter()
        .filter(|c| c.enabled)
        .filter(|c| config.plugins.is_empty() || config.plugins.contains(&c.plugin))
        .filter(|c| config.checks.is_empty() || config.checks.contains(&c.name))
        .filter_map(|check| {
            let word = match (check.status, &config.status) {
                (Some(Status::Unhealthy), _) => "unhealthy",
                (Some(Status::Degraded), Worst::Degraded) => "degraded",
                // It ran, and no answer came: as good as down.
                (None, _) if check.last_run_ms.is_some() => "not answering",
                _ => return None,
            };
            let summary = format!("{} is {word}: {}", check.name, check.summary);
            Some(Alert::new(Severity::Critical, summary).label("check", &check.name).label("plugin", &check.plugin))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, plugin: &str, status: Option<Status>, enabled: bool) -> CheckState {
        CheckState {
            name: name.into(),
            plugin: plugin.into(),
            status,
            summary: "HTTP 503".into(),
            last_run_ms: Some(1),
            enabled,
            depends_on: Vec::new(),
        }
    }

    #[test]
    fn unhealthy_checks_raise_and_the_filters_apply() {
        let checks = || {
            vec![
                state("db", "postgres", Some(Status::Degraded), true),
                state("openai", "openai", Some(Status::Unhealthy), true),
                state("claude", "anthropic", Some(Status::Healthy), true),
                state("old", "http", Some(Status::Unhealthy), false),
                state("new", "http", None, true),
                CheckState { last_run_ms: None, ..state("never-ran", "http", None, true) },
            ]
        };
        let all = Config { plugins: Vec::new(), checks: Vec::new(), status: Worst::Unhealthy };
        let raised = alerts(&all, checks());
        assert_eq!(raised.len(), 2);
        assert_eq!(raised[0].summary(), "openai is unhealthy: HTTP 503");
        assert_eq!(raised[1].summary(), "new is not answering: HTTP 503", "a run that failed counts as down");
        assert_eq!(raised[0].labels(), [("check".into(), "openai".into()), ("plugin".into(), "openai".into())]);

        let database = Config { plugins: vec!["postgres".into()], checks: Vec::new(), status: Worst::Degraded };
        assert_eq!(alerts(&database, checks())[0].summary(), "db is degraded: HTTP 503");
        let named = Config { plugins: Vec::new(), checks: vec!["claude".into()], status: Worst::Degraded };
        assert!(alerts(&named, checks()).is_empty());
    }
}
