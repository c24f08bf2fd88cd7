//! Parquet sink: Hive-partitioned files, local directory now, S3 as a backend later.
//!
//! Data of one epoch (between two checkpoints) goes to one open file per
//! partition, streamed to a staged object as row groups complete. At the
//! checkpoint barrier `prepare` closes every file (footer written, durable,
//! still invisible) and returns them as the token; `commit` makes them
//! visible once the checkpoint is stored. So a checkpoint is what rolls
//! files: `max_file_bytes` and `max_file_age` ask for an early one.
//!
//! File names are deterministic within a generation:
//! `part-{generation}-{epoch:08}-{n:04}.{codec}.parquet`, `n` counting the
//! epoch's files in the order their partitions first appeared. The
//! generation is chosen when the sink starts without a token, recorded in
//! every token and reused after recovery, so a re-committed epoch keeps its
//! names while a new or renamed sink (or a run after the checkpoint was
//! deleted) adds files next to committed ones and never replaces them. The
//! epoch is the one after the last prepared (or recovered) checkpoint; it is
//! fixed when a file opens because an S3 upload's key cannot change
//! afterwards.
//!
//! Without declared `columns` the table's schema comes from the data
//! (`schema.rs`) and is recorded in every token.
//!
//! A `write` or `prepare` that fails may have consumed part of the epoch's
//! data (taken buffers, closed files): the sink then refuses every further
//! `write` and `prepare` until `recover`, so a failure can only fail the run
//! (which restarts from the last checkpoint, discarding this generation's
//! later staged files), never return success with less data.

pub mod backend;
pub mod config;
mod conform;
mod ddl;
mod layout;
mod naming;
mod partition;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use self::backend::{Backend, BackendError, LocalBackend, Pending, Staged};
use self::config::ParquetSinkSpec;
pub use self::conform::SCHEMA_MISMATCH;
pub use self::ddl::athena_ddl;
use self::layout::Layout;
pub use self::partition::NULL_PARTITION;
// The S3 DLQ names its objects the same way.
pub(crate) use self::naming::new_generation;
pub(crate) use self::partition::escape as escape_partition;
pub use self::schema::RecordedColumn;
use super::{Sink, SinkError, Written};
use crate::batch::{Batch, BatchData, Format, Rejection};

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
    /// The generation the files are named after (absent in tokens of
    /// versions before generations: a new one is chosen then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// The schema fixed from the data (absent with declared `columns`, or
    /// before the first record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<RecordedColumn>>,
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
    /// `None` until the schema is known (no declared columns, no data yet).
    layout: Option<Layout>,
    backend: Box<dyn Backend>,
    generation: String,
    /// The backend holds this generation's marker.
    marked: bool,
    /// Why a `write` or `prepare` failed; cleared by `recover`.
    failed: Option<String>,
    /// Records written to Hive's default partition (a partition column
    /// absent or null), and whether that was logged yet.
    default_partition: u64,
    warned_default: bool,
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

/// The sink for `spec`. `path` is `s3://bucket/prefix` or a local directory, resolved against the
/// current working directory when relative (like every path the CLI takes;
/// `_base_dir`, the pipeline file's directory, is accepted so a later change
/// of that rule does not change the signature).
pub fn build(name: &str, spec: &ParquetSinkSpec, _base_dir: &Path) -> Result<ParquetSink, SinkError> {
    let config_err = |message: String| SinkError::Config { sink: name.to_owned(), message };
    spec.check().map_err(config_err)?;
    spec.check_path().map_err(config_err)?;
    let backend: Box<dyn Backend> = match crate::s3::S3Url::parse(&spec.path) {
        Ok(url) => {
            let keys = spec.s3();
            Box::new(backend::S3Backend::new(url, keys.client(), keys.objects(), &format!("sinks.{name}.path")))
        }
        Err(_) => Box::new(LocalBackend::new(&spec.path).map_err(|e| backend_err(name, e))?),
    };
    ParquetSink::with_backend(name, spec, backend)
}

fn backend_err(sink: &str, e: BackendError) -> SinkError {
    SinkError::Io { sink: sink.to_owned(), message: e.message, retryable: e.retryable }
}

impl ParquetSink {
    pub fn with_backend(name: &str, spec: &ParquetSinkSpec, backend: Box<dyn Backend>) -> Result<Self, SinkError> {
        let config_err = |message: String| SinkError::Config { sink: name.to_owned(), message };
        spec.check().map_err(config_err)?;
        let layout = spec.declared_schema().map(|d| Layout::new(spec, d)).transpose().map_err(config_err)?;
        Ok(ParquetSink {
            name: name.to_owned(),
            spec: spec.clone(),
            layout,
            backend,
            generation: naming::new_generation(),
            marked: false,
            failed: None,
            default_partition: 0,
            warned_default: false,
            open: BTreeMap::new(),
            epoch: 1,
            next_n: 0,
            committed: 0,
            held_rows: 0,
        })
    }

