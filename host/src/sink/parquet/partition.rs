//! Splitting a batch by its Hive partition values. Rows are keyed with
//! arrow's row format (one compact byte string per row over the partition
//! columns), grouped, and each group is gathered with one `take`. A batch
//! that falls in a single partition — the common case for a time-ordered
//! stream — is passed through without copying.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Value Hive uses for a null partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Columns whose integer values are written with two digits (`month=03`).
const PADDED: [&str; 3] = ["month", "day", "hour"];

pub struct Part {
    /// `year=2016/month=03/...` (empty without partition columns).
    pub dir: String,
    /// The part's rows, projected to the file columns.
    pub batch: RecordBatch,
}

pub struct Splitter {
    /// Indexes of the partition columns in the declared schema.
    part_cols: Vec<usize>,
    /// Indexes of the columns written into files.
    file_cols: Vec<usize>,
    converter: Option<RowConverter>,
}

impl Splitter {
    pub fn new(part_cols: Vec<usize>, file_cols: Vec<usize>, types: &[DataType]) -> Result<Self, ArrowError> {
        let converter = if part_cols.is_empty() {
            None
        } else {
            Some(RowConverter::new(part_cols.iter().map(|&c| SortField::new(types[c].clone())).collect())?)
        };
        Ok(Splitter { part_cols, file_cols, converter })
    }

    /// The batch (in the declared schema) split into parts, in order of first appearance.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<Part>, ArrowError> {
        let projected = batch.project(&self.file_cols)?;
        let Some(converter) = &self.converter else {
            return Ok(vec![Part { dir: String::new(), batch: projected }]);
        };
        let cols: Vec<ArrayRef> = self.part_cols.iter().map(|&c| batch.column(c).clone()).collect();
        let rows = converter.convert_columns(&cols)?;

        let n = batch.num_rows();
        let mut groups: Vec<Vec<u32>> = Vec::new();
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut last: Option<(&[u8], usize)> = None;
        for i in 0..n {
            let key = rows.row(i).data();
            // Neighbouring rows usually share a partition: skip the hash then.
            let g = match last {
                Some((k, g)) if k == key => g,
                _ => *index.entry(key).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                }),
            };
            last = Some((key, g));
            groups[g].push(i as u32);
        }

        if groups.len() == 1 {
            let dir = self.dir_of(batch, 0)?;
            return Ok(vec![Part { dir, batch: projected }]);
        }
        // One gather for all groups, then zero-copy slices: per-group takes
        // cost a kernel call per column per group.
        let firsts: Vec<usize> = groups.iter().map(|g| g[0] as usize).collect();
        let lens: Vec<usize> = groups.iter().map(Vec::len).collect();
        let order = UInt32Array::from(groups.concat());
        let sorted = take_record_batch(&projected, &order)?;
        let mut parts = Vec::with_capacity(lens.len());
        let mut offset = 0;
        for (first, len) in firsts.into_iter().zip(lens) {
            parts.push(Part { dir: self.dir_of(batch, first)?, batch: sorted.slice(offset, len) });
            offset += len;
        }
        Ok(parts)
    }

    fn dir_of(&self, batch: &RecordBatch, row: usize) -> Result<String, ArrowError> {
        let schema = batch.schema();
        let mut dir = String::new();
        for &c in &self.part_cols {
            let name = schema.field(c).name();
            let col = batch.column(c);
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&escape(name));
            dir.push('=');
            dir.push_str(&value_text(name, col, row)?);
        }
        Ok(dir)
    }
}

fn value_text(name: &str, col: &ArrayRef, row: usize) -> Result<String, ArrowError> {
    if col.is_null(row) {
        return Ok(NULL_PARTITION.to_owned());
    }
    let int = match col.data_type() {
        DataType::Int32 => Some(col.as_primitive::<Int32Type>().value(row) as i64),
        DataType::Int64 => Some(col.as_primitive::<Int64Type>().value(row)),
        _ => None,
    };
    Ok(match int {
        Some(v) if PADDED.contains(&name) => format!("{v:02}"),
        Some(v) => v.to_string(),
        None => escape(&ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?.value(row).to_string()),
    })
}

/// Hive's path escaping: characters that would break a `name=value` path
/// segment become `%XX`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let special = c.is_ascii_control()
            || matches!(c, '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^');
        if special {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn rows_split_by_partition_values_in_order_of_appearance() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("month", DataType::Int32, true),
            Field::new("zone", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"])),
                Arc::new(Int32Array::from(vec![Some(3), Some(3), Some(4), None, Some(3)])),
                Arc::new(StringArray::from(vec!["x/y", "x/y", "x/y", "q", "x/y"])),
            ],
        )
        .unwrap();
        let types: Vec<DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
        let s = Splitter::new(vec![1, 2], vec![0], &types).unwrap();
        let parts = s.split(&batch).unwrap();
        let got: Vec<(String, Vec<String>)> = parts
            .iter()
            .map(|p| {
                assert_eq!(p.batch.num_columns(), 1);
                let ids = p.batch.column(0).as_string::<i32>().iter().map(|v| v.unwrap().to_owned()).collect();
                (p.dir.clone(), ids)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("month=03/zone=x%2Fy".to_owned(), vec!["a".to_owned(), "b".into(), "e".into()]),
                ("month=04/zone=x%2Fy".to_owned(), vec!["c".to_owned()]),
                (format!("month={NULL_PARTITION}/zone=q"), vec!["d".to_owned()]),
            ]
        );
        let none = Splitter::new(vec![], vec![0, 1, 2], &types).unwrap().split(&batch).unwrap();
        assert_eq!((none.len(), none[0].dir.as_str(), none[0].batch.num_rows()), (1, "", 5));
    }
}
