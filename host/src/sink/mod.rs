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
//!
//! Output a sink did not write is never cut or overwritten: `recover(None)`
//! (no checkpoint, or none for this sink: a first run, a new or renamed sink)
//! must not destroy what an earlier run committed at the destination. A sink
//! either writes beside it (new names) or refuses to start with a message
//! naming the destination and how to start over.
//!
//! Failures and retries. The pipeline retries only what is idempotent:
//! - `write` and `prepare` are called ONCE. If they fail, the run stops and the
//!   next run resumes from the last checkpoint (`recover` discards whatever the
//!   failed call left). A call that failed half-way may have appended part of a
//!   batch, moved buffered data, or taken the open files out of the sink's
//!   state; calling it again would commit a torn or repeated prefix, or return
//!   a token that misses an epoch. So a sink must not retry a whole call either,
//!   and after such a failure it should refuse further `write`/`prepare` calls.
//! - Retries belong inside a backend, around one idempotent step (one write of
//!   a whole buffer at a known offset, one part upload, one PUT): the sink
//!   retries that step itself and reports `retryable: false` once it gives up.
//! - A failed fsync is never retried, anywhere: on Linux a second fsync can
//!   report success after the kernel dropped the data of the first. It fails
//!   the call (and so the run).
//! - `commit` is idempotent by contract (it runs again on recovery); the node
//!   retries it on errors marked `retryable`.
//!
//! Overlapping writes. A sink that writes to a service (OpenSearch) may
//! offer `write_detached`: the batch's write as a future that borrows nothing
//! from the sink, so the node can take the next batch while it runs (the
//! service never idles between batches). The contract is the same as
//! `write`'s — called once per batch, a failure stops the run — and the node
//! keeps it: it handles the outcomes in batch order and drains every
//! detached write before `prepare`, so a token (and the checkpoint holding
//! it) never covers a write that has not completed. Whatever bounds the
//! sink's own concurrency (requests in flight) must hold across the
//! detached writes together, not per batch.
//!
//! Errors say what failed, on which file or object, and what to do.

pub mod dlq;
pub(crate) mod dlq_s3;
pub(crate) mod durable;
pub mod file;
pub mod opensearch;
pub mod parquet;

use async_trait::async_trait;

use crate::batch::{Batch, Format, Rejection};
use crate::config::SinkSpec;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {message}")]
    Io { sink: String, message: String, retryable: bool },
    #[error("sink {sink}: {message}")]
    Config { sink: String, message: String },
    /// `write` or `prepare` failed: not retried, the run stops (see the module docs).
    #[error("{cause}. The {call} is not retried (it may have been half done): the run stops here. Fix the cause and run again: it resumes from the last checkpoint and replays the records after it")]
    Halted { call: &'static str, cause: Box<SinkError> },
}

impl SinkError {
    pub fn retryable(&self) -> bool {
        matches!(self, SinkError::Io { retryable: true, .. })
    }
}

/// What a sink did with a batch.
#[derive(Debug, Default)]
pub struct Written {
    pub accepted: usize,
    /// Records the sink refused (they do not fit its schema), by index into
    /// the batch it was given; they go to the DLQ with these reasons.
    pub refused: Vec<Rejection>,
}

/// A batch's write running on its own (see [`Sink::write_detached`]).
pub type Detached = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Written, SinkError>> + Send + 'static>>;

/// See [`Sink::open_files`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFiles {
    /// The most files open at once.
    pub peak: u64,
    /// Files finished before their size or age because too many were open.
    pub finished_early: u64,
}

