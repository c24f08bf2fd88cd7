//! Making directory entries durable: a new file or directory survives a crash
//! only once the directory that names it was fsynced. Sinks call these before
//! a checkpoint may refer to what they created.
//!
//! A failed fsync is returned, never retried: on Linux a second fsync can
//! report success after the kernel dropped the dirty pages of the first.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// fsync a directory (its entries: names created, renamed or removed in it).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    test_log::record(dir);
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create `dir` and its missing ancestors without syncing; returns the ones
/// it created, outermost first, for the caller to sync (`sync_dir(parent(d))`)
/// before anything names them — at once, or batched with later syncs.
pub(crate) fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    if !missing.is_empty() {
        std::fs::create_dir_all(dir)?;
        missing.reverse();
    }
    Ok(missing)
}

/// `create_dir_all`, then fsync the parent of every directory it created, so
/// the whole new chain survives a crash.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    // Outermost first: each new directory's entry lives in its parent.
    for d in create_dirs(dir)? {
        sync_dir(parent(&d))?;
    }
    Ok(())
}

/// Replace `path` with `bytes` atomically and durably: a temporary file,
/// fsync, rename, fsync of the directory. A crash leaves the old content or
/// the new one, never a torn file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

/// Remove `path` durably; a file that is already gone is fine.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tests can see which directories were fsynced. One log for the process
/// (syncs also run on blocking-pool threads): each test reads the entries
/// under its own temporary directory.
#[cfg(test)]
pub(crate) mod test_log {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn record(dir: &Path) {
        SYNCED.lock().unwrap().push(dir.to_path_buf());
    }

    /// The directories under `root` (itself included) fsynced since the last
    /// call for `root`, in order.
    pub(crate) fn take_under(root: &Path) -> Vec<PathBuf> {
        let mut all = SYNCED.lock().unwrap();
        let (mine, others): (Vec<PathBuf>, Vec<PathBuf>) = all.drain(..).partition(|d| d.starts_with(root));
        *all = others;
        mine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directories_are_synced_in_their_parents() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        assert_eq!(test_log::take_under(root.path()), [root.path().to_path_buf(), root.path().join("a"), root.path().join("a/b")]);
        // Nothing new: nothing to sync.
        create_dir_all(&deep).unwrap();
        assert!(test_log::take_under(root.path()).is_empty());
    }

    #[test]
    fn atomic_write_and_remove() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("x");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1, "no temporary file left");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert!(!p.exists());
    }
}
