//! One open Parquet file across checkpoints.
//!
//! A file lives from its partition's first record until it rolls
//! (`max_file_bytes`, `max_file_age`, the cap on open files, or the end of
//! the run). Each checkpoint interval's rows go to a fresh writer whose
//! output is one *chunk*: a complete Parquet file, streamed to a chunk object
//! in the backend as row groups complete (created at the first drain, so an
//! interval's data that stays small never needs one). At a checkpoint the
//! current chunk is finished (durable, readable) and the token lists the
//! file's final key with its chunks; the file stays open. When it rolls, its
//! chunks are concatenated without re-encoding (`concat.rs`) into a staged
//! object at the final key, committed at the next checkpoint, after which
//! its chunks are removed.

use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use super::backend::{Backend, Pending, Staged};
use super::concat::{self, Source};
use super::layout::Layout;
use super::naming;
use crate::sink::SinkError;

/// Bytes a file's encoder may hold before they are handed to the backend.
pub const DRAIN_BYTES: usize = 1 << 20;

/// An open file as a checkpoint records it: enough for the next run to go
/// on writing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRecord {
    /// The final key (`dir/part-....parquet`).
    pub key: String,
    /// Unix milliseconds when the file opened (`max_file_age` counts from here).
    pub opened_ms: u64,
    /// Its finished chunks, in order.
    pub chunks: Vec<Pending>,
    /// The chunks' row-group bytes: what joining them keeps (absent in
    /// older tokens: the chunks' sizes are used then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_bytes: Option<u64>,
}

/// This checkpoint interval's writer of a file.
pub struct Current {
    pub writer: ArrowWriter<Vec<u8>>,
    /// The chunk object, once the writer drained into it.
    staged: Option<Box<dyn Staged>>,
    chunk_key: String,
    rows: u64,
    /// Parts not yet encoded (small parts are gathered first: the encoder's
    /// cost per call and column dwarfs its cost per row).
    pub held: Vec<RecordBatch>,
    pub held_rows: usize,
}

pub struct OpenFile {
    pub key: String,
    pub opened_ms: u64,
    pub chunks: Vec<Pending>,
    /// Row-group bytes in `chunks` (their headers and footers do not reach
    /// the joined file, so they do not count towards `max_file_bytes`).
    pub data_bytes: u64,
    pub cur: Option<Current>,
    /// When it was last written to (the sink's write counter), for choosing
    /// the least recently written file when too many are open.
    pub last_write: u64,
}

/// What closing a file's current writer left.
pub enum Closed {
    /// The whole chunk is in memory.
    Memory {
        key: String,
        bytes: Vec<u8>,
        rows: u64,
        data_bytes: u64,
    },
    /// The chunk object holds it all, not finished yet.
    Staged {
        staged: Box<dyn Staged>,
        rows: u64,
        data_bytes: u64,
    },
}

