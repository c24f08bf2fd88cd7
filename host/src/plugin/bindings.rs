//! The one place the WIT contract becomes Rust (`bindgen!`). Every world
//! (transformer 0.1.0, aggregator 0.1.0 and 0.2.0) shares the 0.1.0
//! `types`, `log` and `state` interfaces, generated once.

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

/// Contract 0.2.0's aggregator: the columnar aggregate interface; types,
/// log and state are 0.1.0's (one host implementation of the imports).
pub mod aggregator_0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2",
        world: "sluice:plugin/aggregator@0.2.0",
        with: {
            "sluice:plugin/types@0.1.0": super::transformer::sluice::plugin::types,
            "sluice:plugin/log@0.1.0": super::transformer::sluice::plugin::log,
            "sluice:plugin/state@0.1.0": super::transformer::sluice::plugin::state,
        },
    });
}

pub use aggregator_0_2::sluice::plugin0_2_0::columns;
pub use transformer::sluice::plugin::types;

/// The contract versions this host speaks, for messages: transforms
/// target 0.1.0, aggregators 0.2.0 (or 0.1.0).
pub const WIT_PACKAGE: &str = "sluice:plugin@0.1.0 (transformer), sluice:plugin@0.2.0 or @0.1.0 (aggregator)";
