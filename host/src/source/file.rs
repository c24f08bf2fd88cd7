//! File source: CSV (header line first) or NDJSON, one record per line.
//! Positions are byte offsets plus record ordinals, so a restart seeks
//! straight to the first record not covered by the last checkpoint.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tracing::{info, warn};

use super::rows::RowBatcher;
use super::{emit, SourceCtx, SourceError};
use crate::batch::{Origin, RecordMeta};
use crate::config::{FileFormat, FileSourceSpec};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Position {
    path: String,
    /// Byte offset of the first line not yet emitted.
    offset: u64,
    /// Ordinal (1-based line number) of that line.
    line: u64,
}

pub fn format_of(spec: &FileSourceSpec) -> FileFormat {
    spec.format.unwrap_or(if spec.path.to_ascii_lowercase().ends_with(".csv") { FileFormat::Csv } else { FileFormat::Ndjson })
}

pub async fn run(spec: FileSourceSpec, mut ctx: SourceCtx) -> Result<(), SourceError> {
    let node = ctx.node.clone();
    let io = |what: &str, e: std::io::Error| SourceError::Io { source_name: node.clone(), what: what.into(), message: e.to_string() };
    let format = format_of(&spec);
    let file = tokio::fs::File::open(&spec.path).await.map_err(|e| io(&spec.path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let origin = Arc::new(Origin { source: ctx.name.clone(), partition: spec.path.as_str().into() });

    let mut header = Vec::new();
    let mut pos = Position { path: spec.path.clone(), offset: 0, line: 1 };
    if format == FileFormat::Csv {
        pos.offset = reader.read_until(b'\n', &mut header).await.map_err(|e| io(&spec.path, e))? as u64;
        pos.line = 2;
    }
    let columns: Vec<String> = if format == FileFormat::Csv {
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(header.as_slice());
        let mut rec = csv::StringRecord::new();
        r.read_record(&mut rec).map_err(|e| io("the CSV header", std::io::Error::other(e)))?;
        rec.iter().map(|s| s.trim().to_string()).collect()
    } else {
        Vec::new()
    };
    if let Some(state) = ctx.resume.take() {
        match serde_json::from_value::<Position>(state) {
            Ok(p) if p.path == spec.path => {
                info!(offset = p.offset, line = p.line, "resuming file source");
                pos = p;
            }
            Ok(p) => warn!(old = %p.path, new = %spec.path, "the input file changed since the checkpoint; reading the new file from its start"),
            Err(e) => warn!(error = %e, "unreadable file source position; reading from the start"),
        }
    }
    reader.seek(std::io::SeekFrom::Start(pos.offset)).await.map_err(|e| io(&spec.path, e))?;

    let max_records = ctx.batch.max_records.max(1);
    let max_bytes = ctx.batch.max_bytes.0 as usize;
    let mut batcher = RowBatcher::new(ctx.preferred, columns);
    let mut csv_rec = csv::ByteRecord::new();
    let mut line = Vec::with_capacity(512);
    let position = |p: &Position| serde_json::to_value(p).expect("position serialises");
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await.map_err(|e| io(&spec.path, e))?;
        let eof = n == 0;
        if !eof {
            let meta = RecordMeta::line(pos.line);
            let text = trim_eol(&line);
            pos.offset += n as u64;
            pos.line += 1;
            if !text.iter().all(u8::is_ascii_whitespace) {
                match format {
                    FileFormat::Csv => {
                        let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text);
                        match r.read_byte_record(&mut csv_rec) {
                            Ok(_) => batcher.push_csv(meta, &csv_rec, text),
                            Err(e) => batcher.malformed.push(super::rows::Malformed { meta, raw: text.to_vec(), message: e.to_string() }),
                        }
                    }
                    FileFormat::Ndjson => batcher.push_json(meta, text),
                }
            }
        }
        if eof || batcher.len() >= max_records || batcher.bytes() >= max_bytes {
            let (batch, malformed) = batcher.take(&origin);
            emit::send(&ctx, &origin, batch, malformed).await?;
            let snapshot = pos.clone();
            if emit::pending_barriers(&mut ctx, || position(&snapshot)).await? {
                return Ok(());
            }
        }
        if eof {
            info!(lines = pos.line - 1, "file source reached the end of its input");
            return emit::finish(&mut ctx, position(&pos)).await;
        }
    }
}

fn trim_eol(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}
