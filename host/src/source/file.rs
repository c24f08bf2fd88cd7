//! File source: CSV (header line first) or NDJSON, one record per line.
//! Positions are byte offsets plus record ordinals, so a restart seeks
//! straight to the first record not covered by the last checkpoint.
//!
//! Reading and parsing run on a thread of their own (plain blocking I/O, one
//! CSV parser for the whole file); the async task only forwards batches and
//! answers barriers, with the position after the last batch it forwarded.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::rows::{join_fields, Malformed, RowBatcher};
use super::{emit, SourceCtx, SourceError};
use crate::batch::{Batch, Format, Origin, RecordMeta};
use crate::config::{FileFormat, FileSourceSpec};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Position {
    path: String,
    /// Byte offset of the first record not yet emitted.
    offset: u64,
    /// Ordinal (1-based line number) of that record.
    line: u64,
}

pub fn format_of(spec: &FileSourceSpec) -> FileFormat {
    spec.format.unwrap_or(if spec.path.to_ascii_lowercase().ends_with(".csv") { FileFormat::Csv } else { FileFormat::Ndjson })
}

/// What the reader thread hands over: rows up to `pos` (exclusive).
struct Chunk {
    batch: Option<Batch>,
    malformed: Vec<Malformed>,
    pos: Position,
}

struct Reader {
    format: FileFormat,
    preferred: Format,
    max_records: usize,
    max_bytes: usize,
    origin: Arc<Origin>,
    node: String,
}

pub async fn run(spec: FileSourceSpec, mut ctx: SourceCtx) -> Result<(), SourceError> {
    let mut start = Position { path: spec.path.clone(), offset: 0, line: 0 };
    if let Some(state) = ctx.resume.take() {
        match serde_json::from_value::<Position>(state) {
            Ok(p) if p.path == spec.path => {
                info!(offset = p.offset, line = p.line, "resuming file source");
                start = p;
            }
            Ok(p) => warn!(old = %p.path, new = %spec.path, "the input file changed since the checkpoint; reading the new file from its start"),
            Err(e) => warn!(error = %e, "unreadable file source position; reading from the start"),
        }
    }
    let origin = Arc::new(Origin { source: ctx.name.clone(), partition: spec.path.as_str().into() });
    let reader = Reader {
        format: format_of(&spec),
        preferred: ctx.preferred,
        max_records: ctx.batch.max_records.max(1),
        max_bytes: ctx.batch.max_bytes.0 as usize,
        origin: origin.clone(),
        node: ctx.node.clone(),
    };
    // Two chunks in flight: parsing overlaps with the stages, memory stays bounded.
    let (tx, mut rx) = mpsc::channel(2);
    let path = spec.path.clone();
    std::thread::Builder::new()
        .name(format!("read-{}", ctx.name))
        .spawn(move || {
            if let Err(e) = reader.read(&path, start, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| SourceError::Io { source_name: ctx.node.clone(), what: "reader thread".into(), message: e.to_string() })?;

    let mut last: Option<Position> = None;
    let position = |p: &Option<Position>| serde_json::to_value(p).expect("position serialises");
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        emit::send(&ctx, &origin, chunk.batch, chunk.malformed).await?;
        last = Some(chunk.pos);
        let snapshot = last.clone();
        if emit::pending_barriers(&mut ctx, || position(&snapshot)).await? {
            return Ok(());
        }
    }
    info!(records = last.as_ref().map_or(0, |p| p.line), "file source reached the end of its input");
    emit::finish(&mut ctx, position(&last)).await
}

impl Reader {
    fn read(&self, path: &str, start: Position, tx: &mpsc::Sender<Result<Chunk, SourceError>>) -> Result<(), SourceError> {
        let io = |e: std::io::Error| SourceError::Io { source_name: self.node.clone(), what: path.into(), message: e.to_string() };
        let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut pos = start;
        let mut columns = Vec::new();
        if self.format == FileFormat::Csv {
            let mut header = Vec::new();
            let n = file.read_until(b'\n', &mut header).map_err(io)? as u64;
            let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(header.as_slice());
            let mut rec = csv::StringRecord::new();
            r.read_record(&mut rec).map_err(|e| io(std::io::Error::other(format!("the CSV header: {e}"))))?;
            columns = rec.iter().map(|s| s.trim().to_string()).collect();
            if pos.offset < n {
                pos = Position { path: path.into(), offset: n, line: 1 };
            }
        }
        file.seek(SeekFrom::Start(pos.offset)).map_err(io)?;
        let mut batcher = RowBatcher::new(self.preferred, columns);
        let send = |batcher: &mut RowBatcher, pos: &Position| -> bool {
            let (batch, malformed) = batcher.take(&self.origin);
            tx.blocking_send(Ok(Chunk { batch, malformed, pos: pos.clone() })).is_ok()
        };
        match self.format {
            FileFormat::Csv => {
                let base = pos.offset;
                let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
                let mut rec = csv::ByteRecord::new();
                let mut raw = Vec::with_capacity(256);
                loop {
                    let more = csv.read_byte_record(&mut rec);
                    let end = base + csv.position().byte();
                    match more {
                        Ok(false) => break,
                        Ok(true) => {
                            pos.line += 1;
                            raw.clear();
                            join_fields(&rec, &mut raw);
                            batcher.push_csv(RecordMeta::line(pos.line), &rec, &raw);
                        }
                        Err(e) => {
                            pos.line += 1;
                            let meta = RecordMeta::line(pos.line);
                            batcher.malformed.push(Malformed { meta, raw: Vec::new(), message: e.to_string() });
                        }
                    }
                    pos.offset = end;
                    if (batcher.len() >= self.max_records || batcher.bytes() >= self.max_bytes) && !send(&mut batcher, &pos) {
                        return Ok(());
                    }
                }
            }
            FileFormat::Ndjson => {
                let mut line = Vec::with_capacity(512);
                loop {
                    line.clear();
                    let n = file.read_until(b'\n', &mut line).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    pos.offset += n as u64;
                    pos.line += 1;
                    let text = line.trim_ascii();
                    if !text.is_empty() {
                        batcher.push_json(RecordMeta::line(pos.line), text);
                    }
                    if (batcher.len() >= self.max_records || batcher.bytes() >= self.max_bytes) && !send(&mut batcher, &pos) {
                        return Ok(());
                    }
                }
            }
        }
        if !batcher.is_empty() {
            send(&mut batcher, &pos);
        }
        Ok(())
    }
}
