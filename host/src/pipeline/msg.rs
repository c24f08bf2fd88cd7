//! What travels on the edges of the pipeline graph, and between nodes and the
//! checkpoint coordinator.

use std::sync::Arc;

use crate::batch::Batch;
use crate::dead_letter::DeadLetter;

/// A checkpoint barrier. Everything a node received before the barrier (on all
/// of its inputs) belongs to epoch `epoch`; nothing after it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: u64,
    /// The last barrier: sources stop after emitting it, nodes exit after
    /// forwarding it.
    pub last: bool,
    /// Every source read all its input (a bounded run's end, not a
    /// shutdown): aggregate stages fire their open windows before answering.
    pub drained: bool,
}

#[derive(Debug)]
pub enum Msg {
    Data(Batch),
    /// Records given up on, on a node's edge to the DLQ sink (only there).
    DeadLetters(Vec<DeadLetter>),
    Barrier(Barrier),
    /// A source's partitions (`Origin::partition`) it started or stopped
    /// reading. Sent before an opened partition's first record and after a
    /// closed one's last, so event-time stages know a partition exists
    /// before it delivers (it holds their watermark back until it delivers
    /// or stays idle). Sent again after every (re)start: not in checkpoints.
    Partitions(Partitions),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    /// `Origin::source` of the partitions.
    pub source: Arc<str>,
    pub opened: Vec<Arc<str>>,
    /// Read to their end for good (a Kinesis parent at SHARD_END).
    pub closed: Vec<Arc<str>>,
}

/// A node's answer to a barrier: its state for the checkpoint of `epoch`.
/// Sources report positions, stages their keyed state, sinks the token that
/// `Sink::commit` needs to make the epoch's output visible.
#[derive(Debug)]
pub struct Ack {
    /// `sources.NAME`, `stages.NAME` or `sinks.NAME`.
    pub node: String,
    pub epoch: u64,
    pub state: Option<serde_json::Value>,
}

/// Requests nodes may send to the coordinator.
#[derive(Debug)]
pub enum Request {
    /// A sink's buffer reached its size or age limit: checkpoint (and so roll
    /// files) now rather than at the next interval.
    Checkpoint { node: String, reason: String },
    /// A source has read everything it will read (file at EOF, bounded run).
    Exhausted { node: String },
    /// A node failed in a way it cannot recover from; the pipeline stops
    /// without checkpointing past the failure.
    Failed { node: String, error: String },
}
