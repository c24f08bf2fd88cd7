//! Parquet sink: Hive-partitioned files, local directory now, S3 as a backend later.
//!
//! Data of one epoch (between two checkpoints) goes to one open file per
//! partition, streamed to a staged object as row groups complete. At the
//! checkpoint barrier `prepare` closes every file (footer written, durable,
//! still invisible) and returns them as the token; `commit` makes them
//! visible once the checkpoint is stored. So a checkpoint is what rolls
//! files: `max_file_bytes` and `max_file_age` ask for an early one.
//!
//! File names are deterministic: `part-{epoch:08}-{n:04}.{codec}.parquet`,
//! `n` counting the epoch's files in the order their partitions first
//! appeared. The epoch is the one after the last prepared (or recovered)
//! checkpoint; it is fixed when a file opens because an S3 upload's key
//! cannot change afterwards.

pub mod backend;
pub mod config;
mod conform;
mod ddl;
mod partition;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use self::backend::{Backend, BackendError, LocalBackend, Pending, Staged};
use self::config::{Compression, ParquetSinkSpec};
pub use self::conform::SCHEMA_MISMATCH;
pub use self::ddl::athena_ddl;
use self::partition::Splitter;
use super::{Refused, Sink, SinkError, Written};
use crate::batch::{Batch, BatchData, Format};

/// Bytes a file's encoder may hold before they are handed to the backend.
const DRAIN_BYTES: usize = 1 << 20;
/// Small parts are gathered up to this many rows before they are encoded:
/// the encoder's cost per call and column dwarfs its cost per row when a
/// batch scatters over many partitions.
const COALESCE_ROWS: usize = 8192;
/// Rows held back across all partitions before every buffer is encoded.
const COALESCE_TOTAL_ROWS: usize = 256 * 1024;

/// The commit token of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParquetToken {
    pub epoch: u64,
    pub files: Vec<Pending>,
}

struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    staged: Box<dyn Staged>,
    key: String,
    rows: u64,
    opened: Instant,
    /// Parts not yet encoded (see `COALESCE_ROWS`).
    held: Vec<RecordBatch>,
    held_rows: usize,
}

pub struct ParquetSink {
    name: String,
    spec: ParquetSinkSpec,
    declared: SchemaRef,
    file_schema: SchemaRef,
    splitter: Splitter,
    props: WriterProperties,
    backend: Box<dyn Backend>,
    /// Open files by partition directory.
    open: BTreeMap<String, OpenFile>,
    /// The epoch new files are named after.
    epoch: u64,
    /// Files opened in `epoch` so far.
    next_n: u32,
    committed: u64,
    /// Rows held in all open files' `held` buffers.
    held_rows: usize,
}

/// The sink for `spec`. `path` is a local directory, resolved against the
/// current working directory when relative (like every path the CLI takes;
/// `_base_dir`, the pipeline file's directory, is accepted so a later change
/// of that rule does not change the signature).
pub fn build(name: &str, spec: &ParquetSinkSpec, _base_dir: &Path) -> Result<ParquetSink, SinkError> {
    let config_err = |message: String| SinkError::Config { sink: name.to_owned(), message };
    spec.check().map_err(config_err)?;
    spec.check_path().map_err(config_err)?;
    let backend = LocalBackend::new(&spec.path).map_err(|e| backend_err(name, e))?;
    ParquetSink::with_backend(name, spec, Box::new(backend))
}

fn backend_err(sink: &str, e: BackendError) -> SinkError {
    SinkError::Io { sink: sink.to_owned(), message: e.message, retryable: e.retryable }
}

