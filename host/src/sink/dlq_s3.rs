//! The DLQ in S3 (`[dlq] path = "s3://bucket/errors/"`): NDJSON objects in
//! Firehose's error-prefix layout,
//! `errors/<code>/year=YYYY/month=MM/day=DD/hour=HH/part-{generation}-{epoch:08}-{n:04}.ndjson`
//! (the hour of the entry's `time`, UTC).
//!
//! Exactly once like the Parquet output, with the same backend: each
//! object is a multipart upload staged between two checkpoints, its upload
//! id and parts go into the token at `prepare`, and it is completed at
//! `commit` (after the checkpoint, checking the lease). Recovery completes
//! the last token's objects and aborts this generation's other uploads, and
//! those of generations that never prepared (no marker). Names are
//! deterministic within a generation, so a re-committed epoch keeps them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::parquet::backend::{Backend, BackendError, Pending, S3Backend, Staged};
use super::{Sink, SinkError, Written};
use crate::batch::{Batch, BatchData, Format};
use crate::s3::{S3Keys, S3Url};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Token {
    epoch: u64,
    generation: String,
    files: Vec<Pending>,
}

pub struct S3DlqSink {
    name: String,
    backend: S3Backend,
    generation: String,
    marked: bool,
    epoch: u64,
    next_n: u32,
    /// Open objects by directory (`<code>/year=.../hour=HH`), with their entry count.
    open: BTreeMap<String, (Box<dyn Staged>, u64)>,
    failed: Option<String>,
    committed: u64,
}

/// What an entry's `code` and `time` are read from (the rest is kept as is).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    code: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
}

impl S3DlqSink {
    pub fn new(name: &str, url: S3Url, keys: &S3Keys) -> S3DlqSink {
        let backend = S3Backend::new(url, keys.client(), keys.objects(), "dlq.path")
            .with_content_type("application/x-ndjson");
        S3DlqSink {
            name: name.to_owned(),
            backend,
            generation: super::parquet::new_generation(),
            marked: false,
            epoch: 1,
            next_n: 0,
            open: BTreeMap::new(),
            failed: None,
            committed: 0,
        }
    }

    fn err(&self, e: BackendError) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            message: e.message,
            retryable: e.retryable,
        }
    }

    /// `<code>/year=YYYY/month=MM/day=DD/hour=HH` for one envelope.
    fn dir_of(doc: &[u8]) -> String {
        let (code, time) = match serde_json::from_slice::<Head>(doc) {
            Ok(h) => (h.code.into_owned(), h.time.into_owned()),
            Err(_) => ("unknown".to_owned(), String::new()),
        };
        let t = chrono::DateTime::parse_from_rfc3339(&time)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| chrono::Utc::now());
        format!(
            "{}/{}",
            super::parquet::escape_partition(&code),
            t.format("year=%Y/month=%m/day=%d/hour=%H")
        )
    }

    async fn write_inner(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        let BatchData::Json(json) = &batch.data else {
            return Err(SinkError::Io {
                sink: self.name.clone(),
                message: "the DLQ takes NDJSON envelopes".into(),
                retryable: false,
            });
        };
        let mut by_dir: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for doc in json.iter() {
            let out = by_dir.entry(Self::dir_of(doc)).or_default();
            out.extend_from_slice(doc);
            out.push(b'\n');
        }
        for (dir, bytes) in by_dir {
            let n = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            if !self.open.contains_key(&dir) {
                let key = format!(
                    "{dir}/part-{}-{:08}-{:04}.ndjson",
                    self.generation, self.epoch, self.next_n
                );
                self.next_n += 1;
                let staged = self.backend.create(&key).await.map_err(|e| self.err(e))?;
                self.open.insert(dir.clone(), (staged, 0));
            }
            let (staged, rows) = self.open.get_mut(&dir).expect("opened");
            *rows += n;
            if let Err(e) = staged.write(&bytes).await {
                return Err(SinkError::Io {
                    sink: self.name.clone(),
                    message: e.message,
                    retryable: false,
                });
            }
        }
        Ok(Written {
            accepted: json.len(),
            refused: Vec::new(),
        })
    }

    async fn prepare_inner(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError> {
        if !self.marked {
            self.backend
                .mark_generation(&self.generation)
                .await
                .map_err(|e| self.err(e))?;
            self.marked = true;
        }
        let finishing: Vec<_> = std::mem::take(&mut self.open)
            .into_values()
            .map(|(s, rows)| s.finish(rows))
            .collect();
        let files = futures::future::try_join_all(finishing)
            .await
            .map_err(|e| self.err(e))?;
        self.epoch = self.epoch.max(epoch) + 1;
        self.next_n = 0;
        let token = Token {
            epoch,
            generation: self.generation.clone(),
            files,
        };
        Ok(serde_json::to_value(token).expect("token serializes"))
    }

    fn parse(&self, token: &serde_json::Value) -> Result<Token, SinkError> {
        serde_json::from_value(token.clone()).map_err(|e| SinkError::Config {
            sink: self.name.clone(),
            message: format!("checkpoint token {token} is not an S3 DLQ token ({e}): the DLQ moved between a file and S3 since the checkpoint; start over or point it back"),
        })
    }

    async fn commit_files(&mut self, t: &Token) -> Result<(), SinkError> {
        for wave in t.files.chunks(64) {
            futures::future::try_join_all(wave.iter().map(|p| self.backend.commit(p)))
                .await
                .map_err(|e| self.err(e))?;
            self.committed += wave.len() as u64;
        }
        Ok(())
    }

    fn halt(&mut self, e: SinkError) -> SinkError {
        self.failed = Some(e.to_string());
        e
    }
}

