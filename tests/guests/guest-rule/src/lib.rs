//! A dropped-in rule built on the bare contract (no SDK), for the tests of custom rules. Its config's `mode`:
//!
//! - `"checks"`: one alert per configured check the query interface reports unhealthy, labelled with the check;
//! - `"trap"`: panics;
//! - `"loop"`: never returns.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../../sdk/wit", world: "rule", generate_all });

    use selfmon::plugin::query;
    use selfmon::plugin::types::{Alert, PluginInfo, RuleRequest, Setting, Severity, Status, ValueKind};

    struct Rule;

    impl exports::selfmon::plugin::alert_rule::Guest for Rule {
        fn info() -> PluginInfo {
            PluginInfo {
                name: "custom-rule".into(),
                version: "0.1.0".into(),
                description: "A rule for tests: fires per unhealthy check, or misbehaves".into(),
                config: vec![Setting {
                    name: "mode".into(),
                    description: "checks, trap or loop".into(),
                    kind: ValueKind::Text,
                    default: Some("\"checks\"".into()),
                    required: false,
                    env: None,
                }],
                secrets: Vec::new(),
                default_target: None,
            }
        }

        fn validate(config: Vec<(String, String)>) -> Result<(), String> {
            match mode(&config).as_str() {
                "checks" | "trap" | "loop" => Ok(()),
                other => Err(format!("`mode` must be checks, trap or loop, not {other}")),
            }
        }

        fn evaluate(request: RuleRequest) -> Result<Vec<Alert>, String> {
            match mode(&request.config).as_str() {
                "trap" => panic!("the rule fell over"),
                "loop" => {
                    let mut n = 0u64;
                    loop {
                        n = n.wrapping_add(1);
                        std::hint::black_box(n);
                    }
                }
                _ => Ok(query::checks()
                    .into_iter()
                    .filter(|c| c.status == Some(Status::Unhealthy))
                    .map(|c| Alert {
                        name: "custom_down".into(),
                        severity: Severity::Low,
                        summary: format!("{} looks down to a custom rule", c.name),
                        labels: vec![("check".into(), c.name)],
                        annotations: Vec::new(),
                    })
                    .collect()),
            }
        }
    }

    fn mode(config: &[(String, String)]) -> String {
        config
            .iter()
            .find(|(k, _)| k == "mode")
            .map_or_else(|| "checks".into(), |(_, v)| v.trim_matches('"').to_string())
    }

    export!(Rule);
}