impl ParquetSink {
    pub fn with_backend(name: &str, spec: &ParquetSinkSpec, backend: Box<dyn Backend>) -> Result<Self, SinkError> {
        let config_err = |message: String| SinkError::Config { sink: name.to_owned(), message };
        spec.check().map_err(config_err)?;
        let declared = spec.declared_schema();
        let index_of = |n: &String| declared.index_of(n).expect("checked: partition columns are declared");
        let part_cols: Vec<usize> = spec.partition_by.iter().map(index_of).collect();
        let file_cols: Vec<usize> = (0..declared.fields().len())
            .filter(|c| spec.keep_partition_columns || !part_cols.contains(c))
            .collect();
        let file_schema = std::sync::Arc::new(Schema::new(
            file_cols.iter().map(|&c| declared.field(c).clone()).collect::<Vec<_>>(),
        ));
        let types: Vec<_> = declared.fields().iter().map(|f| f.data_type().clone()).collect();
        let splitter = Splitter::new(part_cols, file_cols, &types).map_err(|e| config_err(e.to_string()))?;
        let codec = match spec.compression {
            Compression::Snappy => Codec::SNAPPY,
            Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
            Compression::None => Codec::UNCOMPRESSED,
        };
        let mut props = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(spec.row_group_rows))
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")));
        // Measurements, coordinates and times are nearly unique: a dictionary
        // only costs hashing until the writer gives up on it. Keep dictionaries
        // for strings, flags and small integers, where they pay.
        for f in file_schema.fields() {
            if matches!(f.data_type(), DataType::Float64 | DataType::Int64 | DataType::Timestamp(..)) {
                props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
            }
        }
        let props = props.build();
        Ok(ParquetSink {
            name: name.to_owned(),
            spec: spec.clone(),
            declared,
            file_schema,
            splitter,
            props,
            backend,
            open: BTreeMap::new(),
            epoch: 1,
            next_n: 0,
            committed: 0,
            held_rows: 0,
        })
    }

    /// The declared schema, partition columns included.
    pub fn schema(&self) -> &SchemaRef {
        &self.declared
    }

    /// Where the table lives (for DDL and messages).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    fn io(&self, message: String) -> SinkError {
        SinkError::Io { sink: self.name.clone(), message, retryable: false }
    }

    fn file_name(&self, n: u32) -> String {
        match self.spec.compression.file_infix() {
            Some(codec) => format!("part-{:08}-{n:04}.{codec}.parquet", self.epoch),
            None => format!("part-{:08}-{n:04}.parquet", self.epoch),
        }
    }

    async fn open_file(&mut self, dir: &str) -> Result<OpenFile, SinkError> {
        let name = self.file_name(self.next_n);
        self.next_n += 1;
        let key = if dir.is_empty() { name } else { format!("{dir}/{name}") };
        let staged = self.backend.create(&key).await.map_err(|e| backend_err(&self.name, e))?;
        let writer = ArrowWriter::try_new(Vec::new(), self.file_schema.clone(), Some(self.props.clone()))
            .map_err(|e| self.io(format!("cannot start {key}: {e}")))?;
        Ok(OpenFile { writer, staged, key, rows: 0, opened: Instant::now(), held: Vec::new(), held_rows: 0 })
    }

    async fn append(&mut self, dir: String, part: RecordBatch) -> Result<(), SinkError> {
        if !self.open.contains_key(&dir) {
            let f = self.open_file(&dir).await?;
            self.open.insert(dir.clone(), f);
        }
        let f = self.open.get_mut(&dir).expect("just opened");
        f.rows += part.num_rows() as u64;
        f.held_rows += part.num_rows();
        self.held_rows += part.num_rows();
        f.held.push(part);
        // Every encode may grow a writer, so the budget is checked after each
        // (checking only after the all-files encode missed the common case of
        // a few hundred partitions each reaching COALESCE_ROWS on its own).
        if f.held_rows >= COALESCE_ROWS {
            self.held_rows -= f.held_rows;
            encode_held(&self.name, f).await?;
            self.bound_buffers().await?;
        }
        if self.held_rows >= COALESCE_TOTAL_ROWS {
            self.encode_all_held().await?;
            self.bound_buffers().await?;
        }
        Ok(())
    }

    /// Keep the writers' memory under `max_buffer_bytes` by closing the
    /// largest row groups early. `memory_size` and not `in_progress_size`:
    /// the latter is the *encoded* size and leaves out the dictionary keys and
    /// hash tables, which with a few hundred open partitions were most of the
    /// memory (measured: 5M rows, 336 files, 457 MB RSS with an 8 MiB budget).
    async fn bound_buffers(&mut self) -> Result<(), SinkError> {
        let budget = self.spec.max_buffer_bytes.0 as usize;
        let mut total: usize = self.open.values().map(|f| f.writer.memory_size()).sum();
        if total <= budget {
            return Ok(());
        }
        let mut sizes: Vec<(usize, String)> = self.open.iter().map(|(k, f)| (f.writer.memory_size(), k.clone())).collect();
        sizes.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (size, dir) in sizes {
            if total <= budget / 2 {
                break;
            }
            let f = self.open.get_mut(&dir).expect("open file");
            f.writer.flush().map_err(|e| SinkError::Io { sink: self.name.clone(), message: format!("cannot flush {}: {e}", f.key), retryable: false })?;
            let bytes = std::mem::take(f.writer.inner_mut());
            f.staged.write(&bytes).await.map_err(|e| backend_err(&self.name, e))?;
            total -= size;
        }
        Ok(())
    }

    async fn encode_all_held(&mut self) -> Result<(), SinkError> {
        for f in self.open.values_mut() {
            encode_held(&self.name, f).await?;
        }
        self.held_rows = 0;
        Ok(())
    }

    fn parse_token(&self, token: &serde_json::Value) -> Result<ParquetToken, SinkError> {
        serde_json::from_value(token.clone()).map_err(|e| SinkError::Config {
            sink: self.name.clone(),
            message: format!("checkpoint token is not a parquet sink token ({e}): {token}"),
        })
    }

    async fn commit_files(&mut self, t: &ParquetToken) -> Result<(), SinkError> {
        // In bounded waves, so a checkpoint of thousands of files does not
        // start thousands of blocking tasks at once.
        for wave in t.files.chunks(64) {
            let commits = wave.iter().map(|p| self.backend.commit(p));
            futures::future::try_join_all(commits).await.map_err(|e| backend_err(&self.name, e))?;
            self.committed += wave.len() as u64;
        }
        Ok(())
    }
}