#[async_trait]
impl Sink for S3DlqSink {
    fn takes(&self) -> Format {
        Format::Json
    }

    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        if let Some(why) = &self.failed {
            return Err(SinkError::Io {
                sink: self.name.clone(),
                message: format!("an earlier call failed ({why})"),
                retryable: false,
            });
        }
        let r = self.write_inner(batch).await;
        r.map_err(|e| self.halt(e))
    }

    async fn prepare(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError> {
        if let Some(why) = &self.failed {
            return Err(SinkError::Io {
                sink: self.name.clone(),
                message: format!("an earlier call failed ({why})"),
                retryable: false,
            });
        }
        let r = self.prepare_inner(epoch).await;
        r.map_err(|e| self.halt(e))
    }

    async fn commit(&mut self, token: &serde_json::Value) -> Result<(), SinkError> {
        let t = self.parse(token)?;
        self.commit_files(&t).await
    }

    async fn recover(&mut self, token: Option<&serde_json::Value>) -> Result<(), SinkError> {
        self.open.clear();
        self.failed = None;
        if let Some(token) = token {
            let t = self.parse(token)?;
            self.commit_files(&t).await?;
            self.epoch = self.epoch.max(t.epoch + 1);
            self.generation = t.generation.clone();
            self.marked = true;
        }
        self.next_n = 0;
        // As the Parquet sink: this generation's uploads and unmarked ones
        // are stale; other marked generations may belong to another checkpoint.
        // The token's objects are complete by now, so an upload still listed
        // under one of their keys is another one: an instance that lost its
        // lease while paused stages under the same names (it continues the
        // same generation and epoch) before it finds out. Keeping uploads by
        // key would leave that one behind for good.
        let staged = self.backend.staged().await.map_err(|e| self.err(e))?;
        let marked = self.backend.generations().await.map_err(|e| self.err(e))?;
        let (stale, _) = super::parquet::stale(staged, &[], &self.generation, &marked);
        if !stale.is_empty() {
            tracing::info!(sink = %self.name, removed = stale.len(), "aborted DLQ uploads staged after the last checkpoint (their records will be replayed)");
        }
        self.backend.discard(&stale).await.map_err(|e| self.err(e))
    }

    fn committed_outputs(&self) -> u64 {
        self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_to_the_firehose_error_layout() {
        let doc = br#"{"stage":"stages.validate","code":"bad_duration","message":"m","time":"2026-03-04T05:06:07.000Z"}"#;
        assert_eq!(
            S3DlqSink::dir_of(doc),
            "bad_duration/year=2026/month=03/day=04/hour=05"
        );
        assert!(S3DlqSink::dir_of(b"not json").starts_with("unknown/year="));
        // Named like Parquet files, so their staleness rule applies: this
        // generation's object is stale, a marked other one's is left alone.
        let staged = ["c/year=1/part-0123456789abcdef-00000001-0000.ndjson".to_owned(),
                      "c/year=1/part-fedcba9876543210-00000001-0000.ndjson".to_owned()];
        let marked = ["fedcba9876543210".to_owned()];
        let (stale, left) = crate::sink::parquet::stale(staged.to_vec(), &[], "0123456789abcdef", &marked);
        assert_eq!((stale, left), (vec![staged[0].clone()], 1));
    }
}
