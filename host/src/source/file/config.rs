//! `[sources.NAME] type = "file"`: the keys of the file source.

use serde::{Deserialize, Serialize};

use super::typing::ColumnType;
use crate::config::units::ByteSize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Ndjson,
}

/// One declared column: `{ name = "arr_delay", type = "float64" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceSpec {
    pub path: String,
    /// Default: from the extension (`.csv`, else NDJSON).
    pub format: Option<FileFormat>,
    /// CSV: types of named columns; the others are inferred.
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
    /// CSV: rows read (from the start of the file) to infer the types of
    /// undeclared columns; 0 keeps them strings.
    #[serde(default = "default_infer_rows")]
    pub infer_rows: usize,
    /// CSV: a quoted field may span lines. Off by default, so one stray
    /// quote costs one line, not the rest of the file.
    #[serde(default)]
    pub multiline: bool,
    /// A longer record (line) goes to the DLQ with its size and its first
    /// KiB instead of being parsed. Default 1 MiB (Kinesis's record limit).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: ByteSize,
    /// Read at most this many records (lines) per second, e.g. to replay a
    /// file as a live stream. Absent: as fast as the pipeline takes them.
    #[serde(default)]
    pub max_records_per_second: Option<std::num::NonZeroU64>,
}

pub const DEFAULT_INFER_ROWS: usize = 1000;

fn default_infer_rows() -> usize {
    DEFAULT_INFER_ROWS
}
fn default_max_record_bytes() -> ByteSize {
    ByteSize(1 << 20)
}

impl FileSourceSpec {
    pub fn format(&self) -> FileFormat {
        self.format.unwrap_or(if self.path.to_ascii_lowercase().ends_with(".csv") {
            FileFormat::Csv
        } else {
            FileFormat::Ndjson
        })
    }
}
