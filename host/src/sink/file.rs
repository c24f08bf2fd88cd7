//! NDJSON file sink: one JSON document per line, appended to one file.
//!
//! Exactly-once by truncation rather than by staging: `prepare` makes the
//! appended bytes durable and records the file length in the token; after a
//! crash, `recover` cuts the file back to the last checkpoint's length, so the
//! replayed records are not written twice. The cost: a reader may see the
//! uncommitted tail (written after the last checkpoint) until the next one
//! completes, and that tail can disappear again on recovery.
//!
//! Output that no checkpoint of this pipeline accounts for is never cut.
//! Without a token for this file (a first run, a new or renamed sink, a
//! changed path, a removed checkpoint) the sink starts only on an empty or
//! absent file, and before its first append it records that start length in a
//! sidecar, `.NAME.sluice-base` next to the file (atomic and fsynced). The
//! first commit removes the sidecar. So a tokenless start that finds the
//! sidecar restarts a run that crashed before its first checkpoint: nothing
//! after the base was committed and the file is cut back to it. A non-empty
//! file without a sidecar holds committed output (or someone else's data):
//! the sink refuses to start and says how to start over.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{durable, Sink, SinkError, Written};
use crate::batch::{Batch, BatchData, Format};

/// `[sinks.NAME]` with `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSpec {
    pub inputs: Vec<String>,
    /// NDJSON output file.
    pub path: String,
}

#[derive(Debug)]
pub struct FileSink {
    name: String,
    path: PathBuf,
    file: File,
    /// Bytes appended since the last `prepare` (for logs only).
    pending_bytes: u64,
    /// Length the last committed token recorded.
    committed_len: u64,
    /// The sidecar exists: this run started without a token and has not
    /// committed yet. The first commit removes it.
    base_marker: bool,
    /// Set when a `write` or `prepare` failed part-way: the file may hold a
    /// torn line or unsynced bytes, so no later call may build on it (a retry
    /// would commit them). Only `recover` in a new run clears this.
    broken: Option<String>,
}

/// What `prepare` returns: the file and its durable length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileToken {
    pub path: String,
    pub len: u64,
}

/// The sidecar's content: the file's length when a tokenless run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Base {
    base: u64,
}

/// What a user can do when the file holds output the checkpoint does not know.
const START_OVER: &str = "sluice never cuts or overwrites output it did not write. To start over, run \
`sluice reset PIPELINE` or `sluice run --from-scratch PIPELINE` (they remove the checkpoint and the outputs), \
or move the file away; to keep it, point the sink at another path";

/// `path` of the sidecar that marks a tokenless start of `file`.
/// What a sink or the DLQ that writes one local file refuses as its path
/// (`what` names it in the message).
pub fn check_path(path: &str, what: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("is empty; name a file".into());
    }
    if path.contains("://") {
        return Err(format!("{path}: {what} writes a local file; write a path such as out/records.ndjson"));
    }
    if path.ends_with('/') {
        return Err(format!("{path} ends with '/' but {what} writes a file; name the file"));
    }
    Ok(())
}

pub fn base_marker_path(file: &Path) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    durable::parent(file).join(format!(".{name}.sluice-base"))
}

/// Remove an NDJSON output and its sidecar (for commands that start a
/// pipeline over: the file sink's part of "delete the outputs").
pub fn remove_output(file: &Path) -> std::io::Result<()> {
    durable::remove(&base_marker_path(file))?;
    durable::remove(file)
}

