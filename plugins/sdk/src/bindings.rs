//! The one place wit-bindgen runs. Plugin authors never name anything in
//! here; the SDK re-exports the types and wraps the imports.
//!
//! Every world the SDK can export is generated (transformer 0.1.0,
//! aggregator 0.2.0 and 0.1.0), sharing the 0.1.0 `types`, `log` and
//! `state` interfaces. Each generation embeds a `component-type` custom
//! section describing its world; the export macro a plugin calls
//! (`export_transform!`, `export_aggregate!`, `export_aggregate_0_1!`) is
//! what pulls the right one into the component.

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
    // Contract 0.2.0: the columnar aggregate interface; types, log and
    // state are 0.1.0's, so they map onto the transformer world's.
    wit_bindgen::generate!({
        // A world of its own name including 0.2.0's: the export macro's
        // internal name derives from the world name, and 0.1.0's world has
        // the same one.
        inline: "package sluice:sdk; world columnar-aggregator { include sluice:plugin/aggregator@0.2.0; }",
        world: "sluice:sdk/columnar-aggregator",
        path: "../../wit/0.2",
        pub_export_macro: true,
        export_macro_name: "__export_aggregator",
        default_bindings_module: "sluice_plugin_sdk::bindings::aggregator",
        runtime_path: "sluice_plugin_sdk::__wit_bindgen::rt",
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::transformer::sluice::plugin::types,
            "sluice:plugin/log@0.1.0": crate::bindings::transformer::sluice::plugin::log,
            "sluice:plugin/state@0.1.0": crate::bindings::transformer::sluice::plugin::state,
            "sluice:plugin/columns@0.2.0": generate,
        },
    });
}

/// The aggregator world of contract 0.1.0 (per-record lists), for plugins
/// that must run on hosts without 0.2.0 (`export_aggregate_0_1!`).
pub mod aggregator_0_1 {
    wit_bindgen::generate!({
        world: "sluice:plugin/aggregator@0.1.0",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_aggregator_0_1",
        default_bindings_module: "sluice_plugin_sdk::bindings::aggregator_0_1",
        runtime_path: "sluice_plugin_sdk::__wit_bindgen::rt",
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::transformer::sluice::plugin::types,
            "sluice:plugin/log@0.1.0": crate::bindings::transformer::sluice::plugin::log,
            "sluice:plugin/state@0.1.0": crate::bindings::transformer::sluice::plugin::state,
        },
    });
}
