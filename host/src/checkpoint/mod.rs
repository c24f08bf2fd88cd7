//! Checkpoints: one document holding, for one epoch, every source's positions,
//! every stage's state and every sink's commit token — written atomically, so
//! positions, state and committed output can never disagree.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub pipeline: String,
    pub epoch: u64,
    /// RFC 3339, for humans.
    pub created: String,
    /// `sources.NAME` / `stages.NAME` / `sinks.NAME` / `dlq` → that node's state.
    pub nodes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint store {store}: {message}")]
    Io { store: String, message: String },
    #[error("checkpoint store {store} is in use by another sluice process ({message}); stop it or use another checkpoint dir or prefix")]
    Locked { store: String, message: String },
    #[error("checkpoint in {store} is unreadable: {message}; move it away to start from scratch")]
    Corrupt { store: String, message: String },
    #[error("checkpoint in {store} belongs to pipeline {found:?}, not {expected:?}; use another checkpoint dir")]
    Foreign { store: String, found: String, expected: String },
}

#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Durable and atomic: after it returns, a crash leaves this checkpoint or a later one.
    async fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError>;
    fn describe(&self) -> String;
    /// Resolves when this process lost the right to write the store (an S3
    /// lease taken over by another process); never for a local store, whose
    /// lock cannot be lost.
    async fn lost(&self) -> CheckpointError {
        std::future::pending().await
    }
}

/// A store shared by the coordinator and the run around it: the run keeps
/// the store (an S3 lease) until its sinks committed the last checkpoint.
#[async_trait]
impl<T: CheckpointStore + ?Sized> CheckpointStore for std::sync::Arc<T> {
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        (**self).load().await
    }
    async fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        (**self).save(cp).await
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn lost(&self) -> CheckpointError {
        (**self).lost().await
    }
}

/// Open the store named in `[checkpoint] dir`: `s3://bucket/prefix` or a local directory.
pub async fn open(dir: &str) -> Result<Box<dyn CheckpointStore>, CheckpointError> {
    open_with(dir, None).await
}

/// [`open`], with the S3 lease's TTL (`[checkpoint] lease_ttl`).
pub async fn open_with(dir: &str, lease_ttl: Option<std::time::Duration>) -> Result<Box<dyn CheckpointStore>, CheckpointError> {
    if dir.starts_with("s3://") {
        return Ok(Box::new(s3::S3Store::open(dir, lease_ttl).await?));
    }
    Ok(Box::new(local::LocalStore::open(dir.as_ref())?))
}
