//! File source: CSV (header line first) or NDJSON, one record per line.
//! Positions are byte offsets plus line numbers, so a restart seeks straight
//! to the first record not covered by the last checkpoint.
//!
//! Reading, parsing and typing run on a thread of their own (plain blocking
//! I/O, never on the async runtime's workers); the async task only forwards
//! batches and answers barriers, with the position after the last batch it
//! forwarded.
//!
//! Column types (`typing`) are fixed before the first record is emitted:
//! declared `columns`, the others inferred from the first `infer_rows` rows
//! of the file. They go into every checkpoint with the position, so a
//! restart (which starts mid-file) emits batches of the very same schema.

pub mod config;
pub mod lines;
pub mod typing;

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use self::config::{ColumnSpec, FileFormat, FileSourceSpec};
use self::lines::{CsvRecords, DLQ_PREFIX_BYTES};
use self::typing::{ColumnType, Inference};
use super::rows::RowBatcher;
use crate::dead_letter::DeadLetter;
use super::{emit, SourceCtx, SourceError};
use crate::batch::{Batch, Format, Origin, RecordMeta};
use crate::convert::Ordered;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Position {
    path: String,
    /// Byte offset of the first record not yet emitted.
    offset: u64,
    /// Lines (of the file) before that record.
    line: u64,
    /// The column types every batch of this run has (absent in checkpoints
    /// of older versions, and for NDJSON passed through as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    columns: Option<Vec<ColumnSpec>>,
}

/// What the reader thread hands over: rows up to `pos` (exclusive).
struct Chunk {
    batch: Option<Batch>,
    malformed: Vec<DeadLetter>,
    pos: Position,
}

struct Reader {
    spec: FileSourceSpec,
    format: FileFormat,
    preferred: Format,
    max_records: usize,
    max_bytes: usize,
    origin: Arc<Origin>,
    node: String,
}

