//! Checkpoints in a local directory: write-to-temp, fsync, rename, fsync the
//! directory. A lock file keeps a second process off the same directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Checkpoint, CheckpointError, CheckpointStore};

pub struct LocalStore {
    dir: PathBuf,
    _lock: File,
}

const NAME: &str = "checkpoint.json";
const LOCK: &str = "LOCK";
const TMP: &str = ".checkpoint.json.tmp";
/// Every file the store keeps in its directory (what `sluice reset` removes
/// and what no other output may be written over).
pub const FILES: [&str; 3] = [NAME, TMP, LOCK];

impl LocalStore {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let io = |e: std::io::Error| CheckpointError::Io { store: dir.display().to_string(), message: e.to_string() };
        fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options().create(true).truncate(false).write(true).open(dir.join(LOCK)).map_err(io)?;
        lock.try_lock().map_err(|e| CheckpointError::Locked { store: dir.display().to_string(), message: e.to_string() })?;
        Ok(Self { dir: dir.to_path_buf(), _lock: lock })
    }
}

/// What `open` + `load` would find, without creating or changing anything
/// (for `sluice validate`): an error if another process holds the lock or
/// the checkpoint is unreadable, else the checkpoint if there is one.
pub fn probe(dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let lock_path = dir.join(LOCK);
    if let Ok(lock) = File::options().write(true).open(&lock_path) {
        lock.try_lock().map_err(|e| CheckpointError::Locked {
            store: dir.display().to_string(),
            message: e.to_string(),
        })?;
    }
    read(dir)
}

/// The checkpoint in `dir`, if there is one.
fn read(dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = dir.join(NAME);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupt { store: path.display().to_string(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CheckpointError::Io { store: path.display().to_string(), message: e.to_string() }),
    }
}

#[async_trait]
impl CheckpointStore for LocalStore {
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        read(&self.dir)
    }

    async fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let io = |e: std::io::Error| CheckpointError::Io { store: self.dir.display().to_string(), message: e.to_string() };
        let bytes = serde_json::to_vec_pretty(cp).expect("checkpoint serialises");
        let tmp = self.dir.join(TMP);
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, self.dir.join(NAME)).map_err(io)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        assert!(s.load().await.unwrap().is_none());
        let cp = Checkpoint { version: 1, pipeline: "p".into(), epoch: 3, created: "now".into(), nodes: Default::default() };
        s.save(&cp).await.unwrap();
        assert_eq!(s.load().await.unwrap(), Some(cp));
        assert!(matches!(LocalStore::open(d.path()), Err(CheckpointError::Locked { .. })));
        assert!(matches!(
            probe(d.path()),
            Err(CheckpointError::Locked { .. })
        ));
        drop(s);
        assert_eq!(probe(d.path()).unwrap().map(|c| c.epoch), Some(3));
        for f in std::fs::read_dir(d.path()).unwrap() {
            let name = f.unwrap().file_name();
            assert!(
                FILES.contains(&name.to_str().unwrap()),
                "{name:?} is not in FILES"
            );
        }
    }
}
