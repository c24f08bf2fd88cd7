//! The runtime: a graph of tasks joined by bounded channels (backpressure),
//! barrier-aligned checkpoints, and the plan shared with `sluice validate`.
pub mod align;
pub mod coordinator;
pub mod edge;
mod inflight;
pub mod msg;
pub mod plan;
pub mod preflight;
pub mod reset;
pub mod runtime;
pub mod sink_node;
pub mod stage;
pub mod stats;
pub mod window;
#[cfg(test)]
mod tests;