impl FileSink {
    /// Opens (creating it and its directory if needed) `path` for appending.
    /// Nothing is truncated until `recover` says what is committed. A new
    /// file's directory entry is fsynced here, before any checkpoint can
    /// name the file.
    pub fn create(name: &str, path: &Path) -> Result<FileSink, SinkError> {
        let path = path.to_path_buf();
        let io = |what: &str, e: std::io::Error| SinkError::Io {
            sink: name.to_owned(),
            message: format!("cannot {what} {}: {e}", path.display()),
            retryable: false,
        };
        let dir = durable::parent(&path);
        durable::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io("open", e))?;
        if !existed {
            durable::sync_dir(dir).map_err(|e| io("fsync the directory of", e))?;
        }
        Ok(FileSink { name: name.to_owned(), path, file, pending_bytes: 0, committed_len: 0, base_marker: false, broken: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An I/O error naming the file. Never retryable: the node does not retry
    /// `write` or `prepare`, and a failed fsync must not be retried at all.
    fn io_err(&self, what: &str, e: std::io::Error) -> SinkError {
        SinkError::Io { sink: self.name.clone(), message: format!("cannot {what} {}: {e}", self.path.display()), retryable: false }
    }

    /// Remember that the file is in an unknown state, and return the error.
    fn break_with(&mut self, e: SinkError) -> SinkError {
        self.broken = Some(e.to_string());
        e
    }

    fn check_usable(&self) -> Result<(), SinkError> {
        match &self.broken {
            None => Ok(()),
            Some(first) => Err(SinkError::Io {
                sink: self.name.clone(),
                message: format!(
                    "{} is unusable after an earlier failure ({first}); only a restart, which cuts it back to the last checkpoint, may write to it again",
                    self.path.display()
                ),
                retryable: false,
            }),
        }
    }

    fn len(&self) -> Result<u64, SinkError> {
        self.file.metadata().map(|m| m.len()).map_err(|e| self.io_err("stat", e))
    }

    fn truncate_to(&mut self, len: u64) -> Result<(), SinkError> {
        self.file.set_len(len).map_err(|e| self.io_err("truncate", e))?;
        self.file.sync_all().map_err(|e| self.io_err("fsync", e))
    }

    fn read_base(&self) -> Result<Option<u64>, SinkError> {
        let marker = base_marker_path(&self.path);
        let bytes = match std::fs::read(&marker) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err("read the start marker of", e)),
        };
        let b: Base = serde_json::from_slice(&bytes).map_err(|e| SinkError::Config {
            sink: self.name.clone(),
            message: format!(
                "{} (the start marker of {}) is not valid: {e}; it is written atomically by sluice, so something else changed it. {START_OVER}",
                marker.display(),
                self.path.display()
            ),
        })?;
        Ok(Some(b.base))
    }

    /// The length to keep when the checkpoint has no token for this file.
    fn tokenless_start(&mut self, len: u64) -> Result<u64, SinkError> {
        if let Some(base) = self.read_base()? {
            if len < base {
                return Err(SinkError::Config {
                    sink: self.name.clone(),
                    message: format!(
                        "{} is {len} bytes but held {base} when this pipeline first started writing it: it was cut or replaced outside sluice. {START_OVER}",
                        self.path.display()
                    ),
                });
            }
            // A run that crashed before its first checkpoint: its bytes were never committed.
            self.base_marker = true;
            return Ok(base);
        }
        if len > 0 {
            return Err(SinkError::Config {
                sink: self.name.clone(),
                message: format!(
                    "{} already holds {len} bytes, and the checkpoint has no commit for this sink (a first run, a new or renamed sink, a changed path, or a removed checkpoint). {START_OVER}",
                    self.path.display()
                ),
            });
        }
        let marker = base_marker_path(&self.path);
        durable::write_atomic(&marker, &serde_json::to_vec(&Base { base: len }).expect("base serializes"))
            .map_err(|e| self.io_err(&format!("write the start marker {} of", marker.display()), e))?;
        self.base_marker = true;
        Ok(len)
    }

    fn remove_base_marker(&mut self) -> Result<(), SinkError> {
        let marker = base_marker_path(&self.path);
        durable::remove(&marker).map_err(|e| self.io_err(&format!("remove the start marker {} of", marker.display()), e))?;
        self.base_marker = false;
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    fn takes(&self) -> Format {
        Format::Json
    }

    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        self.check_usable()?;
        // The runtime converts to JSON first; converting here too keeps a
        // direct caller from having to know.
        let converted;
        let json = match &batch.data {
            BatchData::Json(j) => j,
            BatchData::Arrow(b) => {
                converted = crate::convert::arrow_to_json(b).map_err(|e| SinkError::Io {
                    sink: self.name.clone(),
                    message: format!("cannot encode a batch for {}: {e}", self.path.display()),
                    retryable: false,
                })?;
                &converted
            }
        };
        let mut out = Vec::with_capacity(json.buf.len() + json.len());
        for doc in json.iter() {
            out.extend_from_slice(doc);
            out.push(b'\n');
        }
        // A failed append may have written part of `out` (a torn line).
        if let Err(e) = self.file.write_all(&out) {
            let e = self.io_err("append to", e);
            return Err(self.break_with(e));
        }
        self.pending_bytes += out.len() as u64;
        Ok(Written { accepted: json.len(), refused: Vec::new() })
    }

