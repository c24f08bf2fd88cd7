//! The unit of work that flows through a pipeline: a batch of records in one
//! of the two wire formats of the WIT contract, plus per-record provenance.
//!
//! Provenance (`RecordMeta`) never crosses into a plugin: plugins return an
//! `origin` index per output record and the host re-attaches the metadata, so a
//! plugin cannot forge positions and sinks can always derive stable ids.

use std::sync::Arc;

use arrow::array::RecordBatch;
use compact_str::CompactString;

/// Where a batch came from: one source and one of its partitions (a file, a shard).
/// Every record of a batch shares it, which keeps per-record metadata small.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub source: Arc<str>,
    pub partition: Arc<str>,
}

/// Per-record provenance. `seq` is the record's position within its partition
/// (line number for files, sequence number for Kinesis) and `sub` its
/// sub-sequence (KPL aggregation); together with the partition they identify
/// a source record uniquely and deterministically across replays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    pub seq: CompactString,
    pub sub: u32,
    /// Kinesis partition key, when the source has one.
    pub key: Option<CompactString>,
    /// Approximate arrival time at the source (ms since epoch), when known.
    pub arrival_ms: Option<i64>,
}

impl RecordMeta {
    /// Metadata of a record identified by its line/ordinal in a partition.
    pub fn line(n: u64) -> Self {
        // The integer fast path, not the formatting machinery: once per record read.
        Self { seq: compact_str::ToCompactString::to_compact_string(&n), ..Default::default() }
    }
}

/// Records as one JSON document each in one buffer (WIT `format::json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonRecords {
    pub buf: Vec<u8>,
    /// n + 1 entries; record i is `buf[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u32>,
}

impl JsonRecords {
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(records + 1);
        offsets.push(0);
        Self { buf: Vec::with_capacity(bytes), offsets }
    }
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, i: usize) -> &[u8] {
        &self.buf[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
    /// Append one document. Offsets are u32 (the WIT type): a batch stays under 4 GiB.
    pub fn push(&mut self, doc: &[u8]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.buf.extend_from_slice(doc);
        self.offsets.push(self.buf.len() as u32);
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }
}

#[derive(Debug, Clone)]
pub enum BatchData {
    Json(JsonRecords),
    Arrow(RecordBatch),
}

/// The two formats of the WIT contract, as the host sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Arrow,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Arrow => "arrow",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub origin: Arc<Origin>,
    /// One entry per record, in record order.
    pub meta: Vec<RecordMeta>,
    pub data: BatchData,
}

impl Batch {
    /// A JSON batch of `docs` from `source`, partition `p`, records numbered
    /// from 0: the stand-in batch of unit tests and benchmarks.
    pub(crate) fn json_docs(source: &str, docs: &[&str]) -> Batch {
        let mut j = JsonRecords::default();
        docs.iter().for_each(|d| j.push(d.as_bytes()));
        Batch {
            origin: Arc::new(Origin { source: source.into(), partition: "p".into() }),
            meta: (0..docs.len() as u64).map(RecordMeta::line).collect(),
            data: BatchData::Json(j),
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
    pub fn format(&self) -> Format {
        match self.data {
            BatchData::Json(_) => Format::Json,
            BatchData::Arrow(_) => Format::Arrow,
        }
    }
    /// Approximate in-memory size, for byte-based batching and buffering limits.
    pub fn byte_size(&self) -> usize {
        match &self.data {
            BatchData::Json(j) => j.buf.len() + j.offsets.len() * 4,
            BatchData::Arrow(b) => b.get_array_memory_size(),
        }
    }
    /// Records `offset .. offset + len` as a batch of their own.
    pub fn slice(&self, offset: usize, len: usize) -> Batch {
        let data = match &self.data {
            BatchData::Arrow(b) => BatchData::Arrow(b.slice(offset, len)),
            BatchData::Json(j) => {
                let mut out = JsonRecords::with_capacity(len, 0);
                for i in offset..offset + len {
                    out.push(j.get(i));
                }
                BatchData::Json(out)
            }
        };
        Batch { origin: self.origin.clone(), meta: self.meta[offset..offset + len].to_vec(), data }
    }

    /// Metadata for the outputs of a transform, from its `origin` indexes
    /// (checked to be in range: panics otherwise). A plain map keeps the
    /// exact size, where collecting into a `Result` regrows the vector.
    pub fn meta_at(&self, origin: &[u32]) -> Vec<RecordMeta> {
        origin.iter().map(|&i| self.meta[i as usize].clone()).collect()
    }
}

/// Why one record of a batch was not processed: the one record-failure type.
/// Host conversions, sinks and (through `plugin::wire`) plugins report
/// failures as these; `dead_letter::DeadLetter::all` turns them into dead
/// letters with the records' provenance and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Index of the record in the batch it was rejected from.
    pub index: usize,
    /// Stable, machine-readable reason (`malformed`, `schema_mismatch`, ...).
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(index: usize, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { index, code: code.into(), message: message.into() }
    }
}
