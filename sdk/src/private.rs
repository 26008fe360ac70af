//! The glue the export macros expand to. Not part of the SDK's API.

pub use wit_bindgen;

/// Bindings for what every plugin imports, and for the shared types. The export macros point the plugin's own
/// bindings at these, so the types exist once.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        inline: "
            package selfmon:sdk;

            world imports {
                import selfmon:plugin/host@0.1.0;
                import selfmon:plugin/types@0.1.0;
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
