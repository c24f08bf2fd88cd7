//! Where Parquet files go. A backend stages an object (written in full,
//! durable, invisible), later makes it visible, lists and discards staged
//! objects for recovery (the sink decides which: see `recover` in `mod.rs`),
//! and keeps generation markers. Local files (`local.rs`) and S3 (`s3.rs`:
//! multipart upload completed on commit, aborted on discard) implement the
//! same two traits.
//!
//! Besides staged objects a backend keeps *chunks*: the pieces a Parquet
//! file is built from while it spans checkpoints (see `rolling.rs`). A chunk
//! is written like a staged object but never committed: once finished it
//! must be durable and readable back (`read`), and it is listed by `staged`
//! and removed by `discard` like a staged object, so recovery cleans up
//! chunks no checkpoint names.
//!
//! Errors of `Staged::write` and of every fsync are never retryable: a write
//! may have gone half-way, and on Linux a repeated fsync can report success
//! after the kernel dropped the dirty pages. Renames, listings and removals
//! are idempotent and keep the usual classification.

mod local;
mod s3;

pub use local::LocalBackend;
pub use s3::{S3Backend, PART_BYTES};

use std::ops::Range;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub retryable: bool,
}

impl BackendError {
    /// An idempotent operation failed. Missing files and permissions do not
    /// fix themselves; the rest may.
    fn io(what: String, e: std::io::Error) -> Self {
        let retryable = !matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied);
        BackendError { message: format!("{what}: {e}"), retryable }
    }
    /// A write or sync failed: repeating it could report success for data
    /// that is not there.
    fn fatal(what: String, e: std::io::Error) -> Self {
        BackendError { message: format!("{what}: {e}"), retryable: false }
    }
}

/// A staged object, as recorded in a checkpoint: enough to make it visible
/// after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Final key relative to the table root (`year=2016/.../part-....parquet`).
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    /// Backend-specific handle (local: the staging file name; S3: upload id and parts).
    pub staging: serde_json::Value,
}

/// An object being written.
#[async_trait]
pub trait Staged: Send {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError>;
    /// Durable but invisible. `rows` is recorded in the descriptor.
    async fn finish(self: Box<Self>, rows: u64) -> Result<Pending, BackendError>;
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// Where the table lives, for messages and DDL (`/data/trips`, `s3://b/p`).
    fn location(&self) -> String;
    async fn create(&self, key: &str) -> Result<Box<dyn Staged>, BackendError>;
    /// Starts a chunk: an object written like a staged one (`Staged::write`
    /// in order, then `finish`) that is never committed. When `finish`
    /// returns it must be durable *and* readable through [`read`](Self::read)
    /// (S3: a multipart upload cannot be read, so `finish` completes it
    /// under a key readers skip — a path segment starting with `.` or `_` —
    /// or the chunk is a single PUT). `staged` lists chunks by `key` and
    /// `discard` removes them, like staged objects. `key` is unique: the
    /// sink never creates the same chunk twice except to redo an attempt
    /// that no checkpoint names, which may replace it (and it carries the
    /// writing process's id, so another process never replaces it).
    async fn create_chunk(&self, key: &str) -> Result<Box<dyn Staged>, BackendError>;
    /// Bytes `range` of a finished chunk (`pending` as its `finish`
    /// returned it). Idempotent (S3: a ranged GET, retried inside like any
    /// request); a short object is an error naming the chunk.
    async fn read(&self, pending: &Pending, range: Range<u64>) -> Result<Vec<u8>, BackendError>;
    /// Makes a finished object visible. Idempotent: committing an object that
    /// is already visible succeeds. Never replaces a different visible object.
    async fn commit(&self, pending: &Pending) -> Result<(), BackendError>;
    /// The final keys of every staged (not committed) object.
    async fn staged(&self) -> Result<Vec<String>, BackendError>;
    /// Removes the staged objects of these keys.
    async fn discard(&self, keys: &[String]) -> Result<(), BackendError>;
    /// Durably records that `generation` may be named by a checkpoint token,
    /// so other runs leave its staged objects alone. Idempotent.
    async fn mark_generation(&self, generation: &str) -> Result<(), BackendError>;
    /// The generations marked so far.
    async fn generations(&self) -> Result<Vec<String>, BackendError>;
}

/// Table-relative directory of generation markers; hidden from readers
/// (Hive, Spark, pyarrow and DuckDB skip names starting with `.`).
pub const MARKERS: &str = ".sluice/generations";

