//! Kinesis source (polling and enhanced fan-out, resharding, KPL de-aggregation).
//!
//! One reader task per shard (`poll`, `efo`) turns records into batches
//! (`records`, `kpl`) and reports them to one merge task (`merge`), the only
//! emitter: it sends batches downstream, injects barriers between them and
//! answers each with the positions (`position`) of what it emitted before it.
//! `shards` decides when a shard may start: after all its parents finished.
//! `identity` ties the state to one incarnation of the stream and names the
//! fan-out consumer.

pub mod client;
pub mod config;
mod efo;
pub(crate) mod identity;
pub mod kpl;
mod merge;
mod poll;
pub mod position;
mod reader;
pub mod records;
pub mod shards;

use super::{SourceCtx, SourceError};

pub use position::SourceState;

/// Runs the source until the last barrier (or a failure).
pub async fn run(spec: config::KinesisSourceSpec, ctx: SourceCtx) -> Result<(), SourceError> {
    merge::Merge::start(spec, ctx).await?.run().await
}
