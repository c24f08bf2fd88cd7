//! The table's schema when no `columns` are declared: taken from the data.
//!
//! The first batch fixes it (one schema per table, so every file reads with
//! the same types) and every token records it, so a restart keeps it instead
//! of guessing again from whatever batch comes first. Later batches are
//! fitted to it like to a declared schema; rows that do not fit go to the DLQ.
//!
//! Rules, chosen for what a user of JSON data expects:
//! - every column is nullable (the data says nothing about "required");
//! - numbers of JSON documents become `Float64`: JSON has one number type,
//!   and a column that is `1` in the first batch and `1.5` in a later one
//!   must not send the later records to the DLQ (declare `columns` to store
//!   integers). Partition columns are the exception: integral in the first
//!   batch they stay `Int64` (`year=2016`, not `year=2016.0`). Typed Arrow
//!   input (plugins, typed sources) keeps its types;
//! - a column that is null in every row of the first batch becomes a string
//!   column (its type is unknown; text holds any later value);
//! - a `partition_by` column missing from the first batch is added as a
//!   string column (its rows go to `__HIVE_DEFAULT_PARTITION__`, counted).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::convert;

/// One column of a schema as recorded in a checkpoint token (the Arrow type
/// in its display form, which `DataType::from_str` reads back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
}

/// The schema fixed from the first batch `data`.
pub fn from_data(data: &Schema, partition_by: &[String]) -> Result<SchemaRef, String> {
    let from_json = data.metadata().get(convert::INFERRED_FROM).is_some_and(|v| v == "json");
    let mut fields: Vec<Field> = data
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::Null => DataType::Utf8,
                DataType::Int64 if from_json && !partition_by.contains(f.name()) => DataType::Float64,
                t => t.clone(),
            };
            Field::new(f.name(), ty, true)
        })
        .collect();
    for p in partition_by {
        if !fields.iter().any(|f| f.name() == p) {
            fields.push(Field::new(p, DataType::Utf8, true));
        }
    }
    let schema = Schema::new(fields);
    // Refuse now what could not be restored from a token later.
    restore(&record(&schema))?;
    Ok(Arc::new(schema))
}

pub fn record(schema: &Schema) -> Vec<RecordedColumn> {
    schema
        .fields()
        .iter()
        .map(|f| RecordedColumn { name: f.name().clone(), ty: f.data_type().to_string(), nullable: f.is_nullable() })
        .collect()
}

/// The schema a token recorded.
pub fn restore(cols: &[RecordedColumn]) -> Result<SchemaRef, String> {
    let fields = cols
        .iter()
        .map(|c| {
            let ty: DataType = c.ty.parse().map_err(|e| format!("column {}: type {:?} cannot be read back: {e}", c.name, c.ty))?;
            Ok(Field::new(&c.name, ty, c.nullable))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let schema = Schema::new(fields);
    // Display and parse must agree, or a restart would change the types.
    for (f, c) in schema.fields().iter().zip(cols) {
        if f.data_type().to_string() != c.ty {
            return Err(format!("column {}: type {} does not survive a checkpoint (read back as {})", c.name, c.ty, f.data_type()));
        }
    }
    Ok(Arc::new(schema))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn json_numbers_become_doubles_and_typed_input_keeps_its_types() {
        let data = Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("none", DataType::Null, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), true),
        ]);
        let typed = from_data(&data, &["zone".into()]).unwrap();
        let got: Vec<(String, DataType, bool)> =
            typed.fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
        assert_eq!(got[0], ("n".into(), DataType::Int64, true));
        assert_eq!(got[2], ("none".into(), DataType::Utf8, true));
        assert_eq!(got[5], ("zone".into(), DataType::Utf8, true));
        let json = data.clone().with_metadata(std::collections::HashMap::from([(convert::INFERRED_FROM.to_string(), "json".to_string())]));
        assert_eq!(from_data(&json, &[]).unwrap().field(0).data_type(), &DataType::Float64);
        assert_eq!(from_data(&json, &["n".into()]).unwrap().field(0).data_type(), &DataType::Int64);
        // Every type round-trips through a token.
        assert_eq!(restore(&record(&typed)).unwrap(), typed);
    }
}