impl Closed {
    /// Its row groups' bytes.
    pub fn data_bytes(&self) -> u64 {
        match self {
            Closed::Memory { data_bytes, .. } | Closed::Staged { data_bytes, .. } => *data_bytes,
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn io(sink: &str, message: String) -> SinkError {
    SinkError::Io {
        sink: sink.to_owned(),
        message,
        retryable: false,
    }
}

fn backend_err(sink: &str, e: super::backend::BackendError) -> SinkError {
    SinkError::Io {
        sink: sink.to_owned(),
        message: e.message,
        retryable: e.retryable,
    }
}

impl Current {
    /// What the writer wrote and holds encoded (its in-progress row group
    /// estimated); held parts are not in it.
    fn encoded_bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }
}

impl OpenFile {
    pub fn new(key: String) -> Self {
        OpenFile {
            key,
            opened_ms: now_ms(),
            chunks: Vec::new(),
            data_bytes: 0,
            cur: None,
            last_write: 0,
        }
    }

    pub fn restore(r: OpenRecord) -> Self {
        let data_bytes = r
            .data_bytes
            .unwrap_or_else(|| r.chunks.iter().map(|c| c.bytes).sum());
        OpenFile {
            key: r.key,
            opened_ms: r.opened_ms,
            chunks: r.chunks,
            data_bytes,
            cur: None,
            last_write: 0,
        }
    }

    pub fn record(&self) -> OpenRecord {
        OpenRecord {
            key: self.key.clone(),
            opened_ms: self.opened_ms,
            chunks: self.chunks.clone(),
            data_bytes: Some(self.data_bytes),
        }
    }

    /// The partition directory (`""` without partitions).
    pub fn dir(&self) -> &str {
        self.key.rsplit_once('/').map_or("", |(d, _)| d)
    }

    /// Estimated size of the final file: the finished chunks' row groups
    /// plus what the current writer wrote and holds encoded (held parts, at
    /// most `COALESCE_ROWS` rows, are left out).
    pub fn size(&self) -> u64 {
        self.data_bytes + self.cur.as_ref().map_or(0, Current::encoded_bytes)
    }

    /// `size` plus the held parts at the current writer's bytes per row:
    /// tells when encoding the held rows would take the file past a limit,
    /// so a file is checked before it overshoots by up to `COALESCE_ROWS`
    /// rows (which, without a checkpoint in between, made a 16 MiB limit
    /// give 19 MiB files). Before the writer has encoded a row it is `size`.
    pub fn projected_size(&self) -> u64 {
        let size = self.size();
        let Some(c) = self.cur.as_ref() else {
            return size;
        };
        let encoded_rows = c.rows.saturating_sub(c.held_rows as u64);
        if encoded_rows == 0 {
            return size;
        }
        size + c.encoded_bytes() * c.held_rows as u64 / encoded_rows
    }

    pub fn age_ms(&self) -> u64 {
        now_ms().saturating_sub(self.opened_ms)
    }

    /// Queues `part` in the current writer (started if none).
    pub fn hold(
        &mut self,
        sink: &str,
        layout: &Layout,
        epoch: u64,
        writer_id: &str,
        part: RecordBatch,
    ) -> Result<usize, SinkError> {
        if self.cur.is_none() {
            let writer = ArrowWriter::try_new(
                Vec::new(),
                layout.file_schema.clone(),
                Some(layout.props.clone()),
            )
            .map_err(|e| io(sink, format!("cannot start {}: {e}", self.key)))?;
            let chunk_key = naming::chunk_key(&self.key, epoch, writer_id);
            self.cur = Some(Current {
                writer,
                staged: None,
                chunk_key,
                rows: 0,
                held: Vec::new(),
                held_rows: 0,
            });
        }
        let c = self.cur.as_mut().expect("just started");
        let n = part.num_rows();
        c.rows += n as u64;
        c.held_rows += n;
        c.held.push(part);
        Ok(c.held_rows)
    }
}

/// Encodes a file's held parts and hands completed row groups to the backend.
pub async fn encode_held(
    sink: &str,
    backend: &dyn Backend,
    f: &mut OpenFile,
) -> Result<(), SinkError> {
    let Some(c) = f.cur.as_mut() else {
        return Ok(());
    };
    let held = std::mem::take(&mut c.held);
    c.held_rows = 0;
    let encode_err = |e: String| io(sink, format!("cannot encode {}: {e}", f.key));
    let batch = match held.len() {
        0 => return Ok(()),
        1 => held.into_iter().next().expect("one"),
        _ => arrow::compute::concat_batches(&held[0].schema(), &held)
            .map_err(|e| encode_err(e.to_string()))?,
    };
    c.writer
        .write(&batch)
        .map_err(|e| encode_err(e.to_string()))?;
    // Completed row groups leave memory as soon as they exist.
    if c.writer.inner().len() >= DRAIN_BYTES {
        drain(sink, backend, c).await?;
    }
    Ok(())
}

/// Closes the current row group early (the memory bound) and drains it.
pub async fn flush(sink: &str, backend: &dyn Backend, f: &mut OpenFile) -> Result<(), SinkError> {
    let Some(c) = f.cur.as_mut() else {
        return Ok(());
    };
    c.writer
        .flush()
        .map_err(|e| io(sink, format!("cannot flush {}: {e}", f.key)))?;
    drain(sink, backend, c).await
}

/// Hands the writer's encoded bytes to the chunk object, creating it first.
/// The buffer is taken before the write: if the write fails the file is
/// broken either way, and the sink refuses further calls.
async fn drain(sink: &str, backend: &dyn Backend, c: &mut Current) -> Result<(), SinkError> {
    let bytes = std::mem::take(c.writer.inner_mut());
    if c.staged.is_none() {
        c.staged = Some(
            backend
                .create_chunk(&c.chunk_key)
                .await
                .map_err(|e| backend_err(sink, e))?,
        );
    }
    c.staged
        .as_mut()
        .expect("created")
        .write(&bytes)
        .await
        .map_err(|e| backend_err(sink, e))
}

/// Ends the current writer (footer written); `None` when the file got no
/// rows since its last chunk.
pub async fn close_current(
    sink: &str,
    backend: &dyn Backend,
    f: &mut OpenFile,
) -> Result<Option<Closed>, SinkError> {
    encode_held(sink, backend, f).await?;
    let Some(mut c) = f.cur.take() else {
        return Ok(None);
    };
    let meta = c
        .writer
        .finish()
        .map_err(|e| io(sink, format!("cannot finish {}: {e}", f.key)))?;
    let data_bytes = meta
        .row_groups()
        .iter()
        .map(|rg| rg.compressed_size() as u64)
        .sum();
    let bytes = std::mem::take(c.writer.inner_mut());
    Ok(Some(match c.staged {
        None => Closed::Memory {
            key: c.chunk_key,
            bytes,
            rows: c.rows,
            data_bytes,
        },
        Some(mut staged) => {
            staged
                .write(&bytes)
                .await
                .map_err(|e| backend_err(sink, e))?;
            Closed::Staged {
                staged,
                rows: c.rows,
                data_bytes,
            }
        }
    }))
}

/// Makes a closed writer's output a finished chunk.
pub async fn finish_chunk(
    backend: &dyn Backend,
    closed: Closed,
) -> Result<Pending, super::backend::BackendError> {
    match closed {
        Closed::Memory {
            key, bytes, rows, ..
        } => {
            let mut s = backend.create_chunk(&key).await?;
            s.write(&bytes).await?;
            s.finish(rows).await
        }
        Closed::Staged { staged, rows, .. } => staged.finish(rows).await,
    }
}

/// A rolled file, written in full to its staged object (not finished: the
/// caller finishes several at once so their syncs overlap).
pub struct Rolling {
    pub staged: Box<dyn Staged>,
    pub rows: u64,
    /// Its chunks, removed once the file is committed.
    pub chunks: Vec<String>,
}

/// Writes `f`'s final file: its chunks and the current writer's output,
/// concatenated. A file that never outgrew memory is written as it is.
pub async fn roll(
    sink: &str,
    backend: &dyn Backend,
    layout: &Layout,
    mut f: OpenFile,
) -> Result<Rolling, SinkError> {
    let closed = close_current(sink, backend, &mut f).await?;
    let mut sources: Vec<Source> = f.chunks.drain(..).map(Source::Chunk).collect();
    let mut rows: u64 = sources
        .iter()
        .map(|s| if let Source::Chunk(p) = s { p.rows } else { 0 })
        .sum();
    match closed {
        None => {}
        Some(Closed::Memory { bytes, rows: r, .. }) => {
            rows += r;
            if sources.is_empty() {
                let mut staged = backend
                    .create(&f.key)
                    .await
                    .map_err(|e| backend_err(sink, e))?;
                staged
                    .write(&bytes)
                    .await
                    .map_err(|e| backend_err(sink, e))?;
                return Ok(Rolling {
                    staged,
                    rows,
                    chunks: Vec::new(),
                });
            }
            sources.push(Source::Memory(Bytes::from(bytes)));
        }
        Some(staged @ Closed::Staged { .. }) => {
            let p = finish_chunk(backend, staged)
                .await
                .map_err(|e| backend_err(sink, e))?;
            rows += p.rows;
            sources.push(Source::Chunk(p));
        }
    }
    let chunks = sources
        .iter()
        .filter_map(|s| {
            if let Source::Chunk(p) = s {
                Some(p.key.clone())
            } else {
                None
            }
        })
        .collect();
    let mut staged = backend
        .create(&f.key)
        .await
        .map_err(|e| backend_err(sink, e))?;
    let written = concat::concat(backend, &sources, staged.as_mut(), layout.props.clone())
        .await
        .map_err(|e| io(sink, format!("cannot join the chunks of {}: {e}", f.key)))?;
    if written != rows {
        return Err(io(
            sink,
            format!(
                "joining the chunks of {} gave {written} rows, expected {rows}",
                f.key
            ),
        ));
    }
    Ok(Rolling {
        staged,
        rows,
        chunks,
    })
}
