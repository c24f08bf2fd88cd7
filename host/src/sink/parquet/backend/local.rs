//! The local-directory backend: staged files are hidden `.NAME.inprogress`
//! files next to their final name, committed by an atomic rename.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Backend, BackendError, Pending, Staged, MARKERS};
use crate::sink::durable;

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
        for dir in create_dirs(&root)? {
            sync_parent(&dir)?;
        }
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
    /// Directories `create` made for this file: their entries in their
    /// parents must be durable before a checkpoint names the file.
    new_dirs: Vec<PathBuf>,
}

#[async_trait]
impl Staged for LocalStaged {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.file.write_all(bytes).map_err(|e| BackendError::fatal(format!("cannot write {}", self.path.display()), e))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>, rows: u64) -> Result<Pending, BackendError> {
        // fsync off the async thread: a prepare finishes many files at once
        // and the file system batches concurrent syncs into one journal commit.
        let (file, path) = (self.file.try_clone(), self.path.clone());
        let new_dirs = std::mem::take(&mut self.new_dirs);
        tokio::task::spawn_blocking(move || {
            let mut file = file.map_err(|e| BackendError::fatal(format!("cannot sync {}", path.display()), e))?;
            file.flush().map_err(|e| BackendError::fatal(format!("cannot flush {}", path.display()), e))?;
            file.sync_all().map_err(|e| BackendError::fatal(format!("cannot sync {}", path.display()), e))?;
            // The new name must survive a crash too, and so must every
            // directory leading to it that this file's `create` made.
            sync_dir(path.parent().expect("staged files live in a directory"))?;
            new_dirs.iter().try_for_each(|d| sync_parent(d))
        })
        .await
        .map_err(|e| BackendError { message: format!("sync task failed: {e}"), retryable: false })??;
        Ok(Pending {
            key: self.key.clone(),
            rows,
            bytes: self.bytes,
            staging: serde_json::Value::String(self.staging_key.clone()),
        })
    }
}

/// fsync a directory (see `sink::durable`), as a backend error.
fn sync_dir(dir: &Path) -> Result<(), BackendError> {
    durable::sync_dir(dir).map_err(|e| BackendError::fatal(format!("cannot sync directory {}", dir.display()), e))
}

/// Syncs the directory holding `path`'s entry.
fn sync_parent(path: &Path) -> Result<(), BackendError> {
    sync_dir(durable::parent(path))
}

