//! The glue the export macros expand to. Not part of the SDK's API.

pub use wit_bindgen;

/// Bindings for what every plugin imports, and for the shared types. The export macros point the plugin's own
/// bindings at these, so the types exist once.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package selfmon:sdk;

            world imports {
                import selfmon:plugin/host@0.1.0;
                import selfmon:plugin/types@0.1.0;
                import selfmon:plugin/query@0.1.0;
                import selfmon:plugin/tls@0.1.0;
                import selfmon:plugin/dns@0.1.0;
            }
        ",
        world: "selfmon:sdk/imports",
        generate_unused_types: true,
        generate_all,
    });
}

pub use bindings::selfmon::plugin::types;

/// What `export_checker!` calls.
pub mod checker {
    use super::types;
    use crate::check::{Checker, Context};

    pub fn info<C: Checker>() -> types::PluginInfo {
        C::info().into_wit()
    }

    pub fn validate<C: Checker>(request: types::CheckRequest) -> Result<(), String> {
        let context = Context::new(request);
        let config: C::Config = context.parse_config()?;
        C::validate(&config, &context).map_err(|e| e.to_string())
    }

    pub fn check<C: Checker>(request: types::CheckRequest) -> Result<types::CheckResult, String> {
        let context = Context::new(request);
        let config: C::Config = context.parse_config()?;
        C::check(config, &context).map(|result| result.into_wit()).map_err(|e| e.to_string())
    }
}

/// What `export_parser!` calls.
pub mod parser {
    use super::types;
    use crate::parse::{Batch, Parser, config};

    pub fn info<P: Parser>() -> types::PluginInfo {
        P::info().into_wit()
    }

    pub fn validate<P: Parser>(pairs: types::Config) -> Result<(), String> {
        let config: P::Config = config(&pairs)?;
        P::validate(&config).map_err(|e| e.to_string())
    }

    /// One outcome per line, whatever the parser returns: a parser that answers too few or too many has its
    /// batch's lines kept raw, with the reason.
    pub fn parse<P: Parser>(request: types::ParseRequest) -> Vec<types::ParseOutcome> {
        let lines = request.lines.len();
        let config: P::Config = match config(&request.config) {
            Ok(config) => config,
            Err(reason) => return vec![types::ParseOutcome::Invalid(reason); lines],
        };
        let batch = Batch { source: request.source, service: request.service, lines: request.lines };
        let outcomes = P::parse(&config, &batch);
        if outcomes.len() == lines {
            outcomes
        } else {
            let reason = format!("the parser answered {} outcomes for {lines} lines", outcomes.len());
            vec![types::ParseOutcome::Invalid(reason); lines]
        }
    }
}

/// What `export_rule!` calls.
pub mod rule {
    use super::types;
    use crate::parse::config;
    use crate::rule::{Context, Rule};

    pub fn info<R: Rule>() -> types::PluginInfo {
        R::info().into_wit()
    }

    pub fn validate<R: Rule>(pairs: types::Config) -> Result<(), String> {
        let config: R::Config = config(&pairs)?;
        R::validate(&config).map_err(|e| e.to_string())
    }

    pub fn evaluate<R: Rule>(request: types::RuleRequest) -> Result<Vec<types::Alert>, String> {
        let config: R::Config = config(&request.config)?;
        let context = Context::new(request.name, request.now_ms);
        let alerts = R::evaluate(config, &context).map_err(|e| e.to_string())?;
        Ok(alerts.into_iter().map(|alert| alert.into_wit(context.name())).collect())
    }
}