#[async_trait]
pub trait Sink: Send {
    /// The format the sink consumes without conversion.
    fn takes(&self) -> Format;
    /// Called once per batch; a failure stops the run (never retried).
    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError>;
    /// Instead of `write`, for sinks whose writes may overlap (see the
    /// module docs): does the batch's CPU work now (the node calls it on its
    /// own thread) and returns the rest — the waiting on a service — as a
    /// future the node runs beside the following batches. `None` (the
    /// default): the sink has only `write`. The same contract as `write`:
    /// called once per batch, a failure stops the run; refusals index into
    /// `batch`.
    fn write_detached(&mut self, _batch: &Batch) -> Option<Detached> {
        None
    }
    /// Durable, invisible; returns the commit token for `epoch`. Called once
    /// per epoch; a failure stops the run (never retried).
    async fn prepare(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError>;
    /// Idempotent: may run again for the same token (retries, recovery).
    async fn commit(&mut self, token: &serde_json::Value) -> Result<(), SinkError>;
    /// Before the first `write`: complete `token`'s commit and discard what
    /// later epochs staged; with no token, never destroy existing output.
    async fn recover(&mut self, token: Option<&serde_json::Value>) -> Result<(), SinkError>;
    /// True when buffered output reached the sink's size or age limit and a
    /// checkpoint should roll it now.
    fn wants_checkpoint(&self) -> Option<String> {
        None
    }
    /// The next `prepare` is the run's last (the sources are exhausted or
    /// the run is stopping): output the sink keeps open across checkpoints
    /// must be finished in it.
    fn finishing(&mut self) {}
    /// Open-file counts of sinks that keep files open (for the run summary
    /// and metrics).
    fn open_files(&self) -> OpenFiles {
        OpenFiles::default()
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

/// A problem `build` would meet, found without creating anything (for
/// `validate` and the preflight of `run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecProblem {
    /// The `path` key.
    Path(String),
    /// Another key of the sink's table (`None`: the table as a whole).
    Config { key: Option<&'static str>, message: String },
}

/// Everything the rest of the host asks about a sink's kind. The closed
/// `SinkSpec` enum is matched here only: a new sink is a new arm in these methods, not a hunt through callers.
impl crate::config::SinkSpec {
    /// The nodes feeding this sink.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkSpec::Parquet(p) => &p.inputs,
            SinkSpec::File(f) => &f.inputs,
            SinkSpec::OpenSearch(o) => &o.inputs,
        }
    }

    /// The destination the `path` key names: the table's root directory, or
    /// the NDJSON file. `None` for a sink that writes to a service (nothing
    /// on a path to check for overlaps or for `reset` to remove).
    pub fn path(&self) -> Option<&str> {
        match self {
            SinkSpec::Parquet(p) => Some(&p.path),
            SinkSpec::File(f) => Some(&f.path),
            SinkSpec::OpenSearch(_) => None,
        }
    }

    /// The destination for people (run summary, `validate`).
    pub fn describe_destination(&self) -> String {
        match self {
            SinkSpec::OpenSearch(o) => format!("OpenSearch {} index {}", o.endpoints.join(", "), o.index),
            other => other.path().unwrap_or_default().to_string(),
        }
    }

    /// Whether the destination is one file or a directory tree.
    pub fn destination_kind(&self) -> crate::config::outputs::Kind {
        use crate::config::outputs::Kind;
        match self {
            SinkSpec::Parquet(_) => Kind::Dir,
            SinkSpec::File(_) | SinkSpec::OpenSearch(_) => Kind::File,
        }
    }

    /// The format the sink consumes without conversion.
    pub fn takes(&self) -> Format {
        match self {
            SinkSpec::Parquet(_) => Format::Arrow,
            SinkSpec::File(_) | SinkSpec::OpenSearch(_) => Format::Json,
        }
    }

    /// What `build` would refuse, checked without touching the destination.
    pub fn check(&self) -> Vec<SpecProblem> {
        match self {
            // `check` is what the sink's `build` runs first (schema,
            // partition columns); `check_path` what it refuses next.
            SinkSpec::Parquet(pq) => {
                let config = pq.check_keyed().err().map(|(key, message)| SpecProblem::Config { key, message });
                config.into_iter().chain(pq.check_path().err().map(SpecProblem::Path)).collect()
            }
            SinkSpec::File(f) => file::check_path(&f.path, "an NDJSON file sink").err().map(SpecProblem::Path).into_iter().collect(),
            SinkSpec::OpenSearch(o) => o.check_keyed().err().map(|(key, message)| SpecProblem::Config { key, message }).into_iter().collect(),
        }
    }

    /// Build the sink described by `[sinks.NAME]`.
    pub fn build(&self, name: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkSpec::Parquet(p) => Box::new(parquet::build(name, p, std::path::Path::new("."))?),
            SinkSpec::File(f) => Box::new(file::FileSink::create(name, std::path::Path::new(&f.path))?),
            SinkSpec::OpenSearch(o) => Box::new(opensearch::build(name, o)?),
        })
    }
}