    async fn prepare(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError> {
        self.check_usable()?;
        // Not retried: after a failed fsync the kernel may have dropped the
        // dirty pages and a second fsync would report success.
        if let Err(e) = self.file.flush().and_then(|()| self.file.sync_data()) {
            let e = self.io_err("fsync", e);
            return Err(self.break_with(e));
        }
        let len = self.len()?;
        tracing::debug!(sink = %self.name, epoch, len, appended = self.pending_bytes, "file prepared");
        self.pending_bytes = 0;
        Ok(serde_json::to_value(FileToken { path: self.path.display().to_string(), len }).expect("token serializes"))
    }

    /// Appended bytes are already visible; committing records the length and,
    /// after a tokenless start, removes the start marker: from now on the
    /// checkpoint accounts for the file.
    async fn commit(&mut self, token: &serde_json::Value) -> Result<(), SinkError> {
        let t = parse_token(&self.name, token)?;
        if self.base_marker {
            self.remove_base_marker()?;
        }
        self.committed_len = self.committed_len.max(t.len);
        Ok(())
    }

    async fn recover(&mut self, token: Option<&serde_json::Value>) -> Result<(), SinkError> {
        let len = self.len()?;
        let token = match token.map(|t| parse_token(&self.name, t)).transpose()? {
            Some(t) if !same_file(&t.path, &self.path) => {
                tracing::warn!(sink = %self.name, checkpoint = %t.path, now = %self.path.display(),
                    "the checkpoint's commit is for another path; starting this one as a new output");
                None
            }
            t => t,
        };
        let keep = match token {
            Some(t) => {
                if len < t.len {
                    return Err(SinkError::Config {
                        sink: self.name.clone(),
                        message: format!(
                            "{} is {len} bytes but the last checkpoint committed {} bytes: the file was cut or replaced outside sluice. Restore it, or start over: {START_OVER}",
                            self.path.display(),
                            t.len
                        ),
                    });
                }
                // A crash between the checkpoint and the first commit left the marker.
                self.remove_base_marker()?;
                t.len
            }
            None => self.tokenless_start(len)?,
        };
        if len > keep {
            tracing::info!(sink = %self.name, path = %self.path.display(), from = len, to = keep,
                "dropping records written after the last checkpoint (they will be replayed)");
            self.truncate_to(keep)?;
        }
        self.committed_len = keep;
        self.broken = None;
        Ok(())
    }

    fn committed_outputs(&self) -> u64 {
        (self.committed_len > 0) as u64
    }
}

fn parse_token(sink: &str, token: &serde_json::Value) -> Result<FileToken, SinkError> {
    serde_json::from_value(token.clone()).map_err(|e| SinkError::Config {
        sink: sink.to_owned(),
        message: format!(
            "checkpoint token {token} is not a file sink token ({e}): the sink changed type since the checkpoint; give it a new name or start over"
        ),
    })
}

/// Whether a token's path names the configured file (spellings may differ).
fn same_file(token_path: &str, path: &Path) -> bool {
    if token_path == path.display().to_string() {
        return true;
    }
    match (std::fs::canonicalize(token_path), std::fs::canonicalize(path)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(docs: &[&str]) -> Batch {
        Batch::json_docs("s", docs)
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[tokio::test]
    async fn recover_cuts_back_to_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/records.ndjson");
        let mut s = FileSink::create("sinks.out", &path).unwrap();
        s.recover(None).await.unwrap();
        assert_eq!(s.write(&batch(&[r#"{"a":1}"#, r#"{"a":2}"#])).await.unwrap().accepted, 2);
        let t1 = s.prepare(1).await.unwrap();
        assert_eq!(t1["len"], 16);
        s.commit(&t1).await.unwrap();
        s.write(&batch(&[r#"{"a":3}"#])).await.unwrap();
        let _t2 = s.prepare(2).await.unwrap(); // prepared, but the checkpoint never completes
        s.write(&batch(&[r#"{"a":4}"#])).await.unwrap();
        drop(s); // crash

        assert_eq!(read(&path).lines().count(), 4);
        let mut s = FileSink::create("sinks.out", &path).unwrap();
        s.recover(Some(&t1)).await.unwrap();
        assert_eq!(read(&path), "{\"a\":1}\n{\"a\":2}\n");
        // The replay appends after the committed part.
        s.write(&batch(&[r#"{"a":3}"#])).await.unwrap();
        let t = s.prepare(2).await.unwrap();
        s.commit(&t).await.unwrap();
        assert_eq!(read(&path), "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(s.committed_outputs(), 1);
    }

    /// Committed output and a fresh checkpoint directory (or a new or renamed
    /// sink): the old lines survive and the start is refused with what to do.
    #[tokio::test]
    async fn existing_output_without_a_token_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        std::fs::write(&path, "{\"old\":1}\n{\"old\":2}\n").unwrap();
        let mut s = FileSink::create("sinks.out", &path).unwrap();
        let e = s.recover(None).await.unwrap_err().to_string();
        assert_eq!(read(&path), "{\"old\":1}\n{\"old\":2}\n");
        assert!(e.contains(&path.display().to_string()) && e.contains("20 bytes"), "{e}");
        assert!(e.contains("sluice reset") && e.contains("--from-scratch"), "{e}");
        assert!(!base_marker_path(&path).exists());

        // A token for another file (the sink was pointed elsewhere) does not
        // license cutting this one either.
        let other = serde_json::json!({"path": dir.path().join("other.ndjson").display().to_string(), "len": 10});
        assert!(s.recover(Some(&other)).await.is_err());
        assert_eq!(read(&path), "{\"old\":1}\n{\"old\":2}\n");

        // A shorter file than the checkpoint committed is an error, not a cut.
        let token = serde_json::json!({"path": path.display().to_string(), "len": 100});
        let e = s.recover(Some(&token)).await.unwrap_err();
        assert!(e.to_string().contains("100 bytes"), "{e}");
        assert!(!e.retryable());
    }

    /// A run that crashed before its first checkpoint: the restart (still
    /// without a token) drops its uncommitted lines instead of keeping them
    /// as duplicates or refusing; once a checkpoint committed, the file is
    /// protected again.
    #[tokio::test]
    async fn crash_before_the_first_checkpoint_restarts_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let mut s = FileSink::create("sinks.out", &path).unwrap();
        s.recover(None).await.unwrap();
        assert!(base_marker_path(&path).exists(), "the start is marked before the first append");
        s.write(&batch(&[r#"{"a":1}"#, r#"{"a":2}"#])).await.unwrap();
        drop(s); // crash before any checkpoint

        let mut s = FileSink::create("sinks.out", &path).unwrap();
        s.recover(None).await.unwrap();
        assert_eq!(read(&path), "");
        s.write(&batch(&[r#"{"a":1}"#])).await.unwrap();
        let t = s.prepare(1).await.unwrap();
        assert!(base_marker_path(&path).exists(), "kept until the checkpoint is committed");
        s.commit(&t).await.unwrap();
        assert!(!base_marker_path(&path).exists());
        drop(s);

        let mut s = FileSink::create("sinks.out", &path).unwrap();
        assert!(s.recover(None).await.is_err(), "committed output without a token is refused");
        assert_eq!(read(&path), "{\"a\":1}\n");
    }

    /// Crash after the checkpoint was written but before the commit removed
    /// the marker: the restart has the token, keeps the epoch and drops the marker.
    #[tokio::test]
    async fn crash_between_checkpoint_and_first_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let mut s = FileSink::create("sinks.out", &path).unwrap();
        s.recover(None).await.unwrap();
        s.write(&batch(&[r#"{"a":1}"#])).await.unwrap();
        let t1 = s.prepare(1).await.unwrap();
        s.write(&batch(&[r#"{"a":2}"#])).await.unwrap();
        drop(s);

        let mut s = FileSink::create("sinks.out", &path).unwrap();
        // The same file spelled differently is still the same file.
        let spelled = serde_json::json!({"path": format!("{}/./r.ndjson", dir.path().display()), "len": t1["len"]});
        s.recover(Some(&spelled)).await.unwrap();
        assert_eq!(read(&path), "{\"a\":1}\n");
        assert!(!base_marker_path(&path).exists());
    }

    /// A failed append may leave a torn line: nothing may be prepared on top
    /// of it (a retried write or a prepare would commit the torn bytes).
    #[tokio::test]
    async fn a_failed_write_makes_the_sink_refuse_further_calls() {
        let mut s = FileSink::create("sinks.full", Path::new("/dev/full")).unwrap();
        let e = s.write(&batch(&[r#"{"a":1}"#])).await.unwrap_err().to_string();
        assert!(e.contains("/dev/full") && e.contains("append"), "{e}");
        let e = s.prepare(1).await.unwrap_err().to_string();
        assert!(e.contains("unusable"), "{e}");
        assert!(s.write(&batch(&[r#"{"a":1}"#])).await.is_err());
    }

    #[test]
    fn a_new_file_is_durable_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/r.ndjson");
        FileSink::create("sinks.out", &path).unwrap();
        let synced = durable::test_log::take_under(dir.path());
        assert_eq!(synced, [dir.path().to_path_buf(), dir.path().join("a"), dir.path().join("a/b")]);
        // Reopening an existing file creates no entry.
        FileSink::create("sinks.out", &path).unwrap();
        assert!(durable::test_log::take_under(dir.path()).is_empty());
    }
}
