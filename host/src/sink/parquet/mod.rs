//! Parquet sink: Hive-partitioned files, local directory now, S3 as a backend later.
//!
//! One open file per partition, rolled by size (`max_file_bytes`), age
//! (`max_file_age`), the cap on open files (`max_open_files`, least recently
//! written first) or the end of the run — not by checkpoints. A checkpoint
//! closes each file's current writer into a durable *chunk* and records the
//! file (final key + chunks) in the token; a rolled file is its chunks
//! concatenated without re-encoding, staged at its final key and committed
//! after the next checkpoint (see `rolling.rs` and ARCHITECTURE.md,
//! invariant 3).
//!
//! File names are deterministic within a generation:
//! `part-{generation}-{epoch:08}-{n:04}.{codec}.parquet`, `n` counting the
//! files opened in an epoch in the order their partitions first appeared. The
//! generation is chosen when the sink starts without a token, recorded in
//! every token and reused after recovery, so a re-committed file keeps its
//! name while a new or renamed sink (or a run after the checkpoint was
//! deleted) adds files next to committed ones and never replaces them. The
//! epoch is the one after the last prepared (or recovered) checkpoint; it is
//! fixed when a file opens because an S3 upload's key cannot change
//! afterwards. A run resumed after a crash goes on writing the files the
//! checkpoint lists as open (new chunks), so a crash does not leave small
//! files behind.
//!
//! Without declared `columns` the table's schema comes from the data
//! (`schema.rs`) and is recorded in every token.
//!
//! With `[catalog] glue` the table is kept in the Glue Data Catalog
//! (`catalog.rs`): checked at startup, created or updated once the schema is
//! known, each new partition registered after its file is committed.
//!
//! A `write` or `prepare` that fails may have consumed part of the epoch's
//! data (taken buffers, closed files): the sink then refuses every further
//! `write` and `prepare` until `recover`, so a failure can only fail the run
//! (which restarts from the last checkpoint, discarding this generation's
//! later staged files and chunks), never return success with less data.

pub mod backend;
mod catalog;
mod concat;
pub mod config;
mod conform;
mod ddl;
mod layout;
mod naming;
mod partition;
mod rolling;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use self::backend::{Backend, BackendError, LocalBackend, Pending};
use self::config::ParquetSinkSpec;
pub use self::conform::SCHEMA_MISMATCH;
pub use self::ddl::{athena_ddl, athena_ddl_with, Projection};
use self::layout::Layout;
pub use self::partition::NULL_PARTITION;
// The S3 DLQ names its objects the same way.
pub(crate) use self::naming::{new_generation, stale};
pub(crate) use self::partition::escape as escape_partition;
use self::rolling::{OpenFile, OpenRecord};
pub use self::schema::RecordedColumn;
use super::{OpenFiles, Sink, SinkError, Written};
use crate::batch::{Batch, BatchData, Format, Rejection};

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
    /// Files rolled since the last checkpoint, staged at their final keys:
    /// `commit` makes them visible.
    pub files: Vec<Pending>,
    /// The chunks `files` were joined from, removed once they are visible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<String>,
    /// Files still open: the next run goes on writing them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<OpenRecord>,
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
    /// Random, in this sink's chunk keys: another process writing the same
    /// generation (a former owner paused past its lease) never replaces
    /// this one's chunks (see `naming::chunk_key`).
    writer: String,
    /// Why a `write` or `prepare` failed; cleared by `recover`.
    failed: Option<String>,
    /// Records written to Hive's default partition (a partition column
    /// absent or null), and whether that was logged yet.
    default_partition: u64,
    warned_default: bool,
    /// Open files by partition directory.
    open: BTreeMap<String, OpenFile>,
    /// Files rolled since the last `prepare` (finished, staged) and their
    /// chunks: the next token's `files` and `merged`.
    rolled: Vec<Pending>,
    merged: Vec<String>,
    /// The next `prepare` is the run's last: it rolls every file.
    finishing: bool,
    /// Counts `append` calls (for the least recently written file).
    writes: u64,
    /// Files finished early because `max_open_files` were open, the most
    /// open at once, and whether the cap was warned about.
    finished_early: u64,
    open_peak: u64,
    warned_cap: bool,
    /// The epoch new files are named after.
    epoch: u64,
    /// Files opened in `epoch` so far.
    next_n: u32,
    committed: u64,
    /// Rows held in all open files' `held` buffers.
    held_rows: usize,
    catalog: Option<catalog::GlueCatalog>,
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

