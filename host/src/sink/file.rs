//! NDJSON file sink: one JSON document per line, appended to one file.
//!
//! Exactly-once by truncation rather than by staging: `prepare` makes the
//! appended bytes durable and records the file length in the token; after a
//! crash, `recover` cuts the file back to the last checkpoint's length, so the
//! replayed records are not written twice. The cost: a reader may see the
//! uncommitted tail (written after the last checkpoint) until the next one
//! completes, and that tail can disappear again on recovery.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Sink, SinkError, Written};
use crate::batch::{Batch, BatchData, Format};

#[derive(Debug)]
pub struct FileSink {
    name: String,
    path: PathBuf,
    file: File,
    /// Bytes appended since the last `prepare` (for logs only).
    pending_bytes: u64,
    /// Length the last committed token recorded.
    committed_len: u64,
}

/// What `prepare` returns: the file and its durable length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileToken {
    pub path: String,
    pub len: u64,
}

impl FileSink {
    /// Opens (creating it and its directory if needed) `path` for appending.
    /// Nothing is truncated until `recover` says what is committed.
    pub fn create(name: &str, path: &Path) -> Result<FileSink, SinkError> {
        let path = path.to_path_buf();
        let io = |what: &str, e: std::io::Error| SinkError::Io {
            sink: name.to_owned(),
            message: format!("cannot {what} {}: {e}", path.display()),
            retryable: false,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io("open", e))?;
        Ok(FileSink { name: name.to_owned(), path, file, pending_bytes: 0, committed_len: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> SinkError {
        SinkError::Io { sink: self.name.clone(), message: format!("cannot {what} {}: {e}", self.path.display()), retryable: true }
    }

    fn len(&self) -> Result<u64, SinkError> {
        self.file.metadata().map(|m| m.len()).map_err(|e| self.io_err("stat", e))
    }

    fn truncate_to(&mut self, len: u64) -> Result<(), SinkError> {
        self.file.set_len(len).map_err(|e| self.io_err("truncate", e))?;
        self.file.sync_all().map_err(|e| self.io_err("sync", e))
    }
}

#[async_trait]
impl Sink for FileSink {
    fn takes(&self) -> Format {
        Format::Json
    }

    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        // The runtime converts to JSON first; converting here too keeps a
        // direct caller from having to know.
        let converted;
        let json = match &batch.data {
            BatchData::Json(j) => j,
            BatchData::Arrow(b) => {
                converted = crate::convert::arrow_to_json(b)
                    .map_err(|e| SinkError::Io { sink: self.name.clone(), message: e.to_string(), retryable: false })?;
                &converted
            }
        };
        let mut out = Vec::with_capacity(json.buf.len() + json.len());
        for doc in json.iter() {
            out.extend_from_slice(doc);
            out.push(b'\n');
        }
        self.file.write_all(&out).map_err(|e| self.io_err("append to", e))?;
        self.pending_bytes += out.len() as u64;
        Ok(Written { accepted: json.len(), refused: Vec::new() })
    }

    async fn prepare(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError> {
        self.file.flush().map_err(|e| self.io_err("flush", e))?;
        self.file.sync_data().map_err(|e| self.io_err("sync", e))?;
        let len = self.len()?;
        tracing::debug!(sink = %self.name, epoch, len, appended = self.pending_bytes, "file prepared");
        self.pending_bytes = 0;
        Ok(serde_json::to_value(FileToken { path: self.path.display().to_string(), len }).expect("token serializes"))
    }

    /// Appended bytes are already visible; committing only records the length.
    async fn commit(&mut self, token: &serde_json::Value) -> Result<(), SinkError> {
        let t = parse_token(&self.name, token)?;
        self.committed_len = self.committed_len.max(t.len);
        Ok(())
    }

    async fn recover(&mut self, token: Option<&serde_json::Value>) -> Result<(), SinkError> {
        let len = self.len()?;
        let keep = match token {
            Some(t) => {
                let t = parse_token(&self.name, t)?;
                if t.path != self.path.display().to_string() {
                    tracing::warn!(sink = %self.name, checkpoint = %t.path, now = %self.path.display(),
                        "the checkpoint was taken with another path; truncating the configured one");
                }
                if len < t.len {
                    return Err(SinkError::Io {
                        sink: self.name.clone(),
                        message: format!(
                            "{} is {len} bytes but the last checkpoint committed {} bytes: the file was truncated or replaced outside sluice; restore it or start with a fresh checkpoint directory",
                            self.path.display(),
                            t.len
                        ),
                        retryable: false,
                    });
                }
                t.len
            }
            // No checkpoint ever completed: nothing in the file is committed,
            // and everything in it will be produced again by the replay.
            None => 0,
        };
        if len > keep {
            tracing::info!(sink = %self.name, path = %self.path.display(), from = len, to = keep,
                "dropping records written after the last checkpoint (they will be replayed)");
            self.truncate_to(keep)?;
        }
        self.committed_len = keep;
        Ok(())
    }

    fn committed_outputs(&self) -> u64 {
        (self.committed_len > 0) as u64
    }
}

fn parse_token(sink: &str, token: &serde_json::Value) -> Result<FileToken, SinkError> {
    serde_json::from_value(token.clone()).map_err(|e| SinkError::Config {
        sink: sink.to_owned(),
        message: format!("checkpoint token {token} is not a file sink token: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::batch::{JsonRecords, Origin, RecordMeta};

    fn batch(docs: &[&str]) -> Batch {
        let mut j = JsonRecords::default();
        docs.iter().for_each(|d| j.push(d.as_bytes()));
        Batch {
            origin: Arc::new(Origin { source: "s".into(), partition: "p".into() }),
            meta: (0..docs.len() as u64).map(RecordMeta::line).collect(),
            data: BatchData::Json(j),
        }
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

        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
        let mut s = FileSink::create("sinks.out", &path).unwrap();
        s.recover(Some(&t1)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        // The replay appends after the committed part.
        s.write(&batch(&[r#"{"a":3}"#])).await.unwrap();
        let t = s.prepare(2).await.unwrap();
        s.commit(&t).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(s.committed_outputs(), 1);
    }

    #[tokio::test]
    async fn recover_without_checkpoint_empties_the_file_and_shorter_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        std::fs::write(&path, "{\"old\":1}\n").unwrap();
        let mut s = FileSink::create("sinks.out", &path).unwrap();
        s.recover(None).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let token = serde_json::json!({"path": path.display().to_string(), "len": 100});
        let e = s.recover(Some(&token)).await.unwrap_err();
        assert!(e.to_string().contains("100 bytes"), "{e}");
        assert!(!e.retryable());
    }
}
