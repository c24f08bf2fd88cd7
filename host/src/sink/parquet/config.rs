//! `type = "parquet"` sink settings.
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use std::collections::BTreeMap;

use crate::config::units::{ByteSize, Dur};
use crate::s3::{S3Keys, S3Url, Sse};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkSpec {
    pub inputs: Vec<String>,
    /// Root of the table: a local directory (relative to the working
    /// directory) or `s3://bucket/prefix`.
    pub path: String,
    /// Hive partition columns, in directory order (`year=2016/month=03/...`).
    /// Default: none (one directory).
    #[serde(default)]
    pub partition_by: Vec<String>,
    #[serde(default)]
    pub compression: Compression,
    /// Rows per row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// An open file rolls (is finished, and committed at the next
    /// checkpoint) as soon as its estimated size passes this.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: ByteSize,
    /// At most this many files are open (one per partition being written);
    /// past it the least recently written are finished early.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// Memory for row groups being built across all open files. Past it the
    /// biggest ones are written out early (smaller row groups, bounded RSS:
    /// with hundreds of open partitions a full row group each would not fit).
    #[serde(default = "default_max_buffer_bytes")]
    pub max_buffer_bytes: ByteSize,
    /// A file this old rolls at the next checkpoint (the sink asks for one).
    /// Default five minutes (Firehose's default buffer interval).
    #[serde(default = "default_max_file_age")]
    pub max_file_age: Option<Dur>,
    /// Also keep the partition columns inside the files (Hive drops them:
    /// their values are in the directory names).
    #[serde(default)]
    pub keep_partition_columns: bool,
    /// The declared schema; rows that do not fit it go to the DLQ.
    /// Default: none declared — the schema is taken from the data (see
    /// `schema.rs`), fixed at the first batch and kept in the checkpoint.
    #[serde(default)]
    pub columns: Option<Vec<ColumnSpec>>,
    /// `[sinks.X.catalog]`: keep a table in a data catalog in step with the
    /// files (see `catalog.rs`). Default: none.
    #[serde(default)]
    pub catalog: Option<CatalogSpec>,
    /// S3 only: the bucket's region (default: the AWS configuration's).
    #[serde(default)]
    pub region: Option<String>,
    /// S3 only: another endpoint (LocalStack, MinIO), with path-style
    /// addressing. Default: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 only: server-side encryption, `AES256` (SSE-S3) or `aws:kms`.
    #[serde(default)]
    pub sse: Option<Sse>,
    /// S3 only: the KMS key for `sse = "aws:kms"` (default: the account's S3 key).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// S3 only: `STANDARD`, `STANDARD_IA`, `INTELLIGENT_TIERING`, ...
    #[serde(default)]
    pub storage_class: Option<String>,
    /// S3 only: object tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `[sinks.X.catalog]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSpec {
    pub glue: GlueSpec,
}

/// `glue = { database = "...", table = "..." }`: the Glue Data Catalog table
/// of the sink. The database must exist; the table is created or updated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlueSpec {
    pub database: String,
    pub table: String,
    /// Default: the AWS chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Default: the AWS chain (`AWS_ENDPOINT_URL_GLUE`, `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl GlueSpec {
    /// Names Athena can query (Glue lowercases them; Athena refuses others).
    fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, what, name) in
            [("catalog.glue.database", "database", &self.database), ("catalog.glue.table", "table", &self.table)]
        {
            let ok = !name.is_empty()
                && name.len() <= 255
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err((key, format!("Glue {what} name {name:?} must be 1-255 lowercase letters, digits or underscores")));
            }
        }
        if let Some(ep) = self.endpoint.as_deref().filter(|e| !e.starts_with("http://") && !e.starts_with("https://")) {
            return Err(("catalog.glue.endpoint", format!("endpoint {ep:?} must be an http:// or https:// URL")));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Snappy,
    Zstd,
    None,
}

impl Compression {
    /// The codec infix of file names (`part-...snappy.parquet`); none for
    /// uncompressed files, as Spark and Firehose name them.
    pub fn file_infix(self) -> Option<&'static str> {
        match self {
            Compression::Snappy => Some("snappy"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }
    /// The `parquet.compression` table property.
    pub fn table_property(self) -> &'static str {
        match self {
            Compression::Snappy => "SNAPPY",
            Compression::Zstd => "ZSTD",
            Compression::None => "UNCOMPRESSED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// A row with this column null or absent is refused (`schema_mismatch`).
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Int32,
    Int64,
    Float64,
    Bool,
    /// Milliseconds, UTC.
    Timestamp,
    Date,
}

impl ColumnType {
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
        }
    }
}

fn default_row_group_rows() -> usize {
    128 * 1024
}
fn default_max_file_bytes() -> ByteSize {
    ByteSize(128 << 20)
}
fn default_max_open_files() -> usize {
    1000
}
fn default_max_file_age() -> Option<Dur> {
    Some(Dur(std::time::Duration::from_secs(300)))
}
fn default_max_buffer_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

impl ParquetSinkSpec {
    pub fn s3(&self) -> S3Keys {
        S3Keys {
            // `endpoint = "${VAR:-}"` unset is no override.
            region: self.region.clone().filter(|s| !s.is_empty()),
            endpoint: self.endpoint.clone().filter(|s| !s.is_empty()),
            sse: self.sse,
            kms_key_id: self.kms_key_id.clone(),
            storage_class: self.storage_class.clone(),
            tags: self.tags.clone(),
        }
    }

