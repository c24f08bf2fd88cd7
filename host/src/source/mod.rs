//! Sources: where records come from. A source is a task that emits batches and
//! barriers on its output, and answers each barrier with its positions.
//!
//! Contract (the checkpoint invariant depends on it):
//! - a barrier is emitted *between* batches; the position reported for it
//!   covers exactly the records emitted before it;
//! - on start, `resume` is the state reported for the last completed
//!   checkpoint (or `None`), and the source continues right after it;
//! - after `Request::Exhausted` a source keeps answering barriers until it
//!   gets one with `last = true`, then emits it and returns.

pub mod emit;
pub mod file;
pub mod generator;
pub mod kinesis;
pub mod rows;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::pipeline::msg::{Ack, Barrier, Request};
use crate::pipeline::stats::NodeStats;

/// Everything a running source gets from the runtime.
pub struct SourceCtx {
    /// `sources.NAME`.
    pub node: String,
    pub name: Arc<str>,
    /// The pipeline's name (the Kinesis source names its fan-out consumer after it).
    pub pipeline: Arc<str>,
    pub out: crate::pipeline::edge::Outputs,
    /// Barriers to inject, from the coordinator.
    pub barriers: mpsc::UnboundedReceiver<Barrier>,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub requests: mpsc::UnboundedSender<Request>,
    /// State of the last completed checkpoint.
    pub resume: Option<serde_json::Value>,
    /// Records per batch and the time after which a partial batch is sent.
    pub batch: crate::config::BatchSpec,
    pub stats: Arc<NodeStats>,
    /// Where the downstream consumers want records: the source emits it
    /// directly when it can, which saves a conversion.
    pub preferred: crate::batch::Format,
}

/// A source's context with no pipeline behind it: one data edge, a DLQ edge
/// and the coordinator's channels, for running a source on its own
/// (`sluice bench-kinesis`, source tests).
pub struct Detached {
    pub ctx: SourceCtx,
    pub data: mpsc::Receiver<crate::pipeline::edge::Envelope>,
    pub dlq: mpsc::Receiver<crate::pipeline::edge::Envelope>,
    pub barriers: mpsc::UnboundedSender<Barrier>,
    pub acks: mpsc::UnboundedReceiver<Ack>,
    pub requests: mpsc::UnboundedReceiver<Request>,
}

impl SourceCtx {
    /// `sources.NAME` emitting JSON batches of `batch` into [`Detached::data`].
    pub fn detached(name: &str, batch: crate::config::BatchSpec, resume: Option<serde_json::Value>) -> Detached {
        use crate::pipeline::edge::{Edge, Outputs};
        let (data_tx, data) = mpsc::channel(8);
        let (dlq_tx, dlq) = mpsc::channel(64);
        let (barriers, barrier_rx) = mpsc::unbounded_channel();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (req_tx, requests) = mpsc::unbounded_channel();
        let ctx = SourceCtx {
            node: format!("sources.{name}"),
            name: Arc::from(name),
            pipeline: Arc::from("detached"),
            out: Outputs {
                edges: vec![Edge { to: "sinks.out".into(), input: 0, tx: data_tx }],
                dlq: Some(Edge { to: "dlq".into(), input: 0, tx: dlq_tx }),
            },
            barriers: barrier_rx,
            acks: ack_tx,
            requests: req_tx,
            resume,
            batch,
            stats: Arc::new(NodeStats::default()),
            preferred: crate::batch::Format::Json,
        };
        Detached { ctx, data, dlq, barriers, acks, requests }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {source_name}: cannot read {what}: {message}")]
    Io { source_name: String, what: String, message: String },
    #[error("source {source_name}: {message}")]
    Config { source_name: String, message: String },
    #[error("source {source_name}: {message}")]
    Remote { source_name: String, message: String, retryable: bool },
    #[error("source {0}: the pipeline stopped (downstream closed)")]
    Closed(String),
}

/// Start the source task described by `spec`.
pub fn spawn(
    spec: &crate::config::SourceSpec,
    ctx: SourceCtx,
) -> tokio::task::JoinHandle<Result<(), SourceError>> {
    use crate::config::SourceSpec;
    match spec.clone() {
        SourceSpec::File(s) => tokio::spawn(file::run(s, ctx)),
        SourceSpec::Generator(s) => tokio::spawn(generator::run(s, ctx)),
        SourceSpec::Kinesis(s) => tokio::spawn(kinesis::run(s, ctx)),
    }
}
