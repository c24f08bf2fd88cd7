//! The WebAssembly side: engine and cache, the one `bindgen!` site, the host
//! imports and sandbox (`net`: the network allow-list), and long-lived per-stage
//! instances (`managed`: the lifecycle both worlds share; `instance`:
//! transforms, `aggregate`: aggregators of either contract version;
//! `columns`: the columnar values aggregate stages work with).
pub mod aggregate;
pub mod bindings;
pub mod columns;
pub mod engine;
pub mod error;
pub mod host;
pub mod instance;
pub mod managed;
pub mod net;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub mod wire;

pub use aggregate::AggregatePlugin;
pub use engine::PluginEngine;
pub use error::PluginError;
pub use instance::{inspect, PluginKind, PluginSpec, TransformPlugin};
