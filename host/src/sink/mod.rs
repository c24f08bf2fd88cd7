//! Sinks: where records end up. One folder or file per sink kind.
//!
//! The two-phase contract that makes outputs exactly-once:
//! 1. `write` buffers or stages records; nothing is visible yet.
//! 2. `prepare(epoch)` at a barrier makes everything written so far durable
//!    but still invisible, and returns a token describing it.
//! 3. The coordinator stores every token with the source positions in one
//!    checkpoint; only once that is durable does it call `commit(token)`,
//!    which makes the output visible. `commit` is idempotent.
//! 4. On start, `recover(token_of_last_checkpoint)` re-runs that commit and
//!    discards anything staged by later, uncompleted epochs.
//! A crash anywhere leaves either the old checkpoint (staged output discarded,
//! records replayed) or the new one (staged output committed on recovery).

pub mod dlq;
pub mod file;
pub mod parquet;

use async_trait::async_trait;

use crate::batch::{Batch, Format};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {message}")]
    Io { sink: String, message: String, retryable: bool },
    #[error("sink {sink}: {message}")]
    Config { sink: String, message: String },
}

impl SinkError {
    pub fn retryable(&self) -> bool {
        matches!(self, SinkError::Io { retryable: true, .. })
    }
}

/// A record a sink refused (it does not fit the sink's schema); it goes to the
/// DLQ with this reason.
#[derive(Debug, Clone)]
pub struct Refused {
    pub index: usize,
    pub code: String,
    pub message: String,
}

/// What a sink did with a batch.
#[derive(Debug, Default)]
pub struct Written {
    pub accepted: usize,
    pub refused: Vec<Refused>,
}

#[async_trait]
pub trait Sink: Send {
    /// The format the sink consumes without conversion.
    fn takes(&self) -> Format;
    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError>;
    /// Durable, invisible; returns the commit token for `epoch`.
    async fn prepare(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError>;
    async fn commit(&mut self, token: &serde_json::Value) -> Result<(), SinkError>;
    async fn recover(&mut self, token: Option<&serde_json::Value>) -> Result<(), SinkError>;
    /// True when buffered output reached the sink's size or age limit and a
    /// checkpoint should roll it now.
    fn wants_checkpoint(&self) -> Option<String> {
        None
    }
    /// Files or objects made visible so far (for the run summary).
    fn committed_outputs(&self) -> u64 {
        0
    }
    /// Records written to a Hive default partition because a partition
    /// column was absent or null (for the run summary and metrics).
    fn default_partition_records(&self) -> u64 {
        0
    }
}

/// Build the sink described by `[sinks.NAME]`.
pub fn build(name: &str, spec: &crate::config::SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
    use crate::config::SinkSpec;
    Ok(match spec {
        SinkSpec::Parquet(p) => Box::new(parquet::build(name, p, std::path::Path::new("."))?),
        SinkSpec::File(f) => Box::new(file::FileSink::create(name, std::path::Path::new(&f.path))?),
    })
}