/// A conflicting catalog is a configuration error; a failed call fails the
/// run (see `catalog.rs` for why that loses nothing).
fn catalog_err(sink: &str, e: catalog::CatalogError) -> SinkError {
    match e {
        catalog::CatalogError::Conflict { .. } => SinkError::Config { sink: sink.to_owned(), message: e.to_string() },
        catalog::CatalogError::Call { .. } => SinkError::Io { sink: sink.to_owned(), message: e.to_string(), retryable: false },
    }
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
            writer: naming::new_writer_id(),
            failed: None,
            default_partition: 0,
            warned_default: false,
            open: BTreeMap::new(),
            rolled: Vec::new(),
            merged: Vec::new(),
            finishing: false,
            writes: 0,
            finished_early: 0,
            open_peak: 0,
            warned_cap: false,
            epoch: 1,
            next_n: 0,
            committed: 0,
            held_rows: 0,
            catalog: spec.catalog.as_ref().map(|c| catalog::GlueCatalog::new(&c.glue, spec)),
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

    fn new_file(&mut self, dir: &str) -> OpenFile {
        let name = naming::file_name(&self.generation, self.epoch, self.next_n, self.spec.compression);
        self.next_n += 1;
        OpenFile::new(if dir.is_empty() { name } else { format!("{dir}/{name}") })
    }

    async fn append(&mut self, dir: String, part: RecordBatch) -> Result<(), SinkError> {
        self.writes += 1;
        if !self.open.contains_key(&dir) {
            self.make_room().await?;
            let f = self.new_file(&dir);
            self.open.insert(dir.clone(), f);
            self.open_peak = self.open_peak.max(self.open.len() as u64);
        }
        let layout = self.layout.as_ref().expect("the schema is fixed before any file opens");
        let f = self.open.get_mut(&dir).expect("just opened");
        f.last_write = self.writes;
        let n = part.num_rows();
        let held = f.hold(&self.name, layout, self.epoch, &self.writer, part)?;
        self.held_rows += n;
        // Every encode may grow a writer, so the budget is checked after each
        // (checking only after the all-files encode missed the common case of
        // a few hundred partitions each reaching COALESCE_ROWS on its own).
        // Near `max_file_bytes` the held rows are encoded early, so the file
        // rolls within one part of the limit, not one COALESCE_ROWS later.
        if held >= COALESCE_ROWS || f.projected_size() >= self.spec.max_file_bytes.0 {
            self.held_rows -= held;
            rolling::encode_held(&self.name, self.backend.as_ref(), f).await?;
            // The in-progress row group is an estimate (it can exceed what
            // it compresses to): close it before deciding, so a rolled file
            // is never under the limit it rolled at.
            if f.size() >= self.spec.max_file_bytes.0 {
                rolling::flush(&self.name, self.backend.as_ref(), f).await?;
            }
            if f.size() >= self.spec.max_file_bytes.0 {
                self.roll(vec![dir]).await?;
            }
            self.bound_buffers().await?;
        }
        if self.held_rows >= COALESCE_TOTAL_ROWS {
            self.encode_all_held().await?;
            self.roll_big().await?;
            self.bound_buffers().await?;
        }
        Ok(())
    }

    /// Before opening a file: past `max_open_files`, finish the least
    /// recently written ones. A sixteenth of the cap at once, so their syncs
    /// overlap instead of costing one round trip per new partition.
    async fn make_room(&mut self) -> Result<(), SinkError> {
        let cap = self.spec.max_open_files;
        if self.open.len() < cap {
            return Ok(());
        }
        if !self.warned_cap {
            self.warned_cap = true;
            tracing::warn!(sink = %self.name, partition_by = ?self.spec.partition_by, max_open_files = cap,
                "more partitions are being written than max_open_files: the least recently written files are finished early (smaller files; counted as files_finished_early in the summary and metrics; said once)");
        }
        let mut by_age: Vec<(u64, String)> = self.open.iter().map(|(d, f)| (f.last_write, d.clone())).collect();
        by_age.sort_unstable();
        let evict: Vec<String> = by_age.into_iter().take((cap / 16).max(1)).map(|(_, d)| d).collect();
        self.finished_early += evict.len() as u64;
        self.roll(evict).await
    }

    /// Rolls every file that reached `max_file_bytes`.
    async fn roll_big(&mut self) -> Result<(), SinkError> {
        let max = self.spec.max_file_bytes.0;
        let big: Vec<String> = self.open.iter().filter(|(_, f)| f.size() >= max).map(|(d, _)| d.clone()).collect();
        self.roll(big).await
    }

    /// Finishes these open files: joined, staged at their final keys,
    /// committed after the next checkpoint.
    async fn roll(&mut self, dirs: Vec<String>) -> Result<(), SinkError> {
        if dirs.is_empty() {
            return Ok(());
        }
        let layout = self.layout.as_ref().expect("files are open, so the schema is fixed");
        let mut rolling = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let f = self.open.remove(&dir).expect("an open file");
            rolling.push((f.key.clone(), rolling::roll(&self.name, self.backend.as_ref(), layout, f).await?));
        }
        // Concurrently: the syncs overlap (and S3 completes parts in parallel).
        let mut finishing = Vec::with_capacity(rolling.len());
        for (key, r) in rolling {
            self.merged.extend(r.chunks);
            tracing::debug!(sink = %self.name, %key, rows = r.rows, "file rolled");
            finishing.push(r.staged.finish(r.rows));
        }
        let files = futures::future::try_join_all(finishing).await.map_err(|e| backend_err(&self.name, e))?;
        self.rolled.extend(files);
        Ok(())
    }

    /// Keep the writers' memory under `max_buffer_bytes` by closing the
    /// largest row groups early. `memory_size` and not `in_progress_size`:
    /// the latter is the *encoded* size and leaves out the dictionary keys and
    /// hash tables, which with a few hundred open partitions were most of the
    /// memory (measured: 5M rows, 336 files, 457 MB RSS with an 8 MiB budget).
    async fn bound_buffers(&mut self) -> Result<(), SinkError> {
        let budget = self.spec.max_buffer_bytes.0 as usize;
        let mem = |f: &OpenFile| f.cur.as_ref().map_or(0, |c| c.writer.memory_size());
        let mut total: usize = self.open.values().map(mem).sum();
        if total <= budget {
            return Ok(());
        }
        let mut sizes: Vec<(usize, String)> = self.open.iter().map(|(k, f)| (mem(f), k.clone())).collect();
        sizes.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (size, dir) in sizes {
            if total <= budget / 2 {
                break;
            }
            let f = self.open.get_mut(&dir).expect("open file");
            rolling::flush(&self.name, self.backend.as_ref(), f).await?;
            total -= size;
        }
        Ok(())
    }

    async fn encode_all_held(&mut self) -> Result<(), SinkError> {
        for f in self.open.values_mut() {
            rolling::encode_held(&self.name, self.backend.as_ref(), f).await?;
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
        // Roll what is due; the rest stays open, its interval closed into a chunk.
        let max_bytes = self.spec.max_file_bytes.0;
        let max_age = self.spec.max_file_age.map(|d| d.0.as_millis() as u64);
        let finishing = std::mem::take(&mut self.finishing);
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, f)| finishing || f.size() >= max_bytes || max_age.is_some_and(|a| f.age_ms() >= a))
            .map(|(d, _)| d.clone())
            .collect();
        self.roll(due).await?;
        let mut closing = Vec::new();
        for (dir, f) in self.open.iter_mut() {
            if let Some(c) = rolling::close_current(&self.name, self.backend.as_ref(), f).await? {
                f.data_bytes += c.data_bytes();
                closing.push((dir.clone(), c));
            }
        }
        let backend = self.backend.as_ref();
        let chunks = futures::future::try_join_all(
            closing.into_iter().map(|(dir, c)| async move { rolling::finish_chunk(backend, c).await.map(|p| (dir, p)) }),
        )
        .await
        .map_err(|e| backend_err(&self.name, e))?;
        for (dir, p) in chunks {
            self.open.get_mut(&dir).expect("open file").chunks.push(p);
        }
        self.epoch = self.epoch.max(epoch) + 1;
        self.next_n = 0;
        let files = std::mem::take(&mut self.rolled);
        let merged = std::mem::take(&mut self.merged);
        let open: Vec<OpenRecord> = self.open.values().map(OpenFile::record).collect();
        tracing::debug!(sink = %self.name, epoch, files = files.len(), open = open.len(), "parquet files staged");
        let schema = match (&self.spec.columns, &self.layout) {
            (None, Some(l)) => Some(schema::record(&l.declared)),
            _ => None,
        };
        let token = ParquetToken { epoch, generation: Some(self.generation.clone()), schema, files, merged, open };
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
        // Only once the files are visible: until then a recovery may need
        // them to join the files again.
        self.backend.discard(&t.merged).await.map_err(|e| backend_err(&self.name, e))?;
        // Only once the files are visible, so a partition never lists nothing.
        if let (Some(c), Some(l)) = (self.catalog.as_mut(), self.layout.as_ref()) {
            let location = catalog::location_url(&self.backend.location());
            let keys = t.files.iter().map(|p| p.key.as_str());
            c.register(&l.declared, &location, keys).await.map_err(|e| catalog_err(&self.name, e))?;
        }
        Ok(())
    }

    /// Checks (and with a known schema, creates or updates) the catalog
    /// table before anything is committed.
    async fn start_catalog(&mut self) -> Result<(), SinkError> {
        let Some(c) = self.catalog.as_mut() else { return Ok(()) };
        let location = catalog::location_url(&self.backend.location());
        let schema = self.layout.as_ref().map(|l| l.declared.as_ref());
        c.start(schema, &location).await.map_err(|e| catalog_err(&self.name, e))
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
    async fn discard_stale(&mut self, keep: &[&str]) -> Result<(), SinkError> {
        let err = |e| backend_err(&self.name, e);
        let staged = self.backend.staged().await.map_err(err)?;
        let marked = self.backend.generations().await.map_err(err)?;
        let (stale, left) = naming::stale(staged, keep, &self.generation, &marked);
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

/// The table's schema recorded in a checkpoint token of this sink (`None`:
/// the token has none — the sink declares `columns`, or saw no record yet).
pub fn schema_of_token(token: &serde_json::Value) -> Result<Option<SchemaRef>, String> {
    let t: ParquetToken = serde_json::from_value(token.clone()).map_err(|e| format!("not a parquet sink token: {e}"))?;
    t.schema.map(|cols| schema::restore(&cols)).transpose()
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
        // What is open now belongs to epochs that will be replayed; the
        // token's open files are continued.
        self.open.clear();
        self.rolled.clear();
        self.merged.clear();
        self.finishing = false;
        self.held_rows = 0;
        self.failed = None;
        let open = match token {
            Some(token) => {
                let t = self.parse_token(token)?;
                // The schema first: committing registers partitions in the catalog.
                if let (None, Some(cols)) = (&self.spec.columns, &t.schema) {
                    let declared = schema::restore(cols).map_err(|m| self.recorded_schema_err(m))?;
                    self.layout = Some(Layout::new(&self.spec, declared).map_err(|m| self.recorded_schema_err(m))?);
                }
                self.start_catalog().await?;
                self.commit_files(&t).await?;
                self.epoch = self.epoch.max(t.epoch + 1);
                if let Some(g) = &t.generation {
                    // Same names as before the restart for the replayed epochs.
                    self.generation = g.clone();
                    self.marked = true;
                }
                t.open
            }
            None => {
                self.start_catalog().await?;
                Vec::new()
            }
        };
        self.next_n = 0;
        let keep: Vec<String> = open.iter().flat_map(|r| r.chunks.iter().map(|c| c.key.clone())).collect();
        for r in open {
            let f = OpenFile::restore(r);
            self.open.insert(f.dir().to_owned(), f);
        }
        self.open_peak = self.open_peak.max(self.open.len() as u64);
        self.discard_stale(&keep.iter().map(String::as_str).collect::<Vec<_>>()).await
    }

    fn finishing(&mut self) {
        self.finishing = true;
    }

    fn open_files(&self) -> OpenFiles {
        OpenFiles { peak: self.open_peak, finished_early: self.finished_early }
    }

    fn wants_checkpoint(&self) -> Option<String> {
        // Size rolls a file as soon as it is reached; age is checked at
        // checkpoints, so an old file asks for one.
        let max_age = self.spec.max_file_age?.0.as_millis() as u64;
        let oldest = self.open.values().map(|f| f.age_ms()).max()?;
        (oldest >= max_age).then(|| format!("a file has been open for {oldest} ms (max_file_age)"))
    }

    fn committed_outputs(&self) -> u64 {
        self.committed
    }

    fn default_partition_records(&self) -> u64 {
        self.default_partition
    }
}