    /// The table's schema, partition columns included: the declared one, or
    /// the one fixed from the data (`None` before the first record).
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.layout.as_ref().map(|l| &l.declared)
    }

    /// Where the table lives (for DDL and messages).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    fn io(&self, message: String) -> SinkError {
        SinkError::Io { sink: self.name.clone(), message, retryable: false }
    }

    fn layout(&self) -> &Layout {
        self.layout.as_ref().expect("the schema is fixed before any file opens")
    }

    async fn open_file(&mut self, dir: &str) -> Result<OpenFile, SinkError> {
        let name = naming::file_name(&self.generation, self.epoch, self.next_n, self.spec.compression);
        self.next_n += 1;
        let key = if dir.is_empty() { name } else { format!("{dir}/{name}") };
        let staged = self.backend.create(&key).await.map_err(|e| backend_err(&self.name, e))?;
        let layout = self.layout();
        let writer = ArrowWriter::try_new(Vec::new(), layout.file_schema.clone(), Some(layout.props.clone()))
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
            drain(&self.name, f).await?;
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

    /// Fails when an earlier `write` or `prepare` failed (see the module doc).
    fn check_not_failed(&self, what: &str) -> Result<(), SinkError> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(self.io(format!(
                "cannot {what}: an earlier call failed ({why}) and may have consumed data of this epoch; the run must restart from the last checkpoint"
            ))),
        }
    }

    /// Remembers a failure and makes it final for the caller: a `write` or
    /// `prepare` is not safe to repeat.
    fn failing<T>(&mut self, r: Result<T, SinkError>) -> Result<T, SinkError> {
        r.map_err(|e| {
            self.failed = Some(e.to_string());
            match e {
                SinkError::Io { sink, message, .. } => SinkError::Io { sink, message, retryable: false },
                other => other,
            }
        })
    }

    /// Counts rows bound for Hive's default partition; says so once per sink.
    fn note_default_partition(&mut self, input: &RecordBatch, good: &RecordBatch) {
        let n = self.layout().default_partition_rows(good);
        if n == 0 {
            return;
        }
        self.default_partition += n as u64;
        if !self.warned_default {
            self.warned_default = true;
            let absent: Vec<&str> =
                self.spec.partition_by.iter().filter(|p| input.column_by_name(p).is_none()).map(String::as_str).collect();
            let why = if absent.is_empty() {
                "a partition column is null".to_owned()
            } else {
                format!("partition column(s) {} absent from the records", absent.join(", "))
            };
            tracing::warn!(sink = %self.name, records = n, partition_by = ?self.spec.partition_by,
                "{why}: records go to the {NULL_PARTITION} partition (counted as default_partition in the summary and metrics; said once)");
        }
    }

    async fn write_inner(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        // The runtime converts JSON first; a direct caller still works.
        let (arrow, mut refused, kept): (_, Vec<Rejection>, Option<Vec<usize>>) = match &batch.data {
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
        if arrow.num_rows() == 0 {
            return Ok(Written { accepted: 0, refused });
        }
        if self.layout.is_none() {
            let fixed = schema::from_data(&arrow.schema(), &self.spec.partition_by)
                .and_then(|d| Layout::new(&self.spec, d))
                .map_err(|message| SinkError::Config { sink: self.name.clone(), message: format!("the schema of the first batch does not make a table: {message}; declare `columns`") })?;
            tracing::info!(sink = %self.name, schema = %describe(&fixed.declared), "no columns declared: the table's schema is fixed from the first batch");
            self.layout = Some(fixed);
        }
        let from_data = self.spec.columns.is_none();
        let conformed =
            conform::conform(&arrow, &self.layout().declared, from_data).map_err(|e| self.io(e.to_string()))?;
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
        self.note_default_partition(&arrow, &good);
        let parts = self.layout().splitter.split(&good).map_err(|e| self.io(e.to_string()))?;
        for part in parts {
            self.append(part.dir, part.batch).await?;
        }
        Ok(Written { accepted: good.num_rows(), refused })
    }

    async fn prepare_inner(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError> {
        if !self.open.is_empty() && epoch != self.epoch {
            tracing::debug!(sink = %self.name, epoch, named = self.epoch,
                "files were named for another epoch than the barrier's; names stay unique");
        }
        // Before any token names this generation: from now on other runs
        // leave its staged files alone.
        if !self.marked {
            self.backend.mark_generation(&self.generation).await.map_err(|e| backend_err(&self.name, e))?;
            self.marked = true;
        }
        self.encode_all_held().await?;
        let mut finishing = Vec::with_capacity(self.open.len());
        for (_, mut f) in std::mem::take(&mut self.open) {
            f.writer.finish().map_err(|e| self.io(format!("cannot finish {}: {e}", f.key)))?;
            drain(&self.name, &mut f).await?;
            finishing.push(f.staged.finish(f.rows));
        }
        // Concurrently: the syncs overlap (and S3 completes parts in parallel).
        let files = futures::future::try_join_all(finishing).await.map_err(|e| backend_err(&self.name, e))?;
        self.epoch = self.epoch.max(epoch) + 1;
        self.next_n = 0;
        tracing::debug!(sink = %self.name, epoch, files = files.len(), "parquet files staged");
        let schema = match (&self.spec.columns, &self.layout) {
            (None, Some(l)) => Some(schema::record(&l.declared)),
            _ => None,
        };
        let token = ParquetToken { epoch, generation: Some(self.generation.clone()), schema, files };
        Ok(serde_json::to_value(token).expect("token serializes"))
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

    fn recorded_schema_err(&self, message: String) -> SinkError {
        SinkError::Config { sink: self.name.clone(), message: format!("the schema recorded in the checkpoint is unusable: {message}") }
    }

    /// Removes staged files no checkpoint will commit: this generation's
    /// (except `keep`, the last token's), those of generations that never
    /// prepared (no marker: no token can name them), and those named before
    /// generations existed. Staged files of other marked generations are left
    /// alone: another run's checkpoint may still commit them (a run whose
    /// checkpoint was deleted leaves its last uncommitted epoch behind as
    /// hidden files).
    async fn discard_stale(&mut self, keep: &[Pending]) -> Result<(), SinkError> {
        let err = |e| backend_err(&self.name, e);
        let staged = self.backend.staged().await.map_err(err)?;
        let marked = self.backend.generations().await.map_err(err)?;
        let (mut stale, mut left) = (Vec::new(), 0usize);
        for key in staged {
            if keep.iter().any(|p| p.key == key) {
                continue;
            }
            match naming::generation_of(&key) {
                Some(g) if g != self.generation && marked.iter().any(|m| m == g) => left += 1,
                _ => stale.push(key),
            }
        }
        self.backend.discard(&stale).await.map_err(err)?;
        if !stale.is_empty() {
            tracing::info!(sink = %self.name, removed = stale.len(), "removed files staged after the last checkpoint (their records will be replayed)");
        }
        if left > 0 {
            tracing::info!(sink = %self.name, left, "left staged files of other generations alone (another checkpoint may commit them)");
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
        drain(sink, f).await?;
    }
    Ok(())
}

/// Hands the writer's encoded bytes to the staged object. The buffer is taken
/// before the write: if the write fails the file is broken either way, and
/// the sink refuses further calls (see the module doc).
async fn drain(sink: &str, f: &mut OpenFile) -> Result<(), SinkError> {
    let bytes = std::mem::take(f.writer.inner_mut());
    f.staged.write(&bytes).await.map_err(|e| backend_err(sink, e))
}

/// `name: type, ...` for logs.
fn describe(schema: &arrow::datatypes::Schema) -> String {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl Sink for ParquetSink {
    fn takes(&self) -> Format {
        Format::Arrow
    }

    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        self.check_not_failed("write")?;
        let r = self.write_inner(batch).await;
        self.failing(r)
    }

    async fn prepare(&mut self, epoch: u64) -> Result<serde_json::Value, SinkError> {
        self.check_not_failed("prepare")?;
        let r = self.prepare_inner(epoch).await;
        self.failing(r)
    }

    async fn commit(&mut self, token: &serde_json::Value) -> Result<(), SinkError> {
        let t = self.parse_token(token)?;
        self.commit_files(&t).await
    }

    async fn recover(&mut self, token: Option<&serde_json::Value>) -> Result<(), SinkError> {
        // Anything open belongs to an epoch that will be replayed.
        self.open.clear();
        self.held_rows = 0;
        self.failed = None;
        let files = match token {
            Some(token) => {
                let t = self.parse_token(token)?;
                self.commit_files(&t).await?;
                self.epoch = self.epoch.max(t.epoch + 1);
                if let Some(g) = &t.generation {
                    // Same names as before the restart for the replayed epochs.
                    self.generation = g.clone();
                    self.marked = true;
                }
                if let (None, Some(cols)) = (&self.spec.columns, &t.schema) {
                    let declared = schema::restore(cols).map_err(|m| self.recorded_schema_err(m))?;
                    self.layout = Some(Layout::new(&self.spec, declared).map_err(|m| self.recorded_schema_err(m))?);
                }
                t.files
            }
            None => Vec::new(),
        };
        self.next_n = 0;
        self.discard_stale(&files).await
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

    fn default_partition_records(&self) -> u64 {
        self.default_partition
    }
}
