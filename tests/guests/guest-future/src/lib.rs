//! A checker built against a later version of the contract (0.2.0) than the host implements, to test that the
//! host refuses it by naming both versions.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        inline: "
            package selfmon:plugin@0.2.0;

            interface types {
                record plugin-info { name: string }
            }

            interface health-check {
                use types.{plugin-info};
                info: func() -> plugin-info;
            }

            world checker {
                export health-check;
            }
        ",
        world: "checker",
    });

    struct Future;

    impl exports::selfmon::plugin::health_check::Guest for Future {
        fn info() -> selfmon::plugin::types::PluginInfo {
            selfmon::plugin::types::PluginInfo { name: "future".into() }
        }
    }

    export!(Future);
}