/// Creates `dir` and its missing ancestors; returns the ones it created,
/// outermost first (synced by the caller, batched with the file's own sync).
fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
    durable::create_dirs(dir).map_err(|e| BackendError::io(format!("cannot create {}", dir.display()), e))
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone()).display().to_string()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn Staged>, BackendError> {
        let staging_key = Self::staging_key(key);
        let path = self.root.join(&staging_key);
        let new_dirs = match path.parent() {
            Some(dir) => create_dirs(dir)?,
            None => Vec::new(),
        };
        // Truncate: a leftover staging file of the same name is from an
        // attempt of this generation that never reached a checkpoint.
        let file = File::create(&path).map_err(|e| BackendError::io(format!("cannot create {}", path.display()), e))?;
        Ok(Box::new(LocalStaged { key: key.to_owned(), staging_key, path, file, bytes: 0, new_dirs }))
    }

    async fn create_chunk(&self, key: &str) -> Result<Box<dyn Staged>, BackendError> {
        // A finished staged file is durable and readable in place: a chunk is
        // one that is never renamed.
        self.create(key).await
    }

    async fn read(&self, p: &Pending, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        let staging = p.staging.as_str().map(String::from).unwrap_or_else(|| Self::staging_key(&p.key));
        let path = self.root.join(staging);
        tokio::task::spawn_blocking(move || {
            let what = || format!("cannot read bytes {}..{} of chunk {}", range.start, range.end, path.display());
            let mut file = File::open(&path).map_err(|e| BackendError::io(what(), e))?;
            file.seek(SeekFrom::Start(range.start)).map_err(|e| BackendError::io(what(), e))?;
            let mut buf = vec![0; (range.end - range.start) as usize];
            file.read_exact(&mut buf).map_err(|e| BackendError::io(what(), e))?;
            Ok(buf)
        })
        .await
        .map_err(|e| BackendError { message: format!("read task failed: {e}"), retryable: true })?
    }

    async fn commit(&self, p: &Pending) -> Result<(), BackendError> {
        let staging = p.staging.as_str().map(String::from).unwrap_or_else(|| Self::staging_key(&p.key));
        let from = self.root.join(&staging);
        let to = self.root.join(&p.key);
        // The rename must be durable before a later checkpoint stops listing
        // this file; synced off the async thread, as in `finish`.
        tokio::task::spawn_blocking(move || {
            if from.exists() && to.exists() {
                // Names carry the generation, so this is another run's file
                // (or a restored old checkpoint): never replace it.
                return Err(BackendError {
                    message: format!("cannot commit {}: a committed file of that name exists; refusing to overwrite it", to.display()),
                    retryable: false,
                });
            }
            match std::fs::rename(&from, &to) {
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
            }
        })
        .await
        .map_err(|e| BackendError { message: format!("commit task failed: {e}"), retryable: true })?
    }

    async fn staged(&self) -> Result<Vec<String>, BackendError> {
        let mut keys = Vec::new();
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
                let Some(name) = name.to_str().and_then(|n| n.strip_prefix('.')?.strip_suffix(STAGING_SUFFIX)) else {
                    continue;
                };
                let rel_dir = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
                let key = rel_dir.join(name).to_string_lossy().into_owned();
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn discard(&self, keys: &[String]) -> Result<(), BackendError> {
        for key in keys {
            let path = self.root.join(Self::staging_key(key));
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed a staged file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(BackendError::io(format!("cannot remove {}", path.display()), e)),
            }
        }
        Ok(())
    }

    async fn mark_generation(&self, generation: &str) -> Result<(), BackendError> {
        let dir = self.root.join(MARKERS);
        let path = dir.join(generation);
        tokio::task::spawn_blocking(move || {
            if path.exists() {
                return Ok(());
            }
            let new_dirs = create_dirs(&dir)?;
            let file = File::create(&path).map_err(|e| BackendError::io(format!("cannot create {}", path.display()), e))?;
            file.sync_all().map_err(|e| BackendError::fatal(format!("cannot sync {}", path.display()), e))?;
            sync_dir(&dir)?;
            new_dirs.iter().try_for_each(|d| sync_parent(d))
        })
        .await
        .map_err(|e| BackendError { message: format!("marker task failed: {e}"), retryable: false })?
    }

    async fn generations(&self) -> Result<Vec<String>, BackendError> {
        let dir = self.root.join(MARKERS);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackendError::io(format!("cannot list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| BackendError::io(format!("cannot list {}", dir.display()), e))?;
            out.extend(entry.file_name().to_str().map(String::from));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_directories_are_synced_in_their_parents_before_finish_returns() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("table");
        let b = LocalBackend::new(&root).unwrap();
        let mut synced = durable::test_log::take_under(tmp.path());
        assert!(synced.iter().any(|d| d == tmp.path()), "the new table root's entry is durable");
        let mut f = b.create("a=1/b=x/part-1.parquet").await.unwrap();
        f.write(b"data").await.unwrap();
        f.finish(1).await.unwrap();
        synced.extend(durable::test_log::take_under(tmp.path()));
        for dir in [root.clone(), root.join("a=1"), root.join("a=1/b=x")] {
            assert!(synced.contains(&dir), "{} was not synced", dir.display());
        }
        assert_eq!(b.staged().await.unwrap(), ["a=1/b=x/part-1.parquet"]);
    }

    #[tokio::test]
    async fn a_finished_chunk_reads_back_and_is_discarded_like_a_staged_file() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(tmp.path()).unwrap();
        let mut c = b.create_chunk("a=1/part-1.parquet.chunk-00000002").await.unwrap();
        c.write(b"0123456789").await.unwrap();
        let p = c.finish(3).await.unwrap();
        assert_eq!(b.read(&p, 2..6).await.unwrap(), b"2345");
        assert!(b.read(&p, 8..12).await.is_err(), "reading past the end is an error");
        assert_eq!(b.staged().await.unwrap(), ["a=1/part-1.parquet.chunk-00000002"]);
        b.discard(&["a=1/part-1.parquet.chunk-00000002".to_owned()]).await.unwrap();
        assert!(b.staged().await.unwrap().is_empty());
    }
}