pub async fn run(spec: FileSourceSpec, mut ctx: SourceCtx) -> Result<(), SourceError> {
    let mut start = Position { path: spec.path.clone(), offset: 0, line: 0, columns: None };
    if let Some(state) = ctx.resume.take() {
        if state.is_null() {
            // Earlier versions recorded no position when a run resumed at the
            // end of its input read nothing. Reading from the start again
            // would write every record a second time.
            return Err(SourceError::Config {
                source_name: ctx.node.clone(),
                message: format!(
                    "the checkpoint holds no position for this source (written by an earlier version after a run that resumed at the end of {}); \
                     the file was read to its end, so there is nothing to resume: move the checkpoint away only to read the whole file again (its output is then written again)",
                    spec.path
                ),
            });
        }
        match serde_json::from_value::<Position>(state) {
            Ok(p) if p.path == spec.path => {
                info!(offset = p.offset, line = p.line, "resuming file source");
                start = p;
            }
            Ok(p) => {
                warn!(old = %p.path, new = %spec.path, "the input file changed since the checkpoint; reading the new file from its start")
            }
            Err(e) => warn!(error = %e, "unreadable file source position; reading from the start"),
        }
    }
    let resumed_at = start.clone();
    let origin = Arc::new(Origin { source: ctx.name.clone(), partition: spec.path.as_str().into() });
    let reader = Reader {
        format: spec.format(),
        spec: spec.clone(),
        preferred: ctx.preferred,
        // Paced: batches of a tenth of a second's records at most, so the
        // stream flows evenly and barriers are answered between them.
        max_records: match spec.max_records_per_second {
            Some(rate) => ctx.batch.max_records.min((rate.get() / 10).max(1) as usize).max(1),
            None => ctx.batch.max_records.max(1),
        },
        max_bytes: ctx.batch.max_bytes.0 as usize,
        origin: origin.clone(),
        node: ctx.node.clone(),
    };
    // Two chunks in flight: parsing overlaps with the stages, memory stays bounded.
    let (tx, mut rx) = mpsc::channel(2);
    std::thread::Builder::new()
        .name(format!("read-{}", ctx.name))
        .spawn(move || {
            if let Err(e) = reader.read(start, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| SourceError::Io {
            source_name: ctx.node.clone(),
            what: "reader thread".into(),
            message: e.to_string(),
        })?;

    emit::partitions(&ctx, vec![origin.partition.clone()], vec![]).await?;
    // Until the first batch the position is where this run started: a run
    // resumed at the end of its input reads nothing, and its checkpoints
    // must still say where that end is (a missing position would make the
    // next run read the whole file again).
    let mut last: Option<Position> = Some(resumed_at);
    let position = |p: &Option<Position>| serde_json::to_value(p).expect("position serialises");
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        emit::send(&ctx, chunk.batch, chunk.malformed).await?;
        last = Some(chunk.pos);
        let snapshot = last.clone();
        if emit::pending_barriers(&mut ctx, || position(&snapshot)).await? {
            return Ok(());
        }
    }
    info!(lines = last.as_ref().map_or(0, |p| p.line), "file source reached the end of its input");
    emit::finish(&mut ctx, position(&last)).await
}

/// The CSV header's column names and where the data starts (byte offset,
/// lines before it); `None` for an empty file.
fn csv_header(spec: &FileSourceSpec) -> std::io::Result<Option<(Vec<String>, CsvRecords<BufReader<File>>)>> {
    let file = BufReader::with_capacity(1 << 16, File::open(&spec.path)?);
    let mut records = CsvRecords::new(file, spec.max_record_bytes.0 as usize, spec.multiline, 0);
    match records.next()? {
        None => Ok(None),
        Some(n) => match n.outcome {
            Ok(()) => {
                let names = records.fields().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect();
                Ok(Some((names, records)))
            }
            Err(bad) => Err(std::io::Error::other(format!("the CSV header: {}", bad.message))),
        },
    }
}

/// What `sluice validate` can check before the run: declared columns are
/// named once each and, for CSV, are columns of the file's header.
pub(crate) fn check(spec: &FileSourceSpec) -> Result<(), String> {
    for (i, c) in spec.columns.iter().enumerate() {
        if spec.columns[..i].iter().any(|d| d.name == c.name) {
            return Err(format!("{:?} is declared twice", c.name));
        }
    }
    if spec.format() == FileFormat::Csv && !spec.columns.is_empty() {
        if let Ok(Some((header, _))) = csv_header(spec) {
            declared_in(&header, &spec.columns)?;
        }
    }
    Ok(())
}

fn declared_in(header: &[String], declared: &[ColumnSpec]) -> Result<(), String> {
    match declared.iter().find(|d| !header.contains(&d.name)) {
        Some(d) => Err(format!("{:?} is not a column of the CSV header ({})", d.name, header.join(", "))),
        None => Ok(()),
    }
}

/// The type of every CSV column: declared, else inferred from the first
/// `infer_rows` rows (rows of the wrong width do not count), else string.
/// `records` is positioned right after the header.
pub(crate) fn csv_types<R: std::io::BufRead>(
    header: &[String],
    declared: &[ColumnSpec],
    infer_rows: usize,
    records: &mut CsvRecords<R>,
) -> Result<Vec<ColumnType>, String> {
    declared_in(header, declared).map_err(|e| format!("columns: {e}"))?;
    let mut inference = Inference::new(header.len());
    let mut seen = 0;
    while seen < infer_rows {
        let Some(n) = records.next().map_err(|e| e.to_string())? else { break };
        seen += 1;
        if n.outcome.is_ok() && records.len() == header.len() {
            inference.observe(records.fields());
        }
    }
    for d in inference.demotions() {
        let name = &header[d.column];
        if !declared.iter().any(|c| &c.name == name) {
            // Typing a column is a guess from a sample: say when one cell swayed it.
            tracing::warn!(
                column = %name,
                "column {name:?} is typed as string: {} of the sampled cells are not text, but data row {} holds {:?}; \
                 declare it (columns = [{{ name = {name:?}, type = \"float64\" }}]) to send such rows to the DLQ instead",
                d.typed,
                d.row + 1,
                d.text
            );
        }
    }
    let inferred = if infer_rows > 0 { inference.finish() } else { vec![ColumnType::String; header.len()] };
    Ok(header.iter().zip(inferred).map(|(h, t)| declared.iter().find(|d| &d.name == h).map_or(t, |d| d.ty)).collect())
}

/// NDJSON keys (in first-seen order) and their types, from the JSON kind of
/// their values in the first `infer_rows` lines, plus declared columns.
fn ndjson_columns(spec: &FileSourceSpec) -> std::io::Result<Vec<ColumnSpec>> {
    let mut file = BufReader::with_capacity(1 << 16, File::open(&spec.path)?);
    let mut cols: Vec<(String, Option<ColumnType>)> =
        spec.columns.iter().map(|c| (c.name.clone(), Some(c.ty))).collect();
    let declared = cols.len();
    let mut line = Vec::new();
    let mut seen = 0;
    while seen < spec.infer_rows {
        line.clear();
        let (n, len) = lines::read_line(&mut file, &mut line, spec.max_record_bytes.0 as usize + 1)?;
        if n == 0 {
            break;
        }
        if len > spec.max_record_bytes.0 {
            continue;
        }
        let Ok(Ordered::<serde_json::Value>(obj)) = serde_json::from_slice(&line) else { continue };
        seen += 1;
        for (k, v) in obj {
            let ty = match &v {
                serde_json::Value::Null => None,
                serde_json::Value::Bool(_) => Some(ColumnType::Bool),
                serde_json::Value::Number(n) if n.is_i64() => Some(ColumnType::Int64),
                serde_json::Value::Number(_) => Some(ColumnType::Float64),
                serde_json::Value::String(s) => match typing::classify(s) {
                    Some(ColumnType::Timestamp) => Some(ColumnType::Timestamp),
                    _ => Some(ColumnType::String),
                },
                _ => Some(ColumnType::String),
            };
            match cols.iter().position(|(c, _)| *c == k) {
                Some(i) if i < declared => {}
                Some(i) => {
                    cols[i].1 = match (cols[i].1, ty) {
                        (Some(a), Some(b)) => Some(a.join(b)),
                        (a, b) => a.or(b),
                    }
                }
                None => cols.push((k, ty)),
            }
        }
    }
    Ok(cols.into_iter().map(|(name, ty)| ColumnSpec { name, ty: ty.unwrap_or(ColumnType::String) }).collect())
}

impl Reader {
    fn read(&self, start: Position, tx: &mpsc::Sender<Result<Chunk, SourceError>>) -> Result<(), SourceError> {
        let path = self.spec.path.as_str();
        let io = |e: std::io::Error| SourceError::Io {
            source_name: self.node.clone(),
            what: path.into(),
            message: e.to_string(),
        };
        let pace = self.spec.max_records_per_second.map(|rate| Pace::new(rate.get(), start.line));
        let send = |batcher: &mut RowBatcher, pos: &Position| -> bool {
            if let Some(p) = &pace {
                p.wait(pos.line);
            }
            let (batch, malformed) = batcher.take();
            tx.blocking_send(Ok(Chunk { batch, malformed, pos: pos.clone() })).is_ok()
        };
        let full = |b: &RowBatcher| b.len() >= self.max_records || b.bytes() >= self.max_bytes;
        let max = self.spec.max_record_bytes.0 as usize;
        let mut pos = start;
        match self.format {
            FileFormat::Csv => {
                let Some((header, mut records)) = csv_header(&self.spec).map_err(io)? else {
                    return Ok(());
                };
                let data_start = (records.consumed, records.line);
                let columns = match pos.columns.take() {
                    Some(c) if c.len() == header.len() && c.iter().zip(&header).all(|(c, h)| &c.name == h) => c,
                    recorded => {
                        if recorded.is_some() {
                            warn!("the CSV header changed since the checkpoint; typing its columns again");
                        }
                        let types = csv_types(&header, &self.spec.columns, self.spec.infer_rows, &mut records)
                            .map_err(|message| SourceError::Config { source_name: self.node.clone(), message })?;
                        header.into_iter().zip(types).map(|(name, ty)| ColumnSpec { name, ty }).collect()
                    }
                };
                info!(columns = %describe(&columns), "file source column types");
                pos.columns = Some(columns.clone());
                if pos.offset < data_start.0 {
                    (pos.offset, pos.line) = data_start;
                }
                let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
                file.seek(SeekFrom::Start(pos.offset)).map_err(io)?;
                let base = pos.offset;
                let mut records = CsvRecords::new(file, max, self.spec.multiline, pos.line);
                let mut batcher =
                    RowBatcher::typed(self.preferred, columns.into_iter().map(|c| (c.name, c.ty)).collect(), &self.node, &self.origin);
                while let Some(n) = records.next().map_err(io)? {
                    let meta = RecordMeta::line(n.line);
                    match n.outcome {
                        Ok(()) => batcher.push_csv(meta, records.fields(), records.raw()),
                        Err(bad) => batcher.unparsed(meta, records.dlq_raw(), bad.code, bad.message),
                    }
                    (pos.offset, pos.line) = (base + records.consumed, records.line);
                    if full(&batcher) && !send(&mut batcher, &pos) {
                        return Ok(());
                    }
                }
                if !batcher.is_empty() {
                    send(&mut batcher, &pos);
                }
            }
            FileFormat::Ndjson => {
                let typed =
                    self.preferred == Format::Arrow && (self.spec.infer_rows > 0 || !self.spec.columns.is_empty());
                let mut batcher = if typed {
                    let columns = match pos.columns.take() {
                        Some(c) => c,
                        None => ndjson_columns(&self.spec).map_err(io)?,
                    };
                    info!(columns = %describe(&columns), "file source column types");
                    pos.columns = Some(columns.clone());
                    RowBatcher::typed(self.preferred, columns.into_iter().map(|c| (c.name, c.ty)).collect(), &self.node, &self.origin)
                } else {
                    RowBatcher::new(self.preferred, Vec::new(), &self.node, &self.origin)
                };
                let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
                file.seek(SeekFrom::Start(pos.offset)).map_err(io)?;
                let mut line = Vec::with_capacity(512);
                loop {
                    line.clear();
                    let (n, len) = lines::read_line(&mut file, &mut line, max + 1).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    pos.offset += n;
                    pos.line += 1;
                    let meta = RecordMeta::line(pos.line);
                    if len > max as u64 {
                        let bad = lines::too_large(len, max);
                        line.truncate(DLQ_PREFIX_BYTES);
                        batcher.unparsed(meta, &line, bad.code, bad.message);
                    } else {
                        let text = line.trim_ascii();
                        if !text.is_empty() {
                            batcher.push_json(meta, text);
                        }
                    }
                    if full(&batcher) && !send(&mut batcher, &pos) {
                        return Ok(());
                    }
                }
                if !batcher.is_empty() {
                    send(&mut batcher, &pos);
                }
            }
        }
        Ok(())
    }
}

/// `max_records_per_second`: holds a batch back until sending it keeps the
/// records (lines) read since the start of the run within the rate.
struct Pace {
    rate: u64,
    started: std::time::Instant,
    from_line: u64,
}

impl Pace {
    fn new(rate: u64, from_line: u64) -> Self {
        Pace { rate, started: std::time::Instant::now(), from_line }
    }

    /// Sleeps (on the reader's own thread) until the lines before `line` are due.
    fn wait(&self, line: u64) {
        let due = self.started + std::time::Duration::from_secs_f64(line.saturating_sub(self.from_line) as f64 / self.rate as f64);
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

fn describe(columns: &[ColumnSpec]) -> String {
    columns.iter().map(|c| format!("{}:{}", c.name, c.ty.name())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
