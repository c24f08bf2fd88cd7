//! Joining a file's chunks into one Parquet file without re-encoding. Every
//! chunk is a complete Parquet file (one checkpoint interval of one
//! partition); its row groups' column chunks are copied byte for byte into
//! the final file (`SerializedRowGroupWriter::append_column`, as the parquet
//! crate's `parquet-concat` tool does) and a new footer lists them all. Row
//! group statistics are kept; page indexes are not carried over.
//!
//! Memory: one row group of one chunk at a time (read with one ranged read),
//! and the final file's bytes are handed to its staged object after every
//! row group.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;

use super::backend::{Backend, Pending, Staged};

/// Where a piece of the final file comes from.
pub enum Source {
    /// A finished chunk in the backend.
    Chunk(Pending),
    /// A whole Parquet file in memory (an epoch's data that never reached the
    /// drain threshold, so it has no chunk object).
    Memory(Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum ConcatError {
    #[error("{0}")]
    Backend(String),
    #[error("chunk {key}: {message}")]
    Chunk { key: String, message: String },
    #[error("{0}")]
    Parquet(#[from] ParquetError),
}

/// Writes the concatenation of `sources` (in order) to `out`; returns the
/// rows written. `props` only names the writer (`created_by`): the column
/// chunks keep the encoding and compression they were written with.
pub async fn concat(
    backend: &dyn Backend,
    sources: &[Source],
    out: &mut dyn Staged,
    props: WriterProperties,
) -> Result<u64, ConcatError> {
    let mut writer: Option<SerializedFileWriter<Vec<u8>>> = None;
    let mut rows = 0u64;
    for source in sources {
        let meta = metadata(backend, source).await?;
        let w = match &mut writer {
            Some(w) => w,
            None => {
                let file = meta.file_metadata();
                let mut w = SerializedFileWriter::new(
                    Vec::new(),
                    file.schema_descr().root_schema_ptr(),
                    Arc::new(props.clone()),
                )?;
                // The Arrow schema (`ARROW:schema`) and whatever else the
                // chunks' writer recorded.
                for kv in file.key_value_metadata().into_iter().flatten() {
                    w.append_key_value_metadata(kv.clone());
                }
                writer.insert(w)
            }
        };
        for rg in meta.row_groups() {
            if rg.num_columns() == 0 || rg.num_rows() == 0 {
                continue;
            }
            let window = read_row_group(backend, source, rg).await?;
            let mut out_rg = w.next_row_group()?;
            for col in rg.columns() {
                out_rg.append_column(
                    &window,
                    ColumnCloseResult {
                        bytes_written: col.compressed_size() as u64,
                        rows_written: rg.num_rows() as u64,
                        metadata: col.clone(),
                        bloom_filter: None,
                        column_index: None,
                        offset_index: None,
                    },
                )?;
            }
            out_rg.close()?;
            rows += rg.num_rows() as u64;
            let bytes = std::mem::take(w.inner_mut());
            out.write(&bytes)
                .await
                .map_err(|e| ConcatError::Backend(e.message))?;
        }
    }
    if let Some(mut w) = writer {
        w.finish()?;
        let bytes = std::mem::take(w.inner_mut());
        out.write(&bytes)
            .await
            .map_err(|e| ConcatError::Backend(e.message))?;
    }
    Ok(rows)
}

fn key_of(source: &Source) -> String {
    match source {
        Source::Chunk(p) => p.key.clone(),
        Source::Memory(_) => "(in memory)".into(),
    }
}

/// The footer of a source.
async fn metadata(backend: &dyn Backend, source: &Source) -> Result<ParquetMetaData, ConcatError> {
    let chunk_err = |message: String| ConcatError::Chunk {
        key: key_of(source),
        message,
    };
    match source {
        Source::Memory(b) => Ok(ParquetMetaDataReader::new().parse_and_finish(b)?),
        Source::Chunk(p) => {
            if p.bytes < 12 {
                return Err(chunk_err(format!(
                    "{} bytes is too short for a Parquet file",
                    p.bytes
                )));
            }
            let tail = backend
                .read(p, p.bytes - 8..p.bytes)
                .await
                .map_err(|e| ConcatError::Backend(e.message))?;
            if &tail[4..] != b"PAR1" {
                return Err(chunk_err("does not end in a Parquet footer (PAR1)".into()));
            }
            let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
            if len + 12 > p.bytes {
                return Err(chunk_err(format!(
                    "footer length {len} exceeds the file ({} bytes)",
                    p.bytes
                )));
            }
            let footer = backend
                .read(p, p.bytes - 8 - len..p.bytes - 8)
                .await
                .map_err(|e| ConcatError::Backend(e.message))?;
            ParquetMetaDataReader::decode_metadata(&footer)
                .map_err(|e| chunk_err(format!("unreadable footer: {e}")))
        }
    }
}

/// The bytes of one row group's column chunks, with one read.
async fn read_row_group(
    backend: &dyn Backend,
    source: &Source,
    rg: &RowGroupMetaData,
) -> Result<Window, ConcatError> {
    let span = |c: &parquet::file::metadata::ColumnChunkMetaData| {
        let start = c
            .dictionary_page_offset()
            .unwrap_or_else(|| c.data_page_offset()) as u64;
        (start, start + c.compressed_size() as u64)
    };
    let start = rg.columns().iter().map(|c| span(c).0).min().unwrap_or(0);
    let end = rg.columns().iter().map(|c| span(c).1).max().unwrap_or(0);
    let bytes = match source {
        Source::Memory(b) => {
            if end as usize > b.len() {
                return Err(ConcatError::Chunk {
                    key: key_of(source),
                    message: "row group past the end".into(),
                });
            }
            b.slice(start as usize..end as usize)
        }
        Source::Chunk(p) => {
            if end > p.bytes {
                return Err(ConcatError::Chunk {
                    key: p.key.clone(),
                    message: format!(
                        "row group ends at {end}, past the chunk's {} bytes",
                        p.bytes
                    ),
                });
            }
            Bytes::from(
                backend
                    .read(p, start..end)
                    .await
                    .map_err(|e| ConcatError::Backend(e.message))?,
            )
        }
    };
    Ok(Window { base: start, bytes })
}

/// A window `[base, base + bytes.len())` of a file, as a `ChunkReader`.
struct Window {
    base: u64,
    bytes: Bytes,
}

impl Window {
    fn slice(&self, start: u64, len: usize) -> parquet::errors::Result<Bytes> {
        let from = start.checked_sub(self.base).map(|o| o as usize);
        match from {
            Some(from) if from + len <= self.bytes.len() => Ok(self.bytes.slice(from..from + len)),
            _ => Err(ParquetError::General(format!(
                "bytes {start}..{} are outside the row group read ({}..{})",
                start + len as u64,
                self.base,
                self.base + self.bytes.len() as u64
            ))),
        }
    }
}

impl Length for Window {
    fn len(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }
}

impl ChunkReader for Window {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let len = (self.len().saturating_sub(start)) as usize;
        Ok(self.slice(start, len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
}
