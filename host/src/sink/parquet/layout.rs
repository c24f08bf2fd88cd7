//! What the sink derives from the table's schema once it is known (declared
//! at build, or fixed from the first batch): the columns written into files,
//! the partition splitter and the writer properties.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::config::{Compression, ParquetSinkSpec};
use super::partition::Splitter;

pub struct Layout {
    /// The table's schema, partition columns included.
    pub declared: SchemaRef,
    /// The columns stored in files.
    pub file_schema: SchemaRef,
    pub splitter: Splitter,
    pub props: WriterProperties,
    /// Indexes of the partition columns in `declared`.
    part_cols: Vec<usize>,
}

impl Layout {
    pub fn new(spec: &ParquetSinkSpec, declared: SchemaRef) -> Result<Self, String> {
        let part_cols: Vec<usize> = spec
            .partition_by
            .iter()
            .map(|p| declared.index_of(p).map_err(|_| format!("partition_by column {p:?} is not in the table's schema")))
            .collect::<Result<_, _>>()?;
        let file_cols: Vec<usize> =
            (0..declared.fields().len()).filter(|c| spec.keep_partition_columns || !part_cols.contains(c)).collect();
        if file_cols.is_empty() {
            return Err("every column is a partition column: the files would have no data columns".into());
        }
        let file_schema =
            Arc::new(Schema::new(file_cols.iter().map(|&c| declared.field(c).clone()).collect::<Vec<_>>()));
        let types: Vec<_> = declared.fields().iter().map(|f| f.data_type().clone()).collect();
        let splitter = Splitter::new(part_cols.clone(), file_cols, &types).map_err(|e| e.to_string())?;
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
        Ok(Layout { declared, file_schema, splitter, props: props.build(), part_cols })
    }

    /// Rows of `batch` (in the declared schema) with a null partition value,
    /// which Hive puts in its default partition.
    pub fn default_partition_rows(&self, batch: &RecordBatch) -> usize {
        let cols: Vec<&dyn Array> =
            self.part_cols.iter().map(|&c| batch.column(c).as_ref()).filter(|c| c.null_count() > 0).collect();
        match cols.as_slice() {
            [] => 0,
            [one] => one.null_count(),
            many => (0..batch.num_rows()).filter(|&i| many.iter().any(|c| c.is_null(i))).count(),
        }
    }
}
