//! A component of the contract's `rule` world, to test that a host which does not run rules yet says so.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "rule", generate_all });

    use selfmon::plugin::types::{Alert, PluginInfo, RuleRequest};

    struct Rule;

    impl exports::selfmon::plugin::alert_rule::Guest for Rule {
        fn info() -> PluginInfo {
            PluginInfo {
                name: "rule".into(),
                version: "0.1.0".into(),
                description: "Never fires".into(),
                config: Vec::new(),
                secrets: Vec::new(),
                default_target: None,
            }
        }

        fn validate(_: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }

        fn evaluate(request: RuleRequest) -> Result<Vec<Alert>, String> {
            // Use the query import, as a real rule would.
            let _ = selfmon::plugin::query::checks();
            let _ = request.now_ms;
            Ok(Vec::new())
        }
    }

    export!(Rule);
}
