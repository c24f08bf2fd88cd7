//! The one place the WIT contract becomes Rust (`bindgen!`). Both worlds
//! share the `types`, `log` and `state` interfaces, generated once.

pub mod transformer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transformer",
    });
}

pub mod aggregator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "aggregator",
        with: {
            "sluice:plugin/types": super::transformer::sluice::plugin::types,
            "sluice:plugin/log": super::transformer::sluice::plugin::log,
            "sluice:plugin/state": super::transformer::sluice::plugin::state,
        },
    });
}

pub use transformer::sluice::plugin::types;

/// The contract version this host speaks, as it appears in component imports/exports.
pub const WIT_PACKAGE: &str = "sluice:plugin@0.1.0";