    /// The declared schema, every column included; `required` columns are
    /// non-nullable. `None` when the schema is to be taken from the data.
    pub fn declared_schema(&self) -> Option<SchemaRef> {
        let cols = self.columns.as_ref()?;
        let fields: Vec<Field> = cols.iter().map(|c| Field::new(&c.name, c.ty.arrow(), !c.required)).collect();
        Some(Arc::new(Schema::new(fields)))
    }

    /// Whether `build` can write to `path` (pure: nothing is created).
    pub fn check_path(&self) -> Result<(), String> {
        if self.path.trim().is_empty() {
            return Err("is empty; name the table's root directory".into());
        }
        if self.path.starts_with("s3://") {
            S3Url::parse(&self.path)?;
        }
        Ok(())
    }

    /// Checks that cannot be expressed in serde: names exist and are unique.
    /// Without declared columns the partition columns are checked against
    /// the data's schema when it is fixed (see `schema::from_data`).
    pub fn check(&self) -> Result<(), String> {
        self.check_keyed().map_err(|(_, message)| message)
    }

    /// [`check`](Self::check), with the key of the table the problem is
    /// about (`None`: the table as a whole), for `file:line: key` errors.
    pub fn check_keyed(&self) -> Result<(), (Option<&'static str>, String)> {
        if self.max_open_files == 0 {
            return Err((Some("max_open_files"), "max_open_files must be positive".into()));
        }
        if self.row_group_rows == 0 {
            return Err((Some("row_group_rows"), "row_group_rows must be positive".into()));
        }
        self.s3().check(&self.path)?;
        for (i, p) in self.partition_by.iter().enumerate() {
            if self.partition_by[..i].contains(p) {
                return Err((Some("partition_by"), format!("partition_by column {p:?} is listed twice")));
            }
        }
        if let Some(c) = &self.catalog {
            c.glue.check().map_err(|(key, message)| (Some(key), message))?;
        }
        let Some(cols) = &self.columns else { return Ok(()) };
        if cols.is_empty() {
            return Err((Some("columns"), "columns must declare at least one column".into()));
        }
        for (i, c) in cols.iter().enumerate() {
            if cols[..i].iter().any(|o| o.name == c.name) {
                return Err((None, format!("column {:?} is declared twice", c.name)));
            }
        }
        for p in &self.partition_by {
            if !cols.iter().any(|c| &c.name == p) {
                return Err((
                    Some("partition_by"),
                    format!(
                        "partition_by column {p:?} is not among the declared columns ({})",
                        cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if !self.keep_partition_columns && cols.iter().all(|c| self.partition_by.contains(&c.name)) {
            return Err((None, "every column is a partition column: the files would have no data columns".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_inline_columns_parse() {
        let spec: ParquetSinkSpec = toml::from_str(r#"inputs = ["enrich"]
path = "out/trips""#)
        .unwrap();
        // No taxi defaults: no partitions, the schema comes from the data.
        assert!(spec.partition_by.is_empty());
        assert!(spec.columns.is_none() && spec.declared_schema().is_none());
        assert_eq!(spec.compression, Compression::Snappy);
        assert_eq!(spec.max_file_bytes, ByteSize(128 << 20));
        assert_eq!(spec.row_group_rows, 131_072);
        spec.check().unwrap();

        let spec: ParquetSinkSpec = toml::from_str(
            r#"inputs = ["a"]
path = "x"
partition_by = ["day"]
compression = "zstd"
max_file_bytes = "64MiB"
max_file_age = "5m"
columns = [ { name = "id", type = "string", required = true }, { name = "day", type = "date" } ]"#,
        )
        .unwrap();
        assert_eq!(spec.max_file_bytes, ByteSize(64 << 20));
        let declared = spec.declared_schema().unwrap();
        assert_eq!(declared.fields().len(), 2);
        assert_eq!(declared.field(1).data_type(), &DataType::Date32);
        assert!(!declared.field(0).is_nullable() && declared.field(1).is_nullable());
        spec.check().unwrap();

        let e = toml::from_str::<ParquetSinkSpec>("inputs = []\npath = \"x\"\ncompresion = \"zstd\"").unwrap_err();
        assert!(e.to_string().contains("compresion"), "{e}");
        let bad: ParquetSinkSpec = toml::from_str(
            "inputs = []\npath = \"x\"\npartition_by = [\"nope\"]\ncolumns = [ { name = \"id\", type = \"string\" } ]",
        )
        .unwrap();
        assert!(bad.check().unwrap_err().contains("nope"));
        // Without declared columns a partition column is checked against the data later.
        let later: ParquetSinkSpec = toml::from_str("inputs = []\npath = \"x\"\npartition_by = [\"nope\"]").unwrap();
        later.check().unwrap();
    }

    #[test]
    fn glue_catalog_keys_are_checked() {
        let spec = |glue: &str| toml::from_str::<ParquetSinkSpec>(&format!("inputs = []\npath = \"x\"\n[catalog]\nglue = {glue}"));
        let ok = spec(r#"{ database = "lake", table = "trips_2", endpoint = "http://127.0.0.1:5000" }"#).unwrap();
        assert_eq!(ok.catalog.as_ref().unwrap().glue.table, "trips_2");
        ok.check().unwrap();
        let key = |glue: &str| spec(glue).unwrap().check_keyed().unwrap_err().0;
        assert_eq!(key(r#"{ database = "Lake", table = "t" }"#), Some("catalog.glue.database"));
        assert_eq!(key(r#"{ database = "lake", table = "" }"#), Some("catalog.glue.table"));
        assert_eq!(key(r#"{ database = "lake", table = "t", endpoint = "localhost:5000" }"#), Some("catalog.glue.endpoint"));
        assert!(spec(r#"{ database = "lake", tabel = "t" }"#).unwrap_err().to_string().contains("tabel"));
    }
}
