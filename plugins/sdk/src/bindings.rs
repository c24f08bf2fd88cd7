//! The one place wit-bindgen runs. Plugin authors never name anything in
//! here; the SDK re-exports the types and wraps the imports.
//!
//! Both worlds are generated, sharing the `types`, `log` and `state` interfaces. Each
//! generation embeds a `component-type` custom section describing its world;
//! the export macros (`export_transform!` / `export_aggregate!`) are what
//! pulls the right one into a plugin (see `link_*_world` below).

pub mod transformer {
    wit_bindgen::generate!({
        world: "transformer",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_transformer",
        default_bindings_module: "sluice_plugin_sdk::bindings::transformer",
        runtime_path: "sluice_plugin_sdk::__wit_bindgen::rt",
    });
}

pub mod aggregator {
    wit_bindgen::generate!({
        world: "aggregator",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_aggregator",
        default_bindings_module: "sluice_plugin_sdk::bindings::aggregator",
        runtime_path: "sluice_plugin_sdk::__wit_bindgen::rt",
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::transformer::sluice::plugin::types,
            "sluice:plugin/log@0.1.0": crate::bindings::transformer::sluice::plugin::log,
            "sluice:plugin/state@0.1.0": crate::bindings::transformer::sluice::plugin::state,
        },
    });
}