/// Encodes a file's held parts and hands completed row groups to the backend.
async fn encode_held(sink: &str, f: &mut OpenFile) -> Result<(), SinkError> {
    let encode_err = |key: &str, e: String| SinkError::Io {
        sink: sink.to_owned(),
        message: format!("cannot encode {key}: {e}"),
        retryable: false,
    };
    let held = std::mem::take(&mut f.held);
    f.held_rows = 0;
    let batch = match held.len() {
        0 => return Ok(()),
        1 => held.into_iter().next().expect("one"),
        _ => arrow::compute::concat_batches(&held[0].schema(), &held).map_err(|e| encode_err(&f.key, e.to_string()))?,
    };
    f.writer.write(&batch).map_err(|e| encode_err(&f.key, e.to_string()))?;
    // Completed row groups leave memory as soon as they exist.
    if f.writer.inner().len() >= DRAIN_BYTES {
        let bytes = std::mem::take(f.writer.inner_mut());
        f.staged.write(&bytes).await.map_err(|e| backend_err(sink, e))?;
    }
    Ok(())
}

#[async_trait]
impl Sink for ParquetSink {
    fn takes(&self) -> Format {
        Format::Arrow
    }

    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        // The runtime converts JSON first; a direct caller still works.
        let (arrow, mut refused, kept): (_, Vec<Refused>, Option<Vec<usize>>) = match &batch.data {
            BatchData::Arrow(b) => (b.clone(), Vec::new(), None),
            BatchData::Json(j) => {
                let (b, bad) = crate::convert::json_to_arrow_lenient(j).map_err(|e| self.io(e.to_string()))?;
                let kept = (!bad.is_empty()).then(|| {
                    let mut dropped = vec![false; j.len()];
                    bad.iter().for_each(|r| dropped[r.index] = true);
                    (0..j.len()).filter(|&i| !dropped[i]).collect()
                });
                (b, bad, kept)
            }
        };
        let conformed = conform::conform(&arrow, &self.declared).map_err(|e| self.io(e.to_string()))?;
        // Indexes are the input batch's, not the converted batch's.
        refused.extend(conformed.refused.into_iter().map(|mut r| {
            if let Some(k) = &kept {
                r.index = k[r.index];
            }
            r
        }));
        refused.sort_by_key(|r| r.index);
        let Some(good) = conformed.batch else {
            return Ok(Written { accepted: 0, refused });
        };
        let parts = self.splitter.split(&good).map_err(|e| self.io(e.to_string()))?;
        for part in parts {
            self.append(part.dir, part.batch).await?;
        }
        Ok(Written { accepted: good.num_rows(), refused })
    }

    async fn prepare(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError> {
        if !self.open.is_empty() && epoch != self.epoch {
            tracing::debug!(sink = %self.name, epoch, named = self.epoch,
                "files were named for another epoch than the barrier's; names stay unique");
        }
        self.encode_all_held().await?;
        let mut finishing = Vec::with_capacity(self.open.len());
        for (_, mut f) in std::mem::take(&mut self.open) {
            f.writer.finish().map_err(|e| self.io(format!("cannot finish {}: {e}", f.key)))?;
            let rest = std::mem::take(f.writer.inner_mut());
            f.staged.write(&rest).await.map_err(|e| backend_err(&self.name, e))?;
            finishing.push(f.staged.finish(f.rows));
        }
        // Concurrently: the syncs overlap (and S3 completes parts in parallel).
        let files = futures::future::try_join_all(finishing).await.map_err(|e| backend_err(&self.name, e))?;
        self.epoch = self.epoch.max(epoch) + 1;
        self.next_n = 0;
        tracing::debug!(sink = %self.name, epoch, files = files.len(), "parquet files staged");
        Ok(serde_json::to_value(ParquetToken { epoch, files }).expect("token serializes"))
    }

    async fn commit(&mut self, token: &serde_json::Value) -> Result<(), SinkError> {
        let t = self.parse_token(token)?;
        self.commit_files(&t).await
    }

    async fn recover(&mut self, token: Option<&serde_json::Value>) -> Result<(), SinkError> {
        // Anything open belongs to an epoch that will be replayed.
        self.open.clear();
        self.held_rows = 0;
        let files = match token {
            Some(token) => {
                let t = self.parse_token(token)?;
                self.commit_files(&t).await?;
                self.epoch = self.epoch.max(t.epoch + 1);
                t.files
            }
            None => Vec::new(),
        };
        self.next_n = 0;
        let removed = self.backend.cleanup_staged(&files).await.map_err(|e| backend_err(&self.name, e))?;
        if removed > 0 {
            tracing::info!(sink = %self.name, removed, "removed files staged after the last checkpoint (their records will be replayed)");
        }
        Ok(())
    }

    fn wants_checkpoint(&self) -> Option<String> {
        let max = self.spec.max_file_bytes.0 as usize;
        for f in self.open.values() {
            // Held parts are at most COALESCE_ROWS rows: left out of the estimate.
            let size = f.writer.bytes_written() + f.writer.in_progress_size();
            if size >= max {
                return Some(format!("{} reached {size} bytes (max_file_bytes {max})", f.key));
            }
        }
        let max_age = self.spec.max_file_age?.0;
        let oldest = self.open.values().map(|f| f.opened).min()?;
        (oldest.elapsed() >= max_age).then(|| format!("a file has been open for {:?} (max_file_age)", oldest.elapsed()))
    }

    fn committed_outputs(&self) -> u64 {
        self.committed
    }
}
