//! Where Parquet files go. A backend stages an object (written in full,
//! durable, invisible), later makes it visible, and on recovery removes
//! every staged object the last checkpoint does not mention. Local files now;
//! S3 (multipart upload completed on commit, aborted on cleanup) is another
//! implementation of the same two traits.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub retryable: bool,
}

impl BackendError {
    fn io(what: String, e: std::io::Error) -> Self {
        // Missing files and permissions do not fix themselves; the rest may.
        let retryable = !matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied);
        BackendError { message: format!("{what}: {e}"), retryable }
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
    /// Makes a finished object visible. Idempotent: committing an object that
    /// is already visible succeeds.
    async fn commit(&self, pending: &Pending) -> Result<(), BackendError>;
    /// Removes every staged object except those in `except`; returns how many.
    async fn cleanup_staged(&self, except: &[Pending]) -> Result<u64, BackendError>;
}

const STAGING_SUFFIX: &str = ".inprogress";

/// Files in a local directory. A staged file is `.<name>.inprogress` next to
/// where it will be (hidden from Hive/Spark/DuckDB readers by the dot);
/// commit is a rename, atomic within the directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| BackendError::io(format!("cannot create {}", root.display()), e))?;
        Ok(LocalBackend { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The staging path of `key`.
    fn staging_key(key: &str) -> String {
        match key.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.{name}{STAGING_SUFFIX}"),
            None => format!(".{key}{STAGING_SUFFIX}"),
        }
    }
}

struct LocalStaged {
    key: String,
    staging_key: String,
    path: PathBuf,
    file: File,
    bytes: u64,
}

#[async_trait]
impl Staged for LocalStaged {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.file.write_all(bytes).map_err(|e| BackendError::io(format!("cannot write {}", self.path.display()), e))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>, rows: u64) -> Result<Pending, BackendError> {
        // fsync off the async thread: a prepare finishes many files at once
        // and the file system batches concurrent syncs into one journal commit.
        let (file, path) = (self.file.try_clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let mut file = file.map_err(|e| BackendError::io(format!("cannot sync {}", path.display()), e))?;
            file.flush().map_err(|e| BackendError::io(format!("cannot flush {}", path.display()), e))?;
            file.sync_all().map_err(|e| BackendError::io(format!("cannot sync {}", path.display()), e))?;
            // The new name must survive a crash too.
            sync_dir(path.parent().expect("staged files live in a directory"))
        })
        .await
        .map_err(|e| BackendError { message: format!("sync task failed: {e}"), retryable: true })??;
        Ok(Pending {
            key: self.key.clone(),
            rows,
            bytes: self.bytes,
            staging: serde_json::Value::String(self.staging_key.clone()),
        })
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackendError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BackendError::io(format!("cannot sync directory {}", dir.display()), e))
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone()).display().to_string()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn Staged>, BackendError> {
        let staging_key = Self::staging_key(key);
        let path = self.root.join(&staging_key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BackendError::io(format!("cannot create {}", dir.display()), e))?;
        }
        // Truncate: a leftover staging file of the same name is from an
        // attempt that never reached a checkpoint.
        let file = File::create(&path).map_err(|e| BackendError::io(format!("cannot create {}", path.display()), e))?;
        Ok(Box::new(LocalStaged { key: key.to_owned(), staging_key, path, file, bytes: 0 }))
    }

    async fn commit(&self, p: &Pending) -> Result<(), BackendError> {
        let staging = p.staging.as_str().map(String::from).unwrap_or_else(|| Self::staging_key(&p.key));
        let from = self.root.join(&staging);
        let to = self.root.join(&p.key);
        // The rename must be durable before a later checkpoint stops listing
        // this file; synced off the async thread, as in `finish`.
        tokio::task::spawn_blocking(move || match std::fs::rename(&from, &to) {
            Ok(()) => sync_dir(to.parent().expect("files live in a directory")),
            // Already committed (a repeated commit, or recovery re-running it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => Ok(()),
            Err(e) => Err(BackendError {
                message: format!(
                    "cannot commit {}: staged file {} is gone ({e}); the data of that checkpoint is lost unless the file is restored",
                    to.display(),
                    from.display()
                ),
                retryable: false,
            }),
        })
        .await
        .map_err(|e| BackendError { message: format!("commit task failed: {e}"), retryable: true })?
    }

    async fn cleanup_staged(&self, except: &[Pending]) -> Result<u64, BackendError> {
        let keep: Vec<PathBuf> = except
            .iter()
            .map(|p| self.root.join(p.staging.as_str().map(String::from).unwrap_or_else(|| Self::staging_key(&p.key))))
            .collect();
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BackendError::io(format!("cannot list {}", dir.display()), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| BackendError::io(format!("cannot list {}", dir.display()), e))?;
                let path = entry.path();
                let ty = entry.file_type().map_err(|e| BackendError::io(format!("cannot stat {}", path.display()), e))?;
                if ty.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(STAGING_SUFFIX) && !keep.contains(&path) {
                    std::fs::remove_file(&path)
                        .map_err(|e| BackendError::io(format!("cannot remove {}", path.display()), e))?;
                    tracing::debug!(path = %path.display(), "removed a file staged after the last checkpoint");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}
