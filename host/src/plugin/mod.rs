//! The WebAssembly side: engine and cache, the one `bindgen!` site, the host
//! imports and sandbox, and long-lived per-stage instances.
pub mod bindings;
pub mod engine;
pub mod error;
pub mod host;
pub mod instance;
pub mod wire;

pub use engine::PluginEngine;
pub use error::PluginError;
pub use instance::{inspect, PluginKind, PluginSpec, TransformPlugin};
